//! Child-directed sites against a real ClickHouse: counts only, never visitors — in reports and
//! in their e-mail digests' questions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::*;
use serde_json::json;
use veil_aggregator::digest::{self, Period};
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

#[tokio::test]
async fn a_child_directed_sites_digest_asks_counts_only() {
    let ch = veil_schemas::testing::fresh_database("stats_child_digest").await;
    let zero = "\0".to_string();
    // The week of Monday 2026-11-16: 7 pageviews of /games and 2 of /rare on the 17th; the
    // week before: 6 of /games on the 10th.
    let evs: Vec<Ev> = (0..7)
        .map(|_| ev(zero.clone(), "2026-11-17 10:00:00", "pageview", "/games"))
        .chain((0..2).map(|_| ev(zero.clone(), "2026-11-18 10:00:00", "pageview", "/rare")))
        .chain((0..6).map(|_| ev(zero.clone(), "2026-11-10 10:00:00", "pageview", "/games")))
        .collect();
    insert(&ch, "kids.example", &evs).await;
    let mut s = SiteView::new("kids.example");
    s.child_directed = true;
    let week = chrono::NaiveDate::from_ymd_opt(2026, 11, 16).unwrap();
    let qs = digest::questions_for(&s, Period::Week, week);
    assert_eq!(
        qs.len(),
        4,
        "totals, top pages, the days and the days before"
    );
    for q in &qs {
        assert!(!q.to_string().contains("visitors"), "{q}");
    }
    // Each is answered (a question about visitors would be refused on this site).
    let totals = q(&ch, &s, qs[0].clone()).await;
    assert_eq!(totals["results"][0]["metrics"], json!([9, 9]), "{totals}");
    assert_eq!(
        totals["results"][0]["comparison"]["change"],
        json!([50, 50]),
        "{totals}"
    );
    let pages = q(&ch, &s, qs[1].clone()).await;
    // /rare's 2 pageviews are under k = 5: not listed.
    assert_eq!(
        rows(&pages),
        vec![(vec!["/games".to_string()], vec![json!(7)])],
        "{pages}"
    );
    let days = q(&ch, &s, qs[2].clone()).await;
    let before = q(&ch, &s, qs[3].clone()).await;
    let series = digest::days_of(&days, &before);
    assert_eq!(series.len(), 7, "{days}");
    assert_eq!(series[1].visitors, json!(7), "{days}");
    assert_eq!(series[1].previous, json!(6), "{before}");
}
