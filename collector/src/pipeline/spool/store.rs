//! [`Spool`]: opening a directory, appending, statistics and closing (the state it shares with
//! the committer thread and the reader is in [`super::state`]).

use std::fmt;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use super::committer::{Ack, Committer, Msg, Pending};
use super::error::io_err;
use super::reader::SpoolReader;
use super::records::Records;
use super::recovery;
use super::state::{
    unix_millis, Appended, Counters, DirRegistration, RecoveryReport, Shared, SpoolStats, State,
};
use super::{SpoolConfig, SpoolError};

/// A durable spool. Cheap to clone; all clones share one committer thread. The committer stops
/// (after writing everything accepted) on [`Spool::close`] or when the last clone is dropped;
/// both block for at most one group write, so call them from a blocking context.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    tx: Sender<Msg>,
    committer: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Spool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.inner.shared.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovers it (see the module docs) and starts the
    /// committer thread. Blocking: it reads every segment once, so call it at startup (or from
    /// `spawn_blocking`). Fails on an invalid configuration, on I/O errors, and with
    /// [`SpoolError::AlreadyOpen`] if this process already has `dir` open; damaged files never
    /// make it fail.
    pub fn open(dir: impl AsRef<Path>, config: SpoolConfig) -> Result<Self, SpoolError> {
        config.validate()?;
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let dir = fs::canonicalize(dir).map_err(io_err(dir))?;
        let registration = DirRegistration::claim(&dir)?;
        let rec = recovery::recover(&dir, &config)?;
        let counters = Counters::default();
        counters
            .corrupt_regions
            .store(rec.report.corrupt_regions, Ordering::Relaxed);
        counters.corrupt_bytes.store(
            rec.report.torn_tail_bytes + rec.report.skipped_bytes,
            Ordering::Relaxed,
        );
        let disk_bytes = rec.segments.values().map(|m| m.file_len).sum();
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            config,
            instance: rec.instance,
            state: Mutex::new(State {
                segments: rec.segments,
                committed: rec.committed,
                leases: rec.leases,
                pending_bytes: 0,
                disk_bytes,
                unconsumed_records: rec.unconsumed_records,
                oldest_unconsumed_ms: rec.oldest_unconsumed_ms,
                closed: false,
                failed: None,
            }),
            readable: Condvar::new(),
            counters,
            reader_taken: AtomicBool::new(false),
            recovery: rec.report,
            _registration: registration,
            on_commit: std::sync::OnceLock::new(),
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let committer = Committer::new(
            shared.clone(),
            rx,
            rec.active_id,
            rec.active_file,
            rec.active_len,
            rec.active_zeroed,
        );
        let handle = std::thread::Builder::new()
            .name("veil-spool-committer".into())
            .spawn(move || committer.run())
            .map_err(io_err(&dir))?;
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                tx,
                committer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Appends `records` as one unit and returns once they are durable (see [`Durability`]).
    /// Never blocks the runtime: it awaits the committer's acknowledgement. Fails without
    /// storing anything with [`SpoolError::Full`], [`SpoolError::TooLarge`],
    /// [`SpoolError::Closed`] or [`SpoolError::Failed`]; an I/O error while writing means the
    /// records are not stored either. Dropping the future does not cancel the append.
    pub async fn append(&self, records: Records) -> Result<Appended, SpoolError> {
        if records.is_empty() {
            return self.empty_append();
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(records, Ack::Async(tx))?;
        rx.await.unwrap_or(Err(SpoolError::Closed))
    }

    /// Calls `observe` on the committer thread with how long each commit took: one write of a
    /// group's appends into a segment and, with [`Durability::Fsync`](super::Durability), its
    /// `fdatasync` (and the zeros written ahead when due) — the time every append of the group
    /// waited for the disk. A group split by a segment's end is two commits. For metrics: it
    /// must be quick and must not call into the spool. Set once; later calls are ignored.
    pub fn observe_commits(&self, observe: impl Fn(Duration) + Send + Sync + 'static) {
        let _ = self.inner.shared.on_commit.set(Box::new(observe));
    }

    /// [`Self::append`] for threads outside an async runtime: blocks until acknowledged.
    pub fn append_blocking(&self, records: Records) -> Result<Appended, SpoolError> {
        if records.is_empty() {
            return self.empty_append();
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.submit(records, Ack::Blocking(tx))?;
        rx.recv().unwrap_or(Err(SpoolError::Closed))
    }

    fn empty_append(&self) -> Result<Appended, SpoolError> {
        let st = self.inner.shared.lock();
        if st.closed {
            return Err(SpoolError::Closed);
        }
        let end = st.durable_end();
        Ok(Appended {
            start: end,
            end,
            records: 0,
        })
    }

    /// Checks limits, seals the records and queues them for the committer.
    fn submit(&self, records: Records, ack: Ack) -> Result<(), SpoolError> {
        let shared = &self.inner.shared;
        let limit = shared.config.max_append_bytes();
        let bytes = records.encoded_len() as u64;
        if records.oversized() || bytes > limit {
            return Err(SpoolError::TooLarge { bytes, limit });
        }
        let frame = records.seal(unix_millis());
        let mut st = shared.lock();
        if st.closed {
            return Err(SpoolError::Closed);
        }
        if let Some(reason) = &st.failed {
            return Err(SpoolError::Failed(reason.clone()));
        }
        if st.disk_bytes + st.pending_bytes + bytes > shared.config.max_bytes
            || st.pending_bytes + bytes > shared.config.max_pending_bytes
        {
            Counters::add(&shared.counters.full_rejections, 1);
            return Err(SpoolError::Full);
        }
        // Sent under the lock, so that `close` (which sets `closed` under it, then sends `Stop`)
        // can never overtake an accepted append.
        self.inner
            .tx
            .send(Msg::Append(Pending { frame, ack }))
            .map_err(|_| SpoolError::Closed)?;
        st.pending_bytes += bytes;
        Ok(())
    }

    /// The reader. Only one exists at a time ([`SpoolError::ReaderTaken`]); when it is dropped
    /// another can be taken, which starts again at the committed position (handing out the
    /// leased batches first).
    pub fn reader(&self) -> Result<SpoolReader, SpoolError> {
        SpoolReader::new(self.inner.shared.clone())
    }

    /// Stops accepting appends, waits until everything accepted is written (and acknowledged),
    /// and stops the committer. Idempotent. The reader keeps working: it drains what is left and
    /// then gets `None` without waiting. Blocking.
    pub fn close(&self) -> Result<(), SpoolError> {
        self.inner.close()
    }

    /// Whether [`Self::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.lock().closed
    }

    /// Gauges and counters.
    pub fn stats(&self) -> SpoolStats {
        let shared = &self.inner.shared;
        let c = &shared.counters;
        let st = shared.lock();
        SpoolStats {
            disk_bytes: st.disk_bytes,
            segments: st.segments.len(),
            unconsumed_records: st.unconsumed_records,
            unconsumed_bytes: st.bytes_after(st.committed),
            oldest_unconsumed_ms: st.oldest_unconsumed_ms,
            pending_bytes: st.pending_bytes,
            appended_records: c.appended_records.load(Ordering::Relaxed),
            commit_groups: c.commit_groups.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            zero_fills: c.zero_fills.load(Ordering::Relaxed),
            full_rejections: c.full_rejections.load(Ordering::Relaxed),
            corrupt_regions: c.corrupt_regions.load(Ordering::Relaxed),
            corrupt_bytes: c.corrupt_bytes.load(Ordering::Relaxed),
        }
    }

    /// What recovery found when the spool was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.inner.shared.recovery
    }

    /// The spool directory (canonical).
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// The configuration in force.
    pub fn config(&self) -> &SpoolConfig {
        &self.inner.shared.config
    }

    /// The random id of this spool directory (part of every [`super::Batch::dedup_token`]).
    pub fn instance_id(&self) -> [u8; 16] {
        self.inner.shared.instance
    }
}

impl Inner {
    fn close(&self) -> Result<(), SpoolError> {
        // Held until the committer is joined, so a concurrent `close` returns only after it.
        let mut committer = self
            .committer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(handle) = committer.take() else {
            return Ok(());
        };
        {
            let mut st = self.shared.lock();
            st.closed = true;
            // Cannot fail while we hold the handle: the committer owns the receiver.
            let _ = self.tx.send(Msg::Stop);
        }
        let joined = handle.join();
        self.shared.readable.notify_all();
        joined.map_err(|_| SpoolError::Failed("the spool committer thread panicked".into()))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(
                error = %e,
                dir = %self.shared.dir.display(),
                "closing the spool failed"
            );
        }
    }
}
