//! The durable spool: a write-ahead log between the request handlers and the ClickHouse writer.
//!
//! Handlers put the rows of one request into a [`Records`] and call [`Spool::append`] (async) or
//! [`Spool::append_blocking`]; the call returns once the whole append is on disk, so a `202`
//! sent after it can no longer be lost. One writer thread owns the [`SpoolReader`]: it takes
//! [`Batch`]es in append order, inserts each into ClickHouse and then [`SpoolReader::commit`]s
//! the batch's end, which persists the read cursor and deletes segment files that are fully
//! consumed.
//!
//! ```text
//! handlers ─ append(Records) ─▶ committer thread ─ writev + fsync per group ─▶ NNN.seg files
//!                                                                                  │
//! writer thread ◀─ next_batch() ── SpoolReader ◀── published (durable) data ───────┘
//!       └── insert into ClickHouse ── commit(batch.end()) ─▶ `cursor` file, old segments deleted
//! ```
//!
//! # Threads and waiting
//!
//! * **Appenders** (any thread or task) encode and checksum their records themselves, take a
//!   short lock to reserve space and enqueue, then wait: [`Spool::append`] awaits a tokio
//!   oneshot (it never blocks the runtime; the only lock taken is held for microseconds and never
//!   across I/O), [`Spool::append_blocking`] waits on a channel.
//! * **The committer** (one thread, `veil-spool-committer`) implements *group commit*: it takes
//!   the first waiting append and everything already queued behind it (and, with a non-zero
//!   [`SpoolConfig::group_window`], whatever arrives within that window), up to
//!   [`SpoolConfig::group_max_records`] records, writes the whole group with one
//!   vectored `write` (no copy), calls `fdatasync` once, and only then acknowledges every append
//!   of the group. With the default window of zero no request waits for company: groups form
//!   by themselves from the appends that arrive while the previous group is being synced.
//!   [`SpoolStats::commit_groups`] and [`SpoolStats::fsyncs`] count this, and
//!   [`Spool::observe_commits`] is told how long each write + sync took (the collector's
//!   `veil_spool_commit_seconds`).
//! * **The reader** is single: [`Spool::reader`] hands out one [`SpoolReader`] at a time
//!   ([`SpoolError::ReaderTaken`] otherwise), and its methods take `&mut self`. Run it on one
//!   writer thread: `next_batch` → insert → `commit`, in order. Reading ahead (several batches
//!   outstanding, committed in order) is allowed up to 64 batches.
//!
//! # On-disk format (version 1)
//!
//! All integers are little-endian. A spool directory holds:
//!
//! * `NNNNNNNNNNNNNNNNNNNN.seg`: segment files, named by a `u64` id written as 20 zero-padded
//!   decimal digits (`00000000000000000001.seg`). Ids start at 1, grow by one at each rotation
//!   and are never reused in a directory (a new id is always above every id seen and above the
//!   cursor's). Only the highest id, the *tail*, is ever written to; the others are *sealed*.
//!   Other file names are ignored.
//! * `cursor`: the reader's persisted state; `cursor.tmp` exists only while it is replaced.
//!
//! A segment file is a 16-byte header followed by records back to back:
//!
//! | offset | size | field                                     |
//! |-------:|-----:|-------------------------------------------|
//! | 0      | 8    | magic `VEILSPOL`                          |
//! | 8      | 4    | format version, `1`                       |
//! | 12     | 4    | reserved, `0`                             |
//!
//! Each record is a 20-byte header followed by the payload:
//!
//! | offset | size | field                                                                  |
//! |-------:|-----:|------------------------------------------------------------------------|
//! | 0      | 4    | CRC-32 (IEEE, `crc32fast`) of header bytes 4..20, then of the payload  |
//! | 4      | 4    | payload length `n`                                                     |
//! | 8      | 8    | append time, unix milliseconds (the same for all records of an append) |
//! | 16     | 4    | `rest`: how many records of the same append follow this one (0 = last) |
//! | 20     | n    | payload (opaque bytes)                                                 |
//!
//! An append never spans two segments (rotation happens between appends, when the next one
//! would take the tail past [`SpoolConfig::segment_bytes`]), so its records are contiguous and
//! end with `rest = 0`. That is how all-or-nothing is checked after a crash.
//!
//! A [`Position`] is `(segment id, byte offset in that file)`: the offset of a record header, or
//! the end of a segment's data. A batch's *end* is the position just after its last record.
//!
//! The `cursor` file:
//!
//! | offset   | size | field                                                               |
//! |---------:|-----:|---------------------------------------------------------------------|
//! | 0        | 8    | magic `VEILCUR1`                                                    |
//! | 8        | 16   | spool instance id (random, made when the directory is first used)   |
//! | 24       | 8    | committed position: segment                                         |
//! | 32       | 8    | committed position: offset                                          |
//! | 40       | 4    | `k`: number of leased batch ends (at most 64)                       |
//! | 44       | 16·k | leased batch ends, ascending, each `(segment u64, offset u64)`      |
//! | 44+16·k  | 4    | CRC-32 of all preceding bytes                                       |
//!
//! Everything before the committed position has been inserted. The *leases* are the ends of
//! batches handed to the reader but not yet committed; batch `i` starts where batch `i-1` ends
//! (the first where the committed position is). The file is replaced atomically: write
//! `cursor.tmp`, fsync it, rename it over `cursor`, fsync the directory.
//!
//! # Durability guarantee
//!
//! With [`Durability::Fsync`] (the default), an append is acknowledged only after its bytes and
//! the file length are on stable storage (`fdatasync`); a new segment file and the cursor are
//! also fsynced together with their directory. An acknowledged append survives a process crash
//! and a power loss; an append that was not acknowledged is either wholly present or wholly
//! absent after recovery (never a part of it). A failed write or fsync fails every append of
//! that group, and the tail is cut back to its last acknowledged length; if even that fails, the
//! spool stops accepting appends ([`SpoolError::Failed`]).
//!
//! With [`Durability::None`], nothing is fsynced (segments, directory, cursor): appends are
//! acknowledged once `write` returned. They survive a crash of the process but not of the
//! machine, and the cursor may go back after a power loss (records inserted again).
//!
//! A cancelled `append` future does not cancel the write: the records may still be stored
//! (at-least-once, like a client that retries after a timeout).
//!
//! # Preallocation
//!
//! An `fdatasync` after a write that grows the file must also make the new length (and, on
//! ext4 and XFS, the newly allocated blocks) durable: a journal commit on top of the data. A
//! write into blocks the file already has needs only the data and the device's cache flush.
//! So with [`Durability::Fsync`] the committer keeps the tail filled with zeros ahead of its
//! data ([`SpoolConfig::preallocate_bytes`], 1 MiB by default): when a group would pass the
//! zeroed end it writes the next stretch of zeros and syncs it (one journal commit per
//! stretch, not per group), then writes and syncs the group as an overwrite. Measured on this
//! project's machines (ext4 on virtio): write + `fdatasync` of a small group 240 → 146 µs. A
//! group of 32 kB or more (batches of events) gets no zeros: it extends the file as before,
//! since its one journal commit costs less than writing and syncing zeros for it. The
//! zeros are real zeros, not `fallocate`d space: ext4 would still journal the conversion of
//! unwritten extents at every write. The padding is removed when the segment is sealed and
//! when the spool closes; after a crash, recovery treats an all-zero remainder after the last
//! complete append as unused space, not damage (see below). Zeroed bytes are not counted as
//! data in [`SpoolStats::disk_bytes`].
//!
//! # Recovery at open
//!
//! [`Spool::open`] removes `cursor.tmp`, reads `cursor`, deletes segments below the committed
//! segment, then reads every remaining segment from its start, checking each record's length
//! and CRC and that `rest` counts down within an append. The valid data of a segment ends after
//! the last *complete* append before the first problem; what follows is handled like this:
//!
//! * **Zeros**: when every byte after the last complete append of a segment is zero, that is
//!   preallocated space (or blocks of a group that never reached the disk), not damage: it is
//!   neither counted nor cut, and a tail keeps it for its next appends.
//! * **Tail segment** (torn write, flipped byte, bad header): the file is
//!   truncated to its valid end (and fsynced), so new appends follow valid data. Records after
//!   the first bad one in that segment are lost, including valid ones. Counted in
//!   [`RecoveryReport::torn_tail_bytes`].
//! * **Sealed segment**: nothing is modified; the reader reads up to the valid end and then goes
//!   on with the next segment. The bytes skipped are counted in
//!   [`RecoveryReport::skipped_bytes`]; the file is deleted once the cursor passes it. A sealed
//!   segment with a bad header is skipped whole.
//! * Every such place counts once in [`RecoveryReport::corrupt_regions`] and in
//!   [`SpoolStats::corrupt_regions`], and is logged. Opening never fails because of file
//!   contents; only I/O errors (and an invalid configuration) fail it.
//! * An unreadable `cursor` (bad magic, length or CRC; it is written atomically, so this means
//!   outside damage) is replaced: everything still on disk is replayed (at-least-once) under a
//!   new instance id. A cursor beyond the valid data is moved back to its end; a cursor inside a
//!   record is moved back to that record's start.
//!
//! The reader checks CRCs again while reading. If a record turns out bad at run time (damage
//! after open), the rest of that segment's currently published data is skipped and counted the
//! same way; records of that append already read are still delivered.
//!
//! # Batch identity and deduplication
//!
//! A [`Batch`] carries its [`start`](Batch::start) and [`end`](Batch::end) positions,
//! [`Batch::id`] (the start as a `u128`: `segment << 64 | offset`) and
//! [`Batch::dedup_token`] (instance id + start + end, suitable as ClickHouse's
//! `insert_deduplication_token`). Batch bounds are made crash-stable by *leases*: before
//! [`SpoolReader::next_batch`] returns a new batch, its end is written to the `cursor` file
//! (one atomic write per batch; [`SpoolConfig::persist_batch_bounds`]). After a restart the
//! reader first hands out exactly those leased batches again, with the same start, end, records
//! and token, marked [`Batch::is_replay`]; only then does it read new batches. So:
//!
//! * a batch with `is_replay() == false` was never handed out before and needs no dedup check;
//! * a replayed batch may already be in ClickHouse: insert it with its token (ClickHouse drops
//!   a block whose token it has seen) or look it up by its range first.
//!
//! Leases are dropped (batches re-cut from the committed position, logged in
//! [`RecoveryReport::leases_dropped`]) only if the data they cover did not come back intact.
//! With `persist_batch_bounds = false` only the *start* of the first batch after a restart is
//! stable (it is the committed position); its end may differ. The instance id in the token keeps
//! tokens unique across hosts and across a wiped spool directory.
//!
//! # Bounds
//!
//! Bytes on disk plus bytes accepted but not yet written never exceed
//! [`SpoolConfig::max_bytes`] (give or take the 16-byte header of a segment started meanwhile
//! and the tail's zeroed stretch, at most [`SpoolConfig::preallocate_bytes`]),
//! and bytes waiting in memory for the committer never exceed
//! [`SpoolConfig::max_pending_bytes`]; an append that would cross either gets
//! [`SpoolError::Full`] (answer 503 + `Retry-After`). Space comes back when a commit lets whole
//! segments be deleted, which is why `max_bytes` must be at least twice `segment_bytes`. One
//! append larger than a segment can never be stored: [`SpoolError::TooLarge`].

