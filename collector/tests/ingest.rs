//! The collector against a real ClickHouse: both endpoints, what is stored (and what never is),
//! batching by size and time, shutdown flushing, unknown sites, bots, bad input, and metrics
//! (served only on the metrics listener, behind a token when one is set).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use veil_collector::pipeline::EventRow;

#[tokio::test]
async fn plausible_event_is_stored_as_coarse_facts() {
    let mut c = start("plausible_stored", config(&["example.com"])).await;
    let body = json!({
        "n": "pageview",
        "u": "https://www.example.com/pricing?email=someone@example.org&utm_source=newsletter&utm_medium=email",
        "d": "example.com",
        "r": "https://www.google.com/search?q=veil",
        "p": {"plan": "pro", "seats": 3}
    });
    let r = c
        .post(
            "/api/event",
            &[
                ("User-Agent", CHROME),
                ("X-Forwarded-For", "203.0.113.77"),
                ("Content-Type", "text/plain"),
            ],
            &body.to_string(),
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.body, "ok");
    assert!(r.headers.contains("access-control-allow-origin: *"));
    c.shutdown().await.unwrap();
    let rows: Vec<EventRow> =
        c.ch.client()
            .sql(&sql!("SELECT {} FROM events", fields::<EventRow>()))
            .fetch_all()
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.site, "example.com");
    assert_eq!(row.name, "pageview");
    assert_eq!(row.hostname, "example.com");
    assert_eq!(row.pathname, "/pricing");
    assert_eq!(row.utm_source, "newsletter");
    assert_eq!(row.utm_medium, "email");
    assert_eq!(row.referrer, "https://www.google.com/search");
    assert_eq!(row.referrer_source, "google.com");
    assert_eq!(
        (row.browser.as_str(), row.browser_version.as_str()),
        ("Chrome", "120")
    );
    assert_eq!(row.os, "Mac OSX");
    assert_eq!(row.device, "desktop");
    assert_ne!(row.visitor_id, [0; 16]);
    assert_ne!(row.session_id, [0; 16]);
    let mut props: Vec<(String, String)> = row
        .prop_keys
        .iter()
        .cloned()
        .zip(row.prop_values.iter().cloned())
        .collect();
    props.sort();
    assert_eq!(
        props,
        vec![("plan".into(), "pro".into()), ("seats".into(), "3".into())]
    );
}

#[tokio::test]
async fn raw_ip_user_agent_and_query_strings_never_reach_clickhouse() {
    let mut c = start("privacy_canary", config(&["example.com"])).await;
    let canary_ip = "198.51.100.231";
    let canary_ua =
        "Mozilla/5.0 (X11; Linux x86_64) CanaryBrowser/9.9 Chrome/119.0.0.0 Safari/537.36";
    let r = c
        .post(
            "/api/event",
            &[("User-Agent", canary_ua), ("X-Forwarded-For", canary_ip)],
            &plausible(
                "example.com",
                "https://example.com/reset?token=canarytoken123&email=canary@example.org",
            ),
        )
        .await;
    assert_eq!(r.status, 202);
    let native = json!([{ "site": "example.com", "name": "signup", "url": "https://example.com/x", "ip": "198.51.100.232", "user_agent": canary_ua }]);
    assert_eq!(
        c.post("/v1/events", &[], &native.to_string()).await.status,
        202
    );
    c.shutdown().await.unwrap();
    assert_eq!(c.count("1").await, 2);
    // Every stored value, every column, as text.
    let dump =
        c.ch.client()
            .sql(&Sql::new("SELECT * FROM events FORMAT TSV"))
            .fetch_bytes("TSV")
            .unwrap()
            .collect()
            .await
            .unwrap();
    let dump = String::from_utf8_lossy(&dump);
    for canary in [
        canary_ip,
        "198.51.100.232",
        "CanaryBrowser",
        "canarytoken123",
        "canary@example.org",
        "X11; Linux",
    ] {
        assert!(
            !dump.contains(canary),
            "{canary} reached ClickHouse: {dump}"
        );
    }
}

