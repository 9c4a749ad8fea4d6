//! The last step: where batches go. [`Sink`] is the I/O edge: the one writer thread (see
//! [`batch`](super::batch)) calls it with each batch it reads from the spool, and commits the
//! batch in the spool only after the sink stored it; [`clickhouse::ClickHouseSink`] is the real
//! one, tests and benches may use a fake.
//!
//! A batch travels as bytes, not rows: a [`RowBatch`] is the ClickHouse RowBinary of its rows in
//! [`INSERT_COLUMNS`] order, copied from the spool's payloads with the batch's token appended
//! ([`row_codec`](super::row_codec)), plus where each row starts and where its sorting key
//! is. The ClickHouse sink sends the bytes as they are; a fake that wants rows decodes them
//! ([`RowBatch::rows`]).
//!
//! **Sorted before the insert.** The writer puts a batch's rows in the order of `events`'
//! sorting key — site, UTC day, `visitor_id`, `timestamp` ([`RowBatch::sort_for_insert`]) —
//! before it is sent. A MergeTree insert sorts each block by the table's key and then permutes
//! every column; a block that already is in that order skips both
//! (`MergeTreeDataWriterBlocksAlreadySorted`). Rows arrive in time order, so `events` (ordered
//! by visitor within a day) had to re-sort every block: with the batch sorted here, and
//! `events_tail` keyed by site, hour, visitor and time, neither `events` nor the tail's view
//! sorts a batch whose rows of a site fall in one hour (benches/README, "Measured
//! 2026-12-07"). The order is a pure function of the batch (ties keep their spool order), so a
//! replayed batch is sent byte for byte as before, which the cluster's block deduplication needs.

pub mod clickhouse;

use super::row_codec::RowKey;
pub use super::row_codec::INSERT_COLUMNS;
use super::{row_codec, EventRow};
use crate::Error;

/// Rows ready for `INSERT INTO events (INSERT_COLUMNS) FORMAT RowBinary`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowBatch {
    data: Vec<u8>,
    /// Each row's first byte in `data` and where its key columns are (from that byte).
    rows: Vec<(usize, RowKey)>,
}

