//! [`Records`]: one append (e.g. the rows of one HTTP request), encoded in place.

use super::format::{record_crc, RECORD_HEADER_LEN};

/// The records of one append, already laid out as they will be on disk (header + payload each),
/// so the committer writes this buffer as it is. Stored all-or-nothing.
///
/// Build it with [`push`](Self::push), or serialize straight into it with
/// [`push_with`](Self::push_with) to avoid an intermediate buffer:
///
/// ```ignore
/// let mut records = Records::new();
/// for row in &rows {
///     records.push_with(|buf| serde_json::to_writer(buf, row))?;
/// }
/// spool.append(records).await?;
/// ```
#[derive(Debug, Clone, Default)]
pub struct Records {
    buf: Vec<u8>,
    count: u32,
    oversized: bool,
}

/// An append ready for the committer: timestamps, `rest` and CRCs filled in.
#[derive(Debug)]
pub(super) struct Frame {
    /// Encoded records.
    pub buf: Vec<u8>,
    /// Number of records.
    pub count: u32,
    /// The append time written into every record.
    pub appended_at_ms: u64,
}

impl Frame {
    /// Encoded size.
    pub fn len(&self) -> u64 {
        self.buf.len() as u64
    }
}

impl Records {
    /// An empty append.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty append with room for `bytes` of payload and headers.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            ..Self::default()
        }
    }

    /// An append of one record.
    pub fn one(payload: &[u8]) -> Self {
        let mut r = Self::with_capacity(RECORD_HEADER_LEN + payload.len());
        r.push(payload);
        r
    }

    /// Adds a record (copies `payload` once, into the on-disk layout).
    pub fn push(&mut self, payload: &[u8]) {
        let _ = self.push_with(|buf| {
            buf.extend_from_slice(payload);
            Ok::<(), std::convert::Infallible>(())
        });
    }

    /// Adds a record whose payload `write` appends to the given buffer. If `write` fails the
    /// record is not added (whatever it wrote is removed) and its error is returned.
    pub fn push_with<E>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
        if let Err(e) = write(&mut self.buf) {
            self.buf.truncate(start);
            return Err(e);
        }
        let len = self.buf.len() - start - RECORD_HEADER_LEN;
        match (u32::try_from(len), self.count.checked_add(1)) {
            (Ok(len), Some(count)) => {
                if let Some(field) = self.buf.get_mut(start + 4..start + 8) {
                    field.copy_from_slice(&len.to_le_bytes());
                }
                self.count = count;
            }
            _ => {
                // Cannot be encoded; the whole append will be refused as too large.
                self.buf.truncate(start);
                self.oversized = true;
            }
        }
        Ok(())
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// No records.
    pub fn is_empty(&self) -> bool {
        self.count == 0 && !self.oversized
    }

    /// Bytes this append takes on disk (20 bytes of header per record plus the payloads);
    /// compare with [`super::SpoolConfig::max_append_bytes`].
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Removes all records, keeping the allocation.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
        self.oversized = false;
    }

    /// A record could not be encoded (payload over 4 GiB or over `u32::MAX` records).
    pub(super) fn oversized(&self) -> bool {
        self.oversized
    }

    /// Fills in the append time, `rest` and the CRCs.
    pub(super) fn seal(self, appended_at_ms: u64) -> Frame {
        let Self { mut buf, count, .. } = self;
        let mut at = 0usize;
        let mut rest = count;
        while rest > 0 {
            let Some(header) = buf.get_mut(at..at + RECORD_HEADER_LEN) else {
                break;
            };
            rest -= 1;
            header[8..16].copy_from_slice(&appended_at_ms.to_le_bytes());
            header[16..20].copy_from_slice(&rest.to_le_bytes());
            let mut len = [0u8; 4];
            len.copy_from_slice(&header[4..8]);
            let end = at + RECORD_HEADER_LEN + u32::from_le_bytes(len) as usize;
            let Some(record) = buf.get_mut(at..end) else {
                break;
            };
            let crc = record_crc(&record[4..RECORD_HEADER_LEN], &record[RECORD_HEADER_LEN..]);
            record[..4].copy_from_slice(&crc.to_le_bytes());
            at = end;
        }
        Frame {
            buf,
            count,
            appended_at_ms,
        }
    }
}

impl<B: AsRef<[u8]>> FromIterator<B> for Records {
    fn from_iter<I: IntoIterator<Item = B>>(iter: I) -> Self {
        let mut r = Self::new();
        for p in iter {
            r.push(p.as_ref());
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::{read_header, read_payload, HeaderRead};
    use super::*;

    #[test]
    fn sealed_records_read_back() {
        let mut r: Records = ["a", "", "hello"].into_iter().collect();
        r.push_with(|buf| serde_json::to_writer(buf, &serde_json::json!({"k": 1})))
            .unwrap();
        let failed: Result<(), &str> = r.push_with(|buf| {
            buf.extend_from_slice(b"partial");
            Err("nope")
        });
        assert!(failed.is_err());
        assert_eq!(r.len(), 4);
        assert_eq!(r.encoded_len(), 4 * 20 + 1 + 5 + 7);
        let frame = r.seal(1_700_000_000_123);
        let mut rd: &[u8] = &frame.buf;
        let mut remaining = frame.len();
        let mut got = Vec::new();
        loop {
            match read_header(&mut rd, remaining).unwrap() {
                HeaderRead::End => break,
                HeaderRead::Corrupt(c) => panic!("corrupt: {c:?}"),
                HeaderRead::Header(h) => {
                    let mut out = Vec::new();
                    assert_eq!(read_payload(&mut rd, &h, &mut out).unwrap(), None);
                    assert_eq!(h.appended_at_ms, 1_700_000_000_123);
                    remaining -= h.encoded_len();
                    got.push((h.rest, out));
                }
            }
        }
        let expected: Vec<(u32, Vec<u8>)> = vec![
            (3, b"a".to_vec()),
            (2, vec![]),
            (1, b"hello".to_vec()),
            (0, br#"{"k":1}"#.to_vec()),
        ];
        assert_eq!(got, expected);
    }

    #[test]
    fn flipped_bit_fails_the_crc() {
        let frame = Records::one(b"payload").seal(1);
        for i in 0..frame.buf.len() {
            let mut b = frame.buf.clone();
            b[i] ^= 0x10;
            let mut rd: &[u8] = &b;
            let ok = match read_header(&mut rd, b.len() as u64).unwrap() {
                HeaderRead::Header(h) => read_payload(&mut rd, &h, &mut Vec::new())
                    .unwrap()
                    .is_none(),
                _ => false,
            };
            assert!(!ok, "flip at byte {i} not detected");
        }
    }
}
