//! The rollup job the aggregator runs on a schedule (and `veil aggregator` at start):
//!
//! - **visits**: for each closed UTC day (before today) whose raw event count differs from
//!   the one recorded with its latest build (or that has none), insert the day's visit rows
//!   (the SQL in [`crate::query::visits::derive_visits`]) under a new build number, then record
//!   the build in `visit_builds`. Readers use a day's latest *recorded* build, so they never
//!   see half a build; older builds of the day are deleted afterwards (a new build of today
//!   keeps the one before it until the next, for reports that read the catalog before it).
//!   With the visits it writes the day's `visits_daily` rows (per visit dimension, and per
//!   page, event name and host from the raw events: the exact count of distinct visitor
//!   hashes and sums of visits, pageviews, events, bounces, durations).
//! - **today**: built up to a cut two minutes behind the clock ([`build_today`]): the visits
//!   over by then go to `visits`, those still open to `open_visits` as they stood, and the
//!   per-dimension rows (with `uniq` states, which readers merge with the hits after the cut)
//!   to `visits_daily_partial`.
//! - **events_hourly / events_daily health**: materialized views keep them current; for each
//!   closed day the job compares each rollup's hit count with the raw count and rebuilds a day
//!   that differs (data stored before the rollup existed, or a view that missed inserts).
//! - **events_tail**: days before yesterday are dropped (readers need only the hits after
//!   the current day's cut, and yesterday's until its whole build).
//!
//! Days are UTC: visitor hashes rotate at UTC midnight (a visit under way keeps its hash up to
//! 30 minutes longer, and is cut in two here).

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use veil_schemas::sql;
use veil_schemas::sql::{date, idents, utc, utc_text, Sql};
use veil_schemas::ClickHouseConfig;

use crate::db::{cell_u64, exec, fetch, mutation_target};
use crate::privacy::Bounds;
use crate::query::labels::{place_code_sql, PLACES};
use crate::query::visits::{
    derive_open_visits, derive_visits, event_dim_pairs, visit_dim_pairs, BOUNDED_DIM, CODES_LAYOUT,
    DAILY_DIMS, EMPTY_STATE, EVENT_DAILY_DIMS, FILTER_VISIT_KEYS, OPEN_VISIT_COLS, VISIT_COLS,
    VISIT_GAP_SECS,
};
use crate::query::{DimKind, DIMENSIONS};
use crate::Error;

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RollupReport {
    /// Days whose visits were (re)built.
    pub visit_days: Vec<NaiveDate>,
    /// Days whose hourly or daily event rollup was rebuilt.
    pub hourly_days: Vec<NaiveDate>,
}

fn n(v: &serde_json::Value) -> u64 {
    cell_u64(v).unwrap_or(0)
}

fn day_range(d: NaiveDate) -> Sql {
    let lo = d.and_hms_opt(0, 0, 0).unwrap_or_default();
    sql!(
        "timestamp >= {} AND timestamp < {}",
        utc(lo),
        utc(lo + Duration::days(1))
    )
}

/// The name of `day`'s partition (`YYYYMMDD`, as the tables are partitioned).
fn partition(day: NaiveDate) -> u32 {
    day.year().unsigned_abs() * 10_000 + day.month() * 100 + day.day()
}

