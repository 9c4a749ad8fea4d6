//! A realistic, reproducible data generator: `veil gen` writes `N` events for one site over the
//! last `D` days straight into the `events` table, computed by ClickHouse itself
//! (`INSERT INTO events (…) SELECT … FROM numbers(…)`), so no row crosses the network.
//!
//! Every value is a deterministic function of the seed and the row's position
//! (`cityHash64(seed, …)`, `sipHash128(…)`), so two runs with the same seed, event count, day
//! count and end time write the same rows. It runs on ClickHouse 18.16 and on current releases
//! (no window functions, no `WITH` tricks, no query parameters). The SQL is an
//! [`Sql`] built from static text, numbers and the data tables' strings
//! (the model's values in `gen/data.rs`, the site) escaped by [`lit`].
//!
//! The model, one level per nested `SELECT` (each level's columns are computed once and copied
//! by `arrayJoin` to the rows below it):
//!
//! 1. **Visitor-days** (`numbers`): the visitor hash is per day (Veil's salts rotate daily).
//!    Each has a start time drawn from the day's diurnal curve (low at 02:00 UTC, high at
//!    14:00 UTC; weekends at about 65 % of weekdays, a slight upward trend and seeded day-to-day
//!    noise), a client profile (device desktop/mobile/tablet ≈ 55/40/5, browser and version,
//!    OS and version, screen and processor class) and a place (32 real countries, regions and
//!    cities with their ISPs, Zipf weights; stored with ISO 3166-2 codes and GeoNames ids as
//!    the collector stores them, [`crate::places`]). 80 % make one visit that day, 15 % two, 5 % three:
//!    returns come 1.5–5.5 hours later (or earlier, near the end of the range).
//! 2. **Visits**: a source (Direct, Google, DuckDuckGo, Bing, Hacker News, X, Reddit, LinkedIn,
//!    GitHub, YouTube, a newsletter with UTM tags, Google Ads, a few blogs) and 1–6 pageviews:
//!    50 % bounce. Only the landing page carries the referrer and UTM tags, as the collector
//!    stores them (later pages are self-referrals, dropped).
//! 3. **Pageviews**: a path from a Zipf-like distribution over a few hundred paths
//!    (`rank = ⌊exp(x · ln(n+1))⌋ − 1`, x uniform), 10–180 s apart, so a visit's hits are
//!    minutes apart and a visit never contains a 30-minute gap.
//! 4. **Events**: the `pageview`; an `engagement` event for 70 % of them (time on page, scroll
//!    depth); on a visit's last page 3 % `Signup`, 0.8 % `Purchase` (revenue 19 or 49 USD) and
//!    2 % `Outbound Link: Click`, with props.
//!
//! Generation runs one day per `INSERT` (so each insert writes one partition, mostly), the
//! most recent day first, two at a time. Each day's row count is first counted with a light
//! version of the same query; the oldest day needed is cut with `LIMIT` so the total is exactly
//! the number asked for.
//!
//! [`generate_app`] (`gen/app.rs`) writes the demo app of `veil up --demo` the same way: an iOS
//! and Android app's events in the shape the collector stores them (device `app`, app version
//! and build rolling out 2.3 → 2.4.0 → the 2.4.1 hotfix, OS versions, device models, install
//! sources, locales, sessions with `launch_ms`, screens with `latency_ms`, the odd launch after
//! a crash with `crash` = 1, a few custom events), up to the end so Realtime shows it in use.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod app;
mod data;

pub use app::{generate_app, AppOptions, AppReport};
pub use data::pages;
use data::{CUSTOM_PERMILLE, ENGAGEMENT_PCT, PAGEVIEWS_PCT, PLACES, PROFILES, SOURCES, VISITS_PCT};

use crate::places;
use crate::sql::{lit, Run as _, Sql};
use crate::{sql, ClickHouseConfig, Error};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenOptions {
    /// The site (domain, already normalized).
    pub site: String,
    /// Exactly this many rows are written.
    pub events: u64,
    /// Days of data ending at `end` (at least 1; day 1 is `end`'s UTC day).
    pub days: u32,
    /// Seed: the same seed (and the same other options) writes the same rows.
    pub seed: u64,
    /// Unix time of the newest possible event (default: now).
    pub end: Option<i64>,
    /// Inserts run at the same time (default 2).
    pub parallel: usize,
}

