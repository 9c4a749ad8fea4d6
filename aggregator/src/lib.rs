//! Veil's aggregator: turns stored events into reports that never describe fewer than `k`
//! visitors, behind a Stats API shaped like Plausible's v2.
//!
//! Routes (all JSON; with `--api-token` set they need `Authorization: Bearer TOKEN`):
//! - `GET /api/v1/sites` → `{"sites": ["example.com", …]}`;
//! - `POST /api/v2/query` → `{"results": [{"dimensions": [...], "metrics": [...]}], "meta": {...}, "query": {...}}`
//!   (see [`query`] for the request).
//!
//! k-anonymity (`--min-visitors`, default 5): a breakdown row with fewer visitors than `k` is
//! folded into one `(other)` row (shown only when it reaches `k` itself); a time bucket or a
//! total under `k` has its metrics replaced by `null`. `meta` says how many rows were folded.
//! Child-directed sites store no visitor hash: they report `pageviews` and `events` only, and
//! the same rule applies to their event counts instead of visitors.

pub mod query;
pub mod retention;
pub mod site;
pub mod stats;

pub use site::SiteView;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use veil_schemas::ClickHouseConfig;

/// The aggregator's one error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The query is invalid; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong API token.
    #[error("missing or invalid API token (send `Authorization: Bearer TOKEN`)")]
    Unauthorized,
    /// The site is not registered.
    #[error("site {0:?} is not registered")]
    UnknownSite(String),
    /// Known route, wrong method.
    #[error("method not allowed; use {0}")]
    MethodNotAllowed(&'static str),
    /// ClickHouse failed.
    #[error("query failed: {0}")]
    ClickHouse(String),
}

impl Error {
    fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::UnknownSite(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::ClickHouse(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Aggregator settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AggregatorConfig {
    /// Sites whose reports are served.
    pub sites: Vec<String>,
    /// Child-directed sites: only `pageviews` and `events` are reported, never visitors.
    pub child_sites: Vec<String>,
    /// Bearer token required by the API (none: open, for loopback use).
    #[serde(skip_serializing)]
    pub api_token: Option<String>,
    /// k: no published number describes fewer visitors than this.
    pub min_visitors: u64,
    /// How long raw events are kept.
    pub retention: retention::Retention,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            sites: Vec::new(),
            child_sites: Vec::new(),
            api_token: None,
            min_visitors: 5,
            retention: retention::Retention::default(),
        }
    }
}

/// The Stats API over one ClickHouse database.
#[derive(Debug, Clone)]
pub struct Aggregator {
    cfg: Arc<AggregatorConfig>,
    ch: ClickHouseConfig,
    client: clickhouse::Client,
}

type HttpResponse = Response<Full<Bytes>>;

fn json_response(status: StatusCode, v: &Value) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error_response(e: &Error) -> HttpResponse {
    json_response(e.status(), &json!({ "error": e.to_string() }))
}

impl Aggregator {
    /// An aggregator reading from `ch`.
    pub fn new(cfg: AggregatorConfig, ch: ClickHouseConfig) -> Self {
        let client = ch.client();
        Self {
            cfg: Arc::new(cfg),
            ch,
            client,
        }
    }

    /// The ClickHouse it reads.
    pub fn clickhouse(&self) -> &ClickHouseConfig {
        &self.ch
    }

    /// True for the paths this app answers.
    pub fn is_aggregator_path(path: &str) -> bool {
        matches!(path, "/api/v1/sites" | "/api/v2/query")
    }

    fn authorized(&self, req: &Request<Bytes>) -> bool {
        let Some(token) = &self.cfg.api_token else {
            return true;
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // blake3::Hash equality is constant-time.
        blake3::hash(given.as_bytes()) == blake3::hash(token.as_bytes())
    }

    /// Answers a request if its path is the aggregator's.
    pub async fn handle(&self, req: Request<Bytes>) -> Option<HttpResponse> {
        let path = req.uri().path();
        if !Self::is_aggregator_path(path) {
            return None;
        }
        if !self.authorized(&req) {
            return Some(error_response(&Error::Unauthorized));
        }
        let r = match (path, req.method()) {
            ("/api/v1/sites", &Method::GET) => Ok(json_response(
                StatusCode::OK,
                &json!({ "sites": self.cfg.sites }),
            )),
            ("/api/v2/query", &Method::POST) => self.query(req.body(), query::today()).await,
            ("/api/v1/sites", _) => Err(Error::MethodNotAllowed("GET")),
            _ => Err(Error::MethodNotAllowed("POST")),
        };
        Some(r.unwrap_or_else(|e| {
            if let Error::ClickHouse(m) = &e {
                tracing::warn!(error = %m, "stats query failed");
            }
            error_response(&e)
        }))
    }

    /// The site as the query engine sees it, if registered.
    pub fn site(&self, domain: &str) -> Option<SiteView> {
        if !self.cfg.sites.iter().any(|s| s == domain) {
            return None;
        }
        let mut v = SiteView::new(domain);
        v.min_visitors = self.cfg.min_visitors.max(site::MIN_K);
        v.child_directed = self.cfg.child_sites.iter().any(|s| s == domain);
        Some(v)
    }

    /// Runs a Stats API query given as JSON bytes.
    pub async fn query(
        &self,
        body: &[u8],
        today: chrono::NaiveDate,
    ) -> Result<HttpResponse, Error> {
        let site_id = stats::site_id(body)?;
        let site = self.site(&site_id).ok_or(Error::UnknownSite(site_id))?;
        let result = stats::run(&self.client, &site, body, today).await?;
        Ok(json_response(StatusCode::OK, &result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(k: u64) -> Aggregator {
        Aggregator::new(
            AggregatorConfig {
                sites: vec!["a.com".into()],
                api_token: Some("s3cret".into()),
                min_visitors: k,
                ..Default::default()
            },
            ClickHouseConfig::new("http://127.0.0.1:1", "veil"),
        )
    }

    #[tokio::test]
    async fn token_is_required_when_set() {
        let a = agg(1);
        let req = Request::builder()
            .method("GET")
            .uri("/api/v1/sites")
            .body(Bytes::new())
            .unwrap();
        assert_eq!(
            a.handle(req).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
        let req = Request::builder()
            .method("GET")
            .uri("/api/v1/sites")
            .header("authorization", "Bearer s3cret")
            .body(Bytes::new())
            .unwrap();
        assert_eq!(a.handle(req).await.unwrap().status(), StatusCode::OK);
        let req = Request::builder()
            .method("GET")
            .uri("/elsewhere")
            .body(Bytes::new())
            .unwrap();
        assert!(a.handle(req).await.is_none());
    }
}
