//! The demo app: a month of a mobile app's events for `veil up --demo`, written by ClickHouse
//! itself like the website's (`INSERT INTO events (…) SELECT … FROM numbers(…)`), seeded and
//! reproducible, no window functions (ClickHouse 18.16 and current).
//!
//! The rows have the shape the collector gives an app's events (an Aptabase SDK's
//! `systemProps`, or the native API's `app` object, which also carries the install source):
//! device class `app`, OS name and `major.minor` version from the SDK, empty browser, locale
//! `ll-RR`, app version and build, SDK, device model, install source, a place from the IP
//! (region and city stored as `code|name`, [`crate::places`]), the `url` `app://SITE/SCREEN`
//! (host = the site, path = the screen), no referrer (channel `Direct`), and the performance
//! props docs/ARCHITECTURE.md names, which the Stats API's app metrics read: `launch_ms` on
//! `app_started`, `latency_ms` on `screen_view`, `crash` = 1 on the first launch after a crash.
//!
//! The model, one level per nested `SELECT`:
//!
//! 1. **User-days** (`numbers`; the visitor hash is per day, as Veil's salts rotate daily):
//!    [`users_per_day`](AppOptions::users_per_day) on a weekday at the end of the range, a
//!    growing app (1.5 % fewer each day back), 12 % more on weekends, seeded noise; a first
//!    launch at a time from the app's own diurnal curve (users in many time zones: a peak at
//!    19:00 UTC, two thirds of it at the trough); iOS (57 %) or Android with a device model (10
//!    iPhones and iPads, 11 Android phones and tablets, each with a speed factor), a real OS
//!    version, an install source (App Store, TestFlight; Google Play, Galaxy Store, a direct
//!    APK), a place as the website's (Zipf over the same places) and its locale (12 % English
//!    with the country's region, `en-DE`). The app version follows the rollout: each release
//!    (2.2.3, 2.3.0, 2.3.1, 2.4.0 ten days before the end, the 2.4.1 hotfix four days before)
//!    takes `1 − e^(−days since release / τ)` of the users of the older ones (τ 2.5 days on iOS,
//!    4 on Android's staged rollout; a few never update). 1–4 sessions that day (mean 1.6).
//! 2. **Sessions**, 40 minutes to 4 hours apart (each its own visit under the 30-minute rule),
//!    with the app's session id (stored hashed, as the collector does), 1–6 screens 45–405 s
//!    apart, a launch time (log-normal: median 480 ms on iOS, 720 ms on Android, times the
//!    model's factor, 12 % faster from 2.4.0 on; σ 0.35, so p95 ≈ 1.8 × p50), a crash before
//!    it (`crash` = 1 on its `app_started`: 2–4 ‰ of launches, 11 ‰ on 2.4.0, which 2.4.1
//!    fixes) and now and then a custom event at its end (`item_shared` 5 %,
//!    `subscription_started` 1.5 %, with props).
//! 3. **Events**: `app_started` (`launch_ms`, `crash`), one `screen_view` per screen (the first
//!    `/home`, then a Zipf-like pick of the app's screens; `latency_ms` log-normal around
//!    150–175 ms) and the custom event. Events after the end are not written; the last ones
//!    are seconds before it, and sessions last minutes, so Realtime shows the app in use.
//! 4. **A push notification** half an hour before the end: [`push_users`](AppOptions::push_users)
//!    more users (15 % of a day's by default) open the app in that half hour, so Realtime
//!    shows it busy at any hour of the day.
//!
//! About 5 events per user-day: the demo's 1 000 users a day (at the end) make ~130 000 rows
//! over the 31 days `veil up --demo` asks for (today and the 30 before).
//! One `INSERT … SELECT` for all days (the days differ by data, not by SQL: analysing a
//! query of this size takes ClickHouse 18.16 about 0.1 s, more than computing a day's rows).

use std::time::Instant;

