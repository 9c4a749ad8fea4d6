//! After the pipeline: from handlers to the ClickHouse writer, through the durable spool.
//!
//! Handlers call [`BatchQueue::append`] with the rows of one request. The rows are serialized
//! (one spool record per row, in the binary row encoding of [`row_codec`](super::row_codec);
//! spools written as JSON by older collectors are still read) and appended to the spool as one all-or-nothing append; the
//! call returns once they are on disk (with `--durability fsync`, after the group commit's
//! fsync), so the 2xx sent after it means "on disk". A full spool is an explicit outcome: 503
//! with `Retry-After`, counted as `dropped{reason="spool_full"}`.
//!
//! One writer thread reads batches from the spool (flushing at `max_rows` rows, about
//! `max_bytes` bytes, or when the oldest row is `max_age` old), turns each into a
//! [`RowBatch`] (the payloads' bytes, checked, with the batch's token: no row is decoded),
//! inserts it into ClickHouse,
//! and only then commits the batch's end in the spool. A failed insert is retried with
//! exponential backoff and jitter (100 ms doubling to 5 s) for as long as it takes: events are
//! never dropped for a ClickHouse outage, they wait on disk, and memory stays flat.
//!
//! Exactly-once on a single node: every row carries its batch's `spool_token`. A batch handed
//! out again after a crash (`Batch::is_replay`), or retried after a failed insert (which may
//! have stored its rows before failing), is first looked up in ClickHouse, per day
//! partition, and only the days not already written are inserted. In cluster mode
//! (`--clickhouse-cluster`) the sink sends a replayed batch whole instead and ClickHouse's
//! Replicated insert-block deduplication drops what an earlier attempt already wrote (see
//! `sink/clickhouse.rs`).
//!
//! Shutdown: [`BatchQueue::close`] runs after the HTTP server drained; it closes the spool
//! (flushing accepted appends), lets the writer insert what is left, and waits up to the
//! deadline. Whatever is still unwritten then stays in the spool and is replayed at the next start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::sink::{RowBatch, Sink, SinkFactory};
use super::spool::{Batch, BatchLimits, Records, Spool, SpoolConfig, SpoolError, SpoolReader};
use super::{row_codec, EventRow};
use crate::config::BatchConfig;
use crate::metrics::{DropReason, Metrics};
use crate::Error;

/// The spool plus its writer thread.
pub struct BatchQueue {
    spool: Spool,
    closing: Arc<AtomicBool>,
    sink_healthy: Arc<AtomicBool>,
    writer: Mutex<Option<JoinHandle<()>>>,
    metrics: Metrics,
}

impl std::fmt::Debug for BatchQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BatchQueue {{ spool: {} }}", self.spool.dir().display())
    }
}

fn spool_error(e: SpoolError) -> Error {
    match e {
        SpoolError::Full => Error::SpoolFull,
        SpoolError::Closed => Error::ShuttingDown,
        SpoolError::TooLarge { limit, .. } => Error::PayloadTooLarge {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        },
        other => Error::Sink(format!("spool: {other}")),
    }
}