mod committer;
mod error;
mod format;
mod reader;
mod records;
mod recovery;
mod state;
mod store;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use error::SpoolError;
pub use reader::{Batch, BatchLimits, Record, SpoolReader};
pub use records::Records;
pub use state::{Appended, RecoveryReport, SpoolStats};
pub use store::Spool;

/// A place in the log: a segment id and a byte offset in that segment file. Ordered by
/// segment, then offset, which is append order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Segment id (the number in the file name).
    pub segment: u64,
    /// Byte offset in the segment file: a record header or the end of the segment's data.
    pub offset: u64,
}

impl Position {
    /// A position.
    pub const fn new(segment: u64, offset: u64) -> Self {
        Self { segment, offset }
    }

    /// The position as one number, `segment << 64 | offset`; order-preserving.
    pub const fn to_u128(self) -> u128 {
        ((self.segment as u128) << 64) | self.offset as u128
    }

    /// The inverse of [`Self::to_u128`].
    pub const fn from_u128(v: u128) -> Self {
        Self {
            segment: (v >> 64) as u64,
            offset: v as u64,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.segment, self.offset)
    }
}

/// Whether appends wait for stable storage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Acknowledge after `fdatasync` (one per commit group). Survives power loss.
    #[default]
    Fsync,
    /// Acknowledge after `write`; never fsync. Survives a process crash, not a machine crash.
    None,
}

