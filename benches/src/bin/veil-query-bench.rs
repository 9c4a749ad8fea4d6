//! `veil-query-bench`: how fast the dashboard's standard set of Stats API queries answers on
//! generated data.
//!
//! For each size (`--sizes 10M,50M`; default `1M` for a quick run) it fills a database
//! `veil_qbench_<size>` with `veil_schemas::gen` (30 days for one site, seeded; a database
//! that already holds exactly that many events for the site is reused, so repeated runs skip
//! the generation), then times each query of the dashboard's first screen through
//! `veil_aggregator::Aggregator::query_as` — the same code path as `POST /api/v2/query`,
//! without HTTP, in each privacy mode of `--privacy` (below) — and prints the median of
//! `--runs` runs (after one warm-up run), the full set's total, and the median time of a
//! dashboard load (the six sent at once, as the dashboard's panels fetch them, until the last
//! answer):
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
//! Then the **filtered first screens** (issue 21): for each period of `--periods` (default
//! `7d,30d,12mo`; the chart asks `time:month` over 6mo/12mo/year, as the dashboard does) the
//! unfiltered first screen and, for each filter of `--filters` (default `all`; see
//! [`filter_set`]: page, entry/exit page, hostname, goal, event name, custom property, source,
//! referrer, UTM, channel, country, region, city, device, browser, OS, `contains`, `matches`,
//! `has_done` and common pairs, `or`, `not`), the six panels with that filter sent at once:
//! the median load time, the panels that failed (with the error, shortened) and the source
//! each panel read (`meta.source`); then each filtered panel alone (median of `--runs`;
//! `--skip-singles` skips it), whose p50/p95 over all filtered panels is reported. A failed
//! panel is reported, never fatal: the exit code stays 0. The bench registers the goal
//! `Signup` (event `Signup`) for its site in the database's registry, so `event:goal` filters
//! are accepted.
//!
//! **Privacy modes** (issue 15, `--privacy dp|exact|both`, default `both`): every question goes
//! through `Aggregator::query_as(&Access::Admin, …)` of an aggregator configured in that mode —
//! `exact` (exact numbers, k-anonymity and the differencing guard) or `dp` (differential
//! privacy: the question's budget charged in ClickHouse's `privacy_spend`, the site's noise key
//! read once and cached, the SQL with the release's hidden parts and every row rather than the
//! first 10, discrete Laplace noise per row and part, the noisy threshold), with a day's budget
//! of 1e9 so that nothing is refused. With `both`, each timing is taken in both modes with
//! their runs alternating (one aggregator per mode, one shared registry), and a table of dp ÷
//! exact follows each size's tables: ratios measured in one run, as the machine drifts. A
//! question asked again is *repeated* in dp (free for the budget, same noise): the warm-up run
//! asks it new, the timed runs repeat it — the ledger is still read and the SQL and the noise
//! still run in full. One more row, **dashboard load, every question new**, sends each load as
//! a credential never used before (`key:qbench-…`), so in dp all six questions are charged (a
//! SELECT and an INSERT each, one charge at a time per aggregator).
//!
//! ClickHouse: a managed server in a temp dir (started from the main thread, which its
//! parent-death signal is tied to), or `--clickhouse-url`. Output: Markdown tables per size
//! (ready for benches/README.md), a JSON line per size (and one for its filtered screens), and
//! at the end the worst cases of each size against issue 21's targets.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use veil_aggregator::privacy::{Mode, Settings};
use veil_aggregator::{Access, Aggregator, AggregatorConfig};
use veil_schemas::gen::{generate, GenOptions};
use veil_schemas::managed::{ManagedClickHouse, ManagedOptions};
use veil_schemas::sql;
use veil_schemas::sql::{ident, lit, Run as _, Sql};
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
    /// Read this database (filled by `veil gen --site bench.example`, for example) instead of
    /// `veil_qbench_<size>`; it must hold exactly the size's events (it is never regenerated).
    #[arg(long)]
    database: Option<String>,
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
    /// Filtered first screens: `all`, `none` (only the unfiltered table) or filter names,
    /// comma-separated (`page`, `source`, `goal`, …; an unknown name lists them all).
    #[arg(long, default_value = "all", value_delimiter = ',')]
    filters: Vec<String>,
    /// Periods of the filtered first screens, comma-separated (each also gets an unfiltered
    /// first screen): `day`, `7d`, `30d`, `month`, `6mo`, `12mo`, `year`.
    #[arg(long, default_value = "7d,30d,12mo", value_delimiter = ',')]
    periods: Vec<String>,
    /// The aggregator's `--max-heavy-queries` (reports not answered from the per-day visit
    /// rollup run at once; 0: no bound) [default: the aggregator's]
    #[arg(long)]
    max_heavy_queries: Option<u32>,
    /// The aggregator's `--gather-ms` (how long reports asked at once over the same filtered
    /// visit rows wait to share one statement; 0: never) [default: the aggregator's]
    #[arg(long)]
    gather_ms: Option<u64>,
    /// Do not time each filtered panel by itself (only the six at once).
    #[arg(long)]
    skip_singles: bool,
    /// How the questions are answered: `exact` (k-anonymity and the differencing guard, exact
    /// numbers), `dp` (differential privacy: budget charge, noise key, hidden parts, noise per
    /// row and part; a day's budget of 1e9 so nothing is refused) or `both` (every timing in
    /// both modes, their runs alternating, and dp ÷ exact printed).
    #[arg(long, value_enum, default_value_t = PrivacyChoice::Both)]
    privacy: PrivacyChoice,
}

/// `--privacy`: the modes the bench asks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PrivacyChoice {
    Dp,
    Exact,
    Both,
}

impl PrivacyChoice {
    /// The modes timed, exact first (the ratio's denominator).
    fn modes(self) -> Vec<Mode> {
        match self {
            PrivacyChoice::Dp => vec![Mode::Dp],
            PrivacyChoice::Exact => vec![Mode::Exact],
            PrivacyChoice::Both => vec![Mode::Exact, Mode::Dp],
        }
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Dp => "dp",
        Mode::Exact => "exact",
    }
}

/// ε per credential and day in dp mode: large enough that the bench never hits the budget
/// (each new question spends 0.5), so what is timed is the mechanism, not refusals.
const DP_EPSILON_DAY: f64 = 1e9;

