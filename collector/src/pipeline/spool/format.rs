//! Byte layouts (segment header, record header, cursor file) and the small file helpers that
//! write them. The layouts are documented in the module docs of [`super`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use super::error::io_err;
use super::{Position, SpoolError};

/// First 8 bytes of a segment file.
pub(super) const SEGMENT_MAGIC: [u8; 8] = *b"VEILSPOL";
/// Segment format version.
pub(super) const FORMAT_VERSION: u32 = 1;
/// Bytes before the first record of a segment.
pub(super) const SEGMENT_HEADER_LEN: u64 = 16;
/// Bytes before each record's payload.
pub(super) const RECORD_HEADER_LEN: usize = 20;
/// First 8 bytes of the cursor file.
pub(super) const CURSOR_MAGIC: [u8; 8] = *b"VEILCUR1";
/// The cursor file's name.
pub(super) const CURSOR_FILE: &str = "cursor";
/// The cursor file while it is being replaced.
pub(super) const CURSOR_TMP_FILE: &str = "cursor.tmp";
/// Most leased batch ends in the cursor file (and so most batches outstanding).
pub(super) const MAX_LEASES: usize = 64;

/// `00000000000000000042.seg`.
pub(super) fn segment_file_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// The id in a segment file name, `None` for any other name.
pub(super) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header every segment starts with.
pub(super) fn segment_header() -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, u32::from_le_bytes)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, u64::from_le_bytes)
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RecordHeader {
    /// Stored checksum.
    pub crc: u32,
    /// Payload length.
    pub len: u32,
    /// Unix milliseconds at append.
    pub appended_at_ms: u64,
    /// Records of the same append after this one.
    pub rest: u32,
}

impl RecordHeader {
    fn decode(b: &[u8; RECORD_HEADER_LEN]) -> Self {
        Self {
            crc: u32_at(b, 0),
            len: u32_at(b, 4),
            appended_at_ms: u64_at(b, 8),
            rest: u32_at(b, 16),
        }
    }

    /// Header plus payload.
    pub fn encoded_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.len)
    }
}

/// The CRC of a record: header bytes 4..20 (`len`, `appended_at`, `rest`) then the payload.
pub(super) fn record_crc(header_tail: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header_tail);
    h.update(payload);
    h.finalize()
}

/// Why the bytes at some offset are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Corruption {
    /// Fewer bytes than the header or the length field needs (torn write, or a damaged length).
    Truncated,
    /// The checksum does not match.
    Checksum,
    /// `rest` does not count down within an append.
    Sequence,
    /// The segment header is missing or wrong.
    SegmentHeader,
}

/// Outcome of reading a record header.
#[derive(Debug)]
pub(super) enum HeaderRead {
    /// A header whose length fits in what is left.
    Header(RecordHeader),
    /// No bytes left.
    End,
    /// Not a valid record.
    Corrupt(Corruption),
}

/// Reads a record header from `r`, which has `remaining` bytes of segment data left.
pub(super) fn read_header(r: &mut impl Read, remaining: u64) -> io::Result<HeaderRead> {
    if remaining == 0 {
        return Ok(HeaderRead::End);
    }
    if remaining < RECORD_HEADER_LEN as u64 {
        return Ok(HeaderRead::Corrupt(Corruption::Truncated));
    }
    let mut b = [0u8; RECORD_HEADER_LEN];
    match r.read_exact(&mut b) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Ok(HeaderRead::Corrupt(Corruption::Truncated));
        }
        Err(e) => return Err(e),
    }
    let h = RecordHeader::decode(&b);
    if h.encoded_len() > remaining {
        return Ok(HeaderRead::Corrupt(Corruption::Truncated));
    }
    Ok(HeaderRead::Header(h))
}

/// Appends the payload of `h` from `r` to `out` and checks the CRC. Returns the problem if
/// there is one; unless the result is `Ok(None)`, `out` is left as it was.
pub(super) fn read_payload(
    r: &mut impl Read,
    h: &RecordHeader,
    out: &mut Vec<u8>,
) -> io::Result<Option<Corruption>> {
    let start = out.len();
    let len = h.len as usize;
    out.reserve(len);
    match r.by_ref().take(u64::from(h.len)).read_to_end(out) {
        Ok(n) if n == len => {}
        Ok(_) => {
            out.truncate(start);
            return Ok(Some(Corruption::Truncated));
        }
        Err(e) => {
            out.truncate(start);
            return Err(e);
        }
    }
    let mut tail = [0u8; RECORD_HEADER_LEN - 4];
    tail[..4].copy_from_slice(&h.len.to_le_bytes());
    tail[4..12].copy_from_slice(&h.appended_at_ms.to_le_bytes());
    tail[12..].copy_from_slice(&h.rest.to_le_bytes());
    let payload = out.get(start..).unwrap_or_default();
    if record_crc(&tail, payload) != h.crc {
        out.truncate(start);
        return Ok(Some(Corruption::Checksum));
    }
    Ok(None)
}

/// What the `cursor` file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CursorState {
    /// Random id of this spool directory.
    pub instance: [u8; 16],
    /// Everything before this has been inserted.
    pub committed: Position,
    /// Ends of batches handed out and not committed, ascending.
    pub leases: Vec<Position>,
}

