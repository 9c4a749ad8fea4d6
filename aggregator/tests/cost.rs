//! What one credential may cost, through HTTP (issue 16, point 7): a credential past its
//! bound on report requests under way gets 429 with `Retry-After` while another credential
//! and the admin go on; an export cannot start beside a full limit and counts as the reports
//! it runs against the rate limit; a database failure is a 502 with a generic message and a
//! request id that the log line carries too (ClickHouse's text nowhere); filter regexes are
//! checked with RE2's syntax (as ClickHouse runs them) and refused with a 400 naming the
//! filter; pages keep Plausible's maximum of 10 000 rows; report queries carry
//! `max_execution_time`; a filtered report is asked beside its differencing guard's counts.
//!
//! Queries "under way" are real: the aggregator reads from a stand-in ClickHouse that holds
//! every query until the test lets go, while its site registry (keys) comes from the real test
//! ClickHouse. Nothing waits a fixed time: the test polls what it waits for, with a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http::{HeaderMap, Request};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use veil_aggregator::query::re2;
use veil_aggregator::{db, Aggregator, AggregatorConfig, ManualClock, MAX_EXECUTION_SECS};
use veil_schemas::sql;
use veil_schemas::sql::lit;
use veil_schemas::ClickHouseConfig;

const ADMIN: &str = "admin-token-for-cost-tests";
const SITE: &str = "cost.example";

/// What the stand-in ClickHouse answers every query with once let go: a real-looking error
/// that quotes SQL and a value from it.
const CH_ERROR: &str = "Code: 60, e.displayText() = DB::Exception: Table veil.events doesn't \
                        exist: SELECT count() FROM events WHERE pathname = '/secret-path', \
                        e.what() = DB::Exception";

fn config(limit: u32) -> AggregatorConfig {
    AggregatorConfig {
        api_token: Some(ADMIN.into()),
        privacy: veil_aggregator::privacy::Settings::exact(),
        max_concurrent_queries: limit,
        ..Default::default()
    }
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "non-JSON body ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

async fn call(
    a: &Aggregator,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default()))
        .unwrap();
    let r = a.handle(req).await.expect("an aggregator path");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

fn query_body() -> Value {
    json!({"site_id": SITE, "metrics": ["pageviews"], "date_range": "7d"})
}

/// An aggregator on a fresh database with site [`SITE`] and `keys` site keys: `(aggregator,
/// database, [(key id, secret)])`.
async fn with_keys(
    label: &str,
    cfg: AggregatorConfig,
    keys: usize,
) -> (Aggregator, ClickHouseConfig, Vec<(String, String)>) {
    let ch = veil_schemas::testing::fresh_database(label).await;
    let a = Aggregator::new(cfg, ch.clone());
    a.registry().refresh().await.unwrap();
    let r = call(
        &a,
        "POST",
        "/api/v1/sites",
        ADMIN,
        Some(json!({"domain": SITE})),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.json());
    let mut out = Vec::new();
    for _ in 0..keys {
        let path = format!("/api/v1/sites/{SITE}/keys");
        let v = call(&a, "POST", &path, ADMIN, None).await.json();
        out.push((
            v["id"].as_str().unwrap().to_string(),
            v["key"].as_str().unwrap().to_string(),
        ));
    }
    a.registry().refresh().await.unwrap();
    (a, ch, out)
}

/// A stand-in for ClickHouse's HTTP interface: it reads each query, counts it, holds it until
/// [`Stalled::let_go`], then answers it with a 500 and [`CH_ERROR`].
struct Stalled {
    url: String,
    seen: Arc<AtomicUsize>,
    go: tokio::sync::watch::Sender<bool>,
}

