//! Liveness, readiness and metrics.
//!
//! - `GET /healthz` → 200 `ok` while the process serves requests.
//! - `GET /readyz` → 200 `ready` when ClickHouse answers and the collector is not shutting
//!   down, else 503 with the reason (load balancers take the instance out).
//! - `GET /metrics` → Prometheus text format.

use http::StatusCode;

use crate::server::{text, HttpResponse};
use crate::Collector;

/// `GET /healthz`.
pub fn healthz() -> HttpResponse {
    text(StatusCode::OK, "ok\n")
}

/// `GET /readyz`.
pub async fn readyz(c: &Collector) -> HttpResponse {
    match c.readiness().await {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(reason) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

/// `GET /metrics`.
pub fn metrics(c: &Collector) -> HttpResponse {
    c.metrics().queue_depth.set(c.queue_depth() as i64);
    let mut r = text(StatusCode::OK, crate::metrics::render(c.registry()));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
