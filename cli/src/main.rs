//! `veil`: the one binary. Thin: parses the command line, loads and validates settings, and
//! calls the libraries (`veil-collector`, `veil-aggregator`, `veil-dashboards`, `veil-schemas`).

#[macro_use]
mod layer;

mod app;
mod cluster;
mod config;
mod gen;
mod geoip;
mod people;

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::net::TcpListener;
use veil_aggregator::retention::{erase_site, purge};
use veil_aggregator::Aggregator;
use veil_collector::server::{serve, shutdown_signal, ServerOptions};
use veil_collector::Collector;
use veil_schemas::managed::{ManagedClickHouse, ManagedOptions};

use crate::app::VeilApp;
use crate::config::{Cli, Command, Settings};

fn main() {
    // Panic messages can carry data; print where, never what.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("veil: internal error at {at} (details withheld: they may contain request data)");
    }));
    let cli = Cli::parse();
    if let Err(e) = real_main(cli) {
        eprintln!("veil: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(cli: Cli) -> Result<()> {
    let settings = Settings::load(cli.opts, &cli.command)?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&settings.log)
                .context("--log is not a valid filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    if let Command::CheckConfig = cli.command {
        println!("{}", serde_json::to_string_pretty(&settings)?);
        return Ok(());
    }
    if let Command::Cluster(args) = &cli.command {
        return cluster::run(&settings, args);
    }
    if let Command::Geoip(cmd) = &cli.command {
        return geoip::run(&settings, cmd);
    }
    // The managed ClickHouse is started from the main thread, which lives as long as the
    // process: its parent-death signal then fires only when veil itself ends.
    let mut managed = None;
    let mut settings = settings;
    let needs_managed = matches!(
        cli.command,
        Command::Up { .. }
            | Command::Gen(_)
            | Command::User(_)
            | Command::Key(_)
            | Command::Import(_)
    );
    if let (true, None) = (needs_managed, &settings.clickhouse_url) {
        let dir = settings.data_dir.join("clickhouse");
        let opts = ManagedOptions::new(dir.clone());
        let database = settings.clickhouse.database.clone();
        let cluster = settings.clickhouse.cluster.take();
        // `veil user`/`veil key` use the running `veil up`'s server when there is one (two
        // servers on one data dir would corrupt it).
        let running = matches!(
            cli.command,
            Command::User(_) | Command::Key(_) | Command::Import(_)
        )
        .then(|| running_managed(&dir))
        .flatten();
        if let Some(url) = running {
            let password = veil_schemas::managed::load_or_create_password(&opts.password_file)?;
            settings.clickhouse = veil_schemas::ClickHouseConfig::new(url, database);
            settings.clickhouse.user = Some("default".into());
            settings.clickhouse.password = Some(password);
        } else {
            eprintln!("veil: starting managed ClickHouse under {}", dir.display());
            let server = ManagedClickHouse::start(&opts)?;
            eprintln!(
                "veil: its user is `default`, its password in {} (mode 0600)",
                opts.password_file.display()
            );
            // The managed server's own user, whatever --clickhouse-user/-password say.
            settings.clickhouse = server.config(database);
            managed = Some(server);
        }
        settings.clickhouse.cluster = cluster;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(run(cli.command, settings));
    drop(rt);
    if let Some(mut m) = managed {
        eprintln!("veil: stopping managed ClickHouse");
        m.stop();
    }
    result
}

/// The URL of the managed ClickHouse already serving `dir` (its config names the port and it
/// answers a ping), if any.
fn running_managed(dir: &std::path::Path) -> Option<String> {
    let cfg = std::fs::read_to_string(dir.join("config.xml")).ok()?;
    let port: u16 = cfg
        .split_once("<http_port>")?
        .1
        .split_once("</http_port>")?
        .0
        .trim()
        .parse()
        .ok()?;
    veil_schemas::managed::ping_blocking(port).then(|| format!("http://127.0.0.1:{port}"))
}

/// Loads the site registry once before the first question is answered: until then a site's
/// stored settings (its time zone, goals, k) are unknown and a question would be answered with
/// the flags' defaults. A failure is logged; the refresh loop keeps trying.
async fn loaded_registry(aggregator: &Aggregator) {
    if let Err(e) = aggregator.registry().refresh().await {
        tracing::warn!(error = %e, "could not load the site registry before serving; retrying in the background");
    }
}

/// The line telling how to set up the owner, when the deployment has no owner and no admin
/// token (the one-time setup link is made now).
async fn setup_line(aggregator: &Aggregator, base: &str) -> Result<Option<String>> {
    let path = aggregator
        .setup_link()
        .await
        .context("making the first-run setup link")?;
    Ok(path.map(|path| {
        format!(
            "No owner yet: open {base}{path} within 24 hours to set the owner's e-mail and password \
             (or run `veil user create --email YOU --role owner`)."
        )
    }))
}

/// The aggregator's scheduled work, for as long as the process runs: the rollup job (closed
/// days' visits, hourly-rollup health) every 10 minutes; retention purge and salt cleanup
/// (salts older than yesterday) every hour.
fn spawn_retention(s: &Settings) {
    use veil_collector::pipeline::privacy::salts::{ClickHouseSaltStore, SaltStore};
    let ch = s.clickhouse.clone();
    let retention = s.aggregator.retention.clone();
    tokio::spawn(async move {
        let salts = ClickHouseSaltStore::new(&ch);
        for tick in 0u64.. {
            match veil_aggregator::rollup::run(&ch, 35).await {
                Ok(r) if r.visit_days.is_empty() && r.hourly_days.is_empty() => {}
                Ok(r) => {
                    tracing::info!(visits = ?r.visit_days, hourly = ?r.hourly_days, "rollups rebuilt")
                }
                Err(e) => tracing::warn!(error = %e, "rollup job failed; retrying in 10 minutes"),
            }
            if tick % 6 == 0 {
                let today = chrono::Utc::now().date_naive();
                match purge(&ch, &retention, today).await {
                    Ok(r) if r.dropped_partitions.is_empty() && r.deleted_rows.is_empty() => {}
                    Ok(r) => {
                        tracing::info!(partitions = ?r.dropped_partitions, rows = ?r.deleted_rows, "retention purge")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "retention purge failed; retrying in an hour")
                    }
                }
                if let Err(e) = salts.delete_before(today - chrono::Duration::days(1)).await {
                    tracing::warn!(error = %e, "salt cleanup failed; retrying in an hour");
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(600)).await;
        }
    });
}

/// Where Prometheus scrapes the collector (`metrics http://ADDR/metrics`), or `metrics off`.
fn metrics_line(metrics: Option<&TcpListener>) -> Result<String> {
    Ok(match metrics {
        Some(l) => format!("metrics http://{}/metrics", l.local_addr()?),
        None => "metrics off".into(),
    })
}

async fn bind(settings: &Settings) -> Result<TcpListener> {
    TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding --listen {}", settings.listen))
}

async fn run(command: Command, s: Settings) -> Result<()> {
    match command {
        Command::CheckConfig | Command::Cluster(_) | Command::Geoip(_) => Ok(()),
        Command::User(cmd) => people::user(&s.clickhouse, &s, &cmd).await,
        Command::Key(cmd) => people::key(&s.clickhouse, &s, &cmd).await,
        Command::Import(cmd) => people::import(&s.clickhouse, &s, &cmd).await,
        Command::Purge => {
            let report = purge(
                &s.clickhouse,
                &s.aggregator.retention,
                chrono::Utc::now().date_naive(),
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::EraseSite { domain } => {
            let domain = veil_collector::sites::normalize_domain(&domain)
                .with_context(|| format!("{domain:?} is not a domain name"))?;
            let report = erase_site(&s.clickhouse, &domain).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Migrate => {
            let applied = veil_schemas::migrate(&s.clickhouse).await?;
            println!(
                "applied {} migration(s) to {}",
                applied.len(),
                s.clickhouse.database
            );
            Ok(())
        }
        Command::Collector => {
            veil_schemas::migrate(&s.clickhouse)
                .await
                .context("applying migrations")?;
            let listener = bind(&s).await?;
            let metrics = veil_collector::bind_metrics(&s.collector.metrics).await?;
            eprintln!(
                "veil: collector listening on http://{}",
                listener.local_addr()?
            );
            eprintln!("veil: {}", metrics_line(metrics.as_ref())?);
            veil_collector::run(
                s.collector,
                s.clickhouse,
                listener,
                metrics,
                shutdown_signal(),
            )
            .await?;
            Ok(())
        }
        Command::Aggregator => {
            let listener = bind(&s).await?;
            spawn_retention(&s);
            let public = s.aggregator.public_url.clone();
            let aggregator = Aggregator::new(s.aggregator, s.clickhouse);
            loaded_registry(&aggregator).await;
            // Weekly digests, when e-mail is configured (--smtp-url).
            let _digests = veil_aggregator::digest::start(&aggregator);
            let addr = listener.local_addr()?;
            let base = public.unwrap_or_else(|| format!("http://{addr}"));
            // The setup line first: `veil cluster` waits for the next one, then shows it.
            if let Some(line) = setup_line(&aggregator, base.trim_end_matches('/')).await? {
                println!("{line}");
            }
            eprintln!("veil: aggregator and dashboard on http://{addr}/");
            let app = Arc::new(VeilApp {
                collector: None,
                guard: aggregator.guard(addr),
                aggregator,
            });
            let opts = ServerOptions {
                shutdown_timeout: s.collector.shutdown_timeout,
                ..ServerOptions::default()
            };
            serve(listener, app, opts, shutdown_signal()).await;
            Ok(())
        }
        Command::Gen(args) => gen::run(&s, &args).await,
        Command::Up { demo } => {
            veil_schemas::migrate(&s.clickhouse)
                .await
                .context("applying migrations")?;
            if demo {
                gen::demo(&s).await?;
            }
            let listener = bind(&s).await?;
            let metrics = veil_collector::bind_metrics(&s.collector.metrics).await?;
            spawn_retention(&s);
            let collector = Collector::start(
                s.collector.clone(),
                s.clickhouse.clone(),
                prometheus::Registry::new(),
            )
            .await?;
            // One site registry (and one refresh loop) for both roles.
            let aggregator = match collector.sites().store() {
                Some(r) => {
                    Aggregator::with_registry(s.aggregator.clone(), s.clickhouse.clone(), r.clone())
                }
                None => Aggregator::new(s.aggregator.clone(), s.clickhouse.clone()),
            };
            loaded_registry(&aggregator).await;
            // Weekly digests, when e-mail is configured (--smtp-url).
            let _digests = veil_aggregator::digest::start(&aggregator);
            let app = Arc::new(VeilApp {
                collector: Some(collector.clone()),
                guard: aggregator.guard(listener.local_addr()?),
                aggregator,
            });
            let addr = listener.local_addr()?;
            let base = s
                .aggregator
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{addr}"));
            let setup = setup_line(&app.aggregator, base.trim_end_matches('/')).await?;
            // The setup line first: whoever waits for "Veil is running" finds it printed.
            if let Some(line) = &setup {
                println!("{line}");
            }
            println!(
                "Veil is running: dashboard http://{addr}/  ingest http://{addr}/api/event  {}",
                metrics_line(metrics.as_ref())?
            );
            if demo {
                println!("Demo site: {}", gen::demo_url(addr));
                println!("Demo app: {}", gen::demo_app_url(addr));
            }
            println!("{}", collector.geo_status());
            if collector.sites().list().is_empty() {
                println!("No site is registered yet: restart with --site example.com, or add one with POST /api/v1/sites (see README).");
            }
            veil_collector::serve_with_metrics(
                &collector,
                listener,
                app,
                metrics,
                shutdown_signal(),
            )
            .await?;
            let flushed = tokio::task::spawn_blocking(move || collector.finish()).await?;
            if !flushed {
                anyhow::bail!("shutdown deadline passed before the last batch was written");
            }
            Ok(())
        }
    }
}
