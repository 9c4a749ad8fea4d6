//! Browser-facing protections of the dashboard and the Stats API: what a request must look like
//! before any route sees it, and the headers every answer carries. One [`Guard`] checks every
//! request that reaches the dashboard or the aggregator over HTTP (the `veil` binary's one
//! entry, `cli/src/app.rs`); collector routes (ingest, the tracker, health) are not guarded here:
//! trackers post to them from customers' pages on purpose.
//!
//! Rules, in the order they are checked (docs/SECURITY.md names the test of each):
//! 1. **Host allow-list** (against DNS rebinding: a page of `evil.example` whose name is made to
//!    resolve to 127.0.0.1 reaches the loopback port with `Host: evil.example`). Allowed: the
//!    host of `--public-url`; any IP address literal (a page served from an address cannot be
//!    rebound to another); `localhost` when the listener is a loopback address. Anything else
//!    is `421 Misdirected Request` with `{"error": "…"}` naming the host and the flag. A request
//!    without any host (HTTP/1.0) passes: browsers always send one.
//! 2. **Foreign origins** — a request that changes something (POST, PUT, PATCH, DELETE), or any
//!    request to an API path (`/api/…`), whose `Origin` header is not this server's own (same
//!    host and port as the request's `Host`, or `--public-url`'s origin; `Origin: null`
//!    included), or that a browser marks `Sec-Fetch-Site: cross-site` / `same-site` on an API
//!    path, is `403` with a message saying so. Clients that are not browsers send neither
//!    header and are unaffected.
//! 3. **JSON only** — a POST, PUT or PATCH to an API path must say
//!    `Content-Type: application/json` (parameters such as `charset` allowed): anything else is
//!    `415 Unsupported Media Type`. This also closes the "simple request" door: a cross-origin
//!    `text/plain` POST needs no CORS preflight, an `application/json` one does (and gets none).
//!    One exception: an export uploaded to `POST /api/v1/sites/{domain}/imports` may say
//!    `application/zip`, `text/csv` or `application/octet-stream` (none CORS-safelisted: a
//!    cross-origin upload needs a preflight just the same).
//!
//! Every answer of the dashboard and the aggregator then gets [`Guard::harden`]:
//! `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY`,
//! `Cross-Origin-Opener-Policy: same-origin`, `Cross-Origin-Resource-Policy: same-origin`, a
//! `Content-Security-Policy` of `default-src 'none'; frame-ancestors 'none'; sandbox` where the
//! answer has none (the dashboard's pages bring their own, stricter for scripts), and
//! `Strict-Transport-Security` when `--public-url` is `https`.
//!
//! One page may be framed: a shared link made with `embed_origins` serves its dashboard at
//! `/share/{domain}?embed={link id}` ([`Guard::harden_embedded`]) with `frame-ancestors` naming
//! exactly those origins and no `X-Frame-Options`; an unknown, revoked or expired link, a link
//! of another site or one without origins gets the page as every other (`'none'`).

use std::net::{IpAddr, SocketAddr};

use http::{header, HeaderValue, Method, Request, Uri};

use crate::http::HttpResponse;
use crate::Error;

/// The Content-Security-Policy of answers that bring none (API answers, errors, downloads).
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";

/// A `--public-url`, checked: `http` or `https`, a host, an optional port, nothing else that
/// matters here (a path is allowed and ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// `http` or `https`.
    pub scheme: String,
    /// The host, lower-case (an IPv6 address without brackets).
    pub host: String,
    /// The port, the scheme's default when not written.
    pub port: u16,
}

impl PublicUrl {
    /// Parses `--public-url`; the error names the flag and says what is expected.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::Config(format!(
                "--public-url {s:?} is not an http(s) URL like https://veil.example (the address browsers reach the dashboard at)"
            ))
        };
        let uri: Uri = s.trim().parse().map_err(|_| bad())?;
        let scheme = uri
            .scheme_str()
            .map(str::to_ascii_lowercase)
            .ok_or_else(bad)?;
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(bad()),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(bad());
        }
        Ok(Self {
            host: strip_brackets(host).to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(default_port),
            scheme,
        })
    }
}

