//! Criterion micro-benchmarks of the collector's per-event work, without HTTP or ClickHouse.
//!
//! | group | what one iteration does |
//! |---|---|
//! | `parse` | a Plausible body (JSON text) into the pipeline's `Incoming` with `routes::plausible::to_incomings`, the route's own code |
//! | `ua` | `UaParser::parse` on one user agent (desktop, mobile, tablet, bot), from the parser's cache and not |
//! | `privacy` | `VisitorHasher::visitor_id` for an IPv4 and an IPv6 visitor |
//! | `enrich` | a GeoIP lookup (the committed test fixture databases; the real ones are larger but the lookup is a tree walk of the same depth order) and the referrer's source name and channel |
//! | `pipeline` | `Pipeline::process` on one event: a page view with UTM tags and referrer, and the traffic mix of the load harness (bots and unknown sites included) |
//! | `writer` | `RowBatch::sort_for_insert` on a batch of 20 000 rows as they arrive (four sites, 5 000 visitors, in time order), which the writer does before each insert so that ClickHouse need not sort it |
//! | `route` | `Collector::handle` on 256 concurrent `/api/event` requests, or 16 concurrent `/v1/events` requests of 50 events, on one thread: JSON, pipeline, and the append to the spool (durability `none`; its writer's sink discards rows) |
//!
//! Inputs come from `veil_benches::traffic`, the same mix `veil-load` sends. Each benchmark
//! measures for 2 s so the whole file runs in well under a minute:
//! `cargo bench -p veil-benches --bench pipeline`.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use criterion::{criterion_main, BatchSize, Criterion, Throughput};
use http::{header, Request};
use prometheus::Registry;
use veil_benches::traffic::{Event, NativeBatch, PlausibleHit, Rng};
use veil_collector::config::Limits;
use veil_collector::pipeline::enrich::UaParser;
use veil_collector::pipeline::privacy::{Consent, VisitorHasher};
use veil_collector::pipeline::sink::{RowBatch, Sink, SinkFactory};
use veil_collector::pipeline::spool::Durability;
use veil_collector::pipeline::{Client, Incoming, Pipeline};
use veil_collector::sites::SiteRegistry;
use veil_collector::{Collector, CollectorConfig, SystemClock};

const KEY: [u8; 32] = [0x5a; 32];

const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";
const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";
const SAFARI_IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// A Plausible tracker's page view: UTM tags in the URL, a search-engine referrer.
const PLAUSIBLE_BODY: &str = r#"{"n":"pageview","u":"https://www.example.com/docs/getting-started?utm_source=newsletter&utm_medium=email&utm_campaign=nov-2026","d":"example.com","r":"https://www.google.com/","h":0}"#;

fn sites() -> Arc<SiteRegistry> {
    Arc::new(SiteRegistry::new(
        veil_benches::traffic::REGISTERED_SITES
            .iter()
            .map(|s| s.to_string()),
    ))
}

fn visitor_ip() -> IpAddr {
    IpAddr::from([203, 0, 113, 42])
}

fn plausible_to_incoming(body: &[u8], client: &Client) -> Option<Incoming> {
    veil_collector::routes::plausible::to_incomings(body, client, Consent::default())
        .ok()?
        .pop()
}

fn bench_parse(c: &mut Criterion) {
    let client = Client {
        ip: Some(visitor_ip()),
        user_agent: CHROME_WINDOWS.into(),
        ..Client::default()
    };
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Bytes(PLAUSIBLE_BODY.len() as u64));
    g.bench_function("plausible_body_to_incoming", |b| {
        b.iter(|| plausible_to_incoming(black_box(PLAUSIBLE_BODY.as_bytes()), &client))
    });
    g.finish();
}

