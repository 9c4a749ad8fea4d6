//! The real `veil` binary, as the README's quick start runs it: `veil up` with a managed
//! ClickHouse, an event posted over HTTP, read back through the Stats API, a clean stop on
//! SIGTERM (ClickHouse stopped too), the data still there after a restart, and no raw IP or
//! user agent in any log line or file Veil wrote.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CANARY_IP: &str = "198.51.100.173";
const CANARY_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) CanaryUA/7.7 Chrome/120.0.0.0 Safari/537.36";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

struct Veil {
    child: Child,
    addr: SocketAddr,
}

fn start(dir: &Path, port: u16) -> Veil {
    let stdout = std::fs::File::create(dir.join(format!("stdout-{port}.log"))).unwrap();
    let stderr = std::fs::File::create(dir.join(format!("stderr-{port}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args([
            "up",
            "--site",
            "example.com",
            "--min-visitors",
            "1",
            "--batch-max-age",
            "200ms",
        ])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join("var"))
        .env("VEIL_LOG", "debug")
        .env_remove("VEIL_CLICKHOUSE_URL")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out =
            std::fs::read_to_string(dir.join(format!("stdout-{port}.log"))).unwrap_or_default();
        if out.contains("Veil is running") && TcpStream::connect(addr).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            let err =
                std::fs::read_to_string(dir.join(format!("stderr-{port}.log"))).unwrap_or_default();
            panic!("veil up did not start: {out}\n{err}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Veil { child, addr }
}

fn stop(mut v: Veil) {
    let pid = v.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = v.child.try_wait().unwrap() {
            assert!(status.success(), "veil up exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "veil up did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn visitors(addr: SocketAddr) -> serde_json::Value {
    let q = r#"{"site_id":"example.com","metrics":["visitors","pageviews"],"date_range":"day","dimensions":["event:page"]}"#;
    let (status, body) = http(
        addr,
        "POST",
        "/api/v2/query",
        &[("Content-Type", "application/json")],
        q,
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) && cmd.contains("clickhouse") {
                out.push(cmd);
            }
        }
    }
    out
}

fn grep_tree(dir: &Path, needle: &[u8], hits: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            grep_tree(&p, needle, hits);
        } else if let Ok(bytes) = std::fs::read(&p) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(p.display().to_string());
            }
        }
    }
}

#[test]
fn veil_up_runs_everything_and_keeps_no_raw_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let v = start(dir.path(), free_port());
    let body = r#"{"n":"pageview","u":"https://example.com/quick-start?email=canary@example.org","d":"example.com","r":null}"#;
    let (status, text) = http(
        v.addr,
        "POST",
        "/api/event",
        &[
            ("User-Agent", CANARY_UA),
            ("X-Forwarded-For", CANARY_IP),
            ("Content-Type", "text/plain"),
        ],
        body,
    );
    assert_eq!((status, text.as_str()), (202, "ok"));
    // Readable through the Stats API within seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = visitors(v.addr);
        if r["results"] == serde_json::json!([{"dimensions": ["/quick-start"], "metrics": [1, 1]}])
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
    stop(v);
    let data = dir.path().join("var");
    assert!(
        processes_mentioning(&data.display().to_string()).is_empty(),
        "managed ClickHouse still running"
    );

    // Restart on the same data dir: the event is still there.
    let v = start(dir.path(), free_port());
    assert_eq!(
        visitors(v.addr)["results"][0]["metrics"],
        serde_json::json!([1, 1])
    );
    stop(v);

    // No raw identifier in any log line or file Veil (or its ClickHouse) wrote.
    for needle in [CANARY_IP, "CanaryUA", "canary@example.org"] {
        let mut hits = Vec::new();
        grep_tree(dir.path(), needle.as_bytes(), &mut hits);
        assert!(hits.is_empty(), "{needle} found in {hits:?}");
    }
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
    assert!(
        !text.contains("hunter2-secret") && !text.contains("token-0123456789abcdef"),
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
