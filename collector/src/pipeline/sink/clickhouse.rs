//! The ClickHouse sink: one `INSERT INTO events (INSERT_COLUMNS) FORMAT RowBinary` per batch over
//! HTTP (LZ4 compressed), with the `clickhouse` crate; the batch's bytes are the spool's payloads
//! with the batch's token appended ([`RowBatch`]), sent in chunks of [`CHUNK`] bytes without
//! being decoded into rows. The writer thread owns the sink and its small
//! single-threaded tokio runtime to drive the client, so inserts never block the server's runtime.
//!
//! Cluster mode (`--clickhouse-cluster`): `events` is a Distributed table over Replicated
//! `events_local` (schemas/src/migrate.rs). Inserts set `insert_distributed_sync = 1`, so the
//! insert returns once every shard's replica has its rows, and a replayed batch is sent whole:
//! the Replicated tables drop a block identical to one already written (every row carries the
//! batch's `spool_token`, so only a replay of the same batch can be identical), which makes
//! replays exactly-once even when an earlier attempt reached only some shards.
//!
//! An insert that failed may still be running on the server (one that timed out while the
//! server was stalled goes on when it wakes): each insert carries its own `query_id`, and
//! before [`Sink::write_missing`] looks for a batch's rows it waits until the failed insert
//! has left `system.processes` — so the lookup never runs before rows that are about to land,
//! which would store them twice.
//!
//! A replica killed between writing a block and feeding the materialized views that follow
//! it (`events_tail`, `events_hourly`, `events_daily`) keeps the block; the retried insert is
//! then dropped as a duplicate and feeds no view. Where the server has it (ClickHouse 19.x and
//! later, asked once of `system.settings`), inserts also set
//! `deduplicate_blocks_in_dependent_materialized_views = 1`: the retry feeds each view, which
//! drops what it already has by itself. On 18.16 readers cope instead: the rollups are read
//! only for days checked against raw events, and the current day's tail only while
//! `events_tail` holds as many hits as `events` (aggregator/src/builds.rs).

use std::time::Duration;

use bytes::Bytes;
use veil_schemas::sql;
use veil_schemas::sql::{has_setting, idents, lit, Run, Sql, MV_DEDUP_SETTING};
use veil_schemas::ClickHouseConfig;

use super::{RowBatch, Sink, INSERT_COLUMNS};
use crate::Error;

/// Table the collector writes to.
pub const EVENTS_TABLE: &str = "events";

/// How many bytes of a batch go into one compressed chunk of the request body.
const CHUNK: usize = 256 * 1024;

/// The writer's INSERT statement.
fn insert_statement() -> Sql {
    sql!(
        "INSERT INTO {} ({}) FORMAT RowBinary",
        EVENTS_TABLE,
        idents(&INSERT_COLUMNS, ", ")
    )
}

/// How long a failed insert must be absent from `system.processes` before its batch's rows
/// are looked for.
const SETTLE_QUIET: Duration = Duration::from_secs(1);

/// Inserts batches into `events`.
pub struct ClickHouseSink {
    rt: tokio::runtime::Runtime,
    client: clickhouse::Client,
    timeout: Duration,
    cluster: bool,
    /// Cluster mode: whether [`MV_DEDUP_SETTING`] was checked for (and set when present).
    views_checked: bool,
    /// Inserts sent so far (each one's `query_id` ends with its number).
    inserts: u64,
    /// The `query_id` of a failed insert that may still be running.
    unsettled: Option<String>,
    /// This sink's part of every `query_id`, so several collectors never share one.
    tag: String,
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
        let mut b = [0u8; 6];
        getrandom::fill(&mut b).map_err(|e| Error::Sink(format!("random query id: {e}")))?;
        Ok(Self {
            rt,
            client,
            timeout: Duration::from_secs(60),
            cluster,
            views_checked: !cluster,
            inserts: 0,
            unsettled: None,
            tag: b.iter().map(|x| format!("{x:02x}")).collect(),
        })
    }

    /// The same sink with another limit on one insert (60 s by default).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Waits until the failed insert [`Self::unsettled`] names has left `system.processes`
    /// (at most the insert timeout); an error when it is still running or the server does not
    /// answer, so the caller retries later.
    fn settle(&mut self) -> Result<(), Error> {
        let Some(id) = self.unsettled.clone() else {
            return Ok(());
        };
        let client = self.client.clone();
        let q = sql!(
            "SELECT count() FROM system.processes WHERE query_id = {}",
            lit(&id)
        );
        let deadline = std::time::Instant::now() + self.timeout;
        // Gone for SETTLE_QUIET in a row: a server that has just woken may not have taken the
        // old request off its socket yet when it is first asked.
        let mut gone_since: Option<std::time::Instant> = None;
        loop {
            let running: u64 = self
                .rt
                .block_on(async { client.sql(&q).fetch_one().await })
                .map_err(|e| Error::Sink(e.to_string()))?;
            if running == 0 {
                let since = *gone_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= SETTLE_QUIET {
                    self.unsettled = None;
                    return Ok(());
                }
            } else {
                gone_since = None;
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::Sink(format!(
                    "an earlier insert ({id}) is still running; its rows are looked for once it ends"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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
        rows: &RowBatch,
        query_id: &str,
    ) -> Result<(), clickhouse::error::Error> {
        let mut insert = client
            .insert_sql(&insert_statement())
            .with_setting("query_id", query_id);
        for chunk in rows.bytes().chunks(CHUNK) {
            insert.send(Bytes::copy_from_slice(chunk)).await?;
        }
        insert.end().await
    }
}

/// The UTC day (`YYYYMMDD`, the partition) of a timestamp.
fn day(timestamp: u32) -> u32 {
    chrono::DateTime::from_timestamp(i64::from(timestamp), 0)
        .map(|t| t.format("%Y%m%d").to_string().parse().unwrap_or(0))
        .unwrap_or(0)
}

impl Sink for ClickHouseSink {
    fn write_missing(&mut self, token: &str, rows: &RowBatch) -> Result<usize, Error> {
        if self.cluster {
            // Replicated insert-block deduplication drops what an earlier attempt wrote; the
            // per-day lookup below would be wrong here (a day may have reached one shard only).
            self.write(rows)?;
            return Ok(rows.len());
        }
        // A failed insert that is still running would land after the lookup below.
        self.settle()?;
        // An INSERT is atomic per partition (day): find the days this batch already reached.
        let (lo, hi) = rows
            .timestamps()
            .fold((u32::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
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
        let missing = rows.filtered(|t| !present.contains(&day(t)));
        if missing.is_empty() {
            return Ok(0);
        }
        self.write(&missing)?;
        Ok(missing.len())
    }

    fn write(&mut self, rows: &RowBatch) -> Result<(), Error> {
        self.check_views();
        self.inserts += 1;
        let query_id = format!("veil-insert-{}-{}", self.tag, self.inserts);
        let fut = Self::insert(&self.client, rows, &query_id);
        let timeout = self.timeout;
        let outcome = match self
            .rt
            .block_on(async { tokio::time::timeout(timeout, fut).await })
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Sink(e.to_string())),
            Err(_) => Err(Error::Sink(format!(
                "insert did not finish within {timeout:?}"
            ))),
        };
        if outcome.is_err() {
            self.unsettled = Some(query_id);
        }
        outcome
    }
}