#[tokio::test]
async fn visitor_hash_is_stable_per_visitor_and_differs_across_sites() {
    // Visitor ids hash with the UTC day's salt: the same visitor on either side of midnight is
    // two ids by design. If the day turned during the posts, they are made again (on a fresh
    // database) on the new day — midnight passes once.
    let (c, a) = loop {
        let day = chrono::Utc::now().date_naive();
        let mut c = start("visitor_hash", config(&["a.example", "b.example"])).await;
        for (site, ip) in [
            ("a.example", "203.0.113.1"),
            ("a.example", "203.0.113.1"),
            ("b.example", "203.0.113.1"),
            ("a.example", "203.0.113.2"),
        ] {
            let r = c
                .post(
                    "/api/event",
                    &[("User-Agent", FIREFOX), ("X-Forwarded-For", ip)],
                    &plausible(site, &format!("https://{site}/")),
                )
                .await;
            assert_eq!(r.status, 202);
        }
        let same_day = chrono::Utc::now().date_naive() == day;
        c.shutdown().await.unwrap();
        let a: u64 =
            c.ch.client()
                .sql(&Sql::new(
                    "SELECT uniqExact(visitor_id) FROM events WHERE site = 'a.example'",
                ))
                .fetch_one()
                .await
                .unwrap();
        if same_day {
            break (c, a);
        }
    };
    assert_eq!(a, 2, "same IP+UA is one visitor, another IP another");
    let shared: u64 = c
        .ch
        .client()
        .sql(&Sql::new("SELECT count() FROM events WHERE site = 'b.example' AND visitor_id IN (SELECT visitor_id FROM events WHERE site = 'a.example')"))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(shared, 0, "one person on two sites must not be linkable");
}

