//! Identical report reads under way at once share one ClickHouse query (`db::Inflight`): the
//! dashboard's panels, loaded together, each ask the differencing guard's counts for the same
//! filter and range, and the same range's catalog. Counted in ClickHouse's own query log,
//! against a real server (18.16's leg only: the ClickHouse 26 fixture keeps no query log).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use chrono::NaiveDate;
use common::*;
use serde_json::json;
use veil_aggregator::{builds, db, rollup};
use veil_schemas::sql::{Run, Sql};

/// How many finished queries the server logged whose text contains `marker`, polled until
/// there are `want` (or 20 s have passed): a query's entry reaches the log after its answer
/// reaches the client, so a count taken at once can miss it (one rehearsal counted 0).
async fn finished(client: &clickhouse::Client, marker: &str, want: u64) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        client
            .sql(&Sql::new("SYSTEM FLUSH LOGS"))
            .execute()
            .await
            .unwrap();
        let q = veil_schemas::sql!(
            "SELECT count() FROM system.query_log WHERE type = 2 AND position(query, {}) > 0 \
             AND position(query, 'query_log') = 0",
            veil_schemas::sql::lit(marker)
        );
        let n = client.sql(&q).fetch_one::<u64>().await.unwrap();
        if n >= want || std::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn identical_reads_under_way_share_one_query_and_keep_nothing() {
    let ch = veil_schemas::testing::fresh_database("shared_reads").await;
    let client = ch.client().with_setting("log_queries", "1");
    let inflight = db::Inflight::default();
    // Both askers are polled before any answer can arrive (`join!` polls the first until it
    // waits on the network, then the second): the first starts the query, the second finds
    // it under way. The server-side `sleep` decides nothing; it stays as it passed.
    let q = Sql::new(
        "SELECT 'shared-read-marker' AS m, sleep(0.3) AS s, number FROM system.numbers LIMIT 3",
    );
    let (a, b) = tokio::join!(inflight.fetch(&client, &q), inflight.fetch(&client, &q));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len(), 3);
    assert_eq!(a, b, "both askers get the one answer");
    assert_eq!(finished(&client, "shared-read-marker", 1).await, 1);
    // Nothing is kept: the next asker runs the query again.
    let c = inflight.fetch(&client, &q).await.unwrap();
    assert_eq!(c, a);
    assert_eq!(finished(&client, "shared-read-marker", 2).await, 2);
    // A different statement is never shared.
    let other = Sql::new("SELECT 'shared-read-marker' AS m, 1 AS other");
    let (d, e) = tokio::join!(inflight.fetch(&client, &q), inflight.fetch(&client, &other));
    assert_eq!(d.unwrap().len(), 3);
    assert_eq!(e.unwrap().len(), 1);
    assert_eq!(finished(&client, "shared-read-marker", 4).await, 4);
}

/// The panels of a dashboard, loaded at once, each look up the same range's builds: one
/// catalog read under way serves every asker that shares the aggregator's reads
/// (`db::Inflight`), as ClickHouse's query log counts; askers that do not share read twice.
#[tokio::test]
async fn reports_asked_at_once_share_their_catalog_reads() {
    use veil_aggregator::query::parse;
    let ch = veil_schemas::testing::fresh_database("shared_catalog").await;
    seed(&ch).await;
    rollup::run_until_sliced(&ch, NaiveDate::from_ymd_opt(2026, 11, 21).unwrap(), 2, 5)
        .await
        .unwrap();
    let client = ch.client().with_setting("log_queries", "1");
    let s = site();
    // A range no other test asks, so the server-wide query log counts this test's reads.
    let body = json!({"metrics": ["visitors"], "date_range": ["2026-11-03", "2026-11-25"]});
    let query = parse(base(body).to_string().as_bytes(), &s, now()).unwrap();
    let marker = "day >= toDate('2026-11-03') AND day <= toDate('2026-11-25')";
    let inflight = db::Inflight::default();
    let mut a = builds::Builds::new(None).sharing(Some(inflight.clone()));
    let mut b = builds::Builds::new(None).sharing(Some(inflight));
    let (x, y) = tokio::join!(
        a.for_query(&client, &s, &query),
        b.for_query(&client, &s, &query)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x, y, "both askers get the one catalog");
    assert!(x.iter().any(|b| b.build > 0), "{x:?}");
    assert_eq!(
        finished(&client, marker, 1).await,
        1,
        "one read for two askers"
    );
    // Without sharing each asker reads its own.
    let (mut c, mut d) = (builds::Builds::new(None), builds::Builds::new(None));
    let (z, w) = tokio::join!(
        c.for_query(&client, &s, &query),
        d.for_query(&client, &s, &query)
    );
    assert_eq!(z.unwrap(), x);
    assert_eq!(w.unwrap(), x);
    assert_eq!(
        finished(&client, marker, 3).await,
        3,
        "two more reads unshared"
    );
}
