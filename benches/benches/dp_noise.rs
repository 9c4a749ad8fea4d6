//! Criterion micro-benchmarks of differential privacy's CPU work in the aggregator (issue 15),
//! without ClickHouse: what a dp answer adds to the SQL it runs.
//!
//! | benchmark | what one iteration does |
//! |---|---|
//! | `dp_noise/discrete_laplace/scale_S` | `privacy::noise::KeyedStream::new` (keyed blake3 over a 40-byte context, as a row's part has) and one `discrete_laplace` draw at a scale `privacy::calibrate` gives: 2 (L1 1, ε 0.5), 20 (L1 10), 300 (L1 150: visitors of a 30-day page breakdown at ε 0.25) and ~540 000 (visit seconds of the 30-day top stats at ε 0.1). The context changes every iteration, so the draws walk the distribution |
//! | `dp_noise/keyed_stream_new` | `KeyedStream::new` alone (the part of each draw that is blake3 set-up) |
//! | `dp_noise/calibrate` | `privacy::calibrate(150, 0.25)`: OpenDP's `make_laplace` map, once per part of every release |
//! | `dp_noise/threshold` | `privacy::threshold` for that scale (OpenDP's `make_laplace_threshold` map, bisected), once per breakdown release |
//! | `dp_noise/release_new/top_pages_30d`, `…/top_stats_30d` | `privacy::Release::new` for the dashboard's top pages (2 parts, thresholded) and top stats (5 parts): calibrations, threshold, context hash |
//! | `dp_noise/release_rows/top_pages_100x2` | `Release::rows` on 100 SQL rows of the top pages (visitors and pageviews: 200 draws, threshold, metrics composed) |
//! | `dp_noise/counts_noisy` | `privacy::Counts::noisy`: one label of a route's counts (funnels, filtered traffic) at scale ~300 |
//!
//! `cargo bench -p veil-benches --bench dp_noise` (about 30 s of measuring).

use std::hint::black_box;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{criterion_main, Criterion, Throughput};
use dashu::rational::RBig;
use serde_json::{json, Value};
use veil_aggregator::privacy::{self, noise::KeyedStream, Release, Settings};
use veil_aggregator::query;
use veil_aggregator::SiteView;

const KEY: [u8; 32] = [0x5a; 32];
const SITE: &str = "bench.example";

/// The context of a row's part as `Release` builds it: 32 bytes of question hash, the part's
/// name, the scale's bits; the last 8 bytes are the iteration.
fn context(i: u64) -> [u8; 48] {
    let mut c = [0x11u8; 48];
    c[40..].copy_from_slice(&i.to_le_bytes());
    c
}

fn bench_sampler(c: &mut Criterion) {
    let mut g = c.benchmark_group("dp_noise");
    g.throughput(Throughput::Elements(1));
    for (name, l1, eps) in [
        ("scale_2", 1u64, 0.5),
        ("scale_20", 10, 0.5),
        ("scale_300", 150, 0.5),
        ("scale_540000", 54_000, 0.1),
    ] {
        let cal = match privacy::calibrate(l1, eps) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{name} skipped: {e}");
                continue;
            }
        };
        let Ok(scale) = RBig::try_from(cal.scale) else {
            eprintln!("{name} skipped: scale {} is not finite", cal.scale);
            continue;
        };
        let mut i = 0u64;
        g.bench_function(format!("discrete_laplace/{name}"), |b| {
            b.iter(|| {
                i += 1;
                let mut s = KeyedStream::new(&KEY, &context(i));
                black_box(s.discrete_laplace(black_box(&scale)))
            })
        });
    }
    let mut i = 0u64;
    g.bench_function("keyed_stream_new", |b| {
        b.iter(|| {
            i += 1;
            black_box(KeyedStream::new(&KEY, &context(i)))
        })
    });
    g.bench_function("calibrate", |b| {
        b.iter(|| black_box(privacy::calibrate(black_box(150), black_box(0.25)).ok()))
    });
    if let Ok(cal) = privacy::calibrate(150, 0.25) {
        g.bench_function("threshold", |b| {
            b.iter(|| black_box(privacy::threshold(black_box(cal.scale), 150, 150, 30, 1e-6).ok()))
        });
    }
    if let Ok(counts) = privacy::Counts::new(KEY, "bench route", 30, 150, 0.5, None, 0) {
        let mut i = 0u64;
        g.bench_function("counts_noisy", |b| {
            b.iter(|| {
                i += 1;
                black_box(counts.noisy(&format!("label {i}"), 1234.0))
            })
        });
    }
    g.finish();
}

/// A parsed question over 30 closed days (not live: no hour in its key).
fn question(body: Value) -> Option<query::Query> {
    let now = Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).single()?;
    let body = serde_json::to_vec(&body).ok()?;
    query::parse(&body, &SiteView::new(SITE), now)
        .map_err(|e| eprintln!("bench question rejected: {e}"))
        .ok()
}

fn bench_release(c: &mut Criterion) {
    let now = match Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).single() {
        Some(t) => t,
        None => return,
    };
    let range = json!(["2026-11-01", "2026-11-30"]);
    let pages = question(
        json!({"site_id": SITE, "metrics": ["visitors", "pageviews"],
        "date_range": range, "dimensions": ["event:page"], "pagination": {"limit": 10}}),
    );
    let top = question(json!({"site_id": SITE,
        "metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"],
        "date_range": range, "dimensions": []}));
    let (Some(pages), Some(top)) = (pages, top) else {
        eprintln!("release benchmarks skipped: the questions did not parse");
        return;
    };
    let settings = Settings::default();
    let mut g = c.benchmark_group("dp_noise");
    for (name, q) in [("top_pages_30d", &pages), ("top_stats_30d", &top)] {
        g.bench_function(format!("release_new/{name}"), |b| {
            b.iter(|| black_box(Release::new(black_box(q), false, KEY, &settings, 5, now).ok()))
        });
    }
    let Ok(rel) = Release::new(&pages, false, KEY, &settings, 5, now) else {
        eprintln!("release_rows skipped: no release");
        g.finish();
        return;
    };
    // 100 pages, Zipf-like: dimensions, the plan's SQL metrics (visitors, pageviews), k.
    let metrics = rel.plan().sql_metrics.len();
    let raw: Vec<Value> = (1..=100u64)
        .map(|i| {
            let visitors = 20_000 / i;
            let mut row = vec![json!(format!("/page/{i}"))];
            row.extend((0..metrics).map(|m| json!(visitors * (1 + 2 * m as u64))));
            row.push(json!(visitors));
            Value::Array(row)
        })
        .collect();
    g.throughput(Throughput::Elements(raw.len() as u64));
    g.bench_function("release_rows/top_pages_100x2", |b| {
        b.iter(|| black_box(rel.rows(black_box(&pages), black_box(&raw))))
    });
    g.finish();
}

/// What `criterion_group!` would generate, written out so the functions can stay private.
fn benches() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
        .configure_from_args();
    bench_sampler(&mut c);
    bench_release(&mut c);
}

criterion_main!(benches);
