//! The real `veil` binary, as the README's quick start runs it: `veil up` with a managed
//! ClickHouse, an event posted over HTTP, read back through the Stats API, a clean stop on
//! SIGTERM (ClickHouse stopped too), the data still there after a restart, and no raw IP or
//! user agent in any log line or file Veil wrote.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const CANARY_IP: &str = "198.51.100.173";
const CANARY_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) CanaryUA/7.7 Chrome/120.0.0.0 Safari/537.36";

/// The UTC date now (the collector stamps hits with its clock, in UTC).
fn utc_date() -> String {
    chrono::Utc::now().date_naive().to_string()
}

/// Visitors and pageviews by page over `days` (both included): the UTC dates before and after
/// the hits were sent, not "day", which a restart after midnight would read as a day without
/// them.
fn visitors(addr: SocketAddr, days: &[String; 2]) -> serde_json::Value {
    let q = serde_json::json!({"site_id": "example.com", "metrics": ["visitors", "pageviews"],
        "date_range": days, "dimensions": ["event:page"]});
    let (status, body) = http(
        addr,
        "POST",
        "/api/v2/query",
        &[("Content-Type", "application/json")],
        &q.to_string(),
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn veil_up_runs_everything_and_keeps_no_raw_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    // Exact numbers: the test reads back the two hits it sent.
    let v = start(dir.path(), free_port(), &["--privacy", "exact"]);
    let body = r#"{"n":"pageview","u":"https://example.com/quick-start?email=canary@example.org","d":"example.com","r":null}"#;
    // Two visitors: k is at least 2, so one alone would never be shown.
    let first_day = utc_date();
    for ip in [CANARY_IP, "198.51.100.77"] {
        let (status, text) = http(
            v.addr,
            "POST",
            "/api/event",
            &[
                ("User-Agent", CANARY_UA),
                ("X-Forwarded-For", ip),
                ("Content-Type", "text/plain"),
            ],
            body,
        );
        assert_eq!((status, text.as_str()), (202, "ok"));
    }
    let days = [first_day, utc_date()];
    // Readable through the Stats API within seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = visitors(v.addr, &days);
        if r["results"] == serde_json::json!([{"dimensions": ["/quick-start"], "metrics": [2, 2]}])
        {
            break;
        }
        assert!(Instant::now() < deadline, "event not readable: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, page) = http(v.addr, "GET", "/", &[], "");
    assert_eq!(status, 200);
    assert!(page.contains("<title>Veil analytics</title>"));
    assert_eq!(http(v.addr, "GET", "/readyz", &[], "").0, 200);
    // Prometheus' /metrics: not on the public address, on the metrics listener it prints.
    let (status, text) = http(v.addr, "GET", "/metrics", &[], "");
    assert_eq!(status, 404, "{text}");
    let out =
        std::fs::read_to_string(dir.path().join(format!("stdout-{}.log", v.addr.port()))).unwrap();
    assert!(
        out.contains(&format!("metrics http://{}/metrics", v.metrics_addr)),
        "{out}"
    );
    let (status, text) = http(v.metrics_addr, "GET", "/metrics", &[], "");
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("veil_events_accepted_total{endpoint=\"plausible\"} 2"),
        "{text}"
    );
    stop(v);
    let data = dir.path().join("var");
    assert!(
        processes_mentioning(&data.display().to_string()).is_empty(),
        "managed ClickHouse still running"
    );

    // Restart on the same data dir: the event is still there.
    let v = start(dir.path(), free_port(), &["--privacy", "exact"]);
    assert_eq!(
        visitors(v.addr, &days)["results"][0]["metrics"],
        serde_json::json!([2, 2])
    );
    stop(v);

    // No raw identifier in any log line or file Veil (or its ClickHouse) wrote.
    for needle in [CANARY_IP, "CanaryUA", "canary@example.org"] {
        let mut hits = Vec::new();
        grep_tree(dir.path(), needle.as_bytes(), &mut hits);
        assert!(hits.is_empty(), "{needle} found in {hits:?}");
    }
}

/// Issue 16 point 6: the managed ClickHouse is not open to every local process. Its `default`
/// user needs the password `veil up` generated into `DATA_DIR/clickhouse/password` (0600);
/// Veil's own clients send it, and nothing Veil prints or logs shows it.
#[test]
fn the_managed_clickhouse_refuses_clients_without_the_generated_password() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let v = start(dir.path(), port, &["--privacy", "exact"]);
    let data = dir.path().join("var");
    let ch = managed_clickhouse(&data);
    let password = ch.password.clone().unwrap();
    let file = data.join("clickhouse/password");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&data.join("clickhouse")), 0o700);

    for auth in [None, Some(("default", ""))] {
        let (status, body) = clickhouse_request(&ch.url, auth, "SELECT count() FROM veil.events");
        assert_eq!(status, 401, "{auth:?} read the events: {body}");
        assert!(
            body.contains("Password required for user default"),
            "{body}"
        );
    }
    // Veil itself gets in: an event goes through the collector into ClickHouse.
    let body = r#"{"n":"pageview","u":"https://example.com/pw","d":"example.com","r":null}"#;
    let (status, text) = http(
        v.addr,
        "POST",
        "/api/event",
        &[
            (
                "User-Agent",
                "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
            ),
            ("Content-Type", "text/plain"),
        ],
        body,
    );
    assert_eq!((status, text.as_str()), (202, "ok"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let q = veil_schemas::sql::Sql::new("SELECT count() FROM veil.events");
    while clickhouse_query(&ch, &q).trim() != "1" {
        assert!(Instant::now() < deadline, "the event was not stored");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = clickhouse_request(&ch.url, Some(("default", &password)), q.as_str());
    assert_eq!((status, body.trim()), (200, "1"));
    stop(v);

    // Veil's stdout and stderr (at debug level), ClickHouse's logs and configs: only the
    // password file holds the password.
    let mut hits = Vec::new();
    grep_tree(dir.path(), password.as_bytes(), &mut hits);
    assert_eq!(hits, vec![file.display().to_string()]);
    let err = std::fs::read_to_string(dir.path().join(format!("stderr-{port}.log"))).unwrap();
    assert!(err.contains(&file.display().to_string()), "{err}");
}

#[test]
fn check_config_prints_settings_and_bad_config_fails_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args([
            "check-config",
            "--site",
            "Example.com",
            "--clickhouse-url",
            "http://127.0.0.1:8123",
        ])
        .env("VEIL_CLICKHOUSE_PASSWORD", "hunter2-secret")
        .env("VEIL_API_TOKEN", "token-0123456789abcdef")
        .env("VEIL_METRICS_TOKEN", "metrics-0123456789abcdef")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["collector"]["sites"], serde_json::json!(["example.com"]));
    assert_eq!(v["clickhouse"]["database"], "veil");
    assert_eq!(v["api_token_set"], true);
    assert_eq!(v["collector"]["metrics"]["listen"], "127.0.0.1:9464");
    assert_eq!(v["collector"]["metrics"]["token_set"], true);
    assert!(
        !text.contains("hunter2-secret")
            && !text.contains("token-0123456789abcdef")
            && !text.contains("metrics-0123456789abcdef"),
        "secrets printed: {text}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["up", "--listen", "0.0.0.0:8080"])
        .env_remove("VEIL_API_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--api-token"), "{err}");
}

