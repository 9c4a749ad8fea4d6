//! `veil-load`: the whole-system load harness.
//!
//! In one process and one run it
//!
//! 1. starts a throwaway ClickHouse (or uses `--clickhouse-url`), creates a fresh database and
//!    migrates it;
//! 2. starts `--collectors` real collectors (default 1), each on its own `127.0.0.1:0` listener
//!    with its own spool in a temp dir, all on that database with the mix's sites registered —
//!    production defaults otherwise, except the per-IP rate limit (see `--rate-limit-ip`). They
//!    run in this process on the servers' runtime, or with `--collector-processes` as separate
//!    `veil collector` processes (the real binary). Also a bare hyper server that only answers
//!    202 (the ceiling, see `veil_benches::bare`);
//! 3. replays the realistic traffic mix of `veil_benches::traffic` over keep-alive connections,
//!    spread round-robin over the collectors as a load balancer would, against the bare server,
//!    `POST /api/event` (one event per request) and `POST /v1/events` (`--batch-size` events per
//!    request), one scenario after the other, each for `--duration` seconds, and prints
//!    requests/s, events/s, p50/p99 latency and the ratio to the bare server;
//! 4. shuts the collectors down gracefully (each drains its spool into ClickHouse) and checks
//!    that every acknowledged event that must be stored (2xx, registered site, not a bot, no
//!    opt-out) is in ClickHouse exactly once, comparing with the sum of the collectors' own
//!    counters too.
//!
//! Issue 18's denominators, each optional: `--rate`/`--open-loop-at` add `/api/event` open-loop
//! at a fixed rate (latency from each request's due time, see `loadgen::run_open`), `--outage`
//! a last scenario during which the managed ClickHouse is stopped (SIGSTOP) and resumed, and
//! `--clickhouse-client` times Debian's `clickhouse-client` inserting the rows `/v1/events`
//! stored, into a copy of `events` and into a fresh `events` with its views (see
//! `veil_benches::chclient`), after the verification. Every scenario samples the collectors'
//! resident memory (`veil_benches::rss`).
//!
//! `--compare-collectors` does all of this twice in one invocation — 1 collector, then
//! `--collectors` (2 when that is 1), each on a fresh database — and prints the ratios between
//! the two runs: this machine is shared and noisy, so only numbers measured side by side compare.
//!
//! Exit status: 0 when everything adds up, 1 on a count mismatch, 2 when the run itself failed.
//! The in-process servers get their own tokio runtime (`--server-threads`), the load generator
//! another (`--client-threads`); a `veil collector` process has its own (one worker per core).
//! On a small machine they all, and ClickHouse, share the same cores.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
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
use veil_benches::cpu;
use veil_benches::loadgen::{self, LoadOptions, LoadReport, Workload};
use veil_benches::rss::{self, Peak, Sampler};
use veil_benches::{bare, chclient, traffic};
use veil_collector::metrics::names;
use veil_collector::pipeline::enrich::UaParser;
use veil_collector::pipeline::spool::{Durability, SpoolError};
use veil_collector::server::{self, App};
use veil_collector::{Collector, CollectorConfig, Readiness};
use veil_schemas::managed::{ManagedClickHouse, ManagedOptions};
use veil_schemas::sql;
use veil_schemas::sql::{ident, Run, Sql};
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
    /// Collectors to start, each with its own spool and listener, all on the same database and
    /// sites; the load generator spreads its connections over them round-robin.
    #[arg(long, default_value_t = 1)]
    collectors: usize,
    /// Run twice in this invocation, with 1 collector and then with `--collectors` (2 when that
    /// is 1), and print the ratios between the two runs.
    #[arg(long)]
    compare_collectors: bool,
    /// Run each collector as its own `veil collector` OS process (the real binary, with its own
    /// runtime) instead of in this process on the servers' runtime.
    #[arg(long)]
    collector_processes: bool,
    /// The `veil` binary for `--collector-processes`; default: `veil` next to this executable
    /// (`cargo build --release -p veil`).
    #[arg(long)]
    veil_bin: Option<PathBuf>,
    /// Also run `/api/event` open-loop at this fixed rate (requests/s, due at fixed intervals
    /// whatever the answers; latency from the due time), after the closed-loop `/api/event`.
    #[arg(long)]
    rate: Option<f64>,
    /// Also run `/api/event` open-loop at this fraction of the closed-loop `/api/event` rate
    /// measured just before in the same run (e.g. 0.5 for half of the maximum).
    #[arg(long)]
    open_loop_at: Option<f64>,
    /// Outage scenario: `/api/event` closed-loop for SECS + 4 s, the managed ClickHouse stopped
    /// (SIGSTOP) from 2 s in for SECS seconds and then resumed (SIGCONT); collector RSS sampled.
    #[arg(long, value_name = "SECS")]
    outage: Option<u64>,
    /// After the verification, time `clickhouse-client` inserting the rows the `/v1/events`
    /// scenario stored (RowBinary on its stdin, ordered by time as a client sends events as
    /// they happen) into a copy of `events` without materialized views and into a fresh
    /// `events` with them, and print `/v1/events` ÷ its rows/s; also the copy with the rows in
    /// the table's own order, for which ClickHouse skips its sort (the cheapest insert).
    #[arg(long)]
    clickhouse_client: bool,
    /// The `clickhouse-client` binary.
    #[arg(long, default_value = "clickhouse-client")]
    clickhouse_client_bin: PathBuf,
    /// Inserts timed per target table with `--clickhouse-client` (the median is used).
    #[arg(long, default_value_t = 3)]
    clickhouse_client_repeats: usize,
    /// With `--clickhouse-client`: also time the same insert into `events` of fresh databases
    /// that keep only one of its materialized views each (the others dropped), so each view's
    /// own cost on the insert path shows.
    #[arg(long)]
    clickhouse_client_per_view: bool,
    /// One more argument for every `veil collector` process (repeat the flag for several), e.g.
    /// `--collector-arg=--batch-max-rows=10000`; needs `--collector-processes`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    collector_arg: Vec<String>,
    /// Native protocol port of the `--clickhouse-url` server, for `clickhouse-client` (a managed
    /// server's is read from its config).
    #[arg(long, default_value_t = 9000)]
    clickhouse_tcp_port: u16,
    /// Lower the managed ClickHouse's CPU priority by this `nice` increment (every thread of
    /// it, with `renice`): tells how much of the collector's latency is ClickHouse's insert
    /// work competing for the same cores (0: unchanged).
    #[arg(long, default_value_t = 0)]
    clickhouse_nice: i32,
    /// Drop this materialized view (`events_tail_mv`, `events_hourly_mv` or
    /// `events_daily_mv`; repeat the flag for several) from every database the collectors
    /// write to, right after it is migrated: what the view costs the whole ingest path (the
    /// collector's rate with ClickHouse's insert work on the same cores), not only
    /// `clickhouse-client`'s insert. The reports that read its table are wrong without it: a
    /// measurement, never a deployment.
    #[arg(long, value_name = "VIEW", value_parser = parse_view)]
    drop_view: Vec<&'static str>,
}

/// `--drop-view`: one of [`VIEWS`].
fn parse_view(s: &str) -> Result<&'static str, String> {
    VIEWS.iter().copied().find(|v| *v == s).ok_or_else(|| {
        format!(
            "{s:?} is not a view on the insert path ({})",
            VIEWS.join(", ")
        )
    })
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    s.parse().map_err(|e: SpoolError| e.to_string())
}

/// The `--durability` value naming `d`.
fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::Fsync => "fsync",
        Durability::None => "none",
    }
}

/// The ClickHouse of this run. A managed server lives as long as this value; it must be created
/// on the main thread, whose death is what its parent-death signal is tied to.
struct Store {
    /// Dropped in order: the server stops, then its directory is removed.
    _managed: Option<(ManagedClickHouse, TempDir)>,
    url: String,
    /// The managed server's password (none for a server of yours).
    password: Option<String>,
}

impl Store {
    /// The managed server's process id (none for a server of yours).
    fn clickhouse_pid(&self) -> Option<u32> {
        self._managed.as_ref().and_then(|(m, _)| m.pid())
    }