/// Writes the visits of `day` matching `cond` (raw-event SQL) under `build`: the `visits`
/// rows, their `visits_daily` rows, then the record in `visit_builds` (so readers switch to
/// it only when it is complete), then deletes the day's older builds but `keep` (the build
/// readers used until now: a report that read the catalog before the record runs its later
/// queries on it, so today's previous build stays until the next one replaces it). With a `cut` (the
/// current day), only visits over by the cut go to `visits` (and the visit-dimension rows);
/// each visit still open goes to `open_visits` as it stood at the cut. The event rows (page,
/// event name, host) hold every hit before the cut.
#[allow(clippy::too_many_arguments)]
async fn build_visits(
    ch: &ClickHouseConfig,
    day: NaiveDate,
    build: u64,
    cond: &Sql,
    events: u64,
    cut: Option<NaiveDateTime>,
    slice_events: u64,
    keep: Option<u64>,
) -> Result<(), Error> {
    let client = &ch.client();
    // Visits are put together per visitor, so the day is built in slices of visitors (ranges
    // of the hash, which `events` is ordered by within a day): a busy day's hits and visits
    // are never all in memory at once.
    let slices = visitor_slices(slice_count(events, slice_events));
    for slice in &slices {
        let cond = &sql!("{} AND {}", cond.clone(), slice.clone());
        match cut {
            None => {
                let visits = derive_visits(cond, build);
                let stmt = sql!(
                    "INSERT INTO visits ({}) {}",
                    idents(VISIT_COLS, ", "),
                    visits
                );
                exec(client, &stmt).await?
            }
            Some(c) => {
                // Over: the last hit is more than the visit gap before the cut.
                let quiet = utc(c - Duration::seconds(VISIT_GAP_SECS));
                let visits = derive_visits(cond, build);
                let stmt = sql!(
                    "INSERT INTO visits ({0}) SELECT {0} FROM ({1}) WHERE start + duration < {2}",
                    idents(VISIT_COLS, ", "),
                    visits,
                    quiet
                );
                exec(client, &stmt).await?;
                let open = derive_open_visits(cond, build);
                let stmt = sql!(
                    "INSERT INTO open_visits ({}) SELECT * FROM ({}) WHERE last >= {}",
                    idents(OPEN_VISIT_COLS, ", "),
                    open,
                    quiet
                );
                exec(client, &stmt).await?;
            }
        }
    }
    // Only the current day's rows are read with their uniq states (see 014_open_visits.sql):
    // a closed day's rows keep an empty one.
    let (daily, state) = match cut {
        None => ("visits_daily", "uniqStateIf(visitor_id, 0)"),
        Some(_) => ("visits_daily_partial", "uniqState(visitor_id)"),
    };
    let pairs = visit_dim_pairs();
    let stmt = sql!(
        "INSERT INTO {} (site, day, build, dim, value, visitors, uv, visits, \
             pageviews, events, bounces, duration) SELECT site, day, build, kv.1 AS dim, \
             kv.2 AS value, {}, uniqExact(visitor_id), count(), \
             sum(pageviews), sum(events), sum(bounce), sum(duration) \
             FROM visits ARRAY JOIN [{}] AS kv WHERE day = {} AND build = {} \
             GROUP BY site, day, build, dim, value",
        daily,
        state,
        pairs,
        date(day),
        build
    );
    exec(client, &stmt).await?;
    // The day's events by page, event name and host (what top pages and custom events
    // read), counted like the event rollups count them.
    let pairs = event_dim_pairs();
    let stmt = sql!(
        "INSERT INTO {} (site, day, build, dim, value, visitors, uv, visits, \
             pageviews, events, bounces, duration) SELECT site, toDate(timestamp, 'UTC') AS day, \
             toUInt64({}), kv.1 AS dim, kv.2 AS value, {}, \
             uniqExact(visitor_id), toUInt64(0), countIf(name = 'pageview'), \
             countIf(name != 'engagement'), toUInt64(0), toUInt64(0) \
             FROM events ARRAY JOIN [{}] AS kv WHERE {} AND bot = '' \
             GROUP BY site, day, dim, value",
        daily,
        build,
        state,
        pairs,
        cond
    );
    exec(client, &stmt).await?;
    if cut.is_none() {
        for slice in &slices {
            for stmt in bounded_daily(day, build, cond, slice, &Bounds::default()) {
                exec(client, &stmt).await?;
            }
            for stmt in filtered_daily(day, build, slice, &Bounds::default()) {
                exec(client, &stmt).await?;
            }
        }
    }
    let cut_sql = cut.map(utc).unwrap_or_else(|| Sql::new("toDateTime(0)"));
    let stmt = sql!(
            "INSERT INTO visit_builds (day, build, events, built_at, cut, layout) VALUES ({}, {}, {}, now(), {}, {})",
            date(day),
            build,
            events,
            cut_sql,
            CODES_LAYOUT
        );
    exec(client, &stmt).await?;
    if build > 1 {
        for table in [
            "visits",
            "visits_daily",
            "visits_daily_partial",
            "open_visits",
        ] {
            let stmt = sql!(
                "ALTER TABLE {} DELETE WHERE day = {} AND build < {} AND build != {}",
                mutation_target(ch, table)?,
                date(day),
                build,
                keep.unwrap_or(0)
            );
            exec(client, &stmt).await?;
        }
    }
    Ok(())
}

