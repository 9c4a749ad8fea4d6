//! Retention and erasure against a real ClickHouse.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use veil_aggregator::db;
use veil_aggregator::retention::{erase_site, purge, Retention};
use veil_collector::pipeline::sink::clickhouse::ClickHouseSink;
use veil_collector::pipeline::sink::{RowBatch, Sink};
use veil_collector::pipeline::{Client, Incoming, Outcome, Pipeline};
use veil_collector::sites::SiteRegistry;
use veil_schemas::sql;
use veil_schemas::sql::lit;

/// One pageview for `site` on each of the given days (noon UTC).
async fn seed(ch: &veil_schemas::ClickHouseConfig, site: &str, days: &[NaiveDate]) {
    let p = Pipeline::with_key(
        Arc::new(SiteRegistry::new([site.to_string()])),
        Default::default(),
        [1; 32],
    );
    let mut rows = Vec::new();
    for d in days {
        let at = Utc.from_utc_datetime(&d.and_hms_opt(12, 0, 0).unwrap());
        let ev = Incoming {
            domain: site.into(),
            name: "pageview".into(),
            url: format!("https://{site}/"),
            client: Client {
                ip: Some("203.0.113.1".parse().unwrap()),
                user_agent: "Mozilla/5.0".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        // Process "as of" that day so the timestamp check accepts it.
        match p.process(ev, at).unwrap() {
            Outcome::Store(r) => rows.push(*r),
            Outcome::Drop(r) => panic!("{r:?}"),
        }
    }
    let mut sink = ClickHouseSink::new(ch).unwrap();
    tokio::task::spawn_blocking(move || sink.write(&RowBatch::from_rows(&rows)).unwrap())
        .await
        .unwrap();
}

/// Rows of `site` in the rollup tables (hourly, visits).
async fn rollup_rows(ch: &veil_schemas::ClickHouseConfig, site: &str) -> (u64, u64) {
    let c = ch.client();
    let stmt = sql!(
        "SELECT count() FROM events_hourly WHERE site = {}",
        lit(site)
    );
    let h = db::count(&c, &stmt).await.unwrap();
    let stmt = sql!("SELECT count() FROM visits WHERE site = {}", lit(site));
    let v = db::count(&c, &stmt).await.unwrap();
    (h, v)
}

async fn count(ch: &veil_schemas::ClickHouseConfig, site: &str) -> u64 {
    let stmt = sql!("SELECT count() FROM events WHERE site = {}", lit(site));
    db::count(&ch.client(), &stmt).await.unwrap()
}

#[tokio::test]
async fn purge_drops_old_days_and_applies_shorter_site_retention() {
    let ch = veil_schemas::testing::fresh_database("purge").await;
    let today = NaiveDate::from_ymd_opt(2026, 6, 30).unwrap();
    let days: Vec<NaiveDate> = [0, 5, 20, 40]
        .iter()
        .map(|n| today - Duration::days(*n))
        .collect();
    seed(&ch, "long.example", &days).await;
    seed(&ch, "short.example", &days).await;
    veil_aggregator::rollup::run_until(&ch, today + Duration::days(1), 60)
        .await
        .unwrap();
    assert_eq!(rollup_rows(&ch, "short.example").await, (4, 4));
    // The privacy budget ledger: today, yesterday and three days ago.
    for back in [0, 1, 3] {
        let day = (today - Duration::days(back))
            .format("%Y-%m-%d")
            .to_string();
        veil_aggregator::db::exec(
            &ch.client(),
            &veil_schemas::sql!(
                "INSERT INTO privacy_spend (day, credential, question, epsilon, at) SELECT toDate({}), 'admin', 'q', 0.5, now()",
                veil_schemas::sql::lit(&day)
            ),
        )
        .await
        .unwrap();
    }
    let retention = Retention::parse(Some(30), &["short.example=7".into()]).unwrap();
    let report = purge(&ch, &retention, today).await.unwrap();
    let ledger = veil_aggregator::db::count(
        &ch.client(),
        &veil_schemas::sql::Sql::new("SELECT count() FROM privacy_spend"),
    )
    .await
    .unwrap();
    assert_eq!(ledger, 2, "the ledger keeps today and yesterday");
    // The day 40 days ago is past everyone's retention: its partition is dropped.
    assert_eq!(
        report.dropped_partitions,
        vec![(today - Duration::days(40))
            .format("%Y%m%d")
            .to_string()
            .parse::<u32>()
            .unwrap()]
    );
    assert_eq!(count(&ch, "long.example").await, 3);
    // short.example keeps 7 days: the day-20 row is deleted too.
    assert_eq!(report.deleted_rows.get("short.example"), Some(&1));
    assert_eq!(count(&ch, "short.example").await, 2);
    // The rollups follow the raw events.
    assert_eq!(rollup_rows(&ch, "long.example").await, (3, 3));
    assert_eq!(rollup_rows(&ch, "short.example").await, (2, 2));
    // Idempotent.
    let again = purge(&ch, &retention, today).await.unwrap();
    assert!(
        again.dropped_partitions.is_empty() && again.deleted_rows.is_empty(),
        "{again:?}"
    );
}

#[tokio::test]
async fn erase_site_removes_every_row_of_that_site_only() {
    let ch = veil_schemas::testing::fresh_database("erase").await;
    let today = Utc::now().date_naive();
    seed(
        &ch,
        "gone.example",
        &[today, today - Duration::days(1), today - Duration::days(2)],
    )
    .await;
    seed(&ch, "stays.example", &[today]).await;
    veil_aggregator::rollup::run_until(&ch, today + Duration::days(1), 5)
        .await
        .unwrap();
    let report = erase_site(&ch, "gone.example").await.unwrap();
    assert_eq!(rollup_rows(&ch, "gone.example").await, (0, 0));
    assert_eq!(rollup_rows(&ch, "stays.example").await, (1, 1));
    assert_eq!(report.tables.get("events"), Some(&3), "{report:?}");
    assert_eq!(count(&ch, "gone.example").await, 0);
    assert_eq!(count(&ch, "stays.example").await, 1);
    let again = erase_site(&ch, "gone.example").await.unwrap();
    assert_eq!(again.tables.get("events"), Some(&0));
}
