//! The Stats API query: parsing a Plausible-v2 request, checking every field against an
//! allow-list, and turning it into ClickHouse SQL ([`plan`]).
//!
//! Request (`POST /api/v2/query`, Plausible's Stats API v2 plus Veil's additions):
//!
//! ```json
//! {"site_id":"example.com","metrics":["visitors","bounce_rate"],"date_range":"7d",
//!  "dimensions":["visit:source"],"filters":[["is","visit:country",["DE","FR"]]],
//!  "order_by":[["visitors","desc"]],"include":{"comparisons":{"mode":"previous_period"}},
//!  "pagination":{"limit":10,"offset":0}}
//! ```
//!
//! Metrics, dimensions and filter operators are the names in [`Metric::ALL`], [`DIMENSIONS`] and
//! [`Op`]; dates are days in the site's time zone. Identifiers only ever come from these lists;
//! values are rendered by [`sql::lit`]. A request naming anything else is a 400 whose message
//! names the field.
//!
//! Limits on cost and range: at most [`MAX_CONDITIONS`] filter conditions and
//! [`MAX_REGEXES`] `matches*` regexes (each compiled here under a 64 KiB size limit) per query;
//! explicit dates from 1970-01-01 to 9999-12-31; `realtime` (30 minutes) and `24h` end at the
//! start of the current minute.

pub mod plan;
pub mod sql;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::Value;

use crate::site::SiteView;
use crate::Error;

/// A metric the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Percentage of visitors who completed the goal(s) filtered or broken down by.
    ConversionRate,
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
    pub const ALL: [(&'static str, Metric); 20] = [
        ("visitors", Metric::Visitors),
        ("visits", Metric::Visits),
        ("pageviews", Metric::Pageviews),
        ("views_per_visit", Metric::ViewsPerVisit),
        ("bounce_rate", Metric::BounceRate),
        ("visit_duration", Metric::VisitDuration),
        ("time_on_page", Metric::TimeOnPage),
        ("events", Metric::Events),
        ("conversion_rate", Metric::ConversionRate),
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
            Visits | ViewsPerVisit | BounceRate | VisitDuration | SessionsPerUser => Level::Visit,
            _ => Level::Event,
        }
    }

    /// Rates and durations compare by difference, counts by percent change.
    pub fn change_is_difference(self) -> bool {
        matches!(
            self,
            Metric::BounceRate | Metric::ConversionRate | Metric::Percentage
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
    /// A time bucket in the site's time zone.
    Time(TimeBucket),
}

/// Time buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBucket {
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
    ("visit:region_name", DimKind::Visitor("region")),
    ("visit:city", DimKind::Visitor("city")),
    ("visit:city_name", DimKind::Visitor("city")),
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
            DimKind::Visitor(_) | DimKind::CountryName | DimKind::Time(_) => Level::Both,
        }
    }
}

/// Longest property name in `event:props:NAME`.
const MAX_PROP_NAME: usize = 300;