fn bench_ua(c: &mut Criterion) {
    let parser = UaParser::new();
    let mut g = c.benchmark_group("ua");
    let mut n = 0u64;
    for (name, ua) in [
        ("chrome_windows", CHROME_WINDOWS),
        ("safari_iphone", SAFARI_IPHONE),
        ("chrome_android", CHROME_ANDROID),
        ("safari_ipad", SAFARI_IPAD),
        ("googlebot", GOOGLEBOT),
    ] {
        // The parser caches by user agent: a string seen before is a lookup.
        g.bench_function(format!("cached/{name}"), |b| {
            b.iter(|| parser.parse(black_box(ua)))
        });
        // A trailing token never seen before makes every call a miss: woothee and Veil's
        // corrections run, and the result is put in the cache.
        g.bench_function(format!("uncached/{name}"), |b| {
            b.iter_batched(
                || {
                    n += 1;
                    format!("{ua} b/{n}")
                },
                |ua| parser.parse(&ua),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn bench_privacy(c: &mut Criterion) {
    let hasher = VisitorHasher::new(KEY);
    let v6: IpAddr = IpAddr::from([0x2001, 0xdb8, 0x85a3, 0, 0, 0x8a2e, 0x370, 0x7334]);
    let mut g = c.benchmark_group("privacy");
    g.bench_function("visitor_hash_ipv4", |b| {
        b.iter(|| {
            hasher.visitor_id(
                black_box("example.com"),
                black_box(Some(visitor_ip())),
                black_box(CHROME_WINDOWS),
            )
        })
    });
    g.bench_function("visitor_hash_ipv6", |b| {
        b.iter(|| {
            hasher.visitor_id(
                black_box("example.com"),
                black_box(Some(v6)),
                black_box(SAFARI_IPHONE),
            )
        })
    });
    g.finish();
}

fn incoming(ev: &Event) -> Incoming {
    Incoming {
        domain: ev.domain.into(),
        name: ev.name.into(),
        url: ev.url.clone(),
        referrer: ev.referrer.clone(),
        props: ev
            .prop
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        timestamp: None,
        hash_mode: ev.url.contains('#'),
        consent: Consent {
            opt_out: ev.opt_out,
            ..Consent::default()
        },
        client: Client {
            ip: Some(ev.ip),
            user_agent: ev.agent.ua.into(),
            ..Client::default()
        },
        ..Incoming::default()
    }
}

fn bench_pipeline(c: &mut Criterion) {
    let pipeline = Pipeline::with_key(sites(), Limits::default(), KEY);
    let client = Client {
        ip: Some(visitor_ip()),
        user_agent: CHROME_WINDOWS.into(),
        ..Client::default()
    };
    let Some(pageview) = plausible_to_incoming(PLAUSIBLE_BODY.as_bytes(), &client) else {
        eprintln!("pipeline: the sample body does not parse; skipped");
        return;
    };
    let mut rng = Rng::new(7);
    let mix: Vec<Incoming> = (0..4096)
        .map(|_| incoming(&Event::random(&mut rng)))
        .collect();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    g.bench_function("process_pageview", |b| {
        b.iter_batched(
            || pageview.clone(),
            |ev| pipeline.process(ev, Utc::now()),
            BatchSize::SmallInput,
        )
    });
    let mut i = 0;
    g.bench_function("process_mix", |b| {
        b.iter_batched(
            || {
                i = (i + 1) % mix.len();
                mix[i].clone()
            },
            |ev| pipeline.process(ev, Utc::now()),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A sink that discards rows: the route benchmarks measure the handler, not ClickHouse.
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

/// Requests sent together in one `route` iteration: the spool commits appends in groups (it
/// waits up to 2 ms for more after the first), so one request at a time would measure that wait.
const CONCURRENT: usize = 256;

/// Sends `reqs` to the collector concurrently on `rt` and waits for every answer.
fn handle_all(rt: &tokio::runtime::Runtime, collector: &Collector, reqs: Vec<Request<Bytes>>) {
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for req in reqs {
            let c = collector.clone();
            set.spawn(async move { c.handle(req).await.map(|r| r.status()) });
        }
        while set.join_next().await.is_some() {}
    });
}

fn route_benches(c: &mut Criterion) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let spool = tempfile::Builder::new()
        .prefix("veil-bench-spool-")
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
    let pipeline = Pipeline::with_key(Arc::new(config.registry()), config.limits.clone(), KEY);
    let factory: SinkFactory = Box::new(|| Ok(Box::new(Discard) as Box<dyn Sink>));
    let collector = rt.block_on(async {
        Collector::assemble(
            config,
            pipeline,
            factory,
            None,
            Registry::new(),
            Arc::new(SystemClock),
        )
    })?;

    let mut rng = Rng::new(11);
    let hits: Vec<PlausibleHit> = (0..4096).map(|_| PlausibleHit::random(&mut rng)).collect();
    let batches: Vec<NativeBatch> = (0..256)
        .map(|_| NativeBatch::random(&mut rng, 50))
        .collect();
    for req in [
        plausible_request(hits[0].clone()),
        native_request(batches[0].clone()),
    ] {
        let path = req.uri().path().to_string();
        let status = rt.block_on(collector.handle(req)).map(|r| r.status());
        if status != Some(http::StatusCode::ACCEPTED) {
            return Err(format!("{path} answered {status:?}, not 202").into());
        }
    }

    let mut g = c.benchmark_group("route");
    g.sample_size(10);
    let mut i = 0;
    g.throughput(Throughput::Elements(CONCURRENT as u64));
    g.bench_function(format!("api_event_x{CONCURRENT}_concurrent"), |b| {
        b.iter_batched(
            || {
                (0..CONCURRENT)
                    .map(|_| {
                        i = (i + 1) % hits.len();
                        plausible_request(hits[i].clone())
                    })
                    .collect()
            },
            |reqs| handle_all(&rt, &collector, reqs),
            BatchSize::SmallInput,
        )
    });
    let n = CONCURRENT / 16;
    g.throughput(Throughput::Elements(n as u64 * 50));
    g.bench_function(format!("v1_events_x50_x{n}_concurrent"), |b| {
        b.iter_batched(
            || {
                (0..n)
                    .map(|_| {
                        i = (i + 1) % batches.len();
                        native_request(batches[i].clone())
                    })
                    .collect()
            },
            |reqs| handle_all(&rt, &collector, reqs),
            BatchSize::SmallInput,
        )
    });
    g.finish();
    collector.finish();
    Ok(())
}

fn bench_routes(c: &mut Criterion) {
    if let Err(e) = route_benches(c) {
        eprintln!("route benchmarks skipped: {e}");
    }
}

fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

fn bench_enrich(c: &mut Criterion) {
    use veil_collector::pipeline::{geo::GeoDb, sources};
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../collector/tests/fixtures/geoip");
    let geo = GeoDb::open(&fixture);
    let v4: IpAddr = "203.0.113.20".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let v6: IpAddr = "2001:db8::5".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let mut g = c.benchmark_group("enrich");
    g.throughput(Throughput::Elements(1));
    g.bench_function("geo_lookup_ipv4", |b| {
        b.iter(|| black_box(geo.lookup(black_box(v4))))
    });
    g.bench_function("geo_lookup_ipv6", |b| {
        b.iter(|| black_box(geo.lookup(black_box(v6))))
    });
    g.bench_function("source_and_channel_known", |b| {
        b.iter(|| {
            let host = black_box("www.google.co.uk");
            black_box((
                sources::source(host, ""),
                sources::channel(host, "", "", false),
            ))
        })
    });
    g.bench_function("source_and_channel_unknown", |b| {
        b.iter(|| {
            let host = black_box("blog.example.org");
            black_box((
                sources::source(host, ""),
                sources::channel(host, "", "", false),
            ))
        })
    });
    g.finish();
}

fn bench_writer(c: &mut Criterion) {
    use veil_collector::pipeline::EventRow;
    let mut rng = Rng::new(7);
    let sites = ["a.example", "b.example", "c.example", "d.example"];
    let rows: Vec<EventRow> = (0..20_000u32)
        .map(|i| EventRow {
            site: sites[rng.below(4) as usize].into(),
            timestamp: 1_765_000_000 + i / 20,
            visitor_id: [(rng.below(5_000) % 251) as u8; 16],
            name: "pageview".into(),
            pathname: format!("/docs/{}", rng.below(300)),
            spool_token: "t".into(),
            ..EventRow::default()
        })
        .collect();
    let batch = RowBatch::from_rows(&rows);
    let mut g = c.benchmark_group("writer");
    g.throughput(Throughput::Elements(rows.len() as u64));
    g.bench_function("sort_20k_rows", |b| {
        b.iter_batched(
            || batch.clone(),
            |mut b| {
                b.sort_for_insert();
                black_box(b)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// What `criterion_group!` would generate, written out so the function can stay private.
fn benches() {
    let mut c = quick().configure_from_args();
    bench_parse(&mut c);
    bench_ua(&mut c);
    bench_privacy(&mut c);
    bench_enrich(&mut c);
    bench_pipeline(&mut c);
    bench_writer(&mut c);
    bench_routes(&mut c);
}

criterion_main!(benches);