fn strip_brackets(h: &str) -> &str {
    h.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h)
}

/// `host[:port]` split, the host lower-case and without IPv6 brackets; `None` if malformed.
fn split_authority(a: &str) -> Option<(String, Option<u16>)> {
    let a = a.trim();
    if a.is_empty() || a.contains(['@', '/', ' ']) {
        return None;
    }
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        (h, port)
    } else {
        match a.rsplit_once(':') {
            // More than one colon without brackets: an IPv6 literal with no port.
            Some((h, _)) if h.contains(':') => (a, None),
            Some((h, p)) => (h, Some(p.parse().ok()?)),
            None => (a, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

/// Who may talk to the dashboard and the Stats API from a browser, and the headers they get.
#[derive(Debug, Clone)]
pub struct Guard {
    public: Option<PublicUrl>,
    loopback: bool,
}

impl Guard {
    /// The guard of a server listening on `listen`, reached at `public` (`--public-url`).
    pub fn new(public: Option<PublicUrl>, listen: SocketAddr) -> Self {
        Self {
            public,
            loopback: listen.ip().is_loopback(),
        }
    }

    /// The host names this server answers for, for messages.
    fn allowed_names(&self) -> String {
        let mut v = Vec::new();
        if let Some(p) = &self.public {
            v.push(format!("{:?} (--public-url)", p.host));
        }
        if self.loopback {
            v.push("\"localhost\"".into());
        }
        v.push("IP addresses".into());
        v.join(", ")
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = strip_brackets(host);
        host.parse::<IpAddr>().is_ok()
            || (self.loopback && host == "localhost")
            || self.public.as_ref().is_some_and(|p| p.host == host)
    }

    /// The request's host and port, from the URI (HTTP/2, absolute form) or the `Host` header;
    /// `Ok(None)` when it names none; `Err` when the header is malformed.
    fn request_host<B>(req: &Request<B>) -> Result<Option<(String, Option<u16>)>, Error> {
        if let Some(a) = req.uri().authority() {
            return split_authority(a.as_str())
                .map(Some)
                .ok_or_else(|| Error::BadRequest("the request's authority is malformed".into()));
        }
        match req.headers().get(header::HOST) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .ok()
                .and_then(split_authority)
                .map(Some)
                .ok_or_else(|| Error::BadRequest("the Host header is malformed".into())),
        }
    }

    /// True if `origin` (an `Origin` header's value) is this server's own for a request to
    /// `host`.
    fn same_origin(&self, origin: &str, host: Option<&(String, Option<u16>)>) -> bool {
        let Ok(uri) = origin.trim().parse::<Uri>() else {
            return false;
        };
        let (Some(scheme), Some(o_host)) = (uri.scheme_str(), uri.host()) else {
            return false;
        };
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            _ => return false,
        };
        let o_host = strip_brackets(o_host).to_ascii_lowercase();
        let o_port = uri.port_u16().unwrap_or(default_port);
        if self
            .public
            .as_ref()
            .is_some_and(|p| p.host == o_host && p.port == o_port && p.scheme == scheme)
        {
            return true;
        }
        host.is_some_and(|(h, p)| {
            strip_brackets(h) == o_host
                && match p {
                    Some(p) => *p == o_port,
                    // A Host without a port names the scheme's default one.
                    None => o_port == default_port,
                }
        })
    }

    /// Checks a request before any dashboard or aggregator route sees it (rules in the module
    /// docs): `Err` is the refusal to answer with.
    pub fn check<B>(&self, req: &Request<B>) -> Result<(), Error> {
        let host = Self::request_host(req)?;
        if let Some((h, _)) = &host {
            if !self.host_allowed(h) {
                return Err(Error::Misdirected(format!(
                    "this server does not answer for the host {h:?} (it answers for {}); \
                     if that is the address you reach Veil at, start it with --public-url",
                    self.allowed_names()
                )));
            }
        }
        let path = req.uri().path();
        let api = path.starts_with("/api/");
        let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if writes || api {
            if let Some(origin) = req.headers().get(header::ORIGIN) {
                let origin = origin.to_str().unwrap_or("null");
                if !self.same_origin(origin, host.as_ref()) {
                    return Err(Error::Forbidden(format!(
                        "cross-origin request refused: a page of {origin:?} may not call this \
                         server's API (only the dashboard served from this address may)"
                    )));
                }
            }
            if api {
                let site = req
                    .headers()
                    .get("sec-fetch-site")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site")
                {
                    return Err(Error::Forbidden(
                        "cross-site request refused: another site's page may not call this \
                         server's API"
                            .into(),
                    ));
                }
            }
        }
        if api && matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
            let ct = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let essence = ct.split(';').next().unwrap_or("").trim();
            // An export uploaded to `…/imports` (crate::admin) is a zip or a CSV file; none of
            // these types is CORS-safelisted, so a cross-origin upload still needs a preflight.
            let upload = req.uri().path().starts_with("/api/v1/sites/")
                && req.uri().path().ends_with("/imports")
                && ["application/zip", "text/csv", "application/octet-stream"]
                    .iter()
                    .any(|t| essence.eq_ignore_ascii_case(t));
            if !upload && !essence.eq_ignore_ascii_case("application/json") {
                let given = if ct.is_empty() { "none" } else { ct };
                return Err(Error::UnsupportedMediaType(format!(
                    "this API takes JSON: send `Content-Type: application/json` (got {given})"
                )));
            }
        }
        Ok(())
    }

    /// Adds the security headers of the module docs to an answer (keeping a
    /// Content-Security-Policy it already has).
    pub fn harden(&self, mut r: HttpResponse) -> HttpResponse {
        let h = r.headers_mut();
        let mut set = |name: header::HeaderName, v: &'static str| {
            h.insert(name, HeaderValue::from_static(v));
        };
        set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        set(header::REFERRER_POLICY, "no-referrer");
        set(header::X_FRAME_OPTIONS, "DENY");
        set(
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        );
        set(
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        );
        if self.public.as_ref().is_some_and(|p| p.scheme == "https") {
            set(header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
        }
        if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(API_CSP),
            );
        }
        r
    }
}

