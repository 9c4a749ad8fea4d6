//! Hostile input and limits: deep JSON, too many headers, per-IP and per-site rate limits,
//! too many connections, and the per-connection request limit. Each gets a clear 4xx/503.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn deep_json_and_too_many_headers_are_refused() {
    let mut c = start("hostile_parse", config(&["example.com"])).await;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let r = c.post("/v1/events", &[], &deep).await;
    assert_eq!(r.status, 400);
    // The batch's one "event" is an array 5000 deep: stepped over without recursion (each
    // event is kept as its JSON text) and refused for what it is.
    assert_eq!(
        r.json()["rejected"][0]["error"],
        "event must be a JSON object",
        "{}",
        r.body
    );
    // Deep inside an event: the parser's recursion limit, for that event.
    let deep_event = format!(
        r#"[{{"site":"example.com","name":"x","url":"https://example.com/","props":{}1{}}}]"#,
        "{\"a\":".repeat(5000),
        "}".repeat(5000)
    );
    let r = c.post("/v1/events", &[], &deep_event).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .contains("recursion limit"),
        "{}",
        r.body
    );
    let deep_props = format!(
        r#"{{"n":"x","u":"https://example.com/","d":"example.com","p":{}1{}}}"#,
        "{\"a\":".repeat(300),
        "}".repeat(300)
    );
    assert_eq!(c.post("/api/event", &[], &deep_props).await.status, 400);
    let mut raw = String::from("POST /api/event HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        raw.push_str(&format!("X-H{i}: v\r\n"));
    }
    raw.push_str("Content-Length: 2\r\n\r\n{}");
    let r = raw_request(c.addr, raw.as_bytes()).await;
    assert_eq!(r.status, 431, "{r:?}");
    // Still serving.
    assert_eq!(
        c.post(
            "/api/event",
            &[("User-Agent", CHROME)],
            &plausible("example.com", "https://example.com/")
        )
        .await
        .status,
        202
    );
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn rate_limits_answer_429_per_ip_and_per_site() {
    let mut cfg = config(&["example.com", "busy.example"]);
    cfg.limits.rate_limit_ip = 5; // bursts of 10
    cfg.limits.rate_limit_site = 0;
    let mut c = start("rate_ip", cfg).await;
    let mut codes = Vec::new();
    for _ in 0..20 {
        let r = c
            .post(
                "/api/event",
                &[("User-Agent", CHROME), ("X-Forwarded-For", "203.0.113.66")],
                &plausible("example.com", "https://example.com/"),
            )
            .await;
        codes.push(r.status);
        if r.status == 429 {
            assert!(r.headers.contains("retry-after: 1"));
            assert!(r.body.contains("rate limit"));
        }
    }
    assert_eq!(codes.iter().filter(|s| **s == 202).count(), 10, "{codes:?}");
    // Another client is not affected.
    let r = c
        .post(
            "/api/event",
            &[("User-Agent", CHROME), ("X-Forwarded-For", "203.0.113.67")],
            &plausible("example.com", "https://example.com/"),
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(
        c.metric("veil_requests_rejected_total{reason=\"rate_limited_ip\"}")
            .await,
        10.0
    );
    c.shutdown().await.unwrap();

    let mut cfg = config(&["example.com", "busy.example"]);
    cfg.limits.rate_limit_ip = 0;
    cfg.limits.rate_limit_site = 3; // bursts of 6 events
    let mut c = start("rate_site", cfg).await;
    let batch: Vec<serde_json::Value> = (0..4)
        .map(|i| serde_json::json!({"site": "busy.example", "name": "pageview", "url": format!("https://busy.example/{i}")}))
        .collect();
    let body = serde_json::Value::Array(batch).to_string();
    assert_eq!(c.post("/v1/events", &[], &body).await.json()["accepted"], 4);
    let r = c.post("/v1/events", &[], &body).await;
    assert_eq!(r.json()["accepted"], 2, "{}", r.body);
    assert!(r.json()["rejected"][0]["error"]
        .as_str()
        .unwrap()
        .contains("rate limit"));
    assert_eq!(
        c.post(
            "/api/event",
            &[("User-Agent", CHROME)],
            &plausible("example.com", "https://example.com/")
        )
        .await
        .status,
        202,
        "other sites unaffected"
    );
    assert_eq!(
        c.metric("veil_events_dropped_total{reason=\"rate_limited\"}")
            .await,
        2.0
    );
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn connection_limits_refuse_clearly() {
    let mut cfg = config(&["example.com"]);
    cfg.limits.max_connections = 2;
    cfg.limits.max_requests_per_connection = 2;
    let mut c = start("connections", cfg).await;
    // Two idle keep-alive connections hold both slots; a third is refused with a 503.
    let mut a = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    let mut b = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    a.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    b.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let _ = a.read(&mut buf).await.unwrap();
    let _ = b.read(&mut buf).await.unwrap();
    let r = c.get("/healthz").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("too many open connections"));
    drop(b);
    // The second request on `a` is its last: the server says so and closes.
    a.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), a.read_to_end(&mut rest))
        .await
        .expect("closed after the limit")
        .unwrap();
    let text = String::from_utf8_lossy(&rest).to_ascii_lowercase();
    assert!(
        text.contains("200 ok") && text.contains("connection: close"),
        "{text}"
    );
    // The server frees a slot once it has seen the connection close: ask until it has.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut status = c.get("/healthz").await.status;
    while status != 200 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = c.get("/healthz").await.status;
    }
    assert_eq!(status, 200, "slots are freed when connections close");
    assert!(
        c.metric("veil_requests_rejected_total{reason=\"too_many_connections\"}")
            .await
            >= 1.0
    );
    c.shutdown().await.unwrap();
}