impl FromStr for Durability {
    type Err = SpoolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fsync" => Ok(Self::Fsync),
            "none" => Ok(Self::None),
            other => Err(SpoolError::Config(format!(
                "durability must be `fsync` or `none`, not `{other}`"
            ))),
        }
    }
}

/// How a spool is sized and how it commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Most bytes on disk plus accepted-but-unwritten bytes; beyond it appends get
    /// [`SpoolError::Full`]. At least `2 * segment_bytes`. Default 1 GiB.
    pub max_bytes: u64,
    /// The tail is rotated before an append would take it past this size; also the largest
    /// possible append (minus the 16-byte segment header). 256 B ..= 4 GiB. Default 64 MiB.
    pub segment_bytes: u64,
    /// Most bytes accepted but not yet written (held in memory); beyond it appends get
    /// [`SpoolError::Full`]. Default 64 MiB.
    pub max_pending_bytes: u64,
    /// Fsync or not. Default [`Durability::Fsync`].
    pub durability: Durability,
    /// How long the committer keeps collecting appends after the first one of a group. At most
    /// 1 s. Default zero: write at once (groups still form during the previous sync); a window
    /// trades latency for fewer syncs when appends are sparse.
    pub group_window: Duration,
    /// A group is written as soon as it holds this many records. Default 4096.
    pub group_max_records: usize,
    /// Persist each batch's end before handing it out so that batches are re-read with the same
    /// bounds after a crash (see the module docs). Costs one small atomic file write per batch.
    /// Default true.
    pub persist_batch_bounds: bool,
    /// With [`Durability::Fsync`], the committer fills the tail segment with zeros this far
    /// ahead of its data (in steps of this size, never past `segment_bytes`), so that an
    /// append overwrites allocated blocks and its `fdatasync` has no file size or block
    /// allocation to journal (see "Preallocation" in the module docs). 0 = off (appends extend
    /// the file). Default 1 MiB.
    pub preallocate_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            segment_bytes: 64 << 20,
            max_pending_bytes: 64 << 20,
            durability: Durability::Fsync,
            group_window: Duration::ZERO,
            group_max_records: 4096,
            persist_batch_bounds: true,
            preallocate_bytes: 1 << 20,
        }
    }
}

