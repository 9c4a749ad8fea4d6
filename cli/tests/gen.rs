//! `veil gen` and `veil up --demo` through the real binary: exact counts, believable
//! distributions read back through the real Stats API (`Aggregator::query`), reproducibility
//! with a seed, and a demo site that is filled once, quickly, and linked from the start line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::process::Command;

use chrono::{TimeZone, Utc};
use common::*;
use serde_json::{json, Value};
use veil_aggregator::{Aggregator, AggregatorConfig};
use veil_schemas::sql;
use veil_schemas::sql::{lit, Run, Sql};
use veil_schemas::ClickHouseConfig;

const SITE: &str = "gen.example";
/// 2026-11-25 17:20 UTC, a Wednesday: a fixed end keeps the generated rows identical.
const END: i64 = 1_795_627_200 + 17 * 3600 + 1200;

fn gen(cfg: &ClickHouseConfig, events: u64, seed: u64) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["gen", "--site", SITE, "--days", "30"])
        .args(["--events", &events.to_string(), "--seed", &seed.to_string()])
        .args(["--end", &END.to_string()])
        .args(["--clickhouse-url", &cfg.url])
        .args(["--clickhouse-database", &cfg.database])
        .envs(cfg.user.iter().map(|u| ("VEIL_CLICKHOUSE_USER", u)))
        .envs(cfg.password.iter().map(|p| ("VEIL_CLICKHOUSE_PASSWORD", p)))
        .env("VEIL_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "veil gen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rows/s"), "{stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn scalar(cfg: &ClickHouseConfig, q: &Sql) -> u64 {
    cfg.client().sql(q).fetch_one::<u64>().await.unwrap()
}

async fn query(agg: &Aggregator, body: Value) -> Value {
    let now = Utc.timestamp_opt(END, 0).unwrap();
    let r = Aggregator::query(agg, body.to_string().as_bytes(), now)
        .await
        .unwrap_or_else(|e| panic!("{body}: {e}"));
    assert_eq!(r.status(), 200, "{body}");
    let bytes = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

fn digest_sql() -> Sql {
    Sql::new(
        "SELECT sum(cityHash64(site, timestamp, name, pathname, visitor_id, session_id, source, \
     utm_campaign, browser, os, country_code, city, engagement_ms, revenue_micros)) FROM events",
    )
}

#[tokio::test]
async fn gen_writes_realistic_reproducible_traffic() {
    let cfg = veil_schemas::testing::fresh_database("gen_cli").await;
    let report = gen(&cfg, 20_000, 7);
    assert_eq!(report["rows"], 20_000);
    assert_eq!(report["site"], SITE);

    // Exactly the rows asked for, all of the site, within the 30 days ending at END.
    assert_eq!(
        scalar(&cfg, &Sql::new("SELECT count() FROM events")).await,
        20_000
    );
    assert_eq!(
        scalar(
            &cfg,
            &sql!(
                "SELECT count() FROM events WHERE site = {} AND bot = '' AND hostname = {}",
                lit(SITE),
                lit(SITE)
            )
        )
        .await,
        20_000
    );
    let start = END - END % 86_400 - 29 * 86_400;
    assert_eq!(
        scalar(&cfg, &sql!("SELECT count() FROM events WHERE toUInt32(timestamp) < {} OR toUInt32(timestamp) > {}", start, END)).await,
        0
    );
    // Many pages, sources, places; every device class in about the intended mix.
    assert!(scalar(&cfg, &Sql::new("SELECT uniqExact(pathname) FROM events")).await >= 60);
    assert!(scalar(&cfg, &Sql::new("SELECT uniqExact(source) FROM events")).await >= 10);
    assert!(
        scalar(
            &cfg,
            &Sql::new("SELECT uniqExact(country_code) FROM events")
        )
        .await
            >= 20
    );
    let share = |dev: &str| {
        sql!("SELECT toUInt64(100 * uniqExactIf(visitor_id, device = {}) / uniqExact(visitor_id)) FROM events", lit(dev))
    };
    let (desktop, mobile, tablet) = (
        scalar(&cfg, &share("desktop")).await,
        scalar(&cfg, &share("mobile")).await,
        scalar(&cfg, &share("tablet")).await,
    );
    assert!((48..=62).contains(&desktop), "desktop {desktop}%");
    assert!((33..=47).contains(&mobile), "mobile {mobile}%");
    assert!((2..=9).contains(&tablet), "tablet {tablet}%");
    // A diurnal curve: the afternoon (UTC) is busier than the night.
    let day = scalar(
        &cfg,
        &Sql::new("SELECT countIf(toHour(timestamp) BETWEEN 12 AND 16) FROM events"),
    )
    .await;
    let night = scalar(
        &cfg,
        &Sql::new("SELECT countIf(toHour(timestamp) BETWEEN 0 AND 4) FROM events"),
    )
    .await;
    assert!(day > 2 * night, "day {day}, night {night}");
    // Engagement on pageviews, some conversions with revenue, and no bots.
    assert!(scalar(&cfg, &Sql::new("SELECT countIf(name = 'engagement' AND engagement_ms > 0 AND scroll_depth > 0) FROM events")).await > 5_000);
    assert!(
        scalar(
            &cfg,
            &Sql::new("SELECT countIf(name = 'Signup') FROM events")
        )
        .await
            > 20
    );
    assert!(
        scalar(&cfg, &Sql::new("SELECT countIf(name = 'Purchase' AND revenue_micros > 0 AND revenue_currency = 'USD') FROM events")).await
            > 5
    );
    // A visitor's hits of one visit are minutes apart: the 30-minute rule finds about as many
    // visits as the generator made sessions.
    let sessions = scalar(
        &cfg,
        &Sql::new("SELECT uniqExact(session_id, toDate(timestamp)) FROM events"),
    )
    .await;

    // Read back through the real Stats API.
    let agg = Aggregator::new(
        AggregatorConfig {
            sites: vec![SITE.into()],
            min_visitors: 5,
            privacy: veil_aggregator::privacy::Settings::exact(),
            ..AggregatorConfig::default()
        },
        cfg.clone(),
    );
    let top = query(
        &agg,
        json!({"site_id": SITE, "date_range": "30d",
               "metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"]}),
    )
    .await;
    let m = &top["results"][0]["metrics"];
    let (visitors, visits, pageviews, bounce, duration) = (
        m[0].as_f64().unwrap(),
        m[1].as_f64().unwrap(),
        m[2].as_f64().unwrap(),
        m[3].as_f64().unwrap(),
        m[4].as_f64().unwrap(),
    );
    assert!(
        (20.0..=80.0).contains(&bounce),
        "bounce rate {bounce}: {top}"
    );
    assert!(duration > 10.0, "visit duration {duration}: {top}");
    assert!(visits >= visitors, "{top}");
    assert!((1.5..=3.5).contains(&(pageviews / visits)), "{top}");
    let ratio = visits / sessions as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "visits {visits} vs generated sessions {sessions}"
    );
    let pages = query(
        &agg,
        json!({"site_id": SITE, "date_range": "30d", "metrics": ["visitors"], "dimensions": ["event:page"], "pagination": {"limit": 5}}),
    )
    .await;
    assert_eq!(pages["results"][0]["dimensions"][0], "/", "{pages}");
    let sources = query(
        &agg,
        json!({"site_id": SITE, "date_range": "30d", "metrics": ["visitors"], "dimensions": ["visit:source"], "pagination": {"limit": 20}}),
    )
    .await;
    let names: Vec<&str> = sources["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["dimensions"][0].as_str())
        .collect();
    for s in ["Google", "Hacker News", "DuckDuckGo", "newsletter"] {
        assert!(names.contains(&s), "{s} missing from {names:?}");
    }
    let by_day = query(
        &agg,
        json!({"site_id": SITE, "date_range": "30d", "metrics": ["visitors"], "dimensions": ["time:day"]}),
    )
    .await;
    assert!(
        by_day["results"].as_array().unwrap().len() >= 29,
        "{by_day}"
    );

    // Reproducible: the same seed writes the same rows; another seed other rows.
    let same = veil_schemas::testing::fresh_database("gen_cli_same").await;
    gen(&same, 20_000, 7);
    let other = veil_schemas::testing::fresh_database("gen_cli_other").await;
    gen(&other, 20_000, 8);
    let d = scalar(&cfg, &digest_sql()).await;
    assert_eq!(scalar(&same, &digest_sql()).await, d);
    assert_eq!(
        scalar(&other, &Sql::new("SELECT count() FROM events")).await,
        20_000
    );
    assert_ne!(scalar(&other, &digest_sql()).await, d);
}

#[test]
fn gen_rejects_bad_input() {
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args([
            "gen",
            "--events",
            "10",
            "--clickhouse-url",
            "http://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--site"));
}

#[test]
fn up_demo_fills_the_demo_site_once_and_links_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let v = start(dir.path(), port, &["--demo"]);
    let out = std::fs::read_to_string(dir.path().join(format!("stdout-{port}.log"))).unwrap();
    let url = format!("http://127.0.0.1:{port}/site/demo.veil.local?period=30d");
    assert!(out.contains(&url), "{out}");
    let err = std::fs::read_to_string(dir.path().join(format!("stderr-{port}.log"))).unwrap();
    let secs: f64 = err
        .split("demo site filled: 200000 events in ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("no fill line: {err}"))
        .parse()
        .unwrap();
    assert!(secs < 30.0, "demo generation took {secs} s");
    // The demo app: filled on the first start too, its App view linked.
    let app_url = format!("http://127.0.0.1:{port}/site/demo-app.veil.local?view=app&period=30d");
    assert!(out.contains(&app_url), "{out}");
    let (app_rows, app_secs): (u64, f64) = err
        .split("demo app filled: ")
        .nth(1)
        .and_then(|r| {
            let mut w = r.split(' ');
            Some((w.next()?.parse().ok()?, w.nth(2)?.parse().ok()?))
        })
        .unwrap_or_else(|| panic!("no app fill line: {err}"));
    assert!(
        (90_000..180_000).contains(&app_rows),
        "{app_rows} app events"
    );
    assert!(app_secs < 30.0, "demo app generation took {app_secs} s");
    eprintln!("demo fill: site {secs} s, app {app_rows} events in {app_secs} s");
    // The dashboard page and the Stats API serve the demo site.
    assert_eq!(http(v.addr, "GET", "/site/demo.veil.local", &[], "").0, 200);
    let (status, body) = http(
        v.addr,
        "POST",
        "/api/v2/query",
        &[("Content-Type", "application/json")],
        r#"{"site_id":"demo.veil.local","metrics":["visitors","pageviews"],"date_range":"30d"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let r: Value = serde_json::from_str(&body).unwrap();
    assert!(
        r["results"][0]["metrics"][0].as_u64().unwrap() > 10_000,
        "{r}"
    );
    // Goals for the generated events and a funnel: revenue in the Purchase goal's dollars,
    // and the funnel's steps answered.
    let (status, body) = http(v.addr, "GET", "/api/v1/sites/demo.veil.local", &[], "");
    assert_eq!(status, 200, "{body}");
    let site: Value = serde_json::from_str(&body).unwrap();
    let settings = if site["settings"].is_object() {
        &site["settings"]
    } else {
        &site
    };
    let goals: Vec<&str> = settings["goals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        goals,
        [
            "Signup",
            "Purchase",
            "Outbound Link: Click",
            "Visit /pricing"
        ],
        "{site}"
    );
    let (status, body) = http(
        v.addr,
        "POST",
        "/api/v2/query",
        &[("Content-Type", "application/json")],
        r#"{"site_id":"demo.veil.local","metrics":["total_revenue"],"date_range":"30d","filters":[["is","event:goal",["Purchase"]]]}"#,
    );
    assert_eq!(status, 200, "{body}");
    let r: Value = serde_json::from_str(&body).unwrap();
    // Under differential privacy (the default) the revenue's noise is sized for the demo's
    // own revenue bound (49 USD, its largest order; the deployment's 1 000 USD would drown a
    // few hundred purchases): the second start below (exact mode) compares it with the truth.
    assert_eq!(r["results"][0]["metrics"][0]["currency"], "USD", "{r}");
    let dp_revenue = r["results"][0]["metrics"][0]["value"].as_f64().unwrap();
    let dp_interval = r["meta"]["privacy"]["interval95"]["total_revenue"]
        .as_f64()
        .unwrap();
    assert!(dp_interval > 0.0 && dp_interval < 5_000.0, "{r}");
    let (status, body) = http(
        v.addr,
        "POST",
        "/api/v2/funnel",
        &[("Content-Type", "application/json")],
        r#"{"site_id":"demo.veil.local","funnel":"Pricing to purchase","date_range":"30d"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let f: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(f["steps"].as_array().unwrap().len(), 3, "{f}");
    // The App view's performance question under differential privacy: percentiles read off
    // noisy histograms (compared with the exact ones on the second start).
    let dp_perf = app_query(
        &v,
        json!({"site_id": "demo-app.veil.local", "date_range": "30d",
               "metrics": ["launch_time_p50", "launch_time_p95", "latency_p50", "latency_p95"]}),
    );
    assert_eq!(
        dp_perf["meta"]["privacy"]["withheld"],
        json!([]),
        "{dp_perf}"
    );
    stop(v);

    // A second start keeps the data and does not generate again. It runs in exact mode (the
    // test needs exact numbers): the Purchase goal's revenue is the generated purchases' dollars.
    let port = free_port();
    let v = start(dir.path(), port, &["--demo", "--privacy", "exact"]);
    let err = std::fs::read_to_string(dir.path().join(format!("stderr-{port}.log"))).unwrap();
    assert!(err.contains("already has 200000 events"), "{err}");
    let (status, body) = http(
        v.addr,
        "POST",
        "/api/v2/query",
        &[("Content-Type", "application/json")],
        r#"{"site_id":"demo.veil.local","metrics":["total_revenue","events"],"date_range":"30d","filters":[["is","event:goal",["Purchase"]]]}"#,
    );
    assert_eq!(status, 200, "{body}");
    let r: Value = serde_json::from_str(&body).unwrap();
    let revenue = r["results"][0]["metrics"][0]["value"].as_f64().unwrap();
    let purchases = r["results"][0]["metrics"][1].as_f64().unwrap();
    assert!(purchases > 0.0, "{r}");
    // Every purchase is 19 or 49 USD.
    assert!(
        revenue >= 19.0 * purchases && revenue <= 49.0 * purchases,
        "{r}"
    );
    // The first start's noisy revenue: within three 95 % intervals of the truth (outside about
    // once in 10^4 runs; a visitor-day's purchases above 49 USD, rare, are clamped lower).
    assert!(
        (dp_revenue - revenue).abs() <= 3.0 * dp_interval,
        "dp {dp_revenue} ± {dp_interval}, exact {revenue}"
    );
    demo_app_tells_its_story(&v, &err, app_rows, &dp_perf);
    stop(v);
}

/// `POST /api/v2/query` for the demo app, exact mode.
fn app_query(v: &common::Veil, body: Value) -> Value {
    let (status, text) = http(
        v.addr,
        "POST",
        "/api/v2/query",
        &[("Content-Type", "application/json")],
        &body.to_string(),
    );
    assert_eq!(status, 200, "{body}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// Visitors by `dim` over `range`, as (label, visitors).
fn app_breakdown(v: &common::Veil, dim: &str, range: Value) -> Vec<(String, f64)> {
    let r = app_query(
        v,
        json!({"site_id": "demo-app.veil.local", "metrics": ["visitors"], "date_range": range,
               "dimensions": [dim], "pagination": {"limit": 50}}),
    );
    r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["dimensions"][0].as_str().unwrap().to_string(),
                x["metrics"][0].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The demo app, read back through the Stats API in exact mode on the second start: not
/// generated again; sessions; versions rolling out (2.4.x: none in the month's first week,
/// most users in its last days); iOS and Android; launch times and rare crashes. `dp_perf`:
/// the first start's launch and latency percentiles under differential privacy, each within
/// 25 % of the exact one (a histogram bucket is ±12 % wide; the noise may move a bucket).
fn demo_app_tells_its_story(v: &common::Veil, err: &str, app_rows: u64, dp_perf: &Value) {
    assert!(
        err.contains(&format!(
            "demo app demo-app.veil.local already has {app_rows} events"
        )),
        "{err}"
    );
    // The App view's two questions (visit metrics; event percentiles and crashes).
    let totals = |metrics: Value| {
        let r = app_query(
            v,
            json!({"site_id": "demo-app.veil.local", "date_range": "30d", "metrics": metrics}),
        );
        let m: Vec<f64> = r["results"][0]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap_or_else(|| panic!("{r}")))
            .collect();
        (m, r)
    };
    let (m, r1) = totals(json!(["visitors", "visits", "sessions_per_user", "dau"]));
    let [users, visits, per_user, dau] = m[..] else {
        panic!("{r1}")
    };
    let (m, r2) = totals(json!([
        "launch_time_p50",
        "launch_time_p95",
        "latency_p50",
        "crashes",
        "events"
    ]));
    let [p50, p95, latency, crashes, events] = m[..] else {
        panic!("{r2}")
    };
    let r = format!("{r1} {r2}");
    let exact_perf = app_query(
        v,
        json!({"site_id": "demo-app.veil.local", "date_range": "30d",
               "metrics": ["launch_time_p50", "launch_time_p95", "latency_p50", "latency_p95"]}),
    );
    for i in 0..4 {
        let (dp, exact) = (
            dp_perf["results"][0]["metrics"][i].as_f64(),
            exact_perf["results"][0]["metrics"][i].as_f64(),
        );
        let (Some(dp), Some(exact)) = (dp, exact) else {
            panic!("percentile {i}: dp {dp_perf}, exact {exact_perf}")
        };
        assert!(
            (dp / exact - 1.0).abs() <= 0.25,
            "percentile {i}: dp {dp} ms, exact {exact} ms ({dp_perf})"
        );
    }
    assert!(users > 15_000.0, "{r}");
    assert!(visits > users, "sessions: {r}");
    assert!((1.2..=2.2).contains(&per_user), "sessions per user: {r}");
    assert!((450.0..=1_300.0).contains(&dau), "daily users: {r}");
    assert!((350.0..=1_200.0).contains(&p50), "launch time p50: {r}");
    assert!(p95 > 1.3 * p50 && p95 < 4_000.0, "launch time p95: {r}");
    assert!((80.0..=400.0).contains(&latency), "latency p50: {r}");
    // The odd crash: some, but under 2 % of sessions.
    assert!(crashes > 10.0 && crashes < 0.02 * visits, "crashes: {r}");
    assert!(events > 3.0 * visits, "{r}");

    // Versions roll out: 2.4.0 shipped ten days before the start, 2.4.1 four days before.
    let today = Utc::now().date_naive();
    let range = |from: i64, to: i64| {
        json!([
            (today - chrono::Duration::days(from)).to_string(),
            (today - chrono::Duration::days(to)).to_string()
        ])
    };
    let share_24 = |rows: &[(String, f64)]| {
        let all: f64 = rows.iter().map(|r| r.1).sum();
        rows.iter()
            .filter(|r| r.0.starts_with("2.4."))
            .map(|r| r.1)
            .sum::<f64>()
            / all
    };
    let month = app_breakdown(v, "visit:app_version", json!("30d"));
    let names: Vec<&str> = month.iter().map(|r| r.0.as_str()).collect();
    for want in ["2.3.0", "2.3.1", "2.4.0", "2.4.1"] {
        assert!(names.contains(&want), "{want} missing from {month:?}");
    }
    let first_week = app_breakdown(v, "visit:app_version", range(30, 24));
    let release_days = app_breakdown(v, "visit:app_version", range(9, 7));
    let last_days = app_breakdown(v, "visit:app_version", range(3, 1));
    let (a, b, c) = (
        share_24(&first_week),
        share_24(&release_days),
        share_24(&last_days),
    );
    assert!(
        a == 0.0 && b > 0.2 && c > b && c > 0.75,
        "2.4.x share {a} → {b} → {c}: {first_week:?} {release_days:?} {last_days:?}"
    );

    // iOS and Android, their device models and install sources.
    let os = app_breakdown(v, "visit:os", json!("30d"));
    let total: f64 = os.iter().map(|r| r.1).sum();
    for want in ["iOS", "Android"] {
        let n = os.iter().find(|r| r.0 == want).map(|r| r.1).unwrap_or(0.0);
        assert!(n > 0.3 * total, "{want}: {os:?}");
    }
    let models = app_breakdown(v, "visit:device_model", json!("30d"));
    assert!(models.len() >= 15, "{models:?}");
    assert!(
        models.iter().any(|r| r.0.starts_with("iPhone")),
        "{models:?}"
    );
    assert!(
        models.iter().any(|r| r.0.starts_with("Pixel")),
        "{models:?}"
    );
    let sources = app_breakdown(v, "visit:install_source", json!("30d"));
    let names: Vec<&str> = sources.iter().map(|r| r.0.as_str()).collect();
    for want in ["App Store", "Google Play", "TestFlight"] {
        assert!(names.contains(&want), "{want} missing from {sources:?}");
    }
}
