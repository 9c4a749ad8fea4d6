//! The collector's HTTP routes, one file per wire format, the shared ingest skeleton and the
//! one route table.
//!
//! | route | methods | file | `route` label |
//! |---|---|---|---|
//! | `/api/event` | POST | [`plausible`] — Plausible's Events API | `plausible` |
//! | `/v1/events` | POST | [`native`] — Veil's batch API (JSON array or NDJSON) | `native` |
//! | `/api/send` | POST | [`umami`] — Umami's collect API | `umami` |
//! | `/api/v0/event`, `/api/v0/events` | POST | [`aptabase`] — Aptabase's ingestion API | `aptabase` |
//! | `/p.gif` | GET | [`pixel`] — the no-JavaScript pixel | `pixel` |
//! | `/js/veil.js`, `/opt-out`, `/js/opt-out.js` | GET, HEAD | [`tracker`] — tracker and opt-out page | `assets` |
//! | `/healthz`, `/readyz` | GET, HEAD | [`health`] | `healthz`, `readyz` |
//!
//! `/metrics` is not in the table: it is served only on the metrics listener
//! ([`health::MetricsApp`], `--metrics-listen`), so on this one it is a 404 like any unknown
//! path (its per-event counters would tell anyone who can reach the ingest port what happened
//! to one visitor's event).
//!
//! [`ROUTES`] is that table in code: [`route`] dispatches by it, [`is_collector_path`] reads it,
//! and its labels name the routes in `veil_http_requests_total`. Ingest routes (the POST ones)
//! answer CORS preflights and allow any origin on every answer — trackers run on customers'
//! pages — and, like the pixel, are subject to the per-IP rate limit. Another method on a known
//! path is 405. Multi-event formats share [`ingest`]'s skeleton (decode → prepare each → store
//! → answer).

pub mod aptabase;
pub mod health;
pub mod ingest;
pub mod native;
pub mod pixel;
pub mod plausible;
pub mod tracker;
pub mod umami;

use std::net::IpAddr;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};

use crate::server::{HttpResponse, PeerAddr};
use crate::{Collector, Error};

/// What a path does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// [`plausible::handle`].
    Plausible,
    /// [`native::handle`].
    Native,
    /// [`umami::handle`].
    Umami,
    /// [`aptabase::handle`] for one event (`/api/v0/event`).
    AptabaseEvent,
    /// [`aptabase::handle`] for a batch (`/api/v0/events`).
    AptabaseEvents,
    /// [`pixel::handle`].
    Pixel,
    /// [`tracker::veil_js`].
    VeilJs,
    /// [`tracker::opt_out_page`].
    OptOutPage,
    /// [`tracker::opt_out_js`].
    OptOutJs,
    /// [`health::healthz`].
    Healthz,
    /// [`health::readyz`].
    Readyz,
}

/// The methods a route answers, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An ingest API: POST; OPTIONS answers the CORS preflight; every answer carries the CORS
    /// headers; per-IP rate limit.
    Ingest,
    /// The pixel: GET; per-IP rate limit (its rate-limit answer carries the CORS headers).
    Pixel,
    /// GET and HEAD.
    Read,
}

/// One row of the route table.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The path, matched exactly.
    pub path: &'static str,
    /// The methods it answers.
    pub kind: Kind,
    /// Its handler.
    pub handler: Handler,
    /// The `route` label of `veil_http_requests_total`.
    pub label: &'static str,
}

const fn r(path: &'static str, kind: Kind, handler: Handler, label: &'static str) -> Route {
    Route {
        path,
        kind,
        handler,
        label,
    }
}

/// Every path the collector answers (anything else is left to other apps, then 404).
pub const ROUTES: [Route; 11] = [
    r(
        "/api/event",
        Kind::Ingest,
        Handler::Plausible,
        plausible::ENDPOINT,
    ),
    r(
        "/v1/events",
        Kind::Ingest,
        Handler::Native,
        native::ENDPOINT,
    ),
    r("/api/send", Kind::Ingest, Handler::Umami, umami::ENDPOINT),
    r(
        "/api/v0/event",
        Kind::Ingest,
        Handler::AptabaseEvent,
        aptabase::ENDPOINT,
    ),
    r(
        "/api/v0/events",
        Kind::Ingest,
        Handler::AptabaseEvents,
        aptabase::ENDPOINT,
    ),
    r("/p.gif", Kind::Pixel, Handler::Pixel, pixel::ENDPOINT),
    r("/js/veil.js", Kind::Read, Handler::VeilJs, "assets"),
    r("/opt-out", Kind::Read, Handler::OptOutPage, "assets"),
    r("/js/opt-out.js", Kind::Read, Handler::OptOutJs, "assets"),
    r("/healthz", Kind::Read, Handler::Healthz, "healthz"),
    r("/readyz", Kind::Read, Handler::Readyz, "readyz"),
];

/// The route of a path, if it is one of the collector's.
pub fn find(path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.path == path)
}

