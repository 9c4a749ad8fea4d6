//! Step 4: the bounded queue between request handlers and ClickHouse.
//!
//! Handlers call [`BatchQueue::try_send`], which never blocks: a full queue is an explicit
//! outcome (the sender gets 503 and the event is counted as `dropped{reason="queue_full"}`).
//! Writer threads (`--writers`) share the crossbeam receiver, each building its own batch and
//! flushing it when it reaches `max_rows` rows, about `max_bytes` bytes, or when its oldest row
//! is `max_age` old. A failed insert is retried with exponential backoff and jitter up to
//! `max_attempts` times, then counted as `dropped{reason="clickhouse_error"}`.
//!
//! Shutdown: [`BatchQueue::close`] is called once the HTTP server has drained its requests (so
//! nothing sends any more); writers then take what is left in the queue, flush it, and exit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use super::sink::{Sink, SinkFactory};
use super::EventRow;
use crate::config::BatchConfig;
use crate::metrics::{DropReason, Metrics};
use crate::Error;

/// The sending side, shared by handlers, plus the writer threads.
pub struct BatchQueue {
    tx: Sender<EventRow>,
    closing: Arc<AtomicBool>,
    writers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for BatchQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BatchQueue {{ depth: {} }}", self.tx.len())
    }
}

impl BatchQueue {
    /// Starts `cfg.writers` writer threads, each with a sink from `factory`.
    pub fn start(cfg: &BatchConfig, factory: SinkFactory, metrics: Metrics) -> Result<Self, Error> {
        let (tx, rx) = bounded(cfg.queue_capacity);
        let closing = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::with_capacity(cfg.writers);
        for i in 0..cfg.writers {
            let sink = factory()?;
            let w = Writer {
                rx: rx.clone(),
                cfg: cfg.clone(),
                sink,
                metrics: metrics.clone(),
                closing: closing.clone(),
            };
            let h = std::thread::Builder::new()
                .name(format!("veil-writer-{i}"))
                .spawn(move || w.run())?;
            writers.push(h);
        }
        Ok(Self {
            tx,
            closing,
            writers: Mutex::new(writers),
        })
    }

    /// Queues a row without blocking. Fails with `QueueFull` or `ShuttingDown`.
    pub fn try_send(&self, row: EventRow) -> Result<(), Error> {
        match self.tx.try_send(row) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Error::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(Error::ShuttingDown),
        }
    }

    /// Rows waiting for a writer.
    pub fn depth(&self) -> usize {
        self.tx.len()
    }

    /// Free slots in the queue.
    pub fn free(&self) -> usize {
        self.tx
            .capacity()
            .unwrap_or(usize::MAX)
            .saturating_sub(self.tx.len())
    }

    /// Tells writers to flush what is queued and exit, then waits for them up to `deadline`.
    /// Returns false when a writer was still busy at the deadline.
    pub fn close(&self, deadline: Instant) -> bool {
        self.closing.store(true, Ordering::SeqCst);
        let mut all = true;
        let writers: Vec<JoinHandle<()>> = self
            .writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for h in writers {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                all = false;
            }
        }
        all
    }
}

