//! Plausible's vocabularies for dimension values (issue 17, point 2), against a real
//! ClickHouse: rows stored in the collector's words (woothee's `desktop`, `Mac OSX`,
//! `Windows 10` with `NT 10.0`, `Linux`, `Edge`; empty UTM tags and referrers) answer with
//! Plausible's (`Desktop`, `Mac`, `Windows` `10`, `GNU/Linux`, `Microsoft Edge`, `(not set)`,
//! `Direct / None`, `United Kingdom`); filters copied from Plausible's Stats API docs select
//! them; and the rollup job's builds answer exactly as raw events (exact mode).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use chrono::NaiveDate;
use common::{base, q, rows, site};
use serde_json::{json, Value};
use veil_aggregator::{db, rollup};
use veil_schemas::sql;
use veil_schemas::sql::{lit, Sql};
use veil_schemas::ClickHouseConfig;

/// A group of visitors stored with the same facts, each with one pageview of `/` on
/// 2026-11-20 (groups of at least 5: every row passes k-anonymity).
struct Group {
    prefix: &'static str,
    n: usize,
    device: &'static str,
    os: &'static str,
    os_version: &'static str,
    browser: &'static str,
    browser_version: &'static str,
    country: &'static str,
    region: &'static str,
    city: &'static str,
    utm_source: &'static str,
    referrer: &'static str,
}

/// The dataset, in the words the collector stored before and stores now:
/// - W: 5 × desktop, `Windows 10` (woothee's version `NT 10.0`), `Edge` 124, GB;
/// - E: 5 × desktop, `Windows 11` (Client Hints: no stored version), `Chrome` 124, GB;
/// - M: 5 × desktop, `Mac OSX` 10.15, `Chrome` 120, US, from a newsletter (utm_source) with a
///   referrer;
/// - L: 6 × desktop, `Linux`, `Firefox` 125, DE, region `DE-BY` (a MaxMind code stored alone,
///   as before names were kept), city `2867714|Munich`;
/// - P: 7 × mobile, `iPhone` 17.1, `Safari` 17, US, region `California` by name (stored
///   before codes), no city.
///
/// Places as the collector stores them now (`code|name`, `veil_schemas::places`): W in
/// `GB-ENG|England` / `2643743|London`, M in `US-CA|California` / `5391959|San Francisco`; E
/// by name only (`England` / `London`), as rows stored before codes.
const GROUPS: &[Group] = &[
    Group {
        prefix: "W",
        n: 5,
        device: "desktop",
        os: "Windows 10",
        os_version: "NT 10.0",
        browser: "Edge",
        browser_version: "124",
        country: "GB",
        region: "GB-ENG|England",
        city: "2643743|London",
        utm_source: "",
        referrer: "",
    },
    Group {
        prefix: "E",
        n: 5,
        device: "desktop",
        os: "Windows 11",
        os_version: "",
        browser: "Chrome",
        browser_version: "124",
        country: "GB",
        region: "England",
        city: "London",
        utm_source: "",
        referrer: "",
    },
    Group {
        prefix: "M",
        n: 5,
        device: "desktop",
        os: "Mac OSX",
        os_version: "10.15",
        browser: "Chrome",
        browser_version: "120",
        country: "US",
        region: "US-CA|California",
        city: "5391959|San Francisco",
        utm_source: "newsletter",
        referrer: "news.example/issue-9",
    },
    Group {
        prefix: "L",
        n: 6,
        device: "desktop",
        os: "Linux",
        os_version: "",
        browser: "Firefox",
        browser_version: "125",
        country: "DE",
        region: "DE-BY",
        city: "2867714|Munich",
        utm_source: "",
        referrer: "",
    },
    Group {
        prefix: "P",
        n: 7,
        device: "mobile",
        os: "iPhone",
        os_version: "17.1",
        browser: "Safari",
        browser_version: "17",
        country: "US",
        region: "California",
        city: "",
        utm_source: "",
        referrer: "",
    },
];

async fn seed(ch: &ClickHouseConfig) {
    let mut values = Vec::new();
    for g in GROUPS {
        for i in 0..g.n {
            let visitor = format!("{}{i}", g.prefix);
            values.push(sql!(
                "({}, toDateTime('2026-11-20 10:00:00', 'UTC'), 'pageview', '/', 'shop.example', \
                 toFixedString({}, 16), {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                lit(common::SITE),
                lit(&visitor),
                lit(if g.referrer.is_empty() { "" } else { "News" }),
                lit(if g.referrer.is_empty() {
                    "Direct"
                } else {
                    "Referral"
                }),
                lit(g.referrer),
                lit(g.utm_source),
                lit(g.device),
                lit(g.os),
                lit(g.os_version),
                lit(g.browser),
                lit(g.browser_version),
                lit(g.country),
                lit(g.region),
                lit(g.city)
            ));
        }
    }
    let insert = sql!(
        "INSERT INTO events (site, timestamp, name, pathname, hostname, visitor_id, source, \
         channel, referrer, utm_source, device, os, os_version, browser, browser_version, \
         country_code, region, city) VALUES {}",
        Sql::join(values, ", ")
    );
    db::exec(&ch.client(), &insert).await.unwrap();
}

