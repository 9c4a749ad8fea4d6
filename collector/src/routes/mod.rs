//! The collector's HTTP routes, one file per wire format, and the shared request context.
//!
//! | route | file |
//! |---|---|
//! | `POST /api/event` | [`plausible`] — Plausible's Events API |
//! | `POST /v1/events` | [`native`] — Veil's batch API (JSON array or NDJSON) |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | [`health`] |
//!
//! Ingest routes answer CORS preflights and allow any origin: trackers run on customers' pages.

pub mod aptabase;
pub mod health;
pub mod native;
pub mod pixel;
pub mod plausible;
pub mod tracker;
pub mod umami;

use std::net::IpAddr;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};

use crate::server::{HttpResponse, PeerAddr};
use crate::{Collector, Error};

/// Paths the collector answers (anything else is left to other apps, then 404).
pub fn is_collector_path(path: &str) -> bool {
    matches!(
        path,
        "/api/event"
            | "/v1/events"
            | "/api/send"
            | "/api/v0/event"
            | "/api/v0/events"
            | "/p.gif"
            | "/healthz"
            | "/readyz"
            | "/metrics"
            | "/js/veil.js"
            | "/opt-out"
            | "/js/opt-out.js"
    )
}

/// Adds permissive CORS headers (any origin, no credentials).
pub fn cors(mut r: HttpResponse) -> HttpResponse {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, App-Key, x-umami-cache"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    r
}

/// Routes a request to its handler; `None` when the path is not the collector's.
pub async fn route(c: &Collector, req: Request<Bytes>) -> Option<HttpResponse> {
    let path = req.uri().path().to_string();
    let m = req.method().clone();
    let resp = match (path.as_str(), &m) {
        (
            "/api/event" | "/v1/events" | "/api/send" | "/api/v0/event" | "/api/v0/events",
            &Method::OPTIONS,
        ) => cors(crate::server::text(StatusCode::NO_CONTENT, Bytes::new())),
        (
            "/api/event" | "/v1/events" | "/api/send" | "/api/v0/event" | "/api/v0/events",
            &Method::POST,
        )
        | ("/p.gif", &Method::GET)
            if !c.allow_ip(client_ip(
                req.headers(),
                req.extensions().get::<PeerAddr>(),
                c.trusted_ip_headers(),
            )) =>
        {
            cors(c.reject(&Error::RateLimited("ip")))
        }
        ("/api/event", &Method::POST) => cors(plausible::handle(c, req).await),
        ("/v1/events", &Method::POST) => cors(native::handle(c, req).await),
        ("/api/send", &Method::POST) => cors(umami::handle(c, req).await),
        ("/api/v0/event", &Method::POST) => cors(aptabase::handle(c, req, false).await),
        ("/api/v0/events", &Method::POST) => cors(aptabase::handle(c, req, true).await),
        ("/p.gif", &Method::GET) => pixel::handle(c, req).await,
        ("/api/send" | "/api/v0/event" | "/api/v0/events", _) => {
            cors(c.reject(&Error::MethodNotAllowed("POST")))
        }
        ("/p.gif", _) => c.reject(&Error::MethodNotAllowed("GET")),
        ("/api/event" | "/v1/events", _) => cors(c.reject(&Error::MethodNotAllowed("POST"))),
        ("/js/veil.js", &Method::GET | &Method::HEAD) => tracker::veil_js(&req),
        ("/opt-out", &Method::GET | &Method::HEAD) => tracker::opt_out_page(),
        ("/js/opt-out.js", &Method::GET | &Method::HEAD) => tracker::opt_out_js(),
        ("/js/veil.js" | "/opt-out" | "/js/opt-out.js", _) => {
            c.reject(&Error::MethodNotAllowed("GET"))
        }
        ("/healthz", &Method::GET | &Method::HEAD) => health::healthz(),
        ("/readyz", &Method::GET | &Method::HEAD) => health::readyz(c).await,
        ("/metrics", &Method::GET) => health::metrics(c),
        ("/healthz" | "/readyz" | "/metrics", _) => c.reject(&Error::MethodNotAllowed("GET")),
        _ => return None,
    };
    let route = match path.as_str() {
        "/api/event" => "plausible",
        "/v1/events" => "native",
        "/api/send" => "umami",
        "/api/v0/event" | "/api/v0/events" => "aptabase",
        "/p.gif" => "pixel",
        "/healthz" => "healthz",
        "/js/veil.js" | "/js/opt-out.js" | "/opt-out" => "assets",
        "/readyz" => "readyz",
        _ => "metrics",
    };
    c.metrics()
        .http_requests
        .with_label_values(&[route, resp.status().as_str()])
        .inc();
    Some(resp)
}

/// The client IP: the first trusted header holding a parseable address (its left-most entry),
/// else the socket peer.
pub fn client_ip(
    headers: &HeaderMap,
    peer: Option<&PeerAddr>,
    trusted: &[String],
) -> Option<IpAddr> {
    for name in trusted {
        let Some(v) = headers.get(name.as_str()).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let first = v.split(',').next().unwrap_or_default().trim();
        if let Some(ip) = parse_ip(first) {
            return Some(ip);
        }
    }
    peer.map(|p| p.0.ip())
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    // "1.2.3.4:5678" or "[::1]:5678"
    s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

/// The sender of a request: client IP (trusted headers, then the peer), user agent, hints.
pub fn client(c: &Collector, req: &Request<Bytes>) -> crate::pipeline::Client {
    crate::pipeline::Client {
        ip: client_ip(
            req.headers(),
            req.extensions().get::<PeerAddr>(),
            c.trusted_ip_headers(),
        ),
        user_agent: user_agent(req.headers()),
        hints: crate::pipeline::enrich::ClientHints::from_headers(req.headers()),
    }
}

/// The `User-Agent` header, or empty.
pub fn user_agent(headers: &HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ip_prefers_trusted_headers() {
        let mut h = HeaderMap::new();
        let peer = PeerAddr("10.0.0.1:4000".parse().unwrap());
        let trusted = vec!["x-forwarded-for".to_string()];
        assert_eq!(
            client_ip(&h, Some(&peer), &trusted),
            Some("10.0.0.1".parse().unwrap())
        );
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.5, 10.0.0.2"),
        );
        assert_eq!(
            client_ip(&h, Some(&peer), &trusted),
            Some("203.0.113.5".parse().unwrap())
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(
            client_ip(&h, Some(&peer), &trusted),
            Some("10.0.0.1".parse().unwrap())
        );
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("[2001:db8::1]:443"),
        );
        assert_eq!(
            client_ip(&h, Some(&peer), &trusted),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            client_ip(&h, Some(&peer), &[]),
            Some("10.0.0.1".parse().unwrap())
        );
    }
}