impl BatchQueue {
    /// Opens (and recovers) the spool in `dir` and starts the writer thread with a sink from `factory`.
    pub fn start(
        cfg: &BatchConfig,
        dir: &std::path::Path,
        spool_cfg: SpoolConfig,
        factory: SinkFactory,
        metrics: Metrics,
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(dir)?;
        let spool = Spool::open(dir, spool_cfg)
            .map_err(|e| Error::Config(format!("opening the spool in {}: {e}", dir.display())))?;
        let rec = spool.recovery();
        if rec.replayable_records > 0 || rec.corrupt_regions > 0 {
            tracing::info!(
                records = rec.replayable_records,
                corrupt_regions = rec.corrupt_regions,
                torn_tail_bytes = rec.torn_tail_bytes,
                "spool recovered; replaying what ClickHouse has not acknowledged"
            );
        }
        metrics.spool_corrupt.inc_by(rec.corrupt_regions);
        let commits = metrics.spool_commit.clone();
        spool.observe_commits(move |took| commits.observe(took.as_secs_f64()));
        let reader = spool.reader().map_err(spool_error)?;
        let closing = Arc::new(AtomicBool::new(false));
        let sink_healthy = Arc::new(AtomicBool::new(true));
        let w = Writer {
            reader,
            spool: spool.clone(),
            limits: BatchLimits {
                max_records: cfg.max_rows,
                max_bytes: cfg.max_bytes,
                max_age: cfg.max_age,
            },
            sink: factory()?,
            metrics: metrics.clone(),
            closing: closing.clone(),
            healthy: sink_healthy.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("veil-writer".into())
            .spawn(move || w.run())?;
        Ok(Self {
            spool,
            closing,
            sink_healthy,
            writer: Mutex::new(Some(handle)),
            metrics,
        })
    }

    /// Appends the rows of one request durably (all or none). Returns once they are on disk.
    pub async fn append(&self, rows: &[EventRow]) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut records = Records::with_capacity(rows.len() * 256);
        for r in rows {
            let encoded = records.push_with(|buf| {
                row_codec::encode(r, buf);
                Ok::<(), std::convert::Infallible>(())
            });
            let Ok(()) = encoded;
        }
        match self.spool.append(records).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = spool_error(e);
                if matches!(e, Error::SpoolFull) {
                    self.metrics
                        .dropped(DropReason::SpoolFull, rows.len() as u64);
                }
                Err(e)
            }
        }
    }

    /// Whether the last insert attempt succeeded (false while ClickHouse is failing).
    pub fn sink_healthy(&self) -> bool {
        self.sink_healthy.load(Ordering::Relaxed)
    }

    /// Updates the spool gauges.
    pub fn observe(&self) {
        let s = self.spool.stats();
        self.metrics
            .spool_bytes
            .set(i64::try_from(s.disk_bytes).unwrap_or(i64::MAX));
        self.metrics
            .spool_segments
            .set(i64::try_from(s.segments).unwrap_or(i64::MAX));
        self.metrics
            .queue_depth
            .set(i64::try_from(s.unconsumed_records).unwrap_or(i64::MAX));
        self.metrics.spool_oldest_age.set(
            s.oldest_unconsumed_age()
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        );
    }

    /// Events accepted but not yet in ClickHouse.
    pub fn depth(&self) -> u64 {
        self.spool.stats().unconsumed_records
    }

    /// Closes the spool, lets the writer insert what is left, and waits for it up to
    /// `deadline`. Returns false if unwritten events remain (they are replayed at the next start).
    pub fn close(&self, deadline: Instant) -> bool {
        if let Err(e) = self.spool.close() {
            tracing::warn!(error = %e, "closing the spool");
        }
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            self.closing.store(true, Ordering::SeqCst);
            while !h.is_finished() && Instant::now() < deadline + Duration::from_secs(1) {
                std::thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        self.closing.store(true, Ordering::SeqCst);
        self.depth() == 0
    }
}

