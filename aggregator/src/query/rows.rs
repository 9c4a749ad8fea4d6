//! The rows each [`Source`](super::source::Source) reads for a query's range, as a `FROM`
//! clause ([`Sql`]): recorded builds and rollups where the rollup job has made and checked
//! them, raw events in the same shape elsewhere, so both give the same numbers.
//!
//! - visit rows (`visit_rows`): days come from the `visits` table (latest recorded build
//!   of each day; today's only up to its cut, the rest from
//!   [`open_visit_rows`]); days without a build are derived from raw events
//!   with the same SQL (`derive_visit_cols`);
//! - the event rollups (`hourly_rows`);
//! - per-day, per-dimension counts (`visits_daily_rows`);
//! - hits beside their visit's properties ([`joined_rows`]): from the visit rows' hit arrays
//!   on built days, raw events joined to their derived visits elsewhere ([`raw_joined_rows`]).

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime};
use veil_schemas::sql;
use veil_schemas::sql::{date, idents, utc, Sql};

use super::build::Build;
use super::expr::{filter_sql, hit_array, visit_hit_count, visit_level, visit_prefilter};
use super::source::{
    daily_dim, dim_cond, local_days_utc, rows_filter, utc_aligned, DailyDim, DailyFilter, Source,
};
use super::visits::{
    after_cut_cond, derive_visit_cols, filtered_dim, hit_field, open_visit_rows, sessionize,
    site_cond, visit_aggregates, EMPTY_STATE, EV_FIELDS, HAS_VISITOR, RECENT, VISIT_MEASURES,
};
use super::vocab::{DimKind, Filter, Metric, Query, TimeBucket};
use crate::site::SiteView;

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

/// UTC days touched by `[start, end)`.
pub(super) fn utc_days(start: NaiveDateTime, end: NaiveDateTime) -> Vec<NaiveDate> {
    let mut out = Vec::new();
    let mut d = start.date();
    while d.and_hms_opt(0, 0, 0).unwrap_or_default() < end && out.len() < 4000 {
        out.push(d);
        d += Duration::days(1);
    }
    out
}