impl Stalled {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let (go, rx) = tokio::sync::watch::channel(false);
        let counter = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    if read_request(&mut conn).await.is_none() {
                        return;
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = rx.wait_for(|go| *go).await;
                    let answer = format!(
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{CH_ERROR}",
                        CH_ERROR.len()
                    );
                    let _ = conn.write_all(answer.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Self { url, seen, go }
    }

    fn let_go(&self) {
        self.go.send_replace(true);
    }
}

/// Reads one HTTP/1.1 request (headers, then a `Content-Length` or chunked body).
async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &buf[head_end..];
        let done = match length {
            Some(n) => body.len() >= n,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => true,
        };
        if done {
            return Some(());
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Polls `what` until it holds, failing after 30 s.
async fn until(label: &str, mut what: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !what() {
        assert!(Instant::now() < deadline, "timed out waiting for {label}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_past_its_limit_gets_429_while_others_go_on() {
    let (real, ch, keys) = with_keys("cost_gate", config(2), 2).await;
    let ((id1, k1), (id2, k2)) = (keys[0].clone(), keys[1].clone());
    let (c1, c2) = (format!("key:{id1}"), format!("key:{id2}"));
    // The same keys, read from a ClickHouse that holds every query.
    let stalled = Stalled::start().await;
    let slow = Aggregator::with_registry(
        config(2),
        ClickHouseConfig::new(&stalled.url, &ch.database),
        Arc::clone(real.registry()),
    );
    // Each held request asks its own range: reports asked at once over the same range share
    // their catalog reads (`builds`), and each of these must reach ClickHouse on its own.
    let ask = |token: String, path: &'static str, method: &'static str, range: &'static str| {
        let a = slow.clone();
        let body = (method == "POST")
            .then(|| json!({"site_id": SITE, "metrics": ["pageviews"], "date_range": range}));
        tokio::spawn(async move { call(&a, method, path, &token, body).await })
    };
    // Two queries of key 1 under way: its limit.
    let mut running = vec![
        ask(k1.clone(), "/api/v2/query", "POST", "7d"),
        ask(k1.clone(), "/api/v2/query", "POST", "8d"),
    ];
    until("two queries of key 1 at ClickHouse", || {
        stalled.seen.load(Ordering::SeqCst) >= 2 && slow.cost().under_way(&c1) == 2
    })
    .await;
    // A third waits cost::QUEUE_WAIT for a place, then is refused, never reaching ClickHouse.
    let r = call(&slow, "POST", "/api/v2/query", &k1, Some(query_body())).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "1");
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(msg.contains("2 report requests under way"), "{msg}");
    assert!(msg.contains("retry"), "{msg}");
    // So is an export, which would run 18 reports: it cannot start beside a full limit.
    let export = format!("/api/v1/sites/{SITE}/export?date_range=7d");
    let r = call(&slow, "GET", &export, &k1, None).await;
    assert_eq!(r.status, 429, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        stalled.seen.load(Ordering::SeqCst),
        2,
        "nothing more reached ClickHouse"
    );
    // Another key goes on: its query reaches ClickHouse and holds a place of its own.
    running.push(ask(k2.clone(), "/api/v2/query", "POST", "9d"));
    until("key 2's query at ClickHouse", || {
        stalled.seen.load(Ordering::SeqCst) >= 3 && slow.cost().under_way(&c2) == 1
    })
    .await;
    // The admin is not bounded: three more side by side.
    for range in ["10d", "11d", "12d"] {
        running.push(ask(ADMIN.to_string(), "/api/v2/query", "POST", range));
    }
    until("the admin's queries at ClickHouse", || {
        stalled.seen.load(Ordering::SeqCst) >= 6
    })
    .await;
    assert_eq!(slow.cost().under_way(&c1), 2);
    // ClickHouse answers (with an error): every held request ends, each with its own id.
    stalled.let_go();
    let mut ids = Vec::new();
    for t in running {
        let r = t.await.unwrap();
        assert_eq!(r.status, 502);
        ids.push(r.json()["request_id"].as_str().unwrap().to_string());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "one id per failed request");
    assert_eq!(slow.cost().under_way(&c1), 0, "places are given back");
    assert_eq!(slow.cost().under_way(&c2), 0);
    // Key 1 is admitted again (its query reaches the now-answering ClickHouse).
    let r = call(&slow, "POST", "/api/v2/query", &k1, Some(query_body())).await;
    assert_eq!(r.status, 502);
}

/// A filtered question's differencing-guard counts and its report are asked at once (the
/// dashboard's filtered first screen waited for the guard's counts, then for the report): with
/// every query held, one request has two at ClickHouse. A withheld answer drops the report's
/// result (`stats::guarded`); here both fail, and the request is a 502 as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_report_is_asked_beside_its_guard() {
    let (real, ch, _) = with_keys("cost_guard_beside", config(4), 0).await;
    let stalled = Stalled::start().await;
    let slow = Aggregator::with_registry(
        config(4),
        ClickHouseConfig::new(&stalled.url, &ch.database),
        Arc::clone(real.registry()),
    );
    // Raw events (no builds to look up first): the guard's count and the report. (By two
    // properties: visitors in total would be one statement with the guard's count, `screen`.)
    let body = json!({"site_id": SITE, "metrics": ["visitors"], "date_range": "7d",
        "dimensions": ["visit:country", "visit:device"],
        "filters": [["is", "visit:source", ["Google"]]], "include": {"rollups": false}});
    let a = slow.clone();
    let running =
        tokio::spawn(async move { call(&a, "POST", "/api/v2/query", ADMIN, Some(body)).await });
    until(
        "the guard's count and the report at ClickHouse at once",
        || stalled.seen.load(Ordering::SeqCst) >= 2,
    )
    .await;
    stalled.let_go();
    let r = running.await.unwrap();
    assert_eq!(r.status, 502, "{:?}", String::from_utf8_lossy(&r.body));
}

#[tokio::test]
async fn an_export_counts_as_the_reports_it_runs() {
    let cfg = AggregatorConfig {
        key_rate_per_second: 1,
        key_rate_burst: 30,
        ..config(6)
    };
    let (a, _, keys) = with_keys("cost_export", cfg, 1).await;
    // The bucket refills by the aggregator's clock, moved below instead of waiting.
    let clock = ManualClock::new(Utc::now());
    let a = a.with_clock(clock.clone());
    let k = &keys[0].1;
    let export = format!("/api/v1/sites/{SITE}/export?date_range=7d");
    let r = call(&a, "GET", &export, k, None).await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.headers["content-type"], "application/zip");
    // 18 reports took 18 of the 30 tokens: a second export does not fit in the 12 left…
    let r = call(&a, "GET", &export, k, None).await;
    assert_eq!(r.status, 429);
    // (The refused request took its own token: 17 more needed, 11 there, 1 a second.)
    assert_eq!(r.headers["retry-after"], "6");
    assert!(r.json()["error"].as_str().unwrap().contains("rate limit"));
    // …while a single query does.
    let r = call(&a, "POST", "/api/v2/query", k, Some(query_body())).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    // 10 tokens left; 8 s bring the 18 an export takes.
    clock.advance(Duration::from_secs(8));
    let r = call(&a, "GET", &export, k, None).await;
    assert_eq!(r.status, 200, "the bucket refilled");
    // The admin's exports are not rate-limited.
    for _ in 0..3 {
        assert_eq!(call(&a, "GET", &export, ADMIN, None).await.status, 200);
    }
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Log;
    fn make_writer(&'a self) -> Log {
        self.clone()
    }
}

