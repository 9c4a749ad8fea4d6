//! Browser-side assets the collector serves:
//!
//! - `GET /js/veil.js` — Veil's tracker (`collector/tracker/veil.min.js`, built from `veil.js`
//!   with terser), cached for a day with an ETag (`If-None-Match` → 304);
//! - `GET /opt-out` and `GET /js/opt-out.js` — the page where a visitor opts out of measurement
//!   (readable without JavaScript; with it, a switch that sets `localStorage.veil_ignore`, which
//!   veil.js honours on pages of the same origin).

use std::sync::OnceLock;

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::Full;

use crate::server::HttpResponse;

/// The minified tracker.
pub const VEIL_JS: &[u8] = include_bytes!("../../tracker/veil.min.js");
const OPT_OUT_HTML: &[u8] = include_bytes!("../../tracker/opt-out.html");
const OPT_OUT_JS: &[u8] = include_bytes!("../../tracker/opt-out.js");

fn etag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| format!("\"{}\"", &blake3::hash(VEIL_JS).to_hex()[..16]))
}

fn asset(body: &'static [u8], content_type: &'static str, cache: &'static str) -> HttpResponse {
    let mut r = http::Response::new(Full::new(Bytes::from_static(body)));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// `GET /js/veil.js`.
pub fn veil_js(req: &Request<Bytes>) -> HttpResponse {
    let tag = etag();
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut r = if matches {
        let mut r = http::Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        asset(
            VEIL_JS,
            "text/javascript; charset=utf-8",
            "public, max-age=86400, stale-while-revalidate=604800",
        )
    };
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400, stale-while-revalidate=604800"),
    );
    if let Ok(v) = HeaderValue::from_str(tag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

/// `GET /opt-out`.
pub fn opt_out_page() -> HttpResponse {
    let mut r = asset(OPT_OUT_HTML, "text/html; charset=utf-8", "no-cache");
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'self'"),
    );
    r
}

/// `GET /js/opt-out.js`.
pub fn opt_out_js() -> HttpResponse {
    asset(OPT_OUT_JS, "text/javascript; charset=utf-8", "no-cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_is_small_and_cached() {
        // The gzip budget (1.5 KB) is checked by collector/tracker/test/veil.test.mjs.
        assert!(
            VEIL_JS.len() < 3000,
            "veil.min.js is {} bytes",
            VEIL_JS.len()
        );
        let req = Request::builder()
            .uri("/js/veil.js")
            .body(Bytes::new())
            .unwrap();
        let r = veil_js(&req);
        assert_eq!(r.status(), StatusCode::OK);
        let tag = r.headers()[header::ETAG].clone();
        let req = Request::builder()
            .uri("/js/veil.js")
            .header("if-none-match", tag)
            .body(Bytes::new())
            .unwrap();
        assert_eq!(veil_js(&req).status(), StatusCode::NOT_MODIFIED);
    }
}
