//! The spool's one error type.

use std::io;
use std::path::{Path, PathBuf};

use super::Position;

/// Every way a spool operation can fail.
///
/// For HTTP handlers: [`Full`](Self::Full) and [`Closed`](Self::Closed) mean "retry later"
/// (503 with `Retry-After`), [`TooLarge`](Self::TooLarge) means "never" (413), the rest are
/// server errors.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Accepting the append would take the spool past `max_bytes` (on disk plus not yet
    /// written) or past `max_pending_bytes` (in memory). Nothing was stored. Space comes back
    /// when the reader commits and whole segments can be deleted.
    #[error("spool is full; retry later")]
    Full,
    /// The append is larger than any append this spool can store.
    #[error("append of {bytes} bytes exceeds the largest possible append of {limit} bytes")]
    TooLarge {
        /// Encoded size of the append.
        bytes: u64,
        /// [`super::SpoolConfig::max_append_bytes`].
        limit: u64,
    },
    /// The spool was closed; nothing more is appended.
    #[error("spool is closed")]
    Closed,
    /// A write failed and the tail could not be repaired; the spool accepts no more appends
    /// (what was acknowledged before is still readable).
    #[error("spool stopped accepting appends after an I/O error: {0}")]
    Failed(String),
    /// [`super::Spool::reader`] was called while another reader is alive.
    #[error("the spool reader is already in use")]
    ReaderTaken,
    /// The directory is already open by another [`super::Spool`] in this process.
    #[error("spool directory {} is already open in this process", .0.display())]
    AlreadyOpen(PathBuf),
    /// [`super::SpoolReader::commit`] with a position that is not the end of a batch handed out
    /// and not yet committed.
    #[error("{0} is not the end of a batch handed out and not yet committed")]
    InvalidCommit(Position),
    /// Too many batches handed out without a commit.
    #[error("{0} batches are handed out and not committed; commit before reading more")]
    TooManyOutstanding(usize),
    /// The configuration is inconsistent.
    #[error("invalid spool configuration: {0}")]
    Config(String),
    /// A file operation failed.
    #[error("spool I/O on {}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

impl SpoolError {
    /// Whether the caller should answer "busy, retry later" rather than "broken".
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Full | Self::Closed)
    }
}

/// `map_err` helper: an I/O error on `path`.
pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A copy of an I/O error on `path`, for failing several waiters with one error.
pub(super) fn io_copy(path: &Path, e: &io::Error) -> SpoolError {
    SpoolError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(e.kind(), e.to_string()),
    }
}
