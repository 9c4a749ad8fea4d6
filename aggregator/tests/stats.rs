//! The Stats API against a real ClickHouse, on rows written by the real collector pipeline.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use http::Request;
use serde_json::{json, Value};
use veil_aggregator::{Aggregator, AggregatorConfig};
use veil_collector::pipeline::sink::clickhouse::ClickHouseSink;
use veil_collector::pipeline::sink::Sink;
use veil_collector::pipeline::{Client, Incoming, Outcome, Pipeline};
use veil_collector::sites::SiteRegistry;

const UAS: [&str; 3] = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
];

/// Writes `n_visitors` visitors to `/` (2 pageviews each) plus 2 visitors to `/rare`.
async fn seed(ch: &veil_schemas::ClickHouseConfig, n_visitors: u8) {
    let p = Pipeline::with_key(
        Arc::new(SiteRegistry::new(["shop.example".to_string()])),
        Default::default(),
        [9; 32],
    );
    let mut rows = Vec::new();
    let now = Utc::now();
    let mut push = |ip: String, ua: &str, path: &str, name: &str| {
        let ev = Incoming {
            domain: "shop.example".into(),
            name: name.into(),
            url: format!("https://shop.example{path}"),
            referrer: Some("https://duckduckgo.com/".into()),
            client: Client {
                ip: Some(ip.parse().unwrap()),
                user_agent: ua.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        match p.process(ev, now).unwrap() {
            Outcome::Store(r) => rows.push(*r),
            Outcome::Drop(r) => panic!("dropped: {r:?}"),
        }
    };
    for i in 0..n_visitors {
        let ua = UAS[i as usize % UAS.len()];
        push(format!("203.0.113.{i}"), ua, "/", "pageview");
        push(format!("203.0.113.{i}"), ua, "/", "pageview");
    }
    push("198.51.100.1".into(), UAS[0], "/rare", "pageview");
    push("198.51.100.2".into(), UAS[0], "/rare", "pageview");
    push("198.51.100.2".into(), UAS[0], "/rare", "signup");
    let mut sink = ClickHouseSink::new(ch).unwrap();
    tokio::task::spawn_blocking(move || sink.write(&rows).unwrap())
        .await
        .unwrap();
}

async fn ask(a: &Aggregator, q: Value) -> (u16, Value) {
    let req = Request::builder()
        .method("POST")
        .uri("/api/v2/query")
        .body(Bytes::from(q.to_string()))
        .unwrap();
    let r = a.handle(req).await.unwrap();
    let status = r.status().as_u16();
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn reports_totals_breakdowns_and_folds_small_rows() {
    let ch = veil_schemas::testing::fresh_database("stats_fold").await;
    seed(&ch, 12).await;
    let a = Aggregator::new(
        AggregatorConfig {
            sites: vec!["shop.example".into()],
            api_token: None,
            min_visitors: 5,
            ..Default::default()
        },
        ch,
    );

    let (s, v) = ask(&a, json!({"site_id": "shop.example", "metrics": ["visitors", "visits", "pageviews", "events"], "date_range": "day"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["metrics"], json!([14, 14, 26, 27]));

    // `/rare` has 2 visitors < k=5: folded away (the fold itself is under k, so not shown).
    let (_, v) = ask(&a, json!({"site_id": "shop.example", "metrics": ["visitors", "pageviews"], "date_range": "7d", "dimensions": ["event:page"]})).await;
    assert_eq!(
        v["results"],
        json!([{"dimensions": ["/"], "metrics": [12, 24]}]),
        "{v}"
    );
    assert_eq!(v["meta"]["folded_rows"], 1);

    let (_, v) = ask(&a, json!({"site_id": "shop.example", "metrics": ["visitors"], "date_range": "day", "dimensions": ["visit:browser"]})).await;
    let browsers: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["dimensions"][0].as_str().unwrap())
        .collect();
    // Chrome: 4 visitors on / and 2 on /rare. Firefox and Safari have 4 each (< k): folded
    // into one row of 8, which may be shown because it reaches k.
    assert_eq!(browsers, vec!["Chrome", "(other: 2 rows under k=5)"], "{v}");
    assert_eq!(v["results"][0]["metrics"][0], 6);
    assert_eq!(v["results"][1]["metrics"][0], 8);

    let (_, v) = ask(&a, json!({"site_id": "shop.example", "metrics": ["visitors"], "date_range": "day", "dimensions": ["visit:source"]})).await;
    assert_eq!(v["results"][0]["dimensions"][0], "DuckDuckGo");
    let (_, v) = ask(&a, json!({"site_id": "shop.example", "metrics": ["visitors", "visits"], "date_range": "day", "dimensions": ["visit:channel"]})).await;
    assert_eq!(v["results"][0]["dimensions"][0], "Organic Search", "{v}");

    let (_, v) = ask(&a, json!({"site_id": "shop.example", "metrics": ["visitors"], "date_range": "day", "dimensions": ["time:day"]})).await;
    assert_eq!(
        v["results"][0]["dimensions"][0],
        Utc::now().date_naive().format("%Y-%m-%d").to_string()
    );

    // A different period: nothing.
    let (_, v) = ask(&a, json!({"site_id": "shop.example", "metrics": ["visitors"], "date_range": ["2020-01-01", "2020-01-31"]})).await;
    assert_eq!(v["results"][0]["metrics"][0], 0);
}

#[tokio::test]
async fn small_sites_are_suppressed_and_errors_are_named() {
    let ch = veil_schemas::testing::fresh_database("stats_small").await;
    seed(&ch, 2).await;
    let a = Aggregator::new(
        AggregatorConfig {
            sites: vec!["shop.example".into()],
            api_token: None,
            min_visitors: 5,
            ..Default::default()
        },
        ch,
    );
    let (_, v) = ask(
        &a,
        json!({"site_id": "shop.example", "metrics": ["visitors"], "date_range": "day"}),
    )
    .await;
    assert_eq!(
        v["results"][0]["metrics"][0],
        Value::Null,
        "4 visitors < k must not be published: {v}"
    );
    let (s, v) = ask(
        &a,
        json!({"site_id": "other.example", "metrics": ["visitors"], "date_range": "day"}),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str().unwrap().contains("other.example")),
        (404, true)
    );
    let (s, v) = ask(&a, json!({"site_id": "shop.example", "metrics": ["visitors"], "date_range": "day", "dimensions": ["event:page'; DROP TABLE events; --"]})).await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("dimensions"));
}

/// Visits come from the stored visitor hashes and times (30-minute rule), not from any
/// collector's memory: one visitor whose hits went to two collectors (different session ids)
/// with a 10-minute gap is one visit; a 45-minute gap starts a second one.
#[tokio::test]
async fn visits_are_derived_from_hashes_and_times_across_collectors() {
    use veil_collector::pipeline::EventRow;
    let ch = veil_schemas::testing::fresh_database("stats_visits").await;
    let t0 = (Utc::now() - chrono::Duration::hours(2)).timestamp() as u32;
    let row = |visitor: u8, at: u32, session: u8, path: &str| EventRow {
        site: "shop.example".into(),
        timestamp: at,
        name: "pageview".into(),
        pathname: path.into(),
        visitor_id: [visitor; 16],
        session_id: [session; 16],
        ..Default::default()
    };
    let rows = vec![
        row(1, t0, 10, "/a"),
        row(1, t0 + 600, 20, "/b"), // another collector, 10 min later: same visit
        row(1, t0 + 3300, 20, "/c"), // 45 min after the last: a new visit
        row(2, t0 + 60, 30, "/a"),
        // A bot kept flagged by its site: never in reports.
        EventRow {
            bot: "bot_crawler".into(),
            ..row(3, t0 + 90, 40, "/a")
        },
    ];
    let mut sink = ClickHouseSink::new(&ch).unwrap();
    tokio::task::spawn_blocking(move || sink.write(&rows).unwrap())
        .await
        .unwrap();
    let a = Aggregator::new(
        AggregatorConfig {
            sites: vec!["shop.example".into()],
            min_visitors: 1,
            ..Default::default()
        },
        ch,
    );
    let (s, v) = ask(&a, json!({"site_id": "shop.example", "metrics": ["visitors", "visits", "pageviews"], "date_range": "7d"})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["metrics"], json!([2, 3, 4]), "{v}");
    let (_, v) = ask(&a, json!({"site_id": "shop.example", "metrics": ["visits"], "date_range": "7d", "dimensions": ["event:page"]})).await;
    assert_eq!(
        v["results"][0],
        json!({"dimensions": ["/a"], "metrics": [2]}),
        "{v}"
    );
}

/// Every dimension the API accepts can be asked for together with `visits` (the derived source
/// carries every dimension column), and alone.
#[tokio::test]
async fn every_dimension_works_with_and_without_visits() {
    let ch = veil_schemas::testing::fresh_database("stats_dims").await;
    seed(&ch, 6).await;
    let a = Aggregator::new(
        AggregatorConfig {
            sites: vec!["shop.example".into()],
            min_visitors: 1,
            ..Default::default()
        },
        ch,
    );
    for (dim, _) in veil_aggregator::query::DIMENSIONS {
        for metrics in [json!(["visitors", "visits"]), json!(["pageviews"])] {
            let (s, v) = ask(&a, json!({"site_id": "shop.example", "metrics": metrics, "date_range": "day", "dimensions": [dim]})).await;
            assert_eq!(s, 200, "{dim} {metrics}: {v}");
            assert!(!v["results"].as_array().unwrap().is_empty(), "{dim}: {v}");
        }
    }
}
