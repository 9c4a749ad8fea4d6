//! The filtered-traffic report: a running collector counts bots and opt-outs per site into
//! ClickHouse, and the aggregator reports them by reason, under the same k rule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use veil_aggregator::db;
use veil_aggregator::reports::filtered_traffic;
use veil_aggregator::site::SiteView;
use veil_collector::pipeline::privacy::Consent;
use veil_collector::pipeline::{Client, Incoming};
use veil_schemas::sql::Sql;

fn hit(domain: &str, ip: &str, ua: &str, gpc: bool) -> Incoming {
    Incoming {
        domain: domain.into(),
        name: "pageview".into(),
        url: format!("https://{domain}/"),
        client: Client {
            ip: Some(ip.parse().unwrap()),
            user_agent: ua.into(),
            ..Default::default()
        },
        consent: Consent {
            gpc,
            ..Default::default()
        },
        ..Default::default()
    }
}

const BROWSER: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

#[tokio::test]
async fn bots_and_opt_outs_are_counted_per_site_and_reported_by_reason() {
    let ch = veil_schemas::testing::fresh_database("filtered").await;
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = veil_collector::CollectorConfig {
        sites: vec!["shop.example".into()],
        ..Default::default()
    };
    cfg.spool.dir = spool.path().to_path_buf();
    let c = veil_collector::Collector::start(cfg, ch.clone(), prometheus::Registry::new())
        .await
        .unwrap();
    // The collector stamps each hit with its clock; the report is asked for the UTC days from
    // before the first hit to after the last (one day but across midnight: then two), not for
    // "day" read later, which after midnight would be a day without them.
    let first_day = Utc::now().date_naive();
    for i in 0..6 {
        c.ingest_one(
            hit("shop.example", &format!("203.0.113.{i}"), GOOGLEBOT, false),
            "test",
        )
        .await
        .unwrap();
    }
    for i in 0..5 {
        c.ingest_one(
            hit("shop.example", &format!("198.51.100.{i}"), BROWSER, true),
            "test",
        )
        .await
        .unwrap();
    }
    // Two opt-outs elsewhere: under k for that site; an unknown domain is never counted.
    for i in 0..2 {
        c.ingest_one(
            hit("shop.example", &format!("192.0.2.{i}"), "curl/8.5.0", false),
            "test",
        )
        .await
        .unwrap();
        c.ingest_one(
            hit("unknown.example", &format!("192.0.2.{i}"), GOOGLEBOT, false),
            "test",
        )
        .await
        .unwrap();
    }
    let last_day = Utc::now().date_naive();
    let site = SiteView::new("shop.example");
    let start = std::time::Instant::now();
    // Wait until every count is stored (the two library hits too)…
    loop {
        let stmt = Sql::new("SELECT sum(events) FROM filtered_hourly WHERE site = 'shop.example'");
        let stored = db::count(&ch.client(), &stmt).await.unwrap();
        if stored == 13 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "counts never arrived: {stored} of 13"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // …then the report lists only reasons with at least k events: the two library hits are
    // stored but not shown.
    let days = format!("{first_day},{last_day}");
    let doc = filtered_traffic(&ch.client(), &site, &days, Utc::now(), Default::default())
        .await
        .unwrap();
    assert_eq!(
        doc["dropped"],
        json!([
            {"reason": "bot_crawler", "events": 6},
            {"reason": "consent", "events": 5},
        ]),
        "{doc}"
    );
    let stmt = Sql::new("SELECT count() FROM filtered_hourly WHERE site != 'shop.example'");
    let unknown: u64 = db::count(&ch.client(), &stmt).await.unwrap();
    assert_eq!(unknown, 0);
    assert!(c.finish());
}
