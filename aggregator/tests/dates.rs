//! Plausible's Stats API v2 date windows and time rules against a real ClickHouse, on a fixed
//! clock (tests/common's `now`: 2026-11-28 12:00 UTC) and the known dataset (2026-11-19 and
//! -20) plus six visitors today: which days each window counts, in UTC and in a zone where
//! today starts earlier, the resolved `date_range` echoed, `time` and `time:week` buckets and
//! the default order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::*;
use serde_json::{json, Value};
use veil_aggregator::stats;

/// Six visitors on the clock's day, 2026-11-28 10:00 UTC.
async fn seed_today(ch: &veil_schemas::ClickHouseConfig) {
    let evs: Vec<Ev> = (0..6)
        .map(|i| ev(format!("T{i}"), "2026-11-28 10:00:00", "pageview", "/"))
        .collect();
    insert(ch, SITE, &evs).await;
}

fn visitors(range: Value) -> Value {
    json!({"site_id": SITE, "metrics": ["visitors"], "date_range": range})
}

fn total(doc: &Value) -> Value {
    doc["results"][0]["metrics"][0].clone()
}

/// `Nd` is the N whole days before today, `month` and `year` the whole calendar periods,
/// `day` today: counted on the data, with the resolved range echoed as Plausible does.
#[tokio::test]
async fn each_window_counts_the_days_plausible_counts() {
    let ch = veil_schemas::testing::fresh_database("dates_windows").await;
    seed(&ch).await;
    seed_today(&ch).await;
    let s = site();
    // 8d: 11-20 ..= 11-27: the 18 visitors of the 20th; today's 6 are not in it.
    let d = q(&ch, &s, visitors(json!("8d"))).await;
    assert_eq!(total(&d), json!(18), "{d}");
    assert_eq!(
        d["query"]["date_range"],
        json!(["2026-11-20T00:00:00+00:00", "2026-11-27T23:59:59+00:00"]),
        "{d}"
    );
    // 9d reaches the 19th (5 more).
    let d = q(&ch, &s, visitors(json!("9d"))).await;
    assert_eq!(total(&d), json!(23), "{d}");
    // day: today only.
    let d = q(&ch, &s, visitors(json!("day"))).await;
    assert_eq!(total(&d), json!(6), "{d}");
    assert_eq!(
        d["query"]["date_range"],
        json!(["2026-11-28T00:00:00+00:00", "2026-11-28T23:59:59+00:00"]),
        "{d}"
    );
    // month and year: the whole of November / 2026, today included.
    let d = q(&ch, &s, visitors(json!("month"))).await;
    assert_eq!(total(&d), json!(29), "{d}");
    assert_eq!(
        d["query"]["date_range"],
        json!(["2026-11-01T00:00:00+00:00", "2026-11-30T23:59:59+00:00"]),
        "{d}"
    );
    // Compared as Plausible compares it: the month's days so far (1st ..= 28th) with as many
    // days just before, and with the same days 365 days earlier.
    let mut b = visitors(json!("month"));
    b["include"] = json!({"comparisons": {"mode": "previous_period"}});
    let d = q(&ch, &s, b.clone()).await;
    assert_eq!(
        d["meta"]["comparison_date_range"],
        json!(["2026-10-04", "2026-10-31"]),
        "{d}"
    );
    b["include"] = json!({"comparisons": {"mode": "year_over_year"}});
    let d = q(&ch, &s, b.clone()).await;
    assert_eq!(
        d["meta"]["comparison_date_range"],
        json!(["2025-11-01", "2025-11-28"]),
        "{d}"
    );
    // match_day_of_week (Plausible's option): November 2026 starts on a Sunday; 2025-11-01 is
    // a Saturday, so the year-over-year period starts on the Sunday after, 2025-11-02. The
    // previous period (from Sunday 2026-10-04) already starts on a Sunday: unchanged.
    b["include"] = json!({"comparisons": {"mode": "year_over_year", "match_day_of_week": true}});
    let d = q(&ch, &s, b.clone()).await;
    assert_eq!(
        d["meta"]["comparison_date_range"],
        json!(["2025-11-02", "2025-11-29"]),
        "{d}"
    );
    assert_eq!(
        d["query"]["include"]["comparisons"], b["include"]["comparisons"],
        "echoed"
    );
    b["include"] = json!({"comparisons": {"mode": "previous_period", "match_day_of_week": true}});
    let d = q(&ch, &s, b.clone()).await;
    assert_eq!(
        d["meta"]["comparison_date_range"],
        json!(["2026-10-04", "2026-10-31"]),
        "{d}"
    );
    // custom: a range of its own; its numbers are that range's own answer.
    let mut b = visitors(json!(["2026-11-28", "2026-11-28"]));
    b["include"] =
        json!({"comparisons": {"mode": "custom", "date_range": ["2026-11-19", "2026-11-20"]}});
    let d = q(&ch, &s, b.clone()).await;
    assert_eq!(
        d["meta"]["comparison_date_range"],
        json!(["2026-11-19", "2026-11-20"]),
        "{d}"
    );
    let direct = q(&ch, &s, visitors(json!(["2026-11-19", "2026-11-20"]))).await;
    assert_eq!(
        d["results"][0]["comparison"]["metrics"][0],
        total(&direct),
        "{d}\n{direct}"
    );
    assert_eq!(total(&d), json!(6), "today's six: {d}");
    assert_eq!(
        d["query"]["include"]["comparisons"], b["include"]["comparisons"],
        "echoed"
    );
    // Options that do not fit their mode are refused with what is wrong.
    for (bad, says) in [
        (json!({"mode": "custom"}), "date_range"),
        (
            json!({"mode": "custom", "date_range": ["2026-11-20"]}),
            "two dates",
        ),
        (
            json!({"mode": "custom", "date_range": ["2026-11-20", "2026-11-19"]}),
            "after the last",
        ),
        (
            json!({"mode": "custom", "date_range": ["2026-11-xx", "2026-11-20"]}),
            "not a date",
        ),
        (
            json!({"mode": "previous_period", "date_range": ["2026-11-19", "2026-11-20"]}),
            "custom",
        ),
        (json!({"mode": "last_week"}), "unknown mode"),
    ] {
        let mut b = visitors(json!("7d"));
        b["include"] = json!({ "comparisons": bad });
        let e = stats::run(
            &ch.client(),
            &s,
            b.to_string().as_bytes(),
            now(),
            Default::default(),
        )
        .await
        .expect_err(&b.to_string());
        assert!(
            matches!(e, veil_aggregator::Error::BadRequest(_)) && e.to_string().contains(says),
            "{b}: {e}"
        );
    }
    let d = q(&ch, &s, visitors(json!("year"))).await;
    assert_eq!(total(&d), json!(29), "{d}");
    assert_eq!(
        d["query"]["date_range"],
        json!(["2026-01-01T00:00:00+00:00", "2026-12-31T23:59:59+00:00"]),
        "{d}"
    );
    // 6mo: May ..= October, none of the data.
    let d = q(&ch, &s, visitors(json!("6mo"))).await;
    assert_eq!(
        d["query"]["date_range"],
        json!(["2026-05-01T00:00:00+00:00", "2026-10-31T23:59:59+00:00"]),
        "{d}"
    );
    // Datetimes as given: the 20th from 11:00 to 14:00 UTC, both ends included: B0–B5 at
    // 12:00 and 14:00 (A at 10:00 and C at 15:00 are outside).
    let d = q(
        &ch,
        &s,
        visitors(json!([
            "2026-11-20T12:00:00+01:00",
            "2026-11-20T15:00:00+01:00"
        ])),
    )
    .await;
    assert_eq!(total(&d), json!(6), "{d}");
    assert_eq!(
        d["query"]["date_range"],
        json!(["2026-11-20T11:00:00+00:00", "2026-11-20T14:00:00+00:00"]),
        "{d}"
    );
}

