//! The realtime report against a real ClickHouse: visitors of the last minutes from raw
//! events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use chrono::Utc;
use common::*;
use serde_json::json;
use veil_aggregator::{reports, stats};

#[tokio::test]
async fn realtime_counts_the_last_minutes_of_raw_events() {
    let ch = veil_schemas::testing::fresh_database("stats_realtime").await;
    seed(&ch).await;
    let s = site();
    // Realtime: 5 visitors right now, 1 more a while ago.
    let now = Utc::now().naive_utc();
    let at = |m: i64| -> &'static str {
        Box::leak(
            (now - chrono::Duration::minutes(m))
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
                .into_boxed_str(),
        )
    };
    let mut evs: Vec<Ev> = (0..5)
        .map(|i| ev(format!("R{i}"), at(1), "pageview", "/live"))
        .collect();
    evs.push(ev("R9".into(), at(20), "pageview", "/live"));
    insert(&ch, SITE, &evs).await;
    let day = stats::run(
        &ch.client(),
        &s,
        json!({"site_id": SITE, "metrics": ["visitors"], "date_range": "24h"})
            .to_string()
            .as_bytes(),
        Utc::now(),
        Default::default(),
    )
    .await
    .unwrap()
    .1;
    assert_eq!(day["results"][0]["metrics"], json!([6]), "{day}");
    let rt = reports::realtime(&ch.client(), &s, Utc::now(), Default::default())
        .await
        .unwrap();
    assert_eq!(rt["visitors_5m"], 5, "{rt}");
    assert_eq!(rt["pageviews_30m"], 6, "{rt}");
    assert_eq!(
        rt["top_pages"][0],
        json!({"page": "/live", "visitors": 6}),
        "{rt}"
    );
}

/// `t` as the `events` fixture writes instants (UTC).
fn at_text(t: chrono::NaiveDateTime) -> &'static str {
    Box::leak(t.format("%Y-%m-%d %H:%M:%S").to_string().into_boxed_str())
}

#[tokio::test]
async fn realtime_by_minute_lists_the_thirty_whole_minutes_in_the_sites_zone() {
    let ch = veil_schemas::testing::fresh_database("stats_realtime_minutes").await;
    // One instant for the events and the questions: nothing moves between them.
    let now = Utc::now();
    let n = now.naive_utc() - chrono::Duration::seconds(now.timestamp().rem_euclid(60));
    let m = |mins: i64, secs: i64| {
        at_text(n - chrono::Duration::minutes(mins) + chrono::Duration::seconds(secs))
    };
    let evs = vec![
        // The last whole minute: one visitor.
        ev("A".into(), m(1, 10), "pageview", "/a"),
        // Three minutes back: two visitors, three pageviews.
        ev("B".into(), m(3, 5), "pageview", "/b"),
        ev("B".into(), m(3, 40), "pageview", "/c"),
        ev("C".into(), m(3, 20), "pageview", "/b"),
        // Twelve minutes back: one.
        ev("D".into(), m(12, 30), "pageview", "/d"),
        // Outside: the minute under way, and 40 minutes back.
        ev("E".into(), m(0, 0), "pageview", "/now"),
        ev("F".into(), m(40, 0), "pageview", "/old"),
    ];
    insert(&ch, SITE, &evs).await;
    // Exact numbers (k = 1), in a zone half an hour off UTC.
    let mut s = site();
    s.min_visitors = 1;
    s.timezone = "Asia/Kolkata".into();
    let ask = |s: &veil_aggregator::site::SiteView, body: serde_json::Value| {
        let client = ch.client();
        let s = s.clone();
        async move {
            stats::run(
                &client,
                &s,
                body.to_string().as_bytes(),
                now,
                Default::default(),
            )
            .await
            .map(|(_, d)| d)
        }
    };
    let by_minute = json!({"site_id": SITE, "metrics": ["visitors", "pageviews"], "date_range": "realtime",
        "dimensions": ["time:minute"], "include": {"time_labels": true}});
    let d = ask(&s, by_minute.clone()).await.unwrap();
    let tz: chrono_tz::Tz = "Asia/Kolkata".parse().unwrap();
    let label = |mins: i64| {
        (n - chrono::Duration::minutes(mins))
            .and_utc()
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:00")
            .to_string()
    };
    let labels: Vec<String> = (1..=30).rev().map(label).collect();
    assert_eq!(d["meta"]["time_labels"], json!(labels), "{d}");
    assert_eq!(
        d["results"],
        json!([
            {"dimensions": [label(12)], "metrics": [1, 1]},
            {"dimensions": [label(3)], "metrics": [2, 3]},
            {"dimensions": [label(1)], "metrics": [1, 1]},
        ]),
        "{d}"
    );
    // The usual panels over the same 30 minutes.
    let pages = ask(&s, json!({"site_id": SITE, "metrics": ["visitors"], "date_range": "realtime", "dimensions": ["event:page"]}))
        .await
        .unwrap();
    assert_eq!(
        rows(&pages),
        vec![
            (vec!["/b".to_string()], vec![json!(2)]),
            (vec!["/a".to_string()], vec![json!(1)]),
            (vec!["/c".to_string()], vec![json!(1)]),
            (vec!["/d".to_string()], vec![json!(1)]),
        ],
        "{pages}"
    );
    // Current visitors: the 5 whole minutes before this one (A, B, C).
    let cur = reports::current_visitors(&ch.client(), &s, now, Default::default())
        .await
        .unwrap();
    assert_eq!(cur["visitors_5m"], 3, "{cur}");
    assert_eq!(cur["privacy"][0]["mode"], "exact", "{cur}");

    // With k = 5 a minute of one or two visitors is hidden (null), and a total of nobody is 0,
    // not hidden: it describes no one.
    s.min_visitors = 5;
    let d = ask(&s, by_minute).await.unwrap();
    assert!(
        d["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["metrics"] == json!([null, null])),
        "{d}"
    );
    let cur = reports::current_visitors(&ch.client(), &s, now, Default::default())
        .await
        .unwrap();
    assert_eq!(cur["visitors_5m"], serde_json::Value::Null, "{cur}");
    let later = now + chrono::Duration::hours(2);
    let cur = reports::current_visitors(&ch.client(), &s, later, Default::default())
        .await
        .unwrap();
    assert_eq!(cur["visitors_5m"], 0, "{cur}");

    // Minutes are for realtime only.
    let e = ask(&s, json!({"site_id": SITE, "metrics": ["visitors"], "date_range": "7d", "dimensions": ["time:minute"]}))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`time:minute` is only available with `date_range: \"realtime\"`"),
        "{e}"
    );
}