fn dimension(name: &str, field: &str, range_days: i64) -> Result<Dim, Error> {
    if let Some(prop) = name.strip_prefix("event:props:") {
        if prop.is_empty() || prop.len() > MAX_PROP_NAME {
            return Err(bad(format!(
                "{field}: {name:?} needs a property name of 1..={MAX_PROP_NAME} bytes"
            )));
        }
        return Ok(Dim {
            name: name.to_string(),
            kind: DimKind::Prop(prop.to_string()),
        });
    }
    if name == "time" {
        let bucket = if range_days <= 1 {
            TimeBucket::Hour
        } else if range_days <= 40 {
            TimeBucket::Day
        } else {
            TimeBucket::Month
        };
        return Ok(Dim {
            name: name.to_string(),
            kind: DimKind::Time(bucket),
        });
    }
    DIMENSIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, k)| Dim {
            name: (*n).to_string(),
            kind: k.clone(),
        })
        .ok_or_else(|| {
            bad(format!(
                "{field}: unknown dimension {name:?}; see the README for the list (e.g. \"event:page\", \"visit:source\", \"time:day\", \"event:props:NAME\")"
            ))
        })
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
    fn parse(s: &str) -> Option<Op> {
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

/// Longest filter value, regex or list.
const MAX_VALUE: usize = 2000;
const MAX_VALUES: usize = 100;
const MAX_DEPTH: usize = 8;
/// Most conditions in one query's filters, all nesting levels together.
pub const MAX_CONDITIONS: usize = 20;
/// Most regexes (values of `matches*` conditions) in one query's filters.
pub const MAX_REGEXES: usize = 5;
/// Compiled size limit of one filter regex (the check here; ClickHouse runs it with RE2).
pub(crate) const REGEX_SIZE_LIMIT: usize = 64 << 10;

/// What the filters of one query have used so far of [`MAX_CONDITIONS`] and [`MAX_REGEXES`]
/// (counted while parsing, so an oversized request is refused before its regexes compile).
#[derive(Default)]
struct Budget {
    conditions: usize,
    regexes: usize,
}

fn filter(v: &Value, field: &str, depth: usize, budget: &mut Budget) -> Result<Filter, Error> {
    if depth > MAX_DEPTH {
        return Err(bad(format!(
            "{field}: filters nest deeper than {MAX_DEPTH}"
        )));
    }
    let a = v.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
        bad(format!(
            "{field}: a filter is an array like [\"is\", \"visit:country\", [\"DE\"]]"
        ))
    })?;
    let op = a[0]
        .as_str()
        .ok_or_else(|| bad(format!("{field}[0]: the operator must be a string")))?;
    match op {
        "and" | "or" => {
            let items = a
                .get(1)
                .and_then(Value::as_array)
                .filter(|x| !x.is_empty() && a.len() == 2)
                .ok_or_else(|| {
                    bad(format!(
                        "{field}: [\"{op}\", [filter, …]] needs a non-empty list of filters"
                    ))
                })?;
            let fs = items
                .iter()
                .enumerate()
                .map(|(i, f)| filter(f, &format!("{field}[1][{i}]"), depth + 1, budget))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if op == "and" {
                Filter::And(fs)
            } else {
                Filter::Or(fs)
            })
        }
        "not" => {
            let inner = a
                .get(1)
                .filter(|_| a.len() == 2)
                .ok_or_else(|| bad(format!("{field}: [\"not\", filter] takes one filter")))?;
            Ok(Filter::Not(Box::new(filter(
                inner,
                &format!("{field}[1]"),
                depth + 1,
                budget,
            )?)))
        }
        "has_done" | "has_not_done" => {
            let inner = a
                .get(1)
                .filter(|_| a.len() == 2)
                .ok_or_else(|| bad(format!("{field}: [\"{op}\", filter] takes one filter")))?;
            let inner = filter(inner, &format!("{field}[1]"), depth + 1, budget)?;
            if inner.behavioural() {
                return Err(bad(format!(
                    "{field}: {op} cannot contain has_done/has_not_done"
                )));
            }
            if let Some(d) = inner.dims().into_iter().find(|d| d.level() != Level::Event) {
                return Err(bad(format!(
                    "{field}: {op} takes event:* conditions (event:name, event:page, event:goal, event:props:…), not {}",
                    d.name
                )));
            }
            Ok(Filter::HasDone {
                not: op == "has_not_done",
                inner: Box::new(inner),
            })
        }
        _ => {
            let op = Op::parse(op).ok_or_else(|| {
                bad(format!("{field}[0]: unknown operator {op:?}; use is, is_not, contains, contains_not, matches, matches_not, and, or, not, has_done, has_not_done"))
            })?;
            if a.len() < 3 || a.len() > 4 {
                return Err(bad(format!(
                    "{field}: a condition is [operator, dimension, [values…], {{\"case_sensitive\": bool}}?]"
                )));
            }
            budget.conditions += 1;
            if budget.conditions > MAX_CONDITIONS {
                return Err(bad(format!(
                    "`filters`: at most {MAX_CONDITIONS} conditions in all"
                )));
            }
            let dname = a[1]
                .as_str()
                .ok_or_else(|| bad(format!("{field}[1]: the dimension must be a string")))?;
            let dim = dimension(dname, &format!("{field}[1]"), 2)?;
            if matches!(dim.kind, DimKind::Time(_)) {
                return Err(bad(format!(
                    "{field}[1]: time dimensions cannot be filtered; use date_range"
                )));
            }
            let raw_values = a[2]
                .as_array()
                .filter(|v| !v.is_empty() && v.len() <= MAX_VALUES)
                .ok_or_else(|| {
                    bad(format!(
                        "{field}[2]: values must be a list of 1..={MAX_VALUES} strings"
                    ))
                })?;
            let mut values = Vec::new();
            for (i, v) in raw_values.iter().enumerate() {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err(bad(format!("{field}[2][{i}]: values must be strings"))),
                };
                if s.len() > MAX_VALUE {
                    return Err(bad(format!(
                        "{field}[2][{i}]: a value is longer than {MAX_VALUE} bytes"
                    )));
                }
                values.push(s);
            }
            let case_sensitive = match a.get(3) {
                None => true,
                Some(m) => {
                    let obj = m.as_object().ok_or_else(|| {
                        bad(format!("{field}[3]: modifiers are an object like {{\"case_sensitive\": false}}"))
                    })?;
                    if let Some(k) = obj.keys().find(|k| *k != "case_sensitive") {
                        return Err(bad(format!("{field}[3]: unknown modifier {k:?}")));
                    }
                    obj.get("case_sensitive")
                        .map(|v| {
                            v.as_bool().ok_or_else(|| {
                                bad(format!("{field}[3].case_sensitive must be true or false"))
                            })
                        })
                        .transpose()?
                        .unwrap_or(true)
                }
            };
            if matches!(op, Op::Matches | Op::MatchesNot) {
                budget.regexes += values.len();
                if budget.regexes > MAX_REGEXES {
                    return Err(bad(format!(
                        "`filters`: at most {MAX_REGEXES} regular expressions (values of matches conditions) in all"
                    )));
                }
                let wildcard = a[0].as_str().is_some_and(|s| s.contains("wildcard"));
                for (i, v) in values.iter_mut().enumerate() {
                    if wildcard {
                        *v = sql::glob_to_regex(v);
                    }
                    regex::RegexBuilder::new(v)
                        .size_limit(REGEX_SIZE_LIMIT)
                        .build()
                        .map_err(|e| {
                            bad(format!(
                                "{field}[2][{i}]: not a valid regular expression: {e}"
                            ))
                        })?;
                }
            }
            Ok(Filter::Cond {
                op,
                dim,
                values,
                case_sensitive,
            })
        }
    }
}

