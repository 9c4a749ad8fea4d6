//! ClickHouse outages: with ClickHouse stopped, the collector keeps acknowledging events into
//! its spool (readiness "degraded"), answers 503 with Retry-After only once the spool is full,
//! and when ClickHouse returns the backlog drains: no acknowledged event is lost. An insert
//! that timed out while ClickHouse was stalled (SIGSTOP) and went on when it woke is not
//! written a second time by the retry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::*;
use veil_schemas::managed::{ManagedClickHouse, ManagedOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_loses_nothing_and_a_full_spool_says_503() {
    // A ClickHouse of this test's own, so it can be stopped and started on the same port.
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ManagedOptions::new(dir.path().join("ch"));
    opts.parent_death_signal = libc::SIGKILL;
    let server =
        tokio::task::spawn_blocking(move || ManagedClickHouse::start(&opts).map(|s| (s, opts)))
            .await
            .unwrap()
            .unwrap();
    let (mut server, mut opts) = server;
    let ch = server.config("outage");
    veil_schemas::migrate(&ch).await.unwrap();
    let mut cfg = config(&["example.com"]);
    cfg.spool.max_bytes = 1024 * 1024; // 1 MiB: fills during the outage
    cfg.limits.rate_limit_ip = 0;
    let mut c = start_on(ch.clone(), cfg).await;
    let ua = [("User-Agent", CHROME)];
    for i in 0..5 {
        assert_eq!(
            c.post(
                "/api/event",
                &ua,
                &plausible("example.com", &format!("https://example.com/before/{i}"))
            )
            .await
            .status,
            202
        );
    }
    wait_count(&ch, "1", 5, 10).await;

    // Outage: ClickHouse crashes.
    opts.http_port = Some(server.url().rsplit(':').next().unwrap().parse().unwrap());
    tokio::task::spawn_blocking(move || server.kill())
        .await
        .unwrap();
    let r = c.get("/readyz").await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("degraded"), "{}", r.body);
    let rss_before = rss_kib();
    let mut acked = 0u32;
    let mut refused = None;
    let big = "x".repeat(1500);
    for i in 0..2000 {
        let body = serde_json::json!({"n": "pageview", "d": "example.com", "u": format!("https://example.com/during/{i}"), "p": {"pad": big}});
        let r = c.post("/api/event", &ua, &body.to_string()).await;
        match r.status {
            202 => acked += 1,
            503 => {
                refused = Some(r);
                break;
            }
            s => panic!("unexpected {s}: {}", r.body),
        }
    }
    let refused = refused.expect("a 1 MiB spool must fill up");
    // Memory stays flat while events pile up: they wait on disk, not in memory.
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 64 * 1024,
        "RSS grew by {grown} KiB during the outage"
    );
    assert!(
        refused.headers.contains("retry-after:"),
        "{}",
        refused.headers
    );
    assert!(refused.body.contains("spool is full"), "{}", refused.body);
    assert!(acked > 100, "only {acked} accepted before the spool filled");
    assert!(
        c.metric("veil_events_dropped_total{reason=\"spool_full\"}")
            .await
            >= 1.0
    );
    assert!(c.metric("veil_spool_bytes").await > 500_000.0);
    assert!(c.metric("veil_clickhouse_errors_total").await >= 1.0);

    // ClickHouse returns on the same port: the backlog drains, nothing acknowledged is lost.
    let mut server = tokio::task::spawn_blocking(move || ManagedClickHouse::start(&opts))
        .await
        .unwrap()
        .unwrap();
    wait_count(&ch, "pathname LIKE '/during/%'", u64::from(acked), 60).await;
    assert_eq!(
        count(&ch, "pathname LIKE '/before/%'").await,
        5,
        "no duplicates of what was written before"
    );
    // The rows are visible a moment before the spool gives their space back (CI once got a
    // 503 "spool is full" here): wait for the spool to empty, as a sender honouring
    // Retry-After would.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while c.metric("veil_spool_bytes").await > 512.0 * 1024.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the spool never emptied: {} bytes",
            c.metric("veil_spool_bytes").await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        c.post(
            "/api/event",
            &ua,
            &plausible("example.com", "https://example.com/after")
        )
        .await
        .status,
        202
    );
    assert_eq!(c.get("/readyz").await.body, "ready\n");
    c.shutdown().await.unwrap();
    assert_eq!(count(&ch, "pathname = '/after'").await, 1);
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
}

/// Resident set size of this process, KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// An insert that times out while ClickHouse is stalled goes on when the server wakes; the
/// retry must not look for the batch's rows before that insert has ended, or it writes them a
/// second time (seen with `veil-load --outage 65`: one batch stored twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_that_timed_out_in_a_stall_is_stored_once() {
    use veil_collector::pipeline::sink::clickhouse::ClickHouseSink;
    use veil_collector::pipeline::sink::Sink as _;
    use veil_collector::pipeline::EventRow;

    let dir = tempfile::tempdir().unwrap();
    let mut opts = ManagedOptions::new(dir.path().join("ch"));
    opts.parent_death_signal = libc::SIGKILL;
    let server = tokio::task::spawn_blocking(move || ManagedClickHouse::start(&opts))
        .await
        .unwrap()
        .unwrap();
    let ch = server.config("stall");
    veil_schemas::migrate(&ch).await.unwrap();
    let pid = server.pid().unwrap();
    let signal = |pid: u32, sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    let now = u32::try_from(chrono::Utc::now().timestamp()).unwrap();
    let mut rows = veil_collector::pipeline::sink::RowBatch::default();
    for i in 0..20_000u32 {
        let row = EventRow {
            site: "example.com".into(),
            timestamp: now,
            name: "pageview".into(),
            hostname: "example.com".into(),
            pathname: format!("/stall/{i}"),
            ..Default::default()
        };
        rows.push_row(&row, "stall-batch");
    }
    let stored = {
        let ch = ch.clone();
        move || {
            let ch = ch.clone();
            async move {
                veil_schemas::sql::Run::sql(
                    &ch.client(),
                    &veil_schemas::sql::Sql::new(
                        "SELECT count() FROM events WHERE spool_token = 'stall-batch'",
                    ),
                )
                .fetch_one::<u64>()
                .await
                .unwrap()
            }
        }
    };
    let (n, written) = tokio::task::spawn_blocking({
        let ch = ch.clone();
        move || {
            let mut sink = ClickHouseSink::new(&ch)
                .unwrap()
                .with_timeout(std::time::Duration::from_secs(1));
            // Stalled: the insert is sent, then given up after the timeout.
            signal(pid, "-STOP");
            let first = sink.write(&rows);
            signal(pid, "-CONT");
            assert!(first.is_err(), "the stalled insert must time out");
            // At once, as the writer's retry does: look for the rows, write what is missing.
            let mut tries = 0;
            loop {
                tries += 1;
                match sink.write_missing("stall-batch", &rows) {
                    Ok(n) => break (n, rows.len()),
                    Err(e) if tries < 20 => eprintln!("retry: {e}"),
                    Err(e) => panic!("{e}"),
                }
            }
        }
    })
    .await
    .unwrap();
    // Whatever the timed-out insert did, the batch is there once, now and after it settled.
    assert!(n == 0 || n == written, "{n}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let c = stored().await;
        assert_eq!(c, written as u64, "rows of the batch stored");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
