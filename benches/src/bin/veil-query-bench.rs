//! `veil-query-bench`: how fast the dashboard's standard set of Stats API queries answers on
//! generated data.
//!
//! For each size (`--sizes 10M,50M`; default `1M` for a quick run) it fills a database
//! `veil_qbench_<size>` with `veil_schemas::gen` (30 days for one site, seeded; a database
//! that already holds exactly that many events for the site is reused, so repeated runs skip
//! the generation), then times each query of the dashboard's first screen through
//! `veil_aggregator::Aggregator::query` — the same code path as `POST /api/v2/query`, without
//! HTTP — and prints the median of `--runs` runs (after one warm-up run), the full set's
//! total, and the median time of a dashboard load (the six sent at once, as the dashboard's
//! panels fetch them, until the last answer):
//!
//! | query | body |
//! |---|---|
//! | top stats | `metrics: [visitors, visits, pageviews, bounce_rate, visit_duration]`, `30d` |
//! | visitors over time | `metrics: [visitors]`, `dimensions: [time:day]`, `time_labels` |
//! | top pages | `metrics: [visitors, pageviews]`, `dimensions: [event:page]`, limit 10 |
//! | sources | `metrics: [visitors, visits]`, `dimensions: [visit:source]`, limit 10 |
//! | countries | `metrics: [visitors]`, `dimensions: [visit:country]`, limit 10 |
//! | devices | `metrics: [visitors]`, `dimensions: [visit:device]`, limit 10 |
//!
//! ClickHouse: a managed server in a temp dir (started from the main thread, which its
//! parent-death signal is tied to), or `--clickhouse-url`. Output: one Markdown table per size
//! (ready for benches/README.md) and a JSON line per size.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use veil_aggregator::{Aggregator, AggregatorConfig};
use veil_schemas::gen::{generate, GenOptions};
use veil_schemas::managed::{ManagedClickHouse, ManagedOptions};
use veil_schemas::sql;
use veil_schemas::sql::{ident, lit, Run, Sql};
use veil_schemas::ClickHouseConfig;

/// Times the dashboard's standard Stats API queries on generated data.
#[derive(Debug, Parser)]
#[command(name = "veil-query-bench")]
struct Args {
    /// Event counts to test, comma-separated; `k`/`M` suffixes allowed (e.g. `10M,50M`).
    #[arg(long, default_value = "1M", value_delimiter = ',')]
    sizes: Vec<String>,
    /// Timed runs per query (the median is reported), after one warm-up run.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Days of generated data (the queries ask for the last 30 days).
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Use this ClickHouse instead of starting a managed one.
    #[arg(long)]
    clickhouse_url: Option<String>,
    /// Directory for the managed ClickHouse (kept, so generated data is reused next time)
    /// [default: a new temp dir, removed at the end].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A query whose warm-up run takes longer than this many seconds is not repeated (its
    /// one run is reported).
    #[arg(long, default_value_t = 20.0)]
    max_query_secs: f64,
    /// Regenerate even when a database with the right count exists.
    #[arg(long)]
    regenerate: bool,
    /// Time only the rollup path (skip the raw-events path, which takes minutes at 50M).
    #[arg(long)]
    skip_raw: bool,
    /// Do not run the rollup job first (use the builds already in the database).
    #[arg(long)]
    skip_rollup_job: bool,
    /// Minutes of today's latest events left after the cut of today's build (0: the cut the
    /// rollup job makes now). The job runs every 10 minutes with a cut 2 minutes behind the
    /// clock, so readers see 2 to 12 minutes of hits after the cut; the default times the
    /// worst case, just before the next run.
    #[arg(long, default_value_t = 12)]
    tail_minutes: u32,
}

const SITE: &str = "bench.example";

fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1_000),
        Some('m' | 'M') => (&s[..s.len() - 1], 1_000_000),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("--sizes: {s:?} is not a count like 10M"))?;
    if n == 0 {
        bail!("--sizes: counts must be positive");
    }
    Ok(n * mult)
}

