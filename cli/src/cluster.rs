//! `veil cluster`: a whole Veil deployment on one machine, for demos and tests of cluster mode.
//!
//! Starts ZooKeeper and a `--shards` × `--replicas` ClickHouse cluster on loopback
//! ([`veil_schemas::local_cluster::LocalCluster`], under `DATA_DIR/cluster`), applies the migrations
//! in cluster mode, then runs `--collectors` `veil collector` processes (collector *i* talks to
//! node *i* of the cluster, round-robin, and spools under `DATA_DIR/cluster/collector-i`) on
//! the ports after `--listen`'s (their metrics listeners on the ports from `--metrics-listen`'s
//! on, or none when it is `off`), and one `veil aggregator` on `--listen`. Every other setting
//! given on the command line, in the environment or in `--config` is passed on to them, but
//! the ClickHouse user and password: the cluster's nodes take the password generated under
//! `DATA_DIR/cluster/password`, which the children get in their environment
//! (`VEIL_CLICKHOUSE_USER`, `VEIL_CLICKHOUSE_PASSWORD`), never on a command line.
//!
//! Ctrl-C (or SIGTERM) stops it in order: collectors and aggregator first (they drain and
//! flush), then ClickHouse, then ZooKeeper. Children run in their own process groups so the
//! terminal's Ctrl-C reaches only this process; they also get SIGTERM if it dies.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use veil_schemas::local_cluster::{zookeeper_jar, ClusterOptions, LocalCluster};

use crate::config::{ClusterArgs, Settings};

/// Flags `veil cluster` sets itself for its children (and so drops from its own arguments).
const OWN_FLAGS: &[&str] = &[
    "--listen",
    "--metrics-listen",
    "--data-dir",
    "--clickhouse-url",
    "--clickhouse-cluster",
    "--clickhouse-user",
    "--clickhouse-password",
    "--collectors",
    "--shards",
    "--replicas",
];

/// The command line minus the subcommand and the flags this command sets per child.
fn passed_on_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_value = false;
    let mut seen_subcommand = false;
    for a in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        if !seen_subcommand && a == "cluster" {
            seen_subcommand = true;
            continue;
        }
        if let Some(f) = OWN_FLAGS
            .iter()
            .find(|f| a == *f || a.starts_with(&format!("{f}=")))
        {
            skip_value = a == f;
            continue;
        }
        out.push(a.clone());
    }
    out
}

#[allow(unsafe_code)]
fn spawn_child(
    role: &str,
    extra: &[String],
    passed: &[String],
    password: &str,
    log: &Path,
) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding the veil executable")?;
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(exe);
    cmd.arg(role)
        .args(passed)
        .args(extra)
        .env("VEIL_CLICKHOUSE_USER", veil_schemas::managed::USER)
        .env("VEIL_CLICKHOUSE_PASSWORD", password)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().with_context(|| format!("starting veil {role}"))
}