    /// The native protocol port: the managed server's, from its config, or `fallback`.
    fn tcp_port(&self, fallback: u16) -> anyhow::Result<u16> {
        match &self._managed {
            None => Ok(fallback),
            Some((m, _)) => {
                let path = m.dir().join("config.xml");
                let xml = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                chclient::tcp_port_from_config(&xml)
                    .with_context(|| format!("no <tcp_port> in {}", path.display()))
            }
        }
    }

    fn open(url: Option<&str>) -> anyhow::Result<Self> {
        if let Some(url) = url {
            return Ok(Self {
                _managed: None,
                url: url.to_string(),
                password: None,
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
        let password = Some(server.password().to_string());
        Ok(Self {
            _managed: Some((server, dir)),
            url,
            password,
        })
    }
}

/// The collectors of one run, all on the same database.
struct Fleet {
    ch: ClickHouseConfig,
    members: Vec<Member>,
}

impl Fleet {
    /// Where each collector listens, in start order.
    fn addrs(&self) -> Vec<SocketAddr> {
        self.members.iter().map(Member::addr).collect()
    }
}

/// One collector serving on loopback, and how to stop it.
enum Member {
    /// In this process, on the servers' runtime.
    InProcess {
        addr: SocketAddr,
        collector: Collector,
        /// Taken when the stop is sent.
        stop: Option<oneshot::Sender<()>>,
        server: JoinHandle<()>,
        /// The spool directory, removed once the collector has stopped.
        _spool: TempDir,
    },
    /// A `veil collector` process.
    Process(ChildCollector),
}

impl Member {
    fn addr(&self) -> SocketAddr {
        match self {
            Member::InProcess { addr, .. } => *addr,
            Member::Process(c) => c.addr,
        }
    }

    /// The process whose memory is this collector's: its own, or `veil-load` (`None`).
    fn pid(&self) -> Option<u32> {
        match self {
            Member::InProcess { .. } => None,
            Member::Process(c) => Some(c.child.id()),
        }
    }
}

/// A `veil collector` child process. Killed (SIGKILL) when dropped while still running, so an
/// aborted run leaves no collector behind; a graceful stop is [`ChildCollector::terminate`].
struct ChildCollector {
    child: Child,
    addr: SocketAddr,
    /// Its metrics listener (`/metrics` is not served on `addr`).
    metrics_addr: SocketAddr,
    /// Its stdout and stderr.
    log: PathBuf,
    /// Its `--data-dir` (spool, log), removed after the process has ended.
    _dir: TempDir,
}

impl ChildCollector {
    /// The last lines of its log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Sends SIGTERM (the production shutdown signal: drain, flush the last batch, exit).
    fn terminate(&self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .context("running kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {} failed: {status}", self.child.id());
        }
        Ok(())
    }

    /// Waits for the process to end; true if it exited with status 0 (its last batch flushed).
    async fn wait(&mut self, limit: Duration) -> anyhow::Result<bool> {
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    eprintln!(
                        "collector {} exited with {status}; its log ends with:\n{}",
                        self.addr,
                        self.log_tail()
                    );
                }
                return Ok(status.success());
            }
            if Instant::now() > until {
                bail!(
                    "collector {} still running {limit:?} after SIGTERM",
                    self.addr
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChildCollector {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A fresh database at `url` for run number `run`, migrated by this harness or, when given, by
/// `veil migrate` of that binary (so that collector processes find exactly the migrations they
/// were built with).
async fn fresh_database(
    store: &Store,
    run: usize,
    veil: Option<&Path>,
) -> anyhow::Result<ClickHouseConfig> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let url = &store.url;
    let mut ch = ClickHouseConfig::new(
        url,
        format!("veil_load_{secs}_{}_{run}", std::process::id()),
    );
    if store.password.is_some() {
        ch.user = Some(veil_schemas::managed::USER.into());
        ch.password = store.password.clone();
    }
    match veil {
        None => {
            veil_schemas::migrate(&ch)
                .await
                .with_context(|| format!("migrating database {} at {url}", ch.database))?;
        }
        Some(bin) => {
            let out = clickhouse_login(&mut veil_command(bin), &ch)
                .arg("migrate")
                .arg("--clickhouse-url")
                .arg(&ch.url)
                .arg("--clickhouse-database")
                .arg(&ch.database)
                .output()
                .with_context(|| format!("running {} migrate", bin.display()))?;
            if !out.status.success() {
                bail!(
                    "{} migrate failed ({}): {}",
                    bin.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
    }
    Ok(ch)
}

/// Starts `n` collectors on a fresh database, one after the other (each ready before the next
/// starts, as in a rolling deployment).
async fn start_fleet(store: &Store, args: &Args, n: usize, run: usize) -> anyhow::Result<Fleet> {
    let veil = if args.collector_processes {
        Some(veil_binary(args)?)
    } else {
        None
    };
    let ch = fresh_database(store, run, veil.as_deref()).await?;
    for view in &args.drop_view {
        let q = sql!("DROP TABLE {}", ident(view)?);
        ch.client()
            .sql(&q)
            .execute()
            .await
            .with_context(|| format!("dropping {view} (--drop-view)"))?;
        eprintln!(
            "veil-load: {view} dropped from {} (--drop-view)",
            ch.database
        );
    }
    let mut members = Vec::with_capacity(n);
    for _ in 0..n {
        members.push(match &veil {
            Some(bin) => Member::Process(spawn_collector(bin, &ch, args).await?),
            None => start_in_process(&ch, args).await?,
        });
    }
    Ok(Fleet { ch, members })
}

async fn start_in_process(ch: &ClickHouseConfig, args: &Args) -> anyhow::Result<Member> {
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
    Ok(Member::InProcess {
        addr,
        collector,
        stop: Some(stop),
        server,
        _spool: spool,
    })
}

/// Renices every thread of `pid` by `by` (threads started later inherit it from theirs).
fn renice_all_threads(pid: u32, by: i32) -> anyhow::Result<()> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("listing the threads of {pid}"))?;
    for t in tasks {
        let tid = t?.file_name().to_string_lossy().into_owned();
        let ok = Command::new("renice")
            .args(["-n", &by.to_string(), "-p", &tid])
            .stdout(Stdio::null())
            .status()
            .context("running renice")?
            .success();
        if !ok {
            bail!("renice -n {by} -p {tid} failed");
        }
    }
    Ok(())
}

/// `--veil-bin`, or `veil` next to this executable.
fn veil_binary(args: &Args) -> anyhow::Result<PathBuf> {
    let bin = match &args.veil_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating veil-load's own executable")?
            .with_file_name("veil"),
    };
    if !bin.is_file() {
        bail!(
            "--collector-processes needs the veil binary, not found at {} \
             (build it with `cargo build --release -p veil`, or pass --veil-bin)",
            bin.display()
        );
    }
    Ok(bin)
}

/// `bin` without the `VEIL_*` variables of this environment: settings come from flags only.
fn veil_command(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("VEIL_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `ch`'s user and password for a `veil` child, in its environment (never on a command line).
fn clickhouse_login<'a>(cmd: &'a mut Command, ch: &ClickHouseConfig) -> &'a mut Command {
    if let Some(u) = &ch.user {
        cmd.env("VEIL_CLICKHOUSE_USER", u);
    }
    if let Some(p) = &ch.password {
        cmd.env("VEIL_CLICKHOUSE_PASSWORD", p);
    }
    cmd
}

/// Starts `veil collector` on `127.0.0.1:0` with the same settings as an in-process collector
/// (flags only: `VEIL_*` variables of this environment are not passed on) and waits until it
/// is listening and ready.
async fn spawn_collector(
    bin: &Path,
    ch: &ClickHouseConfig,
    args: &Args,
) -> anyhow::Result<ChildCollector> {
    let dir = tempfile::Builder::new()
        .prefix("veil-load-collector-")
        .tempdir()
        .context("creating a temp dir for a collector process")?;
    let log = dir.path().join("collector.log");
    let out = std::fs::File::create(&log).context("creating the collector's log")?;
    let mut cmd = veil_command(bin);
    clickhouse_login(&mut cmd, ch);
    cmd.arg("collector")
        .args(["--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .arg("--clickhouse-url")
        .arg(&ch.url)
        .arg("--clickhouse-database")
        .arg(&ch.database)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--durability", durability_name(args.durability)])
        .arg("--rate-limit-ip")
        .arg(args.rate_limit_ip.to_string())
        .arg("--log")
        .arg(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
    for site in traffic::REGISTERED_SITES {
        cmd.args(["--site", site]);
    }
    cmd.args(&args.collector_arg);
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().context("duplicating the log handle")?)
        .stderr(out);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut c = ChildCollector {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        log,
        _dir: dir,
    };
    // `veil collector` prints where it listens, and where its metrics are, once bound.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&c.log).unwrap_or_default();
        let found = text.lines().find_map(|l| {
            l.split_once("collector listening on http://")
                .and_then(|(_, a)| a.trim().parse::<SocketAddr>().ok())
        });
        let metrics = text.lines().find_map(|l| {
            l.split_once("metrics http://")
                .and_then(|(_, a)| a.trim().strip_suffix("/metrics")?.parse().ok())
        });
        if let (Some(addr), Some(metrics)) = (found, metrics) {
            c.addr = addr;
            c.metrics_addr = metrics;
            break;
        }
        if let Some(status) = c.child.try_wait()? {
            bail!("veil collector exited with {status}:\n{}", c.log_tail());
        }
        if Instant::now() > until {
            bail!(
                "veil collector did not start listening within 60 s:\n{}",
                c.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        if let Ok((status, body)) = loadgen::get(c.addr, "/readyz", Duration::from_secs(2)).await {
            if status.is_success() && body.starts_with(b"ready") {
                return Ok(c);
            }
        }
        if let Some(status) = c.child.try_wait()? {
            bail!("veil collector exited with {status}:\n{}", c.log_tail());
        }
        if Instant::now() > until {
            bail!(
                "veil collector {} not ready within 60 s:\n{}",
                c.addr,
                c.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a collector's counters say, read from its Prometheus text (`/metrics` of its metrics
/// listener, or the same rendering of an in-process collector's registry).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Counters {
    /// `veil_events_accepted_total`, all endpoints.
    accepted: u64,
    /// `veil_events_written_total`.
    written: u64,
    /// `veil_events_dropped_total` by reason.
    dropped: BTreeMap<String, u64>,
    ua_hits: u64,
    ua_misses: u64,
}

impl Counters {
    fn parse(text: &str) -> Self {
        let mut c = Self::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.trim().rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            // Counters: whole numbers, exact in an f64 up to 2^53.
            let v = v as u64;
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            match name {
                names::EVENTS_ACCEPTED => c.accepted += v,
                names::EVENTS_WRITTEN => c.written += v,
                names::UA_CACHE_HITS => c.ua_hits += v,
                names::UA_CACHE_MISSES => c.ua_misses += v,
                names::EVENTS_DROPPED => {
                    let reason = label(labels, "reason").unwrap_or("?");
                    *c.dropped.entry(reason.to_string()).or_default() += v;
                }
                _ => {}
            }
        }
        c
    }

    fn add(&mut self, o: &Counters) {
        self.accepted += o.accepted;
        self.written += o.written;
        for (r, n) in &o.dropped {
            *self.dropped.entry(r.clone()).or_default() += n;
        }
        self.ua_hits += o.ua_hits;
        self.ua_misses += o.ua_misses;
    }

    /// Every non-zero drop reason, as `reason=n`.
    fn dropped_by_reason(&self) -> String {
        let out: Vec<String> = self
            .dropped
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        if out.is_empty() {
            "none".into()
        } else {
            out.join(" ")
        }
    }
}

/// The value of `key="…"` in a Prometheus label set.
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

/// A collector process's counters, read from its metrics listener `addr`, once it has written
/// everything it accepted (the load is over, so that number no longer grows), or as they are
/// once `veil_events_written_total` has not moved for `stall` (a backlog left by an outage
/// takes as long as it takes to drain, so the wait is bounded by progress, not by a clock; the
/// caller's `stall` outlasts the collector's 60 s insert timeout, so one insert that hung in an
/// outage and is retried does not end the wait). Prints how long it waited when that was long.
async fn settled_counters(addr: SocketAddr, stall: Duration) -> anyhow::Result<Counters> {
    let waited = Instant::now();
    let mut progress = Instant::now();
    let mut last_written = None;
    loop {
        let (status, body) = loadgen::get(addr, "/metrics", Duration::from_secs(5))
            .await
            .with_context(|| format!("reading /metrics of collector {addr}"))?;
        if !status.is_success() {
            bail!("/metrics of collector {addr} answered {status}");
        }
        let c = Counters::parse(&String::from_utf8_lossy(&body));
        if c.written >= c.accepted {
            if waited.elapsed() > Duration::from_secs(1) {
                eprintln!(
                    "collector {addr}: wrote its backlog in {:.1} s after the load",
                    waited.elapsed().as_secs_f64()
                );
            }
            return Ok(c);
        }
        if last_written != Some(c.written) {
            last_written = Some(c.written);
            progress = Instant::now();
        } else if progress.elapsed() > stall {
            eprintln!(
                "collector {addr}: veil_events_written_total stuck at {} of {} for {stall:?}",
                c.written, c.accepted
            );
            return Ok(c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops every collector gracefully. Returns whether all of them flushed their last batch, and
/// each one's counters (a process's are read just before its SIGTERM, once it has written all it
/// accepted; an in-process collector's after it stopped).
fn stop_fleet(rt: &Runtime, mut members: Vec<Member>) -> anyhow::Result<(bool, Vec<Counters>)> {
    let mut before = Vec::with_capacity(members.len());
    for m in &members {
        before.push(match m {
            Member::Process(c) => {
                Some(rt.block_on(settled_counters(c.metrics_addr, Duration::from_secs(90)))?)
            }
            Member::InProcess { .. } => None,
        });
    }
    // Signal all, then wait for each: they drain at the same time, as a fleet would.
    for m in &mut members {
        match m {
            Member::InProcess { stop, .. } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
            }
            Member::Process(c) => c.terminate()?,
        }
    }
    let mut flushed = true;
    let mut counters = Vec::with_capacity(members.len());
    for (m, before) in members.into_iter().zip(before) {
        match m {
            Member::InProcess {
                collector, server, ..
            } => {
                rt.block_on(server)
                    .context("a collector's server task failed")?;
                flushed &= collector.finish();
                collector.observe();
                counters.push(Counters::parse(&veil_collector::metrics::render(
                    collector.registry(),
                )));
            }
            Member::Process(mut c) => {
                flushed &= rt.block_on(c.wait(Duration::from_secs(120)))?;
                counters.push(before.unwrap_or_default());
            }
        }
    }
    Ok((flushed, counters))
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
    /// The bare server's address, or every collector's.
    addrs: Vec<SocketAddr>,
    collector: bool,
    pace: Pace,
    /// The managed ClickHouse is stopped for this long, 2 s into the scenario.
    outage: Option<Duration>,
}

/// How a scenario's requests are sent.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pace {
    /// One request in flight per connection, the next sent when the answer is read.
    Closed,
    /// Open loop at this many requests per second.
    Rate(f64),
    /// Open loop at this fraction of the closed-loop `/api/event` rate measured before it.
    FractionOfClosed(f64),
}

/// One run: its collectors, what each scenario measured, and whether the counts added up.
struct RunOutcome {
    collectors: usize,
    results: Vec<(Scenario, LoadReport)>,
    ok: bool,
}

/// Sends SIGSTOP or SIGCONT to `pid`.
fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{sig} {pid} failed: {status}");
    }
    Ok(())
}

/// Stops the managed ClickHouse (SIGSTOP) `after` from now for `length`, on its own thread, and
/// resumes it (SIGCONT) — also when the returned handle is dropped early, so an aborted run
/// never leaves the server stopped.
struct Outage {
    pid: u32,
    thread: Option<std::thread::JoinHandle<anyhow::Result<(Instant, Instant)>>>,
}

impl Outage {
    fn start(pid: u32, after: Duration, length: Duration) -> anyhow::Result<Self> {
        let thread = std::thread::Builder::new()
            .name("veil-load-outage".into())
            .spawn(move || {
                std::thread::sleep(after);
                signal(pid, "STOP")?;
                let stopped = Instant::now();
                eprintln!("ClickHouse (pid {pid}) stopped (SIGSTOP) for {length:?} …");
                std::thread::sleep(length);
                signal(pid, "CONT")?;
                eprintln!("ClickHouse resumed (SIGCONT)");
                Ok((stopped, Instant::now()))
            })?;
        Ok(Self {
            pid,
            thread: Some(thread),
        })
    }

    /// Waits for the resume; the span ClickHouse was stopped.
    fn finish(mut self) -> anyhow::Result<Duration> {
        let t = self.thread.take().context("outage already finished")?;
        let (a, b) = t
            .join()
            .map_err(|_| anyhow::anyhow!("the outage thread panicked"))??;
        Ok(b - a)
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = signal(self.pid, "CONT");
        }
    }
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

/// The 1-, 5- and 15-minute load averages (Linux), for the record.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

fn print_table(results: &[(Scenario, LoadReport)], connections: usize, collectors: usize) {
    let bare = results
        .iter()
        .find(|(s, _)| !s.collector && s.pace == Pace::Closed)
        .map(|(_, r)| r.requests_per_sec());
    println!();
    println!(
        "{:<34} {:>10} {:>6} {:>10} {:>10} {:>11} {:>8} {:>8} {:>9} {:>8} {:>7} {:>9} {:>12}",
        "scenario",
        "collectors",
        "conns",
        "requests",
        "req/s",
        "events/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "non-2xx",
        "failed",
        "req/bare",
        "events/bare"
    );
    for (s, r) in results {
        println!(
            "{:<34} {:>10} {:>6} {:>10} {:>10.0} {:>11.0} {:>8.2} {:>8.2} {:>9.2} {:>8} {:>7} {:>9} {:>12}",
            s.label,
            if s.collector {
                collectors.to_string()
            } else {
                "-".into()
            },
            connections,
            r.requests,
            r.requests_per_sec(),
            r.events_per_sec(),
            ms(r.percentile(50.0)),
            ms(r.percentile(99.0)),
            ms(r.percentile(99.9)),
            r.non_2xx(),
            r.failures,
            ratio(r.requests_per_sec(), bare),
            ratio(r.events_per_sec(), bare),
        );
        if r.non_2xx() > 0 {
            println!("{:<34} statuses: {:?}", "", r.statuses);
        }
        if let Some(rate) = r.target_rate {
            let lag = |p| ms(loadgen::percentile_of(&r.send_lag_us, p));
            println!(
                "{:<34} open loop: asked {rate:.0} req/s, achieved {:.0} ({:.3}); sent after due: p50 {:.2} / p99 {:.2} / p99.9 {:.2} ms",
                "",
                r.requests_per_sec(),
                r.requests_per_sec() / rate,
                lag(50.0),
                lag(99.0),
                lag(99.9)
            );
            let stalls = loadgen::stall_windows(&r.slow, 100);
            if !stalls.is_empty() {
                let shown: Vec<String> = stalls
                    .iter()
                    .take(12)
                    .map(|w| {
                        format!(
                            "{:.2}–{:.2} s ×{} (worst {:.0} ms)",
                            f64::from(w.from_ms) / 1000.0,
                            f64::from(w.to_ms) / 1000.0,
                            w.requests,
                            f64::from(w.worst_us) / 1000.0
                        )
                    })
                    .collect();
                println!(
                    "{:<34} stalls (requests ≥ {} ms late, by due time): {}{}",
                    "",
                    loadgen::SLOW.as_millis(),
                    shown.join(", "),
                    if stalls.len() > 12 {
                        format!(" … {} in all", stalls.len())
                    } else {
                        String::new()
                    }
                );
            }
        }
        if s.collector && collectors > 1 {
            let spread: Vec<String> = r
                .by_target
                .iter()
                .map(|(a, n)| format!("{a}: {n}"))
                .collect();
            println!("{:<34} requests per collector: {}", "", spread.join(", "));
        }
    }
    println!();
}

/// Shuts the collectors down, then compares what was acknowledged with what ClickHouse holds
/// and with the sum of the collectors' counters. Returns whether everything adds up.
fn verify(rt: &Runtime, fleet: Fleet, results: &[(Scenario, LoadReport)]) -> anyhow::Result<bool> {
    let Fleet { ch, members } = fleet;
    let addrs: Vec<SocketAddr> = members.iter().map(Member::addr).collect();
    let t = Instant::now();
    let (flushed, each) = stop_fleet(rt, members)?;
    eprintln!(
        "{} collector(s) stopped in {:.2} s (spools drained into ClickHouse: {flushed})",
        each.len(),
        t.elapsed().as_secs_f64()
    );
    let mut total = Counters::default();
    for c in &each {
        total.add(c);
    }

    let on_collector = || results.iter().filter(|(s, _)| s.collector).map(|(_, r)| r);
    let sent: u64 = on_collector().map(|r| r.expected_stored).sum();
    let answered: u64 = on_collector().map(|r| r.reported_accepted).sum();
    let found: u64 = rt
        .block_on(
            ch.client()
                .sql(&Sql::new("SELECT count() FROM events"))
                .fetch_one::<u64>(),
        )
        .context("counting rows in ClickHouse")?;

    let n = each.len();
    let of_all = if n > 1 {
        " (sum of all collectors)"
    } else {
        ""
    };
    println!("verification (database {}, {n} collector(s)):", ch.database);
    println!("  expected stored (2xx, registered site, not a bot, no opt-out): {sent}");
    println!("  accepted according to the answers:                           {answered}");
    println!(
        "  veil_events_accepted_total:                                  {}{of_all}",
        total.accepted
    );
    println!(
        "  veil_events_written_total:                                   {}{of_all}",
        total.written
    );
    println!("  rows in ClickHouse (SELECT count() FROM events):             {found}");
    if n > 1 {
        for (a, c) in addrs.iter().zip(&each) {
            println!(
                "    collector {a}: accepted {}, written {}",
                c.accepted, c.written
            );
        }
    }
    println!("  veil_events_dropped_total: {}", total.dropped_by_reason());
    let lookups = (total.ua_hits + total.ua_misses).max(1);
    println!(
        "  user-agent cache: {} hits, {} misses, hit rate {:.2} %",
        total.ua_hits,
        total.ua_misses,
        100.0 * total.ua_hits as f64 / lookups as f64
    );
    let ok = flushed
        && found == sent
        && answered == sent
        && total.accepted == sent
        && total.written == found;
    if ok {
        println!("  OK: every acknowledged event is in ClickHouse, exactly once");
    } else if found == sent && answered == sent && total.accepted == sent {
        println!(
            "  MISMATCH: the rows are exact ({found}), but the collectors' counters say written {} of accepted {}{}",
            total.written,
            total.accepted,
            if flushed { "" } else { " (a spool was not drained)" }
        );
    } else {
        println!("  MISMATCH: expected {sent} rows, found {found}");
    }
    Ok(ok)
}

fn scenarios(args: &Args, bare_addr: SocketAddr, collectors: &[SocketAddr]) -> Vec<Scenario> {
    let mut out = Vec::new();
    let on_collectors = |label: String, workload, pace, outage| Scenario {
        label,
        workload,
        addrs: collectors.to_vec(),
        collector: true,
        pace,
        outage,
    };
    if matches!(args.mode, Mode::All | Mode::Bare) {
        out.push(Scenario {
            label: "bare hyper (202, no work)".into(),
            workload: Workload::Plausible,
            addrs: vec![bare_addr],
            collector: false,
            pace: Pace::Closed,
            outage: None,
        });
    }
    if !collectors.is_empty() {
        if matches!(args.mode, Mode::All | Mode::Plausible) {
            out.push(on_collectors(
                "POST /api/event".into(),
                Workload::Plausible,
                Pace::Closed,
                None,
            ));
            if let Some(f) = args.open_loop_at {
                out.push(on_collectors(
                    format!("POST /api/event open {f}x max"),
                    Workload::Plausible,
                    Pace::FractionOfClosed(f),
                    None,
                ));
                if args.mode == Mode::All {
                    // The control: the same rate on the bare server is this generator's and
                    // this HTTP stack's own latency at that rate on this machine.
                    out.push(Scenario {
                        label: "bare hyper open (same rate)".into(),
                        workload: Workload::Plausible,
                        addrs: vec![bare_addr],
                        collector: false,
                        pace: Pace::FractionOfClosed(f),
                        outage: None,
                    });
                }
            }
        }
        if let Some(r) = args.rate {
            out.push(on_collectors(
                format!("POST /api/event open {r:.0}/s"),
                Workload::Plausible,
                Pace::Rate(r),
                None,
            ));
        }
        if matches!(args.mode, Mode::All | Mode::Native) {
            out.push(on_collectors(
                format!("POST /v1/events x{}", args.batch_size),
                Workload::Native {
                    batch: args.batch_size,
                },
                Pace::Closed,
                None,
            ));
        }
        if let Some(secs) = args.outage {
            out.push(on_collectors(
                format!("POST /api/event, CH stopped {secs}s"),
                Workload::Plausible,
                Pace::Closed,
                Some(Duration::from_secs(secs)),
            ));
        }
    }
    out
}

/// The rate an open-loop scenario runs at: its own, or the fraction of the closed-loop
/// `/api/event` rate measured earlier in `results`.
fn open_rate(pace: Pace, results: &[(Scenario, LoadReport)]) -> anyhow::Result<Option<f64>> {
    match pace {
        Pace::Closed => Ok(None),
        Pace::Rate(r) => Ok(Some(r)),
        Pace::FractionOfClosed(f) => {
            let closed = results
                .iter()
                .find(|(s, _)| {
                    s.collector
                        && s.pace == Pace::Closed
                        && s.outage.is_none()
                        && s.workload == Workload::Plausible
                })
                .map(|(_, r)| r.requests_per_sec())
                .context("--open-loop-at needs the closed-loop /api/event scenario before it")?;
            Ok(Some(f * closed))
        }
    }
}

/// One run with `n` collectors (none in `--mode bare`) on a fresh database: load, table,
/// verification.
fn run_once(
    args: &Args,
    store: Option<&Store>,
    server_rt: &Runtime,
    client_rt: &Runtime,
    n: usize,
    run: usize,
) -> anyhow::Result<RunOutcome> {
    let bare_listener = server_rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let bare_addr = bare_listener.local_addr()?;
    let (bare_stop, bare_stopped) = oneshot::channel::<()>();
    let bare_task = server_rt.spawn(bare::serve(bare_listener, async move {
        let _ = bare_stopped.await;
    }));
    let fleet = match store {
        Some(s) => Some(server_rt.block_on(start_fleet(s, args, n, run))?),
        None => None,
    };
    let addrs = fleet.as_ref().map(Fleet::addrs).unwrap_or_default();

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let collectors = match (&fleet, args.collector_processes) {
        (None, _) => String::new(),
        (Some(_), false) => format!(
            ", {} collector(s) in-process on the servers' runtime",
            addrs.len()
        ),
        (Some(_), true) => format!(
            ", {} `veil collector` process(es) ({cores} worker threads each)",
            addrs.len()
        ),
    };
    eprintln!(
        "{cores} cores shared by the load generator ({} threads), the servers ({} threads){collectors}{}; load average {}",
        args.client_threads,
        args.server_threads,
        if fleet.is_some() { " and ClickHouse" } else { "" },
        load_average()
    );
    let mut results = Vec::new();
    let mut memory = Vec::new();
    let mut commits = Vec::new();
    let mut blocks = Vec::new();
    // Each collector process's memory, or this process's once for in-process collectors.
    let mut pids: Vec<Option<u32>> = fleet
        .as_ref()
        .map(|f| f.members.iter().map(Member::pid).collect())
        .unwrap_or_default();
    pids.dedup();
    // CPU: this process, each collector process, ClickHouse (when managed).
    let mut cpu_pids: Vec<Option<u32>> = vec![None];
    cpu_pids.extend(pids.iter().filter(|p| p.is_some()).copied());
    let ch_pid = store.and_then(Store::clickhouse_pid);
    if ch_pid.is_some() {
        cpu_pids.push(ch_pid);
    }
    let mut cpu_used: Vec<Vec<Option<Duration>>> = Vec::new();
    let planned = scenarios(args, bare_addr, &addrs);
    for (i, s) in planned.into_iter().enumerate() {
        if i > 0 {
            // Let the writers drain the previous scenario's rows before measuring the next.
            std::thread::sleep(Duration::from_secs(2));
        }
        let rate = open_rate(s.pace, &results)?;
        let mut duration = Duration::from_secs(args.duration);
        let outage = match s.outage {
            None => None,
            Some(length) => {
                let pid = store.and_then(Store::clickhouse_pid).context(
                    "--outage needs the managed ClickHouse (not --clickhouse-url): it stops that process",
                )?;
                duration = length + Duration::from_secs(4);
                Some(Outage::start(pid, Duration::from_secs(2), length)?)
            }
        };
        eprintln!(
            "{}: {} s over {} connections to {} address(es){} …",
            s.label,
            duration.as_secs(),
            args.connections,
            s.addrs.len(),
            rate.map(|r| format!(", open loop at {r:.0} req/s"))
                .unwrap_or_default()
        );
        let opts = LoadOptions {
            addrs: s.addrs.clone(),
            workload: s.workload,
            connections: args.connections,
            duration,
            max_requests: args.max_requests,
            seed: args.seed.wrapping_add(i as u64),
            request_timeout: Duration::from_secs(10),
        };
        let members = fleet.as_ref().map(|f| f.members.as_slice()).unwrap_or(&[]);
        let commits_before = Commits::now(client_rt, members);
        let blocks_before = fleet.as_ref().and_then(|f| writer_blocks(client_rt, &f.ch));
        let sampler = Sampler::start(pids.clone(), Duration::from_millis(50))?;
        let meter = cpu::Meter::start(cpu_pids.clone());
        let report = match rate {
            None => client_rt.block_on(loadgen::run(opts)),
            Some(r) => client_rt.block_on(loadgen::run_open(opts, r)),
        };
        let peaks = sampler.finish();
        cpu_used.push(meter.finish());
        commits.push(Commits::now(client_rt, members).since(&commits_before));
        let blocks_after = fleet.as_ref().and_then(|f| writer_blocks(client_rt, &f.ch));
        blocks.push(
            blocks_before
                .zip(blocks_after)
                .map(|(b, a)| (a.0 - b.0, a.1 - b.1)),
        );
        let report = report?;
        if let Some(o) = outage {
            let stopped = o.finish()?;
            eprintln!("ClickHouse was stopped for {:.1} s", stopped.as_secs_f64());
        }
        results.push((s, report));
        memory.push(peaks);
    }
    print_table(&results, args.connections, addrs.len());
    if !pids.is_empty() {
        print_memory(&results, &memory, &pids);
    }
    if fleet.is_some() {
        print_commits(&results, &commits);
        print_blocks(&results, &blocks);
    }
    print_cpu(
        &results,
        &cpu_used,
        cpu_pids.len() - 1 - usize::from(ch_pid.is_some()),
        ch_pid.is_some(),
    );

    let _ = bare_stop.send(());
    server_rt.block_on(bare_task)?;
    let ok = match fleet {
        Some(f) => {
            let ch = f.ch.clone();
            let ok = verify(server_rt, f, &results)?;
            if args.clickhouse_client {
                if let Some(store) = store {
                    client_baseline(server_rt, store, args, &ch, &results, run)?;
                }
            }
            // A managed server takes its data with it; on a server of yours, clean up after a
            // successful run and keep the evidence after a failed one.
            if ok && args.clickhouse_url.is_some() {
                let drop_db = sql!("DROP DATABASE IF EXISTS {}", ident(&ch.database)?);
                server_rt.block_on(ch.server_client().sql(&drop_db).execute())?;
            }
            ok
        }
        None => true,
    };
    Ok(RunOutcome {
        collectors: addrs.len(),
        results,
        ok,
    })
}

/// Each scenario's resident memory of the collectors (or of `veil-load` itself, holding the
/// in-process collectors).
fn print_memory(results: &[(Scenario, LoadReport)], memory: &[Vec<Peak>], pids: &[Option<u32>]) {
    let whose = if pids.iter().all(Option::is_none) {
        "the veil-load process (in-process collectors + load generator + bare server)"
    } else {
        "each `veil collector` process"
    };
    println!(
        "resident memory of {whose}, MB (sampled every 50 ms: max VmRSS / of it max RssAnon / VmRSS at the end / VmHWM at the end):"
    );
    for ((s, _), peaks) in results.iter().zip(memory) {
        let each: Vec<String> = peaks
            .iter()
            .map(|p| {
                format!(
                    "{:.1} / {:.1} / {:.1} / {:.1}",
                    rss::mb(p.max_rss_kb),
                    rss::mb(p.max_anon_kb),
                    rss::mb(p.last_rss_kb),
                    rss::mb(p.hwm_kb)
                )
            })
            .collect();
        println!("  {:<34} {}", s.label, each.join(", "));
    }
    println!();
}

/// Each scenario's CPU time per request answered, by process: `veil-load` (the load generator,
/// plus the bare server in the bare scenarios and the collectors when they run in-process),
/// the collector processes together, ClickHouse.
fn print_cpu(
    results: &[(Scenario, LoadReport)],
    used: &[Vec<Option<Duration>>],
    collector_processes: usize,
    clickhouse: bool,
) {
    println!(
        "CPU per request, µs (utime + stime from /proc/PID/stat over the scenario ÷ requests answered; events per request in brackets):"
    );
    let mut head = format!("  {:<34} {:>12}", "scenario", "veil-load");
    if collector_processes > 0 {
        head.push_str(&format!(" {:>12}", "collector(s)"));
    }
    if clickhouse {
        head.push_str(&format!(" {:>12}", "ClickHouse"));
    }
    println!("{head}");
    for ((s, r), cpu) in results.iter().zip(used) {
        let per = |d: &Option<Duration>| match d {
            Some(d) if r.requests > 0 => {
                format!("{:>12.1}", d.as_secs_f64() * 1e6 / r.requests as f64)
            }
            _ => format!("{:>12}", "-"),
        };
        let own = per(&cpu[0]);
        let collectors: Option<Duration> = if collector_processes > 0 {
            cpu[1..=collector_processes].iter().copied().sum()
        } else {
            None
        };
        let mut line = format!("  {:<34} {own}", s.label);
        if collector_processes > 0 {
            line.push_str(&format!(" {}", per(&collectors)));
        }
        if clickhouse {
            line.push_str(&format!(" {}", per(&cpu[cpu.len() - 1])));
        }
        let events = if r.requests > 0 {
            r.events as f64 / r.requests as f64
        } else {
            0.0
        };
        println!("{line}   [{events:.0}]");
    }
    println!();
}

/// The spool's commits during one scenario, from `veil_spool_commit_seconds` (summed over
/// the collectors): how long each group's write and `fdatasync` took, which every accepted
/// request waited for.
#[derive(Debug, Default, Clone, PartialEq)]
struct Commits {
    /// Cumulative counts by bucket upper bound (seconds; the last is infinite), ascending.
    buckets: Vec<(f64, u64)>,
    sum_seconds: f64,
    count: u64,
}

impl Commits {
    fn parse(text: &str) -> Self {
        let mut c = Self::default();
        let bucket = format!("{}_bucket", names::SPOOL_COMMIT);
        let sum = format!("{}_sum", names::SPOOL_COMMIT);
        let count = format!("{}_count", names::SPOOL_COMMIT);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.trim().rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            if name == bucket {
                let le = match label(labels, "le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(b) => match b.parse() {
                        Ok(b) => b,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                c.buckets.push((le, v as u64));
            } else if name == sum {
                c.sum_seconds = v;
            } else if name == count {
                c.count = v as u64;
            }
        }
        c.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        c
    }

    /// Every collector's, added up (a collector that could not be read adds nothing).
    fn now(rt: &Runtime, members: &[Member]) -> Self {
        let mut all = Self::default();
        for m in members {
            let text = match m {
                Member::InProcess { collector, .. } => {
                    veil_collector::metrics::render(collector.registry())
                }
                Member::Process(c) => {
                    match rt.block_on(loadgen::get(
                        c.metrics_addr,
                        "/metrics",
                        Duration::from_secs(5),
                    )) {
                        Ok((status, body)) if status.is_success() => {
                            String::from_utf8_lossy(&body).into_owned()
                        }
                        _ => String::new(),
                    }
                }
            };
            let one = Self::parse(&text);
            if all.buckets.is_empty() {
                all.buckets = one.buckets.iter().map(|(le, _)| (*le, 0)).collect();
            }
            for ((_, n), (_, m)) in all.buckets.iter_mut().zip(&one.buckets) {
                *n += m;
            }
            all.sum_seconds += one.sum_seconds;
            all.count += one.count;
        }
        all
    }

    /// What happened since `before`.
    fn since(&self, before: &Self) -> Self {
        let mut d = self.clone();
        for ((_, n), (_, b)) in d.buckets.iter_mut().zip(&before.buckets) {
            *n = n.saturating_sub(*b);
        }
        d.sum_seconds -= before.sum_seconds;
        d.count = d.count.saturating_sub(before.count);
        d
    }

    /// The upper bound of the bucket holding the `q` quantile (seconds; infinite past the last).
    fn quantile_bound(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q * self.count as f64).ceil().max(1.0) as u64;
        self.buckets
            .iter()
            .find(|(_, n)| *n >= rank)
            .map(|(le, _)| *le)
    }

    /// The share of commits that took longer than `bound` seconds (a bucket bound).
    fn share_over(&self, bound: f64) -> Option<f64> {
        let within = self.buckets.iter().find(|(le, _)| *le == bound)?.1;
        (self.count > 0).then(|| (self.count - within.min(self.count)) as f64 / self.count as f64)
    }
}

/// Each scenario's spool commits (see [`Commits`]).
fn print_commits(results: &[(Scenario, LoadReport)], commits: &[Commits]) {
    println!(
        "spool commits (veil_spool_commit_seconds: each group's write and, with fsync, its fdatasync; every request waits for one):"
    );
    println!(
        "  {:<34} {:>9} {:>13} {:>9} {:>9} {:>9} {:>9}",
        "scenario", "commits", "requests each", "mean ms", "p50 ≤ ms", "p99 ≤ ms", "> 5 ms"
    );
    let ms = |s: Option<f64>| match s {
        Some(s) if s.is_finite() => format!("{:.2}", s * 1e3),
        Some(_) => "> 1000".into(),
        None => "-".into(),
    };
    for ((s, r), c) in results.iter().zip(commits) {
        if !s.collector {
            continue;
        }
        let each = if c.count > 0 {
            format!("{:.1}", r.requests as f64 / c.count as f64)
        } else {
            "-".into()
        };
        let mean = (c.count > 0).then(|| c.sum_seconds / c.count as f64);
        let over = c
            .share_over(0.005)
            .map(|f| format!("{:.1} %", f * 100.0))
            .unwrap_or_else(|| "-".into());
        println!(
            "  {:<34} {:>9} {:>13} {:>9} {:>9} {:>9} {:>9}",
            s.label,
            c.count,
            each,
            ms(mean),
            ms(c.quantile_bound(0.5)),
            ms(c.quantile_bound(0.99)),
            over
        );
    }
    println!();
}

/// Times `clickhouse-client` inserting the rows the `/v1/events` scenario stored (exported from
/// `events` as RowBinary) into a copy of `events` without materialized views and into the
/// `events` of a freshly migrated database (with them), `--clickhouse-client-repeats` times
/// each, alternating, and prints the ratio of `/v1/events` to the median.
fn client_baseline(
    rt: &Runtime,
    store: &Store,
    args: &Args,
    ch: &ClickHouseConfig,
    results: &[(Scenario, LoadReport)],
    run: usize,
) -> anyhow::Result<()> {
    let Some((label, native)) = results
        .iter()
        .find(|(s, _)| matches!(s.workload, Workload::Native { .. }))
        .map(|(s, r)| (s.label.clone(), r))
    else {
        bail!("--clickhouse-client needs the /v1/events scenario (--mode all or native)");
    };
    let n = native.expected_stored;
    if n == 0 {
        bail!("the /v1/events scenario stored no rows to insert again");
    }
    let client = chclient::Client::new(
        &args.clickhouse_client_bin,
        store.tcp_port(args.clickhouse_tcp_port)?,
        ch.user.as_deref(),
        ch.password.as_deref(),
    )?;
    // The rows twice: ordered by time (ties in no particular order), as a client inserting
    // events as they happen sends them, and in the table's own order (site, day, visitor),
    // for which ClickHouse finds each block already sorted and skips its sort and the
    // permutation of every column — the cheapest insert there is, not what a collector sends.
    let rows = client.scratch().join("rows.bin");
    let table_ordered = client.scratch().join("rows-table-order.bin");
    let events = ident("events")?;
    for (file, order) in [
        (
            &rows,
            "timestamp, cityHash64(visitor_id, name, pathname, spool_token)",
        ),
        (
            &table_ordered,
            "site, toDate(timestamp), visitor_id, timestamp",
        ),
    ] {
        let export = client.run(
            &ch.database,
            &sql!(
                "SELECT * FROM {} ORDER BY {} LIMIT {} FORMAT RowBinary",
                events.clone(),
                Sql::new(order),
                n
            ),
            None,
            Some(file),
        )?;
        eprintln!(
            "exported {n} rows of events as RowBinary ordered by {order} in {:.2} s",
            export.wall.as_secs_f64()
        );
    }
    let bytes = std::fs::metadata(&rows).map(|m| m.len()).unwrap_or(0);
    let count = |c: &ClickHouseConfig, table: &Sql| -> anyhow::Result<u64> {
        rt.block_on(
            c.client()
                .sql(&sql!("SELECT count() FROM {}", table.clone()))
                .fetch_one::<u64>(),
        )
        .context("counting the inserted rows")
    };
    let copy = ident("events_copy")?;
    let mut plain = Vec::new();
    let mut plain_sorted = Vec::new();
    let mut with_views = Vec::new();
    let veil = if args.collector_processes {
        Some(veil_binary(args)?)
    } else {
        None
    };
    // The rows into `events` of a freshly migrated database (numbered `db`) without the views
    // named in `drop_views`, timed, checked and dropped again.
    let into_fresh_events = |db: usize, drop_views: &[&str]| -> anyhow::Result<chclient::Timed> {
        let fresh = rt.block_on(fresh_database(store, db, veil.as_deref()))?;
        for view in drop_views {
            let q = sql!("DROP TABLE {}", ident(view)?);
            rt.block_on(fresh.client().sql(&q).execute())
                .with_context(|| format!("dropping {view}"))?;
        }
        let t = client.run(
            &fresh.database,
            &sql!("INSERT INTO {} FORMAT RowBinary", events.clone()),
            Some(&rows),
            None,
        )?;
        let got = count(&fresh, &events)?;
        if got != n {
            bail!(
                "clickhouse-client inserted {got} rows into {}.events, expected {n}",
                fresh.database
            );
        }
        let drop_db = sql!("DROP DATABASE IF EXISTS {}", ident(&fresh.database)?);
        rt.block_on(fresh.server_client().sql(&drop_db).execute())?;
        Ok(t)
    };
    for rep in 0..args.clickhouse_client_repeats.max(1) {
        // A copy of the table: same columns, engine, partitioning and order; no view reads it.
        for (file, runs) in [(&rows, &mut plain), (&table_ordered, &mut plain_sorted)] {
            for q in [
                sql!("DROP TABLE IF EXISTS {}", copy.clone()),
                sql!("CREATE TABLE {} AS {}", copy.clone(), events.clone()),
            ] {
                rt.block_on(ch.client().sql(&q).execute())
                    .context("creating events_copy")?;
            }
            let t = client.run(
                &ch.database,
                &sql!("INSERT INTO {} FORMAT RowBinary", copy.clone()),
                Some(file),
                None,
            )?;
            let got = count(ch, &copy)?;
            if got != n {
                bail!("clickhouse-client inserted {got} rows into events_copy, expected {n}");
            }
            runs.push(t);
        }
        // The same rows into `events` of a fresh database: its materialized views run too.
        with_views.push(into_fresh_events(100 + run * 100 + rep, &[])?);
    }
    // Each view alone: a fresh database with the other two dropped.
    let mut one_view: Vec<(String, Vec<chclient::Timed>)> = Vec::new();
    if args.clickhouse_client_per_view {
        // The views the collectors' database has (the migrations of `--veil-bin`, which may
        // be another build than this harness's).
        let q = sql!(
            "SELECT name FROM system.tables WHERE database = {} AND engine = 'MaterializedView' \
             ORDER BY name",
            veil_schemas::sql::lit(&ch.database)
        );
        let views: Vec<String> = rt
            .block_on(ch.client().sql(&q).fetch_all::<String>())
            .context("listing the materialized views")?;
        let views: Vec<&str> = views.iter().map(String::as_str).collect();
        for (i, keep) in views.iter().enumerate() {
            let mut runs = Vec::new();
            let others: Vec<&str> = views.iter().copied().filter(|v| v != keep).collect();
            for rep in 0..args.clickhouse_client_repeats.max(1) {
                runs.push(into_fresh_events(1000 + run * 100 + i * 10 + rep, &others)?);
            }
            one_view.push((format!("into events with only {keep}"), runs));
        }
    }
    let stored_per_sec = native.expected_stored as f64 / native.elapsed.as_secs_f64().max(1e-9);
    println!(
        "clickhouse-client (native protocol, one INSERT … FORMAT RowBinary of {n} rows, {:.1} MB, from stdin), {} time(s) each, median:",
        bytes as f64 / 1e6,
        plain.len()
    );
    println!(
        "  {label}: {:.0} events/s acknowledged, {stored_per_sec:.0} of them rows to store/s",
        native.events_per_sec()
    );
    let mut tables: Vec<(String, &Vec<chclient::Timed>)> = vec![
        (
            "into events_copy (no materialized views), rows by time".into(),
            &plain,
        ),
        (
            "into events_copy, rows in the table's order (sort skipped)".into(),
            &plain_sorted,
        ),
        (
            "into events of a fresh database (its views), rows by time".into(),
            &with_views,
        ),
    ];
    tables.extend(one_view.iter().map(|(what, runs)| (what.clone(), runs)));
    for (what, runs) in tables {
        let q = chclient::median(runs.iter().map(chclient::Timed::best).collect());
        let w = chclient::median(runs.iter().map(|t| t.wall).collect());
        let each: Vec<String> = runs
            .iter()
            .map(|t| format!("{:.2}", t.best().as_secs_f64()))
            .collect();
        let per_sec = n as f64 / q.as_secs_f64().max(1e-9);
        println!(
            "  {what}: query {:.2} s (runs: {} s; process {:.2} s) = {per_sec:.0} rows/s; \
             /v1/events events/s ÷ rows/s = {:.2}, rows to store/s ÷ rows/s = {:.2}",
            q.as_secs_f64(),
            each.join(", "),
            w.as_secs_f64(),
            native.events_per_sec() / per_sec,
            stored_per_sec / per_sec
        );
    }
    println!();
    Ok(())
}

/// ClickHouse's counters of MergeTree blocks written and of those it found already in the
/// table's order (no sort, no permutation of the columns), server-wide since it started;
/// `None` when the server does not answer.
fn writer_blocks(rt: &Runtime, ch: &ClickHouseConfig) -> Option<(u64, u64)> {
    let q = Sql::new(
        "SELECT sumIf(value, event = 'MergeTreeDataWriterBlocks'), \
         sumIf(value, event = 'MergeTreeDataWriterBlocksAlreadySorted') FROM system.events",
    );
    rt.block_on(ch.client().sql(&q).fetch_one::<(u64, u64)>())
        .ok()
}

/// Per scenario: the blocks ClickHouse wrote (`events` and every view's table) and how many it
/// did not have to sort.
fn print_blocks(results: &[(Scenario, LoadReport)], blocks: &[Option<(u64, u64)>]) {
    println!();
    println!(
        "ClickHouse MergeTree blocks written during each scenario (events and its views' tables):"
    );
    for ((s, _), b) in results.iter().zip(blocks) {
        if let Some((written, sorted)) = b {
            println!(
                "  {:<34} {written:>8} written, {sorted:>8} already sorted ({:.0} %)",
                s.label,
                100.0 * *sorted as f64 / (*written).max(1) as f64
            );
        }
    }
}

/// The materialized views that read `events` on every insert (schemas/migrations 011, 013, 025).
const VIEWS: [&str; 3] = ["events_tail_mv", "events_hourly_mv", "events_daily_mv"];

/// The second run against the first, scenario by scenario (the bare server's ratio shows how
/// much the machine itself drifted between the two).
fn print_comparison(first: &RunOutcome, second: &RunOutcome) {
    let (a, b) = (first.collectors, second.collectors);
    println!();
    println!("{a} vs {b} collectors, measured in this invocation (ratio = {b} ÷ {a}):");
    println!(
        "{:<34} {:>12} {:>12} {:>6} {:>12} {:>12} {:>6} {:>9} {:>9}",
        "scenario",
        format!("req/s {a}c"),
        format!("req/s {b}c"),
        "ratio",
        format!("events/s {a}c"),
        format!("events/s {b}c"),
        "ratio",
        format!("p50 {a}c"),
        format!("p50 {b}c"),
    );
    for (s, r1) in &first.results {
        let Some((_, r2)) = second.results.iter().find(|(t, _)| t.label == s.label) else {
            continue;
        };
        println!(
            "{:<34} {:>12.0} {:>12.0} {:>6} {:>12.0} {:>12.0} {:>6} {:>9.2} {:>9.2}",
            s.label,
            r1.requests_per_sec(),
            r2.requests_per_sec(),
            ratio(r2.requests_per_sec(), Some(r1.requests_per_sec())),
            r1.events_per_sec(),
            r2.events_per_sec(),
            ratio(r2.events_per_sec(), Some(r1.events_per_sec())),
            ms(r1.percentile(50.0)),
            ms(r2.percentile(50.0)),
        );
    }
    println!(
        "verified: {a} collector(s) {}, {b} collector(s) {}",
        if first.ok { "OK" } else { "MISMATCH" },
        if second.ok { "OK" } else { "MISMATCH" }
    );
    println!();
}

fn run(args: &Args) -> anyhow::Result<bool> {
    if args.connections == 0 || args.duration == 0 || args.batch_size == 0 || args.collectors == 0 {
        bail!("--connections, --duration, --batch-size and --collectors must be above 0");
    }
    for (flag, v) in [("--rate", args.rate), ("--open-loop-at", args.open_loop_at)] {
        if v.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
            bail!("{flag} must be a positive number");
        }
    }
    if args.open_loop_at.is_some() && !matches!(args.mode, Mode::All | Mode::Plausible) {
        bail!("--open-loop-at needs the closed-loop /api/event scenario (--mode all or plausible)");
    }
    if !args.collector_arg.is_empty() && !args.collector_processes {
        bail!("--collector-arg is for `veil collector` processes: add --collector-processes");
    }
    if args.outage.is_some() && args.clickhouse_url.is_some() {
        bail!("--outage stops the managed ClickHouse: it cannot be used with --clickhouse-url");
    }
    let needs_collector = args.mode != Mode::Bare;
    if args.compare_collectors && !needs_collector {
        bail!("--compare-collectors needs a mode with collectors (not --mode bare)");
    }
    if args.collectors > args.connections {
        bail!(
            "--collectors {} would leave some collectors without a connection (--connections {})",
            args.collectors,
            args.connections
        );
    }
    check_mix()?;
    // Before any runtime exists: the managed server's parent-death signal follows this thread.
    let store = if needs_collector {
        Some(Store::open(args.clickhouse_url.as_deref())?)
    } else {
        None
    };
    if args.clickhouse_nice != 0 {
        let pid = store
            .as_ref()
            .and_then(Store::clickhouse_pid)
            .context("--clickhouse-nice needs the managed ClickHouse")?;
        renice_all_threads(pid, args.clickhouse_nice)?;
        eprintln!(
            "managed ClickHouse (pid {pid}) reniced by {}",
            args.clickhouse_nice
        );
    }

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

    let plan = if args.compare_collectors {
        vec![1, args.collectors.max(2)]
    } else {
        vec![args.collectors]
    };
    let mut outcomes = Vec::with_capacity(plan.len());
    for (run, n) in plan.into_iter().enumerate() {
        if run > 0 {
            std::thread::sleep(Duration::from_secs(2));
        }
        eprintln!("run {}: {n} collector(s)", run + 1);
        outcomes.push(run_once(
            args,
            store.as_ref(),
            &server_rt,
            &client_rt,
            n,
            run,
        )?);
    }
    if let [first, second] = outcomes.as_slice() {
        print_comparison(first, second);
    }
    drop(client_rt);
    drop(server_rt);
    drop(store);
    Ok(outcomes.iter().all(|o| o.ok))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `--clickhouse-client-per-view` names every view that reads `events`, and only those.
    #[test]
    fn the_views_on_the_insert_path_are_the_migrations() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/migrations");
        let (mut found, mut dropped) = (Vec::new(), Vec::new());
        for e in std::fs::read_dir(dir).unwrap() {
            let sql = std::fs::read_to_string(e.unwrap().path()).unwrap();
            for stmt in sql.split(';') {
                if let Some(rest) = stmt.split("DROP TABLE IF EXISTS ").nth(1) {
                    dropped.push(rest.split_whitespace().next().unwrap().to_string());
                }
                let Some(rest) = stmt.split("CREATE MATERIALIZED VIEW IF NOT EXISTS ").nth(1)
                else {
                    continue;
                };
                let name = rest.split_whitespace().next().unwrap().to_string();
                let words: Vec<&str> = stmt.split_whitespace().collect();
                if words.windows(2).any(|w| w == ["FROM", "events"]) {
                    found.push(name);
                }
            }
        }
        found.retain(|v| !dropped.contains(v));
        found.sort();
        let mut want: Vec<String> = VIEWS.iter().map(|v| v.to_string()).collect();
        want.sort();
        assert_eq!(found, want);
    }

    #[test]
    fn counters_from_prometheus_text() {
        let text = "\
# HELP veil_events_accepted_total Events queued for storage
# TYPE veil_events_accepted_total counter
veil_events_accepted_total{endpoint=\"native\"} 120
veil_events_accepted_total{endpoint=\"plausible\"} 30
veil_events_dropped_total{reason=\"bot_crawler\"} 7
veil_events_dropped_total{reason=\"consent\"} 0
veil_events_written_total 150
veil_ua_cache_hits_total 99
veil_ua_cache_misses_total 1
veil_http_requests_total{route=\"/api/event\",status=\"202\"} 30
";
        let c = Counters::parse(text);
        assert_eq!(c.accepted, 150);
        assert_eq!(c.written, 150);
        assert_eq!((c.ua_hits, c.ua_misses), (99, 1));
        assert_eq!(c.dropped_by_reason(), "bot_crawler=7");
        let mut sum = c.clone();
        sum.add(&c);
        assert_eq!(sum.accepted, 300);
        assert_eq!(sum.dropped["bot_crawler"], 14);
        assert_eq!(Counters::default().dropped_by_reason(), "none");
    }

    #[test]
    fn counters_match_the_collectors_rendering() {
        let registry = Registry::new();
        let m = veil_collector::metrics::Metrics::new(&registry).unwrap();
        m.events_accepted
            .with_label_values(&["plausible"])
            .inc_by(5);
        m.events_written.inc_by(4);
        m.dropped(veil_collector::metrics::DropReason::Consent, 2);
        let c = Counters::parse(&veil_collector::metrics::render(&registry));
        assert_eq!((c.accepted, c.written), (5, 4));
        assert_eq!(c.dropped_by_reason(), "consent=2");
    }

    #[test]
    fn spool_commits_of_a_scenario_from_the_collectors_rendering() {
        let registry = Registry::new();
        let m = veil_collector::metrics::Metrics::new(&registry).unwrap();
        m.spool_commit.observe(0.0002);
        let before = Commits::parse(&veil_collector::metrics::render(&registry));
        assert_eq!(before.count, 1);
        // The scenario: 97 fast commits, two of 8 ms (a busy interrupt CPU), one of 2 s.
        for _ in 0..97 {
            m.spool_commit.observe(0.00009);
        }
        m.spool_commit.observe(0.008);
        m.spool_commit.observe(0.008);
        m.spool_commit.observe(2.0);
        let d = Commits::parse(&veil_collector::metrics::render(&registry)).since(&before);
        assert_eq!(d.count, 100);
        assert!((d.sum_seconds - (97.0 * 0.00009 + 0.016 + 2.0)).abs() < 1e-9);
        assert_eq!(d.quantile_bound(0.5), Some(0.0001));
        assert_eq!(d.quantile_bound(0.98), Some(0.01));
        assert_eq!(d.quantile_bound(0.99), Some(0.01));
        assert_eq!(d.quantile_bound(1.0), Some(f64::INFINITY));
        assert_eq!(d.share_over(0.005), Some(0.03));
        assert_eq!(Commits::default().quantile_bound(0.5), None);
    }
}
