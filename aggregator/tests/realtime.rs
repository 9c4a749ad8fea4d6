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