/// `(dimension value, visitors)` of a one-dimension breakdown, sorted by value.
fn breakdown(doc: &Value) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = rows(doc)
        .into_iter()
        .map(|(d, m)| (d[0].clone(), m[0].as_i64().unwrap_or(-1)))
        .collect();
    out.sort();
    out
}

fn pairs(v: &[(&str, i64)]) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = v.iter().map(|(s, n)| (s.to_string(), *n)).collect();
    out.sort();
    out
}

/// Asks `body` from rollups where they can answer and from raw events, checks both agree,
/// and returns the first.
async fn ask(ch: &ClickHouseConfig, body: Value) -> Value {
    let s = site();
    let mut raw = body.clone();
    raw["include"] = json!({"rollups": false});
    let (r, d) = (q(ch, &s, base(body)).await, q(ch, &s, base(raw)).await);
    assert_ne!(d["meta"]["source"], "visits_daily", "{d}");
    assert_eq!(r["results"], d["results"], "rollups {r}\nraw {d}");
    r
}

/// Visitors under filter `f` (one condition, as in Plausible's docs).
async fn visitors_where(ch: &ClickHouseConfig, f: Value) -> i64 {
    let d = ask(ch, json!({"metrics": ["visitors"], "filters": [f]})).await;
    d["results"][0]["metrics"][0].as_i64().unwrap_or(-1)
}

/// Every vocabulary: breakdowns in Plausible's words, filters copied from its docs, old words
/// no longer selecting anything.
async fn check(ch: &ClickHouseConfig) {
    let by = |dim: &'static str| {
        let ch = ch.clone();
        async move { breakdown(&ask(&ch, json!({"metrics": ["visitors"], "dimensions": [dim]})).await) }
    };
    assert_eq!(
        by("visit:device").await,
        pairs(&[("Desktop", 21), ("Mobile", 7)])
    );
    assert_eq!(
        by("visit:os").await,
        pairs(&[("Windows", 10), ("Mac", 5), ("GNU/Linux", 6), ("iOS", 7)])
    );
    assert_eq!(
        by("visit:os_version").await,
        pairs(&[
            ("10", 5),
            ("11", 5),
            ("10.15", 5),
            ("(not set)", 6),
            ("17.1", 7)
        ])
    );
    assert_eq!(
        by("visit:browser").await,
        pairs(&[
            ("Microsoft Edge", 5),
            ("Chrome", 10),
            ("Firefox", 6),
            ("Safari", 7)
        ])
    );
    assert_eq!(
        by("visit:country_name").await,
        pairs(&[
            ("United Kingdom", 10),
            ("United States", 12),
            ("Germany", 6)
        ])
    );
    // Places: the code or id before the `|`, the name after it; rows stored by name alone
    // answer by name in both.
    assert_eq!(
        by("visit:region").await,
        pairs(&[
            ("GB-ENG", 5),
            ("England", 5),
            ("US-CA", 5),
            ("DE-BY", 6),
            ("California", 7)
        ])
    );
    assert_eq!(
        by("visit:region_name").await,
        pairs(&[("England", 10), ("California", 12), ("DE-BY", 6)])
    );
    assert_eq!(
        by("visit:city").await,
        pairs(&[
            ("2643743", 5),
            ("London", 5),
            ("5391959", 5),
            ("2867714", 6),
            ("0", 7)
        ])
    );
    // Plausible answers a city as its GeoNames id, a number (0: no city); a city stored by
    // name alone (no id known) stays its name.
    let d = ask(
        ch,
        json!({"metrics": ["visitors"], "dimensions": ["visit:city"]}),
    )
    .await;
    let cities: Vec<&Value> = d["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["dimensions"][0])
        .collect();
    for want in [json!(2867714), json!(2643743), json!(0), json!("London")] {
        assert!(cities.contains(&&want), "{want} in {d}");
    }
    assert_eq!(
        by("visit:city_name").await,
        pairs(&[("London", 10), ("San Francisco", 5), ("Munich", 6), ("", 7)])
    );
    assert_eq!(
        by("visit:utm_source").await,
        pairs(&[("(not set)", 23), ("newsletter", 5)])
    );
    assert_eq!(
        by("visit:referrer").await,
        pairs(&[("Direct / None", 23), ("news.example/issue-9", 5)])
    );

    // Filters as Plausible's docs write them.
    assert_eq!(
        visitors_where(ch, json!(["is", "visit:device", ["Mobile"]])).await,
        7
    );
    assert_eq!(
        visitors_where(ch, json!(["is", "visit:device", ["Desktop"]])).await,
        21
    );
    assert_eq!(
        visitors_where(ch, json!(["is", "visit:os", ["GNU/Linux"]])).await,
        6
    );
    assert_eq!(
        visitors_where(ch, json!(["is", "visit:os", ["Mac"]])).await,
        5
    );
    assert_eq!(
        visitors_where(ch, json!(["is", "visit:os", ["Windows"]])).await,
        10
    );
    assert_eq!(
        visitors_where(ch, json!(["is", "visit:browser", ["Microsoft Edge"]])).await,
        5
    );
    assert_eq!(
        visitors_where(ch, json!(["is", "visit:country_name", ["United Kingdom"]])).await,
        10
    );
    assert_eq!(
        visitors_where(ch, json!(["is", "visit:region", ["DE-BY"]])).await,
        6
    );
    assert_eq!(
        visitors_where(ch, json!(["is", "visit:region", ["GB-ENG", "US-CA"]])).await,
        10
    );
    assert_eq!(
        visitors_where(ch, json!(["is", "visit:region_name", ["England"]])).await,
        10
    );
    // Plausible's docs filter cities by GeoNames id, as a number.
    assert_eq!(
        visitors_where(ch, json!(["is", "visit:city", [2867714]])).await,
        6
    );
    assert_eq!(
        visitors_where(ch, json!(["is", "visit:city", [2643743, 5391959]])).await,
        10
    );
    assert_eq!(
        visitors_where(ch, json!(["is", "visit:city_name", ["London"]])).await,
        10
    );
    assert_eq!(
        visitors_where(ch, json!(["contains", "visit:city_name", ["Francisco"]])).await,
        5
    );
    assert_eq!(
        visitors_where(ch, json!(["matches", "visit:region", ["^US-"]])).await,
        5
    );
    assert_eq!(
        visitors_where(ch, json!(["is", "visit:utm_source", ["(not set)"]])).await,
        23
    );
    assert_eq!(
        visitors_where(ch, json!(["contains", "visit:browser", ["Edge"]])).await,
        5
    );
    assert_eq!(
        visitors_where(ch, json!(["matches", "visit:os", ["^GNU"]])).await,
        6
    );
    // Windows 10 and 11, as Plausible's version drill-down asks.
    let d = ask(
        ch,
        json!({"metrics": ["visitors"], "dimensions": ["visit:os_version"],
               "filters": [["is", "visit:os", ["Windows"]]]}),
    )
    .await;
    assert_eq!(breakdown(&d), pairs(&[("10", 5), ("11", 5)]));
    assert_eq!(
        visitors_where(ch, json!(["is", "visit:os_version", ["11"]])).await,
        5
    );
    // A filter means what the answer shows: the stored words no longer select rows (no
    // visitors: a total under k is withheld as `null`).
    for f in [
        json!(["is", "visit:os", ["Linux"]]),
        json!(["is", "visit:device", ["desktop"]]),
    ] {
        let d = ask(ch, json!({"metrics": ["visitors"], "filters": [f]})).await;
        let v = &d["results"][0]["metrics"][0];
        assert!(v.is_null() || v == &json!(0), "{f}: {d}");
    }
}