/// How a comparison period is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// The same number of days just before.
    PreviousPeriod,
    /// The same dates one year earlier.
    YearOverYear,
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
    /// The filter (all top-level filters and-ed), if any.
    pub filter: Option<Filter>,
    /// `(column index, descending)`: indices count dimensions first, then metrics.
    pub order_by: Vec<(usize, bool)>,
    /// First local day included.
    pub from: NaiveDate,
    /// Last local day included.
    pub to: NaiveDate,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    site_id: Option<String>,
    metrics: Option<Vec<String>>,
    date_range: Option<Value>,
    #[serde(default)]
    dimensions: Vec<String>,
    #[serde(default)]
    filters: Vec<Value>,
    #[serde(default)]
    order_by: Option<Vec<Value>>,
    #[serde(default)]
    include: Option<Include>,
    #[serde(default)]
    pagination: Option<Pagination>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Include {
    #[serde(default)]
    imports: Option<bool>,
    #[serde(default)]
    time_labels: Option<bool>,
    #[serde(default)]
    total_rows: Option<bool>,
    #[serde(default)]
    comparisons: Option<Comparisons>,
    #[serde(default)]
    rollups: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Comparisons {
    mode: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pagination {
    limit: Option<u32>,
    offset: Option<u32>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::BadRequest(msg.into())
}

/// Largest page.
pub const MAX_LIMIT: u32 = 10_000;

/// Parses the site's time zone (UTC when unknown to chrono-tz, which the registry prevents).
pub fn timezone(name: &str) -> Tz {
    name.parse().unwrap_or(chrono_tz::UTC)
}

/// The UTC instant of local midnight starting `d` in `tz`.
pub fn local_midnight(tz: Tz, d: NaiveDate) -> NaiveDateTime {
    let naive = d.and_hms_opt(0, 0, 0).unwrap_or_default();
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => t.naive_utc(),
        chrono::LocalResult::Ambiguous(a, _) => a.naive_utc(),
        // Midnight skipped by a DST change: the day starts an hour later.
        chrono::LocalResult::None => tz
            .from_local_datetime(&(naive + Duration::hours(1)))
            .earliest()
            .map(|t| t.naive_utc())
            .unwrap_or(naive),
    }
}

/// Today in `tz` at `now`.
pub fn local_today(tz: Tz, now: chrono::DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&tz).date_naive()
}

