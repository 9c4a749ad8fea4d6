//! Which rows answer a query, and the SQL that reads them.
//!
//! Five sources, chosen per query (docs/ARCHITECTURE.md has the table):
//!
//! - [`Source::VisitsDaily`] — per UTC day and dimension value, plain counts (distinct
//!   visitors, visits, pageviews…): unfiltered reports by at most one visit dimension or page,
//!   event name or host, or by day/week/month. Visitors over closed days are a sum (hashes
//!   rotate daily); today and unbuilt days add `uniq` states.
//! - [`Source::Visits`] — one row per visit. Used when every dimension and filter is a visit or
//!   visitor property (source, campaign, entry page, country, device…) or time. Days come
//!   from the `visits` table (written by the aggregator's rollup job, latest recorded build of
//!   each day; today's only up to its cut, the rest from [`open_visit_rows`]); days without
//!   a build are derived from raw events with the same SQL ([`derive_visits`]), so both give
//!   the same numbers.
//! - [`Source::Hourly`] — the event rollups (materialized views), on days the rollup job has
//!   checked, else raw events in the same shape: visitors, pageviews and events by page, event
//!   name, host, goal and time, for time zones with whole-hour offsets.
//! - [`Source::Events`] — raw events: everything else that needs event rows (props, revenue,
//!   engagement, app performance, realtime).
//! - [`Source::Joined`] — raw events joined to their visit: event-level dimensions or filters
//!   combined with visit-level ones or with visit metrics (e.g. bounce rate of visits that
//!   reached a goal, conversions by source).
//!
//! Every query's columns come out as `d0…` (dimensions), `m0…` (metrics), then `k` (the number
//! k-anonymity is checked against: visitors, or events for child-directed sites).

use chrono::{Duration, NaiveDate, NaiveDateTime, Timelike};

use super::sql::{date, glob_to_regex, lit, lit_list, utc};
use super::{Dim, DimKind, Filter, Level, Metric, Op, Query, TimeBucket};
use crate::site::{Goal, SiteView};
use crate::Error;

/// The rows a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Visit rows (rollup table ∪ derived).
    Visits,
    /// The event rollups: `events_daily` for whole UTC days, `events_hourly` for the rest.
    Hourly,
    /// The per-dimension daily visit rollup (`visits_daily`) for whole built UTC days, visit
    /// rows aggregated on the fly for the rest.
    VisitsDaily,
    /// Raw events.
    Events,
    /// Raw events with their visit's properties.
    Joined,
}

impl Source {
    /// The name `meta.source` reports.
    pub fn name(self) -> &'static str {
        match self {
            Source::Visits => "visits",
            Source::VisitsDaily => "visits_daily",
            Source::Hourly => "event_rollups",
            Source::Events => "events",
            Source::Joined => "joined",
        }
    }
}

/// The latest recorded visit build of one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Build {
    /// The UTC day.
    pub day: NaiveDate,
    /// Its latest recorded build number.
    pub build: u64,
    /// `None` for a closed day's build (the whole day); for the current day, the moment its
    /// build stops at (see [`open_visit_rows`]).
    pub cut: Option<NaiveDateTime>,
    /// For the current day: a recorded snapshot of the site's day made from this build, fresh
    /// enough to be read instead of the build and what follows its cut ([`snapshot_rows`]).
    pub snap: Option<Snap>,
}

/// One recorded snapshot of a site's current day (`today_snaps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snap {
    /// The moment it stands for.
    pub at: NaiveDateTime,
    /// Its random name (two processes may take one in the same second).
    pub id: u64,
}

impl Build {
    /// A whole day's build.
    pub fn whole(day: NaiveDate, build: u64) -> Build {
        Build {
            day,
            build,
            cut: None,
            snap: None,
        }
    }
}

/// How long a visit must have been quiet at a build's cut to be over (the 30-minute rule: a
/// later hit more than this after its last one starts a new visit).
pub const VISIT_GAP_SECS: i64 = 1800;

/// The table the hits after a cut are read from: the last days' events ordered by time
/// (`014_open_visits.sql`), where `events`, ordered by visitor within a day, would be read
/// whole.
pub(crate) const RECENT: &str = "events_recent";

/// The raw events of partly built day `b` from its cut to the end of the day: the
/// condition for [`RECENT`].
pub(crate) fn after_cut_cond(site: &str, b: &Build, cut: NaiveDateTime) -> String {
    let hi = b.day.and_time(chrono::NaiveTime::MIN) + Duration::days(1);
    format!(
        "{} AND timestamp >= {} AND timestamp < {}",
        site_cond(site),
        utc(cut),
        utc(hi)
    )
}

/// The visits of partly built day `b` that its `visits` rows do not hold, with the columns
/// `cols` (names of [`VISIT_COLS`], `visitor_id` among them): the visits open at the cut
/// (`open_visits`, each as it stood then) carried on by the hits after the cut, and the
/// visits that start after the cut.
///
/// Each open visit enters as one element of its visitor's sorted timeline, before every hit
/// after the cut (it started before the cut), with its last hit's time and its counts; each
/// later hit is an element of its own. The 30-minute rule then splits the timeline into
/// visits as it splits raw hits (an element more than [`VISIT_GAP_SECS`] after the previous
/// element's last hit starts a visit), so a visitor's first visit after the cut continues the
/// open visit when it starts at most that long after the open visit's last hit. A visit's
/// start and visit properties are its first element's, its entry page the first element's with
/// a pageview (else the first element's), its exit page the last such element's, counts add
/// up, a bounce is at most one pageview and no interactive custom event. Hits at the same time
/// sort as [`derive_visit_cols`] sorts them, so both give the same visits.
///
/// One pass over both tables and no join, so `GLOBAL` is not needed in cluster mode (the
/// grouping runs where the query started, over the rows every shard sends).
pub fn open_visit_rows(site: &str, b: &Build, cut: NaiveDateTime, cols: &[&str]) -> String {
    let first: Vec<&str> = cols
        .iter()
        .filter(|c| VISIT_FIRST.contains(c))
        .copied()
        .collect();
    // Element fields: time, name, path, interactive (the raw sort order), the first-hit
    // columns, then last hit, pageviews, events, interactive events, entry and exit page.
    let mut fields: Vec<&str> = vec!["ts", "nm", "pa", "ia"];
    fields.extend(first.iter().copied());
    fields.extend(["l", "pv", "ev", "it", "en", "ex"]);
    let x = |f: &str| ef(f, &fields);
    let firsts: String = first.iter().map(|c| format!(", {c}")).collect();
    let open = format!(
        "SELECT visitor_id, start AS ts, '' AS nm, '' AS pa, toUInt8(0) AS ia{firsts}, last AS l, \
         pageviews AS pv, events AS ev, inter AS it, entry_page AS en, exit_page AS ex \
         FROM open_visits WHERE {} AND day = {} AND build = {}",
        site_cond(site),
        date(b.day),
        b.build
    );
    let hits = format!(
        "SELECT visitor_id, timestamp, name, pathname, interactive{firsts}, timestamp, \
         toUInt32(name = 'pageview'), toUInt32(name != 'engagement'), \
         toUInt32(name NOT IN ('pageview', 'engagement') AND interactive = 1), pathname, pathname \
         FROM {RECENT} WHERE {} AND bot = '' AND {HAS_VISITOR}",
        after_cut_cond(site, b, cut)
    );
    let mut aggs = vec![
        "visitor_id".to_string(),
        format!("min({}) AS start", x("ts")),
        format!("toUInt32(max({}) - min({})) AS duration", x("l"), x("ts")),
        format!("toUInt32(sum({})) AS pageviews", x("pv")),
        format!("toUInt32(sum({})) AS events", x("ev")),
        format!(
            "toUInt8(sum({}) <= 1 AND sum({}) = 0) AS bounce",
            x("pv"),
            x("it")
        ),
        format!("argMin({}, ({} = 0, i)) AS entry_page", x("en"), x("pv")),
        format!("argMax({}, ({} > 0, i)) AS exit_page", x("ex"), x("pv")),
    ];
    aggs.extend(first.iter().map(|c| format!("argMin({}, i) AS {c}", x(c))));
    format!(
        "SELECT {cols} FROM (SELECT {aggs} FROM (\
         SELECT visitor_id, evs, arrayEnumerate(evs) AS idx, \
         arrayCumSum(arrayMap((x, j) -> toUInt8(j = 1 OR x.1 - evs[j - 1].{l} > {VISIT_GAP_SECS}), \
         evs, arrayEnumerate(evs))) AS vnum \
         FROM (SELECT visitor_id, arraySort(groupArray(({fields}))) AS evs \
         FROM ({open} UNION ALL {hits}) GROUP BY visitor_id)) \
         ARRAY JOIN evs AS e, idx AS i, vnum AS visit GROUP BY visitor_id, visit)",
        cols = cols.join(", "),
        aggs = aggs.join(", "),
        l = fields.iter().position(|f| *f == "l").unwrap_or(0) + 1,
        fields = fields.join(", "),
    )
}

