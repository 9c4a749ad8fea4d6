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
//!
//! A replica killed between writing a block and feeding the materialized views that follow
//! it (`events_recent`, `events_hourly`, `events_daily`) keeps the block; the retried insert is
//! then dropped as a duplicate and feeds no view. Where the server has it (ClickHouse 19.x and
//! later, asked once of `system.settings`), inserts also set
//! `deduplicate_blocks_in_dependent_materialized_views = 1`: the retry feeds each view, which
//! drops what it already has by itself. On 18.16 readers cope instead: the rollups are read
//! only for days checked against raw events, and the current day's tail only while
//! `events_recent` holds as many hits as `events` (aggregator/src/builds.rs).

use std::time::Duration;

use veil_schemas::sql;
use veil_schemas::sql::{has_setting, lit, Run, MV_DEDUP_SETTING};
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
    /// Cluster mode: whether [`MV_DEDUP_SETTING`] was checked for (and set when present).
    views_checked: bool,
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
            views_checked: !cluster,
        })
    }

    /// Cluster mode: sets [`MV_DEDUP_SETTING`] on inserts when the server has it (asked before
    /// the first insert that finds the server up; a failed check is asked again next time).
    fn check_views(&mut self) {
        if self.views_checked {
            return;
        }
        let client = self.client.clone();
        let asked = self
            .rt
            .block_on(async move { has_setting(&client, MV_DEDUP_SETTING).await });
        match asked {
            Ok(true) => {
                self.client = self.client.clone().with_setting(MV_DEDUP_SETTING, "1");
                self.views_checked = true;
            }
            Ok(false) => self.views_checked = true,
            Err(e) => tracing::debug!(error = %e, "could not ask the server for its settings yet"),
        }
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
        self.check_views();
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
