//! Liveness, readiness and metrics.
//!
//! - `GET /healthz` → 200 `ok` while the process serves requests.
//! - `GET /readyz` → 200 `ready`; 200 `degraded: …` while ClickHouse is unreachable or failing
//!   (events are still accepted into the spool, so the instance should keep its traffic);
//!   503 `not ready: shutting down` once shutdown began (load balancers take it out).
//! - `GET /metrics` → Prometheus text format.

use http::StatusCode;

use crate::server::{text, HttpResponse};
use crate::{Collector, Readiness};

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

/// `GET /metrics`.
pub fn metrics(c: &Collector) -> HttpResponse {
    c.observe();
    let mut r = text(StatusCode::OK, crate::metrics::render(c.registry()));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
