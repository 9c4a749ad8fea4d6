//! The marketer dashboard: static files from `dashboards/web/`, embedded in the binary with
//! `include_bytes!` (no CDN, works offline). The page is a client of the Stats API only, renders
//! every data string as text, and is served with a strict Content-Security-Policy.
//!
//! Routes: `GET /` (the page), `GET /app.js`, `GET /app.css`. `dashboards/grafana/veil.json` is the
//! operators' Grafana dashboard ([`GRAFANA_DASHBOARD`]).

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;

/// Content-Security-Policy of every dashboard response: same-origin scripts, styles and API
/// calls only; no inline script, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../web/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../web/app.js"),
    },
    Asset {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../web/app.css"),
    },
];

/// Answers `GET`/`HEAD` for the dashboard's files; `None` for any other path.
pub fn handle<B>(req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    let path = req.uri().path();
    let path = if path == "/index.html" { "/" } else { path };
    let asset = ASSETS.iter().find(|a| a.path == path)?;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = Response::new(Full::new(Bytes::from_static(
            b"{\"error\":\"method not allowed; use GET\"}",
        )));
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return Some(r);
    }
    let mut r = Response::new(Full::new(Bytes::from_static(asset.body)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(r)
}

/// The operators' Grafana dashboard (`dashboards/grafana/veil.json`), over the collector's
/// Prometheus metrics. Import it into Grafana with a Prometheus data source that scrapes
/// `/metrics`.
pub const GRAFANA_DASHBOARD: &str = include_str!("../grafana/veil.json");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_page_with_csp() {
        let req = Request::builder().uri("/").body(()).unwrap();
        let r = handle(&req).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert!(handle(&Request::builder().uri("/nope").body(()).unwrap()).is_none());
    }

    #[test]
    fn script_never_writes_html() {
        let js = std::str::from_utf8(ASSETS[1].body).unwrap();
        assert!(
            !js.contains("innerHTML")
                && !js.contains("outerHTML")
                && !js.contains("insertAdjacentHTML")
        );
    }
}