impl GenOptions {
    /// `events` events over `days` days for `site`, seed 1, ending now.
    pub fn new(site: impl Into<String>, events: u64, days: u32) -> Self {
        Self {
            site: site.into(),
            events,
            days,
            seed: 1,
            end: None,
            parallel: 2,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GenReport {
    /// Rows inserted.
    pub rows: u64,
    /// Visitor-days generated (distinct visitor hashes).
    pub visitor_days: u64,
    /// Wall time of the whole run, counting included.
    pub seconds: f64,
    /// `rows / seconds`.
    pub rows_per_second: f64,
    /// Newest event time (Unix seconds).
    pub end: i64,
}

/// A small seeded PRNG (SplitMix64) for the few choices made in Rust (page order, day noise).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `[lit(a),lit(b),…]`: an array literal of strings.
fn str_array<'a>(items: impl IntoIterator<Item = &'a str>) -> Sql {
    Sql::new("[")
        .with(Sql::join(items.into_iter().map(lit), ","))
        .with("]")
}

/// `values[idx - 1]` in SQL (`idx` 1-based), as `transform`: a hash lookup built once per
/// block, where indexing a constant array literal would copy the whole array into every row.
fn pick<'a>(idx: &Sql, values: impl IntoIterator<Item = &'a str>) -> Sql {
    let v: Vec<&str> = values.into_iter().collect();
    sql!(
        "transform(toUInt64({}), {}, {}, '')",
        idx,
        num_array(1..=v.len() as u64),
        str_array(v)
    )
}

/// [`pick`] for numbers.
fn pick_num(idx: &Sql, values: impl IntoIterator<Item = u64>) -> Sql {
    let v: Vec<u64> = values.into_iter().collect();
    sql!(
        "transform(toUInt64({}), {}, {}, toUInt64(0))",
        idx,
        num_array(1..=v.len() as u64),
        num_array(v)
    )
}

/// `[a,b,…]`: an array literal of numbers.
fn num_array(items: impl IntoIterator<Item = u64>) -> Sql {
    Sql::new("[").with(Sql::join(items, ",")).with("]")
}

/// Running sums of `weights`.
fn cumulative(weights: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut acc = 0;
    weights
        .into_iter()
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

/// Expected rows per visitor-day under the model's distributions.
fn rows_per_visitor_day() -> f64 {
    let visits: f64 = VISITS_PCT
        .iter()
        .enumerate()
        .map(|(i, p)| (i as f64 + 1.0) * *p as f64 / 100.0)
        .sum();
    let pv: f64 = PAGEVIEWS_PCT
        .iter()
        .enumerate()
        .map(|(i, p)| (i as f64 + 1.0) * *p as f64 / 100.0)
        .sum();
    let custom: f64 = CUSTOM_PERMILLE.iter().sum::<u64>() as f64 / 1000.0;
    visits * (pv * (1.0 + ENGAGEMENT_PCT as f64 / 100.0) + custom)
}

/// Relative traffic of each hour of a UTC day (weekday or weekend).
fn hour_weight(hour: u32, weekend: bool) -> f64 {
    let phase = (hour as f64 + 0.5 - if weekend { 15.0 } else { 14.0 }) / 24.0;
    let base = 1.0 + 0.8 * (2.0 * std::f64::consts::PI * phase).cos();
    if weekend {
        0.65 * base
    } else {
        base
    }
}

/// One day's slice of the plan.
#[derive(Debug, Clone)]
struct Day {
    /// Midnight UTC (Unix seconds).
    start: i64,
    /// First visitor-day number.
    first: u64,
    /// Visitor-days.
    count: u64,
    /// Hours of the day that have data (24, or fewer for the end's own day).
    hours: u32,
    /// Seconds of the last hour that have data (3600 except for the end's own day).
    last_hour_secs: i64,
    /// Weekend day.
    weekend: bool,
}

impl Day {
    /// Cumulative hour weights scaled to 1 000 000.
    fn hour_cum(&self) -> Vec<u64> {
        let w: Vec<f64> = (0..self.hours)
            .map(|h| {
                let full = hour_weight(h, self.weekend);
                if h + 1 == self.hours {
                    full * self.last_hour_secs as f64 / 3600.0
                } else {
                    full
                }
            })
            .collect();
        let total: f64 = w.iter().sum();
        let mut acc = 0.0;
        let mut cum: Vec<u64> = w
            .iter()
            .map(|x| {
                acc += x;
                (acc / total * 1_000_000.0).round() as u64
            })
            .collect();
        if let Some(last) = cum.last_mut() {
            *last = 1_000_000;
        }
        cum
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Splits `visitor_days` over the days ending at `end` by weekday, trend and seeded noise.
fn plan_days(o: &GenOptions, end: i64, visitor_days: u64) -> Vec<Day> {
    let today = end.div_euclid(86_400) * 86_400;
    let mut rng = Mix(o.seed ^ 0x6461_7973);
    let mut days = Vec::new();
    let mut weights = Vec::new();
    for back in 0..i64::from(o.days.max(1)) {
        let start = today - back * 86_400;
        // 1970-01-01 was a Thursday: day 2 (Sat) and 3 (Sun) of the week counted from Thursday.
        let dow = (start / 86_400).rem_euclid(7);
        let weekend = dow == 2 || dow == 3;
        let (hours, last_hour_secs, part) = if back == 0 {
            let secs = (end - start).max(1);
            let hours = (secs / 3600 + 1) as u32;
            let last = secs - i64::from(hours - 1) * 3600;
            let full: f64 = (0..24).map(|h| hour_weight(h, weekend)).sum();
            let have: f64 = (0..hours)
                .map(|h| {
                    let w = hour_weight(h, weekend);
                    if h + 1 == hours {
                        w * last as f64 / 3600.0
                    } else {
                        w
                    }
                })
                .sum();
            (hours.min(24), last.max(1), have / full)
        } else {
            (24, 3600, 1.0)
        };
        let trend = 1.0 - 0.004 * back as f64;
        let noise = 0.92 + 0.16 * rng.unit();
        let wd = if weekend { 0.65 } else { 1.0 };
        weights.push(part * trend.max(0.2) * noise * wd);
        days.push(Day {
            start,
            first: 0,
            count: 0,
            hours,
            last_hour_secs,
            weekend,
        });
    }
    let total: f64 = weights.iter().sum();
    let mut first = 0;
    for (d, w) in days.iter_mut().zip(&weights) {
        d.first = first;
        d.count = ((visitor_days as f64) * w / total).round().max(1.0) as u64;
        first += d.count;
    }
    days
}

/// The nested SELECT for one day. `full`: every column of `events`; else only what decides
/// how many rows there are (for counting).
fn day_select(o: &GenOptions, end: i64, pages: &[String], day: &Day, full: bool) -> Sql {
    let s = o.seed;
    let h1 = |k: u32| sql!("cityHash64(toUInt64({}), u, toUInt32({}))", s, k);
    let h2 = |k: u32| sql!("cityHash64(toUInt64({}), u, v, toUInt32({}))", s, k);
    let h3 = |k: u32| sql!("cityHash64(toUInt64({}), u, v, p, toUInt32({}))", s, k);
    let visits_cum = num_array(cumulative(VISITS_PCT));
    let pv_cum = num_array(cumulative(PAGEVIEWS_PCT));
    let hour_cum = num_array(day.hour_cum());
    let n = day.count.max(1);
    let pi = Sql::new("pi");
    let li = Sql::new("li");
    let regions: Vec<String> = PLACES
        .iter()
        .map(|p| places::region_value(p.0, p.1))
        .collect();
    let cities: Vec<String> = PLACES
        .iter()
        .map(|p| places::city_value(p.0, p.1, p.2))
        .collect();
    // Level 1: visitor-days.
    let mut l1 = vec![
        Sql::new("number AS u"),
        sql!(
            "toUInt32(arrayFirstIndex(x -> x > {} % 100, {})) AS nv",
            h1(3),
            visits_cum
        ),
    ];
    if full {
        let profile_cum = num_array(cumulative(PROFILES.iter().map(|p| u64::from(p.0))));
        let place_w = PLACES
            .iter()
            .enumerate()
            .map(|(r, _)| (10_000.0 / ((r + 1) as f64).powf(0.9)).round() as u64);
        let place_cum = cumulative(place_w);
        let place_total = place_cum.last().copied().unwrap_or(1);
        let last_hour = day.hours.saturating_sub(1);
        l1.extend([
            sql!(
                "toUInt32(arrayFirstIndex(x -> x > intDiv((toUInt64(u - {}) % toUInt64({})) * 1000000, toUInt64({})), {}) - 1) AS hour",
                day.first,
                n,
                n,
                hour_cum
            ),
            sql!(
                "toUInt32({} + hour * 3600 + {} % if(hour = {}, {}, 3600)) AS t0",
                day.start,
                h1(2),
                last_hour,
                day.last_hour_secs
            ),
            sql!(
                "arrayFirstIndex(x -> x > {} % 100, {}) AS pi",
                h1(4),
                profile_cum
            ),
            sql!(
                "arrayFirstIndex(x -> x > {} % {}, {}) AS li",
                h1(5),
                place_total,
                num_array(place_cum.iter().copied())
            ),
            sql!("{} AS device", pick(&pi, PROFILES.iter().map(|p| p.1))),
            sql!("{} AS browser", pick(&pi, PROFILES.iter().map(|p| p.2))),
            sql!(
                "toString({} - {} % 4) AS browser_version",
                pick_num(&pi, PROFILES.iter().map(|p| u64::from(p.3))),
                h1(6)
            ),
            sql!("{} AS os", pick(&pi, PROFILES.iter().map(|p| p.4))),
            sql!(
                "{} AS os_version",
                pick(
                    &sql!("(pi - 1) * 4 + {} % 4 + 1", h1(7)),
                    PROFILES.iter().flat_map(|p| p.5.iter().copied())
                )
            ),
            sql!(
                "multiIf(device = 'mobile', 'mobile', device = 'tablet', 'tablet', {} % 100 < 45, 'laptop', 'desktop') AS screen_class",
                h1(8)
            ),
            sql!(
                "transform(toUInt64(if(device = 'desktop', 0, 10) + {} % 10), [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19], ['3-4','5-8','5-8','5-8','9-16','9-16','9-16','9-16','17+','17+','3-4','5-8','5-8','5-8','5-8','5-8','5-8','5-8','9-16','9-16'], '') AS processor_class",
                h1(9)
            ),
            sql!("{} AS country_code", pick(&li, PLACES.iter().map(|p| p.0))),
            // Stored as the collector stores them (`code|name`, `crate::places`).
            sql!(
                "{} AS region",
                pick(&li, regions.iter().map(String::as_str))
            ),
            sql!("{} AS city", pick(&li, cities.iter().map(String::as_str))),
            sql!(
                "toUInt32({}) AS asn",
                pick_num(&li, PLACES.iter().map(|p| u64::from(p.3)))
            ),
            sql!("{} AS isp", pick(&li, PLACES.iter().map(|p| p.4))),
        ]);
    }
    let from_numbers = sql!("numbers({}, {})", day.first, day.count);
    // Level 2: visits.
    let mut l2 = vec![sql!(
        "toUInt32(arrayFirstIndex(x -> x > {} % 100, {})) AS npv",
        h2(2),
        pv_cum
    )];
    if full {
        let src_cum = num_array(cumulative(SOURCES.iter().map(|x| u64::from(x.0))));
        let src_total: u64 = SOURCES.iter().map(|x| u64::from(x.0)).sum();
        l2.extend([
            sql!("toUInt32(v * (5400 + {} % 14400)) AS off", h2(1)),
            sql!(
                "toUInt32(if(v = 0, toInt64(t0), if(t0 + off < {}, toInt64(t0) + off, toInt64(t0) - off))) AS vs",
                end
            ),
            sql!(
                "arrayFirstIndex(x -> x > {} % {}, {}) AS si",
                h2(4),
                src_total,
                src_cum
            ),
            sql!(
                "sipHash128(concat('veil-gen:', toString(toUInt64({})), ':', toString(u), ':', toString(v))) AS session_id",
                s
            ),
        ]);
    }
    // Level 3: pageviews.
    let (e, c) = (h3(1), h3(2));
    let mut l3 = vec![sql!(
        "arrayFilter(x -> x >= 0, [0, if({} % 100 < {}, 1, -1), if(p + 1 = npv, multiIf({} % 1000 < {}, 2, {} % 1000 < {}, 3, {} % 1000 < {}, 4, -1), -1)]) AS kinds",
        e,
        ENGAGEMENT_PCT,
        c,
        CUSTOM_PERMILLE[0],
        c,
        CUSTOM_PERMILLE[0] + CUSTOM_PERMILLE[1],
        c,
        CUSTOM_PERMILLE.iter().sum::<u64>()
    )];
    if full {
        let np = pages.len();
        l3.extend([
            sql!(
                "toUInt32(vs + arraySum(arrayMap(i -> 10 + cityHash64(toUInt64({}), u, v, toUInt32(i), toUInt32(7)) % 170, range(p)))) AS pts",
                s
            ),
            sql!("toUInt32(10 + {} % 170) AS dwell", h3(7)),
            sql!(
                "{} AS pathname",
                pick(
                    &sql!(
                        "least({}, toUInt32(floor(exp(({} % 1000000) / 1000000.0 * log({} + 1)))))",
                        np,
                        h3(3),
                        np
                    ),
                    pages.iter().map(String::as_str)
                )
            ),
            sql!("{} % 4 AS plan_pick", h3(5)),
            sql!("{} % 1000 AS jitter", h3(6)),
            sql!("toUInt8(10 + {} % 91) AS sd", h3(4)),
        ]);
    }
    let l1_sql = sql!("SELECT {} FROM {}", Sql::join(l1, ", "), from_numbers);
    let l2_sql = sql!(
        "SELECT *, {} FROM (SELECT *, toUInt32(arrayJoin(range(nv))) AS v FROM ({}))",
        Sql::join(l2, ", "),
        l1_sql
    );
    let l3_sql = sql!(
        "SELECT *, {} FROM (SELECT *, toUInt32(arrayJoin(range(npv))) AS p FROM ({}))",
        Sql::join(l3, ", "),
        l2_sql
    );
    if !full {
        return sql!("SELECT sum(length(kinds)) FROM ({})", l3_sql);
    }
    let site = lit(&o.site);
    let si = Sql::new("si");
    let landing = |i: usize, name: &'static str| {
        let v: Vec<&str> = SOURCES
            .iter()
            .map(|x| match i {
                1 => x.1,
                2 => x.2,
                3 => x.3,
                5 => x.5,
                6 => x.6,
                _ => x.7,
            })
            .collect();
        sql!("if(p = 0, {}, '') AS {}", pick(&si, v), name)
    };
    let channel = sql!(
        "if(p = 0, {}, 'Direct') AS channel",
        pick(&si, SOURCES.iter().map(|x| x.4))
    );
    let cols = [
        sql!("{} AS site", site),
        sql!(
            "toDateTime(least({}, pts + multiIf(kind = 1, dwell, kind >= 2, intDiv(dwell, 2), 0))) AS timestamp",
            end
        ),
        sql!(
            "{} AS name",
            pick(
                &Sql::new("kind + 1"),
                ["pageview", "engagement", "Signup", "Purchase", "Outbound Link: Click"]
            )
        ),
        sql!("{} AS hostname", site),
        Sql::new("pathname"),
        landing(1, "referrer"),
        landing(2, "referrer_source"),
        landing(5, "utm_source"),
        landing(6, "utm_medium"),
        landing(7, "utm_campaign"),
        Sql::new("'' AS utm_content"),
        Sql::new("'' AS utm_term"),
        // The visitor hash is keyed by the event's UTC day, as Veil's daily salt does: a visit
        // that crosses midnight splits in two there, as it does in real data.
        sql!(
            "sipHash128(concat('veil-gen:', toString(toUInt64({})), ':', toString(u), ':', toString(intDiv(toUInt32(timestamp), 86400)))) AS visitor_id",
            s
        ),
        Sql::new("session_id"),
        Sql::new("browser"),
        Sql::new("browser_version"),
        Sql::new("os"),
        Sql::new("os_version"),
        Sql::new("device"),
        Sql::new("country_code"),
        Sql::new("multiIf(kind = 2 OR kind = 3, ['plan'], kind = 4, ['url'], emptyArrayString()) AS prop_keys"),
        Sql::new("multiIf(kind = 2, [if(plan_pick = 0, 'pro', 'free')], kind = 3, [if(plan_pick = 0, 'team', 'pro')], kind = 4, [transform(plan_pick % 3, [0, 1], ['https://github.com/veil-analytics/veil', 'https://docs.rs/veil'], 'https://news.ycombinator.com/item?id=1')], emptyArrayString()) AS prop_values"),
        Sql::new("toUInt32(if(kind = 1, dwell * 1000 + jitter, 0)) AS engagement_ms"),
        Sql::new("toUInt8(if(kind = 1, sd, 0)) AS scroll_depth"),
        Sql::new("screen_class"),
        Sql::new("processor_class"),
        landing(3, "source"),
        channel,
        Sql::new("region"),
        Sql::new("city"),
        Sql::new("asn"),
        Sql::new("isp"),
        Sql::new("toInt64(if(kind = 3, if(plan_pick = 0, 49000000, 19000000), 0)) AS revenue_micros"),
        Sql::new("if(kind = 3, 'USD', '') AS revenue_currency"),
        Sql::new("toUInt8(1) AS interactive"),
        Sql::new("'' AS bot"),
    ];
    sql!(
        "SELECT {} FROM (SELECT *, arrayJoin(kinds) AS kind FROM ({}))",
        Sql::join(cols, ", "),
        l3_sql
    )
}

/// The `events` columns the generator writes, in order.
const COLUMNS: &str = "site, timestamp, name, hostname, pathname, referrer, referrer_source, \
    utm_source, utm_medium, utm_campaign, utm_content, utm_term, visitor_id, session_id, browser, \
    browser_version, os, os_version, device, country_code, prop_keys, prop_values, engagement_ms, \
    scroll_depth, screen_class, processor_class, source, channel, region, city, asn, isp, \
    revenue_micros, revenue_currency, interactive, bot";

async fn count_rows(
    client: &clickhouse::Client,
    o: &GenOptions,
    end: i64,
    day: &Day,
) -> Result<u64, Error> {
    let q = day_select(o, end, &[], day, false);
    Ok(client.sql(&q).fetch_one::<u64>().await?)
}

/// Writes `o.events` rows for `o.site` into `cfg`'s `events` table (migrations must have run).
pub async fn generate(cfg: &ClickHouseConfig, o: &GenOptions) -> Result<GenReport, Error> {
    if o.events == 0 {
        return Err(Error::Config("--events must be at least 1".into()));
    }
    if o.days == 0 || o.days > 3660 {
        return Err(Error::Config("--days must be 1..=3660".into()));
    }
    let started = Instant::now();
    let end = o.end.unwrap_or_else(now_secs);
    let client = cfg.client();
    let pages = pages(o.seed);
    let planned = (o.events as f64 / rows_per_visitor_day()).ceil().max(1.0) as u64;
    let mut days = plan_days(o, end, planned);
    // Count each day's rows (most recent first) until the total reaches `events`; the oldest
    // day needed is cut with LIMIT. If every day together falls short (sampling noise), the
    // oldest day gets more visitor-days until it does not.
    let mut jobs: Vec<(Day, Option<u64>)> = Vec::new();
    let mut total = 0u64;
    let mut i = 0;
    while total < o.events {
        let Some(day) = days.get(i).cloned() else {
            break;
        };
        let rows = count_rows(&client, o, end, &day).await?;
        if total + rows >= o.events {
            let need = o.events - total;
            jobs.push((day, (need < rows).then_some(need)));
            total = o.events;
        } else if i + 1 == days.len() {
            let short = (o.events - total - rows) as f64;
            let more = (short / rows_per_visitor_day() * 1.1).ceil() as u64 + 8;
            days[i].count += more;
            continue;
        } else {
            jobs.push((day, None));
            total += rows;
        }
        i += 1;
    }
    let visitor_days: u64 = jobs.iter().map(|(d, _)| d.count).sum();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(o.parallel.max(1)));
    let mut tasks = Vec::new();
    for (day, limit) in jobs {
        let select = day_select(o, end, &pages, &day, true);
        let client = client.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let q = match limit {
                // One thread keeps the row order (and so the cut) the same on every run.
                Some(n) => sql!(
                    "INSERT INTO events ({}) {} LIMIT {} SETTINGS max_threads = 1",
                    COLUMNS,
                    select,
                    n
                ),
                None => sql!("INSERT INTO events ({}) {}", COLUMNS, select),
            };
            client
                .sql(&q)
                .with_setting("max_execution_time", "0")
                .execute()
                .await
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| Error::Start(format!("generator task failed: {e}")))??;
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    Ok(GenReport {
        rows: o.events,
        visitor_days,
        seconds,
        rows_per_second: o.events as f64 / seconds,
        end,
    })
}

/// How long generating `events` rows may take at the slowest rate seen on a 2-core machine
/// (for progress messages).
pub fn rough_duration(events: u64) -> Duration {
    Duration::from_secs_f64(events as f64 / 1_000_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact counts, one site only, the range and reproducibility, on the test server.
    #[tokio::test]
    async fn writes_exactly_n_rows_reproducibly() {
        let end = 1_795_880_000;
        let mut o = GenOptions::new("gen.example", 3_000, 7);
        o.end = Some(end);
        let a = crate::testing::fresh_database("gen_a").await;
        let b = crate::testing::fresh_database("gen_b").await;
        let r = generate(&a, &o).await.unwrap();
        assert_eq!(r.rows, 3_000);
        generate(&b, &o).await.unwrap();
        let digest = Sql::new(
            "SELECT count(), sum(cityHash64(site, timestamp, name, pathname, visitor_id, \
             session_id, source, country_code, engagement_ms, revenue_micros)), \
             toUInt32(min(timestamp)), toUInt32(max(timestamp)) FROM events",
        );
        let da: (u64, u64, u32, u32) = a.client().sql(&digest).fetch_one().await.unwrap();
        let db: (u64, u64, u32, u32) = b.client().sql(&digest).fetch_one().await.unwrap();
        assert_eq!(da, db, "same seed, same rows");
        assert_eq!(da.0, 3_000);
        assert!(
            i64::from(da.3) <= end && i64::from(da.3) > end - 86_400,
            "{da:?}"
        );
        assert!(i64::from(da.2) >= end - end % 86_400 - 6 * 86_400, "{da:?}");
        o.seed = 2;
        let c = crate::testing::fresh_database("gen_c").await;
        generate(&c, &o).await.unwrap();
        let dc: (u64, u64, u32, u32) = c.client().sql(&digest).fetch_one().await.unwrap();
        assert_eq!(dc.0, 3_000);
        assert_ne!(dc.1, da.1, "another seed, other rows");
    }

    #[test]
    fn model_means() {
        let r = rows_per_visitor_day();
        assert!((4.0..5.5).contains(&r), "{r}");
        assert_eq!(PROFILES.iter().map(|p| p.0).sum::<u32>(), 100);
        let desktop: u32 = PROFILES
            .iter()
            .filter(|p| p.1 == "desktop")
            .map(|p| p.0)
            .sum();
        let tablet: u32 = PROFILES
            .iter()
            .filter(|p| p.1 == "tablet")
            .map(|p| p.0)
            .sum();
        assert_eq!((desktop, tablet), (55, 5));
        assert_eq!(SOURCES.iter().map(|s| s.0).sum::<u32>(), 1000);
    }

    #[test]
    fn every_generated_place_is_stored_with_its_code_and_id() {
        for (cc, region, city, _, _) in PLACES {
            let r = places::region_value(cc, region);
            let c = places::city_value(cc, region, city);
            // Singapore has no first-level subdivision in the GeoIP data.
            assert!(region.is_empty() || r.starts_with(&format!("{cc}-")), "{r}");
            assert!(places::decode(&c).0.parse::<u32>().is_ok(), "{c}");
            assert_eq!(places::decode(&c).1, *city);
        }
    }

    #[test]
    fn pages_are_distinct_and_seeded() {
        let a = pages(1);
        let mut sorted = a.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), a.len());
        assert!(a.len() >= 150, "{}", a.len());
        assert_eq!(a[0], "/");
        assert_eq!(a, pages(1));
        assert_ne!(a, pages(2));
    }

    #[test]
    fn days_cover_the_range_and_end_today() {
        // 2026-11-28 15:30 UTC, a Saturday.
        let end = 1_795_880_000 - (1_795_880_000 % 86_400) + 15 * 3600 + 1800;
        let o = GenOptions::new("a.com", 1000, 30);
        let days = plan_days(&o, end, 100_000);
        assert_eq!(days.len(), 30);
        assert_eq!(days[0].start, end - end % 86_400);
        assert_eq!(days[0].hours, 16);
        assert_eq!(days[0].last_hour_secs, 1800);
        assert_eq!(days[1].hours, 24);
        let sum: u64 = days.iter().map(|d| d.count).sum();
        assert!((99_900..=100_100).contains(&sum), "{sum}");
        for w in days.windows(2) {
            assert_eq!(w[0].first + w[0].count, w[1].first);
        }
        let cum = days[1].hour_cum();
        assert_eq!(cum.len(), 24);
        assert_eq!(*cum.last().unwrap(), 1_000_000);
        // The afternoon is busier than the night.
        let d = days[1].hour_cum();
        assert!(d[14] - d[13] > 3 * (d[2] - d[1]));
    }
}
