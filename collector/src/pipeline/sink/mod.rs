//! The last step: where batches go. [`Sink`] is the I/O edge: the one writer thread (see
//! [`batch`](super::batch)) calls it with each batch it reads from the spool, and commits the
//! batch in the spool only after the sink stored it; [`clickhouse::ClickHouseSink`] is the real
//! one, tests and benches may use a fake.

pub mod clickhouse;

use super::EventRow;
use crate::Error;

/// Something that stores batches of rows. Called from the writer thread (blocking is fine).
pub trait Sink: Send + 'static {
    /// Stores every row or fails as a whole.
    fn write(&mut self, rows: &[EventRow]) -> Result<(), Error>;

    /// Stores the rows of a batch that may have been written before a crash (all rows carry
    /// `token` in `spool_token`), skipping what is already stored; returns rows written.
    /// The default writes everything (for sinks without deduplication).
    fn write_missing(&mut self, token: &str, rows: &[EventRow]) -> Result<usize, Error> {
        let _ = token;
        self.write(rows).map(|()| rows.len())
    }
}

/// Makes the sink the writer thread uses.
pub type SinkFactory = Box<dyn Fn() -> Result<Box<dyn Sink>, Error> + Send + Sync>;