/// The aggregator configuration of `mode` (`today_snapshot_secs` 0: live reads).
fn config(
    mode: Mode,
    today_snapshot_secs: u64,
    heavy: Option<u32>,
    gather_ms: Option<u64>,
) -> AggregatorConfig {
    let d = AggregatorConfig::default();
    AggregatorConfig {
        max_heavy_queries: heavy.unwrap_or(d.max_heavy_queries),
        gather_ms: gather_ms.unwrap_or(d.gather_ms),
        sites: vec![SITE.into()],
        min_visitors: 5,
        today_snapshot_secs,
        privacy: Settings {
            mode,
            epsilon_day: DP_EPSILON_DAY,
            ..Settings::default()
        },
        ..d
    }
}

/// One aggregator per mode timed, sharing one registry.
type Aggs = Vec<(Mode, Aggregator)>;

fn aggregators(
    modes: &[Mode],
    ch: &ClickHouseConfig,
    today_snapshot_secs: u64,
    heavy: Option<u32>,
    gather_ms: Option<u64>,
) -> Aggs {
    let mut out: Aggs = Vec::new();
    for m in modes {
        let cfg = config(*m, today_snapshot_secs, heavy, gather_ms);
        let agg = match out.first() {
            Some((_, first)) => {
                Aggregator::with_registry(cfg, ch.clone(), std::sync::Arc::clone(first.registry()))
            }
            None => Aggregator::new(cfg, ch.clone()),
        };
        out.push((*m, agg));
    }
    out
}

/// A credential never used before (`key:qbench-N`): its questions are all new to the budget
/// ledger, so in dp each one is charged (a SELECT and an INSERT into `privacy_spend`).
fn fresh_access() -> Access {
    Access::Site {
        site: SITE.to_string(),
        credential: fresh_credential(),
    }
}

fn fresh_credential() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("key:qbench-{}-{n}", std::process::id())
}

/// Questions the budget charge alone is timed with.
const CHARGES: usize = 20;

/// The budget charge alone (`Privacy::charge`, dp): [`CHARGES`] new questions of a fresh
/// credential, one after the other (each a SELECT of the credential's ledger of the day and
/// an INSERT into `privacy_spend`), then the same questions again (repeated: the SELECT
/// only). The medians, new and repeated.
async fn time_charges(agg: &Aggregator) -> Result<(Duration, Duration)> {
    let credential = fresh_credential();
    let now = chrono::Utc::now();
    let questions: Vec<[u8; 32]> = (0..CHARGES as u64)
        .map(|i| {
            let mut q = [0x71u8; 32];
            q[..8].copy_from_slice(&i.to_le_bytes());
            q
        })
        .collect();
    let mut times = [Vec::new(), Vec::new()];
    for (round, t) in times.iter_mut().enumerate() {
        for q in &questions {
            let started = Instant::now();
            let spend = agg
                .privacy()
                .charge(agg.client(), &credential, SITE, *q, 0.5, 1e9, now)
                .await
                .context("charging the bench's budget")?;
            t.push(started.elapsed());
            anyhow::ensure!(
                spend.repeated == (round == 1),
                "charge {round}: repeated is {}",
                spend.repeated
            );
        }
    }
    let [new, again] = times;
    Ok((median(new), median(again)))
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

/// The dashboard's first screen: name and request body (30 days, unfiltered).
fn standard_set() -> Vec<(&'static str, Value)> {
    first_screen("30d", None)
}

/// The interval the dashboard's chart asks for over `period` (as `defaultInterval` in
/// dashboards/web/app.js).
fn interval(period: &str) -> &'static str {
    match period {
        "day" => "hour",
        "6mo" | "12mo" | "year" | "all" => "month",
        _ => "day",
    }
}

/// The dashboard's first screen over `period`: its six panels' names and request bodies, each
/// with `filters` when given.
fn first_screen(period: &str, filters: Option<&Value>) -> Vec<(&'static str, Value)> {
    let panel = |metrics: &[&str], dim: &str| {
        json!({"site_id": SITE, "metrics": metrics, "date_range": period, "dimensions": [dim],
               "pagination": {"limit": 10, "offset": 0}, "include": {"total_rows": true}})
    };
    let mut set = vec![
        (
            "top stats",
            json!({"site_id": SITE, "metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"],
                   "date_range": period, "dimensions": []}),
        ),
        (
            "visitors over time",
            json!({"site_id": SITE, "metrics": ["visitors"], "date_range": period,
                   "dimensions": [format!("time:{}", interval(period))], "include": {"time_labels": true}}),
        ),
        ("top pages", panel(&["visitors", "pageviews"], "event:page")),
        ("sources", panel(&["visitors", "visits"], "visit:source")),
        ("countries", panel(&["visitors"], "visit:country")),
        ("devices", panel(&["visitors"], "visit:device")),
    ];
    if let Some(f) = filters {
        for (_, body) in &mut set {
            body["filters"] = f.clone();
        }
    }
    set
}

/// The periods `--periods` may name (the dashboard's relative ranges).
const PERIODS: &[&str] = &["day", "7d", "30d", "month", "6mo", "12mo", "year"];

/// The goal the bench registers for its site (the generator writes `Signup` events on 3 % of
/// visits' last pages), so `event:goal` filters are accepted.
const GOAL: &str = "Signup";