use super::data::PLACES;
use super::{cumulative, now_secs, num_array, pick, pick_num, Mix};
use crate::places;
use crate::sql::{lit, Run as _, Sql};
use crate::{sql, ClickHouseConfig, Error};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppOptions {
    /// The app's site (domain, already normalized).
    pub site: String,
    /// Users on a weekday at the end of the range (fewer before: the app grows 1.5 % a day).
    pub users_per_day: u64,
    /// Days of data ending at `end` (1..=365; day 1 is `end`'s UTC day, up to `end`).
    pub days: u32,
    /// Seed: the same seed (and the same other options) writes the same rows.
    pub seed: u64,
    /// Unix time of the newest possible event (default: now).
    pub end: Option<i64>,
    /// Users more who open the app from a push notification in the half hour before the end.
    pub push_users: u64,
}

impl AppOptions {
    /// `users_per_day` over `days` days for `site`, seed 1, ending now, and a push
    /// notification half an hour before the end that 15 % of a day's users open.
    pub fn new(site: impl Into<String>, users_per_day: u64, days: u32) -> Self {
        Self {
            site: site.into(),
            users_per_day,
            days,
            seed: 1,
            end: None,
            push_users: users_per_day * 15 / 100,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AppReport {
    /// Rows inserted.
    pub rows: u64,
    /// User-days generated (distinct visitor hashes, about).
    pub user_days: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// Newest possible event time (Unix seconds).
    pub end: i64,
}

/// Releases, oldest first: version, build, days before the end it shipped, crash permille of
/// its launches.
pub const VERSIONS: &[(&str, &str, f64, u64)] = &[
    ("2.2.3", "2203", 75.0, 3),
    ("2.3.0", "2300", 40.0, 4),
    ("2.3.1", "2310", 24.0, 3),
    ("2.4.0", "2400", 10.0, 11),
    ("2.4.1", "2410", 4.0, 2),
];

/// Device models: iOS (weight, model, speed factor in %) …
const IOS_MODELS: &[(u64, &str, u64)] = &[
    (9, "iPhone17,1", 80),
    (10, "iPhone17,3", 85),
    (14, "iPhone16,2", 85),
    (14, "iPhone15,4", 90),
    (12, "iPhone15,2", 95),
    (12, "iPhone14,7", 100),
    (11, "iPhone14,5", 105),
    (8, "iPhone12,1", 130),
    (6, "iPad13,18", 95),
    (4, "iPhone14,6", 115),
];
/// … and Android.
const ANDROID_MODELS: &[(u64, &str, u64)] = &[
    (9, "SM-S928B", 80),
    (10, "SM-S921B", 85),
    (10, "Pixel 8", 90),
    (9, "Pixel 7a", 100),
    (14, "SM-A546B", 120),
    (10, "SM-A155F", 150),
    (9, "2312DRAABG", 130),
    (6, "CPH2581", 85),
    (8, "moto g54 5G", 145),
    (5, "SM-X210", 140),
    (10, "Pixel 6a", 110),
];
/// OS versions (as stored: `major.minor`, Android's `major`) with weights.
const IOS_VERSIONS: &[(u64, &str)] = &[
    (38, "18.1"),
    (22, "18.0"),
    (22, "17.6"),
    (10, "17.5"),
    (8, "16.7"),
];
const ANDROID_VERSIONS: &[(u64, &str)] =
    &[(16, "15"), (40, "14"), (24, "13"), (13, "12"), (7, "11")];
/// Install sources with weights.
const IOS_SOURCES: &[(u64, &str)] = &[(93, "App Store"), (7, "TestFlight")];
const ANDROID_SOURCES: &[(u64, &str)] = &[
    (88, "Google Play"),
    (8, "Galaxy Store"),
    (4, "Direct (APK)"),
];
/// Screens after `/home`, with weights.
const SCREENS: &[(u64, &str)] = &[
    (24, "/home"),
    (22, "/feed"),
    (13, "/search"),
    (16, "/item"),
    (8, "/profile"),
    (4, "/settings"),
    (6, "/cart"),
    (3, "/checkout"),
    (4, "/notifications"),
];
/// The locale of each country of [`PLACES`] (else `en-US`).
const LOCALES: &[(&str, &str)] = &[
    ("AT", "de-AT"),
    ("AU", "en-AU"),
    ("BE", "nl-BE"),
    ("BR", "pt-BR"),
    ("CA", "en-CA"),
    ("CH", "de-CH"),
    ("CZ", "cs-CZ"),
    ("DE", "de-DE"),
    ("DK", "da-DK"),
    ("ES", "es-ES"),
    ("FI", "fi-FI"),
    ("FR", "fr-FR"),
    ("GB", "en-GB"),
    ("IE", "en-IE"),
    ("IN", "en-IN"),
    ("IT", "it-IT"),
    ("JP", "ja-JP"),
    ("KR", "ko-KR"),
    ("MX", "es-MX"),
    ("NL", "nl-NL"),
    ("NO", "nb-NO"),
    ("NZ", "en-NZ"),
    ("PL", "pl-PL"),
    ("PT", "pt-PT"),
    ("SE", "sv-SE"),
    ("SG", "en-SG"),
    ("US", "en-US"),
];
/// Sessions per user-day (1–4), percent.
const SESSIONS_PCT: [u64; 4] = [60, 26, 10, 4];
/// Screens per session (1–6), percent.
const SCREENS_PCT: [u64; 6] = [34, 30, 18, 10, 5, 3];

/// Relative use of the app in each UTC hour: its users live in many time zones, so the curve
/// is flat-ish: a peak at 19:00 UTC (evening in Europe, afternoon in the Americas), two thirds of
/// it at the trough.
fn hour_weight(hour: u32) -> f64 {
    let phase = (f64::from(hour) + 0.5 - 19.0) / 24.0;
    1.0 + 0.2 * (2.0 * std::f64::consts::PI * phase).cos()
}

/// One day of the plan.
#[derive(Debug, Clone)]
struct AppDay {
    /// Midnight UTC (Unix seconds).
    start: i64,
    /// First user-day number.
    first: u64,
    /// User-days.
    count: u64,
    /// Cumulative weights of the hours that have data, scaled to 1 000 000.
    hour_cum: Vec<u64>,
    /// Seconds of the last of those hours that have data.
    last_hour_secs: i64,
    /// Cumulative version shares (permille, [`VERSIONS`] order) on iOS and on Android.
    versions: [Vec<u64>; 2],
}

/// Version shares on a day `age` days (at its midday) before the end: each release takes
/// `1 − e^(−days since release / tau)` (at most `cap`) of the users of the older ones.
fn version_shares(age: f64, tau: f64, cap: f64) -> Vec<f64> {
    let mut s = vec![0.0; VERSIONS.len()];
    s[0] = 1.0;
    for (i, v) in VERSIONS.iter().enumerate().skip(1) {
        let since = v.2 - age;
        if since <= 0.0 {
            continue;
        }
        let f = (1.0 - (-since / tau).exp()).min(cap);
        for x in s.iter_mut().take(i) {
            *x *= 1.0 - f;
        }
        s[i] = f;
    }
    s
}

/// `shares` as cumulative permille, the last exactly 1000.
fn permille_cum(shares: &[f64]) -> Vec<u64> {
    let mut acc = 0.0;
    let mut cum: Vec<u64> = shares
        .iter()
        .map(|x| {
            acc += x;
            (acc * 1000.0).round() as u64
        })
        .collect();
    if let Some(last) = cum.last_mut() {
        *last = 1000;
    }
    cum
}

/// The days ending at `end`, newest first, with their user-days.
fn plan(o: &AppOptions, end: i64) -> Vec<AppDay> {
    let today = end.div_euclid(86_400) * 86_400;
    let mut rng = Mix(o.seed ^ 0x6170_7073);
    let mut first = 0;
    let mut days = Vec::new();
    let full: f64 = (0..24).map(hour_weight).sum();
    for back in 0..i64::from(o.days.max(1)) {
        let start = today - back * 86_400;
        let (hours, last_hour_secs) = if back == 0 {
            let secs = (end - start).max(1);
            let hours = (secs / 3600 + 1).min(24) as u32;
            (hours, (secs - i64::from(hours - 1) * 3600).clamp(1, 3600))
        } else {
            (24, 3600)
        };
        let w: Vec<f64> = (0..hours)
            .map(|h| {
                let x = hour_weight(h);
                if h + 1 == hours {
                    x * last_hour_secs as f64 / 3600.0
                } else {
                    x
                }
            })
            .collect();
        let have: f64 = w.iter().sum();
        let mut acc = 0.0;
        let mut hour_cum: Vec<u64> = w
            .iter()
            .map(|x| {
                acc += x;
                (acc / have * 1_000_000.0).round() as u64
            })
            .collect();
        if let Some(last) = hour_cum.last_mut() {
            *last = 1_000_000;
        }
        // 1970-01-01 was a Thursday: day 2 (Sat) and 3 (Sun) of the week counted from Thursday.
        let dow = (start / 86_400).rem_euclid(7);
        let weekend = if dow == 2 || dow == 3 { 1.12 } else { 1.0 };
        let trend = 1.0 - 0.015 * back as f64;
        let noise = 0.93 + 0.14 * rng.unit();
        let count = (o.users_per_day as f64 * have / full * weekend * trend.max(0.3) * noise)
            .round()
            .max(1.0) as u64;
        let age = back as f64 + 0.5 - (end - start) as f64 / 86_400.0 * f64::from(back == 0);
        days.push(AppDay {
            start,
            first,
            count,
            hour_cum,
            last_hour_secs,
            versions: [
                permille_cum(&version_shares(age.max(0.0), 2.5, 0.93)),
                permille_cum(&version_shares(age.max(0.0), 4.0, 0.88)),
            ],
        });
        first += count;
    }
    days
}

/// `arrayFirstIndex(x -> x > h % total, cum)`: a 1-based weighted pick.
fn weighted(h: &Sql, weights: impl IntoIterator<Item = u64>) -> Sql {
    let cum = cumulative(weights);
    let total = cum.last().copied().unwrap_or(1);
    sql!(
        "arrayFirstIndex(x -> x > {} % {}, {})",
        h,
        total,
        num_array(cum)
    )
}

/// A standard normal variate (Irwin–Hall of four 16-bit parts) from the UInt64 column `h`.
fn normal(h: &'static str) -> Sql {
    sql!(
        "((({0} % 65536) + (intDiv({0}, 65536) % 65536) + (intDiv({0}, 4294967296) % 65536) + intDiv({0}, 281474976710656)) / 65536.0 - 2.0) * 1.7320508",
        Sql::new(h)
    )
}

/// `transform(di, [1, 2, …], [values…], 0)`: the value of the user's day (`di`, 1-based in
/// plan order).
fn per_day(values: impl IntoIterator<Item = u64>) -> Sql {
    let v: Vec<u64> = values.into_iter().collect();
    sql!(
        "transform(di, {}, {}, toUInt64(0))",
        num_array(1..=v.len() as u64),
        num_array(v)
    )
}

/// The nested SELECT of every row of every day of `days` (newest first, as [`plan`] makes
/// them), not after `end`. One query for all days: ClickHouse takes about 0.1 s to analyse
/// a query of this size, far more than computing a day's rows, so the days differ by data
/// (`transform` of the user's day number), not by SQL.
fn select_all(o: &AppOptions, end: i64, days: &[AppDay]) -> Sql {
    let s = o.seed ^ 0x6170_7073;
    let h1 = |k: u32| sql!("cityHash64(toUInt64({}), u, toUInt32({}))", s, k);
    let h2 = |k: u32| sql!("cityHash64(toUInt64({}), u, v, toUInt32({}))", s, k);
    let h3 = |k: u32| sql!("cityHash64(toUInt64({}), u, v, p, toUInt32({}))", s, k);
    let n_ios = IOS_MODELS.len() as u64;
    let models: Vec<&str> = IOS_MODELS
        .iter()
        .chain(ANDROID_MODELS)
        .map(|m| m.1)
        .collect();
    let speeds: Vec<u64> = IOS_MODELS
        .iter()
        .chain(ANDROID_MODELS)
        .map(|m| m.2)
        .collect();
    let os_versions: Vec<&str> = IOS_VERSIONS
        .iter()
        .chain(ANDROID_VERSIONS)
        .map(|v| v.1)
        .collect();
    let sources: Vec<&str> = IOS_SOURCES
        .iter()
        .chain(ANDROID_SOURCES)
        .map(|v| v.1)
        .collect();
    let place_cum = cumulative(
        PLACES
            .iter()
            .enumerate()
            .map(|(r, _)| (10_000.0 / ((r + 1) as f64).powf(0.9)).round() as u64),
    );
    let place_total = place_cum.last().copied().unwrap_or(1);
    let regions: Vec<String> = PLACES
        .iter()
        .map(|p| places::region_value(p.0, p.1))
        .collect();
    let cities: Vec<String> = PLACES
        .iter()
        .map(|p| places::city_value(p.0, p.1, p.2))
        .collect();
    // Today (the first day) may be cut short; the other days have the same 24 hours.
    let today = days.first().map(|d| d.hour_cum.clone()).unwrap_or_default();
    let full = days
        .get(1)
        .map_or_else(|| today.clone(), |d| d.hour_cum.clone());
    let last_hour = today.len().saturating_sub(1);
    let today_last_secs = days.first().map_or(3600, |d| d.last_hour_secs);
    let (mi, li, vi) = (Sql::new("mi"), Sql::new("li"), Sql::new("vi"));
    // The version: 1 + how many of the day's cumulative shares the draw passes.
    let version = {
        let draw = sql!("{} % 1000", h1(9));
        let passes = (0..VERSIONS.len() - 1).map(|k| {
            sql!(
                "({} >= if(ios, {}, {}))",
                draw,
                per_day(days.iter().map(|d| d.versions[0][k])),
                per_day(days.iter().map(|d| d.versions[1][k]))
            )
        });
        sql!("1 + {}", Sql::join(passes, " + "))
    };
    let total_users: u64 = days.iter().map(|d| d.count).sum();
    // Users from number `total_users` on opened the push notification: today's users whose
    // first launch is in the last half hour.
    let push = Sql::new("u >= ").with(total_users);
    // Level 1: user-days.
    let l1 = [
        Sql::new("number AS u"),
        sql!(
            "toUInt64(if({}, 1, arrayFirstIndex(x -> x > u, {}))) AS di",
            push,
            num_array(days.iter().map(|d| d.first + d.count))
        ),
        sql!("{} AS dfirst", per_day(days.iter().map(|d| d.first))),
        sql!("{} AS dcount", per_day(days.iter().map(|d| d.count))),
        sql!(
            "{} AS dstart",
            per_day(days.iter().map(|d| d.start.max(0) as u64))
        ),
        Sql::new("least(intDiv((u - dfirst) * 1000000, greatest(dcount, 1)), 999999) AS hr"),
        sql!(
            "toUInt32(if(di = 1, arrayFirstIndex(x -> x > hr, {}), arrayFirstIndex(x -> x > hr, {})) - 1) AS hour",
            num_array(today),
            num_array(full)
        ),
        sql!(
            "toUInt32(if({}, {} + {} % 1800, dstart + hour * 3600 + {} % if(di = 1 AND hour = {}, {}, 3600))) AS t0",
            push,
            (end - 1800).max(0),
            h1(2),
            h1(2),
            last_hour,
            today_last_secs
        ),
        sql!("{} % 100 < 57 AS ios", h1(3)),
        sql!(
            "if(ios, {}, {} + {}) AS mi",
            weighted(&h1(4), IOS_MODELS.iter().map(|m| m.0)),
            n_ios,
            weighted(&h1(4), ANDROID_MODELS.iter().map(|m| m.0))
        ),
        sql!("{} AS device_model", pick(&mi, models.iter().copied())),
        sql!("{} AS speed", pick_num(&mi, speeds.iter().copied())),
        Sql::new("if(ios, 'iOS', 'Android') AS os"),
        sql!(
            "{} AS os_version",
            pick(
                &sql!(
                    "if(ios, {}, {} + {})",
                    weighted(&h1(5), IOS_VERSIONS.iter().map(|v| v.0)),
                    IOS_VERSIONS.len(),
                    weighted(&h1(5), ANDROID_VERSIONS.iter().map(|v| v.0))
                ),
                os_versions.iter().copied()
            )
        ),
        sql!(
            "{} AS install_source",
            pick(
                &sql!(
                    "if(ios, {}, {} + {})",
                    weighted(&h1(6), IOS_SOURCES.iter().map(|v| v.0)),
                    IOS_SOURCES.len(),
                    weighted(&h1(6), ANDROID_SOURCES.iter().map(|v| v.0))
                ),
                sources.iter().copied()
            )
        ),
        sql!(
            "arrayFirstIndex(x -> x > {} % {}, {}) AS li",
            h1(7),
            place_total,
            num_array(place_cum.iter().copied())
        ),
        sql!("{} AS country_code", pick(&li, PLACES.iter().map(|p| p.0))),
        // Stored as the collector stores them (`code|name`, `crate::places`).
        sql!("{} AS region", pick(&li, regions.iter().map(String::as_str))),
        sql!("{} AS city", pick(&li, cities.iter().map(String::as_str))),
        sql!(
            "toUInt32({}) AS asn",
            pick_num(&li, PLACES.iter().map(|p| u64::from(p.3)))
        ),
        sql!("{} AS isp", pick(&li, PLACES.iter().map(|p| p.4))),
        sql!(
            "if({} % 100 < 12, concat('en-', country_code), transform(country_code, {}, {}, 'en-US')) AS locale",
            h1(8),
            super::str_array(LOCALES.iter().map(|l| l.0)),
            super::str_array(LOCALES.iter().map(|l| l.1))
        ),
        sql!("{} AS vi", version),
        sql!("{} AS app_version", pick(&vi, VERSIONS.iter().map(|v| v.0))),
        sql!("{} AS app_build", pick(&vi, VERSIONS.iter().map(|v| v.1))),
        sql!(
            "toUInt32({}) AS ns",
            weighted(&h1(11), SESSIONS_PCT.iter().copied())
        ),
    ];
    // Level 2: sessions.
    let crash_pm = pick_num(&vi, VERSIONS.iter().map(|v| v.3));
    let l2 = [
        sql!(
            "toUInt32(t0 + arraySum(arrayMap(i -> 2400 + cityHash64(toUInt64({}), u, toUInt32(i), toUInt32(20)) % 12000, range(v)))) AS vs",
            s
        ),
        sql!(
            "sipHash128(concat('veil-demo-app:', toString(toUInt64({})), ':', toString(u), ':', toString(v))) AS session_id",
            s
        ),
        sql!(
            "toUInt32({}) AS nsc",
            weighted(&h2(1), SCREENS_PCT.iter().copied())
        ),
        sql!("toUInt32(45 + {} % 361) AS gap", h2(2)),
        sql!("{} AS lh", h2(3)),
        sql!(
            "toUInt32(round(if(ios, 480, 720) * speed / 100 * if(vi >= 4, 0.88, 1.0) * exp(0.35 * {}))) AS launch_ms",
            normal("lh")
        ),
        sql!("{} % 1000 < {} AS crashed", h2(4), crash_pm),
        sql!(
            "multiIf({0} % 1000 < 50, 1, {0} % 1000 < 65, 2, 0) AS ck",
            h2(5)
        ),
        sql!("{} % 3 AS cpick", h2(6)),
    ];
    // Level 3: events (0 app_started, 1 screen_view, 2 item_shared, 3 subscription_started).
    let l3 = [
        Sql::new("toUInt64(multiIf(p = 0, 0, p <= nsc, 1, ck + 1)) AS kind"),
        Sql::new("toUInt32(vs + p * gap) AS ts"),
        sql!("{} AS ph", h3(1)),
        sql!(
            "if(p = 1, '/home', {}) AS screen",
            pick(
                &weighted(&h3(2), SCREENS.iter().map(|x| x.0)),
                SCREENS.iter().map(|x| x.1)
            )
        ),
        sql!(
            "toUInt32(round(if(ios, 150, 175) * exp(0.5 * {}))) AS latency_ms",
            normal("ph")
        ),
    ];
    let l1_sql = sql!(
        "SELECT {} FROM numbers({})",
        Sql::join(l1, ", "),
        total_users + o.push_users
    );
    let l2_sql = sql!(
        "SELECT *, {} FROM (SELECT *, toUInt32(arrayJoin(range(ns))) AS v FROM ({}))",
        Sql::join(l2, ", "),
        l1_sql
    );
    let l3_sql = sql!(
        "SELECT *, {} FROM (SELECT *, toUInt32(arrayJoin(range(1 + nsc + (ck > 0)))) AS p FROM ({}))",
        Sql::join(l3, ", "),
        l2_sql
    );
    let site = lit(&o.site);
    let cols = [
        sql!("{} AS site", site),
        Sql::new("toDateTime(ts) AS timestamp"),
        Sql::new("transform(kind, [0, 1, 2, 3], ['app_started', 'screen_view', 'item_shared', 'subscription_started'], '') AS name"),
        sql!("{} AS hostname", site),
        Sql::new("if(kind = 1, screen, if(kind = 0, '/', '/item')) AS pathname"),
        Sql::new("'' AS referrer"),
        Sql::new("'' AS referrer_source"),
        Sql::new("'' AS utm_source"),
        Sql::new("'' AS utm_medium"),
        Sql::new("'' AS utm_campaign"),
        Sql::new("'' AS utm_content"),
        Sql::new("'' AS utm_term"),
        sql!(
            "sipHash128(concat('veil-demo-app:', toString(toUInt64({})), ':', toString(u), ':', toString(intDiv(ts, 86400)))) AS visitor_id",
            s
        ),
        Sql::new("session_id"),
        Sql::new("'' AS browser"),
        Sql::new("'' AS browser_version"),
        Sql::new("os"),
        Sql::new("os_version"),
        Sql::new("'app' AS device"),
        Sql::new("country_code"),
        Sql::new("multiIf(kind = 0, if(crashed, ['launch_ms', 'crash'], ['launch_ms']), kind = 1, ['latency_ms'], kind = 2, ['channel'], ['plan']) AS prop_keys"),
        Sql::new("multiIf(kind = 0, if(crashed, [toString(launch_ms), '1'], [toString(launch_ms)]), kind = 1, [toString(latency_ms)], kind = 2, [transform(cpick, [0, 1], ['messages', 'copy_link'], 'whatsapp')], [if(cpick = 0, 'yearly', 'monthly')]) AS prop_values"),
        Sql::new("toUInt32(0) AS engagement_ms"),
        Sql::new("toUInt8(0) AS scroll_depth"),
        Sql::new("'' AS screen_class"),
        Sql::new("'' AS processor_class"),
        Sql::new("locale"),
        Sql::new("app_version"),
        Sql::new("app_build"),
        Sql::new("if(ios, 'aptabase-swift@0.3.11', 'aptabase-kotlin@0.0.8') AS sdk_version"),
        Sql::new("'' AS engine"),
        Sql::new("toUInt8(0) AS is_debug"),
        Sql::new("'' AS source"),
        Sql::new("'Direct' AS channel"),
        Sql::new("region"),
        Sql::new("city"),
        Sql::new("asn"),
        Sql::new("isp"),
        Sql::new("device_model"),
        Sql::new("install_source"),
        Sql::new("toInt64(0) AS revenue_micros"),
        Sql::new("'' AS revenue_currency"),
        Sql::new("toUInt8(1) AS interactive"),
        Sql::new("'' AS bot"),
    ];
    sql!(
        "SELECT {} FROM ({}) WHERE ts <= {}",
        Sql::join(cols, ", "),
        l3_sql,
        end
    )
}

/// The `events` columns the app generator writes, in order.
const COLUMNS: &str = "site, timestamp, name, hostname, pathname, referrer, referrer_source, \
    utm_source, utm_medium, utm_campaign, utm_content, utm_term, visitor_id, session_id, browser, \
    browser_version, os, os_version, device, country_code, prop_keys, prop_values, engagement_ms, \
    scroll_depth, screen_class, processor_class, locale, app_version, app_build, sdk_version, \
    engine, is_debug, source, channel, region, city, asn, isp, device_model, install_source, \
    revenue_micros, revenue_currency, interactive, bot";

/// Writes the demo app's events for `o.site` into `cfg`'s `events` table (migrations must have
/// run).
pub async fn generate_app(cfg: &ClickHouseConfig, o: &AppOptions) -> Result<AppReport, Error> {
    if o.users_per_day == 0 {
        return Err(Error::Config("users per day must be at least 1".into()));
    }
    if o.days == 0 || o.days > 365 {
        return Err(Error::Config("days must be 1..=365".into()));
    }
    let started = Instant::now();
    let end = o.end.unwrap_or_else(now_secs);
    let client = cfg.client();
    let days = plan(o, end);
    let user_days = days.iter().map(|d| d.count).sum::<u64>() + o.push_users;
    // One INSERT for the whole range: ClickHouse splits it by day into its partitions.
    let q = sql!(
        "INSERT INTO events ({}) {}",
        COLUMNS,
        select_all(o, end, &days)
    );
    client
        .sql(&q)
        .with_setting("max_execution_time", "0")
        .execute()
        .await?;
    let rows: u64 = client
        .sql(&sql!(
            "SELECT count() FROM events WHERE site = {}",
            lit(&o.site)
        ))
        .fetch_one()
        .await?;
    Ok(AppReport {
        rows,
        user_days,
        seconds: started.elapsed().as_secs_f64(),
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reproducible rows of the app's shape, quickly, up to the end, on the test server.
    #[tokio::test]
    async fn writes_the_demo_app_reproducibly() {
        let end = 1_795_880_000;
        let mut o = AppOptions::new("app.example", 1000, 30);
        o.end = Some(end);
        let a = crate::testing::fresh_database("gen_app_a").await;
        let b = crate::testing::fresh_database("gen_app_b").await;
        let r = generate_app(&a, &o).await.unwrap();
        eprintln!("demo app: {r:?}");
        assert!((80_000..160_000).contains(&r.rows), "{r:?}");
        generate_app(&b, &o).await.unwrap();
        let digest = Sql::new(
            "SELECT count(), sum(cityHash64(timestamp, name, pathname, visitor_id, session_id, \
             os_version, device_model, app_version, locale, install_source, prop_values)), \
             toUInt32(max(timestamp)), uniqExact(app_version), countIf(device != 'app') FROM events",
        );
        let da: (u64, u64, u32, u64, u64) = a.client().sql(&digest).fetch_one().await.unwrap();
        let db: (u64, u64, u32, u64, u64) = b.client().sql(&digest).fetch_one().await.unwrap();
        assert_eq!(da, db, "same seed, same rows");
        assert_eq!(da.0, r.rows);
        assert!(
            i64::from(da.2) <= end && i64::from(da.2) > end - 60,
            "{da:?}"
        );
        assert_eq!((da.3, da.4), (5, 0), "{da:?}");
        // The push notification: dozens of people in the app in the last five minutes.
        let now: u64 = a
            .client()
            .sql(&sql!(
                "SELECT uniqExact(visitor_id) FROM events WHERE toUInt32(timestamp) > {}",
                end - 300
            ))
            .fetch_one()
            .await
            .unwrap();
        assert!(
            (20..200).contains(&now),
            "{now} users in the last 5 minutes"
        );
    }

    #[test]
    fn the_newest_release_rolls_out() {
        // Before 2.4.0 nobody has it; ten days after, most do; a few never update.
        let before = version_shares(12.0, 2.5, 0.93);
        assert_eq!(before[3] + before[4], 0.0);
        let now = version_shares(0.5, 2.5, 0.93);
        assert!(now[3] + now[4] > 0.8, "{now:?}");
        assert!(now[0] + now[1] + now[2] > 0.005, "{now:?}");
        assert!((now.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let android = version_shares(0.5, 4.0, 0.88);
        assert!(android[4] < now[4], "Android rolls out slower");
        assert_eq!(*permille_cum(&now).last().unwrap(), 1000);
    }

    #[test]
    fn days_end_at_the_end_and_follow_each_other() {
        // 2026-11-28 15:30 UTC.
        let end = 1_795_880_000 - (1_795_880_000 % 86_400) + 15 * 3600 + 1800;
        let days = plan(&AppOptions::new("app.example", 1000, 30), end);
        assert_eq!(days.len(), 30);
        assert_eq!(days[0].start, end - end % 86_400);
        assert_eq!(days[0].hour_cum.len(), 16);
        assert_eq!(days[0].last_hour_secs, 1800);
        assert_eq!(days[1].hour_cum.len(), 24);
        assert_eq!(*days[1].hour_cum.last().unwrap(), 1_000_000);
        assert!((850..=1_250).contains(&days[1].count), "{}", days[1].count);
        for w in days.windows(2) {
            assert_eq!(w[0].first + w[0].count, w[1].first);
        }
        // The evening is busier than the morning.
        let c = &days[1].hour_cum;
        assert!(10 * (c[19] - c[18]) > 14 * (c[7] - c[6]));
        assert_eq!(IOS_MODELS.iter().map(|m| m.0).sum::<u64>(), 100);
        assert_eq!(ANDROID_MODELS.iter().map(|m| m.0).sum::<u64>(), 100);
        for (code, ..) in PLACES {
            assert!(LOCALES.iter().any(|l| l.0 == *code), "no locale for {code}");
        }
    }
}