/// Differential privacy's bounded rows of a closed day's build, for one slice of visitors:
/// `visits_daily` rows with `dim` = [`BOUNDED_DIM`] + the dimension (`''` for the totals),
/// whose numbers count each visitor id in at most `b.rows_of` rows of that dimension (a
/// pseudo-random choice: the lowest `cityHash64(visitor, value)`) with its visits, pageviews,
/// events, bounces and seconds in each clamped to `b`'s bounds — what
/// [`crate::query::assemble::bounded_sql`] computes per visitor at query time, summed ahead.
/// Visitor ids never span days, so a range's days add up. One statement per rows bound of
/// the visit dimensions (the totals and visitor facts: 1, visit facts: `visit_rows`), one for
/// the pages, event names and hosts of the raw events (`hit_rows`).
fn bounded_daily(day: NaiveDate, build: u64, cond: &Sql, slice: &Sql, b: &Bounds) -> Vec<Sql> {
    let mut classes: Vec<(u64, Vec<Sql>)> = vec![(1, vec![Sql::new("('', '')")])];
    for c in DAILY_DIMS {
        let kind = DIMENSIONS
            .iter()
            .map(|(_, k)| k)
            .find(|k| matches!(k, DimKind::Visitor(x) | DimKind::Visit(x) if x == c))
            .unwrap_or(&DimKind::Visit("source"));
        let rows = b.rows_of(kind, true);
        let pair = sql!("('{}', {})", *c, *c);
        match classes.iter_mut().find(|(r, _)| *r == rows) {
            Some((_, pairs)) => pairs.push(pair),
            None => classes.push((rows, vec![pair])),
        }
    }
    let mut out: Vec<Sql> = classes
        .into_iter()
        .map(|(rows, pairs)| {
            sql!(
                "INSERT INTO visits_daily (site, day, build, dim, value, visitors, uv, visits,                  pageviews, events, bounces, duration) SELECT site, day, build,                  concat({}, dim) AS dim, value, uniqStateIf(visitor_id, 0), count(),                  sum(least(v, {})), sum(least(pv, {})), sum(least(ev, {})), sum(least(bo, {})),                  sum(least(du, {})) FROM (SELECT site, day, build, kv.1 AS dim, kv.2 AS value,                  visitor_id, count() AS v, sum(pageviews) AS pv, sum(events) AS ev,                  sum(bounce) AS bo, sum(duration) AS du FROM visits ARRAY JOIN [{}] AS kv                  WHERE day = {} AND build = {} AND {}                  GROUP BY site, day, build, dim, value, visitor_id                  ORDER BY site, dim, visitor_id, cityHash64(visitor_id, value)                  LIMIT {} BY site, dim, visitor_id)                  GROUP BY site, day, build, dim, value",
                veil_schemas::sql::lit(BOUNDED_DIM),
                b.visits,
                b.pageviews,
                b.events,
                b.visits,
                b.visit_seconds,
                Sql::join(pairs, ", "),
                date(day),
                build,
                slice.clone(),
                rows.max(1)
            )
        })
        .collect();
    let pairs = EVENT_DAILY_DIMS
        .iter()
        .map(|c| sql!("('event:{}', {})", *c, *c));
    out.push(sql!(
        "INSERT INTO visits_daily (site, day, build, dim, value, visitors, uv, visits,          pageviews, events, bounces, duration) SELECT site, day, toUInt64({}),          concat({}, dim) AS dim, value, uniqStateIf(visitor_id, 0), count(), toUInt64(0),          sum(least(pv, {})), sum(least(ev, {})), toUInt64(0), toUInt64(0)          FROM (SELECT site, toDate(timestamp, 'UTC') AS day, kv.1 AS dim, kv.2 AS value,          visitor_id, countIf(name = 'pageview') AS pv, countIf(name != 'engagement') AS ev          FROM events ARRAY JOIN [{}] AS kv WHERE {} AND bot = '' AND {}          GROUP BY site, day, dim, value, visitor_id          ORDER BY site, dim, visitor_id, cityHash64(visitor_id, value)          LIMIT {} BY site, dim, visitor_id)          GROUP BY site, day, dim, value",
        build,
        veil_schemas::sql::lit(BOUNDED_DIM),
        b.pageviews,
        b.events,
        Sql::join(pairs, ", "),
        cond.clone(),
        slice.clone(),
        b.hit_rows.max(1)
    ));
    out
}