/// In Auckland (UTC+13 in November) the clock's instant is already 2026-11-29: `8d` is
/// 11-21 ..= 11-28 there, which holds today's UTC visitors (their local evening of the 28th)
/// and the 20th's afternoon UTC, but not its morning (A0–A9 at 10:00 UTC, 23:00 on the 20th).
#[tokio::test]
async fn windows_are_local_days_of_the_sites_zone() {
    let ch = veil_schemas::testing::fresh_database("dates_zone").await;
    seed(&ch).await;
    seed_today(&ch).await;
    let mut s = site();
    s.timezone = "Pacific/Auckland".into();
    // B0–B5 (6), C0–C1 (2), T0–T5 (6).
    let d = q(&ch, &s, visitors(json!("8d"))).await;
    assert_eq!(total(&d), json!(14), "{d}");
    assert_eq!(
        d["query"]["date_range"],
        json!(["2026-11-21T00:00:00+13:00", "2026-11-28T23:59:59+13:00"]),
        "{d}"
    );
    // Local today (the 29th) has nobody yet.
    let d = q(&ch, &s, visitors(json!("day"))).await;
    assert_eq!(
        d["query"]["date_range"],
        json!(["2026-11-29T00:00:00+13:00", "2026-11-29T23:59:59+13:00"]),
        "{d}"
    );
    assert!(total(&d) == json!(0) || total(&d).is_null(), "{d}");
}

