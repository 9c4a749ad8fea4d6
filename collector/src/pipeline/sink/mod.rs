//! Step 5: where batches go. [`Sink`] is the I/O edge: the writer threads call it with a full
//! batch; [`clickhouse::ClickHouseSink`] is the real one, tests may use a fake, and the durable
//! spool (issue 7) wraps it.

pub mod clickhouse;

use super::EventRow;
use crate::Error;

/// Something that stores batches of rows. Called from a writer thread (blocking is fine).
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

/// Makes one sink per writer thread.
pub type SinkFactory = Box<dyn Fn() -> Result<Box<dyn Sink>, Error> + Send + Sync>;