/// The log of this test process: one global subscriber (a thread's own default would miss
/// events whose callsites other tests' threads registered first); lines are found by their
/// request id.
fn log() -> Log {
    static LOG: std::sync::OnceLock<Log> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Log::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        log
    })
    .clone()
}

#[tokio::test]
async fn a_database_failure_is_a_502_with_a_request_id_the_log_carries() {
    let log = log();
    let (real, ch, keys) = with_keys("cost_502", config(2), 1).await;
    let stalled = Stalled::start().await;
    stalled.let_go();
    let failing = Aggregator::with_registry(
        config(2),
        ClickHouseConfig::new(&stalled.url, &ch.database),
        Arc::clone(real.registry()),
    );
    for token in [keys[0].1.as_str(), ADMIN] {
        let r = call(&failing, "POST", "/api/v2/query", token, Some(query_body())).await;
        assert_eq!(r.status, 502);
        let v = r.json();
        assert_eq!(v["error"], veil_aggregator::CLICKHOUSE_FAILED);
        let id = v["request_id"].as_str().unwrap();
        assert_eq!(id.len(), 16);
        assert_eq!(r.headers["x-request-id"], id);
        let body = String::from_utf8_lossy(&r.body);
        for secret in ["secret-path", "Code: 60", "DB::Exception", "SELECT"] {
            assert!(!body.contains(secret), "{secret} in {body}");
        }
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("no log line with {id}: {text}"));
        assert!(line.contains("ClickHouse request failed"), "{line}");
        assert!(line.contains("code=Some(60)"), "{line}");
        assert!(!line.contains("secret-path"), "{line}");
    }
    // A refusal is not a failure: no id.
    let r = call(
        &failing,
        "POST",
        "/api/v2/query",
        "wrong",
        Some(query_body()),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.headers.get("x-request-id").is_none());
}

fn filtered(pattern: &str) -> Value {
    json!({"site_id": common::SITE, "metrics": ["visitors"], "dimensions": ["event:page"],
           "date_range": ["2026-11-20", "2026-11-20"],
           "filters": [["matches", "event:page", [pattern]]]})
}