/// Splits `[start, end)` into whole UTC days (those `keep` accepts) and the remaining ranges.
pub(super) fn split_days(
    start: NaiveDateTime,
    end: NaiveDateTime,
    keep: impl Fn(NaiveDate) -> bool,
) -> (Vec<NaiveDate>, Vec<(NaiveDateTime, NaiveDateTime)>) {
    let mut days = Vec::new();
    let mut rest: Vec<(NaiveDateTime, NaiveDateTime)> = Vec::new();
    for d in utc_days(start, end) {
        let lo = d.and_time(NaiveTime::MIN);
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

/// The parts as one parenthesised `UNION ALL` (a `FROM` clause).
fn union_all(parts: Vec<Sql>) -> Sql {
    sql!("({})", Sql::join(parts, " UNION ALL "))
}

/// `(day, build) IN ((toDate(…), toUInt64(n)), …)` for builds, or `0` when none holds rows.
///
/// A day read as built and empty (`builds::empty_days`) is build 0, a number no build takes
/// (`rollup::next_build` starts at 1): it holds no row, so it is left out. Twelve months
/// with one month of data named 340 such pairs in every statement, and ClickHouse 18.16
/// spent ~50 ms analysing them each time (the chart by month alone: 75 against 22 ms; the
/// unfiltered first screen over 12 months at 10M events: 400–420 against 120–130 ms).
pub(super) fn builds_key<'a>(builds: impl Iterator<Item = &'a Build>) -> Sql {
    let tuples: Vec<Sql> = builds
        .filter(|b| b.build != 0)
        .map(|b| sql!("({}, toUInt64({}))", date(b.day), b.build))
        .collect();
    if tuples.is_empty() {
        return Sql::new("0");
    }
    sql!("(day, build) IN ({})", Sql::join(tuples, ", "))
}

/// Rows of the event rollups covering `q`'s range, with the columns of `events_hourly`
/// (`hour` is the day's midnight for daily rows).
///
/// The rollups are fed by materialized views, which are not atomic with the insert they
/// follow (a server that dies between the two writes keeps the events and loses their rollup
/// rows), so they are read only for days the rollup job has checked against the raw events:
/// closed days with a whole visit build. The current day, and any day not checked yet, is
/// aggregated from raw events into the same shape.
///
/// `filter`, a condition on a hit's name, path and host (a page, goal or event-name filter),
/// is applied in each part: on the rollups in `PREWHERE`, so that only the matching rows'
/// `uniq` states are read (their key starts with site, day or hour, name, path: one event name
/// or a run of paths is a range of it) — top pages under a goal read 45 k rows' states at 50M
/// events, 2.2 s, when one name's rows are a few hundred; on raw events before grouping.
pub(super) fn hourly_rows(q: &Query, built: &[Build], filter: Option<&Sql>) -> Sql {
    let daily_allowed = match q.time_bucket() {
        None => true,
        Some(TimeBucket::Hour | TimeBucket::Minute) => false,
        Some(_) => local_days_utc(q),
    };
    let checked = |d: NaiveDate| built.iter().any(|b| b.day == d && b.cut.is_none());
    let (days, rest) = split_days(q.start, q.end, |d| daily_allowed && checked(d));
    let site = match filter {
        Some(f) => sql!("{} AND {}", site_cond(&q.site), f.clone()),
        None => site_cond(&q.site),
    };
    let mut parts = Vec::new();
    if !days.is_empty() {
        let list = Sql::join(days.iter().map(|d| utc(d.and_time(NaiveTime::MIN))), ", ");
        parts.push(sql!(
            "SELECT site, day AS hour, name, pathname, hostname, visitors, hits FROM events_daily \
             PREWHERE {} AND day IN ({})",
            site.clone(),
            list
        ));
    }
    // The rest, cut at UTC midnights into checked and unchecked pieces.
    type Ranges = Vec<(NaiveDateTime, NaiveDateTime)>;
    let (mut rolled, mut raw): (Ranges, Ranges) = (Vec::new(), Vec::new());
    for (a, b) in rest {
        for d in utc_days(a, b) {
            let lo = a.max(d.and_time(NaiveTime::MIN));
            let hi = b.min(d.and_time(NaiveTime::MIN) + Duration::days(1));
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
    let ranges = |col: &'static str, r: &Ranges| -> Sql {
        Sql::join(
            r.iter()
                .map(|(a, b)| sql!("({0} >= {1} AND {0} < {2})", col, utc(*a), utc(*b))),
            " OR ",
        )
    };
    if !rolled.is_empty() {
        parts.push(sql!(
            "SELECT site, hour, name, pathname, hostname, visitors, hits FROM events_hourly \
             PREWHERE {} AND ({})",
            site.clone(),
            ranges("hour", &rolled)
        ));
    }
    if !raw.is_empty() || parts.is_empty() {
        if raw.is_empty() {
            raw.push((q.start, q.end));
        }
        parts.push(sql!(
            "SELECT site, toStartOfHour(timestamp) AS hour, name, pathname, hostname, \
             uniqState(visitor_id) AS visitors, countState() AS hits FROM events \
             WHERE {} AND ({}) AND bot = '' GROUP BY site, hour, name, pathname, hostname",
            site,
            ranges("timestamp", &raw)
        ));
    }
    union_all(parts)
}

/// For a [`Source::VisitsDaily`](super::source::Source::VisitsDaily) query that reads only
/// visitors (and shares of them), by no dimension or a visitor fact: the value expression of a
/// hit or visit row. Such a query needs no visit put together from the hits after today's cut.
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

/// Rows for [`Source::VisitsDaily`](super::source::Source::VisitsDaily), one per UTC day and
/// dimension value: `day`, `value`, `b` (1: a closed day's built row), `dv` (distinct visitors
/// of that day and value), `s` (their uniq state; empty for a closed day), `visits_n`, `pv_n`,
/// `ev_n`, `bounces_n`, `dur_n`. Days never share a hash, so a report adds the days' `dv` up.
/// Each day's parts carry `uv` (a closed day's exact count) or `st` (a uniq state of the
/// visitor hashes of the other parts), merged once per day.
///
/// Closed built days come from `visits_daily` (plain numbers, no state is read); the current
/// day's build from `visits_daily_partial` with its states, plus what lies after its cut
/// ([`open_visit_rows`] and the hits from the cut on); other days
/// (without a build, or the edges of a range that is not whole UTC days) from visit rows or
/// raw events aggregated per day on the fly.
///
/// Under a filter ([`DailyFilter`]) the closed days whose build carries the filtered rows read
/// those (`dim` from [`filtered_dim`]); every other stretch — today, days built before them or
/// not at all — is the same per-day rows made from that stretch's filtered visit rows or hits
/// ([`filtered_part`]).
pub(super) fn visits_daily_rows(q: &Query, site: &SiteView, built: &[Build]) -> Sql {
    let which = q.dimensions.iter().find_map(daily_dim);
    let plain = match which {
        None => String::new(),
        Some(DailyDim::Visit(c)) => c.to_string(),
        Some(DailyDim::Event(c)) => format!("event:{c}"),
    };
    // A filter on the dimension alone is applied to the unfiltered rows' values (`rows_filter`).
    let filter = rows_filter(q);
    let dim = match &filter {
        Some(f) => filtered_dim(&plain, f.key, &f.value),
        None => plain,
    };
    let dim_cond = dim_cond(filter.as_ref(), &dim);
    let (days, rest) = split_days(q.start, q.end, |d| {
        built.iter().any(|b| {
            b.day == d && (filter.is_none() || (b.filtered && b.cut.is_none() && b.snap.is_none()))
        })
    });
    // The builds of the whole days read from `visits_daily(_partial)`: closed (`partial`
    // false) or today's, without a snapshot.
    let builds = |partial: bool| {
        built
            .iter()
            .filter(|b| days.contains(&b.day) && b.cut.is_some() == partial && b.snap.is_none())
            .collect::<Vec<_>>()
    };
    // Rows of `table` matching `key` (besides site and dimension): finished counts (`exact`:
    // closed days, a snapshot of today) with an empty state each, or today's build with its
    // states.
    let from_daily = |table: &'static str, exact: bool, key: Sql| {
        let (b, uv, st, group): (u8, &'static str, &'static str, &'static str) = if exact {
            // Rows are unique per day and value, so grouping (for the empty state) keeps them
            // as they are.
            (1, "sum(uv)", EMPTY_STATE, " GROUP BY day, value")
        } else {
            (0, "toUInt64(0)", "visitors", "")
        };
        let sum = |c: &'static str| {
            if exact {
                sql!("sum({})", c)
            } else {
                Sql::new(c)
            }
        };
        sql!(
            "SELECT day, value, toUInt8({}) AS b, {} AS uv, {} AS st, {} AS visits_n, \
             {} AS pv_n, {} AS ev_n, {} AS bounces_n, {} AS dur_n \
             FROM {} PREWHERE {} AND {} AND {}{}",
            b,
            uv,
            st,
            sum("visits"),
            sum("pageviews"),
            sum("events"),
            sum("bounces"),
            sum("duration"),
            table,
            site_cond(&q.site),
            dim_cond.clone(),
            key,
            group
        )
    };
    // Rows aggregated per day from raw events (table `events` matching `cond`) or visit rows.
    let on_the_fly = |events: &'static str, cond: Sql, visits: Sql| match which {
        Some(DailyDim::Event(c)) => sql!(
            "SELECT toDate(timestamp, 'UTC') AS day, {} AS value, toUInt8(0) AS b, \
             toUInt64(0) AS uv, uniqState(visitor_id) AS st, toUInt64(0) AS visits_n, \
             countIf(name = 'pageview') AS pv_n, countIf(name != 'engagement') AS ev_n, \
             toUInt64(0) AS bounces_n, toUInt64(0) AS dur_n FROM {} \
             WHERE {} AND bot = '' GROUP BY day, value",
            c,
            events,
            cond
        ),
        _ => {
            let value = match which {
                Some(DailyDim::Visit(c)) => c,
                _ => "''",
            };
            sql!(
                "SELECT toDate(start, 'UTC') AS day, {} AS value, toUInt8(0) AS b, \
                 toUInt64(0) AS uv, uniqState(visitor_id) AS st, count() AS visits_n, \
                 sum(pageviews) AS pv_n, sum(events) AS ev_n, sum(bounce) AS bounces_n, \
                 sum(duration) AS dur_n FROM {} GROUP BY day, value",
                value,
                visits
            )
        }
    };
    let mut parts = Vec::new();
    let closed = builds(false);
    if !closed.is_empty() {
        parts.push(from_daily(
            "visits_daily",
            true,
            builds_key(closed.into_iter()),
        ));
    }
    // The current day read from a fresh snapshot: finished numbers, like a closed day's.
    for b in built.iter().filter(|b| days.contains(&b.day)) {
        let Some(snap) = b.snap else { continue };
        parts.push(from_daily(
            "today_daily",
            true,
            sql!(
                "day = {} AND build = {} AND snap = {} AND id = {}",
                date(b.day),
                b.build,
                utc(snap.at),
                snap.id
            ),
        ));
    }
    let partial = builds(true);
    if !partial.is_empty() {
        parts.push(from_daily(
            "visits_daily_partial",
            false,
            builds_key(partial.into_iter()),
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
                let days_value = |from: &'static str, ts: &'static str, cond: Sql| {
                    sql!(
                        "SELECT toDate({}, 'UTC') AS day, {} AS value, toUInt8(0) AS b, \
                         toUInt64(0) AS uv, uniqState(visitor_id) AS st, toUInt64(0) AS visits_n, \
                         toUInt64(0) AS pv_n, toUInt64(0) AS ev_n, toUInt64(0) AS bounces_n, \
                         toUInt64(0) AS dur_n FROM {} WHERE {} GROUP BY day, value",
                        ts,
                        value,
                        from,
                        cond
                    )
                };
                parts.push(days_value(
                    "open_visits",
                    "start",
                    sql!(
                        "{} AND day = {} AND build = {}",
                        site_cond(&q.site),
                        date(b.day),
                        b.build
                    ),
                ));
                parts.push(days_value(
                    RECENT,
                    "timestamp",
                    sql!(
                        "{} AND bot = '' AND {}",
                        after_cut_cond(&q.site, b, cut),
                        HAS_VISITOR
                    ),
                ));
                continue;
            }
            let visits = sql!(
                "({})",
                open_visit_rows(&q.site, b, cut, &needed_visit_cols(q))
            );
            parts.push(on_the_fly(RECENT, after_cut_cond(&q.site, b, cut), visits));
        }
    }
    for (a, b) in rest {
        let mut part = q.clone();
        part.start = a;
        part.end = b;
        if let (Some(f), Some(cond)) = (&filter, q.filter.as_ref()) {
            parts.push(filtered_part(&part, site, built, which, f, cond));
            continue;
        }
        let cond = sql!(
            "{} AND timestamp >= {} AND timestamp < {}",
            site_cond(&q.site),
            utc(a),
            utc(b)
        );
        parts.push(on_the_fly("events", cond, visit_rows(&part, built, &[])));
    }
    // One row per UTC day and value, with the day's distinct visitors as a plain number:
    // each day's states (today's build and what follows its cut, a day without a build) are
    // merged here, once; days never share a hash, so the report adds the days up.
    // `s` keeps the merged state for the k fold's exact union (a report reads it only for
    // rows under k, whose states are small).
    sql!(
        "(SELECT day, value, b, uv_sum + finalizeAggregation(s) AS dv, s, visits_n, pv_n, \
         ev_n, bounces_n, dur_n FROM (SELECT day, value, max(b) AS b, sum(uv) AS uv_sum, \
         uniqMergeState(st) AS s, sum(visits_n) AS visits_n, sum(pv_n) AS pv_n, \
         sum(ev_n) AS ev_n, sum(bounces_n) AS bounces_n, sum(dur_n) AS dur_n FROM ({}) \
         GROUP BY day, value))",
        Sql::join(parts, " UNION ALL ")
    )
}

