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
                c.trusted_proxies(),
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

/// The client IP. A peer outside `proxies` is the client itself: whatever headers it sends
/// are ignored (anyone could claim any address). From a trusted proxy, the first of the
/// `trusted` headers holding a parseable address names the client: its right-most address
/// that is not itself a trusted proxy (each proxy appends the address it saw, so entries to
/// the left of the last untrusted one are the client's own claims), or its left-most when
/// every entry is a proxy. Else the peer.
pub fn client_ip(
    headers: &HeaderMap,
    peer: Option<&PeerAddr>,
    trusted: &[String],
    proxies: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let peer_ip = peer.map(|p| p.0.ip());
    let is_proxy = |ip: IpAddr| proxies.iter().any(|n| n.contains(&ip));
    if peer_ip.is_some_and(|ip| !is_proxy(ip)) {
        return peer_ip;
    }
    for name in trusted {
        let Some(v) = headers.get(name.as_str()).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let chain: Vec<IpAddr> = v.split(',').filter_map(|a| parse_ip(a.trim())).collect();
        if let Some(ip) = chain
            .iter()
            .rev()
            .find(|ip| !is_proxy(**ip))
            .or(chain.first())
        {
            return Some(*ip);
        }
    }
    peer_ip
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
            c.trusted_proxies(),
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

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn client_ip_prefers_trusted_headers_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        let peer = PeerAddr("10.0.0.1:4000".parse().unwrap());
        let trusted = vec!["x-forwarded-for".to_string()];
        let proxies = crate::config::default_trusted_proxies();
        let pick = |h: &HeaderMap, t: &[String]| client_ip(h, Some(&peer), t, &proxies);
        assert_eq!(pick(&h, &trusted), ip("10.0.0.1"));
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.5, 10.0.0.2"),
        );
        assert_eq!(pick(&h, &trusted), ip("203.0.113.5"));
        // A client that sends its own header: the proxy appended the real address, which wins.
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.7, 203.0.113.5"),
        );
        assert_eq!(pick(&h, &trusted), ip("203.0.113.5"));
        // Only proxies in the chain: the left-most.
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("192.168.1.9, 10.0.0.2"),
        );
        assert_eq!(pick(&h, &trusted), ip("192.168.1.9"));
        h.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(pick(&h, &trusted), ip("10.0.0.1"));
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("[2001:db8::1]:443"),
        );
        assert_eq!(pick(&h, &trusted), ip("2001:db8::1"));
        assert_eq!(pick(&h, &[]), ip("10.0.0.1"));
        // From a peer that is not a trusted proxy, the header is ignored.
        let public = PeerAddr("198.51.100.20:5000".parse().unwrap());
        assert_eq!(
            client_ip(&h, Some(&public), &trusted, &proxies),
            ip("198.51.100.20")
        );
        let all =
            crate::config::parse_trusted_proxies(&["0.0.0.0/0".into(), "::/0".into()]).unwrap();
        assert_eq!(
            client_ip(&h, Some(&public), &trusted, &all),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn trusted_proxies_parse_networks_and_addresses() {
        let n = crate::config::parse_trusted_proxies(&["10.1.2.3/8".into(), "203.0.113.9".into()])
            .unwrap();
        assert_eq!(n[0].to_string(), "10.0.0.0/8");
        assert_eq!(n[1].to_string(), "203.0.113.9/32");
        let e = crate::config::parse_trusted_proxies(&["10.0.0.0/33".into()]).unwrap_err();
        assert!(e.to_string().contains("--trusted-proxy"), "{e}");
    }
}