const CURSOR_FIXED_LEN: usize = 8 + 16 + 16 + 4;

impl CursorState {
    /// A fresh state with a random instance id.
    pub fn fresh() -> Result<Self, SpoolError> {
        let mut instance = [0u8; 16];
        getrandom::fill(&mut instance).map_err(|e| SpoolError::Io {
            path: CURSOR_FILE.into(),
            source: io::Error::other(format!("no randomness for the spool instance id: {e}")),
        })?;
        Ok(Self {
            instance,
            committed: Position::default(),
            leases: Vec::new(),
        })
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(CURSOR_FIXED_LEN + 16 * self.leases.len() + 4);
        b.extend_from_slice(&CURSOR_MAGIC);
        b.extend_from_slice(&self.instance);
        b.extend_from_slice(&self.committed.segment.to_le_bytes());
        b.extend_from_slice(&self.committed.offset.to_le_bytes());
        b.extend_from_slice(
            &u32::try_from(self.leases.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        for p in &self.leases {
            b.extend_from_slice(&p.segment.to_le_bytes());
            b.extend_from_slice(&p.offset.to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses the file; `None` if anything is off (magic, length, checksum, order).
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < CURSOR_FIXED_LEN + 4 || b.get(..8)? != CURSOR_MAGIC {
            return None;
        }
        let n = u32_at(b, 40) as usize;
        if n > MAX_LEASES || b.len() != CURSOR_FIXED_LEN + 16 * n + 4 {
            return None;
        }
        let body = b.len() - 4;
        if crc32fast::hash(b.get(..body)?) != u32_at(b, body) {
            return None;
        }
        let instance = <[u8; 16]>::try_from(b.get(8..24)?).ok()?;
        let committed = Position::new(u64_at(b, 24), u64_at(b, 32));
        let leases: Vec<Position> = (0..n)
            .map(|i| {
                let at = CURSOR_FIXED_LEN + 16 * i;
                Position::new(u64_at(b, at), u64_at(b, at + 8))
            })
            .collect();
        let ascending =
            leases.first().is_none_or(|f| *f > committed) && leases.windows(2).all(|w| w[0] < w[1]);
        ascending.then_some(Self {
            instance,
            committed,
            leases,
        })
    }
}

/// Replaces `dir/cursor` atomically: temp file, (fsync), rename, (fsync dir).
pub(super) fn write_cursor_file(
    dir: &Path,
    state: &CursorState,
    fsync: bool,
) -> Result<(), SpoolError> {
    let tmp = dir.join(CURSOR_TMP_FILE);
    let dst = dir.join(CURSOR_FILE);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(&state.encode()).map_err(io_err(&tmp))?;
    if fsync {
        f.sync_all().map_err(io_err(&tmp))?;
    }
    drop(f);
    fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
    if fsync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes file creations, renames and deletions in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(42), "00000000000000000042.seg");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.seg"),
            Some(42)
        );
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("42.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.seg"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000042.seg.tmp"),
            None
        );
        assert_eq!(parse_segment_file_name("cursor"), None);
    }

    #[test]
    fn segment_header_layout() {
        let h = segment_header();
        assert_eq!(&h[..8], b"VEILSPOL");
        assert_eq!(&h[8..], &[1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn cursor_round_trip_and_damage() {
        let s = CursorState {
            instance: [7; 16],
            committed: Position::new(3, 100),
            leases: vec![Position::new(3, 200), Position::new(4, 16)],
        };
        let b = s.encode();
        assert_eq!(b.len(), 44 + 32 + 4);
        assert_eq!(CursorState::decode(&b), Some(s.clone()));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x01;
            assert_eq!(
                CursorState::decode(&d),
                None,
                "flipped byte {i} not detected"
            );
        }
        assert_eq!(CursorState::decode(&b[..b.len() - 1]), None);
        assert_eq!(CursorState::decode(&[]), None);
        // Leases out of order are refused even with a valid CRC.
        let bad = CursorState {
            leases: vec![Position::new(4, 16), Position::new(3, 200)],
            ..s
        };
        assert_eq!(CursorState::decode(&bad.encode()), None);
    }

    #[test]
    fn headers_detect_truncation() {
        let mut r: &[u8] = &[0u8; 10];
        assert!(matches!(
            read_header(&mut r, 10).unwrap(),
            HeaderRead::Corrupt(Corruption::Truncated)
        ));
        let mut r: &[u8] = &[];
        assert!(matches!(read_header(&mut r, 0).unwrap(), HeaderRead::End));
        // A zero-filled tail: length 0 fits, but the CRC of zeros is not 0.
        let zeros = [0u8; 40];
        let mut r: &[u8] = &zeros;
        let HeaderRead::Header(h) = read_header(&mut r, 40).unwrap() else {
            panic!("expected a header")
        };
        let mut out = Vec::new();
        assert_eq!(
            read_payload(&mut r, &h, &mut out).unwrap(),
            Some(Corruption::Checksum)
        );
        // A length running past the data.
        let mut b = [0u8; 20];
        b[4..8].copy_from_slice(&100u32.to_le_bytes());
        let mut r: &[u8] = &b;
        assert!(matches!(
            read_header(&mut r, 50).unwrap(),
            HeaderRead::Corrupt(Corruption::Truncated)
        ));
    }
}
