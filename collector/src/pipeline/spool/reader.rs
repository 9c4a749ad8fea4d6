//! [`SpoolReader`]: the single consumer. Reads published records in append order into
//! [`Batch`]es, leases their bounds, and commits them.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use super::error::io_err;
use super::format::{read_header, read_payload, Corruption, HeaderRead, MAX_LEASES};
use super::state::{unix_millis, Counters, Shared, Span};
use super::{Position, SpoolError};

/// Largest read buffer while reading a segment.
const READ_BUF: u64 = 256 << 10;

/// When [`SpoolReader::next_batch`] considers a batch ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most records in a batch (at least 1 is used). Default 10 000.
    pub max_records: usize,
    /// Most payload bytes in a batch; a single larger record still makes a batch of one.
    /// Default 16 MiB.
    pub max_bytes: usize,
    /// A batch that is not full is handed out once its first record is this old (by append
    /// time, or by the time the reader first saw it, whichever is older). Default 1 s.
    pub max_age: Duration,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_records: 10_000,
            max_bytes: 16 << 20,
            max_age: Duration::from_secs(1),
        }
    }
}

/// Where a record's payload is inside [`Batch`]'s buffer.
#[derive(Debug, Clone, Copy)]
struct RecordMeta {
    offset: usize,
    len: usize,
    appended_at_ms: u64,
}

/// One record of a [`Batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The bytes given to [`super::Records::push`].
    pub payload: &'a [u8],
    /// When it was appended, unix milliseconds.
    pub appended_at_ms: u64,
}

/// Consecutive records handed out by [`SpoolReader::next_batch`]; commit it with
/// [`SpoolReader::commit`]`(batch.end())` once it is stored.
pub struct Batch {
    start: Position,
    end: Position,
    replay: bool,
    instance: [u8; 16],
    data: Vec<u8>,
    records: Vec<RecordMeta>,
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("start", &self.start)
            .field("end", &self.end)
            .field("records", &self.records.len())
            .field("payload_bytes", &self.data.len())
            .field("replay", &self.replay)
            .finish()
    }
}

impl Batch {
    /// Position of the first record.
    pub fn start(&self) -> Position {
        self.start
    }

    /// Position just after the last record: what to pass to [`SpoolReader::commit`].
    pub fn end(&self) -> Position {
        self.end
    }

    /// The start as one number (`segment << 64 | offset`): unique within a spool directory and
    /// the same when the batch is handed out again after a restart.
    pub fn id(&self) -> u128 {
        self.start.to_u128()
    }

    /// `veil-spool-<instance hex>-<start segment>.<start offset>-<end segment>.<end offset>`:
    /// names exactly this batch's records, across restarts and hosts. Use it as ClickHouse's
    /// `insert_deduplication_token`.
    pub fn dedup_token(&self) -> String {
        let hex: String = self.instance.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "veil-spool-{hex}-{}.{}-{}.{}",
            self.start.segment, self.start.offset, self.end.segment, self.end.offset
        )
    }

    /// This batch was handed out before a restart (or to a previous reader) and may already be
    /// stored: insert it idempotently (with [`Self::dedup_token`]) or check first.
    pub fn is_replay(&self) -> bool {
        self.replay
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// No records (never the case for a batch handed out).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Sum of the payload sizes.
    pub fn payload_bytes(&self) -> usize {
        self.data.len()
    }

    /// The `i`-th record.
    pub fn get(&self, i: usize) -> Option<Record<'_>> {
        self.records.get(i).map(|m| self.record(m))
    }

    /// The records, in append order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Record<'_>> + '_ {
        self.records.iter().map(|m| self.record(m))
    }

    /// Append time of the first record (unix milliseconds).
    pub fn oldest_appended_at_ms(&self) -> Option<u64> {
        self.records.first().map(|m| m.appended_at_ms)
    }

    fn record(&self, m: &RecordMeta) -> Record<'_> {
        Record {
            payload: self
                .data
                .get(m.offset..m.offset + m.len)
                .unwrap_or_default(),
            appended_at_ms: m.appended_at_ms,
        }
    }
}

/// Records read but not yet handed out.
#[derive(Debug, Default)]
struct Building {
    start: Position,
    end: Position,
    data: Vec<u8>,
    records: Vec<RecordMeta>,
    first_seen: Option<Instant>,
}

impl Building {
    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn is_full(&self, max_records: usize, max_bytes: usize) -> bool {
        self.records.len() >= max_records
            || (!self.records.is_empty() && self.data.len() >= max_bytes)
    }

