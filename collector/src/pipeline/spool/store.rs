//! [`Spool`]: opening a directory, appending, statistics and closing; the state shared by the
//! appenders, the committer thread and the reader.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;

use super::committer::{Ack, Committer, Msg, Pending};
use super::error::io_err;
use super::format::{segment_file_name, write_cursor_file, CursorState, SEGMENT_HEADER_LEN};
use super::reader::SpoolReader;
use super::records::Records;
use super::recovery::{self, RecoveryReport};
use super::{Durability, Position, SpoolConfig, SpoolError};

/// Where a successful append was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Position of the first record.
    pub start: Position,
    /// Position just after the last record.
    pub end: Position,
    /// Number of records.
    pub records: u32,
}

/// A snapshot of the spool's gauges and counters, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes in segment files (consumed-but-not-yet-deleted parts included).
    pub disk_bytes: u64,
    /// Segment files.
    pub segments: usize,
    /// Records appended and not yet committed by the reader (approximate only after the reader
    /// skipped damaged data at run time; exact again once everything is committed).
    pub unconsumed_records: u64,
    /// Bytes (headers included) appended and not yet committed by the reader.
    pub unconsumed_bytes: u64,
    /// Append time (unix milliseconds) of the oldest record not yet committed.
    pub oldest_unconsumed_ms: Option<u64>,
    /// Bytes accepted but not yet written by the committer.
    pub pending_bytes: u64,
    /// Records acknowledged since open.
    pub appended_records: u64,
    /// Groups written by the committer since open (each ends with one fsync of the tail).
    pub commit_groups: u64,
    /// `fsync`/`fdatasync` calls on segment files and the directory by the committer since open.
    pub fsyncs: u64,
    /// Appends refused with [`SpoolError::Full`] since open.
    pub full_rejections: u64,
    /// Places where damaged data was found (at open or while reading) since open.
    pub corrupt_regions: u64,
    /// Bytes dropped or skipped because of damage since open.
    pub corrupt_bytes: u64,
}

impl SpoolStats {
    /// How long ago the oldest unconsumed record was appended.
    pub fn oldest_unconsumed_age(&self) -> Option<Duration> {
        self.oldest_unconsumed_ms
            .map(|t| Duration::from_millis(unix_millis().saturating_sub(t)))
    }
}

/// Now, in unix milliseconds (0 if the clock is before 1970).
pub(super) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the spool knows about one segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SegMeta {
    /// End of the readable data (published appends; valid data for a damaged sealed segment).
    pub end: u64,
    /// File length (counts towards `max_bytes`).
    pub file_len: u64,
}

/// Readable bytes `[start, end)` of one segment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub segment: u64,
    pub start: u64,
    pub end: u64,
}

/// Mutable state, behind [`Shared::state`]. No I/O is done while it is locked.
#[derive(Debug)]
pub(super) struct State {
    /// Every segment file, by id; the last one is the tail.
    pub segments: BTreeMap<u64, SegMeta>,
    /// The reader's persisted position.
    pub committed: Position,
    /// Persisted lease ends (a new reader hands these batches out again first).
    pub leases: Vec<Position>,
    /// Accepted, not yet written.
    pub pending_bytes: u64,
    /// Sum of `file_len`.
    pub disk_bytes: u64,
    /// Records after `committed`.
    pub unconsumed_records: u64,
    /// Append time of the first record after `committed`; `None` exactly when there is none.
    pub oldest_unconsumed_ms: Option<u64>,
    /// No more appends.
    pub closed: bool,
    /// Set when the committer could not repair the tail after an error.
    pub failed: Option<String>,
}

impl State {
    /// The end of the published data: the tail and its length.
    pub fn durable_end(&self) -> Position {
        self.segments
            .last_key_value()
            .map_or(Position::default(), |(&id, m)| Position::new(id, m.end))
    }

    /// Readable bytes at or after `pos`.
    pub fn bytes_after(&self, pos: Position) -> u64 {
        self.segments
            .range(pos.segment..)
            .map(|(&id, m)| m.end.saturating_sub(Self::span_start(id, pos)))
            .sum()
    }

    /// The first segment with readable data at or after `pos`.
    pub fn locate(&self, pos: Position) -> Option<Span> {
        self.segments.range(pos.segment..).find_map(|(&id, m)| {
            let start = Self::span_start(id, pos);
            (start < m.end).then_some(Span {
                segment: id,
                start,
                end: m.end,
            })
        })
    }

    fn span_start(id: u64, pos: Position) -> u64 {
        if id == pos.segment {
            pos.offset.max(SEGMENT_HEADER_LEN)
        } else {
            SEGMENT_HEADER_LEN
        }
    }

    /// Sealed segments wholly before the committed position.
    pub fn consumed_segments(&self) -> Vec<u64> {
        let tail = self.segments.last_key_value().map(|(&id, _)| id);
        self.segments
            .iter()
            .filter(|&(&id, m)| {
                Some(id) != tail
                    && (id < self.committed.segment
                        || (id == self.committed.segment && self.committed.offset >= m.end))
            })
            .map(|(&id, _)| id)
            .collect()
    }
}

/// Monotonic counters (see [`SpoolStats`]).
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub appended_records: AtomicU64,
    pub commit_groups: AtomicU64,
    pub fsyncs: AtomicU64,
    pub full_rejections: AtomicU64,
    pub corrupt_regions: AtomicU64,
    pub corrupt_bytes: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What the appenders, the committer and the reader share.
pub(super) struct Shared {
    pub dir: PathBuf,
    pub config: SpoolConfig,
    /// Random id of this spool directory (in dedup tokens).
    pub instance: [u8; 16],
    pub state: Mutex<State>,
    /// Signalled when data is published or the spool closes.
    pub readable: Condvar,
    pub counters: Counters,
    pub reader_taken: AtomicBool,
    pub recovery: RecoveryReport,
    _registration: DirRegistration,
}

impl Shared {
    /// Locks the state. A poisoned lock is used as is: no code panics while holding it, and the
    /// state stays consistent between statements.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether to fsync.
    pub fn fsync(&self) -> bool {
        self.config.durability == Durability::Fsync
    }

    /// Path of a segment file.
    pub fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(segment_file_name(id))
    }

    /// Replaces the cursor file.
    pub fn write_cursor(&self, committed: Position, leases: &[Position]) -> Result<(), SpoolError> {
        let state = CursorState {
            instance: self.instance,
            committed,
            leases: leases.to_vec(),
        };
        write_cursor_file(&self.dir, &state, self.fsync())
    }
}

/// Directories open in this process; two spools on one directory would corrupt it.
static OPEN_DIRS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Holds a directory's entry in [`OPEN_DIRS`] until the last user of the spool is gone.
struct DirRegistration(PathBuf);

impl DirRegistration {
    fn claim(dir: &Path) -> Result<Self, SpoolError> {
        let mut open = OPEN_DIRS.lock().unwrap_or_else(PoisonError::into_inner);
        if !open.insert(dir.to_path_buf()) {
            return Err(SpoolError::AlreadyOpen(dir.to_path_buf()));
        }
        Ok(Self(dir.to_path_buf()))
    }
}

impl Drop for DirRegistration {
    fn drop(&mut self) {
        OPEN_DIRS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
    }
}

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
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let committer = Committer::new(
            shared.clone(),
            rx,
            rec.active_id,
            rec.active_file,
            rec.active_len,
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