#[tokio::test]
async fn stored_words_answer_in_plausibles_vocabulary_from_raw_events_and_rollups() {
    let ch = veil_schemas::testing::fresh_database("vocabularies").await;
    seed(&ch).await;
    // Before any build: every answer comes from raw events (visit rows derived from them).
    check(&ch).await;
    // The rollup job builds the day: the same answers from `visits_daily` (its filtered
    // rows where one stored value answers the filter) and from built visit rows.
    let today = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
    rollup::run_until(&ch, today, 30).await.unwrap();
    let s = site();
    let src = |b: Value| {
        let ch = ch.clone();
        let s = s.clone();
        async move { q(&ch, &s, base(b)).await["meta"]["source"].clone() }
    };
    assert_eq!(
        src(json!({"metrics": ["visitors"], "dimensions": ["visit:device"]})).await,
        "visits_daily"
    );
    // A place code: the filtered rows of every stored value with that code (`DE-BY` stored
    // alone; `2867714|Munich` with its name), and `check` below compares them with raw events.
    for f in [
        json!(["is", "visit:region", ["DE-BY"]]),
        json!(["is", "visit:city", [2867714]]),
        json!(["is", "visit:region", ["GB-ENG"]]),
    ] {
        assert_eq!(
            src(json!({"metrics": ["visitors"], "dimensions": ["visit:source"], "filters": [f]}))
                .await,
            "visits_daily",
            "{f}"
        );
    }
    // `Mobile` is one stored word (`mobile`): the filtered rows answer.
    assert_eq!(
        src(json!({"metrics": ["visitors"], "filters": [["is", "visit:device", ["Mobile"]]]}))
            .await,
        "visits_daily"
    );
    assert_eq!(
        src(json!({"metrics": ["visitors"], "filters": [["is", "visit:browser", ["Microsoft Edge"]]]}))
            .await,
        "visits_daily"
    );
    // `Windows` is one word for several stored ones: visit rows answer.
    assert_eq!(
        src(json!({"metrics": ["visitors"], "filters": [["is", "visit:os", ["Windows"]]]})).await,
        "visits"
    );
    check(&ch).await;
}
