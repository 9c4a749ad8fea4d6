//! Liveness, readiness, and the metrics listener.
//!
//! On the main (ingest) listener:
//! - `GET /healthz` → 200 `ok` while the process serves requests.
//! - `GET /readyz` → 200 `ready`; 200 `degraded: …` while ClickHouse is unreachable or failing
//!   (events are still accepted into the spool, so the instance should keep its traffic);
//!   503 `not ready: shutting down` once shutdown began (load balancers take it out).
//!
//! `/metrics` is **not** answered there (404 like any unknown path): its counters move with
//! each event, so anyone who can reach them can watch one visitor's event at a time (that it
//! was accepted, or that it opted out). [`MetricsApp`] serves it on its own listener
//! (`--metrics-listen`, loopback by default):
//! - `GET /metrics` → 200, Prometheus text format (`text/plain; version=0.0.4`). With
//!   `--metrics-token` set, only with `Authorization: Bearer TOKEN` (compared as BLAKE3 hashes,
//!   in constant time); without it or with another → 401 `{"error": …}` and
//!   `WWW-Authenticate: Bearer realm="veil-metrics"`.
//! - `GET /healthz`, `GET /readyz` → as above, no token needed.
//! - another method on those paths → 405; any other path → 404.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};

use crate::server::{error_response, json, text, App, HttpResponse, ResponseFuture};
use crate::{Collector, Error, Readiness};

/// `GET /healthz`.
pub fn healthz() -> HttpResponse {
    text(StatusCode::OK, "ok\n")
}

/// `GET /readyz`.
pub async fn readyz(c: &Collector) -> HttpResponse {
    match c.readiness().await {
        Readiness::Ready => text(StatusCode::OK, "ready\n"),
        Readiness::Degraded(why) => text(StatusCode::OK, format!("degraded: {why}\n")),
        Readiness::NotReady(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// `GET /metrics` (metrics listener only): the registry in Prometheus text format.
pub fn metrics(c: &Collector) -> HttpResponse {
    c.observe();
    let mut r = text(StatusCode::OK, crate::metrics::render(c.registry()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// The app of the metrics listener: `/metrics` (behind the token when one is set), `/healthz`,
/// `/readyz`; see the module docs.
pub struct MetricsApp {
    collector: Collector,
    /// BLAKE3 hash of the token, if one is required.
    token: Option<blake3::Hash>,
}

impl MetricsApp {
    /// The metrics listener's app for `collector`, requiring `token` when given.
    pub fn new(collector: Collector, token: Option<&str>) -> Self {
        Self {
            collector,
            token: token.map(|t| blake3::hash(t.as_bytes())),
        }
    }

    /// Whether the request carries the token (always, when none is required).
    fn authorized(&self, req: &Request<Bytes>) -> bool {
        let Some(want) = &self.token else {
            return true;
        };
        let Some(given) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
        else {
            return false;
        };
        // `blake3::Hash` equality is constant-time.
        blake3::hash(given.as_bytes()) == *want
    }

    async fn answer(&self, req: Request<Bytes>) -> (&'static str, HttpResponse) {
        let c = &self.collector;
        let path = req.uri().path();
        let label = match path {
            "/metrics" => "metrics",
            "/healthz" => "healthz",
            "/readyz" => "readyz",
            _ => return ("not_found", crate::not_found(&req)),
        };
        let resp = match (label, req.method()) {
            ("metrics", &Method::GET) if self.authorized(&req) => metrics(c),
            ("metrics", &Method::GET) => {
                let mut r = json(
                    StatusCode::UNAUTHORIZED,
                    &serde_json::json!({
                        "error": "the metrics listener requires Authorization: Bearer <--metrics-token>"
                    }),
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"veil-metrics\""),
                );
                r
            }
            ("metrics", _) => error_response(&Error::MethodNotAllowed("GET")),
            ("healthz", &Method::GET | &Method::HEAD) => healthz(),
            ("readyz", &Method::GET | &Method::HEAD) => readyz(c).await,
            _ => error_response(&Error::MethodNotAllowed("GET")),
        };
        (label, resp)
    }
}

impl App for MetricsApp {
    fn call(self: Arc<Self>, req: Request<Bytes>) -> ResponseFuture {
        Box::pin(async move {
            let (label, resp) = self.answer(req).await;
            if label != "not_found" {
                self.collector
                    .metrics()
                    .http_requests
                    .with_label_values(&[label, resp.status().as_str()])
                    .inc();
            }
            resp
        })
    }
}