/// The filters of the filtered first screens: name (for `--filters`), what it selects, and
/// the `filters` array sent with each panel. Values are ones the generator writes
/// (schemas/src/gen/data.rs); the `visitors` column of the output shows each selects data.
fn filter_set() -> Vec<(&'static str, &'static str, Value)> {
    let is = |dim: &str, v: &str| json!(["is", dim, [v]]);
    let pricing = is("event:page", "/pricing");
    vec![
        ("page", "page is /pricing", json!([pricing])),
        (
            "entry_page",
            "entry page is /",
            json!([is("visit:entry_page", "/")]),
        ),
        (
            "exit_page",
            "exit page is /pricing",
            json!([is("visit:exit_page", "/pricing")]),
        ),
        (
            "hostname",
            "hostname is the site's (every hit)",
            json!([is("event:hostname", SITE)]),
        ),
        ("goal", "goal Signup", json!([is("event:goal", GOAL)])),
        (
            "event_name",
            "event name is Outbound Link: Click",
            json!([is("event:name", "Outbound Link: Click")]),
        ),
        (
            "prop",
            "custom property plan is pro",
            json!([is("event:props:plan", "pro")]),
        ),
        (
            "source",
            "source is Google",
            json!([is("visit:source", "Google")]),
        ),
        (
            "referrer",
            "referrer is Hacker News's URL",
            json!([is("visit:referrer", "https://news.ycombinator.com/")]),
        ),
        (
            "utm_source",
            "UTM source is newsletter",
            json!([is("visit:utm_source", "newsletter")]),
        ),
        (
            "utm_campaign",
            "UTM campaign is weekly-digest",
            json!([is("visit:utm_campaign", "weekly-digest")]),
        ),
        (
            "channel",
            "channel is Organic Social",
            json!([is("visit:channel", "Organic Social")]),
        ),
        (
            "country",
            "country is DE",
            json!([is("visit:country", "DE")]),
        ),
        (
            "region",
            "region is DE-BY",
            json!([is("visit:region", "DE-BY")]),
        ),
        (
            "city",
            "city is London (2643743)",
            json!([is("visit:city", "2643743")]),
        ),
        (
            "device",
            "device is Mobile",
            json!([is("visit:device", "Mobile")]),
        ),
        (
            "browser",
            "browser is Chrome",
            json!([is("visit:browser", "Chrome")]),
        ),
        ("os", "OS is Android", json!([is("visit:os", "Android")])),
        (
            "page_contains",
            "page contains \"blog\"",
            json!([["contains", "event:page", ["blog"]]]),
        ),
        (
            "page_matches",
            "page matches ^/docs/",
            json!([["matches", "event:page", ["^/docs/"]]]),
        ),
        (
            "has_done",
            "has done event Signup",
            json!([["has_done", is("event:name", "Signup")]]),
        ),
        (
            "page+source",
            "page is /pricing and source is Google",
            json!([pricing, is("visit:source", "Google")]),
        ),
        (
            "source+device",
            "source is Google and device is Mobile",
            json!([is("visit:source", "Google"), is("visit:device", "Mobile")]),
        ),
        (
            "goal+country",
            "goal Signup and country is DE",
            json!([is("event:goal", GOAL), is("visit:country", "DE")]),
        ),
        (
            "page_or",
            "page is /pricing or page is /blog",
            json!([["or", [pricing, is("event:page", "/blog")]]]),
        ),
        (
            "page_not",
            "not (page is /pricing)",
            json!([["not", pricing]]),
        ),
    ]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
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
    if let Some(db) = &a.database {
        ch.database = db.clone();
        veil_schemas::migrate(&ch).await.context("migrating")?;
        let have = count_site(&ch).await?;
        anyhow::ensure!(
            have == size,
            "--database {db} holds {have} events of {SITE}, not {size}"
        );
        return Ok(ch);
    }
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

/// Times every query of the standard set in each mode of `aggs`, reading rollups or
/// (`include.rollups: false`) raw events only: per query one warm-up in each mode, then
/// `--runs` runs in each, the modes alternating run by run (so a drift of the machine hits
/// both alike). One `Timings` per mode, in `aggs`' order; an `Err` for a query the API
/// refused (with why). In dp every run after the first asks a question already asked: free
/// for the budget (the ledger is still read) and the same noise, drawn again.
async fn time_set(aggs: &Aggs, a: &Args, rollups: bool) -> Result<Vec<Timings>> {
    let mut out: Vec<Timings> = aggs.iter().map(|_| Vec::new()).collect();
    for (name, mut body) in standard_set() {
        if let Some(o) = body.as_object_mut() {
            let include = o.entry("include").or_insert_with(|| json!({}));
            include["rollups"] = json!(rollups);
        }
        let bytes = serde_json::to_vec(&body)?;
        let mut times: Vec<Vec<Duration>> = aggs.iter().map(|_| Vec::new()).collect();
        let mut failed: Vec<Option<String>> = aggs.iter().map(|_| None).collect();
        let mut done = vec![false; aggs.len()];
        for i in 0..=a.runs {
            for (m, (_, agg)) in aggs.iter().enumerate() {
                if done[m] {
                    continue;
                }
                let r = ask(agg, &Access::Admin, &bytes).await;
                match r.answer {
                    Ok(_) if i > 0 => times[m].push(r.took),
                    Ok(_) if r.took.as_secs_f64() > a.max_query_secs => {
                        // Too slow to repeat: the warm-up run is the measurement.
                        times[m].push(r.took);
                        done[m] = true;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        failed[m] = Some(e);
                        done[m] = true;
                    }
                }
            }
        }
        for (m, t) in out.iter_mut().enumerate() {
            t.push((
                name,
                match failed[m].take() {
                    Some(e) => Err(e),
                    None => Ok((median(times[m].clone()), times[m].len())),
                },
            ));
        }
    }
    Ok(out)
}

/// What one answer said: the source it was read from (`meta.source`) and its first row's
/// first metric (the visitors, for the top stats).
#[derive(Debug, Clone)]
struct Answer {
    source: String,
    first: Option<f64>,
}

/// One query's run: how long it took and what it answered, or why it failed (shortened).
#[derive(Debug, Clone)]
struct Ask {
    took: Duration,
    answer: Result<Answer, String>,
}

/// An error text on one line, at most 160 characters (ClickHouse's run long).
fn short(s: &str) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() <= 160 {
        one
    } else {
        format!("{}…", one.chars().take(159).collect::<String>())
    }
}

/// Sends one query through `Aggregator::query_as` (the Stats API's code path, in the
/// aggregator's privacy mode) as `access`, and reads its answer.
async fn ask(agg: &Aggregator, access: &Access, body: &[u8]) -> Ask {
    let t = Instant::now();
    let r = agg.query_as(access, body, chrono::Utc::now()).await;
    let took = t.elapsed();
    let answer = match r {
        Err(e) => Err(short(&format!("{}: {e}", e.status().as_u16()))),
        Ok(resp) if !resp.status().is_success() => Err(format!("HTTP {}", resp.status())),
        Ok(resp) => {
            let bytes = match resp.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(never) => match never {},
            };
            serde_json::from_slice::<Value>(&bytes)
                .map(|doc| Answer {
                    source: doc["meta"]["source"].as_str().unwrap_or("?").to_string(),
                    first: doc["results"][0]["metrics"][0].as_f64(),
                })
                .map_err(|e| format!("unreadable answer: {e}"))
        }
    };
    Ask { took, answer }
}

/// The panels sent at once as `access`, as the dashboard's panels fetch them: the time until
/// the last answer, and each panel's run.
async fn load_once(agg: &Aggregator, access: &Access, bodies: &[Vec<u8>]) -> (Duration, Vec<Ask>) {
    let t = Instant::now();
    let tasks: Vec<_> = bodies
        .iter()
        .map(|b| {
            let (agg, access, b) = (agg.clone(), access.clone(), b.clone());
            tokio::spawn(async move { ask(&agg, &access, &b).await })
        })
        .collect();
    let mut runs = Vec::new();
    for task in tasks {
        runs.push(task.await.unwrap_or_else(|e| Ask {
            took: t.elapsed(),
            answer: Err(short(&format!("the query task failed: {e}"))),
        }));
    }
    (t.elapsed(), runs)
}

