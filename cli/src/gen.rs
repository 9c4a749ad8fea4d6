//! `veil gen` and `veil up --demo`: realistic generated traffic for one site, written by
//! ClickHouse itself (see [`veil_schemas::gen`] for the model and the SQL).
//!
//! `veil gen --site demo.example --events 50000000 --days 30 [--seed N]` applies the
//! migrations, writes exactly `--events` rows and prints one JSON line:
//! `{"site":…,"rows":…,"visitor_days":…,"seconds":…,"rows_per_second":…,"end":…}`.
//!
//! `veil up --demo` serves [`DEMO_SITE`] too and, when that site has no events yet, fills it
//! with [`DEMO_EVENTS`] events over today and the 30 days before, before it starts listening. While the site has no
//! stored settings it also gets goals for the generated events (`Signup`, `Purchase` as a
//! USD revenue goal whose differential-privacy bound is the shop's largest order, 49 USD,
//! `Outbound Link: Click`, a visit to `/pricing`) and the funnel
//! `Pricing → Signup → Purchase` ([`demo_settings`]), so the conversion story shows from the
//! first screen; settings changed since are kept.
//!
//! It also serves [`DEMO_APP_SITE`], a demo app (the dashboard's App view): when that site has
//! no events yet it gets today's and the 30 previous days' events of an iOS and Android app
//! ([`veil_schemas::gen::generate_app`], [`DEMO_APP_USERS`] users a day: versions rolling out,
//! device models, install sources, sessions with launch times, the odd crash), up to the start,
//! so Realtime shows it in use.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use veil_schemas::gen::{generate, generate_app, AppOptions, GenOptions};
use veil_schemas::registry::{Registry, SiteSettings};
use veil_schemas::sql;
use veil_schemas::sql::{lit, Run};

use crate::config::{GenArgs, Settings, DEMO_APP_SITE, DEMO_SITE};

/// Events `veil up --demo` generates on first run.
pub const DEMO_EVENTS: u64 = 200_000;

/// Users a day of the demo app at the end of its month (about 130 000 events over today and
/// the 30 days before: the rollup job reads them all at start, so not more). Realtime shows
/// the app busy at any hour all the same: a push notification half an hour before the start
/// brings 15 % of a day's users.
pub const DEMO_APP_USERS: u64 = 1_000;

/// Runs `veil gen`.
pub async fn run(s: &Settings, args: &GenArgs) -> Result<()> {
    let raw = s
        .collector
        .sites
        .first()
        .context("veil gen needs exactly one --site")?;
    let site = veil_collector::sites::normalize_domain(raw)
        .with_context(|| format!("--site {raw:?} is not a domain name"))?;
    veil_schemas::migrate(&s.clickhouse)
        .await
        .context("applying migrations")?;
    let opts = GenOptions {
        site: site.clone(),
        events: args.events,
        days: args.days,
        seed: args.seed,
        end: args.end,
        parallel: args.parallel,
    };
    eprintln!(
        "veil: generating {} events for {site} over {} days into {} (database {})",
        args.events, args.days, s.clickhouse.url, s.clickhouse.database
    );
    let r = generate(&s.clickhouse, &opts)
        .await
        .context("generating events")?;
    eprintln!(
        "veil: wrote {} rows in {:.1} s ({:.0} rows/s)",
        r.rows, r.seconds, r.rows_per_second
    );
    println!(
        "{}",
        serde_json::json!({
            "site": site,
            "rows": r.rows,
            "visitor_days": r.visitor_days,
            "seconds": r.seconds,
            "rows_per_second": r.rows_per_second,
            "end": r.end,
        })
    );
    Ok(())
}

/// The demo site's settings: those its flags give it (`--min-visitors`, `--timezone`, …) with
/// goals and a funnel for the events [`veil_schemas::gen`] writes.
pub fn demo_settings(s: &Settings) -> SiteSettings {
    let goals = serde_json::json!([
        {"name": "Signup", "event_name": "Signup"},
        {"name": "Purchase", "event_name": "Purchase", "currency": "USD"},
        {"name": "Outbound Link: Click", "event_name": "Outbound Link: Click"},
        {"name": "Visit /pricing", "page_path": "/pricing"},
    ]);
    let funnels = serde_json::json!([
        {"name": "Pricing to purchase", "steps": ["Visit /pricing", "Signup", "Purchase"]},
    ]);
    SiteSettings {
        goals: goals.as_array().cloned().unwrap_or_default(),
        funnels: funnels.as_array().cloned().unwrap_or_default(),
        // The demo shop's largest order is 49 USD: differential privacy's noise on its
        // revenue is sized for that, not for the deployment's 1 000 USD bound.
        revenue_bound: Some(49),
        ..s.aggregator.flag_settings(DEMO_SITE)
    }
}

