//! Shared helpers for the collector's integration tests: a real collector on port 0 (and its
//! metrics listener on another free port) over a fresh database of the test ClickHouse, and a
//! minimal HTTP/1.1 client that can also send malformed and slow requests.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use veil_collector::CollectorConfig;
pub use veil_schemas::sql;
pub use veil_schemas::sql::{Run, Sql};
use veil_schemas::ClickHouseConfig;

pub const CHROME: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36";
pub const FIREFOX: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0";
pub const GOOGLEBOT: &str =
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

pub struct Running {
    pub addr: SocketAddr,
    /// The metrics listener (`/metrics`), unless the config turned it off.
    pub metrics_addr: Option<SocketAddr>,
    pub ch: ClickHouseConfig,
    pub spool: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), veil_collector::Error>>>,
}

impl Running {
    /// Triggers shutdown and waits for run() to return (drain + final flush).
    pub async fn shutdown(&mut self) -> Result<(), veil_collector::Error> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.take() {
            Some(t) => t.await.unwrap(),
            None => Ok(()),
        }
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
        request(self.addr, "POST", path, headers, body.as_bytes()).await
    }

    pub async fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path, &[], b"").await
    }

    /// `GET path` on the metrics listener, with `headers`.
    pub async fn get_metrics_listener(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let addr = self.metrics_addr.expect("the metrics listener is on");
        request(addr, "GET", path, headers, b"").await
    }

    /// `/metrics` from the metrics listener (no token).
    pub async fn scrape(&self) -> Response {
        self.get_metrics_listener("/metrics", &[]).await
    }

    pub async fn metric(&self, name_and_labels: &str) -> f64 {
        let r = self.scrape().await;
        assert_eq!(r.status, 200, "/metrics: {r:?}");
        metric(&r.body, name_and_labels)
    }

    /// Waits (up to 5 s) for a metric to reach `want` and returns its last value: the sink
    /// counts a batch written only after ClickHouse acknowledged it, a moment after its rows
    /// are visible to a reader.
    pub async fn wait_metric(&self, name_and_labels: &str, want: f64) -> f64 {
        let mut v = self.metric(name_and_labels).await;
        for _ in 0..100 {
            if v == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            v = self.metric(name_and_labels).await;
        }
        v
    }

    pub async fn count(&self, where_: &'static str) -> u64 {
        count(&self.ch, where_).await
    }
}

pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// The columns of a row type, for `SELECT {} FROM …` (what the `clickhouse` crate's `?fields`
/// wrote; `query_raw` leaves `?fields` as it is).
pub fn fields<R: clickhouse::Row>() -> Sql {
    veil_schemas::sql::idents(R::COLUMN_NAMES, ", ")
}

/// Rows of `events` matching a condition written in the test.
pub async fn count(ch: &ClickHouseConfig, where_: &'static str) -> u64 {
    ch.client()
        .sql(&sql!("SELECT count() FROM events WHERE {}", where_))
        .fetch_one()
        .await
        .unwrap()
}

/// Waits until `count(where_) == n` (or panics after `secs`).
pub async fn wait_count(ch: &ClickHouseConfig, where_: &'static str, n: u64, secs: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let c = count(ch, where_).await;
        if c == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {n} rows where {where_}, found {c}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn config(sites: &[&str]) -> CollectorConfig {
    let mut c = CollectorConfig {
        sites: sites.iter().map(|s| s.to_string()).collect(),
        ..CollectorConfig::default()
    };
    c.batch.max_age = Duration::from_millis(100);
    c.shutdown_timeout = Duration::from_secs(10);
    c
}

pub async fn start(label: &str, config: CollectorConfig) -> Running {
    let ch = veil_schemas::testing::fresh_database(label).await;
    start_on(ch, config).await
}

pub async fn start_on(ch: ClickHouseConfig, mut config: CollectorConfig) -> Running {
    // Each collector gets its own spool directory unless the test chose one.
    let spool = if config.spool.dir == CollectorConfig::default().spool.dir {
        let d = tempfile::Builder::new()
            .prefix("veil-spool-")
            .tempdir()
            .unwrap();
        config.spool.dir = d.path().to_path_buf();
        Some(d)
    } else {
        None
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The metrics listener on a free port of the configured address (tests run in parallel).
    let metrics = match config.metrics.listen {
        Some(m) => Some(TcpListener::bind(SocketAddr::new(m.ip(), 0)).await.unwrap()),
        None => None,
    };
    let metrics_addr = metrics.as_ref().map(|l| l.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let ch2 = ch.clone();
    let task = tokio::spawn(async move {
        veil_collector::run(config, ch2, listener, metrics, async {
            let _ = rx.await;
        })
        .await
    });
    Running {
        addr,
        metrics_addr,
        ch,
        spool,
        stop: Some(tx),
        task: Some(task),
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw_request(addr, &raw).await
}

pub async fn raw_request(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .unwrap();
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> Response {
    let text = String::from_utf8_lossy(buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Response {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

pub fn plausible(domain: &str, url: &str) -> String {
    serde_json::json!({ "n": "pageview", "u": url, "d": domain, "r": null }).to_string()
}