/// Parses and checks a request body for `site` at `now`.
pub fn parse(body: &[u8], site: &SiteView, now: chrono::DateTime<Utc>) -> Result<Query, Error> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| bad(format!("invalid query: {e}")))?;
    let site_id = raw
        .site_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("`site_id` is required"))?;
    let tz = timezone(&site.timezone);
    let today = local_today(tz, now);
    let range = raw.date_range.as_ref().ok_or_else(|| {
        bad("`date_range` is required (e.g. \"7d\" or [\"2026-01-01\",\"2026-01-31\"])")
    })?;
    let realtime = range.as_str() == Some("realtime");
    let last24h = range.as_str() == Some("24h");
    // Sliding windows end at the start of the current UTC minute, so every query within one
    // minute sees the same window: two requests seconds apart cannot be subtracted to isolate
    // the few events that slid in or out between them (whole minutes still can; see
    // docs/PRIVACY.md).
    let n = snap_to_minute(now.naive_utc());
    let (from, to) = if realtime {
        (today, today)
    } else if last24h {
        (local_today(tz, now - Duration::hours(24)), today)
    } else {
        date_range(range, today)?
    };
    let (start, end) = if realtime {
        (n - Duration::minutes(30), n)
    } else if last24h {
        (n - Duration::hours(24), n)
    } else {
        (
            local_midnight(tz, from),
            local_midnight(tz, to + Duration::days(1)),
        )
    };
    let range_days = if last24h {
        1
    } else {
        (to - from).num_days() + 1
    };
    let names = raw
        .metrics
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("`metrics` is required (e.g. [\"visitors\"])"))?;
    let mut metrics = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let m = Metric::ALL
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                let all: Vec<&str> = Metric::ALL.iter().map(|(n, _)| *n).collect();
                bad(format!(
                    "`metrics[{i}]`: unknown metric {n:?}; supported: {}",
                    all.join(", ")
                ))
            })?;
        if metrics.contains(&m) {
            return Err(bad(format!("`metrics[{i}]`: {n:?} is listed twice")));
        }
        metrics.push(m);
    }
    let mut dimensions: Vec<Dim> = Vec::new();
    for (i, d) in raw.dimensions.iter().enumerate() {
        let dim = dimension(d, &format!("`dimensions[{i}]`"), range_days)?;
        if dimensions.iter().any(|x| x.name == dim.name) {
            return Err(bad(format!("`dimensions[{i}]`: {d:?} is listed twice")));
        }
        dimensions.push(dim);
    }
    if dimensions.len() > 4 {
        return Err(bad("`dimensions`: at most 4"));
    }
    if dimensions
        .iter()
        .filter(|d| matches!(d.kind, DimKind::Time(_)))
        .count()
        > 1
    {
        return Err(bad("`dimensions`: at most one time dimension"));
    }
    let mut filters = Vec::new();
    let mut budget = Budget::default();
    for (i, f) in raw.filters.iter().enumerate() {
        filters.push(filter(f, &format!("filters[{i}]"), 0, &mut budget)?);
    }
    let filter = match filters.len() {
        0 => None,
        1 => filters.pop(),
        _ => Some(Filter::And(filters)),
    };
    if let Some(f) = &filter {
        for dim in f.dims() {
            if dim.kind == DimKind::Goal {
                for c in f.conds() {
                    if let Filter::Cond {
                        dim: d, values, op, ..
                    } = c
                    {
                        if d.kind == DimKind::Goal && matches!(op, Op::Is | Op::IsNot) {
                            if let Some(v) = values
                                .iter()
                                .find(|v| !site.goals.iter().any(|g| &g.name == *v))
                            {
                                return Err(bad(format!(
                                    "`filters`: {v:?} is not a goal of this site"
                                )));
                            }
                        }
                    }
                }
            }
        }
    }
    if metrics.contains(&Metric::ConversionRate) {
        let goal_dim = dimensions.iter().any(|d| d.kind == DimKind::Goal);
        let goal_filter = filter
            .as_ref()
            .is_some_and(|f| f.dims().iter().any(|d| d.kind == DimKind::Goal));
        if !goal_dim && !goal_filter {
            return Err(bad(
                "`metrics`: conversion_rate needs an event:goal dimension or filter",
            ));
        }
    }
    let ncols = dimensions.len() + metrics.len();
    let mut order_by = Vec::new();
    for (i, o) in raw.order_by.unwrap_or_default().iter().enumerate() {
        let pair = o.as_array().filter(|p| p.len() == 2).ok_or_else(|| {
            bad(format!(
                "`order_by[{i}]`: use [\"metric or dimension\", \"asc\"|\"desc\"]"
            ))
        })?;
        let name = pair[0].as_str().unwrap_or_default();
        let desc = match pair[1].as_str() {
            Some("desc") => true,
            Some("asc") => false,
            _ => {
                return Err(bad(format!(
                    "`order_by[{i}]`: direction must be \"asc\" or \"desc\""
                )))
            }
        };
        let idx = dimensions
            .iter()
            .position(|d| d.name == name)
            .or_else(|| {
                metrics
                    .iter()
                    .position(|m| m.name() == name)
                    .map(|p| p + dimensions.len())
            })
            .ok_or_else(|| {
                bad(format!(
                    "`order_by[{i}]`: {name:?} is not one of the query's metrics or dimensions"
                ))
            })?;
        order_by.push((idx, desc));
    }
    if order_by.is_empty() {
        if let Some(t) = dimensions
            .iter()
            .position(|d| matches!(d.kind, DimKind::Time(_)))
        {
            order_by.push((t, false));
        } else if !dimensions.is_empty() {
            order_by.push((dimensions.len(), true));
        }
        for i in 0..dimensions.len() {
            if !order_by.iter().any(|(j, _)| *j == i) {
                order_by.push((i, false));
            }
        }
    }
    debug_assert!(order_by.iter().all(|(i, _)| *i < ncols));
    let include = raw.include.unwrap_or(Include {
        imports: None,
        time_labels: None,
        total_rows: None,
        comparisons: None,
        rollups: None,
    });
    if include.imports == Some(true) {
        return Err(bad(
            "`include.imports`: Veil has no imported data; send false or leave it out",
        ));
    }
    let compare = match include.comparisons.as_ref().map(|c| c.mode.as_str()) {
        None => None,
        Some("previous_period") => Some(Compare::PreviousPeriod),
        Some("year_over_year") => Some(Compare::YearOverYear),
        Some(m) => {
            return Err(bad(format!(
            "`include.comparisons.mode`: unknown mode {m:?}; use previous_period or year_over_year"
        )))
        }
    };
    if compare.is_some() && (realtime || last24h) {
        return Err(bad(
            "`include.comparisons` is not available for realtime and 24h",
        ));
    }
    let limit = raw
        .pagination
        .as_ref()
        .and_then(|p| p.limit)
        .unwrap_or(MAX_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad(format!("`pagination.limit` must be 1..={MAX_LIMIT}")));
    }
    let offset = raw.pagination.as_ref().and_then(|p| p.offset).unwrap_or(0);
    let q = Query {
        site: site_id,
        tz: tz.name().to_string(),
        metrics,
        dimensions,
        filter,
        order_by,
        from,
        to,
        start,
        end,
        realtime,
        compare,
        time_labels: include.time_labels.unwrap_or(false),
        total_rows: include.total_rows.unwrap_or(false),
        rollups: include.rollups.unwrap_or(true),
        limit,
        offset,
    };
    if site.child_directed {
        check_child_query(&q)?;
    }
    plan::check(&q)?;
    Ok(q)
}

