//! Building the aggregator's HTTP responses: JSON bodies, file downloads and errors.
//!
//! Wire format: every response carries `Cache-Control: no-store`. JSON bodies are
//! `application/json`; an error is `{"error": "…"}` with the status of [`Error::status`] and the
//! text of [`Error::public_message`] (never ClickHouse's own), plus
//! `Retry-After: SECONDS` on a 429 and `WWW-Authenticate: Bearer` on a 401. A 5xx (ClickHouse
//! failed, or this side did) also carries a request id, as `"request_id": "…"` in the body and
//! the `X-Request-Id` header ([`error_response_with_id`]); the log line of the failure has the
//! same id (`request_id=…`), so an operator finds it without the client ever seeing
//! ClickHouse's text.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::Error;

/// A response of the aggregator.
pub type HttpResponse = Response<Full<Bytes>>;

/// A JSON response.
pub fn json_response(status: StatusCode, v: &Value) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A 200 with `body` of content type `ct`, as an attachment when `disposition` is given.
pub fn bytes_response(
    ct: &'static str,
    disposition: Option<String>,
    body: Vec<u8>,
) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(d) = disposition.and_then(|d| HeaderValue::from_str(&d).ok()) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, d);
    }
    r
}

/// The header carrying a failed request's id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A fresh id for a failed request: 16 hex digits, random (a process-wide counter when no
/// randomness can be had, still unique in this process's log).
pub fn request_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut b = [0u8; 8];
    let n = match getrandom::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    };
    format!("{n:016x}")
}

/// The response for an error.
pub fn error_response(e: &Error) -> HttpResponse {
    error_body(e, None)
}

/// [`error_response`] with the request id `id` in the body (`request_id`) and the
/// `X-Request-Id` header.
pub fn error_response_with_id(e: &Error, id: &str) -> HttpResponse {
    error_body(e, Some(id))
}

fn error_body(e: &Error, id: Option<&str>) -> HttpResponse {
    let mut body = json!({ "error": e.public_message() });
    if let Some(id) = id {
        body["request_id"] = json!(id);
    }
    if let Error::BudgetSpent { budget, .. } = e {
        body["budget"] = budget.clone();
    }
    if matches!(e, Error::SetupRequired) {
        body["setup_required"] = json!(true);
    }
    if matches!(e, Error::SecondFactor(_)) {
        body["second_factor"] = json!(true);
    }
    let mut r = json_response(e.status(), &body);
    if let Error::BudgetSpent { retry_after, .. } = e {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
    }
    if let Error::RateLimited(secs)
    | Error::LockedOut(secs)
    | Error::Busy {
        retry_after: secs, ..
    }
    | Error::ClickHouseBusy {
        retry_after: secs, ..
    } = e
    {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
    }
    if let Some(v) = id.and_then(|id| HeaderValue::from_str(id).ok()) {
        r.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    if matches!(
        e,
        Error::Unauthorized | Error::Denied(_) | Error::SetupRequired
    ) {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// `(domain, rest)` of a path under `/api/v1/sites/{domain}/…`, as the site's own routes
/// (people, digests, segments) read it; `None` for any other path.
pub(crate) fn site_route(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix("/api/v1/sites/")?.split_once('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_their_status_and_headers() {
        let r = error_response(&Error::RateLimited(3));
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        let r = error_response(&Error::Unauthorized);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let r = error_response(&Error::Io("zip: disk full".into()));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let r = error_response(&Error::ClickHouse(
            "Code: 62, e.displayText() = DB::Exception: Syntax error: WHERE pathname = '/secret'"
                .into(),
        ));
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        let raw = Error::ClickHouse("Code: 62, e.displayText() = DB::Exception: '/secret'".into());
        assert_eq!(raw.public_message(), crate::CLICKHOUSE_FAILED);
        let r = error_response(&Error::TooExpensive {
            code: Some(241),
            message: "too expensive".into(),
        });
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        let r = error_response(&Error::Busy {
            limit: 6,
            retry_after: 1,
        });
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = error_response(&Error::ClickHouseBusy {
            limit: 2,
            retry_after: 1,
        });
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let id = request_id();
        assert_eq!(id.len(), 16);
        assert_ne!(id, request_id());
        let r = error_response_with_id(&raw, &id);
        assert_eq!(r.headers()[REQUEST_ID_HEADER], id.as_str());
    }
}