#[test]
fn settings_come_from_flag_then_environment_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("veil.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9000\"\nclickhouse_database = \"fromfile\"\n\
         batch_max_rows = 777\nsite = [\"file.example\"]\nmin_visitors = 7\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["check-config", "--config", file.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:9100"])
        .args(["--clickhouse-url", "http://127.0.0.1:8123"])
        .env("VEIL_LISTEN", "127.0.0.1:9050")
        .env("VEIL_CLICKHOUSE_DATABASE", "fromenv")
        .env("VEIL_MIN_VISITORS", "8")
        .env_remove("VEIL_SITE")
        .env_remove("VEIL_BATCH_MAX_ROWS")
        .env_remove("VEIL_TODAY_SNAPSHOT_SECS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["listen"], "127.0.0.1:9100", "a flag beats env and file");
    assert_eq!(v["clickhouse"]["database"], "fromenv", "env beats the file");
    assert_eq!(v["aggregator"]["min_visitors"], 8, "env beats the file");
    assert_eq!(
        v["collector"]["batch"]["max_rows"], 777,
        "the file beats defaults"
    );
    assert_eq!(v["collector"]["sites"], serde_json::json!(["file.example"]));
    assert_eq!(v["aggregator"]["today_snapshot_secs"], 30, "the default");
}