    fn first_ts(&self) -> Option<u64> {
        self.records.first().map(|m| m.appended_at_ms)
    }

    /// Age of the first record: by append time or since it was read, whichever is larger (so a
    /// wall clock that jumps back cannot hold a batch forever).
    fn age(&self) -> Option<Duration> {
        let seen = self.first_seen?.elapsed();
        let appended = Duration::from_millis(unix_millis().saturating_sub(self.first_ts()?));
        Some(seen.max(appended))
    }
}

/// A batch handed out and not yet committed.
#[derive(Debug, Clone, Copy)]
struct Outstanding {
    end: Position,
    records: u64,
    first_ts: u64,
}

/// The one consumer of a [`super::Spool`]. Move it to the writer thread and loop:
///
/// ```ignore
/// loop {
///     let Some(batch) = reader.next_batch(&limits, Duration::from_millis(200))? else {
///         if shutting_down { break } else { continue }
///     };
///     insert(&batch, batch.dedup_token())?; // retry as long as you like
///     reader.commit(batch.end())?;
/// }
/// ```
///
/// Blocking: waiting uses a condition variable, reading uses plain file reads. Not for use on
/// an async runtime thread.
pub struct SpoolReader {
    shared: Arc<Shared>,
    /// What this reader last committed.
    committed: Position,
    /// Next byte to read.
    read_pos: Position,
    /// Ends of leased batches from before, handed out again (exactly) first.
    replay: VecDeque<Position>,
    outstanding: VecDeque<Outstanding>,
    building: Building,
    /// The durable end seen by the last read.
    seen_end: Position,
    /// The open segment file.
    file: Option<(u64, File)>,
}

impl fmt::Debug for SpoolReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpoolReader")
            .field("committed", &self.committed)
            .field("read_pos", &self.read_pos)
            .field("replay", &self.replay.len())
            .field("outstanding", &self.outstanding.len())
            .field("buffered", &self.building.records.len())
            .finish()
    }
}

impl SpoolReader {
    pub(super) fn new(shared: Arc<Shared>) -> Result<Self, SpoolError> {
        if shared.reader_taken.swap(true, Ordering::SeqCst) {
            return Err(SpoolError::ReaderTaken);
        }
        let (committed, leases) = {
            let st = shared.lock();
            (st.committed, st.leases.clone())
        };
        Ok(Self {
            shared,
            committed,
            read_pos: committed,
            replay: leases.into(),
            outstanding: VecDeque::new(),
            building: Building::default(),
            seen_end: Position::default(),
            file: None,
        })
    }

