//! The ClickHouse sink: one `INSERT INTO events FORMAT RowBinary` per batch over HTTP (LZ4
//! compressed), with the `clickhouse` crate. The writer thread owns the sink and its small
//! single-threaded tokio runtime to drive the client, so inserts never block the server's runtime.
//!
//! Cluster mode (`--clickhouse-cluster`): `events` is a Distributed table over Replicated
//! `events_local` (schemas/src/migrate.rs). Inserts set `insert_distributed_sync = 1`, so the
//! insert returns once every shard's replica has its rows, and a replayed batch is sent whole:
//! the Replicated tables drop a block identical to one already written (every row carries the
//! batch's `spool_token`, so only a replay of the same batch can be identical), which makes
//! replays exactly-once even when an earlier attempt reached only some shards.

use std::time::Duration;

use veil_schemas::sql;
use veil_schemas::sql::{lit, Run};
use veil_schemas::ClickHouseConfig;

use super::Sink;
use crate::pipeline::EventRow;
use crate::Error;

/// Table the collector writes to.
pub const EVENTS_TABLE: &str = "events";

/// Inserts batches into `events`.
pub struct ClickHouseSink {
    rt: tokio::runtime::Runtime,
    client: clickhouse::Client,
    timeout: Duration,
    cluster: bool,
}

impl ClickHouseSink {
    /// A sink for the given database.
    pub fn new(cfg: &ClickHouseConfig) -> Result<Self, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let cluster = cfg.cluster.is_some();
        let client = if cluster {
            cfg.client().with_setting("insert_distributed_sync", "1")
        } else {
            cfg.client()
        };
        Ok(Self {
            rt,
            client,
            timeout: Duration::from_secs(60),
            cluster,
        })
    }

    async fn insert(
        client: &clickhouse::Client,
        rows: &[EventRow],
    ) -> Result<(), clickhouse::error::Error> {
        let mut insert = client.insert::<EventRow>(EVENTS_TABLE).await?;
        for r in rows {
            insert.write(r).await?;
        }
        insert.end().await
    }
}

/// The UTC day (`YYYYMMDD`, the partition) of a row.
fn day(r: &EventRow) -> u32 {
    chrono::DateTime::from_timestamp(i64::from(r.timestamp), 0)
        .map(|t| t.format("%Y%m%d").to_string().parse().unwrap_or(0))
        .unwrap_or(0)
}

impl Sink for ClickHouseSink {
    fn write_missing(&mut self, token: &str, rows: &[EventRow]) -> Result<usize, Error> {
        if self.cluster {
            // Replicated insert-block deduplication drops what an earlier attempt wrote; the
            // per-day lookup below would be wrong here (a day may have reached one shard only).
            self.write(rows)?;
            return Ok(rows.len());
        }
        // An INSERT is atomic per partition (day): find the days this batch already reached.
        let (lo, hi) = rows.iter().fold((u32::MAX, 0), |(lo, hi), r| {
            (lo.min(r.timestamp), hi.max(r.timestamp))
        });
        let client = self.client.clone();
        let q = sql!(
            "SELECT DISTINCT toUInt32(toYYYYMMDD(timestamp)) FROM events \
             WHERE spool_token = {} AND timestamp >= toDateTime({}) AND timestamp <= toDateTime({})",
            lit(token),
            lo,
            hi
        );
        let present: Vec<u32> = self
            .rt
            .block_on(async move { client.sql(&q).fetch_all().await })
            .map_err(|e| Error::Sink(e.to_string()))?;
        let missing: Vec<EventRow> = rows
            .iter()
            .filter(|r| !present.contains(&day(r)))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(0);
        }
        self.write(&missing)?;
        Ok(missing.len())
    }

    fn write(&mut self, rows: &[EventRow]) -> Result<(), Error> {
        let fut = Self::insert(&self.client, rows);
        let timeout = self.timeout;
        match self
            .rt
            .block_on(async { tokio::time::timeout(timeout, fut).await })
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Sink(e.to_string())),
            Err(_) => Err(Error::Sink(format!(
                "insert did not finish within {timeout:?}"
            ))),
        }
    }
}