impl Guard {
    /// [`Guard::harden`] for a shared link's page that `origins` may embed: the page's
    /// `frame-ancestors 'none'` becomes those origins, and `X-Frame-Options` goes (it cannot
    /// name an origin, and a browser that reads it would refuse the frame).
    pub fn harden_embedded(&self, r: HttpResponse, origins: &[String]) -> HttpResponse {
        let mut r = self.harden(r);
        let h = r.headers_mut();
        h.remove(header::X_FRAME_OPTIONS);
        let csp = h
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(API_CSP)
            .replace(
                "frame-ancestors 'none'",
                &format!("frame-ancestors {}", origins.join(" ")),
            );
        match HeaderValue::from_str(&csp) {
            Ok(v) => {
                h.insert(header::CONTENT_SECURITY_POLICY, v);
            }
            // Origins were checked by `embed_origin` when the link was made; should one not
            // fit a header, the page stays unframeable.
            Err(_) => {
                h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            }
        }
        r
    }
}

/// The most origins one shared link may be embedded in.
pub const MAX_EMBED_ORIGINS: usize = 10;

/// An origin a shared link may be embedded in, as `frame-ancestors` names it: `http` or
/// `https`, a host, a port when not the scheme's default — `https://blog.example`,
/// `http://127.0.0.1:8080`. No path, query, user or wildcard. The error says what is wrong.
pub fn embed_origin(s: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!("`embed_origins`: {s:?} is not an origin like https://blog.example ({why})")
    };
    let uri: Uri = s.trim().parse().map_err(|_| bad("not a URL"))?;
    let scheme = uri
        .scheme_str()
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| bad("no scheme"))?;
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(bad("only http and https")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("no user name"));
    }
    let host = authority.host().to_ascii_lowercase();
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    if !host_ok {
        return Err(bad("a host name or IP address, no wildcard"));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(bad("an origin has no path or query"));
    }
    Ok(match authority.port_u16() {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn embed_origins_are_checked_and_written_as_csp_names_them() {
        assert_eq!(
            embed_origin("https://Blog.Example").unwrap(),
            "https://blog.example"
        );
        assert_eq!(
            embed_origin("https://blog.example:443/").unwrap(),
            "https://blog.example"
        );
        assert_eq!(
            embed_origin("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        for bad in [
            "blog.example",
            "ftp://blog.example",
            "https://blog.example/page",
            "https://blog.example?x=1",
            "https://*.example",
            "https://u@blog.example",
            "https://blog.example; script-src *",
            "",
        ] {
            assert!(embed_origin(bad).is_err(), "{bad}");
        }
    }

    fn guard(public: Option<&str>, listen: &str) -> Guard {
        Guard::new(
            public.map(|p| PublicUrl::parse(p).unwrap()),
            listen.parse().unwrap(),
        )
    }

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn status(g: &Guard, r: &Request<()>) -> Option<StatusCode> {
        g.check(r).err().map(|e| e.status())
    }

    #[test]
    fn public_urls_are_checked() {
        let p = PublicUrl::parse("https://Veil.Example").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("veil.example", 443));
        let p = PublicUrl::parse("http://[::1]:8080/x").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 8080));
        for bad in ["veil.example", "ftp://x", "https://", "https://u:p@x", ""] {
            let e = PublicUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--public-url"), "{bad}: {e}");
        }
    }

    #[test]
    fn hosts_outside_the_allow_list_are_misdirected() {
        let g = guard(None, "127.0.0.1:8080");
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "LOCALHOST",
            "10.1.2.3",
        ] {
            assert_eq!(status(&g, &req("GET", "/", &[("host", ok)])), None, "{ok}");
        }
        let r = req("GET", "/api/v1/sites", &[("host", "evil.example:8080")]);
        assert_eq!(status(&g, &r), Some(StatusCode::MISDIRECTED_REQUEST));
        assert!(g
            .check(&r)
            .unwrap_err()
            .to_string()
            .contains("--public-url"));
        assert_eq!(
            status(&g, &req("GET", "/", &[("host", "a@b")])),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(status(&g, &req("GET", "/", &[])), None);
        // Beyond loopback, `localhost` is no name of this server; --public-url's host is.
        let g = guard(Some("https://veil.example"), "0.0.0.0:8080");
        assert_eq!(
            status(&g, &req("GET", "/", &[("host", "localhost")])),
            Some(StatusCode::MISDIRECTED_REQUEST)
        );
        assert_eq!(
            status(&g, &req("GET", "/", &[("host", "veil.example")])),
            None
        );
        assert_eq!(
            status(
                &g,
                &req("GET", "http://evil.example/", &[("host", "veil.example")])
            ),
            Some(StatusCode::MISDIRECTED_REQUEST),
            "the URI's authority wins over the header"
        );
    }

    #[test]
    fn foreign_origins_and_cross_site_api_calls_are_forbidden() {
        let g = guard(Some("https://veil.example"), "127.0.0.1:8080");
        let json = ("content-type", "application/json");
        let host = ("host", "127.0.0.1:8080");
        let same = req(
            "POST",
            "/api/v2/query",
            &[host, json, ("origin", "http://127.0.0.1:8080")],
        );
        assert_eq!(status(&g, &same), None);
        let public = req(
            "POST",
            "/api/v2/query",
            &[
                ("host", "veil.example"),
                json,
                ("origin", "https://veil.example"),
            ],
        );
        assert_eq!(status(&g, &public), None);
        for origin in [
            "https://evil.example",
            "http://127.0.0.1:9999",
            "null",
            "http://veil.example",
        ] {
            let r = req("POST", "/api/v2/query", &[host, json, ("origin", origin)]);
            assert_eq!(status(&g, &r), Some(StatusCode::FORBIDDEN), "{origin}");
            assert!(g
                .check(&r)
                .unwrap_err()
                .to_string()
                .contains("cross-origin"));
            let r = req("DELETE", "/api/v1/sites/a.com", &[host, ("origin", origin)]);
            assert_eq!(status(&g, &r), Some(StatusCode::FORBIDDEN), "{origin}");
            let r = req("GET", "/api/v1/sites", &[host, ("origin", origin)]);
            assert_eq!(status(&g, &r), Some(StatusCode::FORBIDDEN), "{origin}");
        }
        // A page may be linked from anywhere; the API may not be called from elsewhere.
        let r = req(
            "GET",
            "/share/a.com",
            &[host, ("sec-fetch-site", "cross-site")],
        );
        assert_eq!(status(&g, &r), None);
        let r = req(
            "GET",
            "/api/v1/sites",
            &[host, ("sec-fetch-site", "cross-site")],
        );
        assert_eq!(status(&g, &r), Some(StatusCode::FORBIDDEN));
        let r = req(
            "GET",
            "/api/v1/sites",
            &[host, ("sec-fetch-site", "same-origin")],
        );
        assert_eq!(status(&g, &r), None);
    }

    #[test]
    fn api_writes_must_be_json() {
        let g = guard(None, "127.0.0.1:8080");
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
        ] {
            let r = req("POST", "/api/v2/query", &[("content-type", ct)]);
            assert_eq!(status(&g, &r), None, "{ct}");
        }
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "",
        ] {
            let mut h = vec![];
            if !ct.is_empty() {
                h.push(("content-type", ct));
            }
            for m in ["POST", "PUT", "PATCH"] {
                let r = req(m, "/api/v1/sites", &h);
                assert_eq!(
                    status(&g, &r),
                    Some(StatusCode::UNSUPPORTED_MEDIA_TYPE),
                    "{m} {ct}"
                );
            }
        }
        assert_eq!(status(&g, &req("DELETE", "/api/v1/sites/a.com", &[])), None);
        assert_eq!(status(&g, &req("GET", "/api/v1/sites", &[])), None);
        // An export uploaded to a site's imports is a zip or CSV; elsewhere those are refused,
        // and a safelisted type (no CORS preflight) is refused there too.
        let zip = [("content-type", "application/zip")];
        let upload = "/api/v1/sites/a.com/imports";
        assert_eq!(status(&g, &req("POST", upload, &zip)), None);
        assert_eq!(
            status(&g, &req("POST", upload, &[("content-type", "text/csv")])),
            None
        );
        assert_eq!(
            status(&g, &req("POST", "/api/v1/sites", &zip)),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            status(&g, &req("POST", upload, &[("content-type", "text/plain")])),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
    }

    #[test]
    fn answers_are_hardened() {
        let g = guard(Some("https://veil.example"), "127.0.0.1:8080");
        let r = g.harden(crate::http::json_response(
            StatusCode::OK,
            &serde_json::json!({}),
        ));
        let h = r.headers();
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], API_CSP);
        assert_eq!(h[header::STRICT_TRANSPORT_SECURITY], "max-age=31536000");
        let mut page = crate::http::json_response(StatusCode::OK, &serde_json::json!({}));
        page.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'"),
        );
        let r = guard(None, "127.0.0.1:1").harden(page);
        assert_eq!(
            r.headers()[header::CONTENT_SECURITY_POLICY],
            "default-src 'self'"
        );
        assert!(r.headers().get(header::STRICT_TRANSPORT_SECURITY).is_none());
    }
}