/// Stores [`demo_settings`] for [`DEMO_SITE`] unless it has stored settings already.
async fn demo_goals(s: &Settings) -> Result<()> {
    let reg = Registry::new(&s.clickhouse);
    let snap = reg.refresh().await.context("loading the site registry")?;
    if snap.site(DEMO_SITE).is_some() {
        return Ok(());
    }
    let settings = demo_settings(s);
    settings
        .validate()
        .map_err(|e| anyhow::anyhow!("the demo site's settings: {e}"))?;
    reg.put_site(DEMO_SITE, settings)
        .await
        .context("storing the demo site's goals")?;
    eprintln!("veil: demo site {DEMO_SITE}: goals Signup, Purchase (revenue), Outbound Link: Click, Visit /pricing and a funnel");
    Ok(())
}

/// The events `site` has.
async fn event_count(s: &Settings, site: &str) -> Result<u64> {
    s.clickhouse
        .client()
        .sql(&sql!(
            "SELECT count() FROM events WHERE site = {}",
            lit(site)
        ))
        .fetch_one()
        .await
        .with_context(|| format!("counting the events of {site}"))
}

/// Fills [`DEMO_SITE`] with today and 30 days of generated traffic unless it already has events, and
/// gives it goals and a funnel while it has no stored settings; fills [`DEMO_APP_SITE`] with
/// 30 days of app events unless it already has events.
pub async fn demo(s: &Settings) -> Result<()> {
    demo_goals(s).await?;
    // One after the other: at the same time they share the same two cores and disk, and each
    // takes about as long as both.
    demo_web(s).await?;
    demo_app(s).await
}

async fn demo_web(s: &Settings) -> Result<()> {
    let existing = event_count(s, DEMO_SITE).await?;
    if existing > 0 {
        eprintln!("veil: demo site {DEMO_SITE} already has {existing} events");
        return Ok(());
    }
    eprintln!("veil: first run with --demo: generating 30 days of traffic for {DEMO_SITE}");
    // Today and the 30 whole days before: the dashboard's "Last 30 days" (which ends yesterday)
    // has no empty first day.
    let r = generate(&s.clickhouse, &GenOptions::new(DEMO_SITE, DEMO_EVENTS, 31))
        .await
        .context("generating the demo site's events")?;
    eprintln!(
        "veil: demo site filled: {} events in {:.1} s",
        r.rows, r.seconds
    );
    Ok(())
}

async fn demo_app(s: &Settings) -> Result<()> {
    let existing = event_count(s, DEMO_APP_SITE).await?;
    if existing > 0 {
        eprintln!("veil: demo app {DEMO_APP_SITE} already has {existing} events");
        return Ok(());
    }
    eprintln!("veil: first run with --demo: generating 30 days of app events for {DEMO_APP_SITE}");
    let r = generate_app(
        &s.clickhouse,
        // Today and the 30 whole days before: the dashboard's "Last 30 days" has no empty day.
        &AppOptions::new(DEMO_APP_SITE, DEMO_APP_USERS, 31),
    )
    .await
    .context("generating the demo app's events")?;
    eprintln!(
        "veil: demo app filled: {} events in {:.1} s",
        r.rows, r.seconds
    );
    Ok(())
}

/// The dashboard of the demo site on `addr`, over the generated 30 days.
pub fn demo_url(addr: SocketAddr) -> String {
    format!("http://{addr}/site/{DEMO_SITE}?period=30d")
}

/// The App view of the demo app on `addr`, over the generated 30 days.
pub fn demo_app_url(addr: SocketAddr) -> String {
    format!("http://{addr}/site/{DEMO_APP_SITE}?view=app&period=30d")
}