/// Smallest allowed [`SpoolConfig::segment_bytes`].
pub const MIN_SEGMENT_BYTES: u64 = 256;

impl SpoolConfig {
    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<(), SpoolError> {
        let bad = |m: String| Err(SpoolError::Config(m));
        if self.segment_bytes < MIN_SEGMENT_BYTES || self.segment_bytes > u64::from(u32::MAX) {
            return bad(format!(
                "segment_bytes must be between {MIN_SEGMENT_BYTES} and {} (got {})",
                u32::MAX,
                self.segment_bytes
            ));
        }
        if self.max_bytes / 2 < self.segment_bytes {
            return bad(format!(
                "max_bytes ({}) must be at least twice segment_bytes ({})",
                self.max_bytes, self.segment_bytes
            ));
        }
        if self.max_pending_bytes < format::RECORD_HEADER_LEN as u64 + 1 {
            return bad(format!(
                "max_pending_bytes is too small ({})",
                self.max_pending_bytes
            ));
        }
        if self.group_max_records == 0 {
            return bad("group_max_records must be at least 1".into());
        }
        if self.group_window > Duration::from_secs(1) {
            return bad(format!(
                "group_window must be at most 1s (got {:?})",
                self.group_window
            ));
        }
        Ok(())
    }

    /// The largest encoded append ([`Records::encoded_len`]) this configuration can store.
    pub fn max_append_bytes(&self) -> u64 {
        self.segment_bytes
            .saturating_sub(format::SEGMENT_HEADER_LEN)
            .min(self.max_pending_bytes)
    }
}