/// The filtered rows of a closed day's build, for one slice of visitors: `visits_daily` rows
/// with `dim` = `filtered_dim(dimension, key, value)` (see
/// [`crate::query::visits::FILTERED_LAYOUT`]) — for each visit and each filter key it
/// carries (its [`FILTER_VISIT_KEYS`] values — a region or city by its code —, each distinct
/// page, event name and host of its hits),
/// the visit's numbers by the totals and each visit dimension of
/// [`FILTERED_DIMS`](crate::query::visits::FILTERED_DIMS); under a
/// page, event name or host key its pageviews and events are only the matching hits. By page, the
/// hits of the visits under each visit key.
///
/// Each statement groups per visitor id and filter key first, then writes every row twice:
/// exact (the sums; distinct visitors are the visitor rows) and, `dim` prefixed with
/// [`BOUNDED_DIM`], with each visitor id's numbers clamped to `b` in at most `b.rows_of`
/// rows of the dimension (the lowest `cityHash64(visitor, value)`, [`bounded_daily`]'s rule).
/// Country and device are visitor facts (one per visitor hash and day: the hash is made of
/// the IP address and user agent they come from), so the totals, countries and devices share
/// one grouping; sources and pages keep each visitor's values in order of that hash.
fn filtered_daily(day: NaiveDate, build: u64, slice: &Sql, b: &Bounds) -> Vec<Sql> {
    // A region or city is keyed by its code ([`CODES_LAYOUT`]): one key per visitor however
    // many names its visits were stored with, so its bounded rows clamp the visitor once.
    let visit_keys = Sql::join(
        FILTER_VISIT_KEYS.iter().map(|c| {
            if PLACES.contains(c) {
                sql!("('{}', {})", *c, place_code_sql(Sql::new(c)))
            } else {
                sql!("('{}', {})", *c, *c)
            }
        }),
        ", ",
    );
    let rows_of = |c: &str| {
        let kind = DIMENSIONS
            .iter()
            .map(|(_, k)| k)
            .find(|k| matches!(k, DimKind::Visitor(x) | DimKind::Visit(x) if *x == c))
            .unwrap_or(&DimKind::Visit("source"));
        b.rows_of(kind, true).max(1)
    };
    // One row per visit and filter key: its visitor, bounce and seconds, and the hits that
    // count as its pageviews and events under that key.
    let hit_count = |kind: &'static str, whole: &'static str| {
        sql!(
            "multiIf(fk = 'event:pathname', toUInt64(arrayCount((n, p) -> {0} AND p = fv, \
             hit_names, hit_paths)), fk = 'event:name', toUInt64(arrayCount(n -> {0} AND n = fv, \
             hit_names)), fk = 'event:hostname', toUInt64(arrayCount((n, h) -> {0} AND h = fv, \
             hit_names, hit_hosts)), toUInt64({1}))",
            kind,
            whole
        )
    };
    let per_key = sql!(
        "SELECT site, day, build, visitor_id, bounce, duration, source, country_code, device, \
         kf.1 AS fk, kf.2 AS fv, {} AS hpv, {} AS hev FROM visits ARRAY JOIN arrayConcat([{}], \
         arrayMap(p -> ('event:pathname', p), arrayDistinct(hit_paths)), \
         arrayMap(n -> ('event:name', n), arrayDistinct(hit_names)), \
         arrayMap(h -> ('event:hostname', h), arrayDistinct(hit_hosts))) AS kf \
         WHERE day = {} AND build = {} AND {}",
        hit_count("n = 'pageview'", "pageviews"),
        hit_count("n != 'engagement'", "events"),
        visit_keys.clone(),
        date(day),
        build,
        slice.clone()
    );
    let cols = Sql::new(
        "site, day, build, dim, value, visitors, uv, visits, pageviews, events, bounces, duration",
    );
    // `r.1` 1 for a bounded row; `r.{i}` a count, clamped to `bound` there.
    let count = |i: u32, bound: u64| sql!("sum(if(r.1 = 1, least(r.{0}, {1}), r.{0}))", i, bound);
    let visit_counts = Sql::join(
        [
            count(4, b.visits),
            count(5, b.pageviews),
            count(6, b.events),
            count(7, b.visits),
            count(8, b.visit_seconds),
        ],
        ", ",
    );
    let head = |counts: Sql| {
        sql!(
            "INSERT INTO visits_daily ({}) SELECT site, day, build, \
             concat(if(r.1 = 1, {}, ''), r.2, '|', fk, '=', fv) AS dim, r.3 AS value, {}, \
             count(), {}",
            cols.clone(),
            veil_schemas::sql::lit(BOUNDED_DIM),
            Sql::new(EMPTY_STATE),
            counts
        )
    };
    let totals = |bounded: u8| {
        sql!(
            "({0}, '', '', v, pv, ev, bo, du), ({0}, 'country_code', cc, v, pv, ev, bo, du), \
             ({0}, 'device', dv, v, pv, ev, bo, du)",
            bounded
        )
    };
    // Per visitor id and key, then each value's row in order of the hash.
    let ranked = |inner: Sql, value: &'static str, fields: &'static str| {
        sql!(
            "SELECT site, day, build, fk, fv, \
             arraySort(groupArray((cityHash64(visitor_id, {}), {}))) AS es FROM ({}) \
             GROUP BY site, day, build, visitor_id, fk, fv",
            value,
            Sql::new(fields),
            inner
        )
    };
    vec![
        sql!(
            "{} FROM (SELECT site, day, build, fk, fv, count() AS v, sum(hpv) AS pv, \
             sum(hev) AS ev, sum(bounce) AS bo, sum(duration) AS du, any(country_code) AS cc, \
             any(device) AS dv FROM ({}) GROUP BY site, day, build, visitor_id, fk, fv) \
             ARRAY JOIN [{}, {}] AS r GROUP BY site, day, build, dim, value",
            head(visit_counts.clone()),
            per_key.clone(),
            totals(0),
            totals(1)
        ),
        sql!(
            "{} FROM ({}) ARRAY JOIN arrayConcat(\
             arrayMap(e -> (toUInt8(0), 'source', e.2, e.3, e.4, e.5, e.6, e.7), es), \
             arrayMap(e -> (toUInt8(1), 'source', e.2, e.3, e.4, e.5, e.6, e.7), \
             arraySlice(es, 1, {}))) AS r GROUP BY site, day, build, dim, value",
            head(visit_counts),
            ranked(
                sql!(
                    "SELECT site, day, build, visitor_id, fk, fv, source AS src, count() AS v, \
                     sum(hpv) AS pv, sum(hev) AS ev, sum(bounce) AS bo, sum(duration) AS du \
                     FROM ({}) GROUP BY site, day, build, visitor_id, fk, fv, src",
                    per_key
                ),
                "src",
                "src, v, pv, ev, bo, du"
            ),
            rows_of("source")
        ),
        sql!(
            "{} FROM ({}) ARRAY JOIN arrayConcat(\
             arrayMap(e -> (toUInt8(0), 'event:pathname', e.2, toUInt64(0), e.3, e.4, \
             toUInt64(0), toUInt64(0)), es), \
             arrayMap(e -> (toUInt8(1), 'event:pathname', e.2, toUInt64(0), e.3, e.4, \
             toUInt64(0), toUInt64(0)), arraySlice(es, 1, {}))) AS r \
             GROUP BY site, day, build, dim, value",
            head(Sql::join(
                [
                    Sql::new("toUInt64(0)"),
                    count(5, b.pageviews),
                    count(6, b.events),
                    Sql::new("toUInt64(0), toUInt64(0)"),
                ],
                ", "
            )),
            ranked(
                sql!(
                    "SELECT site, day, build, visitor_id, kf.1 AS fk, kf.2 AS fv, hp, \
                     countIf(hn = 'pageview') AS pv, countIf(hn != 'engagement') AS ev FROM (\
                     SELECT site, day, build, visitor_id, hn, hp, [{}] AS kfs FROM visits \
                     ARRAY JOIN hit_names AS hn, hit_paths AS hp WHERE day = {} AND build = {} \
                     AND {}) ARRAY JOIN kfs AS kf GROUP BY site, day, build, visitor_id, fk, fv, hp",
                    visit_keys,
                    date(day),
                    build,
                    slice.clone()
                ),
                "hp",
                "hp, pv, ev"
            ),
            b.hit_rows.max(1)
        ),
    ]
}