/// A filtered [`visits_daily_rows`] part for a stretch without filtered rows: the same per-day
/// rows (`day`, `value`, `b` 0, `uv` 0, `st`, counts) made from the stretch's visit rows
/// under `q`'s filter `f` — "some hit of the visit" for a page or event name, whose pageviews
/// and events are then the matching hits (as `visit_hits` counts them) — or, by page, from
/// the hits of the visits the visit filter keeps.
fn filtered_part(
    q: &Query,
    site: &SiteView,
    built: &[Build],
    which: Option<DailyDim>,
    f: &DailyFilter,
    filter: &Filter,
) -> Sql {
    if let Some(DailyDim::Event(c)) = which {
        // The hits must carry their time (their UTC day) and event name (what they count).
        let mut part = q.clone();
        part.metrics = vec![Metric::Pageviews, Metric::Dau];
        let pre = visit_prefilter(filter, &part, site);
        return sql!(
            "SELECT toDate(timestamp, 'UTC') AS day, {} AS value, toUInt8(0) AS b, \
             toUInt64(0) AS uv, uniqState(visitor_id) AS st, toUInt64(0) AS visits_n, \
             countIf(name = 'pageview') AS pv_n, countIf(name != 'engagement') AS ev_n, \
             toUInt64(0) AS bounces_n, toUInt64(0) AS dur_n FROM {} WHERE {} \
             GROUP BY day, value",
            c,
            joined_rows(&part, built, Some(&pre)),
            filter_sql(filter, Source::VisitHits, &part, site)
        );
    }
    let value = match which {
        Some(DailyDim::Visit(c)) => c,
        _ => "''",
    };
    let (rows, cond, pv, ev) = if f.about_hit() {
        // A goal's condition reads the name and path.
        let mut cols = vec!["name", "pathname"];
        if f.key == "event:hostname" {
            cols.push("hostname");
        }
        let arrays: Vec<&'static str> = cols.iter().filter_map(|c| hit_array(c)).collect();
        (
            visit_rows(q, &hit_builds(built, &cols), &arrays),
            visit_level(filter, q, site),
            visit_hit_count("name = 'pageview'", Some(filter), &cols, q, site),
            visit_hit_count("name != 'engagement'", Some(filter), &cols, q, site),
        )
    } else {
        (
            visit_rows(q, built, &[]),
            filter_sql(filter, Source::Visits, q, site),
            Sql::new("sum(pageviews)"),
            Sql::new("sum(events)"),
        )
    };
    sql!(
        "SELECT toDate(start, 'UTC') AS day, {} AS value, toUInt8(0) AS b, toUInt64(0) AS uv, \
         uniqState(visitor_id) AS st, count() AS visits_n, {} AS pv_n, {} AS ev_n, \
         sum(bounce) AS bounces_n, sum(duration) AS dur_n FROM {} WHERE {} GROUP BY day, value",
        value,
        pv,
        ev,
        rows,
        cond
    )
}