#[tokio::test]
async fn native_batch_reports_each_rejected_event() {
    let mut c = start("native_batch", config(&["example.com"])).await;
    let batch = json!([
        { "site": "example.com", "name": "pageview", "url": "https://example.com/a", "user_agent": CHROME, "ip": "203.0.113.9" },
        { "site": "example.com", "name": "signup", "url": "https://example.com/b", "props": {"plan": "team"}, "timestamp": chrono_now_minus(60) },
        { "site": "example.com", "name": "", "url": "https://example.com/c" },
        { "site": "example.com", "name": "x", "url": "not a url" },
        { "site": "example.com", "name": "x", "url": "https://example.com/", "ip": "999.1.1.1" },
        { "site": "unregistered.example", "name": "pageview", "url": "https://unregistered.example/" },
        "not an object"
    ]);
    let r = c
        .post("/v1/events", &[("User-Agent", FIREFOX)], &batch.to_string())
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let v = r.json();
    assert_eq!(v["accepted"], 2);
    assert_eq!(v["ignored"], 1);
    let rejected = v["rejected"].as_array().unwrap();
    let idx: Vec<u64> = rejected
        .iter()
        .map(|x| x["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, vec![2, 3, 4, 6]);
    assert!(rejected[0]["error"].as_str().unwrap().contains("`name`"));
    assert!(rejected[1]["error"].as_str().unwrap().contains("`url`"));
    assert!(rejected[2]["error"].as_str().unwrap().contains("`ip`"));

    // NDJSON, one event per line.
    let nd = format!(
        "{}\n\n{}\n",
        json!({"site": "example.com", "name": "pageview", "url": "https://example.com/n1"}),
        json!({"site": "example.com", "name": "pageview", "url": "https://example.com/n2"})
    );
    let r = c
        .post(
            "/v1/events",
            &[("Content-Type", "application/x-ndjson")],
            &nd,
        )
        .await;
    assert_eq!((r.status, r.json()["accepted"].clone()), (202, json!(2)));

    // Nothing valid at all: 400 with the same report.
    let r = c
        .post(
            "/v1/events",
            &[],
            &json!([{ "site": "example.com" }]).to_string(),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["rejected"][0]["index"], 0);

    c.shutdown().await.unwrap();
    assert_eq!(c.count("1").await, 4);
    assert_eq!(
        c.count("name = 'signup' AND has(prop_keys, 'plan')").await,
        1
    );
    assert_eq!(
        c.count("pathname = '/a' AND browser = 'Chrome'").await,
        1,
        "user_agent field overrides the header"
    );
    assert_eq!(c.count("pathname = '/n2' AND browser = ''").await, 1);
}

fn chrono_now_minus(secs: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(secs)).to_rfc3339()
}

#[tokio::test]
async fn unknown_sites_and_bots_get_202_but_are_not_stored() {
    let mut c = start("unknown_site", config(&["example.com"])).await;
    let r = c
        .post(
            "/api/event",
            &[("User-Agent", CHROME)],
            &plausible("not-registered.example", "https://not-registered.example/"),
        )
        .await;
    assert_eq!(r.status, 202);
    let r = c
        .post(
            "/api/event",
            &[("User-Agent", GOOGLEBOT)],
            &plausible("example.com", "https://example.com/"),
        )
        .await;
    assert_eq!(r.status, 202);
    // Several domains in `d`: stored for the registered one only.
    let r = c
        .post(
            "/api/event",
            &[("User-Agent", CHROME)],
            &plausible("example.com,other.example", "https://example.com/multi"),
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(
        c.metric("veil_events_dropped_total{reason=\"unknown_site\"}")
            .await,
        2.0
    );
    assert_eq!(
        c.metric("veil_events_dropped_total{reason=\"bot_crawler\"}")
            .await,
        1.0
    );
    c.shutdown().await.unwrap();
    assert_eq!(c.count("1").await, 1);
    assert_eq!(c.count("pathname = '/multi'").await, 1);
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx() {
    let mut cfg = config(&["example.com"]);
    cfg.limits.max_body_bytes = 2048;
    cfg.limits.max_events_per_batch = 3;
    let mut c = start("bad_input", cfg).await;
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("POST", "/api/event", "{not json".into(), 400, "not valid JSON"),
        ("POST", "/api/event", "".into(), 400, "empty body"),
        ("POST", "/api/event", "[1,2]".into(), 400, "JSON object"),
        ("POST", "/api/event", json!({"n": "pageview", "d": "example.com"}).to_string(), 400, "`url`"),
        ("POST", "/api/event", json!({"n": "pageview", "u": "https://example.com/"}).to_string(), 400, "`domain`"),
        ("POST", "/api/event", json!({"u": "https://example.com/", "d": "example.com"}).to_string(), 400, "`name`"),
        ("POST", "/api/event", json!({"n": "e", "u": "https://example.com/", "d": "example.com", "p": {"a": {"b": 1}}}).to_string(), 400, "props.a"),
        ("POST", "/api/event", "x".repeat(5000), 413, "2048 bytes"),
        ("POST", "/v1/events", json!([{}, {}, {}, {}]).to_string(), 413, "--max-events-per-batch"),
        ("POST", "/v1/events", "{\"site\":".into(), 400, "line 1"),
        ("GET", "/api/event", String::new(), 405, "POST"),
        ("POST", "/metrics", String::new(), 404, "no route"),
        ("GET", "/no/such/route", String::new(), 404, "no route"),
    ];
    for (method, path, body, status, needle) in &cases {
        let r = request(
            c.addr,
            method,
            path,
            &[("User-Agent", CHROME)],
            body.as_bytes(),
        )
        .await;
        assert_eq!(r.status, *status, "{method} {path} {body:.40}: {r:?}");
        let msg = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(
            msg.contains(needle),
            "{method} {path}: {msg:?} should mention {needle:?}"
        );
    }
    assert_eq!(
        c.metric("veil_requests_rejected_total{reason=\"body_too_large\"}")
            .await,
        1.0
    );
    assert_eq!(
        c.metric("veil_requests_rejected_total{reason=\"too_many_events\"}")
            .await,
        1.0
    );
    assert!(
        c.metric("veil_events_dropped_total{reason=\"invalid\"}")
            .await
            >= 7.0
    );
    // The server is still fine.
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
    assert_eq!(c.count("1").await, 1);
}

#[tokio::test]
async fn batches_flush_by_size_then_by_time_and_shutdown_flushes_the_rest() {
    let mut cfg = config(&["example.com"]);
    cfg.batch.max_rows = 10;
    cfg.batch.max_age = Duration::from_secs(3600);
    let mut c = start("batch_size", cfg).await;
    let events: Vec<serde_json::Value> =
        (0..25).map(|i| json!({"site": "example.com", "name": "pageview", "url": format!("https://example.com/{i}")})).collect();
    let r = c
        .post(
            "/v1/events",
            &[("User-Agent", CHROME)],
            &serde_json::Value::Array(events).to_string(),
        )
        .await;
    assert_eq!(r.json()["accepted"], 25);
    // Two full batches of 10 go out at once; the last 5 wait (max age is an hour)…
    // Once the writer has counted both batches it is waiting for a third that is not due.
    wait_count(&c.ch, "1", 20, 10).await;
    c.wait_metric("veil_batch_size_events_count", 2.0).await;
    assert_eq!(c.count("1").await, 20);
    assert_eq!(c.metric("veil_batch_size_events_count").await, 2.0);
    // …until shutdown flushes the partial batch.
    c.shutdown().await.unwrap();
    assert_eq!(c.count("1").await, 25);

    // By time: a single event is written within the max age without any shutdown.
    let mut cfg = config(&["example.com"]);
    cfg.batch.max_rows = 100_000;
    cfg.batch.max_age = Duration::from_millis(300);
    let mut c = start("batch_time", cfg).await;
    let started = std::time::Instant::now();
    assert_eq!(
        c.post(
            "/api/event",
            &[("User-Agent", CHROME)],
            &plausible("example.com", "https://example.com/t")
        )
        .await
        .status,
        202
    );
    wait_count(&c.ch, "pathname = '/t'", 1, 10).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "flushed before max age"
    );
    assert_eq!(c.wait_metric("veil_events_written_total", 1.0).await, 1.0);
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let mut c = start("metrics", config(&["example.com"])).await;
    for _ in 0..3 {
        c.post(
            "/api/event",
            &[("User-Agent", CHROME)],
            &plausible("example.com", "https://example.com/"),
        )
        .await;
    }
    c.post("/api/event", &[], "{bad").await;
    let batch = json!([{"site": "example.com", "name": "a", "url": "https://example.com/"}, {"site": "example.com"}]);
    c.post("/v1/events", &[], &batch.to_string()).await;
    wait_count(&c.ch, "1", 4, 10).await;
    assert_eq!(c.wait_metric("veil_events_written_total", 4.0).await, 4.0);
    let m = c.scrape().await;
    assert_eq!(m.status, 200);
    let t = &m.body;
    assert_eq!(
        metric(t, "veil_events_received_total{endpoint=\"plausible\"}"),
        4.0
    );
    assert_eq!(
        metric(t, "veil_events_accepted_total{endpoint=\"plausible\"}"),
        3.0
    );
    assert_eq!(
        metric(t, "veil_events_received_total{endpoint=\"native\"}"),
        2.0
    );
    assert_eq!(
        metric(t, "veil_events_accepted_total{endpoint=\"native\"}"),
        1.0
    );
    assert_eq!(
        metric(t, "veil_events_dropped_total{reason=\"invalid\"}"),
        2.0
    );
    assert_eq!(metric(t, "veil_events_written_total"), 4.0);
    assert_eq!(
        metric(
            t,
            "veil_http_requests_total{route=\"plausible\",status=\"202\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            t,
            "veil_http_requests_total{route=\"plausible\",status=\"400\"}"
        ),
        1.0
    );
    assert!(t.contains("veil_batch_flush_seconds_bucket"));
    // Four appends (three events, one batch; the bad request stored nothing), each waited for
    // one commit of the spool: sent one after another, at most four commits, each timed.
    let commits = metric(t, "veil_spool_commit_seconds_count");
    assert!((1.0..=4.0).contains(&commits), "{commits} spool commits");
    assert!(metric(t, "veil_spool_commit_seconds_sum") > 0.0);
    assert_eq!(
        metric(t, "veil_spool_commit_seconds_bucket{le=\"+Inf\"}"),
        commits
    );
    // The spool's cursor moves right after the insert returns: poll for it.
    let depth = c.wait_metric("veil_queue_depth_events", 0.0).await;
    assert_eq!(depth, 0.0);
    assert_eq!(metric(t, "veil_clickhouse_errors_total"), 0.0);
    c.shutdown().await.unwrap();
}

/// The side channel this closes: with `/metrics` on the ingest port, anyone able to send an
/// event could read the counters before and after one visitor's request and learn, say, that
/// the visitor opted out. The ingest port answers it like any unknown path; the metrics
/// listener (loopback, a port of its own) renders the counters.
#[tokio::test]
async fn metrics_are_served_only_on_the_metrics_listener() {
    let mut c = start("metrics_listener", config(&["example.com"])).await;
    let opted_out = c
        .post(
            "/api/event",
            &[("User-Agent", CHROME), ("Sec-GPC", "1")],
            &plausible("example.com", "https://example.com/"),
        )
        .await;
    assert_eq!(opted_out.status, 202);
    for method in ["GET", "HEAD", "POST"] {
        let r = request(c.addr, method, "/metrics", &[], b"").await;
        assert_eq!(r.status, 404, "{method} /metrics on the ingest port: {r:?}");
        assert!(!r.body.contains("veil_"), "{r:?}");
    }
    // Load balancers still find health and readiness on the main port.
    assert_eq!(c.get("/healthz").await.status, 200);
    assert_eq!(c.get("/readyz").await.status, 200);

    let metrics_addr = c.metrics_addr.unwrap();
    assert_ne!(metrics_addr.port(), c.addr.port());
    assert!(metrics_addr.ip().is_loopback());
    let m = c.scrape().await;
    assert_eq!(m.status, 200, "{m:?}");
    assert!(m
        .headers
        .contains("content-type: text/plain; version=0.0.4"));
    assert_eq!(
        metric(&m.body, "veil_events_dropped_total{reason=\"consent\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &m.body,
            "veil_events_received_total{endpoint=\"plausible\"}"
        ),
        1.0
    );
    // The refusals on the ingest port served nothing: this first scrape is the first counted.
    assert_eq!(
        metric(
            &m.body,
            "veil_http_requests_total{route=\"metrics\",status=\"200\"}"
        ),
        0.0
    );
    assert_eq!(
        c.metric("veil_http_requests_total{route=\"metrics\",status=\"200\"}")
            .await,
        1.0
    );
    let h = c.get_metrics_listener("/healthz", &[]).await;
    assert_eq!((h.status, h.body.as_str()), (200, "ok\n"));
    assert_eq!(c.get_metrics_listener("/readyz", &[]).await.status, 200);
    let other = c.get_metrics_listener("/api/event", &[]).await;
    assert_eq!(other.status, 404, "{other:?}");
    let post = request(metrics_addr, "POST", "/metrics", &[], b"").await;
    assert_eq!(post.status, 405, "{post:?}");
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_metrics_token_is_required_when_set() {
    let token = "metrics-0123456789abcdef";
    let mut cfg = config(&["example.com"]);
    cfg.metrics.token = Some(token.into());
    let mut c = start("metrics_token", cfg).await;
    c.post(
        "/api/event",
        &[("User-Agent", CHROME)],
        &plausible("example.com", "https://example.com/"),
    )
    .await;
    let bearer = format!("Bearer {token}");
    let wrong = format!("Bearer {token}x");
    let lower = format!("bearer {token}");
    for (headers, want) in [
        (vec![], 401),
        (vec![("Authorization", wrong.as_str())], 401),
        (vec![("Authorization", "Bearer ")], 401),
        (vec![("Authorization", token)], 401),
        (vec![("Authorization", "Basic bWV0cmljczp4")], 401),
        (vec![("Authorization", bearer.as_str())], 200),
        (vec![("Authorization", lower.as_str())], 200),
    ] {
        let r = c.get_metrics_listener("/metrics", &headers).await;
        assert_eq!(r.status, want, "{headers:?}: {r:?}");
        if want == 401 {
            assert!(r.headers.contains("www-authenticate: bearer"), "{r:?}");
            assert!(!r.body.contains("veil_events"), "{r:?}");
        } else {
            assert_eq!(
                metric(
                    &r.body,
                    "veil_events_accepted_total{endpoint=\"plausible\"}"
                ),
                1.0
            );
        }
    }
    // Health needs no token; the ingest port still has no /metrics, token or not.
    assert_eq!(c.get_metrics_listener("/healthz", &[]).await.status, 200);
    let r = request(
        c.addr,
        "GET",
        "/metrics",
        &[("Authorization", bearer.as_str())],
        b"",
    )
    .await;
    assert_eq!(r.status, 404, "{r:?}");
    c.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_public_metrics_address_without_a_token_is_refused_before_binding() {
    use veil_collector::config::MetricsSettings;
    // A port free right now on every interface.
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let public: std::net::SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
    let mut cfg = config(&["example.com"]);
    cfg.metrics.listen = Some(public);
    let e = cfg.clone().validate().unwrap_err().to_string();
    assert!(
        e.contains("--metrics-token") && e.contains(&public.to_string()),
        "{e}"
    );
    // bind_metrics refuses without binding: the port stays free.
    let e = veil_collector::bind_metrics(&cfg.metrics)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("--metrics-token"), "{e}");
    drop(std::net::TcpListener::bind(public).unwrap());
    // run refuses the configuration before starting anything (no ClickHouse is contacted)…
    let unreachable = veil_schemas::ClickHouseConfig::new("http://127.0.0.1:9", "veil");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = veil_collector::run(cfg.clone(), unreachable.clone(), listener, None, async {})
        .await
        .unwrap_err();
    assert!(matches!(e, veil_collector::Error::Config(_)), "{e}");
    assert!(e.to_string().contains("--metrics-token"), "{e}");
    // …and a listener bound beyond loopback by the caller, whatever the configured address.
    let loopback_cfg = config(&["example.com"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public_listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let e = veil_collector::run(
        loopback_cfg,
        unreachable,
        listener,
        Some(public_listener),
        async {},
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("--metrics-token"), "{e}");
    // With a token the same address is accepted.
    cfg.metrics.token = Some("metrics-0123456789abcdef".into());
    cfg.validate().unwrap();
    assert!(MetricsSettings::parse_listen("off").unwrap().is_none());
}

#[tokio::test]
async fn health_readiness_and_cors_preflight() {
    let mut c = start("health", config(&["example.com"])).await;
    let h = c.get("/healthz").await;
    assert_eq!((h.status, h.body.as_str()), (200, "ok\n"));
    assert_eq!(c.get("/readyz").await.status, 200);
    let pre = request(
        c.addr,
        "OPTIONS",
        "/api/event",
        &[
            ("Origin", "https://example.com"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    )
    .await;
    assert_eq!(pre.status, 204);
    assert!(pre.headers.contains("access-control-allow-origin: *"));
    assert!(pre
        .headers
        .contains("access-control-allow-methods: post, options"));
    c.shutdown().await.unwrap();

    // A collector whose ClickHouse is unreachable is alive and still accepts into its spool:
    // ready, but degraded.
    let dead = veil_schemas::ClickHouseConfig::new("http://127.0.0.1:9", "veil");
    let c = start_on(dead, config(&["example.com"])).await;
    assert_eq!(c.get("/healthz").await.status, 200);
    let r = c.get("/readyz").await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.starts_with("degraded: ClickHouse unreachable"),
        "{}",
        r.body
    );
    let mut quick = c;
    // Writers give up quickly here: nothing was queued.
    quick.shutdown().await.unwrap();
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let mut cfg = config(&["example.com"]);
    cfg.limits.header_read_timeout = Duration::from_millis(500);
    cfg.limits.body_read_timeout = Duration::from_millis(500);
    let mut c = start("slow_clients", cfg).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Headers never finish: the connection is closed after the header timeout.
    let mut s = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    s.write_all(b"POST /api/event HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("closed by the server");
    assert!(started.elapsed() < Duration::from_secs(4));
    // Body never finishes: 408.
    let mut s = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    s.write_all(b"POST /api/event HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"n\":")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("answered in time");
    let r = parse_response(&buf);
    assert_eq!(r.status, 408, "{r:?}");
    assert!(r.body.contains("not received"));
    // Keep-alive: two requests on one connection.
    let mut s = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    let body = plausible("example.com", "https://example.com/ka");
    let one = format!("POST /api/event HTTP/1.1\r\nHost: x\r\nUser-Agent: {CHROME}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(format!("{one}{one}").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while String::from_utf8_lossy(&got)
        .matches("202 Accepted")
        .count()
        < 2
    {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&chunk[..n]);
    }
    drop(s);
    c.shutdown().await.unwrap();
    assert_eq!(c.count("pathname = '/ka'").await, 2);
}

#[tokio::test]
async fn a_replayed_spool_batch_is_not_written_twice() {
    use veil_collector::pipeline::sink::clickhouse::ClickHouseSink;
    use veil_collector::pipeline::sink::{RowBatch, Sink};
    let ch = veil_schemas::testing::fresh_database("replay_dedup").await;
    let now = chrono::Utc::now().timestamp() as u32;
    let rows: Vec<EventRow> = (0..3)
        .map(|i| EventRow {
            site: "example.com".into(),
            timestamp: now - 86_400 * (i % 2), // two days: two partitions
            name: "pageview".into(),
            pathname: format!("/{i}"),
            spool_token: "veil-spool-test-1".into(),
            ..Default::default()
        })
        .collect();
    let ch2 = ch.clone();
    let written = tokio::task::spawn_blocking(move || {
        let mut sink = ClickHouseSink::new(&ch2).unwrap();
        sink.write(&RowBatch::from_rows(&rows)).unwrap();
        // The crash happened after the insert, before the cursor moved: the batch comes back.
        let again = sink
            .write_missing("veil-spool-test-1", &RowBatch::from_rows(&rows))
            .unwrap();
        // A batch that never reached ClickHouse is written in full.
        let fresh: Vec<EventRow> = rows
            .iter()
            .map(|r| EventRow {
                spool_token: "veil-spool-test-2".into(),
                ..r.clone()
            })
            .collect();
        (
            again,
            sink.write_missing("veil-spool-test-2", &RowBatch::from_rows(&fresh))
                .unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(written, (0, 3));
    assert_eq!(count(&ch, "1").await, 6);
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    // The test client connects from 127.0.0.1: a trusted proxy by default, an ordinary
    // client when no proxy is trusted.
    for (label, proxies, distinct) in [
        ("xff_trusted", None, 2u64),
        ("xff_untrusted", Some(Vec::new()), 1),
    ] {
        // Visitor ids hash with the UTC day's salt: if the day turned between the two posts
        // (two ids whatever the proxies), they are made again on the new day.
        let (mut c, visitors) = loop {
            let day = chrono::Utc::now().date_naive();
            let mut cfg = config(&["example.com"]);
            if let Some(p) = proxies.clone() {
                cfg.trusted_proxies = p;
            }
            let mut c = start(label, cfg).await;
            for ip in ["203.0.113.1", "203.0.113.2"] {
                let r = c
                    .post(
                        "/api/event",
                        &[("User-Agent", CHROME), ("X-Forwarded-For", ip)],
                        &plausible("example.com", "https://example.com/"),
                    )
                    .await;
                assert_eq!(r.status, 202);
            }
            let same_day = chrono::Utc::now().date_naive() == day;
            wait_count(&c.ch, "1", 2, 10).await;
            let visitors: u64 =
                c.ch.client()
                    .sql(&Sql::new("SELECT uniqExact(visitor_id) FROM events"))
                    .fetch_one()
                    .await
                    .unwrap();
            if same_day {
                break (c, visitors);
            }
            c.shutdown().await.unwrap();
        };
        assert_eq!(visitors, distinct, "{label}");
        c.shutdown().await.unwrap();
    }
}

/// The writer sends the spool's payloads to ClickHouse as RowBinary without decoding them
/// (`row_codec::append_row_binary`, `INSERT_COLUMNS`): every column of a row with every field
/// set, odd strings included, reads back from `events` exactly as the pipeline built it.
#[tokio::test]
async fn every_column_reaches_clickhouse_as_written() {
    use veil_collector::pipeline::sink::clickhouse::ClickHouseSink;
    use veil_collector::pipeline::sink::{RowBatch, Sink};
    use veil_schemas::sql::{idents, Run};
    let ch = veil_schemas::testing::fresh_database("row_binary").await;
    let now = chrono::Utc::now().timestamp() as u32;
    let full = EventRow {
        site: "example.com".into(),
        timestamp: now,
        name: "Signup".into(),
        hostname: "www.example.com".into(),
        pathname: "/ünï/'quoted'\\path\t".into(),
        referrer: "https://news.ycombinator.com/".into(),
        referrer_source: "news.ycombinator.com".into(),
        utm_source: "newsletter".into(),
        utm_medium: "email".into(),
        utm_campaign: "nov".into(),
        utm_content: "c".into(),
        utm_term: "t".into(),
        visitor_id: [7; 16],
        session_id: [0; 16],
        browser: "Chrome".into(),
        browser_version: "131".into(),
        os: "Windows".into(),
        os_version: "10".into(),
        device: "Desktop".into(),
        country_code: "DE".into(),
        prop_keys: vec!["plan".into(), "x".repeat(300)],
        prop_values: vec!["pro".into(), String::new()],
        engagement_ms: 12_345,
        scroll_depth: 80,
        screen_class: "laptop".into(),
        processor_class: "5-8".into(),
        locale: "de-DE".into(),
        app_version: "1.2".into(),
        app_build: "42".into(),
        sdk_version: "veil-js/1".into(),
        engine: "V8 131".into(),
        is_debug: 1,
        spool_token: "veil-spool-rb-1".into(),
        source: "Hacker News".into(),
        channel: "Organic Social".into(),
        region: "DE-BY|Bavaria".into(),
        city: "2867714|Munich".into(),
        asn: 3320,
        isp: "DTAG".into(),
        device_model: "Pixel".into(),
        install_source: "play".into(),
        bot: String::new(),
        revenue_micros: -1_500_000,
        revenue_currency: "EUR".into(),
        interactive: 0,
    };
    let empty = EventRow {
        site: "example.com".into(),
        timestamp: now - 1,
        spool_token: "veil-spool-rb-1".into(),
        ..Default::default()
    };
    let rows = vec![full, empty];
    let ch2 = ch.clone();
    let sent = rows.clone();
    tokio::task::spawn_blocking(move || {
        ClickHouseSink::new(&ch2)
            .unwrap()
            .write(&RowBatch::from_rows(&sent))
            .unwrap()
    })
    .await
    .unwrap();
    let cols: Vec<&'static str> = <EventRow as clickhouse::Row>::COLUMN_NAMES.to_vec();
    let q = veil_schemas::sql!(
        "SELECT {} FROM events ORDER BY timestamp DESC",
        idents(&cols, ", ")
    );
    let back: Vec<EventRow> = ch.client().sql(&q).fetch_all().await.unwrap();
    assert_eq!(back, rows);
}