#[tokio::test]
async fn regexes_are_checked_as_re2_reads_them() {
    let ch = veil_schemas::testing::fresh_database("cost_re2").await;
    common::seed(&ch).await;
    let a = common::stats_aggregator(&ch);
    let post = |body: Value| {
        let a = a.clone();
        async move {
            let r = a
                .handle(common::request(
                    "/api/v2/query",
                    "POST",
                    body.to_string(),
                    "application/json",
                ))
                .await
                .unwrap();
            let status = r.status().as_u16();
            let b = http_body_util::BodyExt::collect(r.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, serde_json::from_slice::<Value>(&b).unwrap())
        }
    };
    // Refused before any SQL, naming the filter and what is wrong: patterns both Rust's
    // regex and RE2 refuse, and ones Rust's regex accepts that RE2 refuses or reads otherwise.
    for (pattern, says) in [
        ("(a", "unclosed group"),
        ("a{2,1}", "invalid"),
        ("(?<=x)y", "look-around"),
        (r"(a)\1", "backreferences"),
        ("a{1001}", "up to 1000"),
        ("(?<n>a)", "(?P<name>"),
        ("[a&&b]", "set operations"),
        ("(?x)a b", "flags"),
        (r"\u0041", r"\u"),
        (r"\<a", "assertions"),
    ] {
        let (s, v) = post(filtered(pattern)).await;
        assert_eq!(s, 400, "{pattern}: {v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains("filters[0][2][0]"), "{pattern}: {e}");
        assert!(e.contains("ClickHouse can run"), "{pattern}: {e}");
        assert!(e.contains(says), "{pattern}: {e}");
    }
    // A valid one runs end to end in ClickHouse.
    let (s, v) = post(filtered("^/(pricing|blog/.*)$")).await;
    assert_eq!(s, 200, "{v}");
    let mut pages: Vec<(String, Value)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dimensions"][0].as_str().unwrap().to_string(),
                r["metrics"][0].clone(),
            )
        })
        .collect();
    pages.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        pages,
        vec![
            ("/blog/x".to_string(), json!(6)),
            ("/pricing".to_string(), json!(6))
        ]
    );
}

#[tokio::test]
async fn the_check_agrees_with_clickhouse() {
    let ch = veil_schemas::testing::fresh_database("cost_re2_ch").await;
    let a = Aggregator::new(config(2), ch.clone());
    let run = |p: &str| {
        let q = sql!("SELECT match('abc', {})", lit(p));
        let client = a.client().clone();
        async move { db::fetch(&client, &q).await }
    };
    // Both accept.
    for p in [
        "^/(pricing|blog/.*)$",
        "(?P<n>a)",
        "(?i)ABC",
        "(?s:a.c)",
        "a{1000}",
        "[[:alpha:]]+",
        r"\pL\p{Lu}",
        r"\x{41}|\x41",
        r"\bx\B",
        r"^/a\.b\#\-\&\~ $",
    ] {
        assert_eq!(re2::check(p), Ok(()), "{p}");
        run(p)
            .await
            .unwrap_or_else(|e| panic!("ClickHouse refused {p}: {e}"));
    }
    // Both refuse; ClickHouse's refusal is itself a 400 in general words (a backstop).
    for p in [
        "(a", "a{2,1}", "(?<=x)y", "(?=x)", r"(a)\1", "a{1001}", "(?x)a", r"\u0041",
    ] {
        assert!(re2::check(p).is_err(), "{p}");
        match run(p).await {
            Err(veil_aggregator::Error::BadRequest(m)) => assert_eq!(m, db::REGEX_REFUSED),
            other => panic!("ClickHouse on {p}: {other:?}"),
        }
    }
    // Refused here although some RE2 accepts them (read otherwise, or not in every version):
    // documented in query/re2.rs.
    for p in ["[a&&b]", "[[a]b]", r"\<a", r"\p{Greek}", "(?<n>a)"] {
        assert!(re2::check(p).is_err(), "{p}");
    }
}

