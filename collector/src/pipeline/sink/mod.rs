//! The last step: where batches go. [`Sink`] is the I/O edge: the one writer thread (see
//! [`batch`](super::batch)) calls it with each batch it reads from the spool, and commits the
//! batch in the spool only after the sink stored it; [`clickhouse::ClickHouseSink`] is the real
//! one, tests and benches may use a fake.
//!
//! A batch travels as bytes, not rows: a [`RowBatch`] is the ClickHouse RowBinary of its rows in
//! [`INSERT_COLUMNS`] order, copied from the spool's payloads with the batch's token appended
//! ([`row_codec`](super::row_codec)), plus where each row starts and its timestamp. The
//! ClickHouse sink sends the bytes as they are; a fake that wants rows decodes them
//! ([`RowBatch::rows`]).

pub mod clickhouse;

pub use super::row_codec::INSERT_COLUMNS;
use super::{row_codec, EventRow};
use crate::Error;

/// Rows ready for `INSERT INTO events (INSERT_COLUMNS) FORMAT RowBinary`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowBatch {
    data: Vec<u8>,
    /// Each row's first byte in `data` and its `timestamp`.
    rows: Vec<(usize, u32)>,
}

impl RowBatch {
    /// An empty batch with room for `rows` rows of about `bytes` bytes in all.
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(bytes),
            rows: Vec::with_capacity(rows),
        }
    }

    /// Adds the row of one spool payload with the batch's `token`; false (nothing added) when
    /// the payload is damaged or in an unknown encoding.
    pub fn push_payload(&mut self, payload: &[u8], token: &str) -> bool {
        let start = self.data.len();
        match row_codec::append_row_binary(payload, token, &mut self.data) {
            Some(timestamp) => {
                self.rows.push((start, timestamp));
                true
            }
            None => false,
        }
    }

    /// Adds `row` with `token` as its `spool_token` (tests and benches build batches this way).
    pub fn push_row(&mut self, row: &EventRow, token: &str) {
        let mut payload = Vec::new();
        row_codec::encode(row, &mut payload);
        let added = self.push_payload(&payload, token);
        debug_assert!(added, "the encoder's output always walks");
    }

    /// A batch of `rows`, each with its own `spool_token` (tests and tools that have rows).
    pub fn from_rows(rows: &[EventRow]) -> Self {
        let mut b = Self::default();
        for r in rows {
            b.push_row(r, &r.spool_token);
        }
        b
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The RowBinary bytes of every row, in order.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Each row's `timestamp` (Unix seconds), in order.
    pub fn timestamps(&self) -> impl Iterator<Item = u32> + '_ {
        self.rows.iter().map(|&(_, t)| t)
    }

    fn row_bytes(&self, i: usize) -> &[u8] {
        let start = self.rows[i].0;
        let end = self.rows.get(i + 1).map_or(self.data.len(), |r| r.0);
        &self.data[start..end]
    }

    /// The rows whose timestamp `keep` accepts, as a new batch.
    pub fn filtered(&self, keep: impl Fn(u32) -> bool) -> RowBatch {
        let mut out = RowBatch::default();
        for (i, &(_, t)) in self.rows.iter().enumerate() {
            if keep(t) {
                out.rows.push((out.data.len(), t));
                out.data.extend_from_slice(self.row_bytes(i));
            }
        }
        out
    }

    /// The rows decoded (their `spool_token` set): for sinks that keep rows, and tests.
    pub fn rows(&self) -> Vec<EventRow> {
        (0..self.len())
            .filter_map(|i| row_codec::decode_row_binary(self.row_bytes(i)))
            .collect()
    }
}

/// Something that stores batches of rows. Called from the writer thread (blocking is fine).
pub trait Sink: Send + 'static {
    /// Stores every row or fails as a whole.
    fn write(&mut self, rows: &RowBatch) -> Result<(), Error>;

    /// Stores the rows of a batch that may have been written before a crash (all rows carry
    /// `token` in `spool_token`), skipping what is already stored; returns rows written.
    /// The default writes everything (for sinks without deduplication).
    fn write_missing(&mut self, token: &str, rows: &RowBatch) -> Result<usize, Error> {
        let _ = token;
        self.write(rows).map(|()| rows.len())
    }
}

/// Makes the sink the writer thread uses.
pub type SinkFactory = Box<dyn Fn() -> Result<Box<dyn Sink>, Error> + Send + Sync>;
