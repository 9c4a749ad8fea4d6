//! The marketer dashboard: static files from `dashboards/web/`, embedded in the binary with
//! `include_bytes!` (no CDN, works offline). The page is a client of the Stats API only, renders
//! every data string as text, and is served with a strict Content-Security-Policy.
//!
//! Routes (`GET`/`HEAD`; any other method gets 405 `{"error": …}`):
//! - pages, all the same HTML shell (`web/index.html`; `web/app.js` routes on the path):
//!   `/` (site list), `/site/{domain}` (a site's dashboard), `/site/{domain}/settings` (admin
//!   settings), `/share/{domain}#auth=TOKEN` (a shared link, read-only; the token is in the
//!   fragment, never sent to the server: `web/app.js` reads it, and moves an old link's
//!   `?auth=TOKEN` there); `/login` (e-mail and password, or an API token), `/setup#token=TOKEN`
//!   (the first-run owner setup link `veil up` prints) and `/invite#token=TOKEN` (an
//!   invitation; both tokens stay in the fragment, and the page removes them from the address
//!   and history once read), `/account` (log out everywhere, password, second factor);
//! - assets: `/app.js`, `/app.css`, `/vendor/uPlot.iife.min.js`, `/vendor/uPlot.min.css`
//!   (uPlot 1.6.32, MIT, `web/vendor/uPlot.LICENSE`); the countries map's
//!   `/vendor/d3-array.min.js`, `/vendor/d3-geo.min.js`, `/vendor/topojson-client.min.js` and
//!   `/vendor/countries-110m.json` (d3-array 3.2.4, d3-geo 3.1.1, topojson-client 3.1.0,
//!   world-atlas 2.0.2 with alpha-2 ids from `scripts/vocab/world_map.py`; ISC, Natural Earth
//!   public domain; `web/vendor/d3.LICENSE`).
//!
//! Every response carries [`CSP`], `X-Content-Type-Options: nosniff`, `Referrer-Policy:
//! no-referrer` and a strong `ETag` (a hash of the embedded bytes); a matching `If-None-Match`
//! gets 304. `dashboards/grafana/veil.json` is the operators' Grafana dashboard
//! ([`GRAFANA_DASHBOARD`]).

use std::sync::OnceLock;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;

/// Content-Security-Policy of every dashboard response: same-origin scripts, styles and API
/// calls only; no inline script or style, no framing, no plugins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// URL path.
    pub path: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The bytes, as committed under `dashboards/web/`.
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JSON: &str = "application/json";

/// Every file the dashboard serves; the page shell is first.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: HTML,
        body: include_bytes!("../web/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: JS,
        body: include_bytes!("../web/app.js"),
    },
    Asset {
        path: "/app.css",
        content_type: CSS,
        body: include_bytes!("../web/app.css"),
    },
    Asset {
        path: "/vendor/uPlot.iife.min.js",
        content_type: JS,
        body: include_bytes!("../web/vendor/uPlot.iife.min.js"),
    },
    Asset {
        path: "/vendor/uPlot.min.css",
        content_type: CSS,
        body: include_bytes!("../web/vendor/uPlot.min.css"),
    },
    Asset {
        path: "/vendor/d3-array.min.js",
        content_type: JS,
        body: include_bytes!("../web/vendor/d3-array.min.js"),
    },
    Asset {
        path: "/vendor/d3-geo.min.js",
        content_type: JS,
        body: include_bytes!("../web/vendor/d3-geo.min.js"),
    },
    Asset {
        path: "/vendor/topojson-client.min.js",
        content_type: JS,
        body: include_bytes!("../web/vendor/topojson-client.min.js"),
    },
    Asset {
        path: "/vendor/countries-110m.json",
        content_type: JSON,
        body: include_bytes!("../web/vendor/countries-110m.json"),
    },
];

/// True for a path that shows the page shell: `/`, `/index.html`, `/login`, `/setup`,
/// `/invite`, `/account`, `/site/{domain}[/…]`, `/share/{domain}`.
pub fn is_page(path: &str) -> bool {
    if matches!(
        path,
        "/" | "/index.html" | "/login" | "/setup" | "/invite" | "/account"
    ) {
        return true;
    }
    ["/site/", "/share/"].iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
    })
}

/// FNV-1a over the bytes: a stable validator for the embedded file.
fn etag(body: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| ASSETS.iter().map(|a| etag(a.body)).collect())
}

fn secure_headers(r: &mut Response<Full<Bytes>>) {
    let h = r.headers_mut();
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
}

/// Answers `GET`/`HEAD` for the dashboard's pages and files; `None` for any other path.
pub fn handle<B>(req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    let path = req.uri().path();
    let index = if is_page(path) {
        0
    } else {
        ASSETS.iter().position(|a| a.path == path)?
    };
    let asset = &ASSETS[index];
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = Response::new(Full::new(Bytes::from_static(
            b"{\"error\":\"method not allowed; use GET\"}",
        )));
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(r);
    }
    let tag = &etags()[index];
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let body = if fresh || req.method() == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from_static(asset.body)
    };
    let mut r = Response::new(Full::new(body));
    if fresh {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
    }
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    if let Ok(v) = HeaderValue::from_str(tag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    secure_headers(&mut r);
    Some(r)
}

/// The operators' Grafana dashboard (`dashboards/grafana/veil.json`), over the collector's
/// Prometheus metrics. Import it into Grafana with a Prometheus data source that scrapes
/// `/metrics` on the collector's metrics listener, `--metrics-listen`
/// (`dashboards/grafana/README.md`).
pub const GRAFANA_DASHBOARD: &str = include_str!("../grafana/veil.json");

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Option<Response<Full<Bytes>>> {
        handle(&Request::builder().uri(path).body(()).unwrap())
    }

    #[test]
    fn serves_the_page_with_csp() {
        for path in [
            "/",
            "/index.html",
            "/site/example.com",
            "/site/example.com/settings",
            "/share/example.com",
            "/login",
            "/setup",
            "/invite",
            "/account",
        ] {
            let r = get(path).unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
            assert_eq!(r.headers()[header::CONTENT_TYPE], HTML);
        }
        for path in [
            "/nope",
            "/site/",
            "/share/",
            "/site//x",
            "/sites/x",
            "/api/v1/sites",
            "/setup/x",
            "/accounts",
        ] {
            assert!(get(path).is_none(), "{path}");
        }
        let r = get("/vendor/uPlot.iife.min.js").unwrap();
        assert_eq!(r.headers()[header::CONTENT_TYPE], JS);
    }

    #[test]
    fn other_methods_get_405_and_etags_give_304() {
        let r = handle(&Request::builder().method("POST").uri("/").body(()).unwrap()).unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        let tag = get("/app.js").unwrap().headers()[header::ETAG].clone();
        let r = handle(
            &Request::builder()
                .uri("/app.js")
                .header(header::IF_NONE_MATCH, tag)
                .body(())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn our_scripts_never_write_html_or_run_strings() {
        for a in ASSETS.iter().filter(|a| a.path == "/app.js") {
            let js = std::str::from_utf8(a.body).unwrap();
            for bad in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                ".setAttribute(\"style\"",
            ] {
                assert!(!js.contains(bad), "app.js uses {bad}");
            }
        }
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(!html.contains("<script>") && !html.contains("style="));
    }
}