/// A snapshot of site `site`'s current day at build `b` (cut `cut`) as it stands now, in the
/// columns of `today_daily` after `site, day, build` (`dim, value, uv, visits, pageviews,
/// events, bounces, duration`): for every dimension `visits_daily` is built for, the build's
/// rows merged with what follows its cut exactly as a report merges them
/// ([`visits_daily_rows`]), each day's `uniq` states finished into `uv`.
pub fn snapshot_rows(site: &str, b: &Build, cut: NaiveDateTime) -> String {
    let mut cols = vec![
        "visitor_id",
        "start",
        "duration",
        "pageviews",
        "events",
        "bounce",
    ];
    cols.extend(DAILY_DIMS.iter().copied());
    format!(
        "SELECT dim, value, finalizeAggregation(uniqMergeState(st)) AS uv, sum(v) AS visits, \
         sum(p) AS pageviews, sum(e) AS events, sum(bo) AS bounces, sum(du) AS duration FROM (\
         SELECT dim, value, visitors AS st, visits AS v, pageviews AS p, events AS e, \
         bounces AS bo, duration AS du FROM visits_daily_partial \
         WHERE {site} AND day = {day} AND build = {build} \
         UNION ALL \
         SELECT kv.1 AS dim, kv.2 AS value, uniqState(visitor_id) AS st, count() AS v, \
         sum(pageviews) AS p, sum(events) AS e, sum(bounce) AS bo, sum(duration) AS du \
         FROM ({visits}) ARRAY JOIN [{visit_pairs}] AS kv GROUP BY dim, value \
         UNION ALL \
         SELECT kv.1 AS dim, kv.2 AS value, uniqState(visitor_id) AS st, toUInt64(0) AS v, \
         countIf(name = 'pageview') AS p, countIf(name != 'engagement') AS e, \
         toUInt64(0) AS bo, toUInt64(0) AS du FROM {RECENT} \
         ARRAY JOIN [{event_pairs}] AS kv WHERE {tail} AND bot = '' GROUP BY dim, value\
         ) GROUP BY dim, value",
        site = site_cond(site),
        day = date(b.day),
        build = b.build,
        visits = open_visit_rows(site, b, cut, &cols),
        visit_pairs = visit_dim_pairs(),
        event_pairs = event_dim_pairs(),
        tail = after_cut_cond(site, b, cut),
    )
}

