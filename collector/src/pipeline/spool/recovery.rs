//! Opening a spool directory: read the cursor, check every segment, cut a damaged tail, find
//! where reading resumes. The rules are in the module docs of [`super`].

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::error::io_err;
use super::format::{
    parse_segment_file_name, read_header, read_payload, segment_file_name, segment_header,
    sync_dir, write_cursor_file, Corruption, CursorState, HeaderRead, CURSOR_FILE, CURSOR_TMP_FILE,
    SEGMENT_HEADER_LEN,
};
use super::state::{RecoveryReport, SegMeta};
use super::{Durability, Position, SpoolConfig, SpoolError};

/// The state [`super::Spool::open`] starts from.
pub(super) struct Recovered {
    pub instance: [u8; 16],
    pub segments: BTreeMap<u64, SegMeta>,
    pub committed: Position,
    pub leases: Vec<Position>,
    pub unconsumed_records: u64,
    pub oldest_unconsumed_ms: Option<u64>,
    pub active_id: u64,
    pub active_file: File,
    pub active_len: u64,
    /// The active file holds zeros (preallocated) from `active_len` up to here.
    pub active_zeroed: u64,
    pub report: RecoveryReport,
}

/// Result of reading one segment from its start.
#[derive(Debug, Default)]
struct SegmentScan {
    file_len: u64,
    header_ok: bool,
    /// End of the last complete append before the first problem.
    end: u64,
    /// Zero bytes after `end` up to the end of the file (preallocated space); no problem.
    padding: u64,
    /// First problem and its offset.
    corruption: Option<(u64, Corruption)>,
    /// Records (of complete appends) at or after `from`, counting one that straddles it.
    records_after: u64,
    first_ts_after: Option<u64>,
    /// Start of the record that `from` falls inside, if any.
    straddle: Option<u64>,
    /// How many of the given lease offsets are record boundaries in the valid data.
    leases_found: usize,
}

fn scan_segment(path: &Path, from: u64, lease_offsets: &[u64]) -> io::Result<SegmentScan> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut scan = SegmentScan {
        file_len,
        end: SEGMENT_HEADER_LEN,
        ..SegmentScan::default()
    };
    if file_len < SEGMENT_HEADER_LEN {
        scan.corruption = Some((0, Corruption::SegmentHeader));
        return Ok(scan);
    }
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    r.read_exact(&mut header)?;
    if header != segment_header() {
        scan.corruption = Some((0, Corruption::SegmentHeader));
        return Ok(scan);
    }
    scan.header_ok = true;

    let mut off = SEGMENT_HEADER_LEN;
    let mut payload = Vec::new();
    // `Some(k)`: inside an append, the next record must have `rest == k`.
    let mut expect_rest: Option<u32> = None;
    // What the current (not yet complete) append adds once it completes.
    let (mut records, mut first_ts, mut straddle, mut lease_hits) = (0u64, None, None, 0usize);
    loop {
        let h = match read_header(&mut r, file_len - off)? {
            HeaderRead::End => break,
            HeaderRead::Corrupt(c) => {
                scan.corruption = Some((off, c));
                break;
            }
            HeaderRead::Header(h) => h,
        };
        payload.clear();
        if let Some(c) = read_payload(&mut r, &h, &mut payload)? {
            scan.corruption = Some((off, c));
            break;
        }
        if expect_rest.is_some_and(|k| k != h.rest) {
            scan.corruption = Some((off, Corruption::Sequence));
            break;
        }
        let next = off + h.encoded_len();
        if lease_offsets.contains(&off) {
            lease_hits += 1;
        }
        if off >= from || next > from {
            if off < from {
                straddle = Some(off);
            }
            records += 1;
            first_ts.get_or_insert(h.appended_at_ms);
        }
        off = next;
        if h.rest == 0 {
            expect_rest = None;
            scan.end = off;
            scan.records_after += records;
            scan.first_ts_after = scan.first_ts_after.or(first_ts);
            scan.straddle = scan.straddle.or(straddle);
            scan.leases_found += lease_hits;
            (records, first_ts, straddle, lease_hits) = (0, None, None, 0);
        } else {
            expect_rest = Some(h.rest - 1);
        }
    }
    if scan.corruption.is_none() && expect_rest.is_some() {
        // The file ends inside an append: its last records were never written.
        scan.corruption = Some((scan.end, Corruption::Truncated));
    }
    if scan.corruption.is_some() && zeros_from(path, scan.end, file_len)? {
        scan.corruption = None;
        scan.padding = file_len - scan.end;
    }
    if lease_offsets.contains(&scan.end) {
        scan.leases_found += 1;
    }
    Ok(scan)
}