    /// The next batch, in append order, starting where the previous one ended.
    ///
    /// Batches leased before a restart come first, exactly as they were (see
    /// [`Batch::is_replay`]), regardless of `limits`. Otherwise a batch is handed out as soon as
    /// it reaches `limits.max_records` or `limits.max_bytes`, or its first record is
    /// `limits.max_age` old, or the spool is closed; until then this blocks for at most `wait`.
    /// `Ok(None)` means no batch was ready within `wait` (records already read stay buffered
    /// for the next call), or the spool is closed and everything was read.
    ///
    /// Before returning a new batch its end is persisted as a lease (unless
    /// `persist_batch_bounds` is off); an error doing so is returned and the records stay
    /// buffered. Fails with [`SpoolError::TooManyOutstanding`] when 64 batches are handed out
    /// and not committed.
    pub fn next_batch(
        &mut self,
        limits: &BatchLimits,
        wait: Duration,
    ) -> Result<Option<Batch>, SpoolError> {
        if self.outstanding.len() >= MAX_LEASES {
            return Err(SpoolError::TooManyOutstanding(MAX_LEASES));
        }
        if let Some(&end) = self.replay.front() {
            if let Some(batch) = self.next_replay(end)? {
                return Ok(Some(batch));
            }
        }
        let max_records = limits.max_records.max(1);
        let deadline = Instant::now().checked_add(wait);
        loop {
            if self.fill(max_records, limits.max_bytes, None)? {
                return self.hand_out(false).map(Some);
            }
            let closed = self.shared.lock().closed;
            let age = self.building.age();
            match age {
                Some(age) if age >= limits.max_age || closed => {
                    return self.hand_out(false).map(Some)
                }
                None if closed => return Ok(None),
                _ => {}
            }
            let now = Instant::now();
            let mut wake = deadline;
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            if let Some(age) = age {
                let ready = now.checked_add(limits.max_age.saturating_sub(age));
                wake = match (wake, ready) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            let st = self.shared.lock();
            if st.durable_end() == self.seen_end && !st.closed {
                let timeout = wake.map_or(Duration::from_secs(3600), |w| {
                    w.saturating_duration_since(now)
                });
                drop(
                    self.shared
                        .readable
                        .wait_timeout(st, timeout)
                        .unwrap_or_else(PoisonError::into_inner),
                );
            }
        }
    }

    /// Hands out the leased batch ending at `end` again. `None` if its records cannot be read
    /// back exactly (then all leases are dropped and reading goes on normally).
    fn next_replay(&mut self, end: Position) -> Result<Option<Batch>, SpoolError> {
        self.fill(usize::MAX, usize::MAX, Some(end))?;
        if !self.building.is_empty() && self.building.end == end {
            self.replay.pop_front();
            return self.hand_out(true).map(Some);
        }
        tracing::warn!(lease_end = %end, read_to = %self.building.end,
            "spool: a leased batch could not be read back exactly; leases dropped");
        self.replay.clear();
        let leases: Vec<Position> = self.outstanding.iter().map(|o| o.end).collect();
        self.shared.lock().leases = leases;
        Ok(None)
    }

    /// Reads published records into the buffer until it is full, `stop_at` is reached, or
    /// there is nothing more. Returns true if it stopped because the batch is complete.
    fn fill(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        stop_at: Option<Position>,
    ) -> Result<bool, SpoolError> {
        loop {
            if self.building.is_full(max_records, max_bytes) {
                return Ok(true);
            }
            let span = {
                let st = self.shared.lock();
                self.seen_end = st.durable_end();
                st.locate(self.read_pos)
            };
            let Some(span) = span else { return Ok(false) };
            if stop_at.is_some_and(|s| Position::new(span.segment, span.start) >= s) {
                return Ok(true);
            }
            if !self.read_span(span, max_records, max_bytes, stop_at)? {
                return Ok(true);
            }
        }
    }

    /// Reads records from `span`. Returns false if it stopped early (batch complete).
    fn read_span(
        &mut self,
        span: Span,
        max_records: usize,
        max_bytes: usize,
        stop_at: Option<Position>,
    ) -> Result<bool, SpoolError> {
        let path = self.shared.segment_path(span.segment);
        let file = self.take_file(span.segment)?;
        let mut handle = &file;
        handle
            .seek(SeekFrom::Start(span.start))
            .map_err(io_err(&path))?;
        let len = span.end - span.start;
        let cap = usize::try_from(len.min(READ_BUF)).unwrap_or(64 << 10);
        let mut r = BufReader::with_capacity(cap, handle.take(len));
        let mut off = span.start;
        let mut complete = true;
        while off < span.end {
            let pos = Position::new(span.segment, off);
            if stop_at.is_some_and(|s| pos >= s) || self.building.records.len() >= max_records {
                complete = false;
                break;
            }
            let h = match read_header(&mut r, span.end - off).map_err(io_err(&path))? {
                HeaderRead::End => break,
                HeaderRead::Corrupt(c) => {
                    self.skip_damage(span, off, c);
                    off = span.end;
                    break;
                }
                HeaderRead::Header(h) => h,
            };
            let data = &mut self.building.data;
            if !self.building.records.is_empty()
                && data.len().saturating_add(h.len as usize) > max_bytes
            {
                complete = false;
                break;
            }
            let at = data.len();
            if let Some(c) = read_payload(&mut r, &h, data).map_err(io_err(&path))? {
                self.skip_damage(span, off, c);
                off = span.end;
                break;
            }
            if self.building.records.is_empty() {
                self.building.start = pos;
                self.building.first_seen = Some(Instant::now());
            }
            self.building.records.push(RecordMeta {
                offset: at,
                len: h.len as usize,
                appended_at_ms: h.appended_at_ms,
            });
            off += h.encoded_len();
            self.building.end = Position::new(span.segment, off);
        }
        drop(r);
        self.file = Some((span.segment, file));
        self.read_pos = Position::new(span.segment, off);
        Ok(complete)
    }

    /// Counts and skips the rest of a span after damage found while reading.
    fn skip_damage(&self, span: Span, off: u64, why: Corruption) {
        let skipped = span.end - off;
        Counters::add(&self.shared.counters.corrupt_regions, 1);
        Counters::add(&self.shared.counters.corrupt_bytes, skipped);
        tracing::error!(
            segment = span.segment,
            offset = off,
            reason = ?why,
            skipped_bytes = skipped,
            "spool: damaged record while reading; skipping to the end of the segment's data"
        );
    }

    /// The open handle of segment `id` (opened if needed); put it back in `self.file` after use.
    fn take_file(&mut self, id: u64) -> Result<File, SpoolError> {
        match self.file.take() {
            Some((open, f)) if open == id => Ok(f),
            _ => {
                let path = self.shared.segment_path(id);
                File::open(&path).map_err(io_err(&path))
            }
        }
    }

    /// Hands out the buffered records as a batch, leasing its end first if required.
    fn hand_out(&mut self, replayed: bool) -> Result<Batch, SpoolError> {
        let end = self.building.end;
        if !replayed && self.shared.config.persist_batch_bounds {
            let leases: Vec<Position> = self
                .outstanding
                .iter()
                .map(|o| o.end)
                .chain([end])
                .collect();
            self.shared.write_cursor(self.committed, &leases)?;
            self.shared.lock().leases = leases;
        }
        let b = std::mem::take(&mut self.building);
        self.outstanding.push_back(Outstanding {
            end,
            records: b.records.len() as u64,
            first_ts: b.first_ts().unwrap_or(0),
        });
        Ok(Batch {
            start: b.start,
            end,
            replay: replayed,
            instance: self.shared.instance,
            data: b.data,
            records: b.records,
        })
    }

    /// Marks everything up to `end` as stored: `end` must be the [`Batch::end`] of a batch
    /// handed out and not committed ([`SpoolError::InvalidCommit`] otherwise); earlier
    /// outstanding batches are committed with it. Persists the cursor atomically (fsync, rename,
    /// fsync of the directory), then deletes segment files that are wholly consumed. On error
    /// nothing changed and the commit can be retried.
    pub fn commit(&mut self, end: Position) -> Result<(), SpoolError> {
        let idx = self
            .outstanding
            .iter()
            .position(|o| o.end == end)
            .ok_or(SpoolError::InvalidCommit(end))?;
        let leases: Vec<Position> = if self.shared.config.persist_batch_bounds {
            self.outstanding
                .iter()
                .skip(idx + 1)
                .map(|o| o.end)
                .chain(self.replay.iter().copied())
                .collect()
        } else {
            Vec::new()
        };
        self.shared.write_cursor(end, &leases)?;
        let done: u64 = self.outstanding.drain(..=idx).map(|o| o.records).sum();
        self.committed = end;
        let next_ts = match self.outstanding.front() {
            Some(o) => Some(o.first_ts),
            None => self.building.first_ts().or_else(|| self.peek_ts()),
        };
        let doomed = {
            let mut st = self.shared.lock();
            st.committed = end;
            st.leases = leases;
            if st.bytes_after(end) == 0 {
                st.unconsumed_records = 0;
                st.oldest_unconsumed_ms = None;
            } else {
                st.unconsumed_records = st.unconsumed_records.saturating_sub(done);
                // No timestamp only if the record arrived after we looked: it is brand new.
                st.oldest_unconsumed_ms = Some(next_ts.unwrap_or_else(unix_millis));
            }
            let doomed = st.consumed_segments();
            for id in &doomed {
                if let Some(m) = st.segments.remove(id) {
                    st.disk_bytes = st.disk_bytes.saturating_sub(m.file_len);
                }
            }
            doomed
        };
        if self
            .file
            .as_ref()
            .is_some_and(|(id, _)| doomed.contains(id))
        {
            self.file = None;
        }
        for id in doomed {
            let path = self.shared.segment_path(id);
            if let Err(e) = std::fs::remove_file(&path) {
                // Deleted again at the next open (it is below the cursor).
                tracing::warn!(
                    error = %e,
                    path = %path.display(),
                    "spool: could not delete a consumed segment"
                );
            }
        }
        Ok(())
    }

    /// Append time of the next unread record, if one is published.
    fn peek_ts(&mut self) -> Option<u64> {
        let span = self.shared.lock().locate(self.read_pos)?;
        let file = self.take_file(span.segment).ok()?;
        let mut handle = &file;
        let header = handle.seek(SeekFrom::Start(span.start)).and_then(|_| {
            read_header(
                &mut handle.take(span.end - span.start),
                span.end - span.start,
            )
        });
        self.file = Some((span.segment, file));
        match header.ok()? {
            HeaderRead::Header(h) => Some(h.appended_at_ms),
            _ => None,
        }
    }

    /// The last committed position.
    pub fn committed(&self) -> Position {
        self.committed
    }

    /// Batches handed out and not yet committed.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Records read but not yet handed out.
    pub fn buffered(&self) -> usize {
        self.building.records.len()
    }
}

impl Drop for SpoolReader {
    fn drop(&mut self) {
        self.shared.reader_taken.store(false, Ordering::SeqCst);
    }
}