/// The `(dim, value)` tuples one visit row makes for `visits_daily` (`ARRAY JOIN [...] AS kv`):
/// the totals (`''`) and each of [`DAILY_DIMS`].
pub fn visit_dim_pairs() -> String {
    std::iter::once("('', '')".to_string())
        .chain(DAILY_DIMS.iter().map(|c| format!("('{c}', {c})")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `(dim, value)` tuples one hit makes for `visits_daily`: each of [`EVENT_DAILY_DIMS`].
pub fn event_dim_pairs() -> String {
    EVENT_DAILY_DIMS
        .iter()
        .map(|c| format!("('event:{c}', {c})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a source reads recorded visit builds (the caller fetches them first).
pub fn uses_builds(src: Source) -> bool {
    matches!(src, Source::Visits | Source::VisitsDaily | Source::Hourly)
}

/// Checks combinations no source can answer.
pub fn check(q: &Query) -> Result<(), Error> {
    let percentiles = q.metrics.iter().any(|m| {
        matches!(
            m,
            Metric::LaunchTimeP50 | Metric::LaunchTimeP95 | Metric::LatencyP50 | Metric::LatencyP95
        )
    });
    if percentiles && source(q, false) == Source::Joined {
        return Err(Error::BadRequest(
            "`metrics`: performance percentiles cannot be combined with visit metrics or visit:source/utm/entry/exit dimensions or filters".into(),
        ));
    }
    Ok(())
}

fn levels(q: &Query) -> (bool, bool) {
    let filter_dims = q.filter.as_ref().map(|f| f.dims()).unwrap_or_default();
    let dims = q.dimensions.iter().chain(filter_dims);
    let (mut ev, mut vi) = (false, false);
    for d in dims {
        match d.level() {
            Level::Event => ev = true,
            Level::Visit => vi = true,
            Level::Both => {}
        }
    }
    for m in &q.metrics {
        match m.level() {
            Level::Event => ev = true,
            Level::Visit => vi = true,
            Level::Both => {}
        }
    }
    (ev, vi)
}

/// The source that answers `q`.
pub fn source(q: &Query, child_directed: bool) -> Source {
    let (ev, vi) = levels(q);
    if child_directed {
        return if hourly_ok(q) {
            Source::Hourly
        } else {
            Source::Events
        };
    }
    match (ev, vi) {
        (_, _) if visits_daily_ok(q) => Source::VisitsDaily,
        (false, _) => Source::Visits,
        (true, false) if hourly_ok(q) => Source::Hourly,
        (true, false) => Source::Events,
        (true, true) => Source::Joined,
    }
}

fn hourly_ok(q: &Query) -> bool {
    if q.filter.as_ref().is_some_and(Filter::behavioural) {
        return false; // rollup rows have no visitor hashes
    }
    let whole_hours = |t: NaiveDateTime| t.minute() == 0 && t.second() == 0;
    let dims_ok = |d: &Dim| matches!(d.kind, DimKind::Event(_) | DimKind::Goal | DimKind::Time(_));
    q.rollups
        && !q.realtime
        && whole_hours(q.start)
        && whole_hours(q.end)
        && q.metrics.iter().all(|m| {
            matches!(
                m,
                Metric::Visitors
                    | Metric::Pageviews
                    | Metric::Events
                    | Metric::ConversionRate
                    | Metric::Percentage
            )
        })
        && q.dimensions.iter().all(dims_ok)
        && q.filter
            .as_ref()
            .map(|f| f.dims().into_iter().all(dims_ok))
            .unwrap_or(true)
}

/// Whether the local days of `q` start and end at UTC midnight (daily rollups can bucket).
fn utc_aligned(q: &Query) -> bool {
    q.start.time() == chrono::NaiveTime::MIN && q.end.time() == chrono::NaiveTime::MIN
}

/// What a `visits_daily` row's `dim` holds for a dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DailyDim {
    /// A visit column (`dim` is its name).
    Visit(&'static str),
    /// An event column (`dim` is `event:` and its name).
    Event(&'static str),
}

fn daily_dim(d: &Dim) -> Option<DailyDim> {
    match d.kind {
        DimKind::Visit(c) | DimKind::Visitor(c) if DAILY_DIMS.contains(&c) => {
            Some(DailyDim::Visit(c))
        }
        DimKind::CountryName => Some(DailyDim::Visit("country_code")),
        DimKind::Event(c) if EVENT_DAILY_DIMS.contains(&c) => Some(DailyDim::Event(c)),
        _ => None,
    }
}

/// Event columns `visits_daily` is built for (`dim` = `event:` + the column).
pub const EVENT_DAILY_DIMS: &[&str] = &["pathname", "name", "hostname"];

/// Visit columns `visits_daily` is built for (each visit adds one row per entry, and one for
/// the totals with `dim = ''`).
pub const DAILY_DIMS: &[&str] = &[
    "entry_page",
    "exit_page",
    "source",
    "referrer",
    "channel",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "country_code",
    "region",
    "city",
    "isp",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "device",
    "screen_class",
    "processor_class",
    "locale",
    "app_version",
    "install_source",
    "device_model",
];

fn visits_daily_ok(q: &Query) -> bool {
    let plain: Vec<&Dim> = q
        .dimensions
        .iter()
        .filter(|d| !matches!(d.kind, DimKind::Time(_)))
        .collect();
    let time_ok = match q.time_bucket() {
        None => true,
        Some(TimeBucket::Hour) => false,
        Some(_) => utc_aligned(q) && plain.is_empty(),
    };
    let event_dim = plain
        .iter()
        .any(|d| matches!(daily_dim(d), Some(DailyDim::Event(_))));
    q.rollups
        && !q.realtime
        && q.filter.is_none()
        && time_ok
        && plain.len() <= 1
        && plain.iter().all(|d| daily_dim(d).is_some())
        && (!event_dim
            || q.metrics.iter().all(|m| {
                matches!(
                    m,
                    Metric::Visitors | Metric::Pageviews | Metric::Events | Metric::Percentage
                )
            }))
        && q.metrics.iter().all(|m| {
            matches!(
                m,
                Metric::Visitors
                    | Metric::Visits
                    | Metric::Pageviews
                    | Metric::Events
                    | Metric::ViewsPerVisit
                    | Metric::BounceRate
                    | Metric::VisitDuration
                    | Metric::SessionsPerUser
                    | Metric::Percentage
            )
        })
}

/// Splits `[start, end)` into whole UTC days (those `keep` accepts) and the remaining ranges.
fn split_days(
    start: NaiveDateTime,
    end: NaiveDateTime,
    keep: impl Fn(NaiveDate) -> bool,
) -> (Vec<NaiveDate>, Vec<(NaiveDateTime, NaiveDateTime)>) {
    let mut days = Vec::new();
    let mut rest: Vec<(NaiveDateTime, NaiveDateTime)> = Vec::new();
    for d in utc_days(start, end) {
        let lo = d.and_time(chrono::NaiveTime::MIN);
        let hi = lo + Duration::days(1);
        if start <= lo && hi <= end && keep(d) {
            days.push(d);
            continue;
        }
        let (a, b) = (start.max(lo), end.min(hi));
        if a >= b {
            continue;
        }
        match rest.last_mut() {
            Some((_, e)) if *e == a => *e = b,
            _ => rest.push((a, b)),
        }
    }
    (days, rest)
}

/// Rows of the event rollups covering `q`'s range, with the columns of `events_hourly`
/// (`hour` is the day's midnight for daily rows).
///
/// The rollups are fed by materialized views, which are not atomic with the insert they
/// follow (a server that dies between the two writes keeps the events and loses their rollup
/// rows), so they are read only for days the rollup job has checked against the raw events:
/// closed days with a whole visit build. The current day, and any day not checked yet, is
/// aggregated from raw events into the same shape.
fn hourly_rows(q: &Query, built: &[Build]) -> String {
    let daily_allowed = match q.time_bucket() {
        None => true,
        Some(TimeBucket::Hour) => false,
        Some(_) => utc_aligned(q),
    };
    let checked = |d: NaiveDate| built.iter().any(|b| b.day == d && b.cut.is_none());
    let (days, rest) = split_days(q.start, q.end, |d| daily_allowed && checked(d));
    let site = site_cond(&q.site);
    let mut parts = Vec::new();
    if !days.is_empty() {
        let list: Vec<String> = days
            .iter()
            .map(|d| utc(d.and_time(chrono::NaiveTime::MIN)))
            .collect();
        parts.push(format!(
            "SELECT site, day AS hour, name, pathname, hostname, visitors, hits FROM events_daily \
             PREWHERE {site} AND day IN ({})",
            list.join(", ")
        ));
    }
    // The rest, cut at UTC midnights into checked and unchecked pieces.
    type Ranges = Vec<(NaiveDateTime, NaiveDateTime)>;
    let (mut rolled, mut raw): (Ranges, Ranges) = (Vec::new(), Vec::new());
    for (a, b) in rest {
        for d in utc_days(a, b) {
            let lo = a.max(d.and_time(chrono::NaiveTime::MIN));
            let hi = b.min(d.and_time(chrono::NaiveTime::MIN) + Duration::days(1));
            if lo >= hi {
                continue;
            }
            let into = if checked(d) { &mut rolled } else { &mut raw };
            match into.last_mut() {
                Some((_, end)) if *end == lo => *end = hi,
                _ => into.push((lo, hi)),
            }
        }
    }
    let ranges = |col: &str, r: &Ranges| -> String {
        r.iter()
            .map(|(a, b)| format!("({col} >= {} AND {col} < {})", utc(*a), utc(*b)))
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    if !rolled.is_empty() {
        parts.push(format!(
            "SELECT site, hour, name, pathname, hostname, visitors, hits FROM events_hourly \
             PREWHERE {site} AND ({})",
            ranges("hour", &rolled)
        ));
    }
    if !raw.is_empty() || parts.is_empty() {
        if raw.is_empty() {
            raw.push((q.start, q.end));
        }
        parts.push(format!(
            "SELECT site, toStartOfHour(timestamp) AS hour, name, pathname, hostname, \
             uniqState(visitor_id) AS visitors, countState() AS hits FROM events \
             WHERE {site} AND ({}) AND bot = '' GROUP BY site, hour, name, pathname, hostname",
            ranges("timestamp", &raw)
        ));
    }
    format!("({})", parts.join(" UNION ALL "))
}

/// Visitor facts: derived from the IP address or the user agent, which the visitor hash is
/// made of, so every hit of a visitor hash has the same value.
const VISITOR_FACTS: &[&str] = &[
    "country_code",
    "region",
    "city",
    "isp",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "device",
];

/// For a [`Source::VisitsDaily`] query that reads only visitors (and shares of them), by no
/// dimension or a visitor fact: the value expression of a hit or visit row. Such a query needs
/// no visit put together from the hits after today's cut.
fn visitors_only(q: &Query, which: Option<DailyDim>) -> Option<&'static str> {
    let value = match which {
        None => "''",
        Some(DailyDim::Visit(c)) => VISITOR_FACTS.iter().find(|f| **f == c)?,
        Some(DailyDim::Event(_)) => return None,
    };
    q.metrics
        .iter()
        .all(|m| matches!(m, Metric::Visitors | Metric::Percentage))
        .then_some(value)
}

/// Rows for [`Source::VisitsDaily`], one per UTC day and dimension value: `day`, `value`,
/// `b` (1: a closed day's built row), `dv` (distinct visitors of that day and value), `s`
/// (their uniq state; empty for a closed day), `visits_n`, `pv_n`, `ev_n`, `bounces_n`,
/// `dur_n`. Days never share a hash, so a report adds the days' `dv` up. Each day's parts
/// carry `uv` (a closed day's exact count) or `st` (a uniq state of the visitor hashes of the
/// other parts), merged once per day.
///
/// Closed built days come from `visits_daily` (plain numbers, no state is read); the current
/// day's build from `visits_daily_partial` with its states, plus what lies after its cut
/// ([`open_visit_rows`] and the hits from the cut on); other days
/// (without a build, or the edges of a range that is not whole UTC days) from visit rows or
/// raw events aggregated per day on the fly.
fn visits_daily_rows(q: &Query, built: &[Build]) -> String {
    let which = q.dimensions.iter().find_map(daily_dim);
    let dim = match which {
        None => String::new(),
        Some(DailyDim::Visit(c)) => c.to_string(),
        Some(DailyDim::Event(c)) => format!("event:{c}"),
    };
    let (days, rest) = split_days(q.start, q.end, |d| built.iter().any(|b| b.day == d));
    let tuples = |partial: bool| -> Vec<String> {
        built
            .iter()
            .filter(|b| days.contains(&b.day) && b.cut.is_some() == partial && b.snap.is_none())
            .map(|b| format!("({}, toUInt64({}))", date(b.day), b.build))
            .collect()
    };
    // Rows of `table` matching `key` (besides site and dimension): finished counts (`exact`:
    // closed days, a snapshot of today) with an empty state each, or today's build with its
    // states.
    let from_daily = |table: &str, exact: bool, key: String| {
        let (b, uv, st, group) = if exact {
            // Rows are unique per day and value, so grouping (for the empty state) keeps them
            // as they are.
            (1, "sum(uv)", EMPTY_STATE, " GROUP BY day, value")
        } else {
            (0, "toUInt64(0)", "visitors", "")
        };
        let sum = |c: &str| {
            if exact {
                format!("sum({c})")
            } else {
                c.to_string()
            }
        };
        format!(
            "SELECT day, value, toUInt8({b}) AS b, {uv} AS uv, {st} AS st, {} AS visits_n, \
             {} AS pv_n, {} AS ev_n, {} AS bounces_n, {} AS dur_n \
             FROM {table} PREWHERE {} AND dim = {} AND {key}{group}",
            sum("visits"),
            sum("pageviews"),
            sum("events"),
            sum("bounces"),
            sum("duration"),
            site_cond(&q.site),
            lit(&dim),
        )
    };
    let builds_key = |tuples: Vec<String>| format!("(day, build) IN ({})", tuples.join(", "));
    // Rows aggregated per day from raw events (`events` matching `cond`) or visit rows.
    let on_the_fly = |events: String, cond: String, visits: String| match which {
        Some(DailyDim::Event(c)) => format!(
            "SELECT toDate(timestamp, 'UTC') AS day, {c} AS value, toUInt8(0) AS b, \
             toUInt64(0) AS uv, uniqState(visitor_id) AS st, toUInt64(0) AS visits_n, \
             countIf(name = 'pageview') AS pv_n, countIf(name != 'engagement') AS ev_n, \
             toUInt64(0) AS bounces_n, toUInt64(0) AS dur_n FROM {events} \
             WHERE {cond} AND bot = '' GROUP BY day, value"
        ),
        _ => {
            let value = match which {
                Some(DailyDim::Visit(c)) => c,
                _ => "''",
            };
            format!(
                "SELECT toDate(start, 'UTC') AS day, {value} AS value, toUInt8(0) AS b, \
                 toUInt64(0) AS uv, uniqState(visitor_id) AS st, count() AS visits_n, \
                 sum(pageviews) AS pv_n, sum(events) AS ev_n, sum(bounce) AS bounces_n, \
                 sum(duration) AS dur_n FROM {visits} GROUP BY day, value"
            )
        }
    };
    let mut parts = Vec::new();
    let closed = tuples(false);
    if !closed.is_empty() {
        parts.push(from_daily("visits_daily", true, builds_key(closed)));
    }
    // The current day read from a fresh snapshot: finished numbers, like a closed day's.
    for b in built.iter().filter(|b| days.contains(&b.day)) {
        let Some(snap) = b.snap else { continue };
        parts.push(from_daily(
            "today_daily",
            true,
            format!(
                "day = {} AND build = {} AND snap = {} AND id = {}",
                date(b.day),
                b.build,
                utc(snap.at),
                snap.id
            ),
        ));
    }
    let partial = tuples(true);
    if !partial.is_empty() {
        parts.push(from_daily(
            "visits_daily_partial",
            false,
            builds_key(partial),
        ));
        for b in built
            .iter()
            .filter(|b| days.contains(&b.day) && b.snap.is_none())
        {
            let Some(cut) = b.cut else { continue };
            if let Some(value) = visitors_only(q, which) {
                // The open visits' visitors, and the visitors of the hits after the cut, each
                // hit labelled with its own value: a visitor's every hit has the visitor's
                // value, so no visit needs to be put together.
                let days_value = |from: &str, ts: &str, cond: String| {
                    format!(
                        "SELECT toDate({ts}, 'UTC') AS day, {value} AS value, toUInt8(0) AS b, \
                         toUInt64(0) AS uv, uniqState(visitor_id) AS st, toUInt64(0) AS visits_n, \
                         toUInt64(0) AS pv_n, toUInt64(0) AS ev_n, toUInt64(0) AS bounces_n, \
                         toUInt64(0) AS dur_n FROM {from} WHERE {cond} GROUP BY day, value"
                    )
                };
                parts.push(days_value(
                    "open_visits",
                    "start",
                    format!(
                        "{} AND day = {} AND build = {}",
                        site_cond(&q.site),
                        date(b.day),
                        b.build
                    ),
                ));
                parts.push(days_value(
                    RECENT,
                    "timestamp",
                    format!(
                        "{} AND bot = '' AND {HAS_VISITOR}",
                        after_cut_cond(&q.site, b, cut)
                    ),
                ));
                continue;
            }
            let visits = format!(
                "({})",
                open_visit_rows(&q.site, b, cut, &needed_visit_cols(q))
            );
            parts.push(on_the_fly(
                RECENT.into(),
                after_cut_cond(&q.site, b, cut),
                visits,
            ));
        }
    }
    for (a, b) in rest {
        let mut part = q.clone();
        part.start = a;
        part.end = b;
        let cond = format!(
            "{} AND timestamp >= {} AND timestamp < {}",
            site_cond(&q.site),
            utc(a),
            utc(b)
        );
        parts.push(on_the_fly("events".into(), cond, visit_rows(&part, built)));
    }
    // One row per UTC day and value, with the day's distinct visitors as a plain number:
    // each day's states (today's build and what follows its cut, a day without a build) are
    // merged here, once; days never share a hash, so the report adds the days up.
    // `s` keeps the merged state for the k fold's exact union (a report reads it only for
    // rows under k, whose states are small).
    format!(
        "(SELECT day, value, b, uv_sum + finalizeAggregation(s) AS dv, s, visits_n, pv_n, \
         ev_n, bounces_n, dur_n FROM (SELECT day, value, max(b) AS b, sum(uv) AS uv_sum, \
         uniqMergeState(st) AS s, sum(visits_n) AS visits_n, sum(pv_n) AS pv_n, \
         sum(ev_n) AS ev_n, sum(bounces_n) AS bounces_n, sum(dur_n) AS dur_n FROM ({}) \
         GROUP BY day, value))",
        parts.join(" UNION ALL ")
    )
}

/// Fields of the per-visitor event tuples the visit SQL sorts (index = position + 1).
const EV_FIELDS: &[&str] = &[
    "timestamp",
    "name",
    "pathname",
    "hostname",
    "referrer",
    "source",
    "channel",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "interactive",
    "country_code",
    "region",
    "city",
    "isp",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "device",
    "screen_class",
    "processor_class",
    "locale",
    "app_version",
    "install_source",
    "device_model",
    "prop_keys",
    "prop_values",
    "engagement_ms",
    "scroll_depth",
    "revenue_micros",
];

/// Visit properties taken from a visit's first hit (besides entry and exit page).
const VISIT_FIRST: &[&str] = &[
    "hostname",
    "referrer",
    "source",
    "channel",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "country_code",
    "region",
    "city",
    "isp",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "device",
    "screen_class",
    "processor_class",
    "locale",
    "app_version",
    "install_source",
    "device_model",
];

fn e(field: &str) -> String {
    ef(field, EV_FIELDS)
}

/// `e.N` for `field` in a tuple made of `fields`.
fn ef(field: &str, fields: &[&str]) -> String {
    let i = fields.iter().position(|f| *f == field).unwrap_or(0) + 1;
    format!("e.{i}")
}

/// An aggregate that sees no row: the cheap way to an empty `uniq` state per group.
const EMPTY_STATE: &str = "uniqStateIf(toFixedString('', 16), 0)";

/// Child-directed sites store no visitor hash (all zero bytes); they have no visits.
const HAS_VISITOR: &str = "visitor_id != unhex('00000000000000000000000000000000')";

/// One array of sorted hits per (site, visitor) of the events matching `cond`, with a visit
/// number per hit (`vnum`, the 30-minute rule) and the hit's position (`idx`).
fn sessionize(cond: &str) -> String {
    sessionize_fields("events", cond, EV_FIELDS)
}

/// [`sessionize`] over `from` (`events`, or `events_recent` for the hits after a cut)
/// carrying only `fields` (the first must be `timestamp`): a query that needs few visit
/// columns sorts far less in memory.
fn sessionize_fields(from: &str, cond: &str, fields: &[&str]) -> String {
    format!(
        "SELECT site, visitor_id, evs, arrayEnumerate(evs) AS idx, \
         arrayCumSum(arrayMap((x, j) -> toUInt8(j = 1 OR x.1 - evs[j - 1].1 > {VISIT_GAP_SECS}), evs, arrayEnumerate(evs))) AS vnum \
         FROM (SELECT site, visitor_id, arraySort(groupArray(({fields}))) AS evs \
         FROM {from} WHERE {cond} AND bot = '' AND {HAS_VISITOR} GROUP BY site, visitor_id)",
        fields = fields.join(", ")
    )
}

/// Per-visit aggregates over ARRAY JOINed hits `e` (index `i`), column names prefixed.
fn visit_aggregates(prefix: &str) -> Vec<String> {
    visit_aggregates_fields(prefix, EV_FIELDS)
}

/// [`visit_aggregates`] over tuples of `fields` (first-hit columns not in `fields` are left out).
fn visit_aggregates_fields(prefix: &str, fields: &[&str]) -> Vec<String> {
    let p = prefix;
    let e = |f: &str| ef(f, fields);
    let mut cols = vec![
        format!("min({}) AS {p}start", e("timestamp")),
        format!(
            "toUInt32(max({t}) - min({t})) AS {p}duration",
            t = e("timestamp")
        ),
        format!("toUInt32(countIf({} = 'pageview')) AS {p}pageviews", e("name")),
        format!("toUInt32(countIf({} != 'engagement')) AS {p}events", e("name")),
        format!("max({}) AS {p}last", e("timestamp")),
        format!(
            "toUInt32(countIf({n} NOT IN ('pageview', 'engagement') AND {i} = 1)) AS {p}inter",
            n = e("name"),
            i = e("interactive")
        ),
        format!("toUInt8({p}pageviews <= 1 AND {p}inter = 0) AS {p}bounce"),
        format!(
            "if({p}pageviews > 0, argMinIf({pa}, i, {n} = 'pageview'), argMin({pa}, i)) AS {p}entry_page",
            pa = e("pathname"),
            n = e("name")
        ),
        format!(
            "if({p}pageviews > 0, argMaxIf({pa}, i, {n} = 'pageview'), argMax({pa}, i)) AS {p}exit_page",
            pa = e("pathname"),
            n = e("name")
        ),
    ];
    cols.extend(
        VISIT_FIRST
            .iter()
            .filter(|c| fields.contains(c))
            .map(|c| format!("argMin({}, i) AS {p}{c}", e(c))),
    );
    cols
}

/// Columns of a visit row, in `visits` table order.
pub const VISIT_COLS: &[&str] = &[
    "site",
    "day",
    "build",
    "visitor_id",
    "start",
    "duration",
    "pageviews",
    "events",
    "bounce",
    "entry_page",
    "exit_page",
    "hostname",
    "referrer",
    "source",
    "channel",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "country_code",
    "region",
    "city",
    "isp",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "device",
    "screen_class",
    "processor_class",
    "locale",
    "app_version",
    "install_source",
    "device_model",
];

/// Visit rows (columns [`VISIT_COLS`]) derived from the raw events matching `cond`, tagged
/// with `build`. The rollup job inserts exactly this into `visits`.
pub fn derive_visits(cond: &str, build: u64) -> String {
    derive_visits_with(cond, build, &VISIT_COLS.join(", "))
}

/// Columns of an `open_visits` row: [`VISIT_COLS`], the last hit's time and the interactive
/// custom events.
pub const OPEN_VISIT_COLS: &str = "last, inter";

/// The visits [`derive_visits`] derives, as `open_visits` rows ([`VISIT_COLS`] then
/// [`OPEN_VISIT_COLS`]).
pub fn derive_open_visits(cond: &str, build: u64) -> String {
    derive_visits_with(
        cond,
        build,
        &format!("{}, {OPEN_VISIT_COLS}", VISIT_COLS.join(", ")),
    )
}

fn derive_visits_with(cond: &str, build: u64, cols: &str) -> String {
    let aggs = visit_aggregates("");
    format!(
        "SELECT {cols} FROM (SELECT site, toDate(start) AS day, toUInt64({build}) AS build, visitor_id, {aggs} \
         FROM ({s}) ARRAY JOIN evs AS e, idx AS i, vnum AS visit GROUP BY site, visitor_id, visit)",
        aggs = aggs.join(", "),
        s = sessionize(cond),
    )
}

/// UTC days touched by `[start, end)`.
fn utc_days(start: NaiveDateTime, end: NaiveDateTime) -> Vec<NaiveDate> {
    let mut out = Vec::new();
    let mut d = start.date();
    while d.and_hms_opt(0, 0, 0).unwrap_or_default() < end && out.len() < 4000 {
        out.push(d);
        d += Duration::days(1);
    }
    out
}

fn site_cond(site: &str) -> String {
    format!("site = {}", lit(site))
}

/// The visit rows of `q`'s range: recorded builds where they exist (and rollups are allowed),
/// derived from raw events elsewhere.
/// The visit columns `q` reads.
fn needed_visit_cols(q: &Query) -> Vec<&'static str> {
    let mut cols = vec![
        "visitor_id",
        "start",
        "duration",
        "pageviews",
        "events",
        "bounce",
    ];
    let filter_dims = q.filter.as_ref().map(|f| f.dims()).unwrap_or_default();
    for d in q.dimensions.iter().chain(filter_dims) {
        let c = match d.kind {
            DimKind::Visit(c) | DimKind::Visitor(c) => c,
            DimKind::CountryName => "country_code",
            _ => continue,
        };
        if !cols.contains(&c) {
            cols.push(c);
        }
    }
    cols
}

/// Visit rows with only `cols`, derived from the raw events matching `cond` (`visit`, the
/// visit's number among the visitor's, and `last`, `inter` as in `open_visits`, may be asked
/// for too).
fn derive_visit_cols(cond: &str, cols: &[&str]) -> String {
    derive_visit_cols_from("events", cond, cols)
}

/// [`derive_visit_cols`] over the events of table `from`.
fn derive_visit_cols_from(from: &str, cond: &str, cols: &[&str]) -> String {
    let mut fields: Vec<&str> = vec!["timestamp", "name", "pathname", "interactive"];
    fields.extend(cols.iter().filter(|c| VISIT_FIRST.contains(c)).copied());
    let aggs = visit_aggregates_fields("", &fields);
    format!(
        "SELECT {cols} FROM (SELECT visitor_id, visit, {aggs} \
         FROM ({s}) ARRAY JOIN evs AS e, idx AS i, vnum AS visit GROUP BY site, visitor_id, visit)",
        cols = cols.join(", "),
        aggs = aggs.join(", "),
        s = sessionize_fields(from, cond, &fields),
    )
}

fn visit_rows(q: &Query, built: &[Build]) -> String {
    let needed = needed_visit_cols(q);
    let cols = needed.join(", ");
    let in_range = format!("start >= {} AND start < {}", utc(q.start), utc(q.end));
    let days = utc_days(q.start, q.end);
    let use_built = q.rollups && !q.realtime;
    let (have, missing): (Vec<NaiveDate>, Vec<NaiveDate>) = days
        .into_iter()
        .partition(|d| use_built && built.iter().any(|b| b.day == *d));
    let mut parts = Vec::new();
    if !have.is_empty() {
        let tuples: Vec<String> = built
            .iter()
            .filter(|b| have.contains(&b.day))
            .map(|b| format!("({}, toUInt64({}))", date(b.day), b.build))
            .collect();
        parts.push(format!(
            "SELECT {cols} FROM visits WHERE {} AND (day, build) IN ({}) AND {in_range}",
            site_cond(&q.site),
            tuples.join(", ")
        ));
    }
    // The current day's build ends at its cut: the rest of its visits come from raw events.
    for b in built.iter().filter(|b| have.contains(&b.day)) {
        let Some(cut) = b.cut else { continue };
        let derived = open_visit_rows(&q.site, b, cut, &needed);
        parts.push(format!("SELECT {cols} FROM ({derived}) WHERE {in_range}"));
    }
    if !missing.is_empty() {
        // Contiguous runs of days become time ranges.
        let mut ranges: Vec<(NaiveDate, NaiveDate)> = Vec::new();
        for d in missing {
            match ranges.last_mut() {
                Some((_, end)) if *end + Duration::days(1) == d => *end = d,
                _ => ranges.push((d, d)),
            }
        }
        let time: Vec<String> = ranges
            .iter()
            .map(|(a, b)| {
                let lo = if q.realtime {
                    q.start
                } else {
                    a.and_hms_opt(0, 0, 0).unwrap_or_default()
                };
                let hi = if q.realtime {
                    q.end
                } else {
                    (*b + Duration::days(1))
                        .and_hms_opt(0, 0, 0)
                        .unwrap_or_default()
                };
                format!("(timestamp >= {} AND timestamp < {})", utc(lo), utc(hi))
            })
            .collect();
        let cond = format!("{} AND ({})", site_cond(&q.site), time.join(" OR "));
        parts.push(format!(
            "SELECT {cols} FROM ({}) WHERE {in_range}",
            derive_visit_cols(&cond, &needed)
        ));
    }
    format!("({})", parts.join(" UNION ALL "))
}

/// Raw events joined to their visit's properties (`v_…` columns).
pub fn joined_rows(q: &Query) -> String {
    // Whole UTC days, so no visit is cut at the range's edges; hits outside the range are
    // removed by the outer WHERE.
    let days = utc_days(q.start, q.end);
    let lo = days
        .first()
        .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
        .unwrap_or(q.start);
    let hi = days
        .last()
        .map(|d| {
            (*d + Duration::days(1))
                .and_hms_opt(0, 0, 0)
                .unwrap_or_default()
        })
        .unwrap_or(q.end);
    let cond = format!(
        "{} AND timestamp >= {} AND timestamp < {}",
        site_cond(&q.site),
        utc(lo),
        utc(hi)
    );
    let s = sessionize(&cond);
    let left: Vec<String> = EV_FIELDS
        .iter()
        .map(|f| format!("{} AS {f}", e(f)))
        .collect();
    format!(
        "(SELECT * FROM (SELECT visitor_id, visit, {left} FROM ({s}) ARRAY JOIN evs AS e, vnum AS visit) \
         ANY LEFT JOIN (SELECT visitor_id, visit, {right} FROM ({s}) ARRAY JOIN evs AS e, idx AS i, vnum AS visit \
         GROUP BY visitor_id, visit) USING (visitor_id, visit) \
         WHERE timestamp >= {start} AND timestamp < {end})",
        left = left.join(", "),
        right = visit_aggregates("v_").join(", "),
        start = utc(q.start),
        end = utc(q.end),
    )
}

/// SQL for whether an event row completes `g`.
pub fn goal_cond(g: &Goal) -> String {
    match (&g.event_name, &g.page_path) {
        (Some(n), _) => format!("name = {}", lit(n)),
        (None, Some(p)) => format!(
            "(name = 'pageview' AND match(pathname, {}))",
            lit(&glob_to_regex(p))
        ),
        (None, None) => "0".into(),
    }
}

fn tz_lit(q: &Query) -> String {
    lit(&q.tz)
}

fn time_expr(b: TimeBucket, ts: &str, q: &Query) -> String {
    let tz = tz_lit(q);
    match b {
        TimeBucket::Hour => format!("formatDateTime({ts}, '%Y-%m-%d %H:00:00', {tz})"),
        TimeBucket::Day => format!("toString(toDate({ts}, {tz}))"),
        TimeBucket::Week => format!("toString(toMonday(toDate({ts}, {tz})))"),
        TimeBucket::Month => format!("toString(toStartOfMonth(toDate({ts}, {tz})))"),
    }
}

fn ts_col(src: Source) -> &'static str {
    match src {
        Source::Visits => "start",
        Source::Hourly => "hour",
        Source::VisitsDaily => "toDateTime(day, 'UTC')",
        Source::Events | Source::Joined => "timestamp",
    }
}

/// The SQL for a dimension's value on `src` rows.
fn dim_expr(d: &Dim, src: Source, q: &Query, site: &SiteView) -> String {
    match &d.kind {
        DimKind::Event(_) | DimKind::Visitor(_) if src == Source::VisitsDaily => "value".into(),
        DimKind::Event(c) => (*c).to_string(),
        DimKind::Visitor(c) => (*c).to_string(),
        DimKind::Visit(c) => {
            let col = match src {
                Source::Joined => format!("v_{c}"),
                Source::VisitsDaily => "value".into(),
                _ => (*c).to_string(),
            };
            if *c == "source" {
                // Plausible's name for visits without a referrer or campaign.
                format!("if({col} = '', 'Direct / None', {col})")
            } else {
                col
            }
        }
        DimKind::Goal => {
            let items: Vec<String> = site
                .goals
                .iter()
                .map(|g| format!("if({}, {}, '')", goal_cond(g), lit(&g.name)))
                .collect();
            if items.is_empty() {
                "arrayJoin(emptyArrayString())".into()
            } else {
                format!(
                    "arrayJoin(arrayFilter(x -> x != '', [{}]))",
                    items.join(", ")
                )
            }
        }
        DimKind::CountryName => country_name_expr(if src == Source::VisitsDaily {
            "value"
        } else {
            "country_code"
        }),
        DimKind::Prop(k) => format!(
            "if(has(prop_keys, {k}), prop_values[indexOf(prop_keys, {k})], '(none)')",
            k = lit(k)
        ),
        DimKind::Time(b) => time_expr(*b, ts_col(src), q),
    }
}

/// `country_code` → English ISO 3166 name (the code itself when unknown).
fn country_name_expr(col: &str) -> String {
    let (codes, names): (Vec<String>, Vec<String>) = isocountry::CountryCode::iter()
        .map(|c| (lit(c.alpha2()), lit(c.name())))
        .unzip();
    format!(
        "transform({col}, [{}], [{}], {col})",
        codes.join(", "),
        names.join(", ")
    )
}

/// SQL for a filter over [`joined_rows`].
pub fn joined_filter(f: &Filter, q: &Query, site: &SiteView) -> String {
    filter_sql(f, Source::Joined, q, site)
}

/// SQL for a filter over `src` rows.
fn filter_sql(f: &Filter, src: Source, q: &Query, site: &SiteView) -> String {
    match f {
        Filter::And(v) => format!(
            "({})",
            v.iter()
                .map(|x| filter_sql(x, src, q, site))
                .collect::<Vec<_>>()
                .join(" AND ")
        ),
        Filter::Or(v) => format!(
            "({})",
            v.iter()
                .map(|x| filter_sql(x, src, q, site))
                .collect::<Vec<_>>()
                .join(" OR ")
        ),
        Filter::Not(x) => format!("(NOT {})", filter_sql(x, src, q, site)),
        // Visitors with a matching event in the query's range (bots excluded, as everywhere).
        // `GLOBAL`: in cluster mode the set is made once and sent to the shards.
        Filter::HasDone { not, inner } => format!(
            "(visitor_id GLOBAL {}IN (SELECT visitor_id FROM events WHERE {} AND timestamp >= {} \
             AND timestamp < {} AND bot = '' AND {HAS_VISITOR} AND {}))",
            if *not { "NOT " } else { "" },
            site_cond(&q.site),
            utc(q.start),
            utc(q.end),
            filter_sql(inner, Source::Events, q, site)
        ),
        Filter::Cond {
            op,
            dim,
            values,
            case_sensitive,
        } => {
            let positive = if dim.kind == DimKind::Goal {
                goal_filter(*op, values, *case_sensitive, site)
            } else {
                let col = dim_expr(dim, src, q, site);
                let (col, vals): (String, Vec<String>) = if *case_sensitive {
                    (col, values.clone())
                } else if matches!(op, Op::Matches | Op::MatchesNot) {
                    (col, values.iter().map(|v| format!("(?i){v}")).collect())
                } else {
                    (
                        format!("lowerUTF8({col})"),
                        values.iter().map(|v| v.to_lowercase()).collect(),
                    )
                };
                match op {
                    Op::Is | Op::IsNot => format!("{col} IN {}", lit_list(&vals)),
                    Op::Contains | Op::ContainsNot => format!(
                        "({})",
                        vals.iter()
                            .map(|v| format!("position({col}, {}) > 0", lit(v)))
                            .collect::<Vec<_>>()
                            .join(" OR ")
                    ),
                    Op::Matches | Op::MatchesNot => format!(
                        "({})",
                        vals.iter()
                            .map(|v| format!("match({col}, {})", lit(v)))
                            .collect::<Vec<_>>()
                            .join(" OR ")
                    ),
                }
            };
            if op.negated() {
                format!("(NOT {positive})")
            } else {
                positive
            }
        }
    }
}

/// A goal filter: the goals whose names the condition selects, as an OR of their conditions.
fn goal_filter(op: Op, values: &[String], case_sensitive: bool, site: &SiteView) -> String {
    let norm = |s: &str| {
        if case_sensitive {
            s.to_string()
        } else {
            s.to_lowercase()
        }
    };
    let selected: Vec<&Goal> = site
        .goals
        .iter()
        .filter(|g| {
            let name = norm(&g.name);
            values.iter().any(|v| match op {
                Op::Is | Op::IsNot => name == norm(v),
                Op::Contains | Op::ContainsNot => name.contains(&norm(v)),
                Op::Matches | Op::MatchesNot => regex::RegexBuilder::new(v)
                    .case_insensitive(!case_sensitive)
                    .size_limit(super::REGEX_SIZE_LIMIT)
                    .build()
                    .map(|r| r.is_match(&g.name))
                    .unwrap_or(false),
            })
        })
        .collect();
    if selected.is_empty() {
        "0".into()
    } else {
        format!(
            "({})",
            selected
                .iter()
                .map(|g| goal_cond(g))
                .collect::<Vec<_>>()
                .join(" OR ")
        )
    }
}

fn prop_num(name: &str) -> String {
    format!(
        "toFloat64OrZero(prop_values[indexOf(prop_keys, {n})])",
        n = lit(name)
    )
}

fn metric_sql(m: Metric, src: Source, q: &Query) -> String {
    let tz = tz_lit(q);
    match src {
        Source::Visits => match m {
            Metric::Visitors | Metric::Percentage => "uniq(visitor_id)".into(),
            Metric::Visits => "count()".into(),
            Metric::Pageviews => "sum(pageviews)".into(),
            Metric::Events => "sum(events)".into(),
            // The same arithmetic as the daily rollup's sums, so both round alike.
            Metric::ViewsPerVisit => "round(sum(pageviews) / count(), 2)".into(),
            Metric::BounceRate => "round(sum(bounce) * 100 / count())".into(),
            Metric::VisitDuration => "round(sum(duration) / count())".into(),
            Metric::SessionsPerUser => "round(count() / uniq(visitor_id), 2)".into(),
            Metric::Dau => format!("round(uniq(visitor_id) / uniq(toDate(start, {tz})), 1)"),
            _ => "0".into(),
        },
        Source::VisitsDaily => match m {
            Metric::Visits => "sum(visits_n)".into(),
            Metric::Pageviews => "sum(pv_n)".into(),
            Metric::Events => "sum(ev_n)".into(),
            Metric::ViewsPerVisit => "round(sum(pv_n) / sum(visits_n), 2)".into(),
            Metric::BounceRate => "round(sum(bounces_n) * 100 / sum(visits_n))".into(),
            Metric::VisitDuration => "round(sum(dur_n) / sum(visits_n))".into(),
            Metric::SessionsPerUser => "round(sum(visits_n) / sum(dv), 2)".into(),
            // Hashes rotate at UTC midnight: visitors of a range are the sum of its days'.
            _ => "sum(dv)".into(),
        },
        Source::Hourly => match m {
            Metric::Pageviews => "countMergeIf(hits, name = 'pageview')".into(),
            Metric::Events => "countMergeIf(hits, name != 'engagement')".into(),
            _ => "uniqMerge(visitors)".into(),
        },
        Source::Events | Source::Joined => {
            let visit = "(visitor_id, visit)";
            match m {
                Metric::Visitors | Metric::ConversionRate | Metric::Percentage => {
                    "uniq(visitor_id)".into()
                }
                Metric::Pageviews => "countIf(name = 'pageview')".into(),
                Metric::Events => "countIf(name != 'engagement')".into(),
                Metric::TimeOnPage => "round(sumIf(engagement_ms, name = 'engagement') / 1000 / greatest(countIf(name = 'pageview'), 1))".into(),
                Metric::ScrollDepth => "round(avgIf(scroll_depth, name = 'engagement' AND scroll_depth > 0))".into(),
                Metric::TotalRevenue => "round(sum(revenue_micros) / 1000000, 2)".into(),
                Metric::AverageRevenue => "round(avgIf(revenue_micros, revenue_micros != 0) / 1000000, 2)".into(),
                Metric::Dau => format!("round(uniq(visitor_id) / uniq(toDate(timestamp, {tz})), 1)"),
                Metric::LaunchTimeP50 => format!("round(quantileIf(0.5)({}, has(prop_keys, 'launch_ms')))", prop_num("launch_ms")),
                Metric::LaunchTimeP95 => format!("round(quantileIf(0.95)({}, has(prop_keys, 'launch_ms')))", prop_num("launch_ms")),
                Metric::LatencyP50 => format!("round(quantileIf(0.5)({}, has(prop_keys, 'latency_ms')))", prop_num("latency_ms")),
                Metric::LatencyP95 => format!("round(quantileIf(0.95)({}, has(prop_keys, 'latency_ms')))", prop_num("latency_ms")),
                Metric::Crashes => format!("countIf(has(prop_keys, 'crash') AND {} >= 1)", prop_num("crash")),
                Metric::Visits => format!("uniqExact{visit}"),
                Metric::BounceRate => format!("round(100 * uniqExactIf({visit}, v_bounce = 1) / uniqExact{visit})"),
                Metric::VisitDuration => "round(arraySum(arrayMap(t -> t.2, groupUniqArray((cityHash64(visitor_id, visit), v_duration)))) / uniqExact(visitor_id, visit))".into(),
                Metric::ViewsPerVisit => "round(arraySum(arrayMap(t -> t.2, groupUniqArray((cityHash64(visitor_id, visit), v_pageviews)))) / uniqExact(visitor_id, visit), 2)".into(),
                Metric::SessionsPerUser => format!("round(uniqExact{visit} / uniq(visitor_id), 2)"),
            }
        }
    }
}

/// Whether a metric of the `(other)` row is the sum of the folded rows' values.
pub fn additive(m: Metric) -> bool {
    matches!(
        m,
        Metric::Visits
            | Metric::Pageviews
            | Metric::Events
            | Metric::TotalRevenue
            | Metric::Crashes
    )
}

/// The full SQL for `q` on `site`, given the recorded visit builds (latest per UTC day).
///
/// With `fold = Some(k)` a breakdown (dimensions, none of them time) is folded in SQL: rows
/// with fewer than k visitors become one row whose counts (visitors too) are the sums of the
/// folded rows', shown only if the folded rows' distinct visitors — `k`: the exact union of
/// their `uniq` states, or on built days its lower bound — reach k. Output: `shown` (0 for
/// the folded row), `d…`, `m…`, `k`, `n` (rows folded).
pub fn sql(q: &Query, site: &SiteView, built: &[Build], fold: Option<u64>) -> String {
    let inner = inner_sql(q, site, built, fold);
    let Some(kmin) = fold.filter(|_| !q.dimensions.is_empty() && q.time_bucket().is_none()) else {
        return inner;
    };
    let nd = q.dimensions.len();
    let mut select = vec![format!("toUInt8(k >= {kmin}) AS shown")];
    select.extend((0..nd).map(|i| format!("if(shown, d{i}, '') AS g{i}")));
    for (i, m) in q.metrics.iter().enumerate() {
        select.push(
            if additive(*m)
                || matches!(
                    m,
                    Metric::Visitors | Metric::ConversionRate | Metric::Percentage
                )
            {
                format!("if(shown, any(m{i}), sum(m{i})) AS o{i}")
            } else {
                format!("any(m{i}) AS o{i}")
            },
        );
    }
    select.push(if site.child_directed {
        "sum(k) AS ok".into()
    } else if source(q, false) == Source::VisitsDaily {
        // Closed days carry plain per-day counts, not hashes: their part of the union is at
        // least the sum over days of the largest folded row of each day (days never share a
        // hash). The other days' part is exact (the states of their rows under k: a row at
        // or over k on some day is never folded). The sum is a lower bound, so a fold shown
        // because of it has at least k visitors; one under it is hidden.
        format!("arraySum(arrayMap(d -> arrayReduce('max', arrayMap(t -> if(t.1 = d, t.2, toUInt64(0)), {a})), arrayDistinct(arrayMap(t -> t.1, {a})))) + uniqMerge(ks) AS ok", a = "groupArrayArray(kd)")
    } else {
        "uniqMerge(ks) AS ok".into()
    });
    select.push("count() AS n".into());
    let groups: Vec<String> = std::iter::once("shown".to_string())
        .chain((0..nd).map(|i| format!("g{i}")))
        .collect();
    let order: Vec<String> = std::iter::once("shown DESC".to_string())
        .chain(q.order_by.iter().map(|(i, desc)| {
            let col = if *i < nd {
                format!("g{i}")
            } else {
                format!("o{}", i - nd)
            };
            format!("{col} {}", if *desc { "DESC" } else { "ASC" })
        }))
        .collect();
    format!(
        "SELECT {} FROM ({inner}) GROUP BY {} ORDER BY {}",
        select.join(", "),
        groups.join(", "),
        order.join(", ")
    )
}

/// The report's rows before folding; with `fold = Some(k)`, also what the fold needs (`ks`,
/// and `kd` for [`Source::VisitsDaily`]).
fn inner_sql(q: &Query, site: &SiteView, built: &[Build], fold: Option<u64>) -> String {
    let src = source(q, site.child_directed);
    let mut select: Vec<String> = q
        .dimensions
        .iter()
        .enumerate()
        .map(|(i, d)| format!("{} AS d{i}", dim_expr(d, src, q, site)))
        .collect();
    select.extend(
        q.metrics
            .iter()
            .enumerate()
            .map(|(i, m)| format!("{} AS m{i}", metric_sql(*m, src, q))),
    );
    select.push(
        match (src, site.child_directed) {
            (Source::Hourly, true) => "countMerge(hits)",
            (Source::Hourly, false) => "uniqMerge(visitors)",
            (Source::VisitsDaily, _) => "sum(dv)",
            (_, true) => "count()",
            (_, false) => "uniq(visitor_id)",
        }
        .to_string()
            + " AS k",
    );
    if let Some(kmin) = fold {
        select.push(
            match (src, site.child_directed) {
                (_, true) => "count()",
                (Source::Hourly, false) => "uniqMergeState(visitors)",
                (Source::VisitsDaily, false) => "uniqMergeStateIf(s, b = 0 AND dv < {kmin})",
                (_, false) => "uniqState(visitor_id)",
            }
            .replace("{kmin}", &kmin.to_string())
                + " AS ks",
        );
        if src == Source::VisitsDaily {
            select.push("groupArrayIf((day, dv), b = 1) AS kd".into());
        }
    }
    let range = format!(
        "{} AND {ts} >= {} AND {ts} < {}",
        site_cond(&q.site),
        utc(q.start),
        utc(q.end),
        ts = ts_col(src)
    );
    let (from, mut wher) = match src {
        Source::Visits => (visit_rows(q, built), Vec::new()),
        Source::Hourly => (hourly_rows(q, built), Vec::new()),
        Source::VisitsDaily => (visits_daily_rows(q, built), Vec::new()),
        Source::Events => ("events".to_string(), vec![range, "bot = ''".to_string()]),
        Source::Joined => (joined_rows(q), Vec::new()),
    };
    if let Some(f) = &q.filter {
        wher.push(filter_sql(f, src, q, site));
    }
    let mut s = format!("SELECT {} FROM {from}", select.join(", "));
    if !wher.is_empty() {
        s.push_str(&format!(" WHERE {}", wher.join(" AND ")));
    }
    if !q.dimensions.is_empty() {
        // 18.16 has no positional GROUP BY: group and order by the aliases.
        let aliases: Vec<String> = (0..q.dimensions.len()).map(|i| format!("d{i}")).collect();
        s.push_str(&format!(" GROUP BY {}", aliases.join(", ")));
        let nd = q.dimensions.len();
        let order: Vec<String> = q
            .order_by
            .iter()
            .map(|(i, desc)| {
                let col = if *i < nd {
                    format!("d{i}")
                } else {
                    format!("m{}", i - nd)
                };
                format!("{col} {}", if *desc { "DESC" } else { "ASC" })
            })
            .collect();
        s.push_str(&format!(" ORDER BY {}", order.join(", ")));
    }
    s
}
