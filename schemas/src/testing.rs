//! Test harness: one throwaway ClickHouse per test process, a fresh migrated database per test.
//! Compiled with the crate's `testing` feature (which the workspace's crates enable in their
//! `[dev-dependencies]`) and for this crate's own unit tests.
//!
//! If `VEIL_TEST_CLICKHOUSE_URL` is set, tests use that server instead of starting one.
//! Otherwise the first test to ask starts a [`ManagedClickHouse`] under the system temp dir
//! from a keeper thread that lives as long as the process (so the child's parent-death signal,
//! SIGKILL, fires only when the test process ends). Directories left by earlier test processes
//! that have ended are removed on the way.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use crate::managed::{ManagedClickHouse, ManagedOptions};
use crate::ClickHouseConfig;

static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
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
#[allow(clippy::panic, clippy::expect_used)]
pub fn server_url() -> String {
    let r = SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("VEIL_TEST_CLICKHOUSE_URL") {
            return Ok(url);
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
                let started = dir.map_err(|e| e.to_string()).and_then(|dir| {
                    let mut opts = ManagedOptions::new(dir);
                    opts.parent_death_signal = libc::SIGKILL;
                    ManagedClickHouse::start(&opts).map_err(|e| e.to_string())
                });
                match started {
                    Ok(server) => {
                        let _ = tx.send(Ok(server.url()));
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

/// A new, empty, migrated database on the shared test server, named after `label`.
#[allow(clippy::panic)]
pub async fn fresh_database(label: &str) -> ClickHouseConfig {
    let url = server_url();
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
    let cfg = ClickHouseConfig::new(url, db);
    if let Err(e) = crate::migrate(&cfg).await {
        panic!("migrating test database {}: {e}", cfg.database);
    }
    cfg
}