fn label(n: u64) -> String {
    if n % 1_000_000 == 0 {
        format!("{}M", n / 1_000_000)
    } else if n % 1_000 == 0 {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// The dashboard's first screen: name and request body.
fn standard_set() -> Vec<(&'static str, Value)> {
    let panel = |metrics: &[&str], dim: &str| {
        json!({"site_id": SITE, "metrics": metrics, "date_range": "30d", "dimensions": [dim],
               "pagination": {"limit": 10, "offset": 0}, "include": {"total_rows": true}})
    };
    vec![
        (
            "top stats",
            json!({"site_id": SITE, "metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"],
                   "date_range": "30d", "dimensions": []}),
        ),
        (
            "visitors over time",
            json!({"site_id": SITE, "metrics": ["visitors"], "date_range": "30d",
                   "dimensions": ["time:day"], "include": {"time_labels": true}}),
        ),
        ("top pages", panel(&["visitors", "pageviews"], "event:page")),
        ("sources", panel(&["visitors", "visits"], "visit:source")),
        ("countries", panel(&["visitors"], "visit:country")),
        ("devices", panel(&["visitors"], "visit:device")),
    ]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn count_site(ch: &ClickHouseConfig) -> Result<u64> {
    let n = ch
        .client()
        .sql(&sql!(
            "SELECT count() FROM events WHERE site = {}",
            lit(SITE)
        ))
        .fetch_one::<u64>()
        .await?;
    Ok(n)
}

async fn prepare(base: &ClickHouseConfig, size: u64, a: &Args) -> Result<ClickHouseConfig> {
    let mut ch = base.clone();
    ch.database = format!("veil_qbench_{}", label(size).to_lowercase());
    veil_schemas::migrate(&ch).await.context("migrating")?;
    let have = count_site(&ch).await?;
    if have == size && !a.regenerate {
        eprintln!(
            "veil-query-bench: {} already holds {size} events, reusing it",
            ch.database
        );
        return Ok(ch);
    }
    if have > 0 {
        ch.server_client()
            .sql(&sql!("DROP DATABASE {}", ident(&ch.database)?))
            .execute()
            .await?;
        veil_schemas::migrate(&ch).await?;
    }
    let mut o = GenOptions::new(SITE, size, a.days);
    o.seed = a.seed;
    let r = generate(&ch, &o).await.context("generating")?;
    eprintln!(
        "veil-query-bench: generated {} events in {:.1} s ({:.0} rows/s)",
        r.rows, r.seconds, r.rows_per_second
    );
    // Let the background merges of the fresh parts settle before timing reads.
    ch.client()
        .sql(&Sql::new("OPTIMIZE TABLE events"))
        .with_setting("max_execution_time", "0")
        .execute()
        .await
        .ok();
    Ok(ch)
}

/// Per query: the median and how many runs it is the median of, or why it failed.
type Timings = Vec<(&'static str, Result<(Duration, usize), String>)>;

/// Times every query of the standard set, reading rollups or (`include.rollups: false`) raw
/// events only; an `Err` for a query the API refused (with why).
async fn time_set(agg: &Aggregator, a: &Args, rollups: bool) -> Result<Timings> {
    let runs = a.runs;
    let mut out = Vec::new();
    for (name, mut body) in standard_set() {
        if let Some(o) = body.as_object_mut() {
            let include = o.entry("include").or_insert_with(|| json!({}));
            include["rollups"] = json!(rollups);
        }
        let bytes = serde_json::to_vec(&body)?;
        let mut times = Vec::new();
        let mut failed = None;
        for i in 0..=runs {
            let t = Instant::now();
            let r = Aggregator::query(agg, &bytes, chrono::Utc::now()).await;
            let took = t.elapsed();
            match r {
                Ok(resp) if resp.status().is_success() => {
                    if i > 0 {
                        times.push(took);
                    } else if took.as_secs_f64() > a.max_query_secs {
                        // Too slow to repeat: the warm-up run is the measurement.
                        times.push(took);
                        break;
                    }
                }
                Ok(resp) => {
                    failed = Some(format!("HTTP {}", resp.status()));
                    break;
                }
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        out.push((
            name,
            match failed {
                Some(e) => Err(e),
                None => Ok((median(times.clone()), times.len())),
            },
        ));
    }
    Ok(out)
}

/// The standard set as the dashboard loads it: all six queries sent at once (its panels fetch
/// concurrently), rollups path. The median over `runs` loads (after one warm-up load) of the
/// time until the last answer arrived.
async fn time_load(agg: &Aggregator, runs: usize) -> Result<Duration> {
    let bodies: Vec<Vec<u8>> = standard_set()
        .iter()
        .map(|(_, b)| serde_json::to_vec(b))
        .collect::<Result<_, _>>()?;
    let mut times = Vec::new();
    for i in 0..=runs {
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for b in &bodies {
            let (agg, b) = (agg.clone(), b.clone());
            set.spawn(async move { Aggregator::query(&agg, &b, chrono::Utc::now()).await });
        }
        while let Some(r) = set.join_next().await {
            let resp = r.context("a query task failed")??;
            if !resp.status().is_success() {
                bail!(
                    "a query of the dashboard load answered HTTP {}",
                    resp.status()
                );
            }
        }
        if i > 0 {
            times.push(t.elapsed());
        }
    }
    Ok(median(times))
}

async fn bench(base: ClickHouseConfig, a: Args) -> Result<()> {
    let sizes: Vec<u64> = a
        .sizes
        .iter()
        .map(|s| parse_size(s))
        .collect::<Result<_>>()?;
    for size in sizes {
        let ch = prepare(&base, size, &a).await?;
        let agg = Aggregator::new(
            AggregatorConfig {
                sites: vec![SITE.into()],
                min_visitors: 5,
                ..AggregatorConfig::default()
            },
            ch.clone(),
        );
        // The rollup job builds the visits of every closed day (as `veil aggregator` does on
        // its schedule); the hourly rollup was filled by its materialized view during the insert.
        if !a.skip_rollup_job {
            let t = Instant::now();
            let report = veil_aggregator::rollup::run(agg.clickhouse(), a.days + 1)
                .await
                .context("building rollups")?;
            eprintln!(
                "veil-query-bench: rollup job: visits of {} day(s) built, {} hourly day(s) repaired in {:.1} s",
                report.visit_days.len(),
                report.hourly_days.len(),
                t.elapsed().as_secs_f64()
            );
        }
        if a.tail_minutes > 0 {
            // Today's build again, with its cut `tail_minutes` before the latest event stored,
            // as the job would have left it that long before now (the generator's events end
            // when it ran, which may be a while ago).
            let latest: String = ch
                .client()
                .sql(&sql!(
                    "SELECT formatDateTime(max(timestamp), '%Y-%m-%d %H:%M:%S', 'UTC') FROM events \
                     WHERE site = {} AND timestamp >= toStartOfDay(now(), 'UTC')",
                    lit(SITE)
                ))
                .fetch_one()
                .await?;
            let latest = chrono::NaiveDateTime::parse_from_str(&latest, "%Y-%m-%d %H:%M:%S")
                .ok()
                .filter(|t| t.date() == chrono::Utc::now().date_naive());
            match latest {
                Some(t) => {
                    let at = t - chrono::Duration::minutes(i64::from(a.tail_minutes) - 2);
                    let started = Instant::now();
                    let built = veil_aggregator::rollup::build_today(agg.clickhouse(), at).await?;
                    eprintln!(
                        "veil-query-bench: today's build cut at {} minutes before the latest event ({t}){}",
                        a.tail_minutes,
                        if built {
                            format!(", built in {:.1} s", started.elapsed().as_secs_f64())
                        } else {
                            " (already built)".to_string()
                        }
                    );
                }
                None => eprintln!(
                    "veil-query-bench: no events today (the data was generated on an earlier day): \
                     today's part is empty; --regenerate for a representative run"
                ),
            }
        }
        let raw = if a.skip_raw {
            standard_set()
                .into_iter()
                .map(|(n, _)| (n, Err("skipped (--skip-raw)".to_string())))
                .collect()
        } else {
            time_set(&agg, &a, false).await?
        };
        let rolled = time_set(&agg, &a, true).await?;
        let load = time_load(&agg, a.runs).await?;
        // The same with today's snapshot (as `veil aggregator` reads by default): one taken
        // now, and reports that read it (the data does not change meanwhile, so it misses
        // nothing and every run reads it).
        let snap_agg = Aggregator::new(
            AggregatorConfig {
                sites: vec![SITE.into()],
                min_visitors: 5,
                today_snapshot_secs: veil_aggregator::snapshot::MAX_AGE_SECS,
                ..AggregatorConfig::default()
            },
            ch.clone(),
        );
        let t = Instant::now();
        let snap =
            veil_aggregator::snapshot::take(&ch, SITE, chrono::Utc::now().naive_utc()).await?;
        let snap_took = t.elapsed();
        eprintln!(
            "veil-query-bench: today's snapshot {} in {:.1} s",
            if snap.is_some() {
                "taken"
            } else {
                "not taken (no build of today with a cut)"
            },
            snap_took.as_secs_f64()
        );
        let snapped = time_set(&snap_agg, &a, true).await?;
        let snap_load = time_load(&snap_agg, a.runs).await?;
        println!(
            "\n### {} events, 30 days, median of {} runs\n",
            label(size),
            a.runs
        );
        println!(
            "| query | raw events (ms) | rollups, live (ms) | rollups, today's snapshot (ms) |"
        );
        println!("|---|---:|---:|---:|");
        let cell = |r: &Result<(Duration, usize), String>| match r {
            Ok((d, n)) if *n == 1 && a.runs > 1 => format!("{:.1} (1 run)", ms(*d)),
            Ok((d, _)) => format!("{:.1}", ms(*d)),
            Err(e) => format!("failed: {e}"),
        };
        let total = |t: &Timings| -> (f64, bool) {
            let ok = t.iter().all(|(_, r)| r.is_ok());
            (
                t.iter()
                    .filter_map(|(_, r)| r.as_ref().ok())
                    .map(|(d, _)| ms(*d))
                    .sum(),
                ok,
            )
        };
        for (((name, r), (_, q)), (_, sq)) in raw.iter().zip(&rolled).zip(&snapped) {
            println!("| {name} | {} | {} | {} |", cell(r), cell(q), cell(sq));
        }
        let ((tr, okr), (tq, okq), (ts, oks)) = (total(&raw), total(&rolled), total(&snapped));
        let mark = |ok: bool| if ok { "" } else { " (incomplete)" };
        println!(
            "| **full set** | **{tr:.1}**{} | **{tq:.1}**{} | **{ts:.1}**{} |",
            mark(okr),
            mark(okq),
            mark(oks)
        );
        println!(
            "| **dashboard load** (the six at once, as the dashboard sends them) | | **{:.1}** | **{:.1}** |",
            ms(load),
            ms(snap_load)
        );
        println!(
            "\nToday's snapshot took {:.1} ms to take (in the background, once per refresh).",
            ms(snap_took)
        );
        let as_json = |t: &Timings| {
            t.iter()
                .map(|(n, r)| json!({"query": n, "median_ms": r.as_ref().ok().map(|(d, _)| ms(*d)), "runs": r.as_ref().ok().map(|(_, k)| *k), "error": r.as_ref().err()}))
                .collect::<Vec<_>>()
        };
        println!(
            "{}",
            json!({
                "events": size,
                "runs": a.runs,
                "raw": as_json(&raw),
                "rollups": as_json(&rolled),
                "raw_total_ms": tr,
                "rollups_total_ms": tq,
                "dashboard_load_ms": ms(load),
                "snapshot": as_json(&snapped),
                "snapshot_total_ms": ts,
                "snapshot_dashboard_load_ms": ms(snap_load),
                "snapshot_take_ms": ms(snap_took),
            })
        );
    }
    Ok(())
}

fn main() {
    let a = Args::parse();
    if let Err(e) = real_main(a) {
        eprintln!("veil-query-bench: error: {e:#}");
        std::process::exit(2);
    }
}

fn real_main(a: Args) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // The managed server is started from the main thread, which lives as long as the process.
    let mut tmp = None;
    let mut managed = None;
    let url = match &a.clickhouse_url {
        Some(u) => u.clone(),
        None => {
            let dir = match &a.data_dir {
                Some(d) => d.clone(),
                None => {
                    let t = tempfile::tempdir()?;
                    let p = t.path().to_path_buf();
                    tmp = Some(t);
                    p
                }
            };
            let server = ManagedClickHouse::start(&ManagedOptions::new(dir.join("clickhouse")))?;
            let u = server.url();
            managed = Some(server);
            u
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(bench(ClickHouseConfig::new(url, "veil"), a));
    drop(rt);
    if let Some(mut m) = managed {
        m.stop();
    }
    drop(tmp);
    r
}
