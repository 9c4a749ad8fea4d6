//! Visit derivation: how raw hits become visits, shared by reports and the rollup job.
//!
//! A visitor's hits sorted by time are cut into visits by the 30-minute rule
//! ([`VISIT_GAP_SECS`]); a visit's start, duration, counts, bounce, entry and exit page come
//! from its hits, its other properties from its first hit ([`VISIT_FIRST`]). The rollup job
//! inserts [`derive_visits`] into `visits` (and [`derive_open_visits`] into `open_visits` for
//! the current day's cut); readers derive the same rows from raw events for days without a
//! build (`derive_visit_cols`) and put together what follows the current day's cut
//! ([`open_visit_rows`], [`snapshot_rows`]). Every function here returns [`Sql`]; no I/O.
//!
//! The visit columns are declared once, in parts ([`VISIT_MEASURES`], [`VISIT_PAGES`],
//! [`VISIT_FIRST`]); [`VISIT_COLS`] and [`OPEN_VISIT_COLS`] are made of them.

use chrono::{Duration, NaiveDateTime, NaiveTime};
use veil_schemas::sql;
use veil_schemas::sql::{date, idents, lit, utc, Sql};

use super::build::Build;

/// How long a visit must have been quiet at a build's cut to be over (the 30-minute rule: a
/// later hit more than this after its last one starts a new visit).
pub const VISIT_GAP_SECS: i64 = 1800;

/// The table the hits after a cut are read from: the last two days' events ordered by site,
/// hour, visitor and time (`025_events_tail.sql`), where `events`, ordered by visitor within a
/// day, would be read whole. Read with [`after_cut_cond`], which names the key's hour.
pub const RECENT: &str = "events_tail";

/// An aggregate that sees no row: the cheap way to an empty `uniq` state per group.
pub const EMPTY_STATE: &str = "uniqStateIf(toFixedString('', 16), 0)";

/// Child-directed sites store no visitor hash (all zero bytes); they have no visits.
pub(crate) const HAS_VISITOR: &str = "visitor_id != unhex('00000000000000000000000000000000')";

/// Which visit row a row of `visits` is: site, UTC day of its start, build number.
const VISIT_KEY: &[&str] = &["site", "day", "build"];

/// The visitor and what every visit query reads: start, length and counts of the visit.
pub const VISIT_MEASURES: &[&str] = &[
    "visitor_id",
    "start",
    "duration",
    "pageviews",
    "events",
    "bounce",
];

/// The visit's first and last page (of its pageviews, else of its hits).
pub const VISIT_PAGES: &[&str] = &["entry_page", "exit_page"];