#[tokio::test]
async fn answers_are_bounded_and_queries_carry_their_time_bound() {
    let ch = veil_schemas::testing::fresh_database("cost_rows").await;
    common::seed(&ch).await;
    let a = common::stats_aggregator(&ch);
    let body = |p: Value| {
        json!({"site_id": common::SITE, "metrics": ["visitors"], "dimensions": ["event:page"],
               "date_range": ["2026-11-20", "2026-11-20"], "pagination": p})
        .to_string()
    };
    let ask = |b: String| {
        let a = a.clone();
        async move {
            let r = a
                .handle(common::request(
                    "/api/v2/query",
                    "POST",
                    b,
                    "application/json",
                ))
                .await
                .unwrap();
            let s = r.status().as_u16();
            let b = http_body_util::BodyExt::collect(r.into_body())
                .await
                .unwrap()
                .to_bytes();
            (s, serde_json::from_slice::<Value>(&b).unwrap())
        }
    };
    let (s, v) = ask(body(json!({"limit": 10_001}))).await;
    assert_eq!(s, 400);
    assert!(
        v["error"].as_str().unwrap().contains("pagination.limit"),
        "{v}"
    );
    let (s, v) = ask(body(json!({"limit": 10_000}))).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = ask(body(Value::Null)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["query"]["pagination"]["limit"], 10_000,
        "the default page is the maximum"
    );
    let (s, v) = ask(body(json!({"limit": 1}))).await;
    assert_eq!(s, 200);
    assert_eq!(v["results"].as_array().unwrap().len(), 1);
    // The answer ClickHouse gives Veil is bounded too, not only the page cut from it: a
    // breakdown with more groups than `max_result_rows` (here 2; 1 000 000 by default) is a
    // 400 naming the question, while a total (one row) is still answered.
    let narrow = Aggregator::new(
        AggregatorConfig {
            sites: vec![common::SITE.into()],
            privacy: veil_aggregator::privacy::Settings::exact(),
            max_result_rows: 2,
            ..Default::default()
        },
        ch.clone(),
    );
    let ask_narrow = |b: String| {
        let a = narrow.clone();
        async move {
            let r = a
                .handle(common::request(
                    "/api/v2/query",
                    "POST",
                    b,
                    "application/json",
                ))
                .await
                .unwrap();
            let s = r.status().as_u16();
            let b = http_body_util::BodyExt::collect(r.into_body())
                .await
                .unwrap()
                .to_bytes();
            (s, serde_json::from_slice::<Value>(&b).unwrap())
        }
    };
    let (s, v) = ask_narrow(body(json!({"limit": 1}))).await;
    assert_eq!(s, 400, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("too many rows") && e.contains("event:page"),
        "{e}"
    );
    let total = json!({"site_id": common::SITE, "metrics": ["visitors"],
                       "date_range": ["2026-11-20", "2026-11-20"]});
    let (s, v) = ask_narrow(total.to_string()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["metrics"][0], 18);
    // Every report query carries ClickHouse's time bound (read back from the server).
    let rows = db::fetch(
        a.client(),
        &sql!("SELECT value FROM system.settings WHERE name = 'max_execution_time'"),
    )
    .await
    .unwrap();
    assert_eq!(rows[0][0], json!(MAX_EXECUTION_SECS.to_string()));
}

/// Reports reading visit rows or raw events take one of the aggregator's few places
/// (`--max-heavy-queries`), whoever asks (the admin too): past them one waits, running
/// nothing, until a place is given back, while reports read from the rollups go on.
#[tokio::test]
async fn reports_reading_visit_rows_wait_for_a_place_while_rollup_reports_go_on() {
    let cfg = AggregatorConfig {
        max_heavy_queries: 1,
        ..config(0)
    };
    let (a, _ch, _keys) = with_keys("cost_heavy", cfg, 0).await;
    let held = a.heavy().enter().await.unwrap();
    assert_eq!(a.heavy().under_way(), 1);
    let r = call(&a, "POST", "/api/v2/query", ADMIN, Some(query_body())).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["meta"]["source"], "visits_daily", "{:?}", r.json());
    let heavy = json!({"site_id": SITE, "metrics": ["visitors", "bounce_rate"], "date_range": "7d",
                       "dimensions": ["visit:source"], "filters": [["contains", "event:page", ["/blog"]]]});
    let waiting = {
        let a = a.clone();
        let heavy = heavy.clone();
        tokio::spawn(async move { call(&a, "POST", "/api/v2/query", ADMIN, Some(heavy)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "it waits while the place is held");
    drop(held);
    let r = waiting.await.unwrap();
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_ne!(r.json()["meta"]["source"], "event_rollups");
    assert_ne!(r.json()["meta"]["source"], "visits_daily");
    assert_eq!(a.heavy().under_way(), 0, "the place is given back");
}