/// The start of the minute `t` falls in.
pub fn snap_to_minute(t: NaiveDateTime) -> NaiveDateTime {
    t.date().and_hms_opt(t.hour(), t.minute(), 0).unwrap_or(t)
}

/// First and last day a `date_range` may name (ClickHouse's `DateTime` starts in 1970; later
/// than 9999 is no date anyone means, and near chrono's limits day arithmetic would overflow).
fn date_bounds() -> (NaiveDate, NaiveDate) {
    (
        NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or(NaiveDate::MIN),
        NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or(NaiveDate::MAX),
    )
}

fn date_range(v: &Value, today: NaiveDate) -> Result<(NaiveDate, NaiveDate), Error> {
    let months_back = |n: u32| {
        let first = today.with_day(1).unwrap_or(today);
        first
            .checked_sub_months(chrono::Months::new(n))
            .unwrap_or(first)
    };
    let r = match v {
        Value::String(s) => match s.as_str() {
            "day" => (today, today),
            "7d" => (today - Duration::days(6), today),
            "28d" => (today - Duration::days(27), today),
            "30d" => (today - Duration::days(29), today),
            "91d" => (today - Duration::days(90), today),
            "month" => (months_back(0), today),
            "6mo" => (months_back(5), today),
            "12mo" => (months_back(11), today),
            "year" => (NaiveDate::from_ymd_opt(today.year(), 1, 1).unwrap_or(today), today),
            "all" => (NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or(today), today),
            other => return Err(bad(format!("`date_range`: unknown period {other:?}; use day, 24h, 7d, 28d, 30d, 91d, month, 6mo, 12mo, year, all, realtime or [\"YYYY-MM-DD\",\"YYYY-MM-DD\"]"))),
        },
        Value::Array(a) if a.len() == 2 => {
            let d = |i: usize| -> Result<NaiveDate, Error> {
                let s = a[i].as_str().unwrap_or_default();
                NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .ok()
                    .or_else(|| chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.date_naive()))
                    .ok_or_else(|| bad(format!("`date_range[{i}]` must be a date \"YYYY-MM-DD\"")))
                    .and_then(|d| {
                        let (lo, hi) = date_bounds();
                        if (lo..=hi).contains(&d) {
                            Ok(d)
                        } else {
                            Err(bad(format!("`date_range[{i}]` must be a date from {lo} to {hi}")))
                        }
                    })
            };
            let (f, t) = (d(0)?, d(1)?);
            if f > t {
                return Err(bad("`date_range` starts after it ends"));
            }
            if (t - f).num_days() > 3660 {
                return Err(bad("`date_range` is longer than ten years"));
            }
            (f, t)
        }
        _ => return Err(bad("`date_range` must be a period name or [from, to]")),
    };
    Ok(r)
}

