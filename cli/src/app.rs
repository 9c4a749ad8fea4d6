//! The roles composed onto one HTTP server: collector routes first, then the Stats API, then
//! the dashboard's files, else 404. `veil up` serves all three; `veil aggregator` the last two.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use veil_aggregator::Aggregator;
use veil_collector::server::{text, App, ResponseFuture};
use veil_collector::Collector;

/// Collector, aggregator and dashboard on one address.
pub struct VeilApp {
    /// Ingest routes, health and metrics (absent in `veil aggregator`).
    pub collector: Option<Collector>,
    /// The Stats API.
    pub aggregator: Aggregator,
}

impl App for VeilApp {
    fn call(self: Arc<Self>, req: Request<Bytes>) -> ResponseFuture {
        Box::pin(async move {
            let not_found = veil_collector::not_found(&req);
            if let Some(c) = &self.collector {
                if veil_collector::routes::is_collector_path(req.uri().path()) {
                    if let Some(r) = c.handle(req).await {
                        return r;
                    }
                    return not_found;
                }
            } else if req.uri().path() == "/healthz" {
                return text(StatusCode::OK, "ok\n");
            }
            if let Some(r) = veil_dashboards::handle(&req) {
                return r;
            }
            if let Some(r) = self.aggregator.handle(req).await {
                return r;
            }
            not_found
        })
    }
}
