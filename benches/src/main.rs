//! `veil-load`: the whole-system load harness.
//!
//! In one process and one run it
//!
//! 1. starts a throwaway ClickHouse (or uses `--clickhouse-url`), creates a fresh database and
//!    migrates it;
//! 2. starts the real collector on `127.0.0.1:0` with the mix's sites registered and its spool in
//!    a temp dir — production defaults otherwise, except the per-IP rate limit (see
//!    `--rate-limit-ip`) — and a bare hyper server that only answers 202 (the ceiling, see
//!    `veil_benches::bare`);
//! 3. replays the realistic traffic mix of `veil_benches::traffic` over keep-alive connections
//!    against the bare server, `POST /api/event` (one event per request) and `POST /v1/events`
//!    (`--batch-size` events per request), one scenario after the other, each for `--duration`
//!    seconds, and prints requests/s, events/s, p50/p99 latency and the ratio to the bare server;
//! 4. shuts the collector down gracefully (it drains its spool into ClickHouse) and checks that
//!    every acknowledged event that must be stored (2xx, registered site, not a bot, no opt-out)
//!    is in ClickHouse, comparing with the collector's own counters too.
//!
//! Exit status: 0 when everything adds up, 1 on a count mismatch, 2 when the run itself failed.
//! The servers get their own tokio runtime (`--server-threads`), the load generator another
//! (`--client-threads`); on a small machine they, and ClickHouse, share the same cores.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use prometheus::Registry;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use veil_benches::loadgen::{self, LoadOptions, LoadReport, Workload};
use veil_benches::{bare, traffic};
use veil_collector::pipeline::enrich::UaParser;
use veil_collector::pipeline::spool::{Durability, SpoolError};
use veil_collector::server::{self, App};
use veil_collector::{Collector, CollectorConfig, Readiness};
use veil_schemas::managed::{ManagedClickHouse, ManagedOptions};
use veil_schemas::ClickHouseConfig;

/// Which scenarios to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The bare server, then `/api/event`, then `/v1/events`.
    All,
    /// `/api/event` only.
    Plausible,
    /// `/v1/events` only.
    Native,
    /// The bare server only (no ClickHouse, no collector).
    Bare,
}

/// Load test of the Veil collector against a bare hyper server, on loopback.
#[derive(Debug, Parser)]
#[command(name = "veil-load", version)]
struct Args {
    /// Seconds of load per scenario.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Persistent connections per scenario (one request in flight on each).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// ClickHouse HTTP interface to use; without it a managed server is started in a temp dir.
    #[arg(long)]
    clickhouse_url: Option<String>,
    /// Scenarios to run.
    #[arg(long, value_enum, default_value_t = Mode::All)]
    mode: Mode,
    /// Events per `/v1/events` request.
    #[arg(long, default_value_t = 50)]
    batch_size: usize,
    /// Most requests per scenario, whatever the duration.
    #[arg(long, default_value_t = 5_000_000)]
    max_requests: u64,
    /// Worker threads of the servers' runtime (collector and bare server).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Seed of the traffic mix.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// The spool's durability: `fsync` (the production default: a 2xx means the events are on
    /// disk) or `none` (written, not synced). The spool lives under $TMPDIR: on a tmpfs, fsync
    /// costs nothing.
    #[arg(long, default_value = "fsync", value_parser = parse_durability)]
    durability: Durability,
    /// The collector's per-IP limit, requests per second (0 = off). Off by default: the
    /// `/v1/events` scenario is one server-side sender on 127.0.0.1, which the production
    /// default (100/s) would throttle.
    #[arg(long, default_value_t = 0)]
    rate_limit_ip: u32,
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    s.parse().map_err(|e: SpoolError| e.to_string())
}

/// The ClickHouse of this run. A managed server lives as long as this value; it must be created
/// on the main thread, whose death is what its parent-death signal is tied to.
struct Store {
    /// Dropped in order: the server stops, then its directory is removed.
    _managed: Option<(ManagedClickHouse, TempDir)>,
    url: String,
}