/// Events per slice of visitors a day's visits are built in (a 50M-event month's busiest day,
/// ~2M events, in five slices: well under the server's 4 GB per query with the hit arrays).
pub const SLICE_EVENTS: u64 = 400_000;

/// How many slices a day of `events` events is built in.
fn slice_count(events: u64, slice_events: u64) -> u32 {
    let n = events.div_ceil(slice_events.max(1)).clamp(1, 256);
    u32::try_from(n).unwrap_or(256)
}

/// `n` conditions that split visitor hashes into ranges by their first byte (together every
/// hash, each once): `visitor_id >= lo AND visitor_id < hi`, the first without `lo`, the last
/// without `hi`.
fn visitor_slices(n: u32) -> Vec<Sql> {
    let n = n.clamp(1, 256);
    let bound = |k: u32| {
        let first = (k * 256 / n) as u8;
        let hex = format!("{first:02x}{}", "00".repeat(15));
        sql!("toFixedString(unhex({}), 16)", veil_schemas::sql::lit(&hex))
    };
    (0..n)
        .map(|k| match (k, k + 1 == n) {
            (0, true) => Sql::new("1"),
            (0, false) => sql!("visitor_id < {}", bound(1)),
            (_, true) => sql!("visitor_id >= {}", bound(k)),
            (_, false) => sql!(
                "visitor_id >= {} AND visitor_id < {}",
                bound(k),
                bound(k + 1)
            ),
        })
        .collect()
}