/// Visit properties taken from a visit's first hit (besides entry and exit page).
pub const VISIT_FIRST: &[&str] = &[
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

/// What an `open_visits` row holds beyond a visit row: the last hit's time and the number of
/// interactive custom events.
const OPEN_EXTRA: &[&str] = &["last", "inter"];

/// The visit's hits in time order (`016_visit_hits.sql`), six arrays of equal length: time,
/// event name, path, host, custom property keys and values of each hit. Filtered reports ARRAY JOIN them
/// ([`super::rows`]' joined rows); visit builds with [`HITS_LAYOUT`] carry them.
pub const VISIT_HITS: &[&str] = &[
    "hit_times",
    "hit_names",
    "hit_paths",
    "hit_hosts",
    "hit_prop_keys",
    "hit_prop_values",
];

/// The hit field each of [`VISIT_HITS`] holds, in the same order.
pub(crate) const HIT_FIELDS: &[&str] = &[
    "timestamp",
    "name",
    "pathname",
    "hostname",
    "prop_keys",
    "prop_values",
];

/// [`open_visit_rows`]' element fields holding [`VISIT_HITS`], in the same order.
const HIT_ELEMENTS: [&str; 6] = ["hts", "hns", "hps", "hhs", "hks", "hvs"];

/// `visit_builds.layout` of builds whose visit rows carry [`VISIT_HITS`] (older builds have 0).
pub const HITS_LAYOUT: u8 = 1;

/// `visit_builds.layout` of builds whose closed day also carries differential privacy's
/// bounded rows in `visits_daily` (`dim` = [`BOUNDED_DIM`] + the dimension: each visitor id's
/// contribution clamped, see `crate::rollup`); the layout the rollup job writes now.
pub const BOUNDED_LAYOUT: u8 = 2;

/// The `dim` prefix of `visits_daily`'s bounded rows.
pub const BOUNDED_DIM: &str = "dp:";

/// `visit_builds.layout` of builds whose closed day also carries the **filtered rows** in
/// `visits_daily` (exact, and bounded for differential privacy): the day's numbers by
/// dimension under each single filter value ([`filtered_dim`]), so that a dashboard clicked
/// on a page, a goal or a source reads thousands of prepared rows instead of every visit of
/// the range.
pub const FILTERED_LAYOUT: u8 = 3;

/// `visit_builds.layout` of builds whose filtered rows key a region or city by its **code**
/// (`region=DE-BY` for visits stored as `DE-BY|Bavaria` or `DE-BY` alone), so that each visitor
/// id is clamped once under a code however many names it was stored with that day:
/// differential privacy reads their bounded rows under a place filter (older builds keyed the
/// stored value, and such questions read visit rows). The layout the rollup job writes now.
pub const CODES_LAYOUT: u8 = 4;

/// Visit columns a filtered row is keyed by (`visit:source is Google`, `visit:country is
/// DE`…): every value of these in a visit makes that visit's filtered rows. Besides them, the
/// hit keys [`FILTER_HIT_KEYS`].
pub const FILTER_VISIT_KEYS: &[&str] = &[
    "entry_page",
    "exit_page",
    "source",
    "referrer",
    "channel",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "country_code",
    "region",
    "city",
    "browser",
    "os",
    "device",
];

/// Hit keys of filtered rows: "some hit of the visit has this page / this event name / this
/// host" (each distinct path, name and host in the visit's hit arrays). Under such a key a visit counts with its
/// visitor, visits, bounces and duration, and only its matching hits as pageviews and events
/// — what the `visit_hits` source computes per query.
pub const FILTER_HIT_KEYS: &[&str] = &["event:pathname", "event:name", "event:hostname"];

/// The dimensions filtered rows are written for, besides the totals (`''`): the breakdowns of
/// the dashboard's first screen (sources, countries, devices) and, under visit keys only,
/// top pages (`event:pathname`: a page under a page or goal filter is the event rollups'
/// question). Other breakdowns under a filter read visit rows.
pub const FILTERED_DIMS: &[&str] = &["source", "country_code", "device", "event:pathname"];

/// A filtered row's `dim`: the dimension (`''`, a visit column or `event:pathname`), then the
/// filter key and value — `source|event:pathname=/pricing`. Keys and dimensions are names
/// without `|` or `=`, and the value comes last, so no two (dimension, key, value) share one.
/// Bounded rows put [`BOUNDED_DIM`] before it.
pub fn filtered_dim(dim: &str, key: &str, value: &str) -> String {
    format!("{dim}|{key}={value}")
}

const VISIT_PARTS: &[&[&str]] = &[
    VISIT_KEY,
    VISIT_MEASURES,
    VISIT_PAGES,
    VISIT_FIRST,
    VISIT_HITS,
];
const OPEN_VISIT_PARTS: &[&[&str]] = &[
    VISIT_KEY,
    VISIT_MEASURES,
    VISIT_PAGES,
    VISIT_FIRST,
    OPEN_EXTRA,
    VISIT_HITS,
];

/// Columns of a visit row, in `visits` table order: `site, day, build`, [`VISIT_MEASURES`],
/// [`VISIT_PAGES`], [`VISIT_FIRST`], [`VISIT_HITS`].
pub const VISIT_COLS: &[&str] = &concat::<{ total(VISIT_PARTS) }>(VISIT_PARTS);

/// Columns of an `open_visits` row: those of a visit row, with the last hit's time and the
/// interactive custom events (`last`, `inter`) before [`VISIT_HITS`], in table order.
pub const OPEN_VISIT_COLS: &[&str] = &concat::<{ total(OPEN_VISIT_PARTS) }>(OPEN_VISIT_PARTS);

/// Event columns `visits_daily` is built for (`dim` = `event:` + the column).
pub const EVENT_DAILY_DIMS: &[&str] = &["pathname", "name", "hostname"];

/// Visit columns `visits_daily` is built for (each visit adds one row per entry, and one for
/// the totals with `dim = ''`): the pages and first-hit properties, the host excepted (it is
/// an event dimension there). A choice, not a second list of the visit columns: the unit
/// tests check it against [`VISIT_COLS`]. Its order is the order of the `(dim, value)` pairs
/// and of the first-hit columns an open visit carries in [`snapshot_rows`].
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

/// Fields of the per-visitor hit tuples the visit SQL sorts (index = position + 1). Their
/// order decides how hits at the same time sort in [`derive_visits`].
pub(crate) const EV_FIELDS: &[&str] = &[
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
    "revenue_currency",
];

/// The number of names in `parts`.
const fn total(parts: &[&[&str]]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < parts.len() {
        n += parts[i].len();
        i += 1;
    }
    n
}

/// The names of `parts`, in order (`N` is [`total`] of them: checked at compile time).
const fn concat<const N: usize>(parts: &[&[&'static str]]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut n = 0;
    let mut i = 0;
    while i < parts.len() {
        let mut j = 0;
        while j < parts[i].len() {
            out[n] = parts[i][j];
            n += 1;
            j += 1;
        }
        i += 1;
    }
    assert!(n == N, "concat: N is not the number of names");
    out
}

/// `site = '…'`.
pub(crate) fn site_cond(site: &str) -> Sql {
    sql!("site = {}", lit(site))
}

/// `e.N`: `field` of an ARRAY JOINed hit tuple `e` made of `fields`.
fn tuple_field(field: &str, fields: &[&str]) -> Sql {
    let i = fields.iter().position(|f| *f == field).unwrap_or(0) + 1;
    sql!("e.{}", i)
}

/// `e.N`: `field` of an ARRAY JOINed hit tuple of all [`EV_FIELDS`].
pub(crate) fn hit_field(field: &str) -> Sql {
    tuple_field(field, EV_FIELDS)
}

/// The raw events of partly built day `b` from its cut to the end of the day: the
/// condition for [`RECENT`].
pub fn after_cut_cond(site: &str, b: &Build, cut: NaiveDateTime) -> Sql {
    let hi = b.day.and_time(NaiveTime::MIN) + Duration::days(1);
    sql!(
        "{} AND {} AND timestamp >= {} AND timestamp < {}",
        site_cond(site),
        from_cut_hour(cut),
        utc(cut),
        utc(hi)
    )
}

/// `toStartOfHour(timestamp) >= toStartOfHour(<cut>)`: true of every hit at or after `cut`,
/// written on [`RECENT`]'s key expression so that ClickHouse 18.16, which uses a key only for
/// a condition on the key's own expression, reads from the cut's hour on instead of the whole
/// day. Both sides in the server's time zone (the cut as Unix seconds), whatever it is.
pub fn from_cut_hour(cut: NaiveDateTime) -> Sql {
    sql!(
        "toStartOfHour(timestamp) >= toStartOfHour(toDateTime({}))",
        cut.and_utc().timestamp().max(0)
    )
}

/// One array of sorted hits per (site, visitor) of the events matching `cond`, with a visit
/// number per hit (`vnum`, the 30-minute rule) and the hit's position (`idx`).
pub(crate) fn sessionize(cond: &Sql) -> Sql {
    sessionize_fields(cond, EV_FIELDS)
}

/// [`sessionize`] carrying only `fields` (the first must be `timestamp`): a query that needs
/// few visit columns sorts far less in memory.
fn sessionize_fields(cond: &Sql, fields: &[&'static str]) -> Sql {
    sql!(
        "SELECT site, visitor_id, evs, arrayEnumerate(evs) AS idx, \
         arrayCumSum(arrayMap((x, j) -> toUInt8(j = 1 OR x.1 - evs[j - 1].1 > {}), evs, arrayEnumerate(evs))) AS vnum \
         FROM (SELECT site, visitor_id, arraySort(groupArray(({}))) AS evs \
         FROM events WHERE {} AND bot = '' AND {} GROUP BY site, visitor_id)",
        VISIT_GAP_SECS,
        idents(fields, ", "),
        cond,
        HAS_VISITOR
    )
}

/// Per-visit aggregates over ARRAY JOINed hits `e` (index `i`), column names prefixed.
pub(crate) fn visit_aggregates(prefix: &'static str) -> Vec<Sql> {
    visit_aggregates_fields(prefix, EV_FIELDS)
}

/// [`visit_aggregates`] over tuples of `fields` (first-hit columns not in `fields` are left out).
fn visit_aggregates_fields(prefix: &'static str, fields: &[&str]) -> Vec<Sql> {
    let p = prefix;
    let field = |f: &str| tuple_field(f, fields);
    let (ts, name, path) = (field("timestamp"), field("name"), field("pathname"));
    let mut cols = vec![
        sql!("min({}) AS {}start", ts, p),
        sql!("toUInt32(max({0}) - min({0})) AS {1}duration", ts, p),
        sql!("toUInt32(countIf({} = 'pageview')) AS {}pageviews", name, p),
        sql!("toUInt32(countIf({} != 'engagement')) AS {}events", name, p),
        sql!("max({}) AS {}last", ts, p),
        sql!(
            "toUInt32(countIf({} NOT IN ('pageview', 'engagement') AND {} = 1)) AS {}inter",
            name,
            field("interactive"),
            p
        ),
        sql!("toUInt8({0}pageviews <= 1 AND {0}inter = 0) AS {0}bounce", p),
        sql!(
            "if({0}pageviews > 0, argMinIf({1}, i, {2} = 'pageview'), argMin({1}, i)) AS {0}entry_page",
            p,
            path,
            name
        ),
        sql!(
            "if({0}pageviews > 0, argMaxIf({1}, i, {2} = 'pageview'), argMax({1}, i)) AS {0}exit_page",
            p,
            path,
            name
        ),
    ];
    cols.extend(
        VISIT_FIRST
            .iter()
            .filter(|c| fields.contains(c))
            .map(|c| sql!("argMin({}, i) AS {}{}", field(c), p, *c)),
    );
    cols
}

/// Visit rows (columns [`VISIT_COLS`]) derived from the raw events matching `cond`, tagged
/// with `build`. The rollup job inserts exactly this into `visits`.
pub fn derive_visits(cond: &Sql, build: u64) -> Sql {
    derive_visits_with(cond, build, VISIT_COLS)
}

/// The visits [`derive_visits`] derives, as `open_visits` rows ([`OPEN_VISIT_COLS`]).
pub fn derive_open_visits(cond: &Sql, build: u64) -> Sql {
    derive_visits_with(cond, build, OPEN_VISIT_COLS)
}

fn derive_visits_with(cond: &Sql, build: u64, cols: &[&'static str]) -> Sql {
    let mut aggs = visit_aggregates("");
    aggs.extend(hit_arrays());
    sql!(
        "SELECT {} FROM (SELECT site, toDate(start) AS day, toUInt64({}) AS build, visitor_id, {} \
         FROM ({}) ARRAY JOIN evs AS e, idx AS i, vnum AS visit GROUP BY site, visitor_id, visit)",
        idents(cols, ", "),
        build,
        Sql::join(aggs, ", "),
        sessionize(cond)
    )
}

/// [`VISIT_HITS`] of a visit, aggregated over its ARRAY JOINed hits `e` (index `i`): sorted
/// by the hit's position in the visitor's sorted timeline, as the raw path orders them.
fn hit_arrays() -> Vec<Sql> {
    hit_arrays_of(EV_FIELDS, VISIT_HITS)
}

/// [`hit_arrays`] over tuples of `fields` (which hold [`HIT_FIELDS`]), for the arrays `wanted`.
fn hit_arrays_of(fields: &[&str], wanted: &[&'static str]) -> Vec<Sql> {
    let tuple = Sql::join(HIT_FIELDS.iter().map(|f| tuple_field(f, fields)), ", ");
    let mut out = vec![sql!("arraySort(groupArray((i, {}))) AS hits_sorted", tuple)];
    out.extend(
        VISIT_HITS
            .iter()
            .enumerate()
            .filter(|(_, c)| wanted.contains(c))
            .map(|(n, c)| sql!("arrayMap(t -> t.{}, hits_sorted) AS {}", n + 2, *c)),
    );
    out
}

/// Visit rows with only `cols`, derived from the raw events matching `cond` (`visit`, the
/// visit's number among the visitor's, and `last`, `inter` as in `open_visits`, may be asked
/// for too).
pub(crate) fn derive_visit_cols(cond: &Sql, cols: &[&'static str]) -> Sql {
    let mut fields: Vec<&'static str> = vec!["timestamp", "name", "pathname", "interactive"];
    fields.extend(cols.iter().filter(|c| VISIT_FIRST.contains(c)).copied());
    let hits: Vec<&'static str> = cols
        .iter()
        .filter(|c| VISIT_HITS.contains(c))
        .copied()
        .collect();
    if !hits.is_empty() {
        for f in ["hostname", "prop_keys", "prop_values"] {
            if !fields.contains(&f) {
                fields.push(f);
            }
        }
    }
    let mut aggs = visit_aggregates_fields("", &fields);
    if !hits.is_empty() {
        aggs.extend(hit_arrays_of(&fields, &hits));
    }
    sql!(
        "SELECT {} FROM (SELECT visitor_id, visit, {} \
         FROM ({}) ARRAY JOIN evs AS e, idx AS i, vnum AS visit GROUP BY site, visitor_id, visit)",
        idents(cols, ", "),
        Sql::join(aggs, ", "),
        sessionize_fields(cond, &fields)
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
/// sort as `derive_visit_cols` sorts them, so both give the same visits.
///
/// One pass over both tables and no join, so `GLOBAL` is not needed in cluster mode (the
/// grouping runs where the query started, over the rows every shard sends).
pub fn open_visit_rows(site: &str, b: &Build, cut: NaiveDateTime, cols: &[&'static str]) -> Sql {
    let first: Vec<&'static str> = cols
        .iter()
        .filter(|c| VISIT_FIRST.contains(c))
        .copied()
        .collect();
    // Element fields: time, name, path, interactive (the raw sort order), the first-hit
    // columns, then last hit, pageviews, events, interactive events, entry and exit page.
    // The hit arrays asked for: each element carries them too, an open visit its stored
    // ones, a later hit arrays of one.
    let hit_parts: Vec<(&'static str, &'static str, &'static str)> = VISIT_HITS
        .iter()
        .zip(HIT_ELEMENTS)
        .zip(HIT_FIELDS)
        .filter(|((c, _), _)| cols.contains(c))
        .map(|((c, e), f)| (*c, e, *f))
        .collect();
    let mut fields: Vec<&'static str> = vec!["ts", "nm", "pa", "ia"];
    fields.extend(first.iter().copied());
    fields.extend(["l", "pv", "ev", "it", "en", "ex"]);
    fields.extend(hit_parts.iter().map(|(_, e, _)| *e));
    let element = |f: &str| tuple_field(f, &fields);
    let firsts = Sql::join(first.iter().map(|c| sql!(", {}", *c)), "");
    let open_hits = Sql::join(
        hit_parts.iter().map(|(c, e, _)| sql!(", {} AS {}", *c, *e)),
        "",
    );
    let new_hits = Sql::join(hit_parts.iter().map(|(_, _, f)| sql!(", [{}]", *f)), "");
    let open = sql!(
        "SELECT visitor_id, start AS ts, '' AS nm, '' AS pa, toUInt8(0) AS ia{}, last AS l, \
         pageviews AS pv, events AS ev, inter AS it, entry_page AS en, exit_page AS ex{} \
         FROM open_visits WHERE {} AND day = {} AND build = {}",
        firsts,
        open_hits,
        site_cond(site),
        date(b.day),
        b.build
    );
    let hits = sql!(
        "SELECT visitor_id, timestamp, name, pathname, interactive{}, timestamp, \
         toUInt32(name = 'pageview'), toUInt32(name != 'engagement'), \
         toUInt32(name NOT IN ('pageview', 'engagement') AND interactive = 1), pathname, pathname{} \
         FROM {} WHERE {} AND bot = '' AND {}",
        firsts,
        new_hits,
        RECENT,
        after_cut_cond(site, b, cut),
        HAS_VISITOR
    );
    let mut aggs = vec![
        Sql::new("visitor_id"),
        sql!("min({}) AS start", element("ts")),
        sql!(
            "toUInt32(max({}) - min({})) AS duration",
            element("l"),
            element("ts")
        ),
        sql!("toUInt32(sum({})) AS pageviews", element("pv")),
        sql!("toUInt32(sum({})) AS events", element("ev")),
        sql!(
            "toUInt8(sum({}) <= 1 AND sum({}) = 0) AS bounce",
            element("pv"),
            element("it")
        ),
        sql!(
            "argMin({}, ({} = 0, i)) AS entry_page",
            element("en"),
            element("pv")
        ),
        sql!(
            "argMax({}, ({} > 0, i)) AS exit_page",
            element("ex"),
            element("pv")
        ),
    ];
    aggs.extend(
        first
            .iter()
            .map(|c| sql!("argMin({}, i) AS {}", element(c), *c)),
    );
    // The elements' arrays joined in timeline order.
    aggs.extend(hit_parts.iter().map(|(c, e, _)| {
        sql!(
            "arrayReduce('groupArrayArray', arrayMap(t -> t.2, arraySort(groupArray((i, {}))))) AS {}",
            element(e),
            *c
        )
    }));
    let last = fields.iter().position(|f| *f == "l").unwrap_or(0) + 1;
    sql!(
        "SELECT {} FROM (SELECT {} FROM (\
         SELECT visitor_id, evs, arrayEnumerate(evs) AS idx, \
         arrayCumSum(arrayMap((x, j) -> toUInt8(j = 1 OR x.1 - evs[j - 1].{} > {}), \
         evs, arrayEnumerate(evs))) AS vnum \
         FROM (SELECT visitor_id, arraySort(groupArray(({}))) AS evs \
         FROM ({} UNION ALL {}) GROUP BY visitor_id)) \
         ARRAY JOIN evs AS e, idx AS i, vnum AS visit GROUP BY visitor_id, visit)",
        idents(cols, ", "),
        Sql::join(aggs, ", "),
        last,
        VISIT_GAP_SECS,
        idents(&fields, ", "),
        open,
        hits
    )
}

/// A snapshot of site `site`'s current day at build `b` (cut `cut`) as it stands now, in the
/// columns of `today_daily` after `site, day, build` (`dim, value, uv, visits, pageviews,
/// events, bounces, duration`): for every dimension `visits_daily` is built for, the build's
/// rows merged with what follows its cut exactly as a report merges them
/// ([`super::rows`]' `visits_daily_rows`), each day's `uniq` states finished into `uv`.
pub fn snapshot_rows(site: &str, b: &Build, cut: NaiveDateTime) -> Sql {
    let mut cols: Vec<&'static str> = VISIT_MEASURES.to_vec();
    cols.extend(DAILY_DIMS.iter().copied());
    sql!(
        "SELECT dim, value, finalizeAggregation(uniqMergeState(st)) AS uv, sum(v) AS visits, \
         sum(p) AS pageviews, sum(e) AS events, sum(bo) AS bounces, sum(du) AS duration FROM (\
         SELECT dim, value, visitors AS st, visits AS v, pageviews AS p, events AS e, \
         bounces AS bo, duration AS du FROM visits_daily_partial \
         WHERE {} AND day = {} AND build = {} \
         UNION ALL \
         SELECT kv.1 AS dim, kv.2 AS value, uniqState(visitor_id) AS st, count() AS v, \
         sum(pageviews) AS p, sum(events) AS e, sum(bounce) AS bo, sum(duration) AS du \
         FROM ({}) ARRAY JOIN [{}] AS kv GROUP BY dim, value \
         UNION ALL \
         SELECT kv.1 AS dim, kv.2 AS value, uniqState(visitor_id) AS st, toUInt64(0) AS v, \
         countIf(name = 'pageview') AS p, countIf(name != 'engagement') AS e, \
         toUInt64(0) AS bo, toUInt64(0) AS du FROM {} \
         ARRAY JOIN [{}] AS kv WHERE {} AND bot = '' GROUP BY dim, value\
         ) GROUP BY dim, value",
        site_cond(site),
        date(b.day),
        b.build,
        open_visit_rows(site, b, cut, &cols),
        visit_dim_pairs(),
        RECENT,
        event_dim_pairs(),
        after_cut_cond(site, b, cut)
    )
}

/// The `(dim, value)` tuples one visit row makes for `visits_daily` (`ARRAY JOIN [...] AS kv`):
/// the totals (`''`) and each of [`DAILY_DIMS`].
pub fn visit_dim_pairs() -> Sql {
    Sql::join(
        std::iter::once(Sql::new("('', '')"))
            .chain(DAILY_DIMS.iter().map(|c| sql!("('{}', {})", *c, *c))),
        ", ",
    )
}

/// The `(dim, value)` tuples one hit makes for `visits_daily`: each of [`EVENT_DAILY_DIMS`].
pub fn event_dim_pairs() -> Sql {
    Sql::join(
        EVENT_DAILY_DIMS
            .iter()
            .map(|c| sql!("('event:{}', {})", *c, *c)),
        ", ",
    )
}
