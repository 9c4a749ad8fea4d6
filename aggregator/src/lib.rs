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

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use veil_schemas::ClickHouseConfig;

use query::Query;

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

/// A number from ClickHouse JSON (64-bit integers arrive quoted).
fn number(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(s) => s.parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

fn json_number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
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

    /// Runs a Stats API query given as JSON bytes.
    pub async fn query(
        &self,
        body: &[u8],
        today: chrono::NaiveDate,
    ) -> Result<HttpResponse, Error> {
        let q = query::parse(body, today)?;
        if !self.cfg.sites.iter().any(|s| s == &q.site) {
            return Err(Error::UnknownSite(q.site));
        }
        if self.cfg.child_sites.contains(&q.site) {
            query::check_child_query(&q)?;
        }
        let result = self.run(&q).await?;
        Ok(json_response(StatusCode::OK, &result))
    }

    /// Runs a checked query and applies the k-anonymity fold.
    pub async fn run(&self, q: &Query) -> Result<Value, Error> {
        let to_exclusive = q.to + chrono::Duration::days(1);
        let bytes = self
            .client
            .query(&query::sql(q, self.cfg.child_sites.contains(&q.site)))
            .bind(q.site.as_str())
            .bind(format!("{} 00:00:00", q.from.format("%Y-%m-%d")).as_str())
            .bind(format!("{} 00:00:00", to_exclusive.format("%Y-%m-%d")).as_str())
            .fetch_bytes("JSONCompact")
            .map_err(|e| Error::ClickHouse(e.to_string()))?
            .collect()
            .await
            .map_err(|e| Error::ClickHouse(e.to_string()))?;
        let parsed: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::ClickHouse(format!("bad JSON from ClickHouse: {e}")))?;
        let rows = parsed
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(self.fold(q, rows))
    }

    fn fold(&self, q: &Query, rows: Vec<Value>) -> Value {
        let k = self.cfg.min_visitors as f64;
        let nd = q.dimensions.len();
        let nm = q.metrics.len();
        let time = q.dimensions.iter().any(|d| d.starts_with("time:"));
        let mut results = Vec::new();
        let mut other = vec![0.0; nm + 1];
        let mut folded = 0u64;
        let mut suppressed = false;
        for row in rows {
            let Some(cells) = row.as_array() else {
                continue;
            };
            if cells.len() != nd + nm + 1 {
                continue;
            }
            let dims: Vec<Value> = cells[..nd]
                .iter()
                .map(|v| {
                    json!(v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()))
                })
                .collect();
            let metrics: Vec<f64> = cells[nd..nd + nm].iter().map(number).collect();
            let visitors = number(&cells[nd + nm]);
            if visitors >= k || visitors == 0.0 {
                results.push(json!({ "dimensions": dims, "metrics": metrics.into_iter().map(json_number).collect::<Vec<_>>() }));
            } else if nd == 0 || time {
                suppressed = true;
                results.push(json!({ "dimensions": dims, "metrics": vec![Value::Null; nm] }));
            } else {
                folded += 1;
                for (o, m) in other
                    .iter_mut()
                    .zip(metrics.iter().chain(std::iter::once(&visitors)))
                {
                    *o += m;
                }
            }
        }
        if folded > 0 && other[nm] >= k {
            let dims = vec![
                json!(format!(
                    "(other: {folded} rows under k={})",
                    self.cfg.min_visitors
                ));
                nd
            ];
            results.push(json!({ "dimensions": dims, "metrics": other[..nm].iter().map(|x| json_number(*x)).collect::<Vec<_>>() }));
        }
        let total_rows = results.len();
        let page: Vec<Value> = results
            .into_iter()
            .skip(q.offset as usize)
            .take(q.limit as usize)
            .collect();
        json!({
            "results": page,
            "meta": { "min_visitors": self.cfg.min_visitors, "folded_rows": folded, "suppressed": suppressed, "total_rows": total_rows },
            "query": {
                "site_id": q.site,
                "metrics": q.metrics.iter().map(|m| m.name()).collect::<Vec<_>>(),
                "dimensions": q.dimensions,
                "date_range": [q.from.format("%Y-%m-%d").to_string(), q.to.format("%Y-%m-%d").to_string()],
            }
        })
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

    #[test]
    fn small_rows_are_folded() {
        let a = agg(5);
        let q = query::parse(br#"{"site_id":"a.com","metrics":["visitors","pageviews"],"date_range":"day","dimensions":["event:page"]}"#, query::today()).unwrap();
        let rows = vec![
            json!(["/", "10", "20", "10"]),
            json!(["/a", "3", "3", "3"]),
            json!(["/b", "2", "2", "2"]),
            json!(["/c", "1", "1", "1"]),
        ];
        let v = a.fold(&q, rows);
        let r = v["results"].as_array().unwrap();
        assert_eq!(r.len(), 2, "{v}");
        assert_eq!(r[0]["dimensions"][0], "/");
        assert!(r[1]["dimensions"][0]
            .as_str()
            .unwrap()
            .starts_with("(other: 3 rows"));
        assert_eq!(r[1]["metrics"][1], 6);
        assert_eq!(v["meta"]["folded_rows"], 3);
        // A folded group under k is not shown at all.
        let v = a.fold(
            &q,
            vec![json!(["/", "10", "20", "10"]), json!(["/a", "1", "1", "1"])],
        );
        assert_eq!(v["results"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn small_totals_are_suppressed() {
        let a = agg(5);
        let q = query::parse(
            br#"{"site_id":"a.com","metrics":["visitors"],"date_range":"day"}"#,
            query::today(),
        )
        .unwrap();
        let v = a.fold(&q, vec![json!(["2", "2"])]);
        assert_eq!(v["results"][0]["metrics"][0], Value::Null);
        assert_eq!(v["meta"]["suppressed"], true);
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
