//! `veil-ingest-profile`: a fixed, deterministic amount of ingest work for a profiler
//! (`valgrind --tool=callgrind`), without HTTP or ClickHouse.
//!
//! It assembles an in-process collector (the mix's sites, spool with durability `none` in a
//! temp dir, a sink that discards rows), sends `--plausible N` `POST /api/event` requests (256
//! at a time, on one current-thread runtime) and `--native M` `POST /v1/events` batches of
//! `--batch-size` events (16 at a time) through `Collector::handle`, checks every answer is
//! `202`, then stops the collector, which waits until the writer thread has read, decoded and
//! handed every spooled row to the sink. Inputs are `veil_benches::traffic` with a fixed seed,
//! so two runs of the same build execute the same instructions (up to thread interleaving in
//! the spool's group commit): callgrind's instruction counts are comparable across builds even
//! on a busy machine, unlike timings.
//!
//! ```sh
//! valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!     target/release/veil-ingest-profile --plausible 20000 --native 400
//! callgrind_annotate --inclusive=yes cg.out | head -60
//! ```
//!
//! Prints the events sent, accepted and written (from the collector's metrics).

use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use http::{header, Request, StatusCode};
use prometheus::Registry;
use veil_benches::traffic::{NativeBatch, PlausibleHit, Rng};
use veil_collector::pipeline::sink::{RowBatch, Sink, SinkFactory};
use veil_collector::pipeline::spool::Durability;
use veil_collector::pipeline::Pipeline;
use veil_collector::{Collector, CollectorConfig, SystemClock};

#[derive(Parser)]
#[command(about = "Fixed ingest work for a profiler (no HTTP, no ClickHouse)")]
struct Args {
    /// `POST /api/event` requests (one event each).
    #[arg(long, default_value_t = 20_000)]
    plausible: usize,
    /// `POST /v1/events` requests.
    #[arg(long, default_value_t = 400)]
    native: usize,
    /// Events per `/v1/events` request.
    #[arg(long, default_value_t = 50)]
    batch_size: usize,
    /// Seed of the traffic mix.
    #[arg(long, default_value_t = 11)]
    seed: u64,
}

/// Counts the rows handed to it and drops them.
struct Discard;

impl Sink for Discard {
    fn write(&mut self, _rows: &RowBatch) -> Result<(), veil_collector::Error> {
        Ok(())
    }
}

fn plausible_request(hit: PlausibleHit) -> Request<Bytes> {
    let mut r = Request::new(hit.body);
    *r.method_mut() = http::Method::POST;
    *r.uri_mut() = http::Uri::from_static("/api/event");
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    h.insert(
        header::USER_AGENT,
        http::HeaderValue::from_static(hit.user_agent),
    );
    if let Ok(v) = http::HeaderValue::from_str(&hit.forwarded_for) {
        h.insert("x-forwarded-for", v);
    }
    if hit.gpc {
        h.insert("sec-gpc", http::HeaderValue::from_static("1"));
    }
    r
}

fn native_request(batch: NativeBatch) -> Request<Bytes> {
    let mut r = Request::new(batch.body);
    *r.method_mut() = http::Method::POST;
    *r.uri_mut() = http::Uri::from_static("/v1/events");
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Sends `reqs` concurrently and fails unless every answer is 202.
async fn send_all(collector: &Collector, reqs: Vec<Request<Bytes>>) -> anyhow::Result<()> {
    let mut set = tokio::task::JoinSet::new();
    for req in reqs {
        let c = collector.clone();
        set.spawn(async move { c.handle(req).await.map(|r| r.status()) });
    }
    while let Some(r) = set.join_next().await {
        let status = r.context("a request task panicked")?;
        if status != Some(StatusCode::ACCEPTED) {
            bail!("answered {status:?}, not 202");
        }
    }
    Ok(())
}

/// The sum of a counter's series in the registry's Prometheus text.
fn metric_sum(registry: &Registry, name: &str) -> u64 {
    veil_collector::metrics::render(registry)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.trim().rsplit_once(' ')?;
            let metric = series.split_once('{').map_or(series, |(n, _)| n);
            (metric == name).then(|| value.parse::<f64>().ok())?
        })
        .map(|v| v as u64)
        .sum()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let spool = tempfile::Builder::new()
        .prefix("veil-ingest-profile-")
        .tempdir()?;
    let mut config = CollectorConfig {
        sites: veil_benches::traffic::REGISTERED_SITES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ..CollectorConfig::default()
    };
    config.spool.dir = spool.path().to_path_buf();
    config.spool.durability = Durability::None;
    config.limits.rate_limit_ip = 0;
    let pipeline = Pipeline::with_key(
        Arc::new(config.registry()),
        config.limits.clone(),
        [0x5a; 32],
    );
    let factory: SinkFactory = Box::new(|| Ok(Box::new(Discard) as Box<dyn Sink>));
    let registry = Registry::new();
    let collector = rt.block_on(async {
        Collector::assemble(
            config,
            pipeline,
            factory,
            None,
            registry.clone(),
            Arc::new(SystemClock),
        )
    })?;

    let mut rng = Rng::new(args.seed);
    let hits: Vec<PlausibleHit> = (0..args.plausible)
        .map(|_| PlausibleHit::random(&mut rng))
        .collect();
    let batches: Vec<NativeBatch> = (0..args.native)
        .map(|_| NativeBatch::random(&mut rng, args.batch_size))
        .collect();
    rt.block_on(async {
        for chunk in hits.chunks(256) {
            send_all(
                &collector,
                chunk.iter().cloned().map(plausible_request).collect(),
            )
            .await?;
        }
        for chunk in batches.chunks(16) {
            send_all(
                &collector,
                chunk.iter().cloned().map(native_request).collect(),
            )
            .await?;
        }
        anyhow::Ok(())
    })?;
    let drained = collector.finish();
    let accepted = metric_sum(&registry, "veil_events_accepted_total");
    let written = metric_sum(&registry, "veil_events_written_total");
    println!(
        "sent {} requests ({} events); accepted {accepted}, written {written}, drained {drained}",
        args.plausible + args.native,
        args.plausible + args.native * args.batch_size,
    );
    if !drained || accepted != written {
        bail!("not every accepted event was written");
    }
    Ok(())
}
