//! The spool's shared state: what the appenders ([`super::store`]), the committer thread
//! ([`super::committer`]), the reader ([`super::reader`]) and recovery at open
//! ([`super::recovery`]) all work on — the segment table and positions behind one mutex, the
//! counters, the directory's claim — and the types they hand each other. It imports none of
//! them, so each depends on it and none on another through it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::format::{segment_file_name, write_cursor_file, CursorState, SEGMENT_HEADER_LEN};
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
    /// Stretches of zeros written ahead of the tail's data (preallocation) since open, each
    /// synced once (not counted in `fsyncs`).
    pub zero_fills: u64,
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
    pub zero_fills: AtomicU64,
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
    /// This directory's claim (released when the last user is gone).
    pub _registration: DirRegistration,
    /// Told how long each committed run took (see `Spool::observe_commits`).
    pub on_commit: OnceLock<CommitObserver>,
}

/// What `Spool::observe_commits` is given: called by the committer thread after each run.
pub(super) type CommitObserver = Box<dyn Fn(Duration) + Send + Sync>;

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
pub(super) struct DirRegistration(PathBuf);

impl DirRegistration {
    pub(super) fn claim(dir: &Path) -> Result<Self, SpoolError> {
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

/// What [`super::Spool::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files kept.
    pub segments: usize,
    /// Records after the cursor, to be read again.
    pub replayable_records: u64,
    /// Leased batches that will be handed out again with their old bounds.
    pub replayed_batches: usize,
    /// Consumed segments deleted.
    pub deleted_segments: usize,
    /// Places where damaged data was found (a damaged tail, a damaged sealed segment, an
    /// unreadable cursor file).
    pub corrupt_regions: u64,
    /// Bytes cut from the end of the tail segment (torn or damaged records, incomplete appends).
    pub torn_tail_bytes: u64,
    /// Bytes of sealed segments that are skipped because they are damaged or follow damage.
    pub skipped_bytes: u64,
    /// The cursor file was unreadable: everything on disk is replayed, under a new instance id.
    pub cursor_reset: bool,
    /// Leased batch bounds could not be honoured (the data they cover was damaged or gone), so
    /// batches after the committed position are cut afresh.
    pub leases_dropped: bool,
}
