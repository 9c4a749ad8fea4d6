//! Identical report reads under way at once share one ClickHouse query (`db::Inflight`): the
//! dashboard's panels, loaded together, each ask the differencing guard's counts for the same
//! filter and range. Counted in ClickHouse's own query log, against a real server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use veil_aggregator::db;
use veil_schemas::sql::{Run, Sql};

/// How many finished queries the server logged whose text contains `marker`.
async fn finished(client: &clickhouse::Client, marker: &'static str) -> u64 {
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
    client.sql(&q).fetch_one::<u64>().await.unwrap()
}

#[tokio::test]
async fn identical_reads_under_way_share_one_query_and_keep_nothing() {
    let ch = veil_schemas::testing::fresh_database("shared_reads").await;
    let client = ch.client().with_setting("log_queries", "1");
    let inflight = db::Inflight::default();
    // Both askers are polled before any answer can arrive (`join!` polls the first until it
    // waits on the network, then the second): the first starts the query, the second finds
    // it under way. The server-side `sleep` decides nothing: without it the query log missed
    // the query on a fresh server in one CI rehearsal (counted 0), so it stays as it passed.
    let q = Sql::new(
        "SELECT 'shared-read-marker' AS m, sleep(0.3) AS s, number FROM system.numbers LIMIT 3",
    );
    let (a, b) = tokio::join!(inflight.fetch(&client, &q), inflight.fetch(&client, &q));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len(), 3);
    assert_eq!(a, b, "both askers get the one answer");
    assert_eq!(finished(&client, "shared-read-marker").await, 1);
    // Nothing is kept: the next asker runs the query again.
    let c = inflight.fetch(&client, &q).await.unwrap();
    assert_eq!(c, a);
    assert_eq!(finished(&client, "shared-read-marker").await, 2);
    // A different statement is never shared.
    let other = Sql::new("SELECT 'shared-read-marker' AS m, 1 AS other");
    let (d, e) = tokio::join!(inflight.fetch(&client, &q), inflight.fetch(&client, &other));
    assert_eq!(d.unwrap().len(), 3);
    assert_eq!(e.unwrap().len(), 1);
    assert_eq!(finished(&client, "shared-read-marker").await, 4);
}