/// The visit columns `q` reads: [`VISIT_MEASURES`] and the visit columns of its dimensions
/// and filters.
fn needed_visit_cols(q: &Query) -> Vec<&'static str> {
    let mut cols = VISIT_MEASURES.to_vec();
    let filter_dims = q.filter.as_ref().map(|f| f.dims()).unwrap_or_default();
    for d in q.dimensions.iter().chain(filter_dims) {
        let c = match d.kind {
            DimKind::Visit(c) | DimKind::Visitor(c) | DimKind::PlaceName(c) => c,
            DimKind::CountryName => "country_code",
            _ => continue,
        };
        // Plausible's `os_version` of Windows is in the OS name (`labels`).
        let os: &[&'static str] = if c == "os_version" { &["os"] } else { &[] };
        for c in std::iter::once(c).chain(os.iter().copied()) {
            if !cols.contains(&c) {
                cols.push(c);
            }
        }
    }
    cols
}

/// The visit rows of `q`'s range: recorded builds where they exist (and rollups are allowed),
/// derived from raw events elsewhere.
///
/// `hits`: hit arrays (of [`super::visits::VISIT_HITS`]) the rows must carry too; then `built` must hold
/// only builds whose visits carry them ([`Build::hits`]).
pub(super) fn visit_rows(q: &Query, built: &[Build], hits: &[&'static str]) -> Sql {
    let mut needed = needed_visit_cols(q);
    needed.extend(hits.iter().copied());
    let cols = idents(&needed, ", ");
    let in_range = sql!("start >= {} AND start < {}", utc(q.start), utc(q.end));
    let days = utc_days(q.start, q.end);
    let use_built = q.rollups && !q.realtime;
    let (have, missing): (Vec<NaiveDate>, Vec<NaiveDate>) = days
        .into_iter()
        .partition(|d| use_built && built.iter().any(|b| b.day == *d));
    let mut parts = Vec::new();
    if !have.is_empty() {
        parts.push(sql!(
            "SELECT {} FROM visits WHERE {} AND {} AND {}",
            cols,
            site_cond(&q.site),
            builds_key(built.iter().filter(|b| have.contains(&b.day))),
            in_range
        ));
    }
    // The current day's build ends at its cut: the rest of its visits come from raw events.
    for b in built.iter().filter(|b| have.contains(&b.day)) {
        let Some(cut) = b.cut else { continue };
        let derived = open_visit_rows(&q.site, b, cut, &needed);
        parts.push(sql!(
            "SELECT {} FROM ({}) WHERE {}",
            cols,
            derived,
            in_range
        ));
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
        let time = ranges.iter().map(|(a, b)| {
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
            sql!("(timestamp >= {} AND timestamp < {})", utc(lo), utc(hi))
        });
        let cond = sql!("{} AND ({})", site_cond(&q.site), Sql::join(time, " OR "));
        parts.push(sql!(
            "SELECT {} FROM ({}) WHERE {}",
            cols,
            derive_visit_cols(&cond, &needed),
            in_range
        ));
    }
    union_all(parts)
}

/// Raw events joined to their visit's properties (`v_…` columns), derived per query: every
/// hit of the range's UTC days sessionized, then joined to its visit. What
/// [`joined_rows`] reads for days without a build carrying hits, and all a funnel reads.
pub fn raw_joined_rows(q: &Query) -> Sql {
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
    let cond = sql!(
        "{} AND timestamp >= {} AND timestamp < {}",
        site_cond(&q.site),
        utc(lo),
        utc(hi)
    );
    let hits = sessionize(&cond);
    let left = Sql::join(
        EV_FIELDS.iter().map(|f| sql!("{} AS {}", hit_field(f), *f)),
        ", ",
    );
    sql!(
        "(SELECT * FROM (SELECT visitor_id, visit, {0} FROM ({1}) ARRAY JOIN evs AS e, vnum AS visit) AS hit_rows \
         ANY LEFT JOIN (SELECT visitor_id, visit, {2} FROM ({1}) ARRAY JOIN evs AS e, idx AS i, vnum AS visit \
         GROUP BY visitor_id, visit) AS visit_rows USING (visitor_id, visit) \
         WHERE timestamp >= {3} AND timestamp < {4})",
        left,
        hits,
        Sql::join(visit_aggregates("v_"), ", "),
        utc(q.start),
        utc(q.end)
    )
}

/// Rows for [`Source::VisitHits`](super::source::Source::VisitHits): one per hit, with its
/// visit's properties as `v_…` columns (the columns of [`raw_joined_rows`]), read from stored
/// visit rows where it can.
///
/// The range's UTC days with a build whose visits carry
/// their hits (`016_visit_hits.sql`) are read from those visit rows (`visits`, and for the
/// current day also the visits still open at its cut, carried on by the hits after it:
/// [`open_visit_rows`]), each visit's hit arrays ARRAY JOINed beside its properties — the
/// same rows the raw path makes, without sessionizing raw events per query. `pre`, the
/// query's filter over these rows, is applied to each visit before its hits are expanded
/// (a visit none of whose hits in the range passes it adds no row), so a filter on a page
/// or a goal expands only the visits that have one. Other days are derived from raw events
/// ([`raw_joined_rows`]). The columns are those the query reads (`joined_cols`): `visitor_id`,
/// `visit` (a number naming the visitor's visit), the hit's `timestamp`, `name`, `pathname`,
/// `hostname`, the visitor facts asked about and the visit's `v_…` properties and measures.
pub fn joined_rows(q: &Query, built: &[Build], pre: Option<&Sql>) -> Sql {
    let (facts, visit) = joined_cols(q);
    let hit_cols = joined_hit_cols(q);
    let mut out: Vec<Sql> = vec![Sql::new("visitor_id"), Sql::new("visit")];
    out.extend(hit_cols.iter().map(|c| Sql::new(c)));
    out.extend(facts.iter().map(|c| Sql::new(c)));
    out.extend(visit.iter().map(|c| sql!("v_{}", *c)));
    let out = Sql::join(out, ", ");
    let days = utc_days(q.start, q.end);
    let usable = hit_builds(built, &hit_cols);
    let with_hits: Vec<&Build> = usable.iter().filter(|b| days.contains(&b.day)).collect();
    let mut parts = Vec::new();
    if !with_hits.is_empty() {
        let arrays: Vec<&'static str> = hit_cols.iter().filter_map(|c| hit_array(c)).collect();
        // The visit columns read: visitor, start, the hit arrays, the facts and properties.
        let mut cols: Vec<&'static str> = vec!["visitor_id", "start"];
        cols.extend(arrays.iter().copied());
        cols.extend(facts.iter().copied());
        for c in &visit {
            if !cols.contains(c) {
                cols.push(c);
            }
        }
        let names = idents(&cols, ", ");
        let mut sources = vec![sql!(
            "SELECT {} FROM visits WHERE {} AND {}",
            names,
            site_cond(&q.site),
            builds_key(with_hits.iter().copied())
        )];
        for b in &with_hits {
            let Some(cut) = b.cut else { continue };
            sources.push(sql!(
                "SELECT {} FROM ({})",
                names,
                open_visit_rows(&q.site, b, cut, &cols)
            ));
        }
        let props = Sql::join(visit.iter().map(|c| sql!(", {0} AS v_{0}", *c)), "");
        let kept = Sql::join(
            arrays.iter().chain(facts.iter()).map(|c| sql!(", {}", *c)),
            "",
        );
        let expand = Sql::join(
            arrays
                .iter()
                .zip(&hit_cols)
                .map(|(a, c)| sql!("{} AS {}", *a, *c)),
            ", ",
        );
        // No hit column read (visitors of a whole-day range under the guard's "everyone"
        // filter): every visit of a built day has a hit in the range, one row per visit.
        let expand = if hit_cols.is_empty() {
            Sql::new("")
        } else {
            sql!(" ARRAY JOIN {}", expand)
        };
        parts.push(sql!(
            "SELECT {} FROM (SELECT visitor_id, toUInt64(start) AS visit{}{} FROM ({}) WHERE {}){} \
             WHERE {}",
            out.clone(),
            kept,
            props,
            Sql::join(sources, " UNION ALL "),
            pre.cloned().unwrap_or_else(|| Sql::new("1")),
            expand,
            if utc_aligned(q) {
                // Whole built days: every hit of their visits is in the range.
                Sql::new("1")
            } else {
                sql!(
                    "timestamp >= {} AND timestamp < {}",
                    utc(q.start),
                    utc(q.end)
                )
            }
        ));
    }
    // Runs of days without such a build, from raw events.
    let mut runs: Vec<(NaiveDate, NaiveDate)> = Vec::new();
    for d in days
        .iter()
        .filter(|d| !with_hits.iter().any(|b| b.day == **d))
    {
        match runs.last_mut() {
            Some((_, end)) if *end + Duration::days(1) == *d => *end = *d,
            _ => runs.push((*d, *d)),
        }
    }
    for (a, b) in runs {
        let mut part = q.clone();
        part.start = q.start.max(a.and_time(NaiveTime::MIN));
        part.end = q.end.min((b + Duration::days(1)).and_time(NaiveTime::MIN));
        parts.push(sql!(
            "SELECT {} FROM {}",
            out.clone(),
            raw_joined_rows(&part)
        ));
    }
    union_all(parts)
}

/// The builds whose visit rows can give hit columns `hit_cols` (of `timestamp`, `name`,
/// `pathname`, `hostname`, `prop_keys`, `prop_values`): those whose visits carry their hits
/// ([`Build::hits`]); for custom properties only closed days' — the hits after the current
/// day's cut come from `events_tail`, which holds no properties, so that day is derived from
/// raw events instead.
pub(super) fn hit_builds(built: &[Build], hit_cols: &[&str]) -> Vec<Build> {
    let props = hit_cols.iter().any(|c| c.starts_with("prop_"));
    built
        .iter()
        .filter(|b| b.hits && !(props && b.cut.is_some()))
        .copied()
        .collect()
}

/// The hit columns a joined row must carry for `q` (of `timestamp`, `name`, `pathname`,
/// `hostname`, in that order): the time for time buckets, `dau` and a range that is not whole
/// UTC days; the event name for pageview and event counts and goals; the path for pages and
/// page goals; the host for hosts. None when the range is whole UTC days and nothing asks
/// for a hit (the guard's `x or not x` filter asks for nothing): a visit is then one row.
fn joined_hit_cols(q: &Query) -> Vec<&'static str> {
    let filter_dims = q
        .filter
        .as_ref()
        .filter(|f| !f.is_tautology())
        .map(|f| f.dims())
        .unwrap_or_default();
    let dims: Vec<&DimKind> = q
        .dimensions
        .iter()
        .chain(filter_dims)
        .map(|d| &d.kind)
        .collect();
    let has = |c: &str| {
        dims.iter()
            .any(|k| matches!(k, DimKind::Event(x) if *x == c))
    };
    let goal = dims.iter().any(|k| matches!(k, DimKind::Goal));
    let time = !utc_aligned(q)
        || dims.iter().any(|k| matches!(k, DimKind::Time(_)))
        || q.metrics.contains(&Metric::Dau);
    let name = goal
        || has("name")
        || q.metrics
            .iter()
            .any(|m| matches!(m, Metric::Pageviews | Metric::Events));
    let path = goal || has("pathname");
    let host = has("hostname");
    let props = dims.iter().any(|k| matches!(k, DimKind::Prop(_)));
    [
        ("timestamp", time),
        ("name", name),
        ("pathname", path),
        ("hostname", host),
        ("prop_keys", props),
        ("prop_values", props),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(c, _)| *c)
    .collect()
}

