//! The writer's batches reach ClickHouse in the order of `events` and `events_tail`, so the
//! server does not sort them: a MergeTree insert sorts each block by the table's key and
//! permutes every column unless the block already is in that order, and counts the blocks it
//! found sorted (`MergeTreeDataWriterBlocksAlreadySorted` in `system.events`, next to
//! `MergeTreeDataWriterBlocks`). This file holds one test, so its process's ClickHouse sees no
//! other insert while the counters are compared.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::*;
use veil_schemas::ClickHouseConfig;

/// (blocks written, blocks found already sorted) since the server started.
async fn writer_blocks(ch: &ClickHouseConfig) -> (u64, u64) {
    let q = Sql::new(
        "SELECT sumIf(value, event = 'MergeTreeDataWriterBlocks'), \
         sumIf(value, event = 'MergeTreeDataWriterBlocksAlreadySorted') FROM system.events",
    );
    ch.client().sql(&q).fetch_one().await.unwrap()
}

#[tokio::test]
async fn the_writers_batches_need_no_sort_in_clickhouse() {
    let ch = veil_schemas::testing::fresh_database("sorted_inserts").await;
    // Only the tables whose order the writer keeps: the rollups' views write GROUP BY output.
    for v in ["events_hourly_mv", "events_daily_mv"] {
        ch.client()
            .sql(&sql!("DROP TABLE {}", Sql::new(v)))
            .execute()
            .await
            .unwrap();
    }
    let mut c = start_on(ch.clone(), config(&["a.example", "b.example"])).await;
    // As hits arrive: in time order, two sites and eight visitors interleaved, all in one hour
    // (ten minutes past the hour two hours ago).
    let now = chrono::Utc::now().timestamp();
    let base = now - now % 3600 - 2 * 3600 + 600;
    let events: Vec<serde_json::Value> = (0..40)
        .map(|i| {
            serde_json::json!({
                "site": if i % 3 == 0 { "b.example" } else { "a.example" },
                "name": "pageview",
                "url": format!("https://example.com/p{i}"),
                "timestamp": base + i,
                "ip": format!("203.0.113.{}", 10 + i % 8),
                "user_agent": CHROME,
            })
        })
        .collect();
    let before = writer_blocks(&ch).await;
    let r = c
        .post(
            "/v1/events",
            &[],
            &serde_json::Value::from(events).to_string(),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["accepted"], 40, "{}", r.body);
    wait_count(&ch, "1", 40, 30).await;
    // The view's rows become visible after the table's (18.16 commits the insert's part in
    // `events` before it writes the views): the insert is over once the tail has them too.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let tail: u64 = ch
            .client()
            .sql(&Sql::new("SELECT count() FROM events_tail"))
            .fetch_one()
            .await
            .unwrap();
        if tail == 40 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tail's view has {tail} of the 40 rows"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let after = writer_blocks(&ch).await;
    let (blocks, sorted) = (after.0 - before.0, after.1 - before.1);
    assert!(
        blocks >= 2,
        "events and events_tail each wrote a block: {blocks}"
    );
    assert_eq!(
        sorted, blocks,
        "every block the collector's inserts wrote was already sorted"
    );

    // The same rows inserted as they arrived (time order): the counter tells the difference.
    let before = writer_blocks(&ch).await;
    ch.client()
        .sql(&Sql::new(
            "INSERT INTO events SELECT * FROM events ORDER BY timestamp",
        ))
        .execute()
        .await
        .unwrap();
    let after = writer_blocks(&ch).await;
    let (blocks, sorted) = (after.0 - before.0, after.1 - before.1);
    assert!(blocks >= 2, "{blocks}");
    assert!(
        sorted < blocks,
        "rows in arrival order are not in events' order: {sorted} of {blocks} blocks sorted"
    );
    c.shutdown().await.unwrap();
}
