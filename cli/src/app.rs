//! The roles composed onto one HTTP server: collector routes first, then the dashboard's files,
//! then the Stats API, else 404. `veil up` serves all three; `veil aggregator` the last two.
//!
//! Every request that is not the collector's (or, in `veil aggregator`, `/healthz`) passes the
//! aggregator's [`Guard`] first — the Host allow-list, the cross-origin and JSON checks — and
//! every answer it gets carries the guard's security headers (`veil_aggregator::guard`); a
//! shared link's embed page gets the origins its link names as `frame-ancestors`. This is the
//! one place browser-facing requests enter.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use veil_aggregator::guard::Guard;
use veil_aggregator::Aggregator;
use veil_collector::server::{text, App, ResponseFuture};
use veil_collector::Collector;

/// Collector, aggregator and dashboard on one address.
pub struct VeilApp {
    /// Ingest routes, health and metrics (absent in `veil aggregator`).
    pub collector: Option<Collector>,
    /// The Stats API.
    pub aggregator: Aggregator,
    /// The browser-facing checks of the dashboard and the Stats API.
    pub guard: Guard,
}

impl App for VeilApp {
    fn call(self: Arc<Self>, req: Request<Bytes>) -> ResponseFuture {
        Box::pin(async move {
            if let Some(c) = &self.collector {
                if veil_collector::routes::is_collector_path(req.uri().path()) {
                    // Collector paths always answer (routes::route returns Some for them).
                    let fallback = (req.method().clone(), req.uri().path().to_string());
                    return match c.handle(req).await {
                        Some(r) => r,
                        None => veil_collector::server::error_response(
                            &veil_collector::Error::NotFound(format!(
                                "{} {}",
                                fallback.0, fallback.1
                            )),
                        ),
                    };
                }
            } else if req.uri().path() == "/healthz" {
                return text(StatusCode::OK, "ok\n");
            }
            if let Err(e) = self.guard.check(&req) {
                return self.guard.harden(veil_aggregator::http::error_response(&e));
            }
            if let Some(r) = veil_dashboards::handle(&req) {
                return match self.aggregator.embed_origins(&req) {
                    Some(origins) => self.guard.harden_embedded(r, &origins),
                    None => self.guard.harden(r),
                };
            }
            let not_found = veil_collector::not_found(&req);
            if let Some(r) = self.aggregator.handle(req).await {
                return self.guard.harden(r);
            }
            self.guard.harden(not_found)
        })
    }
}