/// `time:week` buckets start no earlier than the range (the first is labelled with the
/// range's first day), `time` picks Plausible's bucket for the range's length, and the
/// default order is time ascending, then the first metric descending.
#[tokio::test]
async fn time_buckets_and_default_order() {
    let ch = veil_schemas::testing::fresh_database("dates_time").await;
    seed(&ch).await;
    seed_today(&ch).await;
    let s = site();
    // 2026-11-18 is a Wednesday: its week's bucket is labelled 2026-11-18, not the 16th.
    let d = q(
        &ch,
        &s,
        json!({"site_id": SITE, "metrics": ["visitors"], "date_range": ["2026-11-18", "2026-11-27"],
            "dimensions": ["time:week"], "include": {"time_labels": true}}),
    )
    .await;
    assert_eq!(
        rows(&d),
        vec![(vec!["2026-11-18".to_string()], vec![json!(23)])],
        "{d}"
    );
    assert_eq!(
        d["meta"]["time_labels"],
        json!(["2026-11-18", "2026-11-23"]),
        "{d}"
    );
    // 45 days (2026-10-15, a Thursday, ..= today): more than 40 days, so `time` is by week.
    let d = q(
        &ch,
        &s,
        json!({"site_id": SITE, "metrics": ["visitors"], "date_range": ["2026-10-15", "2026-11-28"],
            "dimensions": ["time"], "include": {"time_labels": true}}),
    )
    .await;
    assert_eq!(
        rows(&d),
        vec![
            (vec!["2026-11-16".to_string()], vec![json!(23)]),
            (vec!["2026-11-23".to_string()], vec![json!(6)]),
        ],
        "{d}"
    );
    let labels = d["meta"]["time_labels"].as_array().unwrap();
    assert_eq!(labels[0], "2026-10-15", "{d}");
    assert_eq!(labels[1], "2026-10-19", "{d}");
    assert_eq!(labels.len(), 7, "{d}");
    // Two days are by hour.
    let d = q(
        &ch,
        &s,
        json!({"site_id": SITE, "metrics": ["visitors"], "date_range": ["2026-11-19", "2026-11-20"],
            "dimensions": ["time"], "include": {"time_labels": true}}),
    )
    .await;
    assert_eq!(
        d["meta"]["time_labels"].as_array().unwrap().len(),
        48,
        "{d}"
    );
    assert_eq!(
        rows(&d)[0].0,
        vec!["2026-11-19 09:00:00".to_string()],
        "{d}"
    );
    // Default order: day ascending, then events descending (pageview's 30 before Signup's 5,
    // though "Signup" sorts first by name).
    let d = q(
        &ch,
        &s,
        json!({"site_id": SITE, "metrics": ["events"], "date_range": ["2026-11-19", "2026-11-20"],
            "dimensions": ["time:day", "event:name"]}),
    )
    .await;
    assert_eq!(
        rows(&d),
        vec![
            (
                vec!["2026-11-19".to_string(), "pageview".to_string()],
                vec![json!(5)]
            ),
            (
                vec!["2026-11-20".to_string(), "pageview".to_string()],
                vec![json!(30)]
            ),
            (
                vec!["2026-11-20".to_string(), "Signup".to_string()],
                vec![json!(5)]
            ),
        ],
        "{d}"
    );
    assert_eq!(
        d["query"]["order_by"],
        json!([
            ["time:day", "asc"],
            ["events", "desc"],
            ["event:name", "asc"]
        ]),
        "{d}"
    );
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Plausible's windows over HTTP on a fixed clock (2026-11-28 12:00 UTC), each with five
/// visitors at its first and last second and five just outside either end (the second
/// before its first, the second after its last): `7d`, `28d`, `30d` and `91d` are the N whole
/// days before today (today is outside), `12mo` the twelve whole calendar months before the
/// current one. The window counts exactly its two inside groups, and echoes its bounds.
#[tokio::test]
async fn each_window_counts_its_bounds_to_the_second_over_http() {
    // (window, first second inside, last second inside), UTC.
    let windows = [
        ("7d", "2026-11-21 00:00:00", "2026-11-27 23:59:59"),
        ("28d", "2026-10-31 00:00:00", "2026-11-27 23:59:59"),
        ("30d", "2026-10-29 00:00:00", "2026-11-27 23:59:59"),
        ("91d", "2026-08-29 00:00:00", "2026-11-27 23:59:59"),
        ("12mo", "2025-11-01 00:00:00", "2026-10-31 23:59:59"),
    ];
    let echoes = windows.map(|(_, a, b)| [a, b].map(|t| format!("{}+00:00", t.replace(' ', "T"))));
    bounds_over_http("dates_bounds", "UTC", &windows, &echoes).await;
}

/// The same in Auckland (UTC+13 from late September to early April), where the clock's
/// instant is already 2026-11-29 01:00: the windows are local days and months, their bounds
/// local midnights (given here in UTC).
#[tokio::test]
async fn each_window_counts_local_bounds_in_the_sites_zone() {
    let windows = [
        ("7d", "2026-11-21 11:00:00", "2026-11-28 10:59:59"),
        ("30d", "2026-10-29 11:00:00", "2026-11-28 10:59:59"),
        ("12mo", "2025-10-31 11:00:00", "2026-10-31 10:59:59"),
    ];
    let echoes = [
        ["2026-11-22T00:00:00+13:00", "2026-11-28T23:59:59+13:00"],
        ["2026-10-30T00:00:00+13:00", "2026-11-28T23:59:59+13:00"],
        ["2025-11-01T00:00:00+13:00", "2026-10-31T23:59:59+13:00"],
    ]
    .map(|p| p.map(str::to_string));
    bounds_over_http("dates_bounds_nz", "Pacific/Auckland", &windows, &echoes).await;
}

async fn bounds_over_http(
    label: &str,
    zone: &str,
    windows: &[(&str, &str, &str)],
    echoes: &[[String; 2]],
) {
    let ch = veil_schemas::testing::fresh_database(label).await;
    let at = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
    let mut evs = Vec::new();
    for (w, first, last) in windows {
        let second = chrono::Duration::seconds(1);
        for (pos, t) in [
            ("before", at(first) - second),
            ("first", at(first)),
            ("last", at(last)),
            ("after", at(last) + second),
        ] {
            let path = leak(format!("/{w}/{pos}"));
            let when = leak(t.format("%Y-%m-%d %H:%M:%S").to_string());
            for i in 0..5 {
                evs.push(ev(format!("{w}{pos}{i}"), when, "pageview", path));
            }
        }
    }
    insert(&ch, SITE, &evs).await;
    let agg = stats_aggregator(&ch).with_clock(veil_aggregator::ManualClock::new(now()));
    let call = |method: &str, path: &str, body: Value| {
        agg.handle(request(path, method, body.to_string(), "application/json"))
    };
    let r = call(
        "PUT",
        &format!("/api/v1/sites/{SITE}"),
        json!({"timezone": zone}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    for ((w, _, _), echo) in windows.iter().zip(echoes) {
        let body = json!({"site_id": SITE, "metrics": ["visitors"], "date_range": w,
            "dimensions": ["event:page"], "filters": [["contains", "event:page", [format!("/{w}/")]]]});
        let r = call("POST", "/api/v2/query", body).await.unwrap();
        assert_eq!(r.status(), 200, "{w}");
        let b = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        let d: Value = serde_json::from_slice(&b).unwrap();
        let mut got = rows(&d);
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                (vec![format!("/{w}/first")], vec![json!(5)]),
                (vec![format!("/{w}/last")], vec![json!(5)]),
            ],
            "{zone} {w}: {d}"
        );
        assert_eq!(d["query"]["date_range"], json!(echo), "{zone} {w}: {d}");
    }
}

/// `all` starts on the site's first day with events, but at most ten years (3660 days)
/// before today: an event eleven years old is not in it (README, MIGRATING-FROM-PLAUSIBLE).
#[tokio::test]
async fn all_reaches_back_ten_years_at_most() {
    let ch = veil_schemas::testing::fresh_database("dates_all_cap").await;
    seed(&ch).await;
    let s = site();
    let d = q(&ch, &s, visitors(json!("all"))).await;
    assert_eq!(total(&d), json!(23), "{d}");
    assert_eq!(
        d["query"]["date_range"][0], "2026-11-19T00:00:00+00:00",
        "{d}"
    );
    let old: Vec<Ev> = (0..5)
        .map(|i| ev(format!("O{i}"), "2015-11-20 10:00:00", "pageview", "/"))
        .collect();
    insert(&ch, SITE, &old).await;
    let d = q(&ch, &s, visitors(json!("all"))).await;
    assert_eq!(total(&d), json!(23), "{d}");
    assert_eq!(
        d["query"]["date_range"],
        json!(["2016-11-20T00:00:00+00:00", "2026-11-28T23:59:59+00:00"]),
        "{d}"
    );
}
