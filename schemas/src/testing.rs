//! Test harness: one throwaway ClickHouse per test process, a fresh migrated database per test.
//! Compiled with the crate's `testing` feature (which the workspace's crates enable in their
//! `[dev-dependencies]`) and for this crate's own unit tests.
//!
//! If `VEIL_TEST_CLICKHOUSE_URL` is set, tests use that server instead of starting one (with
//! the password in `VEIL_TEST_CLICKHOUSE_PASSWORD`, if any).
//! With `VEIL_TEST_CLICKHOUSE=chdb26`, the first test to ask starts the ClickHouse 26 test
//! fixture instead (`testing/chdb/serve.py`: ClickHouse's HTTP interface in front of chdb,
//! ClickHouse 26.9 in-process; `scripts/install-deps.sh --test` makes its virtualenv under
//! `var/chdb-venv`, or `VEIL_CHDB_PYTHON` names the Python to run it with), one per test
//! process, under the system temp dir, with the same fresh database per test.
//! Otherwise the first test to ask starts a [`ManagedClickHouse`] under the system temp dir
//! from a keeper thread that lives as long as the process (so the child's parent-death signal,
//! SIGKILL, fires only when the test process ends). Directories left by earlier test processes
//! that have ended are removed on the way. That server has a generated password like the one
//! of `veil up` ([`crate::managed`]), so every test proves that Veil's clients send it: use
//! [`fresh_database`]'s config, or [`server_password`] (as `VEIL_CLICKHOUSE_PASSWORD` for a
//! `veil` child, or `X-ClickHouse-User: default` / `X-ClickHouse-Key` on raw HTTP).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use crate::managed::{ManagedClickHouse, ManagedOptions};
use crate::ClickHouseConfig;

/// The shared server's URL and password, or why there is none.
static SERVER: OnceLock<Result<(String, Option<String>), String>> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(pid) = name
            .strip_prefix("veil-test-ch-")
            .and_then(|p| p.split('-').next())
        {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// The URL of the shared test server, starting it on first use. Panics (test-only code) when
/// no server can be had, with the reason.
pub fn server_url() -> String {
    server().0
}

/// The password of the shared test server's `default` user (`None`: the server needs none,
/// as the chdb fixture). Starts the server on first use, like [`server_url`].
pub fn server_password() -> Option<String> {
    server().1
}

#[allow(clippy::panic, clippy::expect_used)]
fn server() -> (String, Option<String>) {
    let r = SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("VEIL_TEST_CLICKHOUSE_URL") {
            let password = std::env::var("VEIL_TEST_CLICKHOUSE_PASSWORD").ok();
            return Ok((url, password.filter(|p| !p.is_empty())));
        }
        remove_stale_dirs();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("clickhouse-keeper".into())
            .spawn(move || {
                let dir = tempfile::Builder::new()
                    .prefix(&format!("veil-test-ch-{}-", std::process::id()))
                    .tempdir()
                    .map(|d| d.keep());
                let dir = dir.map_err(|e| e.to_string());
                let started = match std::env::var("VEIL_TEST_CLICKHOUSE").as_deref() {
                    Ok("chdb26") => dir.and_then(|d| start_chdb26(&d)).map(Server::Chdb),
                    Ok("") | Ok("managed") | Err(_) => dir.and_then(|dir| {
                        let mut opts = ManagedOptions::new(dir);
                        opts.parent_death_signal = libc::SIGKILL;
                        ManagedClickHouse::start(&opts)
                            .map(Server::Managed)
                            .map_err(|e| e.to_string())
                    }),
                    Ok(other) => Err(format!(
                        "VEIL_TEST_CLICKHOUSE={other:?}: expected chdb26 or managed"
                    )),
                };
                match started {
                    Ok(server) => {
                        let _ = tx.send(Ok((server.url(), server.password())));
                        // Keep the child (and this thread) alive until the process exits.
                        loop {
                            std::thread::park();
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })
            .expect("spawning the ClickHouse keeper thread");
        rx.recv().unwrap_or_else(|e| Err(e.to_string()))
    });
    match r {
        Ok(u) => u.clone(),
        Err(e) => panic!("no ClickHouse for tests: {e}"),
    }
}

/// The server a test process keeps alive.
enum Server {
    Managed(ManagedClickHouse),
    Chdb(ChdbFixture),
}

impl Server {
    fn url(&self) -> String {
        match self {
            Server::Managed(s) => s.url(),
            Server::Chdb(f) => f.url.clone(),
        }
    }

    fn password(&self) -> Option<String> {
        match self {
            Server::Managed(s) => Some(s.password().to_string()),
            Server::Chdb(_) => None,
        }
    }
}

/// The ClickHouse 26 fixture process (killed with the test process: parent-death signal).
struct ChdbFixture {
    url: String,
    _child: std::process::Child,
}

/// Starts `testing/chdb/serve.py` with its data under `dir`; returns once it answers `/ping`.
fn start_chdb26(dir: &std::path::Path) -> Result<ChdbFixture, String> {
    use std::io::BufRead as _;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("testing/chdb/serve.py");
    let python = std::env::var_os("VEIL_CHDB_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("var/chdb-venv/bin/python"));
    if !python.exists() {
        return Err(format!(
            "VEIL_TEST_CLICKHOUSE=chdb26 needs {} (run scripts/install-deps.sh --test, or set VEIL_CHDB_PYTHON)",
            python.display()
        ));
    }
    let log = dir.join("fixture.log");
    let err = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(&script)
        .arg("--data")
        .arg(dir.join("data"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(err);
    crate::managed::set_parent_death_signal(&mut cmd, libc::SIGKILL);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", python.display()))?;
    let Some(out) = child.stdout.take() else {
        return Err("no stdout from the chdb fixture".into());
    };
    // The first line names the URL; later output (none expected) is drained by the thread.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(out).lines();
        let _ = tx.send(lines.next());
        for _ in lines {}
    });
    let tail = || std::fs::read_to_string(&log).unwrap_or_default();
    let line = match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(Some(Ok(l))) => l,
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the chdb fixture did not start: {}", tail()));
        }
    };
    let Some(url) = line.strip_prefix("listening on ") else {
        return Err(format!(
            "unexpected first line from the chdb fixture: {line:?}"
        ));
    };
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or_else(|| format!("no port in {url:?}"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !crate::managed::ping_blocking(port) {
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "the chdb fixture does not answer /ping: {}",
                tail()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(ChdbFixture {
        url: url.to_string(),
        _child: child,
    })
}

/// A new, empty, migrated database on the shared test server, named after `label`.
#[allow(clippy::panic)]
pub async fn fresh_database(label: &str) -> ClickHouseConfig {
    let (url, password) = server();
    let clean: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(40)
        .collect();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut rnd = [0u8; 4];
    let _ = getrandom::fill(&mut rnd);
    let db = format!(
        "t_{clean}_{}_{n}_{:08x}",
        std::process::id(),
        u32::from_le_bytes(rnd)
    );
    let mut cfg = ClickHouseConfig::new(url, db);
    if password.is_some() {
        cfg.user = Some(crate::managed::USER.into());
        cfg.password = password;
    }
    if let Err(e) = crate::migrate(&cfg).await {
        panic!("migrating test database {}: {e}", cfg.database);
    }
    cfg
}