/// A first screen as the dashboard loads it, timed in one privacy mode.
#[derive(Debug)]
struct Screen {
    mode: Mode,
    /// The filter's name (`unfiltered` for none).
    filter: &'static str,
    period: String,
    /// Median time until the last panel answered, over `loads` loads.
    load: Duration,
    loads: usize,
    /// Each panel's answer in the last load; a panel that failed in any load keeps its error.
    panels: Vec<Ask>,
    /// Each panel sent alone: its median time (and over how many runs), or why it failed;
    /// empty when not timed.
    alone: Vec<Result<(Duration, usize), String>>,
}

impl Screen {
    fn failed(&self) -> usize {
        self.panels.iter().filter(|r| r.answer.is_err()).count()
    }
}

/// Times the first screen `set` (panel names and bodies) in each mode of `aggs`: one warm-up
/// load per mode, then `a.runs` loads per mode, the modes alternating (the median is
/// reported), unless a mode's warm-up failed or took longer than `--max-query-secs` (then it
/// is that mode's measurement); then, if `alone`, each panel by itself (`a.runs` runs per
/// mode, alternating, the median; one when it fails or is too slow to repeat). Asked as the
/// admin, or (`fresh`) each load as a credential never used before, so that in dp every
/// question of every load is new to the budget ledger (charged: SELECT and INSERT). One
/// `Screen` per mode, in `aggs`' order.
#[allow(clippy::too_many_arguments)]
async fn time_screen(
    aggs: &Aggs,
    a: &Args,
    filter: &'static str,
    period: &str,
    set: &[(&'static str, Value)],
    alone: bool,
    fresh: bool,
) -> Result<Vec<Screen>> {
    let bodies: Vec<Vec<u8>> = set
        .iter()
        .map(|(_, b)| serde_json::to_vec(b))
        .collect::<Result<_, _>>()?;
    let n = aggs.len();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); n];
    let mut panels: Vec<Vec<Ask>> = vec![Vec::new(); n];
    let mut done = vec![false; n];
    for i in 0..=a.runs {
        for (m, (_, agg)) in aggs.iter().enumerate() {
            if done[m] {
                continue;
            }
            let access = if fresh { fresh_access() } else { Access::Admin };
            let (took, runs) = load_once(agg, &access, &bodies).await;
            let kept = &mut panels[m];
            if kept.is_empty() {
                *kept = runs;
            } else {
                for (k, new) in kept.iter_mut().zip(runs) {
                    if k.answer.is_ok() {
                        *k = new;
                    }
                }
            }
            if i > 0 {
                times[m].push(took);
            } else if took.as_secs_f64() > a.max_query_secs
                || kept.iter().any(|r| r.answer.is_err())
            {
                times[m].push(took);
                done[m] = true;
            }
        }
    }
    let mut singles: Vec<Vec<Result<(Duration, usize), String>>> = vec![Vec::new(); n];
    if alone {
        for b in &bodies {
            let mut took: Vec<Vec<Duration>> = vec![Vec::new(); n];
            let mut failed: Vec<Option<String>> = vec![None; n];
            let mut done = vec![false; n];
            for _ in 0..a.runs.max(1) {
                for (m, (_, agg)) in aggs.iter().enumerate() {
                    if done[m] {
                        continue;
                    }
                    let r = ask(agg, &Access::Admin, b).await;
                    match r.answer {
                        Err(e) => {
                            failed[m] = Some(e);
                            done[m] = true;
                        }
                        Ok(_) => {
                            took[m].push(r.took);
                            done[m] = r.took.as_secs_f64() > a.max_query_secs;
                        }
                    }
                }
            }
            for m in 0..n {
                singles[m].push(match failed[m].take() {
                    Some(e) => Err(e),
                    None => Ok((median(took[m].clone()), took[m].len())),
                });
            }
        }
    }
    Ok(aggs
        .iter()
        .zip(times)
        .zip(panels)
        .zip(singles)
        .map(|((((mode, _), times), panels), alone)| Screen {
            mode: *mode,
            filter,
            period: period.to_string(),
            load: median(times.clone()),
            loads: times.len(),
            panels,
            alone,
        })
        .collect())
}

/// p-th percentile (nearest rank) of `v`, which must not be empty.
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// What the end of the run says about one size.
struct Summary {
    size: String,
    mode: Mode,
    unfiltered: Screen,
    screens: Vec<Screen>,
}

