//! Child-directed sites against a real ClickHouse: counts only, never visitors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::*;
use serde_json::json;
use veil_aggregator::site::SiteView;
use veil_aggregator::stats;

#[tokio::test]
async fn child_directed_sites_report_counts_only() {
    let ch = veil_schemas::testing::fresh_database("stats_child").await;
    let zero = "\0".to_string();
    let evs: Vec<Ev> = (0..7)
        .map(|_| ev(zero.clone(), "2026-11-20 10:00:00", "pageview", "/games"))
        .chain((0..2).map(|_| ev(zero.clone(), "2026-11-20 10:00:00", "pageview", "/rare")))
        .collect();
    insert(&ch, "kids.example", &evs).await;
    let mut s = SiteView::new("kids.example");
    s.child_directed = true;
    let d = q(&ch, &s, json!({"site_id": "kids.example", "metrics": ["pageviews"], "date_range": ["2026-11-20", "2026-11-20"], "dimensions": ["event:page"]})).await;
    assert_eq!(
        rows(&d),
        vec![(vec!["/games".to_string()], vec![json!(7)])],
        "{d}"
    );
    let e = stats::run(
        &ch.client(),
        &s,
        br#"{"site_id":"kids.example","metrics":["visitors"],"date_range":"day"}"#,
        now(),
        Default::default(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("child-directed"));
}
