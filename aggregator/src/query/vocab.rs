//! The Stats API's vocabulary: the metrics, dimensions and filter operators a query may name
//! (each an allow-list: identifiers in SQL only ever come from these tables), and [`Query`],
//! a request once checked.

use chrono::{NaiveDate, NaiveDateTime};

/// A metric the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Unique visitors.
    Visitors,
    /// Visits (sessions: a visitor's hits with gaps under 30 minutes).
    Visits,
    /// Pageview events.
    Pageviews,
    /// Pageviews per visit.
    ViewsPerVisit,
    /// Percentage of visits with one pageview and no interactive event.
    BounceRate,
    /// Mean visit length in seconds.
    VisitDuration,
    /// Mean engaged seconds per pageview (from the tracker's engagement beacons).
    TimeOnPage,
    /// Events (pageviews and custom events; engagement beacons excluded).
    Events,
    /// Percentage of all visitors (the query's filters without its goal and top-level
    /// custom-property conditions, no dimensions: one denominator for every row) who
    /// completed the goal(s) filtered or broken down by — Plausible's `conversion_rate`.
    ConversionRate,
    /// Percentage of each row's visitors (the same non-goal dimensions, without the goal and
    /// top-level custom-property conditions) who completed the goal(s) — Plausible's
    /// `group_conversion_rate`, e.g. the conversion rate of each source.
    GroupConversionRate,
    /// A row's share of all visitors (with the same filters), percent.
    Percentage,
    /// Mean scroll depth reached, percent (from engagement beacons).
    ScrollDepth,
    /// Sum of revenue attached to events.
    TotalRevenue,
    /// Mean revenue per event that carried revenue.
    AverageRevenue,
    /// Visits per visitor.
    SessionsPerUser,
    /// Mean daily active users (visitor hashes rotate daily, so a day is the longest window
    /// in which a user can be counted once).
    Dau,
    /// Median app launch time (ms, `launch_ms`).
    LaunchTimeP50,
    /// 95th percentile app launch time (ms).
    LaunchTimeP95,
    /// Median request latency (ms, `latency_ms`).
    LatencyP50,
    /// 95th percentile request latency (ms).
    LatencyP95,
    /// App launches after a crash (`crash` = 1).
    Crashes,
    /// Percentage of a page's pageviews that ended a visit (Plausible's `exit_rate`): the
    /// visits exiting on each `visit:exit_page` row ÷ that page's pageviews with the query's
    /// filters but those on the exit page (as Plausible's); needs the `visit:exit_page`
    /// dimension.
    ExitRate,
}

/// Which rows a metric needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Computable from visit rows or from event rows.
    Both,
    /// Needs whole visits.
    Visit,
    /// Needs event rows.
    Event,
}