/// Seconds in a UTC day (`events` is ordered by `toDate(timestamp)` after `site`).
const DAY_SECS: u32 = 86_400;

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
            Some(key) => {
                self.rows.push((start, key));
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
        self.rows.iter().map(|(_, k)| k.timestamp)
    }

    fn row_bytes(&self, i: usize) -> &[u8] {
        let start = self.rows[i].0;
        let end = self.rows.get(i + 1).map_or(self.data.len(), |r| r.0);
        &self.data[start..end]
    }

    /// Row `i`'s site bytes and visitor id.
    fn site_and_visitor(&self, i: usize) -> (&[u8], [u8; 16]) {
        let row = self.row_bytes(i);
        let k = &self.rows[i].1;
        let site = row.get(k.site.0 as usize..k.site.1 as usize).unwrap_or(&[]);
        let v = k.visitor as usize;
        let visitor = row
            .get(v..v + 16)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .unwrap_or_default();
        (site, visitor)
    }

    /// Puts the rows in the order of `events`' sorting key — site, UTC day, visitor, time, as
    /// ClickHouse compares them (bytes, then numbers; see the module docs); rows with equal
    /// keys keep their order, so the result depends on the batch alone.
    pub fn sort_for_insert(&mut self) {
        let n = self.rows.len();
        // Each row's key once, every part inline (a batch is tens of MB: comparisons that
        // followed pointers into it would miss the cache), the row's index last so that an
        // unstable sort of these unique keys is the stable order. A site is its rank among
        // the batch's sites, sorted by their bytes.
        let mut ids: std::collections::HashMap<&[u8], u32> = std::collections::HashMap::new();
        let mut keys: Vec<(u32, u32, [u8; 16], u32, u32)> = Vec::with_capacity(n);
        for i in 0..n {
            let (site, visitor) = self.site_and_visitor(i);
            let next = u32::try_from(ids.len()).unwrap_or(u32::MAX);
            let id = *ids.entry(site).or_insert(next);
            let ts = self.rows[i].1.timestamp;
            keys.push((
                id,
                ts / DAY_SECS,
                visitor,
                ts,
                u32::try_from(i).unwrap_or(u32::MAX),
            ));
        }
        let mut by_bytes: Vec<(&[u8], u32)> = ids.into_iter().collect();
        by_bytes.sort_unstable();
        let mut rank = vec![0u32; by_bytes.len()];
        for (r, (_, id)) in by_bytes.iter().enumerate() {
            rank[*id as usize] = u32::try_from(r).unwrap_or(u32::MAX);
        }
        for k in &mut keys {
            k.0 = rank[k.0 as usize];
        }
        if keys.windows(2).all(|w| w[0] <= w[1]) {
            return;
        }
        keys.sort_unstable();
        let mut out = RowBatch::with_capacity(n, self.data.len());
        for k in keys {
            let i = k.4 as usize;
            out.rows.push((out.data.len(), self.rows[i].1));
            out.data.extend_from_slice(self.row_bytes(i));
        }
        *self = out;
    }

    /// The rows whose timestamp `keep` accepts, as a new batch.
    pub fn filtered(&self, keep: impl Fn(u32) -> bool) -> RowBatch {
        let mut out = RowBatch::default();
        for (i, &(_, k)) in self.rows.iter().enumerate() {
            if keep(k.timestamp) {
                out.rows.push((out.data.len(), k));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(site: &str, timestamp: u32, visitor: u8, name: &str) -> EventRow {
        EventRow {
            site: site.into(),
            timestamp,
            visitor_id: [visitor; 16],
            name: name.into(),
            pathname: format!("/{name}"),
            spool_token: "tok".into(),
            ..EventRow::default()
        }
    }

    fn key(r: &EventRow) -> (String, u32, [u8; 16], u32) {
        (
            r.site.clone(),
            r.timestamp / DAY_SECS,
            r.visitor_id,
            r.timestamp,
        )
    }

    /// Rows as they arrive: in time order, sites and visitors interleaved, across midnight,
    /// with two rows whose keys are equal.
    fn arrivals() -> Vec<EventRow> {
        let midnight = 1_764_979_200; // 2025-12-06 00:00:00 UTC
        vec![
            row("b.example", midnight - 2, 9, "late"),
            row("a.example", midnight - 1, 3, "x"),
            row("b.example", midnight - 1, 1, "y"),
            row("a.example", midnight, 7, "after-midnight"),
            row("a.example", midnight, 2, "first"),
            row("a.example", midnight, 2, "second"),
            row("a.example", midnight + 5, 1, "z"),
            row("b.example", midnight + 5, 9, "w"),
            row("a.example", midnight - 3, 200, "early"),
        ]
    }

    #[test]
    fn sorting_puts_rows_in_the_events_tables_order_and_keeps_every_row() {
        let rows = arrivals();
        let mut batch = RowBatch::from_rows(&rows);
        batch.sort_for_insert();
        let sorted = batch.rows();
        let mut want = rows.clone();
        // A stable sort by the same key: what ClickHouse's ORDER BY of `events` expects.
        want.sort_by_key(key);
        assert_eq!(sorted, want);
        let keys: Vec<_> = sorted.iter().map(key).collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{keys:?}");
        // The day comes before the visitor: yesterday's late visitor 200 sorts before today's 2.
        let a: Vec<&str> = sorted
            .iter()
            .filter(|r| r.site == "a.example")
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(a, ["x", "early", "z", "first", "second", "after-midnight"]);
        // Timestamps follow their rows.
        let ts: Vec<u32> = batch.timestamps().collect();
        assert_eq!(ts, sorted.iter().map(|r| r.timestamp).collect::<Vec<_>>());
    }

    #[test]
    fn sorting_depends_on_the_batch_alone() {
        // A replayed batch must be sent byte for byte as before (block deduplication).
        let (mut a, mut b) = (
            RowBatch::from_rows(&arrivals()),
            RowBatch::from_rows(&arrivals()),
        );
        a.sort_for_insert();
        b.sort_for_insert();
        assert_eq!(a.bytes(), b.bytes());
        let once = a.clone();
        a.sort_for_insert();
        assert_eq!(a, once, "sorting a sorted batch changes nothing");
        // What a partial replay sends is still in order.
        let midnight = 1_764_979_200;
        let today = a.filtered(|t| t >= midnight);
        let keys: Vec<_> = today.rows().iter().map(key).collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(today.len(), 5);
    }
}