/// What a joined row must carry for `q` besides the hit: the visitor facts its dimensions and
/// filters name (as plain columns, like the raw rows' hit columns), and the visit columns
/// read as `v_…` (visit properties in dimensions and filters, and the measures its metrics
/// are made of).
fn joined_cols(q: &Query) -> (Vec<&'static str>, Vec<&'static str>) {
    let (mut facts, mut visit): (Vec<&'static str>, Vec<&'static str>) = (Vec::new(), Vec::new());
    let add = |list: &mut Vec<&'static str>, c: &'static str| {
        if !list.contains(&c) {
            list.push(c);
        }
    };
    let filter_dims = q.filter.as_ref().map(|f| f.dims()).unwrap_or_default();
    for d in q.dimensions.iter().chain(filter_dims) {
        match d.kind {
            DimKind::Visitor(c) => {
                add(&mut facts, c);
                // Plausible's `os_version` of Windows is in the OS name (`labels`).
                if c == "os_version" {
                    add(&mut facts, "os");
                }
            }
            DimKind::CountryName => add(&mut facts, "country_code"),
            DimKind::PlaceName(c) => add(&mut facts, c),
            DimKind::Visit(c) => add(&mut visit, c),
            _ => {}
        }
    }
    for m in &q.metrics {
        match m {
            Metric::BounceRate => add(&mut visit, "bounce"),
            Metric::VisitDuration => add(&mut visit, "duration"),
            Metric::ViewsPerVisit => add(&mut visit, "pageviews"),
            _ => {}
        }
    }
    (facts, visit)
}
