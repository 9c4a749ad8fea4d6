//! Funnels against a real ClickHouse on the known dataset: visitors whose visit reached the
//! goals in order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use chrono::Utc;
use common::*;
use serde_json::{json, Value};
use veil_aggregator::reports;

#[tokio::test]
async fn a_funnel_counts_visitors_who_reach_its_goals_in_order() {
    let ch = veil_schemas::testing::fresh_database("stats_funnel").await;
    seed(&ch).await;
    let s = site();
    let f = reports::funnel(
        &ch.client(),
        &s,
        json!({"site_id": SITE, "funnel": "Buy", "date_range": ["2026-11-20", "2026-11-20"]})
            .to_string()
            .as_bytes(),
        Utc::now(),
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(f["steps"][0]["visitors"], 6.0, "{f}");
    assert_eq!(f["steps"][1]["visitors"], 5.0, "{f}");
    assert_eq!(f["steps"][1]["conversion_rate"], 83.3, "{f}");
    // Reversed order: nobody signed up before seeing pricing.
    let f = reports::funnel(
        &ch.client(),
        &s,
        json!({"site_id": SITE, "steps": ["Signup", "Pricing"], "date_range": ["2026-11-20", "2026-11-20"]}).to_string().as_bytes(),
        Utc::now(), Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(f["steps"][1]["visitors"], Value::Null, "{f}");
}