impl Metric {
    /// Every metric, with its API name.
    pub const ALL: [(&'static str, Metric); 22] = [
        ("visitors", Metric::Visitors),
        ("visits", Metric::Visits),
        ("pageviews", Metric::Pageviews),
        ("views_per_visit", Metric::ViewsPerVisit),
        ("bounce_rate", Metric::BounceRate),
        ("visit_duration", Metric::VisitDuration),
        ("time_on_page", Metric::TimeOnPage),
        ("events", Metric::Events),
        ("conversion_rate", Metric::ConversionRate),
        ("group_conversion_rate", Metric::GroupConversionRate),
        ("percentage", Metric::Percentage),
        ("scroll_depth", Metric::ScrollDepth),
        ("total_revenue", Metric::TotalRevenue),
        ("average_revenue", Metric::AverageRevenue),
        ("sessions_per_user", Metric::SessionsPerUser),
        ("dau", Metric::Dau),
        ("launch_time_p50", Metric::LaunchTimeP50),
        ("launch_time_p95", Metric::LaunchTimeP95),
        ("latency_p50", Metric::LatencyP50),
        ("latency_p95", Metric::LatencyP95),
        ("crashes", Metric::Crashes),
        ("exit_rate", Metric::ExitRate),
    ];

    /// The API name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// Which rows it needs.
    pub fn level(self) -> Level {
        use Metric::*;
        match self {
            Visitors | Pageviews | Events | Dau | Percentage => Level::Both,
            Visits | ViewsPerVisit | BounceRate | VisitDuration | SessionsPerUser | ExitRate => {
                Level::Visit
            }
            _ => Level::Event,
        }
    }

    /// Rates and durations compare by difference, counts by percent change.
    pub fn change_is_difference(self) -> bool {
        matches!(
            self,
            Metric::BounceRate
                | Metric::ExitRate
                | Metric::ConversionRate
                | Metric::GroupConversionRate
                | Metric::Percentage
        )
    }
}

/// What a dimension (or a filter's subject) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DimKind {
    /// A column of each event that visits do not have (page, name, host).
    Event(&'static str),
    /// A property of the visit, from its first hit (entry/exit page, source, campaign): the
    /// column of the `visits` rows.
    Visit(&'static str),
    /// A fact that is the same for every hit of a visitor (the hash covers IP and user agent):
    /// the same column on events and visits.
    Visitor(&'static str),
    /// The site's goal a hit completed.
    Goal,
    /// A custom property of an event.
    Prop(String),
    /// The visitor's country as its English ISO 3166 name (Plausible's `visit:country_name`).
    CountryName,
    /// The name part of a place column stored as `code|name` (`region`, `city`;
    /// `veil_schemas::places`): Plausible's `visit:region_name`, `visit:city_name`. The same
    /// column as [`DimKind::Visitor`] everywhere else.
    PlaceName(&'static str),
    /// A time bucket in the site's time zone.
    Time(TimeBucket),
}

/// Time buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBucket {
    /// `YYYY-MM-DD HH:MM:00`: `time:minute`, for the `realtime` range only (its 30 minutes).
    Minute,
    /// `YYYY-MM-DD HH:00:00`.
    Hour,
    /// `YYYY-MM-DD`.
    Day,
    /// The Monday starting the week, `YYYY-MM-DD`.
    Week,
    /// The first day of the month, `YYYY-MM-DD`.
    Month,
}

/// Dimensions by API name (plus `event:props:NAME`).
pub const DIMENSIONS: &[(&str, DimKind)] = &[
    ("event:page", DimKind::Event("pathname")),
    ("event:hostname", DimKind::Event("hostname")),
    ("event:name", DimKind::Event("name")),
    ("event:goal", DimKind::Goal),
    ("visit:entry_page", DimKind::Visit("entry_page")),
    ("visit:exit_page", DimKind::Visit("exit_page")),
    ("visit:source", DimKind::Visit("source")),
    ("visit:referrer", DimKind::Visit("referrer")),
    ("visit:channel", DimKind::Visit("channel")),
    ("visit:utm_source", DimKind::Visit("utm_source")),
    ("visit:utm_medium", DimKind::Visit("utm_medium")),
    ("visit:utm_campaign", DimKind::Visit("utm_campaign")),
    ("visit:utm_content", DimKind::Visit("utm_content")),
    ("visit:utm_term", DimKind::Visit("utm_term")),
    ("visit:country", DimKind::Visitor("country_code")),
    ("visit:country_name", DimKind::CountryName),
    ("visit:region", DimKind::Visitor("region")),
    ("visit:region_name", DimKind::PlaceName("region")),
    ("visit:city", DimKind::Visitor("city")),
    ("visit:city_name", DimKind::PlaceName("city")),
    ("visit:isp", DimKind::Visitor("isp")),
    ("visit:browser", DimKind::Visitor("browser")),
    ("visit:browser_version", DimKind::Visitor("browser_version")),
    ("visit:os", DimKind::Visitor("os")),
    ("visit:os_version", DimKind::Visitor("os_version")),
    ("visit:device", DimKind::Visitor("device")),
    ("visit:screen", DimKind::Visitor("screen_class")),
    ("visit:processor", DimKind::Visitor("processor_class")),
    ("visit:locale", DimKind::Visitor("locale")),
    ("visit:app_version", DimKind::Visitor("app_version")),
    ("visit:install_source", DimKind::Visitor("install_source")),
    ("visit:device_model", DimKind::Visitor("device_model")),
    ("time:minute", DimKind::Time(TimeBucket::Minute)),
    ("time:hour", DimKind::Time(TimeBucket::Hour)),
    ("time:day", DimKind::Time(TimeBucket::Day)),
    ("time:week", DimKind::Time(TimeBucket::Week)),
    ("time:month", DimKind::Time(TimeBucket::Month)),
];

/// A checked dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dim {
    /// The API name as requested (`time` stays `time`).
    pub name: String,
    /// What it is.
    pub kind: DimKind,
}

impl Dim {
    /// The level of rows it needs.
    pub fn level(&self) -> Level {
        match self.kind {
            DimKind::Event(_) | DimKind::Goal | DimKind::Prop(_) => Level::Event,
            DimKind::Visit(_) => Level::Visit,
            DimKind::Visitor(_)
            | DimKind::CountryName
            | DimKind::PlaceName(_)
            | DimKind::Time(_) => Level::Both,
        }
    }
}

/// Filter operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Equal to one of the values.
    Is,
    /// Equal to none of the values.
    IsNot,
    /// Contains one of the values.
    Contains,
    /// Contains none of the values.
    ContainsNot,
    /// Matches one of the regexes (RE2 syntax: linear time, no backtracking).
    Matches,
    /// Matches none of the regexes.
    MatchesNot,
}

impl Op {
    pub(super) fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "is" => Op::Is,
            "is_not" => Op::IsNot,
            "contains" => Op::Contains,
            "contains_not" => Op::ContainsNot,
            "matches" | "matches_wildcard" => Op::Matches,
            "matches_not" | "matches_wildcard_not" => Op::MatchesNot,
            _ => return None,
        })
    }

    /// True for the negated operators.
    pub fn negated(self) -> bool {
        matches!(self, Op::IsNot | Op::ContainsNot | Op::MatchesNot)
    }
}