struct Writer {
    rx: Receiver<EventRow>,
    cfg: BatchConfig,
    sink: Box<dyn Sink>,
    metrics: Metrics,
    closing: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self) {
        let mut batch: Vec<EventRow> = Vec::new();
        let mut bytes = 0usize;
        let mut oldest: Option<Instant> = None;
        loop {
            // Wake at least every 100 ms to notice shutdown.
            let tick = Duration::from_millis(100);
            let wait = match oldest {
                Some(t) => self.cfg.max_age.saturating_sub(t.elapsed()).min(tick),
                None => tick,
            };
            match self.rx.recv_timeout(wait) {
                Ok(row) => {
                    oldest.get_or_insert_with(Instant::now);
                    bytes += row.approx_bytes();
                    batch.push(row);
                    // Take whatever else is already queued without waiting.
                    while batch.len() < self.cfg.max_rows && bytes < self.cfg.max_bytes {
                        match self.rx.try_recv() {
                            Ok(row) => {
                                bytes += row.approx_bytes();
                                batch.push(row);
                            }
                            Err(_) => break,
                        }
                    }
                    if batch.len() >= self.cfg.max_rows || bytes >= self.cfg.max_bytes {
                        self.flush(&mut batch);
                        bytes = 0;
                        oldest = None;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if oldest.is_some_and(|t| t.elapsed() >= self.cfg.max_age) {
                        self.flush(&mut batch);
                        bytes = 0;
                        oldest = None;
                    }
                    if self.closing.load(Ordering::SeqCst) && self.rx.is_empty() {
                        self.flush(&mut batch);
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush(&mut batch);
                    return;
                }
            }
            if self.closing.load(Ordering::SeqCst) {
                // Drain everything left, in full batches, then stop.
                while let Ok(row) = self.rx.try_recv() {
                    batch.push(row);
                    if batch.len() >= self.cfg.max_rows {
                        self.flush(&mut batch);
                    }
                }
                self.flush(&mut batch);
                return;
            }
        }
    }

    fn flush(&mut self, batch: &mut Vec<EventRow>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=self.cfg.max_attempts {
            let started = Instant::now();
            match self.sink.write(batch) {
                Ok(()) => {
                    self.metrics
                        .batch_flush
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics.batch_size.observe(n as f64);
                    self.metrics.events_written.inc_by(n);
                    batch.clear();
                    return;
                }
                Err(e) => {
                    self.metrics.clickhouse_errors.inc();
                    tracing::warn!(error = %e, rows = n, attempt, "insert failed");
                    if attempt < self.cfg.max_attempts {
                        std::thread::sleep(backoff + jitter(backoff));
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        tracing::error!(
            rows = n,
            "giving up on batch after {} attempts",
            self.cfg.max_attempts
        );
        self.metrics.dropped(DropReason::ClickHouseError, n);
        batch.clear();
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
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Recorder {
        batches: Arc<Mutex<Vec<usize>>>,
        fail_first: Arc<Mutex<u32>>,
    }

    impl Sink for Recorder {
        fn write(&mut self, rows: &[EventRow]) -> Result<(), Error> {
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

    fn start(cfg: BatchConfig, rec: Recorder) -> (BatchQueue, Metrics) {
        let m = Metrics::new(&prometheus::Registry::new()).unwrap();
        let q = BatchQueue::start(
            &cfg,
            Box::new(move || Ok(Box::new(rec.clone()) as Box<dyn Sink>)),
            m.clone(),
        )
        .unwrap();
        (q, m)
    }

    #[test]
    fn full_queue_is_an_explicit_outcome() {
        let rec = Recorder::default();
        *rec.fail_first.lock().unwrap() = 1000;
        let cfg = BatchConfig {
            queue_capacity: 2,
            max_rows: 1000,
            max_age: Duration::from_secs(60),
            max_attempts: 1,
            ..BatchConfig::default()
        };
        let (q, _) = start(cfg, rec);
        let mut full = 0;
        for _ in 0..50 {
            if matches!(q.try_send(row()), Err(Error::QueueFull)) {
                full += 1;
            }
        }
        assert!(full > 0);
        q.close(Instant::now() + Duration::from_secs(5));
    }

    #[test]
    fn flushes_by_rows_and_on_close() {
        let rec = Recorder::default();
        let cfg = BatchConfig {
            max_rows: 10,
            max_age: Duration::from_secs(60),
            ..BatchConfig::default()
        };
        let (q, m) = start(cfg, rec.clone());
        for _ in 0..25 {
            q.try_send(row()).unwrap();
        }
        assert!(q.close(Instant::now() + Duration::from_secs(5)));
        let b = rec.batches.lock().unwrap().clone();
        assert_eq!(b.iter().sum::<usize>(), 25);
        assert!(b.iter().all(|&n| n <= 10), "{b:?}");
        assert_eq!(m.events_written.get(), 25);
    }

    #[test]
    fn retries_then_succeeds() {
        let rec = Recorder::default();
        *rec.fail_first.lock().unwrap() = 2;
        let cfg = BatchConfig {
            max_age: Duration::from_millis(10),
            ..BatchConfig::default()
        };
        let (q, m) = start(cfg, rec.clone());
        q.try_send(row()).unwrap();
        assert!(q.close(Instant::now() + Duration::from_secs(10)));
        assert_eq!(rec.batches.lock().unwrap().iter().sum::<usize>(), 1);
        assert_eq!(m.clickhouse_errors.get(), 2);
    }

    #[test]
    fn gives_up_and_counts() {
        let rec = Recorder::default();
        *rec.fail_first.lock().unwrap() = 100;
        let cfg = BatchConfig {
            max_age: Duration::from_millis(10),
            max_attempts: 2,
            ..BatchConfig::default()
        };
        let (q, m) = start(cfg, rec);
        q.try_send(row()).unwrap();
        q.try_send(row()).unwrap();
        assert!(q.close(Instant::now() + Duration::from_secs(10)));
        assert_eq!(
            m.events_dropped
                .with_label_values(&["clickhouse_error"])
                .get(),
            2
        );
    }
}