impl Query {
    /// The same query over the comparison period.
    pub fn comparison(&self, how: Compare, tz: Tz) -> Query {
        let (from, to) = match how {
            Compare::PreviousPeriod => {
                let len = (self.to - self.from).num_days() + 1;
                (
                    self.from - Duration::days(len),
                    self.from - Duration::days(1),
                )
            }
            Compare::YearOverYear => {
                let back =
                    |d: NaiveDate| d.checked_sub_months(chrono::Months::new(12)).unwrap_or(d);
                (back(self.from), back(self.to))
            }
        };
        let mut q = self.clone();
        q.from = from;
        q.to = to;
        q.start = local_midnight(tz, from);
        q.end = local_midnight(tz, to + Duration::days(1));
        q.compare = None;
        q
    }

    /// The time dimension, if any.
    pub fn time_bucket(&self) -> Option<TimeBucket> {
        self.dimensions.iter().find_map(|d| match d.kind {
            DimKind::Time(b) => Some(b),
            _ => None,
        })
    }

    /// Every bucket label of the range, in order (for `include.time_labels`).
    pub fn time_labels(&self) -> Vec<String> {
        let Some(b) = self.time_bucket() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut d = self.from;
        while d <= self.to && out.len() < 100_000 {
            match b {
                TimeBucket::Hour => {
                    for h in 0..24 {
                        out.push(format!("{} {h:02}:00:00", d.format("%Y-%m-%d")));
                    }
                }
                TimeBucket::Day => out.push(d.format("%Y-%m-%d").to_string()),
                TimeBucket::Week => {
                    let monday = d - Duration::days(i64::from(d.weekday().num_days_from_monday()));
                    let l = monday.format("%Y-%m-%d").to_string();
                    if out.last() != Some(&l) {
                        out.push(l);
                    }
                }
                TimeBucket::Month => {
                    let l = d.with_day(1).unwrap_or(d).format("%Y-%m-%d").to_string();
                    if out.last() != Some(&l) {
                        out.push(l);
                    }
                }
            }
            d += Duration::days(1);
        }
        out
    }
}

/// Child-directed sites store no visitor hash, referrer, campaign or props: only counts of
/// events by page, name, host, country, device class, browser and OS family, and time.
pub fn check_child_query(q: &Query) -> Result<(), Error> {
    if let Some(m) = q
        .metrics
        .iter()
        .find(|m| !matches!(m, Metric::Pageviews | Metric::Events))
    {
        return Err(bad(format!(
            "`metrics`: {:?} is not reported for a child-directed site (only pageviews and events)",
            m.name()
        )));
    }
    const ALLOWED: [&str; 13] = [
        "event:page",
        "event:name",
        "event:hostname",
        "visit:country",
        "visit:device",
        "visit:browser",
        "visit:os",
        "time",
        "time:hour",
        "time:day",
        "time:week",
        "time:month",
        "event:goal",
    ];
    let filter_dims = q.filter.as_ref().map(|f| f.dims()).unwrap_or_default();
    if let Some(d) = q
        .dimensions
        .iter()
        .chain(filter_dims)
        .find(|d| !ALLOWED.contains(&d.name.as_str()))
    {
        return Err(bad(format!(
            "`dimensions`: {:?} is not collected for a child-directed site",
            d.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