/// A checked filter expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `[op, dimension, values, {case_sensitive}]`.
    Cond {
        /// Operator.
        op: Op,
        /// Subject.
        dim: Dim,
        /// Values (at least one).
        values: Vec<String>,
        /// Compare case-sensitively (default true).
        case_sensitive: bool,
    },
    /// All of.
    And(Vec<Filter>),
    /// Any of.
    Or(Vec<Filter>),
    /// Not.
    Not(Box<Filter>),
    /// Plausible's behavioural filters: `["has_done", filter]` keeps the visitors with at
    /// least one event in the range matching `filter` (event dimensions only), with all their
    /// rows; `["has_not_done", filter]` (`not`) the others.
    HasDone {
        /// `has_not_done`.
        not: bool,
        /// The event condition.
        inner: Box<Filter>,
    },
}

impl Filter {
    /// Every condition in the expression.
    pub fn conds(&self) -> Vec<&Filter> {
        match self {
            Filter::Cond { .. } => vec![self],
            Filter::And(v) | Filter::Or(v) => v.iter().flat_map(|f| f.conds()).collect(),
            Filter::Not(f) | Filter::HasDone { inner: f, .. } => f.conds(),
        }
    }

    /// Whether it has a `has_done`/`has_not_done` part (which needs rows with visitor hashes).
    pub fn behavioural(&self) -> bool {
        match self {
            Filter::Cond { .. } => false,
            Filter::And(v) | Filter::Or(v) => v.iter().any(Filter::behavioural),
            Filter::Not(f) => f.behavioural(),
            Filter::HasDone { .. } => true,
        }
    }

    /// Whether this is `x or not x` (true of every row): the differencing guard's "everyone"
    /// filter, which keeps the filter's dimensions so the total is counted by the same source.
    pub fn is_tautology(&self) -> bool {
        match self {
            Filter::Or(v) => v.len() == 2 && matches!(&v[1], Filter::Not(x) if **x == v[0]),
            _ => false,
        }
    }

    /// The dimensions it reads.
    pub fn dims(&self) -> Vec<&Dim> {
        self.conds()
            .into_iter()
            .filter_map(|c| match c {
                Filter::Cond { dim, .. } => Some(dim),
                _ => None,
            })
            .collect()
    }
}

/// Compiled size limit of one filter regex (checked when parsing; ClickHouse runs it with RE2).
pub(crate) const REGEX_SIZE_LIMIT: usize = 64 << 10;

/// Turns a goal's page pattern or a `matches_wildcard` value (`*` = any run of characters)
/// into an anchored RE2 regex.
pub fn glob_to_regex(pattern: &str) -> String {
    let parts: Vec<String> = pattern.split('*').map(regex::escape).collect();
    format!("^{}$", parts.join(".*"))
}