impl Store {
    fn open(url: Option<&str>) -> anyhow::Result<Self> {
        if let Some(url) = url {
            return Ok(Self {
                _managed: None,
                url: url.to_string(),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("veil-load-ch-")
            .tempdir()
            .context("creating a temp dir for the managed ClickHouse")?;
        eprintln!(
            "starting a managed ClickHouse under {} …",
            dir.path().display()
        );
        let server = ManagedClickHouse::start(&ManagedOptions::new(dir.path()))?;
        let url = server.url();
        Ok(Self {
            _managed: Some((server, dir)),
            url,
        })
    }
}

/// The collector serving on loopback, and how to stop it.
struct Running {
    addr: SocketAddr,
    ch: ClickHouseConfig,
    collector: Collector,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
    /// The spool directory, removed once the collector has stopped.
    _spool: TempDir,
}

async fn start_collector(url: &str, args: &Args) -> anyhow::Result<Running> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let ch = ClickHouseConfig::new(url, format!("veil_load_{secs}_{}", std::process::id()));
    veil_schemas::migrate(&ch)
        .await
        .with_context(|| format!("migrating database {} at {url}", ch.database))?;
    let spool = tempfile::Builder::new()
        .prefix("veil-load-spool-")
        .tempdir()
        .context("creating a temp dir for the spool")?;
    let mut config = CollectorConfig {
        sites: traffic::REGISTERED_SITES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ..CollectorConfig::default()
    };
    config.spool.dir = spool.path().to_path_buf();
    config.spool.durability = args.durability;
    config.limits.rate_limit_ip = args.rate_limit_ip;
    let collector = Collector::start(config, ch.clone(), Registry::new()).await?;
    match collector.readiness().await {
        Readiness::Ready => {}
        Readiness::Degraded(why) | Readiness::NotReady(why) => {
            bail!("the collector is not ready: {why}")
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let opts = collector.server_options();
    let app: Arc<dyn App> = Arc::new(collector.clone());
    let draining = collector.clone();
    let server = tokio::spawn(server::serve(listener, app, opts, async move {
        let _ = stopped.await;
        draining.begin_shutdown();
    }));
    Ok(Running {
        addr,
        ch,
        collector,
        stop,
        server,
        _spool: spool,
    })
}

/// The mix must agree with the collector on who is a bot, or the expected counts are wrong.
fn check_mix() -> anyhow::Result<()> {
    let parser = UaParser::new();
    for (_, agent) in traffic::AGENTS {
        if parser.parse(agent.ua).bot.is_some() != agent.bot {
            bail!(
                "the traffic mix says bot={} but the collector disagrees for {:?}",
                agent.bot,
                agent.ua
            );
        }
    }
    Ok(())
}

struct Scenario {
    label: String,
    workload: Workload,
    addr: SocketAddr,
    collector: bool,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(x: f64, base: Option<f64>) -> String {
    match base {
        Some(b) if b > 0.0 => format!("{:.2}", x / b),
        _ => "-".into(),
    }
}

fn print_table(results: &[(Scenario, LoadReport)], connections: usize) {
    let bare = results
        .iter()
        .find(|(s, _)| !s.collector)
        .map(|(_, r)| r.requests_per_sec());
    println!();
    println!(
        "{:<26} {:>6} {:>10} {:>10} {:>11} {:>8} {:>8} {:>8} {:>7} {:>9} {:>12}",
        "scenario",
        "conns",
        "requests",
        "req/s",
        "events/s",
        "p50 ms",
        "p99 ms",
        "non-2xx",
        "failed",
        "req/bare",
        "events/bare"
    );
    for (s, r) in results {
        println!(
            "{:<26} {:>6} {:>10} {:>10.0} {:>11.0} {:>8.2} {:>8.2} {:>8} {:>7} {:>9} {:>12}",
            s.label,
            connections,
            r.requests,
            r.requests_per_sec(),
            r.events_per_sec(),
            ms(r.percentile(50.0)),
            ms(r.percentile(99.0)),
            r.non_2xx(),
            r.failures,
            ratio(r.requests_per_sec(), bare),
            ratio(r.events_per_sec(), bare),
        );
        if r.non_2xx() > 0 {
            println!("{:<26} statuses: {:?}", "", r.statuses);
        }
    }
    println!();
}

/// Every non-zero `veil_events_dropped_total{reason}`, as `reason=n`.
fn dropped_by_reason(registry: &Registry) -> String {
    let mut out = Vec::new();
    for family in registry.gather() {
        if family.name() != veil_collector::metrics::names::EVENTS_DROPPED {
            continue;
        }
        for m in family.get_metric() {
            let n = m.get_counter().get_value();
            if n > 0.0 {
                let reason = m
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "reason")
                    .map_or("?", |l| l.value());
                out.push(format!("{reason}={n}"));
            }
        }
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(" ")
    }
}

/// Shuts the collector down, then compares what was acknowledged with what ClickHouse holds.
/// Returns whether everything adds up.
fn verify(
    rt: &Runtime,
    running: Running,
    results: &[(Scenario, LoadReport)],
) -> anyhow::Result<bool> {
    let Running {
        ch,
        collector,
        stop,
        server,
        ..
    } = running;
    let _ = stop.send(());
    let t = Instant::now();
    rt.block_on(server)
        .context("the collector's server task failed")?;
    let flushed = collector.finish();
    eprintln!(
        "collector stopped in {:.2} s (spool drained into ClickHouse: {flushed})",
        t.elapsed().as_secs_f64()
    );

    let on_collector = || results.iter().filter(|(s, _)| s.collector).map(|(_, r)| r);
    let sent: u64 = on_collector().map(|r| r.expected_stored).sum();
    let answered: u64 = on_collector().map(|r| r.reported_accepted).sum();
    let m = collector.metrics();
    let accepted: u64 = ["plausible", "native"]
        .iter()
        .map(|e| m.events_accepted.with_label_values(&[e]).get())
        .sum();
    let written = m.events_written.get();
    let found: u64 = rt
        .block_on(
            ch.client()
                .query("SELECT count() FROM events")
                .fetch_one::<u64>(),
        )
        .context("counting rows in ClickHouse")?;

    println!("verification (database {}):", ch.database);
    println!("  expected stored (2xx, registered site, not a bot, no opt-out): {sent}");
    println!("  accepted according to the answers:                           {answered}");
    println!("  veil_events_accepted_total:                                  {accepted}");
    println!("  veil_events_written_total:                                   {written}");
    println!("  rows in ClickHouse (SELECT count() FROM events):             {found}");
    println!(
        "  veil_events_dropped_total: {}",
        dropped_by_reason(collector.registry())
    );
    let (hits, misses) = collector.ua_cache_stats();
    let total = (hits + misses).max(1);
    println!(
        "  user-agent cache: {hits} hits, {misses} misses, hit rate {:.2} %",
        100.0 * hits as f64 / total as f64
    );
    let ok = flushed && found == sent && answered == sent && accepted == sent && written == found;
    if ok {
        println!("  OK: every acknowledged event is in ClickHouse");
    } else {
        println!("  MISMATCH: expected {sent} rows, found {found}");
    }
    Ok(ok)
}

fn scenarios(args: &Args, bare_addr: SocketAddr, collector: Option<SocketAddr>) -> Vec<Scenario> {
    let mut out = Vec::new();
    if matches!(args.mode, Mode::All | Mode::Bare) {
        out.push(Scenario {
            label: "bare hyper (202, no work)".into(),
            workload: Workload::Plausible,
            addr: bare_addr,
            collector: false,
        });
    }
    if let Some(addr) = collector {
        if matches!(args.mode, Mode::All | Mode::Plausible) {
            out.push(Scenario {
                label: "POST /api/event".into(),
                workload: Workload::Plausible,
                addr,
                collector: true,
            });
        }
        if matches!(args.mode, Mode::All | Mode::Native) {
            out.push(Scenario {
                label: format!("POST /v1/events x{}", args.batch_size),
                workload: Workload::Native {
                    batch: args.batch_size,
                },
                addr,
                collector: true,
            });
        }
    }
    out
}

fn run(args: &Args) -> anyhow::Result<bool> {
    if args.connections == 0 || args.duration == 0 || args.batch_size == 0 {
        bail!("--connections, --duration and --batch-size must be above 0");
    }
    check_mix()?;
    let needs_collector = args.mode != Mode::Bare;
    // Before any runtime exists: the managed server's parent-death signal follows this thread.
    let store = if needs_collector {
        Some(Store::open(args.clickhouse_url.as_deref())?)
    } else {
        None
    };

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads.max(1))
        .thread_name("veil-server")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("veil-load")
        .enable_all()
        .build()?;

    let bare_listener = server_rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let bare_addr = bare_listener.local_addr()?;
    let (bare_stop, bare_stopped) = oneshot::channel::<()>();
    let bare_task = server_rt.spawn(bare::serve(bare_listener, async move {
        let _ = bare_stopped.await;
    }));
    let running = match &store {
        Some(s) => Some(server_rt.block_on(start_collector(&s.url, args))?),
        None => None,
    };

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    eprintln!(
        "{cores} cores shared by the load generator ({} threads), the servers ({} threads){}",
        args.client_threads,
        args.server_threads,
        if needs_collector {
            " and ClickHouse"
        } else {
            ""
        }
    );
    let mut results = Vec::new();
    let planned = scenarios(args, bare_addr, running.as_ref().map(|r| r.addr));
    for (i, s) in planned.into_iter().enumerate() {
        if i > 0 {
            // Let the writer drain the previous scenario's rows before measuring the next.
            std::thread::sleep(Duration::from_secs(2));
        }
        eprintln!(
            "{}: {} s over {} connections …",
            s.label, args.duration, args.connections
        );
        let report = client_rt.block_on(loadgen::run(LoadOptions {
            addr: s.addr,
            workload: s.workload,
            connections: args.connections,
            duration: Duration::from_secs(args.duration),
            max_requests: args.max_requests,
            seed: args.seed.wrapping_add(i as u64),
            request_timeout: Duration::from_secs(10),
        }))?;
        results.push((s, report));
    }
    print_table(&results, args.connections);

    let _ = bare_stop.send(());
    server_rt.block_on(bare_task)?;
    let ok = match running {
        Some(r) => {
            let ch = r.ch.clone();
            let ok = verify(&server_rt, r, &results)?;
            // A managed server takes its data with it; on a server of yours, clean up after a
            // successful run and keep the evidence after a failed one.
            if ok && args.clickhouse_url.is_some() {
                let drop_db = format!("DROP DATABASE IF EXISTS {}", ch.database);
                server_rt.block_on(ch.server_client().query(&drop_db).execute())?;
            }
            ok
        }
        None => true,
    };
    drop(client_rt);
    drop(server_rt);
    drop(store);
    Ok(ok)
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("veil-load: {e:#}");
            ExitCode::from(2)
        }
    }
}