/// Paths the collector answers (anything else is left to other apps, then 404).
pub fn is_collector_path(path: &str) -> bool {
    find(path).is_some()
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

/// Routes a request to its handler by [`ROUTES`]; `None` when the path is not the collector's.
/// Counts the answer under the route's label and status.
pub async fn route(c: &Collector, req: Request<Bytes>) -> Option<HttpResponse> {
    let route = find(req.uri().path())?;
    let resp = answer(c, route, req).await;
    c.metrics()
        .http_requests
        .with_label_values(&[route.label, resp.status().as_str()])
        .inc();
    Some(resp)
}

/// The client IP of a request, worked out once (for the rate limit) and kept in its
/// extensions for [`client`].
#[derive(Debug, Clone, Copy)]
struct ClientIp(Option<IpAddr>);

/// Whether the request's client is within the per-IP rate limit; keeps the client IP in the
/// request for the handler.
fn allowed(c: &Collector, req: &mut Request<Bytes>) -> bool {
    let ip = client_ip(
        req.headers(),
        req.extensions().get::<PeerAddr>(),
        c.trusted_ip_headers(),
        c.trusted_proxies(),
    );
    req.extensions_mut().insert(ClientIp(ip));
    c.allow_ip(ip)
}

async fn answer(c: &Collector, route: &Route, mut req: Request<Bytes>) -> HttpResponse {
    let method = req.method().clone();
    match route.kind {
        Kind::Ingest => cors(match method {
            Method::OPTIONS => crate::server::text(StatusCode::NO_CONTENT, Bytes::new()),
            Method::POST if !allowed(c, &mut req) => c.reject(&Error::RateLimited("ip")),
            Method::POST => handle(c, route.handler, req).await,
            _ => c.reject(&Error::MethodNotAllowed("POST")),
        }),
        Kind::Pixel => match method {
            Method::GET if !allowed(c, &mut req) => cors(c.reject(&Error::RateLimited("ip"))),
            Method::GET => handle(c, route.handler, req).await,
            _ => c.reject(&Error::MethodNotAllowed("GET")),
        },
        Kind::Read if matches!(method, Method::GET | Method::HEAD) => {
            handle(c, route.handler, req).await
        }
        Kind::Read => c.reject(&Error::MethodNotAllowed("GET")),
    }
}

async fn handle(c: &Collector, handler: Handler, req: Request<Bytes>) -> HttpResponse {
    match handler {
        Handler::Plausible => plausible::handle(c, req).await,
        Handler::Native => native::handle(c, req).await,
        Handler::Umami => umami::handle(c, req).await,
        Handler::AptabaseEvent => aptabase::handle(c, req, false).await,
        Handler::AptabaseEvents => aptabase::handle(c, req, true).await,
        Handler::Pixel => pixel::handle(c, req).await,
        Handler::VeilJs => tracker::veil_js(&req),
        Handler::OptOutPage => tracker::opt_out_page(),
        Handler::OptOutJs => tracker::opt_out_js(),
        Handler::Healthz => health::healthz(),
        Handler::Readyz => health::readyz(c).await,
    }
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
    trusted: &[HeaderName],
    proxies: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let peer_ip = peer.map(|p| p.0.ip());
    let is_proxy = |ip: IpAddr| proxies.iter().any(|n| n.contains(&ip));
    if peer_ip.is_some_and(|ip| !is_proxy(ip)) {
        return peer_ip;
    }
    for name in trusted {
        let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) else {
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

/// The client IP of a request: the one the rate limit worked out, or ([`client_ip`]) now.
fn request_ip(c: &Collector, req: &Request<Bytes>) -> Option<IpAddr> {
    match req.extensions().get::<ClientIp>() {
        Some(ClientIp(ip)) => *ip,
        None => client_ip(
            req.headers(),
            req.extensions().get::<PeerAddr>(),
            c.trusted_ip_headers(),
            c.trusted_proxies(),
        ),
    }
}

/// The sender of a request: client IP (trusted headers, then the peer), user agent, hints.
pub fn client(c: &Collector, req: &Request<Bytes>) -> crate::pipeline::Client {
    crate::pipeline::Client {
        ip: request_ip(c, req),
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
        let trusted = vec![HeaderName::from_static("x-forwarded-for")];
        let proxies =
            crate::config::parse_trusted_proxies(&["10.0.0.0/8".into(), "192.168.0.0/16".into()])
                .unwrap();
        let pick = |h: &HeaderMap, t: &[HeaderName]| client_ip(h, Some(&peer), t, &proxies);
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
        // By default only loopback is a proxy: a private peer's header is its own claim.
        let default = crate::config::default_trusted_proxies();
        assert_eq!(
            client_ip(&h, Some(&peer), &trusted, &default),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_ip(&h, Some(&public), &trusted, &all),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn the_route_table_names_each_path_once() {
        for (i, r) in ROUTES.iter().enumerate() {
            assert!(
                ROUTES[i + 1..].iter().all(|o| o.path != r.path),
                "{} twice",
                r.path
            );
            assert!(is_collector_path(r.path));
            assert_eq!(find(r.path).map(|f| f.handler), Some(r.handler));
        }
        assert!(!is_collector_path("/api/events"));
        assert!(
            !is_collector_path("/metrics"),
            "only on the metrics listener"
        );
        assert!(!is_collector_path("/"));
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