struct Writer {
    reader: SpoolReader,
    spool: Spool,
    limits: BatchLimits,
    sink: Box<dyn Sink>,
    metrics: Metrics,
    closing: Arc<AtomicBool>,
    healthy: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self) {
        loop {
            if self.closing.load(Ordering::SeqCst) {
                return;
            }
            match self
                .reader
                .next_batch(&self.limits, Duration::from_millis(100))
            {
                Ok(Some(batch)) => {
                    let end = batch.end();
                    if !self.write(batch) {
                        return; // shutting down with ClickHouse failing: the batch stays spooled
                    }
                    if let Err(e) = self.reader.commit(end) {
                        tracing::error!(error = %e, "committing the spool cursor");
                    }
                }
                Ok(None) => {
                    if self.spool.is_closed() && self.spool.stats().unconsumed_records == 0 {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading the spool");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    /// Inserts a batch, retrying until it succeeds; false if shutdown interrupted the retries.
    /// The batch's payloads are freed once copied into the insert's rows: a batch at the row
    /// cap is tens of MB, and the insert (with its retries) is where the writer waits.
    fn write(&mut self, batch: Batch) -> bool {
        let token = batch.dedup_token();
        // The payloads are RowBinary already: checked and copied with the token, never decoded.
        let mut rows =
            RowBatch::with_capacity(batch.len(), batch.payload_bytes() + batch.len() * 40);
        let mut corrupt = 0u64;
        for rec in batch.iter() {
            if !rows.push_payload(rec.payload, &token) {
                corrupt += 1;
            }
        }
        if corrupt > 0 {
            tracing::error!(records = corrupt, "undecodable spool records skipped");
            self.metrics.dropped(DropReason::SpoolCorrupt, corrupt);
        }
        // In `events`' order, so ClickHouse need not sort the block (sink module docs).
        rows.sort_for_insert();
        let replay = batch.is_replay();
        drop(batch);
        let mut backoff = Duration::from_millis(100);
        // A failed insert may still have stored rows (ClickHouse writes the table's part,
        // then its materialized views, then answers: a server dying in between, or a broken
        // connection, fails an insert whose rows are there). Every later attempt looks first.
        let mut uncertain = replay;
        // Rows an attempt of this process stored and then reported failed are this
        // process's writes too: once the batch is stored whole, all its rows are counted.
        let mut failed_here = false;
        loop {
            let started = Instant::now();
            let attempt = if uncertain {
                self.sink
                    .write_missing(&token, &rows)
                    .map(|n| if failed_here { rows.len() } else { n })
            } else {
                self.sink.write(&rows).map(|()| rows.len())
            };
            match attempt {
                Ok(written) => {
                    self.healthy.store(true, Ordering::Relaxed);
                    self.metrics
                        .batch_flush
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics.batch_size.observe(written as f64);
                    self.metrics.events_written.inc_by(written as u64);
                    return true;
                }
                Err(e) => {
                    uncertain = true;
                    failed_here = true;
                    self.healthy.store(false, Ordering::Relaxed);
                    self.metrics.clickhouse_errors.inc();
                    tracing::warn!(error = %e, rows = rows.len(), "insert failed; retrying (the batch stays in the spool)");
                    let wake = Instant::now() + backoff + jitter(backoff);
                    while Instant::now() < wake {
                        if self.closing.load(Ordering::SeqCst) {
                            return false;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    d.mul_f64(f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Recorder {
        batches: Arc<Mutex<Vec<usize>>>,
        fail_first: Arc<Mutex<u32>>,
    }

    impl Sink for Recorder {
        fn write(&mut self, rows: &RowBatch) -> Result<(), Error> {
            let mut f = self.fail_first.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                return Err(Error::Sink("down".into()));
            }
            self.batches.lock().unwrap().push(rows.len());
            Ok(())
        }
    }

    fn row() -> EventRow {
        EventRow {
            site: "a.com".into(),
            timestamp: 1,
            name: "pageview".into(),
            pathname: "/".into(),
            ..Default::default()
        }
    }

    fn start<S: Sink + Clone + Sync>(
        dir: &std::path::Path,
        cfg: BatchConfig,
        rec: S,
    ) -> (BatchQueue, Metrics) {
        let m = Metrics::new(&prometheus::Registry::new()).unwrap();
        let q = BatchQueue::start(
            &cfg,
            dir,
            SpoolConfig::default(),
            Box::new(move || Ok(Box::new(rec.clone()) as Box<dyn Sink>)),
            m.clone(),
        )
        .unwrap();
        (q, m)
    }

    #[tokio::test]
    async fn flushes_by_rows_and_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::default();
        let cfg = BatchConfig {
            max_rows: 10,
            max_age: Duration::from_secs(60),
            ..BatchConfig::default()
        };
        let (q, m) = start(dir.path(), cfg, rec.clone());
        q.append(&vec![row(); 25]).await.unwrap();
        assert!(tokio::task::spawn_blocking(
            move || q.close(Instant::now() + Duration::from_secs(5))
        )
        .await
        .unwrap());
        let b = rec.batches.lock().unwrap().clone();
        assert_eq!(b.iter().sum::<usize>(), 25);
        assert!(b.iter().all(|&n| n <= 10), "{b:?}");
        assert_eq!(m.events_written.get(), 25);
    }

    #[tokio::test]
    async fn retries_until_clickhouse_is_back_and_counts_errors() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::default();
        *rec.fail_first.lock().unwrap() = 3;
        let cfg = BatchConfig {
            max_age: Duration::from_millis(10),
            ..BatchConfig::default()
        };
        let (q, m) = start(dir.path(), cfg, rec.clone());
        q.append(&[row()]).await.unwrap();
        assert!(tokio::task::spawn_blocking(
            move || q.close(Instant::now() + Duration::from_secs(10))
        )
        .await
        .unwrap());
        assert_eq!(rec.batches.lock().unwrap().iter().sum::<usize>(), 1);
        assert_eq!(m.clickhouse_errors.get(), 3);
    }

    /// Stores rows by token, like ClickHouse with `spool_token`; its first insert stores the
    /// rows and then fails, as one does when the answer is lost after the write.
    #[derive(Clone, Default)]
    struct LostAnswer {
        stored: Arc<Mutex<Vec<String>>>,
        failed_once: Arc<AtomicBool>,
    }

    impl Sink for LostAnswer {
        fn write(&mut self, rows: &RowBatch) -> Result<(), Error> {
            let mut stored = self.stored.lock().unwrap();
            stored.extend(rows.rows().into_iter().map(|r| r.spool_token));
            if !self.failed_once.swap(true, Ordering::SeqCst) {
                return Err(Error::Sink("connection reset after the insert".into()));
            }
            Ok(())
        }

        fn write_missing(&mut self, token: &str, rows: &RowBatch) -> Result<usize, Error> {
            if self.stored.lock().unwrap().iter().any(|t| t == token) {
                return Ok(0);
            }
            self.write(rows).map(|()| rows.len())
        }
    }

    #[tokio::test]
    async fn a_retry_after_a_failed_insert_does_not_write_twice() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LostAnswer::default();
        let cfg = BatchConfig {
            max_age: Duration::from_millis(10),
            ..BatchConfig::default()
        };
        let (q, m) = start(dir.path(), cfg, sink.clone());
        q.append(&vec![row(); 4]).await.unwrap();
        assert!(tokio::task::spawn_blocking(
            move || q.close(Instant::now() + Duration::from_secs(10))
        )
        .await
        .unwrap());
        assert_eq!(sink.stored.lock().unwrap().len(), 4, "stored once");
        assert_eq!(m.clickhouse_errors.get(), 1);
    }

    #[tokio::test]
    async fn unwritten_rows_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let down = Recorder::default();
        *down.fail_first.lock().unwrap() = u32::MAX;
        let cfg = BatchConfig {
            max_age: Duration::from_millis(10),
            ..BatchConfig::default()
        };
        let (q, _) = start(dir.path(), cfg.clone(), down);
        q.append(&vec![row(); 3]).await.unwrap();
        let (q, drained) = tokio::task::spawn_blocking(move || {
            let ok = q.close(Instant::now() + Duration::from_millis(300));
            (q, ok)
        })
        .await
        .unwrap();
        assert!(!drained, "ClickHouse is down: rows stay spooled");
        drop(q);
        let up = Recorder::default();
        let (q, _) = start(dir.path(), cfg, up.clone());
        assert!(tokio::task::spawn_blocking(
            move || q.close(Instant::now() + Duration::from_secs(5))
        )
        .await
        .unwrap());
        assert_eq!(
            up.batches.lock().unwrap().iter().sum::<usize>(),
            3,
            "replayed after restart"
        );
    }

    /// Keeps every row it is given.
    #[derive(Clone, Default)]
    struct Keep {
        rows: Arc<Mutex<Vec<EventRow>>>,
    }

    impl Sink for Keep {
        fn write(&mut self, rows: &RowBatch) -> Result<(), Error> {
            self.rows.lock().unwrap().extend(rows.rows());
            Ok(())
        }
    }

    /// A spool written by a collector before issue 18 holds rows as JSON: they are still
    /// replayed; a record in an encoding this build does not know is refused and counted.
    #[tokio::test]
    async fn json_rows_of_an_older_spool_are_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let old = Spool::open(dir.path(), SpoolConfig::default()).unwrap();
        let mut records = Records::new();
        for i in 0..3 {
            let r = EventRow {
                pathname: format!("/old/{i}"),
                ..row()
            };
            records.push(&serde_json::to_vec(&r).unwrap());
        }
        records.push(b"\x7funknown encoding");
        old.append_blocking(records).unwrap();
        old.close().unwrap();
        drop(old);
        let keep = Keep::default();
        let cfg = BatchConfig {
            max_age: Duration::from_millis(10),
            ..BatchConfig::default()
        };
        let (q, m) = start(dir.path(), cfg, keep.clone());
        assert!(tokio::task::spawn_blocking(
            move || q.close(Instant::now() + Duration::from_secs(5))
        )
        .await
        .unwrap());
        let got = keep.rows.lock().unwrap().clone();
        let paths: Vec<&str> = got.iter().map(|r| r.pathname.as_str()).collect();
        assert_eq!(paths, ["/old/0", "/old/1", "/old/2"]);
        assert!(got
            .iter()
            .all(|r| r.site == "a.com" && !r.spool_token.is_empty()));
        assert_eq!(m.events_written.get(), 3);
        assert_eq!(
            m.events_dropped
                .with_label_values(&[DropReason::SpoolCorrupt.as_str()])
                .get(),
            1
        );
    }
}