/// Whether every byte of the file from `from` to `len` is zero.
fn zeros_from(path: &Path, from: u64, len: u64) -> io::Result<bool> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut r = f.take(len.saturating_sub(from));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}

fn load_cursor(dir: &Path, report: &mut RecoveryReport) -> Result<(CursorState, bool), SpoolError> {
    let path = dir.join(CURSOR_FILE);
    match fs::read(&path) {
        Ok(bytes) => match CursorState::decode(&bytes) {
            Some(c) => Ok((c, false)),
            None => {
                tracing::error!(
                    path = %path.display(),
                    "spool: cursor file is damaged; replaying everything on disk"
                );
                report.cursor_reset = true;
                report.corrupt_regions += 1;
                Ok((CursorState::fresh()?, true))
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !list_segments(dir)?.is_empty() {
                tracing::warn!(
                    path = %path.display(),
                    "spool: no cursor file next to segments; replaying everything on disk"
                );
            }
            Ok((CursorState::fresh()?, true))
        }
        Err(e) => Err(io_err(&path)(e)),
    }
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

fn remove_file(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

/// Writes a fresh segment file (header only) and returns it open for appending.
fn create_segment(dir: &Path, id: u64, fsync: bool) -> Result<File, SpoolError> {
    let path = dir.join(segment_file_name(id));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(io_err(&path))?;
    f.write_all(&segment_header()).map_err(io_err(&path))?;
    if fsync {
        f.sync_all().map_err(io_err(&path))?;
        sync_dir(dir)?;
    }
    Ok(f)
}

/// Cuts the file at `path` to `len` bytes.
fn truncate(path: &Path, len: u64, fsync: bool) -> Result<(), SpoolError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    f.set_len(len).map_err(io_err(path))?;
    if fsync {
        f.sync_all().map_err(io_err(path))?;
    }
    Ok(())
}

/// Recovers the spool in `dir` (which exists).
pub(super) fn recover(dir: &Path, config: &SpoolConfig) -> Result<Recovered, SpoolError> {
    let fsync = config.durability == Durability::Fsync;
    let mut report = RecoveryReport::default();
    remove_file(&dir.join(CURSOR_TMP_FILE))?;
    let (mut cursor, mut write_cursor) = load_cursor(dir, &mut report)?;

    let ids = list_segments(dir)?;
    let max_seen = ids.last().copied().unwrap_or(0);
    let mut kept = Vec::with_capacity(ids.len());
    for id in ids {
        if id < cursor.committed.segment {
            remove_file(&dir.join(segment_file_name(id)))?;
            report.deleted_segments += 1;
        } else {
            kept.push(id);
        }
    }

    let tail_id = kept.last().copied();
    let last_lease_segment = cursor.leases.last().map(|p| p.segment);
    let mut leases_ok = cursor.leases.iter().all(|p| kept.contains(&p.segment));
    let mut segments = BTreeMap::new();
    let (mut unconsumed, mut oldest) = (0u64, None);
    let mut tail_zeroed = None;
    for &id in &kept {
        let path = dir.join(segment_file_name(id));
        let is_tail = Some(id) == tail_id;
        let from = if id == cursor.committed.segment {
            cursor.committed.offset
        } else {
            0
        };
        let lease_offsets: Vec<u64> = cursor
            .leases
            .iter()
            .filter(|p| p.segment == id)
            .map(|p| p.offset)
            .collect();
        let scan = scan_segment(&path, from, &lease_offsets).map_err(io_err(&path))?;
        let mut meta = SegMeta {
            end: scan.end,
            file_len: scan.file_len,
        };
        if is_tail && scan.padding > 0 {
            // The committer writes over its zeros; they are not data on disk.
            meta.file_len = scan.end;
            tail_zeroed = Some((id, scan.file_len));
        }

        if is_tail && scan.file_len == 0 {
            // Crashed right after creating the file: not damage, just finish the job.
            drop(create_segment(dir, id, fsync)?);
            meta = SegMeta {
                end: SEGMENT_HEADER_LEN,
                file_len: SEGMENT_HEADER_LEN,
            };
        } else if let Some((at, why)) = scan.corruption {
            report.corrupt_regions += 1;
            if last_lease_segment.is_some_and(|s| id <= s) {
                leases_ok = false;
            }
            if is_tail {
                let keep = if scan.header_ok {
                    truncate(&path, scan.end, fsync)?;
                    scan.end
                } else {
                    drop(create_segment(dir, id, fsync)?);
                    0
                };
                report.torn_tail_bytes += scan.file_len - keep;
                meta = SegMeta {
                    end: scan.end,
                    file_len: scan.end,
                };
                tracing::warn!(
                    segment = id,
                    offset = at,
                    reason = ?why,
                    cut_bytes = scan.file_len - keep,
                    "spool: damaged tail cut back to the last complete append"
                );
            } else {
                let skipped = if scan.header_ok {
                    scan.file_len - scan.end
                } else {
                    scan.file_len
                };
                report.skipped_bytes += skipped;
                tracing::warn!(
                    segment = id,
                    offset = at,
                    reason = ?why,
                    skipped_bytes = skipped,
                    "spool: damaged segment; reading stops there and goes on with the next segment"
                );
            }
        }
        if scan.leases_found != lease_offsets.len() {
            leases_ok = false;
        }
        if id == cursor.committed.segment {
            if let Some(start) = scan.straddle {
                tracing::warn!(
                    segment = id,
                    cursor = cursor.committed.offset,
                    record = start,
                    "spool: cursor inside a record; moved back to the record's start"
                );
                cursor.committed.offset = start;
                leases_ok = false;
                write_cursor = true;
            } else if cursor.committed.offset > meta.end {
                tracing::warn!(
                    segment = id,
                    cursor = cursor.committed.offset,
                    end = meta.end,
                    "spool: cursor beyond the valid data; moved back to its end"
                );
                cursor.committed.offset = meta.end;
                leases_ok = false;
                write_cursor = true;
            }
        }
        unconsumed += scan.records_after;
        oldest = oldest.or(scan.first_ts_after);
        segments.insert(id, meta);
    }

    if !leases_ok && !cursor.leases.is_empty() {
        tracing::warn!(
            leases = cursor.leases.len(),
            "spool: leased batch bounds dropped (data damaged or gone); batches are cut afresh"
        );
        report.leases_dropped = true;
        cursor.leases.clear();
        write_cursor = true;
    }
    if !config.persist_batch_bounds && !cursor.leases.is_empty() {
        cursor.leases.clear();
        write_cursor = true;
    }

    // The sealed segment the cursor sits at the end of is consumed.
    let tail_id = segments.last_key_value().map(|(&id, _)| id);
    if let Some(m) = segments.get(&cursor.committed.segment) {
        if Some(cursor.committed.segment) != tail_id && cursor.committed.offset >= m.end {
            let id = cursor.committed.segment;
            remove_file(&dir.join(segment_file_name(id)))?;
            segments.remove(&id);
            report.deleted_segments += 1;
        }
    }

    let (active_id, active_file, active_len) = match segments.last_key_value() {
        Some((&id, m)) => {
            let path = dir.join(segment_file_name(id));
            let mut f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            f.seek(SeekFrom::Start(m.end)).map_err(io_err(&path))?;
            (id, f, m.end)
        }
        None => {
            let id = max_seen.max(cursor.committed.segment) + 1;
            let f = create_segment(dir, id, fsync)?;
            segments.insert(
                id,
                SegMeta {
                    end: SEGMENT_HEADER_LEN,
                    file_len: SEGMENT_HEADER_LEN,
                },
            );
            (id, f, SEGMENT_HEADER_LEN)
        }
    };

    if write_cursor {
        write_cursor_file(dir, &cursor, fsync)?;
    }
    if unconsumed == 0 {
        oldest = None;
    }
    report.segments = segments.len();
    report.replayable_records = unconsumed;
    report.replayed_batches = cursor.leases.len();
    if report.corrupt_regions > 0 || report.deleted_segments > 0 || unconsumed > 0 {
        tracing::info!(?report, "spool recovered");
    }
    Ok(Recovered {
        instance: cursor.instance,
        segments,
        committed: cursor.committed,
        leases: cursor.leases,
        unconsumed_records: unconsumed,
        oldest_unconsumed_ms: oldest,
        active_id,
        active_file,
        active_len,
        active_zeroed: tail_zeroed
            .filter(|&(id, _)| id == active_id)
            .map_or(active_len, |(_, z)| z.max(active_len)),
        report,
    })
}
