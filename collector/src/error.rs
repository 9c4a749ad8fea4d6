//! The collector's one error type and how each case answers over HTTP.

use http::StatusCode;

/// Every way a request or the collector itself can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not what the endpoint accepts; the message says what is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than `--max-body-bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// A batch holds more events than `--max-events-per-batch`.
    #[error("batch holds more than {limit} events (--max-events-per-batch)")]
    TooManyEvents {
        /// The configured limit.
        limit: usize,
    },
    /// The body did not arrive within `--body-read-timeout`.
    #[error("request body not received within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// The body could not be read (client went away, broken framing).
    #[error("could not read request body: {0}")]
    BodyRead(String),
    /// The sender may not do this (e.g. override a visitor's `ip` without an ingest key); the
    /// message says what it needs.
    #[error("{0}")]
    Forbidden(String),
    /// No such route.
    #[error("no route for {0}")]
    NotFound(String),
    /// Known route, wrong method.
    #[error("method not allowed; use {0}")]
    MethodNotAllowed(&'static str),
    /// The spool is full (`--spool-max-bytes`): back off and retry.
    #[error("the spool is full (ClickHouse is behind or down); retry later")]
    SpoolFull,
    /// Today's visitor salt could not be loaded yet (ClickHouse unreachable): retry.
    #[error("visitor salt not available yet (is ClickHouse reachable?); retry later")]
    NoSalt,
    /// A rate limit was hit (`ip` or `site`).
    #[error("rate limit exceeded ({0}); slow down")]
    RateLimited(&'static str),
    /// The collector is shutting down.
    #[error("shutting down; retry on another instance")]
    ShuttingDown,
    /// Writing to ClickHouse failed.
    #[error("sink error: {0}")]
    Sink(String),
    /// Configuration is invalid (caught before binding sockets).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Socket or file I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) | Error::BodyRead(_) => StatusCode::BAD_REQUEST,
            Error::PayloadTooLarge { .. } | Error::TooManyEvents { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Error::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::SpoolFull | Error::ShuttingDown | Error::NoSalt => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Sink(_) | Error::Config(_) | Error::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The label used in `veil_requests_rejected_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::BodyRead(_) => "body_read",
            Error::PayloadTooLarge { .. } => "body_too_large",
            Error::TooManyEvents { .. } => "too_many_events",
            Error::BodyTimeout(_) => "body_timeout",
            Error::NotFound(_) => "not_found",
            Error::Forbidden(_) => "forbidden",
            Error::RateLimited("ip") => "rate_limited_ip",
            Error::RateLimited(_) => "rate_limited_site",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::SpoolFull => "spool_full",
            Error::ShuttingDown => "shutting_down",
            Error::NoSalt => "no_salt",
            Error::Sink(_) | Error::Config(_) | Error::Io(_) => "internal",
        }
    }
}