#[allow(unsafe_code)]
fn stop_children(children: &mut [(String, Child)], wait: Duration) {
    for (_, c) in children.iter_mut() {
        if let Ok(pid) = i32::try_from(c.id()) {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + wait;
    for (name, c) in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    eprintln!("veil: {name} did not stop in time; killing it");
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// Runs the local cluster until Ctrl-C or SIGTERM. Called from the main thread (the children's
/// parent-death signal is tied to the thread that spawned them).
pub fn run(settings: &Settings, args: &ClusterArgs) -> Result<()> {
    if zookeeper_jar().is_none() {
        anyhow::bail!(
            "ZooKeeper is not installed. Run `./scripts/install-deps.sh --cluster` \
             (or `sudo apt-get install -y zookeeper default-jre-headless`)"
        );
    }
    anyhow::ensure!(args.collectors >= 1, "--collectors must be at least 1");
    let base = settings.data_dir.join("cluster");
    let mut opts = ClusterOptions::new(&base);
    opts.shards = args.shards;
    opts.replicas = args.replicas;
    opts.own_process_group = true;
    eprintln!(
        "veil: starting ZooKeeper and {}×{} ClickHouse under {}",
        args.shards,
        args.replicas,
        base.display()
    );
    let mut cluster = LocalCluster::start(&opts)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let ch = cluster.config(0, &settings.clickhouse.database);
    let applied = rt
        .block_on(veil_schemas::migrate(&ch))
        .context("applying migrations to the cluster")?;
    eprintln!(
        "veil: {} migration(s) applied on the cluster",
        applied.len()
    );

    let passed = passed_on_args(&std::env::args().skip(1).collect::<Vec<_>>());
    let urls = cluster.urls();
    let common = |url: &str| {
        vec![
            "--clickhouse-url".to_string(),
            url.to_string(),
            "--clickhouse-cluster".to_string(),
            cluster.name().to_string(),
        ]
    };
    let mut children: Vec<(String, Child)> = Vec::new();
    let start = (|| -> Result<()> {
        let mut ingest = Vec::new();
        for i in 0..args.collectors {
            let port = settings
                .listen
                .port()
                .checked_add(1 + u16::try_from(i)?)
                .context("--listen port too high for the collectors after it")?;
            let addr = std::net::SocketAddr::new(settings.listen.ip(), port);
            let dir = base.join(format!("collector-{}", i + 1));
            std::fs::create_dir_all(&dir)?;
            let metrics = match settings.collector.metrics.listen {
                // Port 0: each collector gets a free port of its own.
                Some(m) if m.port() == 0 => m.to_string(),
                Some(m) => std::net::SocketAddr::new(
                    m.ip(),
                    m.port()
                        .checked_add(u16::try_from(i)?)
                        .context("--metrics-listen port too high for every collector")?,
                )
                .to_string(),
                None => "off".into(),
            };
            let mut extra = common(&urls[i % urls.len()]);
            extra.extend([
                "--listen".into(),
                addr.to_string(),
                "--metrics-listen".into(),
                metrics.clone(),
                "--data-dir".into(),
                dir.display().to_string(),
            ]);
            let log = dir.join("veil.log");
            children.push((
                format!("collector {}", i + 1),
                spawn_child("collector", &extra, &passed, cluster.password(), &log)?,
            ));
            ingest.push(match metrics.as_str() {
                "off" => format!("http://{addr}/api/event"),
                m => format!("http://{addr}/api/event  metrics http://{m}/metrics"),
            });
        }
        let dir = base.join("aggregator");
        std::fs::create_dir_all(&dir)?;
        let mut extra = common(&urls[urls.len().saturating_sub(1)]);
        extra.extend([
            "--listen".into(),
            settings.listen.to_string(),
            "--data-dir".into(),
            dir.display().to_string(),
        ]);
        children.push((
            "aggregator".into(),
            spawn_child(
                "aggregator",
                &extra,
                &passed,
                cluster.password(),
                &dir.join("veil.log"),
            )?,
        ));
        let setup = setup_line(&dir.join("veil.log"));
        println!("Veil cluster is running (Ctrl-C stops it):");
        println!("  dashboard and Stats API  http://{}/", settings.listen);
        for u in &ingest {
            println!("  collector                {u}");
        }
        for n in cluster.nodes() {
            println!(
                "  ClickHouse shard {} replica {}  {}",
                n.shard,
                n.replica,
                n.url()
            );
        }
        println!(
            "  ZooKeeper                127.0.0.1:{}",
            cluster.zookeeper_port()
        );
        println!("  logs                     {}/*/veil.log", base.display());
        if let Some(line) = setup {
            println!("{line}");
        }
        Ok(())
    })();
    if let Err(e) = start {
        stop_children(&mut children, Duration::from_secs(10));
        cluster.stop();
        return Err(e);
    }
    // Wait for Ctrl-C / SIGTERM, or for a child to end on its own.
    let ended = rt.block_on(async {
        let signal = veil_collector::server::shutdown_signal();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                () = &mut signal => return None,
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    for (name, c) in children.iter_mut() {
                        if let Ok(Some(status)) = c.try_wait() {
                            return Some(format!("{name} exited ({status})"));
                        }
                    }
                }
            }
        }
    });
    eprintln!("veil: stopping collectors and aggregator");
    stop_children(
        &mut children,
        settings.collector.shutdown_timeout + Duration::from_secs(5),
    );
    eprintln!("veil: stopping ClickHouse and ZooKeeper");
    cluster.stop();
    match ended {
        Some(why) => anyhow::bail!("{why}; see {}/*/veil.log", base.display()),
        None => Ok(()),
    }
}

/// The aggregator's first-run setup line (the deployment has no owner yet), read from its log
/// once it says it serves (at most 60 s); `None` when it has an owner or an admin token.
fn setup_line(log: &Path) -> Option<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("aggregator and dashboard on") || std::time::Instant::now() > deadline {
            return text
                .lines()
                .find(|l| l.starts_with("No owner yet:"))
                .map(str::to_string);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_flags_are_not_passed_on() {
        let a: Vec<String> = [
            "--site",
            "a.com",
            "cluster",
            "--listen",
            "127.0.0.1:9000",
            "--metrics-listen",
            "127.0.0.1:9500",
            "--data-dir=/x",
            "--collectors",
            "3",
            "--min-visitors",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            passed_on_args(&a),
            vec!["--site", "a.com", "--min-visitors", "2"]
        );
    }
}