/// The filters `--filters` selects, in the order of [`filter_set`].
fn selected_filters(names: &[String]) -> Result<Vec<(&'static str, &'static str, Value)>> {
    let all = filter_set();
    let names: Vec<&str> = names.iter().map(|n| n.trim()).collect();
    match names.as_slice() {
        ["all"] => return Ok(all),
        ["none"] | [] => return Ok(Vec::new()),
        _ => {}
    }
    if let Some(n) = names
        .iter()
        .find(|n| !all.iter().any(|(name, _, _)| name == *n))
    {
        bail!(
            "--filters: unknown filter {n:?}; use all, none or some of: {}",
            all.iter()
                .map(|(n, _, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(all
        .into_iter()
        .filter(|(name, _, _)| names.contains(name))
        .collect())
}

/// The periods `--periods` names, checked.
fn selected_periods(names: &[String]) -> Result<Vec<String>> {
    let periods: Vec<String> = names.iter().map(|p| p.trim().to_string()).collect();
    if let Some(p) = periods.iter().find(|p| !PERIODS.contains(&p.as_str())) {
        bail!(
            "--periods: unknown period {p:?}; use some of {}",
            PERIODS.join(", ")
        );
    }
    Ok(periods)
}

async fn bench(base: ClickHouseConfig, a: Args) -> Result<()> {
    let sizes: Vec<u64> = a
        .sizes
        .iter()
        .map(|s| parse_size(s))
        .collect::<Result<_>>()?;
    let filters = selected_filters(&a.filters)?;
    let periods = selected_periods(&a.periods)?;
    let modes = a.privacy.modes();
    let mut summaries = Vec::new();
    for size in sizes {
        let ch = prepare(&base, size, &a).await?;
        let live = aggregators(&modes, &ch, 0, a.max_heavy_queries, a.gather_ms);
        let Some((_, agg)) = live.first() else {
            bail!("no privacy mode to time");
        };
        // The goal the `goal` filters name, stored in the database's registry as the admin API
        // would store it (flag settings otherwise); the aggregators share that registry.
        let mut settings = agg.config().flag_settings(SITE);
        settings.goals = vec![json!({"name": GOAL, "event_name": "Signup"})];
        settings.validate().context("the bench site's goal")?;
        agg.registry()
            .put_site(SITE, settings)
            .await
            .context("registering the bench site's goal")?;
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
                    "SELECT toString(max(timestamp), 'UTC') FROM events \
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
            let skipped: Timings = standard_set()
                .into_iter()
                .map(|(n, _)| (n, Err("skipped (--skip-raw)".to_string())))
                .collect();
            vec![skipped; modes.len()]
        } else {
            time_set(&live, &a, false).await?
        };
        let rolled = time_set(&live, &a, true).await?;
        let load = time_screen(
            &live,
            &a,
            "unfiltered",
            "30d",
            &standard_set(),
            false,
            false,
        )
        .await?;
        // The same loads with every question new to the budget ledger (dp: each charged).
        let fresh =
            time_screen(&live, &a, "unfiltered", "30d", &standard_set(), false, true).await?;
        // The same with today's snapshot (as `veil aggregator` reads by default): one taken
        // now, and reports that read it (the data does not change meanwhile, so it misses
        // nothing and every run reads it).
        let snap_aggs = aggregators(
            &modes,
            &ch,
            veil_aggregator::snapshot::MAX_AGE_SECS,
            a.max_heavy_queries,
            a.gather_ms,
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
        let snapped = time_set(&snap_aggs, &a, true).await?;
        let snap_load = time_screen(
            &snap_aggs,
            &a,
            "unfiltered",
            "30d",
            &standard_set(),
            false,
            false,
        )
        .await?;
        let charges = match live.iter().find(|(m, _)| *m == Mode::Dp) {
            Some((_, dp)) => Some(time_charges(dp).await?),
            None => None,
        };
        let unfiltered = Unfiltered {
            size: label(size),
            modes: modes.clone(),
            raw,
            rolled,
            snapped,
            load,
            fresh,
            snap_load,
            snap_took,
            charges,
        };
        unfiltered.print(&a);
        let mut screens: Vec<Vec<Screen>> = modes.iter().map(|_| Vec::new()).collect();
        if !filters.is_empty() {
            let mut keep = |v: Vec<Screen>| {
                for (m, s) in v.into_iter().enumerate() {
                    progress(&label(size), &s);
                    screens[m].push(s);
                }
            };
            for period in &periods {
                let set = first_screen(period, None);
                keep(time_screen(&live, &a, "unfiltered", period, &set, false, false).await?);
                for (name, _, f) in &filters {
                    let set = first_screen(period, Some(f));
                    let alone = !a.skip_singles;
                    keep(time_screen(&live, &a, name, period, &set, alone, false).await?);
                }
            }
            print_filtered(&label(size), &a, &filters, &periods, &screens);
        }
        for ((mode, unfiltered), screens) in modes.iter().zip(unfiltered.load).zip(screens) {
            summaries.push(Summary {
                size: label(size),
                mode: *mode,
                unfiltered,
                screens,
            });
        }
    }
    print_worst(&summaries);
    Ok(())
}

/// One size's unfiltered first screen (30 days), each field one entry per mode timed.
struct Unfiltered {
    size: String,
    modes: Vec<Mode>,
    /// Each query alone on raw events, on rollups read live, and with today's snapshot.
    raw: Vec<Timings>,
    rolled: Vec<Timings>,
    snapped: Vec<Timings>,
    /// The six at once (live), as the admin: in dp every measured load repeats its questions.
    load: Vec<Screen>,
    /// The six at once (live), each load as a new credential: in dp every question is new.
    fresh: Vec<Screen>,
    /// The six at once with today's snapshot.
    snap_load: Vec<Screen>,
    snap_took: Duration,
    /// dp's budget charge alone: new and repeated questions (medians).
    charges: Option<(Duration, Duration)>,
}

/// The sum of a set's medians, and whether every query answered.
fn total(t: &Timings) -> (f64, bool) {
    let ok = t.iter().all(|(_, r)| r.is_ok());
    (
        t.iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .map(|(d, _)| ms(*d))
            .fold(0.0, |sum, x| sum + x),
        ok,
    )
}

/// `dp ÷ exact` of two times in ms, or `–`.
fn ratio(exact: Option<f64>, dp: Option<f64>) -> String {
    match (exact, dp) {
        (Some(e), Some(d)) if e > 0.0 => format!("{:.2}", d / e),
        _ => "–".to_string(),
    }
}

impl Unfiltered {
    /// One table and one JSON line per mode; with both modes, the table of dp ÷ exact.
    fn print(&self, a: &Args) {
        for (m, mode) in self.modes.iter().enumerate() {
            self.print_mode(a, m, *mode);
        }
        if let (Some(e), Some(d)) = (
            self.modes.iter().position(|m| *m == Mode::Exact),
            self.modes.iter().position(|m| *m == Mode::Dp),
        ) {
            self.print_ratios(a, e, d);
        }
    }

    fn print_mode(&self, a: &Args, m: usize, mode: Mode) {
        let (raw, rolled, snapped) = (&self.raw[m], &self.rolled[m], &self.snapped[m]);
        let (load, fresh, snap_load) = (&self.load[m], &self.fresh[m], &self.snap_load[m]);
        println!(
            "\n### {} events, 30 days, privacy {}, median of {} runs\n",
            self.size,
            mode_name(mode),
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
        for (((name, r), (_, q)), (_, sq)) in raw.iter().zip(rolled).zip(snapped) {
            println!("| {name} | {} | {} | {} |", cell(r), cell(q), cell(sq));
        }
        let ((tr, okr), (tq, okq), (ts, oks)) = (total(raw), total(rolled), total(snapped));
        let mark = |ok: bool| if ok { "" } else { " (incomplete)" };
        let raw_total = if a.skip_raw {
            "skipped".to_string()
        } else {
            format!("**{tr:.1}**{}", mark(okr))
        };
        println!(
            "| **full set** | {raw_total} | **{tq:.1}**{} | **{ts:.1}**{} |",
            mark(okq),
            mark(oks)
        );
        println!(
            "| **dashboard load** (the six at once, as the dashboard sends them) | | **{:.1}**{} | **{:.1}**{} |",
            ms(load.load),
            failed_mark(load),
            ms(snap_load.load),
            failed_mark(snap_load)
        );
        println!(
            "| **dashboard load, every question new** (each load a new credential{}) | | **{:.1}**{} | |",
            if mode == Mode::Dp { ": six budget charges" } else { ": no budget in exact mode" },
            ms(fresh.load),
            failed_mark(fresh),
        );
        if mode == Mode::Dp {
            println!(
                "\nIn dp the first run of each query (the warm-up) is a new question; the timed runs \
                 repeat it: free for the budget (its ledger is still read), the SQL and the noise \
                 run in full. The last row times loads whose questions are all new."
            );
            if let Some((new, again)) = self.charges {
                println!(
                    "\nThe budget charge alone (`Privacy::charge`, {CHARGES} questions of a fresh \
                     credential one after the other, then the same again), medians: a new question \
                     {:.1} ms (SELECT of the ledger + INSERT into `privacy_spend`), a repeated one \
                     {:.1} ms (the SELECT). One aggregator charges one question at a time.",
                    ms(new),
                    ms(again)
                );
            }
        }
        println!(
            "\nToday's snapshot took {:.1} ms to take (in the background, once per refresh).",
            ms(self.snap_took)
        );
        let as_json = |t: &Timings| {
            t.iter()
                .map(|(n, r)| json!({"query": n, "median_ms": r.as_ref().ok().map(|(d, _)| ms(*d)), "runs": r.as_ref().ok().map(|(_, k)| *k), "error": r.as_ref().err()}))
                .collect::<Vec<_>>()
        };
        println!(
            "{}",
            json!({
                "events": self.size,
                "privacy": mode_name(mode),
                "runs": a.runs,
                "raw": as_json(raw),
                "rollups": as_json(rolled),
                "raw_total_ms": tr,
                "rollups_total_ms": tq,
                "dashboard_load_ms": ms(load.load),
                "dashboard_load_failed": load.failed(),
                "dashboard_load_new_questions_ms": ms(fresh.load),
                "dashboard_load_new_questions_failed": fresh.failed(),
                "snapshot": as_json(snapped),
                "snapshot_total_ms": ts,
                "snapshot_dashboard_load_ms": ms(snap_load.load),
                "snapshot_take_ms": ms(self.snap_took),
                "charge_new_ms": self.charges.filter(|_| mode == Mode::Dp).map(|(n, _)| ms(n)),
                "charge_repeated_ms": self.charges.filter(|_| mode == Mode::Dp).map(|(_, r)| ms(r)),
            })
        );
    }

    /// Exact and dp side by side with dp ÷ exact (`e`, `d`: the modes' indices).
    fn print_ratios(&self, a: &Args, e: usize, d: usize) {
        println!(
            "\n### {} events, 30 days: dp ÷ exact (same run, the modes' runs alternating, median of {} runs each)\n",
            self.size, a.runs
        );
        println!("| query | raw events: exact / dp (ms) | dp ÷ exact | rollups, live: exact / dp (ms) | dp ÷ exact | today's snapshot: exact / dp (ms) | dp ÷ exact |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        let t = |r: &Result<(Duration, usize), String>| r.as_ref().ok().map(|(x, _)| ms(*x));
        let pair = |x: Option<f64>, y: Option<f64>| {
            let f = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
            format!("{} / {}", f(x), f(y))
        };
        let sets = [&self.raw, &self.rolled, &self.snapped];
        for (i, (name, _)) in self.rolled[e].iter().enumerate() {
            let cells: Vec<String> = sets
                .iter()
                .map(|s| {
                    let (x, y) = (t(&s[e][i].1), t(&s[d][i].1));
                    format!("{} | {}", pair(x, y), ratio(x, y))
                })
                .collect();
            println!("| {name} | {} |", cells.join(" | "));
        }
        let totals: Vec<String> = sets
            .iter()
            .map(|s| {
                let ((x, okx), (y, oky)) = (total(&s[e]), total(&s[d]));
                let answered = |t: &Timings| t.iter().any(|(_, r)| r.is_ok());
                if !answered(&s[e]) && !answered(&s[d]) {
                    return "skipped | –".to_string();
                }
                if !(okx && oky) {
                    return format!("{} (incomplete) | –", pair(Some(x), Some(y)));
                }
                format!(
                    "**{}** | **{}**",
                    pair(Some(x), Some(y)),
                    ratio(Some(x), Some(y))
                )
            })
            .collect();
        println!("| **full set** | {} |", totals.join(" | "));
        let loads = |x: &Screen, y: &Screen| {
            let ok = x.failed() == 0 && y.failed() == 0;
            let (x, y) = (Some(ms(x.load)), Some(ms(y.load)));
            if ok {
                format!("**{}** | **{}**", pair(x, y), ratio(x, y))
            } else {
                format!("{} (panels failed) | –", pair(x, y))
            }
        };
        println!(
            "| **dashboard load** (the six at once) | | | {} | {} |",
            loads(&self.load[e], &self.load[d]),
            loads(&self.snap_load[e], &self.snap_load[d])
        );
        println!(
            "| **dashboard load, every question new** | | | {} | | |",
            loads(&self.fresh[e], &self.fresh[d])
        );
    }
}

/// ` (k of n failed)` after a load's time when panels failed.
fn failed_mark(s: &Screen) -> String {
    match s.failed() {
        0 => String::new(),
        k => format!(" (**{k} of {} failed**)", s.panels.len()),
    }
}

fn progress(size: &str, s: &Screen) {
    eprintln!(
        "veil-query-bench: {size} {} {} {}: {:.1} ms{}",
        mode_name(s.mode),
        s.period,
        s.filter,
        ms(s.load),
        match s.failed() {
            0 => String::new(),
            k => format!(", {k} panel(s) failed"),
        }
    );
}

/// Markdown-safe table cell text.
fn cell_text(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The panels each alone, over one size's filtered screens: the times of those that
/// answered, and how many failed.
fn singles(screens: &[Screen]) -> (Vec<f64>, usize) {
    let mut ok = Vec::new();
    let mut failed = 0;
    for s in screens.iter().filter(|s| s.filter != "unfiltered") {
        for r in &s.alone {
            match r {
                Ok((d, _)) => ok.push(ms(*d)),
                Err(_) => failed += 1,
            }
        }
    }
    (ok, failed)
}

/// The first panel's first metric of the screen's last load (the visitors of the top stats).
fn visitors(s: &Screen) -> String {
    match &s.panels.first().map(|r| &r.answer) {
        Some(Ok(Answer { first: Some(v), .. })) => format!("{v:.0}"),
        _ => "–".to_string(),
    }
}

/// The slowest panel alone: its median in ms and its name.
fn slowest(s: &Screen, names: &[&'static str]) -> Option<(f64, &'static str)> {
    s.alone
        .iter()
        .zip(names)
        .filter_map(|(r, n)| r.as_ref().ok().map(|(d, _)| (ms(*d), *n)))
        .max_by(|x, y| x.0.total_cmp(&y.0))
}

/// Per period, a table of the filtered first screens: with one mode as before (times,
/// failures, sources); with exact and dp, the two side by side with dp ÷ exact, and the
/// period's sum of first-screen times in each and its ratio. Then the failed panels, the
/// panels' times alone and a JSON line, per mode. `screens` holds one list per mode timed.
fn print_filtered(
    size: &str,
    a: &Args,
    filters: &[(&'static str, &'static str, Value)],
    periods: &[String],
    screens: &[Vec<Screen>],
) {
    let names: Vec<&'static str> = standard_set().iter().map(|(n, _)| *n).collect();
    let what = |f: &str| {
        filters
            .iter()
            .find(|(n, _, _)| *n == f)
            .map_or("no filter", |(_, w, _)| *w)
    };
    let modes: Vec<Mode> = screens
        .iter()
        .filter_map(|v| v.first().map(|s| s.mode))
        .collect();
    let exact = modes.iter().position(|m| *m == Mode::Exact);
    let dp = modes.iter().position(|m| *m == Mode::Dp);
    let load_text = |s: &Screen| {
        if s.loads == 1 && a.runs > 1 {
            format!("{:.1} (1 load)", ms(s.load))
        } else {
            format!("{:.1}", ms(s.load))
        }
    };
    let failed_text = |s: &Screen| match s.failed() {
        0 => "0".to_string(),
        k => format!("**{k}**"),
    };
    let sources = |s: &Screen| {
        s.panels
            .iter()
            .map(|r| match &r.answer {
                Ok(ans) => ans.source.clone(),
                Err(_) => "**failed**".to_string(),
            })
            .collect::<Vec<_>>()
            .join(" · ")
    };
    for period in periods {
        if let (Some(e), Some(d)) = (exact, dp) {
            println!(
                "\n### {size} events, {period}, filtered first screens, exact and dp (six panels at once, median of {} loads, the modes alternating)\n",
                a.runs
            );
            println!(
                "| filter | visitors (exact) | first screen: exact / dp (ms) | dp ÷ exact | slowest panel alone: exact / dp (ms) | failed: exact / dp | source of each panel ({}) |",
                names.join(" · ")
            );
            println!("|---|---:|---:|---:|---:|---:|---|");
            let (mut sum_e, mut sum_d, mut ratios) = (0.0, 0.0, Vec::new());
            let pairs = screens[e]
                .iter()
                .zip(&screens[d])
                .filter(|(x, _)| &x.period == period);
            for (x, y) in pairs {
                let (le, ld) = (ms(x.load), ms(y.load));
                if x.failed() == 0 && y.failed() == 0 {
                    sum_e += le;
                    sum_d += ld;
                    ratios.push(ld / le.max(1e-9));
                }
                let alone = match (slowest(x, &names), slowest(y, &names)) {
                    (Some((te, ne)), Some((td, nd))) if ne == nd => {
                        format!("{te:.1} / {td:.1} ({ne})")
                    }
                    (Some((te, ne)), Some((td, nd))) => format!("{te:.1} ({ne}) / {td:.1} ({nd})"),
                    _ => "–".to_string(),
                };
                println!(
                    "| `{}`: {} | {} | {} / {} | {} | {alone} | {} / {} | {} |",
                    x.filter,
                    cell_text(what(x.filter)),
                    visitors(x),
                    load_text(x),
                    load_text(y),
                    ratio(Some(le), Some(ld)),
                    failed_text(x),
                    failed_text(y),
                    sources(x)
                );
            }
            if !ratios.is_empty() {
                println!(
                    "\nOver {period}: the {} first screens where no panel failed took {sum_e:.1} ms in exact and {sum_d:.1} ms in dp together (dp ÷ exact {}); per screen, dp ÷ exact ranges {:.2}–{:.2}, median {:.2}.",
                    ratios.len(),
                    ratio(Some(sum_e), Some(sum_d)),
                    percentile(&ratios, 0.0),
                    percentile(&ratios, 1.0),
                    percentile(&ratios, 0.5)
                );
            }
            continue;
        }
        for v in screens {
            let Some(mode) = v.first().map(|s| s.mode) else {
                continue;
            };
            println!(
                "\n### {size} events, {period}, filtered first screens, privacy {} (six panels at once, median of {} loads)\n",
                mode_name(mode),
                a.runs
            );
            println!(
                "| filter | visitors | first screen (ms) | slowest panel alone (ms) | failed | source of each panel ({}) |",
                names.join(" · ")
            );
            println!("|---|---:|---:|---:|---:|---|");
            for s in v.iter().filter(|s| &s.period == period) {
                let alone =
                    slowest(s, &names).map_or("–".to_string(), |(t, n)| format!("{t:.1} ({n})"));
                println!(
                    "| `{}`: {} | {} | {} | {alone} | {} | {} |",
                    s.filter,
                    cell_text(what(s.filter)),
                    visitors(s),
                    load_text(s),
                    failed_text(s),
                    sources(s)
                );
            }
        }
    }
    for v in screens {
        let Some(mode) = v.first().map(|s| s.mode) else {
            continue;
        };
        let failures: Vec<String> = v
            .iter()
            .flat_map(|s| {
                s.panels.iter().zip(&names).filter_map(move |(r, n)| {
                    r.answer.as_ref().err().map(|e| {
                        format!(
                            "- `{}` {} {n} ({:.1} s): {}",
                            s.filter,
                            s.period,
                            r.took.as_secs_f64(),
                            e
                        )
                    })
                })
            })
            .collect();
        if failures.is_empty() {
            println!("\nPrivacy {}: no panel failed.", mode_name(mode));
        } else {
            println!(
                "\nPrivacy {}: failed panels ({}):\n",
                mode_name(mode),
                failures.len()
            );
            for f in &failures {
                println!("{f}");
            }
        }
        let (ok, failed) = singles(v);
        if !ok.is_empty() || failed > 0 {
            println!(
                "\nPrivacy {}: each filtered panel alone ({} queries, median of {} runs each): p50 {}, p95 {}, failed {failed}.",
                mode_name(mode),
                ok.len() + failed,
                a.runs.max(1),
                if ok.is_empty() { "–".to_string() } else { format!("{:.1} ms", percentile(&ok, 0.5)) },
                if ok.is_empty() { "–".to_string() } else { format!("{:.1} ms", percentile(&ok, 0.95)) },
            );
        }
        let rows: Vec<Value> = v
            .iter()
            .map(|s| {
                json!({
                    "filter": s.filter,
                    "period": s.period,
                    "load_ms": ms(s.load),
                    "loads": s.loads,
                    "panels": s.panels.iter().zip(&names).map(|(r, n)| json!({
                        "panel": n,
                        "ms_in_load": ms(r.took),
                        "source": r.answer.as_ref().ok().map(|x| x.source.clone()),
                        "error": r.answer.as_ref().err(),
                    })).collect::<Vec<_>>(),
                    "alone_ms": s.alone.iter().map(|r| r.as_ref().ok().map(|(d, _)| ms(*d))).collect::<Vec<_>>(),
                    "alone_errors": s.alone.iter().map(|r| r.as_ref().err()).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "events": size,
                "privacy": mode_name(mode),
                "runs": a.runs,
                "filtered": rows,
                "alone_p50_ms": (!ok.is_empty()).then(|| percentile(&ok, 0.5)),
                "alone_p95_ms": (!ok.is_empty()).then(|| percentile(&ok, 0.95)),
                "alone_failed": failed,
            })
        );
    }
}

/// The end of the run: per size, the unfiltered first screen, the slowest filtered one, the
/// failures and the panels' percentiles alone, against issue 21's targets (filtered first
/// screen ≤ 1 s, p95 of filtered queries ≤ 500 ms, unfiltered first screen ≤ 150 ms live).
fn print_worst(summaries: &[Summary]) {
    println!("\n## Worst cases\n");
    let verdict = |ok: bool| if ok { "meets" } else { "**misses**" };
    for s in summaries {
        let u = ms(s.unfiltered.load);
        println!(
            "- **{}, privacy {}**: unfiltered first screen (30d, live) {u:.1} ms{} ({} the 150 ms target)",
            s.size,
            mode_name(s.mode),
            failed_mark(&s.unfiltered),
            verdict(u <= 150.0 && s.unfiltered.failed() == 0)
        );
        let filtered: Vec<&Screen> = s
            .screens
            .iter()
            .filter(|x| x.filter != "unfiltered")
            .collect();
        let Some(worst) = filtered.iter().max_by(|x, y| x.load.cmp(&y.load)) else {
            println!("  - no filtered first screens (--filters none)");
            continue;
        };
        println!(
            "  - slowest filtered first screen: `{}` over {}: {:.1} ms{} ({} the 1 s target)",
            worst.filter,
            worst.period,
            ms(worst.load),
            failed_mark(worst),
            verdict(ms(worst.load) <= 1000.0)
        );
        for x in s.screens.iter().filter(|x| x.filter == "unfiltered") {
            println!(
                "  - unfiltered first screen over {}: {:.1} ms{}",
                x.period,
                ms(x.load),
                failed_mark(x)
            );
        }
        let failed: Vec<&&Screen> = filtered.iter().filter(|x| x.failed() > 0).collect();
        let panels: usize = filtered.iter().map(|x| x.panels.len()).sum();
        println!(
            "  - failed panels: {} of {panels}, in {} of {} filtered first screens{}",
            failed.iter().map(|x| x.failed()).sum::<usize>(),
            failed.len(),
            filtered.len(),
            if failed.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    failed
                        .iter()
                        .map(|x| format!("`{}` {}", x.filter, x.period))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        if let Some(e) = failed
            .iter()
            .flat_map(|x| x.panels.iter())
            .find_map(|r| r.answer.as_ref().err())
        {
            println!("  - first failure: {e}");
        }
        let (ok, nfailed) = singles(&s.screens);
        if !ok.is_empty() {
            let p95 = percentile(&ok, 0.95);
            println!(
                "  - filtered panels alone: p50 {:.1} ms, p95 {p95:.1} ms ({} the 500 ms target), {nfailed} failed",
                percentile(&ok, 0.5),
                verdict(p95 <= 500.0 && nfailed == 0)
            );
        } else if nfailed > 0 {
            println!("  - filtered panels alone: all {nfailed} failed");
        }
    }
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
    // Flags checked before a server starts.
    selected_filters(&a.filters)?;
    selected_periods(&a.periods)?;
    // The managed server is started from the main thread, which lives as long as the process.
    let mut tmp = None;
    let mut managed = None;
    let ch = match &a.clickhouse_url {
        Some(u) => ClickHouseConfig::new(u.clone(), "veil"),
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
            let ch = server.config("veil");
            managed = Some(server);
            ch
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(bench(ch, a));
    drop(rt);
    if let Some(mut m) = managed {
        m.stop();
    }
    drop(tmp);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_shortened_to_one_line() {
        assert_eq!(short("a\n  b\tc"), "a b c");
        let long = "x".repeat(500);
        let s = short(&long);
        assert_eq!(s.chars().count(), 160);
        assert!(s.ends_with('…'));
    }

    #[test]
    fn privacy_modes_and_their_configs() {
        assert_eq!(PrivacyChoice::Both.modes(), [Mode::Exact, Mode::Dp]);
        assert_eq!(PrivacyChoice::Dp.modes(), [Mode::Dp]);
        assert_eq!(PrivacyChoice::Exact.modes(), [Mode::Exact]);
        for m in [Mode::Exact, Mode::Dp] {
            let c = config(m, 0, None, None);
            assert_eq!(c.privacy.mode, m);
            assert_eq!(c.privacy.epsilon_day, DP_EPSILON_DAY);
            assert!(c.privacy.validate().is_ok());
            assert!(c.validate().is_ok());
        }
        assert_eq!(ratio(Some(100.0), Some(125.0)), "1.25");
        assert_eq!(ratio(Some(0.0), Some(1.0)), "–");
        assert_eq!(ratio(None, Some(1.0)), "–");
        assert_ne!(fresh_credential(), fresh_credential());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 10.0);
        assert_eq!(percentile(&v, 0.95), 19.0);
        assert_eq!(percentile(&[7.0], 0.95), 7.0);
    }

    #[test]
    fn filters_and_periods_are_checked() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            selected_filters(&names(&["all"])).map(|v| v.len()).ok(),
            Some(filter_set().len())
        );
        assert!(selected_filters(&names(&["none"]))
            .map(|v| v.is_empty())
            .unwrap_or(false));
        let two = selected_filters(&names(&["source", "page"])).unwrap_or_default();
        assert_eq!(
            two.iter().map(|(n, _, _)| *n).collect::<Vec<_>>(),
            ["page", "source"]
        );
        assert!(selected_filters(&names(&["pag"])).is_err());
        assert!(selected_periods(&names(&["7d", "12mo"])).is_ok());
        assert!(selected_periods(&names(&["3d"])).is_err());
        // Every filter's name is unique and each screen carries the filter on all six panels.
        let set = filter_set();
        for (i, (n, _, f)) in set.iter().enumerate() {
            assert!(set[..i].iter().all(|(m, _, _)| m != n), "{n} twice");
            let screen = first_screen("12mo", Some(f));
            assert_eq!(screen.len(), 6);
            assert!(screen.iter().all(|(_, b)| &b["filters"] == f));
            assert_eq!(screen[1].1["dimensions"][0], "time:month");
        }
        assert!(standard_set()
            .iter()
            .all(|(_, b)| b.get("filters").is_none()));
    }
}