/// The number of a new build of `day`: above the latest recorded one (`recorded`) and above
/// every build number with rows of that day. A build whose writing failed half-way (a lost
/// connection, a memory limit) leaves rows that were never recorded, so readers never see
/// them; a new build under the same number would add its rows to them, so it takes the next
/// number, and deleting the older builds once it is recorded removes them.
async fn next_build(
    client: &clickhouse::Client,
    day: NaiveDate,
    recorded: u64,
) -> Result<u64, Error> {
    let max = |table: &'static str| {
        sql!(
            "(SELECT max(build) FROM {} WHERE day = {})",
            Sql::new(table),
            date(day)
        )
    };
    let stmt = sql!(
        "SELECT greatest(greatest({}, {}), greatest({}, {}))",
        max("visits"),
        max("visits_daily"),
        max("visits_daily_partial"),
        max("open_visits")
    );
    let written = fetch(client, &stmt)
        .await?
        .first()
        .and_then(|r| r.get(0))
        .map(n)
        .unwrap_or(0);
    Ok(recorded.max(written) + 1)
}

/// How far behind the clock today's build stops: room for batches still in flight.
const CUT_LAG: Duration = Duration::minutes(2);

/// Builds the current UTC day up to a cut a little before `now` (whole minutes): the visits
/// over by then (no hit in the 30 minutes before the cut), and the open ones as they stood.
/// Readers add the hits after the cut ([`crate::query::visits::open_visit_rows`]). Skipped when
/// the day is not 30 minutes old or the latest build already has this cut and as many
/// events before it. Returns whether it built.
pub async fn build_today(ch: &ClickHouseConfig, now: NaiveDateTime) -> Result<bool, Error> {
    let client = &ch.client();
    let day = now.date();
    let midnight = day.and_time(NaiveTime::MIN);
    let lag = now - CUT_LAG;
    let cut = lag - Duration::seconds(i64::from(lag.second()));
    let cut = cut - Duration::nanoseconds(i64::from(cut.nanosecond()));
    if cut < midnight + Duration::minutes(30) {
        return Ok(false);
    }
    let stmt = sql!(
        "SELECT max(build), {}, \
             argMax(events, build) FROM visit_builds WHERE day = {} HAVING count() > 0",
        utc_text(Sql::new("argMax(cut, build)")),
        date(day)
    );
    let latest = fetch(client, &stmt).await?;
    let (last_build, last_cut, last_events) = match latest.first() {
        Some(r) => (n(&r[0]), r[1].as_str().unwrap_or("").to_string(), n(&r[2])),
        None => (0, String::new(), 0),
    };
    let cond = sql!(
        "timestamp >= {} AND timestamp < {}",
        utc(midnight),
        utc(cut)
    );
    // Counted before building: a hit stored later with a time before the cut (a retried
    // batch, an app's offline queue) makes readers' count differ, and they distrust the build
    // (builds::visit_builds) until a run builds it in — this one, if the cut has not moved.
    let stmt = sql!("SELECT count() FROM events WHERE {}", cond);
    let before = fetch(client, &stmt).await?;
    let events = before.first().and_then(|r| r.get(0)).map(n).unwrap_or(0);
    if last_cut == cut.format("%Y-%m-%d %H:%M:%S").to_string() && last_events == events {
        return Ok(false);
    }
    let build = next_build(client, day, last_build).await?;
    // A report that read the catalog before this build is recorded keeps reading the last one
    // (its later queries too): its rows stay until the next build of today.
    let keep = Some(last_build).filter(|b| *b > 0);
    build_visits(ch, day, build, &cond, events, Some(cut), SLICE_EVENTS, keep).await?;
    Ok(true)
}

/// Brings the rollups of the closed days of the last `days` days up to date, then builds
/// today up to a recent cut, and drops `events_tail`'s days before yesterday.
pub async fn run(ch: &ClickHouseConfig, days: u32) -> Result<RollupReport, Error> {
    let now = Utc::now().naive_utc();
    let mut report = run_until(ch, now.date(), days).await?;
    if build_today(ch, now).await? {
        report.visit_days.push(now.date());
        // Snapshots of the old build are no use now: sites being read get one of the new
        // build at once, so their next dashboard load need not take the live path.
        if let Err(e) = crate::snapshot::renew_watched(ch, Utc::now().naive_utc()).await {
            tracing::warn!(error = %e, "renewing today's snapshots failed; readers ask for them");
        }
    }
    trim_recent(ch, now.date()).await?;
    Ok(report)
}

