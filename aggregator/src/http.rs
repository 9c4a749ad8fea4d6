//! Building the aggregator's HTTP responses: JSON bodies, file downloads and errors.
//!
//! Wire format: every response carries `Cache-Control: no-store`. JSON bodies are
//! `application/json`; an error is `{"error": "…"}` with the status of [`Error::status`] and the
//! text of [`Error::public_message`] (never ClickHouse's own), plus
//! `Retry-After: SECONDS` on a 429 and `WWW-Authenticate: Bearer` on a 401.

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

/// The response for an error.
pub fn error_response(e: &Error) -> HttpResponse {
    let mut body = json!({ "error": e.public_message() });
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
    if let Error::RateLimited(secs) | Error::LockedOut(secs) = e {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
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
    }
}