/// How a comparison period is chosen (Plausible's `include.comparisons`). The variants that
/// existed first keep their names: the privacy budget's question key writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// The same number of days just before.
    PreviousPeriod,
    /// The same dates one year earlier.
    YearOverYear,
    /// [`Compare::PreviousPeriod`] shifted to start on the source range's weekday
    /// (`match_day_of_week: true`).
    PreviousPeriodMatchingWeekday,
    /// [`Compare::YearOverYear`] shifted to start on the source range's weekday.
    YearOverYearMatchingWeekday,
    /// A range of its own, first and last day (`mode: "custom"` with `date_range`).
    Custom(chrono::NaiveDate, chrono::NaiveDate),
}

impl Compare {
    /// The `include.comparisons` object that asks for it (the query echo).
    pub fn to_json(self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Compare::PreviousPeriod => json!({"mode": "previous_period"}),
            Compare::YearOverYear => json!({"mode": "year_over_year"}),
            Compare::PreviousPeriodMatchingWeekday => {
                json!({"mode": "previous_period", "match_day_of_week": true})
            }
            Compare::YearOverYearMatchingWeekday => {
                json!({"mode": "year_over_year", "match_day_of_week": true})
            }
            Compare::Custom(from, to) => {
                json!({"mode": "custom", "date_range": [from.to_string(), to.to_string()]})
            }
        }
    }
}

/// A checked query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Site domain.
    pub site: String,
    /// The site's IANA time zone.
    pub tz: String,
    /// Metrics in request order.
    pub metrics: Vec<Metric>,
    /// Dimensions in request order.
    pub dimensions: Vec<Dim>,
    /// The filter (all top-level filters and-ed), if any, as planned: without the conditions
    /// found to keep every row of the range ([`super::passing`]).
    pub filter: Option<Filter>,
    /// The filter as asked: what names the question (differential privacy's noise key and
    /// budget, `crate::privacy`), so it is the same question whether or not a condition was
    /// planned away. A question made from another (a conversion rate's base) changes both
    /// filters alike.
    pub asked_filter: Option<Filter>,
    /// `(column index, descending)`: indices count dimensions first, then metrics.
    pub order_by: Vec<(usize, bool)>,
    /// First local day included.
    pub from: NaiveDate,
    /// Last local day included.
    pub to: NaiveDate,
    /// The site's local day when the question was asked: a comparison period is as long as
    /// the range's days up to it ([`Query::comparison`]).
    pub today: NaiveDate,
    /// Start of the range (UTC, inclusive).
    pub start: NaiveDateTime,
    /// End of the range (UTC, exclusive).
    pub end: NaiveDateTime,
    /// `realtime`: the 30 minutes before the start of the current minute.
    pub realtime: bool,
    /// The comparison asked for.
    pub compare: Option<Compare>,
    /// Whether to list every time bucket of the range in `meta.time_labels`.
    pub time_labels: bool,
    /// Whether to report `meta.total_rows`.
    pub total_rows: bool,
    /// Whether rollup tables may answer (Veil's `include.rollups`, default true).
    pub rollups: bool,
    /// Rows per page.
    pub limit: u32,
    /// Rows skipped.
    pub offset: u32,
    /// `include.imports` was asked (Veil has no imported data yet: answered with a warning).
    pub imports: bool,
    /// Ratio metrics (bounce rate, duration, views per visit…) unrounded: differential
    /// privacy takes them apart into noisy numerators and denominators ([`crate::privacy`]).
    pub unrounded: bool,
    /// Rows that carry visitor ids only (no per-day rollup counts): differential privacy
    /// bounds what one visitor id adds ([`super::assemble::bounded_sql`]), and the daily and
    /// event rollups keep no visitor ids.
    pub bounded: bool,
    /// The site's goals completed by a custom event, as (goal name, event name): a filter on
    /// one such goal is a filter on that event name to the daily rollup's filtered rows.
    pub event_goals: Vec<(String, String)>,
    /// The site's revenue goals (custom-event goals with a currency): revenue metrics sum
    /// only the revenue an event carries in the currency of the goal it completes.
    pub revenue_goals: Vec<crate::site::Goal>,
}

impl Query {
    /// The time dimension, if any.
    pub fn time_bucket(&self) -> Option<TimeBucket> {
        self.dimensions.iter().find_map(|d| match d.kind {
            DimKind::Time(b) => Some(b),
            _ => None,
        })
    }
}