/// Drops the partitions of `events_tail` (the hits readers add after today's cut) older
/// than the day before `today`: yesterday's stay while its build may still be a partial one.
pub async fn trim_recent(ch: &ClickHouseConfig, today: NaiveDate) -> Result<(), Error> {
    let client = &ch.client();
    let keep = today - Duration::days(1);
    let stmt = sql!(
        "SELECT DISTINCT toString(toYYYYMMDD(timestamp)) FROM events_tail WHERE timestamp < {}",
        utc(keep.and_time(NaiveTime::MIN))
    );
    let old = fetch(client, &stmt).await?;
    for p in old.iter().filter_map(|r| r.get(0).and_then(|v| v.as_str())) {
        if !p.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(p) = p.parse::<u32>() else { continue };
        let stmt = sql!(
            "ALTER TABLE {} DROP PARTITION {}",
            mutation_target(ch, "events_tail")?,
            p
        );
        exec(client, &stmt).await?;
    }
    Ok(())
}

/// [`run`] with "today" given (days before it are closed).
pub async fn run_until(
    ch: &ClickHouseConfig,
    today: NaiveDate,
    days: u32,
) -> Result<RollupReport, Error> {
    run_until_sliced(ch, today, days, SLICE_EVENTS).await
}

/// [`run_until`] building closed days in slices of about `slice_events` events.
pub async fn run_until_sliced(
    ch: &ClickHouseConfig,
    today: NaiveDate,
    days: u32,
    slice_events: u64,
) -> Result<RollupReport, Error> {
    let client = &ch.client();
    // Row-changing DDL goes to every shard in cluster mode.
    let target = |t: &str| mutation_target(ch, t);
    let first = today - Duration::days(i64::from(days.max(1)));
    let mut report = RollupReport::default();
    // Raw counts per closed day (bots excluded, as in every report).
    let stmt = sql!(
        "SELECT toString(toDate(timestamp)) AS d, count(), countIf(bot = '') FROM events \
             WHERE timestamp >= {} AND timestamp < {} GROUP BY d",
        utc(first.and_hms_opt(0, 0, 0).unwrap_or_default()),
        utc(today.and_hms_opt(0, 0, 0).unwrap_or_default())
    );
    let raw = fetch(client, &stmt).await?;
    let stmt = sql!(
        "SELECT toString(day), argMax(events, build), max(build), argMax(layout, build) \
             FROM visit_builds WHERE day >= {} GROUP BY day",
        date(first)
    );
    let builds = fetch(client, &stmt).await?;
    let stmt = sql!(
        "SELECT toString(toDate(hour)) AS d, countMerge(hits) FROM events_hourly \
             WHERE hour >= {} AND hour < {} GROUP BY d",
        utc(first.and_hms_opt(0, 0, 0).unwrap_or_default()),
        utc(today.and_hms_opt(0, 0, 0).unwrap_or_default())
    );
    let hourly = fetch(client, &stmt).await?;
    let stmt = sql!(
        "SELECT toString(toDate(day, 'UTC')) AS d, countMerge(hits) FROM events_daily \
             WHERE day >= {} AND day < {} GROUP BY d",
        utc(first.and_hms_opt(0, 0, 0).unwrap_or_default()),
        utc(today.and_hms_opt(0, 0, 0).unwrap_or_default())
    );
    let daily = fetch(client, &stmt).await?;
    // Builds that have their per-dimension rows (older builds may predate visits_daily).
    let stmt = sql!(
        "SELECT toString(day), build FROM visits_daily WHERE day >= {} GROUP BY day, build",
        date(first)
    );
    let daily_builds = fetch(client, &stmt).await?;
    let lookup = |rows: &[serde_json::Value], day: &str, col: usize| -> Option<u64> {
        rows.iter()
            .find(|r| r[0].as_str() == Some(day))
            .map(|r| n(&r[col]))
    };
    for r in &raw {
        let Some(day_s) = r[0].as_str() else { continue };
        let Ok(day) = NaiveDate::parse_from_str(day_s, "%Y-%m-%d") else {
            continue;
        };
        let all = n(&r[1]);
        let humans = n(&r[2]);
        let latest = lookup(&builds, day_s, 2);
        let has_daily = latest.is_some_and(|b| {
            daily_builds
                .iter()
                .any(|r| r[0].as_str() == Some(day_s) && n(&r[1]) == b)
        });
        // A build of an older layout (before the visits carried their hits, 016, before
        // differential privacy's bounded rows, before the filtered rows, or before they keyed a
        // place by its code) is built again.
        let current = lookup(&builds, day_s, 3).is_some_and(|l| l >= u64::from(CODES_LAYOUT));
        if lookup(&builds, day_s, 1) != Some(all) || !has_daily || !current {
            let build = next_build(client, day, latest.unwrap_or(0)).await?;
            build_visits(
                ch,
                day,
                build,
                &day_range(day),
                all,
                None,
                slice_events,
                None,
            )
            .await?;
            report.visit_days.push(day);
        }
        if lookup(&hourly, day_s, 1).unwrap_or(0) != humans {
            let stmt = sql!(
                "ALTER TABLE {} DROP PARTITION {}",
                target("events_hourly")?,
                partition(day)
            );
            exec(client, &stmt).await?;
            let stmt = sql!(
                    "INSERT INTO events_hourly SELECT site, toStartOfHour(timestamp) AS hour, name, pathname, hostname, \
                     uniqState(visitor_id) AS visitors, countState() AS hits, \
                     sumState(cityHash64(timestamp, visitor_id, name, pathname)) AS sig FROM events WHERE {} AND bot = '' \
                     GROUP BY site, hour, name, pathname, hostname",
                    day_range(day)
                );
            exec(client, &stmt).await?;
            report.hourly_days.push(day);
        }
        if lookup(&daily, day_s, 1).unwrap_or(0) != humans {
            let stmt = sql!(
                "ALTER TABLE {} DROP PARTITION {}",
                target("events_daily")?,
                partition(day)
            );
            exec(client, &stmt).await?;
            let stmt = sql!(
                    "INSERT INTO events_daily SELECT site, toStartOfDay(timestamp, 'UTC') AS day, name, pathname, hostname, \
                     uniqState(visitor_id) AS visitors, countState() AS hits, \
                     sumState(cityHash64(timestamp, visitor_id, name, pathname)) AS sig FROM events WHERE {} AND bot = '' \
                     GROUP BY site, day, name, pathname, hostname",
                    day_range(day)
                );
            exec(client, &stmt).await?;
            if report.hourly_days.last() != Some(&day) {
                report.hourly_days.push(day);
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filtered_rows_are_written_for_every_filtered_dimension() {
        use crate::query::visits::FILTERED_DIMS;
        let d = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap_or_default();
        let all: String = filtered_daily(d, 1, &Sql::new("1"), &Bounds::default())
            .iter()
            .map(|s| s.to_string())
            .collect();
        for dim in FILTERED_DIMS {
            assert!(all.contains(&format!("'{dim}'")), "{dim}");
        }
        for key in FILTER_VISIT_KEYS {
            // A place by its code (`CODES_LAYOUT`), every other key by its stored value.
            let value = if PLACES.contains(key) {
                format!("splitByChar('|', {key})[1]")
            } else {
                key.to_string()
            };
            assert!(all.contains(&format!("('{key}', {value})")), "{key}");
            assert!(DAILY_DIMS.contains(key), "{key} is a visit column");
        }
    }

    #[test]
    fn visitor_slices_cover_every_hash_once() {
        assert_eq!(slice_count(0, SLICE_EVENTS), 1);
        assert_eq!(slice_count(SLICE_EVENTS, SLICE_EVENTS), 1);
        assert_eq!(slice_count(SLICE_EVENTS + 1, SLICE_EVENTS), 2);
        assert_eq!(slice_count(u64::MAX, 1), 256);
        assert_eq!(visitor_slices(1)[0].as_str(), "1");
        let three: Vec<String> = visitor_slices(3)
            .iter()
            .map(|s| s.as_str().to_string())
            .collect();
        let b = |h: &str| format!("toFixedString(unhex('{h}{}'), 16)", "00".repeat(15));
        assert_eq!(
            three,
            [
                format!("visitor_id < {}", b("55")),
                format!("visitor_id >= {} AND visitor_id < {}", b("55"), b("aa")),
                format!("visitor_id >= {}", b("aa")),
            ]
        );
        // Bounds rise strictly, so the ranges neither overlap nor leave a gap.
        let firsts: Vec<u32> = (0..256).map(|k| k * 256 / 256).collect();
        assert!(firsts.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn partitions_are_named_by_their_utc_day() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        assert_eq!(partition(d), 20_261_120);
        assert_eq!(
            partition(d).to_string(),
            d.format("%Y%m%d").to_string(),
            "as ClickHouse's toYYYYMMDD names it"
        );
    }
}
