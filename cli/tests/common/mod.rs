//! Helpers for tests of the real `veil` binary: start `veil up` on a temp data dir, a tiny
//! blocking HTTP client, SIGTERM and wait, and scanners for canary strings.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use veil_schemas::sql::Sql;

/// A free loopback port, chosen as the managed servers choose theirs (outside the ephemeral range).
pub fn free_port() -> u16 {
    veil_schemas::managed::free_port().unwrap()
}

/// The admin token every `veil up` of [`start`] runs with: [`try_http`] sends it to `/api/…`
/// paths unless the request brings its own `Authorization` (or `Cookie`).
pub const ADMIN: &str = "test-admin-token-0123456789";

/// One HTTP/1.1 request (`Connection: close`); `None` when the connection fails or the answer
/// is cut (a process killed under load), else the status and the body.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let own = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization") || k.eq_ignore_ascii_case("cookie"));
    if path.starts_with("/api/v") && !own {
        req.push_str(&format!("Authorization: Bearer {ADMIN}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    Some((status, out.split_once("\r\n\r\n")?.1.to_string()))
}

/// [`try_http`] to a server that must answer.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    try_http(addr, method, path, headers, body, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no answer from {addr} to {method} {path}"))
}

pub struct Veil {
    pub child: Child,
    pub addr: SocketAddr,
    /// The metrics listener (`/metrics`), on a free port of its own.
    pub metrics_addr: SocketAddr,
}

/// `veil up` on `port` with `--site example.com`, the admin token [`ADMIN`] and `extra` flags;
/// returns once it serves.
pub fn start(dir: &Path, port: u16, extra: &[&str]) -> Veil {
    start_with_env(dir, port, extra, &[])
}

/// [`start`], with or without the admin token (without: a fresh deployment waits for its
/// owner's first-run setup, and prints the setup link).
pub fn start_with(dir: &Path, port: u16, extra: &[&str], admin_token: bool) -> Veil {
    launch(dir, port, extra, &[], admin_token)
}

/// [`start`] with more environment variables (e.g. `VEIL_CLICKHOUSE_PASSWORD` beside a
/// `--clickhouse-url`: a password never goes on a command line).
pub fn start_with_env(dir: &Path, port: u16, extra: &[&str], env: &[(&str, String)]) -> Veil {
    launch(dir, port, extra, env, true)
}

fn launch(
    dir: &Path,
    port: u16,
    extra: &[&str],
    env: &[(&str, String)],
    admin_token: bool,
) -> Veil {
    let stdout = std::fs::File::create(dir.join(format!("stdout-{port}.log"))).unwrap();
    let stderr = std::fs::File::create(dir.join(format!("stderr-{port}.log"))).unwrap();
    // Never the default 127.0.0.1:9464: tests start several `veil up`s at once.
    let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_veil"));
    if admin_token {
        cmd.env("VEIL_ADMIN_TOKEN", ADMIN);
    } else {
        cmd.env_remove("VEIL_ADMIN_TOKEN");
    }
    let mut child = cmd
        .args(["up", "--site", "example.com"])
        // Through the environment so that `extra` flags can override them.
        .env("VEIL_MIN_VISITORS", "2")
        .env("VEIL_BATCH_MAX_AGE", "200ms")
        .env("VEIL_METRICS_LISTEN", metrics_addr.to_string())
        .args(extra)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join("var"))
        .env("VEIL_LOG", "debug")
        .env_remove("VEIL_CLICKHOUSE_URL")
        .env_remove("VEIL_API_TOKEN")
        .env_remove("VEIL_CLICKHOUSE_PASSWORD")
        .envs(env.iter().map(|(k, v)| (k, v)))
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
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        if exited || Instant::now() > deadline {
            let err =
                std::fs::read_to_string(dir.join(format!("stderr-{port}.log"))).unwrap_or_default();
            panic!("veil up did not start: {out}\n{err}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Veil {
        child,
        addr,
        metrics_addr,
    }
}

pub fn stop(mut v: Veil) {
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

pub fn processes_mentioning(needle: &str) -> Vec<String> {
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

pub fn grep_tree(dir: &Path, needle: &[u8], hits: &mut Vec<String>) {
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

/// A ClickHouse a test talks to over HTTP: its URL and the password of its `default` user.
#[derive(Clone)]
pub struct ClickHouse {
    pub url: String,
    pub password: Option<String>,
}

impl ClickHouse {
    /// The shared test server (`veil_schemas::testing`).
    pub fn test_server() -> Self {
        ClickHouse {
            url: veil_schemas::testing::server_url(),
            password: veil_schemas::testing::server_password(),
        }
    }

    /// What a `veil` child needs beside `--clickhouse-url` to log in.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match &self.password {
            Some(p) => vec![("VEIL_CLICKHOUSE_PASSWORD", p.clone())],
            None => vec![],
        }
    }
}

/// The managed ClickHouse of `veil up`: the HTTP URL from the config it wrote, the password
/// from the file it generated (`DATA_DIR/clickhouse/password`).
pub fn managed_clickhouse(data_dir: &Path) -> ClickHouse {
    let cfg = std::fs::read_to_string(data_dir.join("clickhouse/config.xml")).unwrap();
    let port = cfg
        .split("<http_port>")
        .nth(1)
        .and_then(|r| r.split("</http_port>").next())
        .unwrap();
    let password = std::fs::read_to_string(data_dir.join("clickhouse/password")).unwrap();
    ClickHouse {
        url: format!("http://127.0.0.1:{port}"),
        password: Some(password.trim().to_string()),
    }
}

/// One statement over ClickHouse's HTTP interface, with `auth` as `X-ClickHouse-User`/`-Key`
/// headers when given; the status and the body.
pub fn clickhouse_request(url: &str, auth: Option<(&str, &str)>, sql: &str) -> (u16, String) {
    // HTTP/1.0 so ClickHouse answers without chunked encoding.
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "POST / HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n",
        sql.len()
    );
    if let Some((user, key)) = auth {
        req.push_str(&format!(
            "X-ClickHouse-User: {user}\r\nX-ClickHouse-Key: {key}\r\n"
        ));
    }
    req.push_str("\r\n");
    req.push_str(sql);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let out = String::from_utf8_lossy(&raw).to_string();
    let status: u16 = out
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

/// Runs a statement on `ch` (logged in as `default` with its password), returns the body.
pub fn clickhouse_query(ch: &ClickHouse, sql: &Sql) -> String {
    let sql = sql.as_str();
    let auth = ch.password.as_deref().map(|p| ("default", p));
    let (status, body) = clickhouse_request(&ch.url, auth, sql);
    assert_eq!(status, 200, "{sql}: {body}");
    body
}
