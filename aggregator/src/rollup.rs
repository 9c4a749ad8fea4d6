//! The rollup job the aggregator runs on a schedule (and `veil aggregator` at start):
//!
//! - **visits**: for each closed UTC day (before today) whose raw event count differs from
//!   the one recorded with its latest build (or that has none), insert the day's visit rows
//!   (the SQL in [`crate::query::plan::derive_visits`]) under a new build number, then record
//!   the build in `visit_builds`. Readers use a day's latest *recorded* build, so they never
//!   see half a build; older builds of the day are deleted afterwards.
//!   With the visits it writes the day's `visits_daily` rows (per visit dimension, and per
//!   page, event name and host from the raw events: the exact count of distinct visitor
//!   hashes, their uniq state, and sums of visits, pageviews, events, bounces, durations).
//! - **events_hourly / events_daily health**: materialized views keep them current; for each
//!   closed day the job compares each rollup's hit count with the raw count and rebuilds a day
//!   that differs (data stored before the rollup existed, or a view that missed inserts).
//!
//! Days are UTC: visitor hashes rotate at UTC midnight, so no visit spans two of them.

use chrono::{Duration, NaiveDate, Utc};

use crate::query::plan::{derive_visits, DAILY_DIMS, EVENT_DAILY_DIMS};
use crate::query::sql::{date, utc};
use crate::stats::fetch;
use crate::Error;
use veil_schemas::ClickHouseConfig;

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RollupReport {
    /// Days whose visits were (re)built.
    pub visit_days: Vec<NaiveDate>,
    /// Days whose hourly or daily event rollup was rebuilt.
    pub hourly_days: Vec<NaiveDate>,
}

async fn exec(client: &clickhouse::Client, sql: &str) -> Result<(), Error> {
    client
        .query_raw(sql)
        .execute()
        .await
        .map_err(|e| Error::ClickHouse(e.to_string()))
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_u64())
        .unwrap_or(0)
}

fn day_range(d: NaiveDate) -> String {
    let lo = d.and_hms_opt(0, 0, 0).unwrap_or_default();
    format!(
        "timestamp >= {} AND timestamp < {}",
        utc(lo),
        utc(lo + Duration::days(1))
    )
}

/// Brings the rollups of the closed days of the last `days` days up to date.
pub async fn run(ch: &ClickHouseConfig, days: u32) -> Result<RollupReport, Error> {
    let today = Utc::now().date_naive();
    run_until(ch, today, days).await
}

/// [`run`] with "today" given (days before it are closed).
pub async fn run_until(
    ch: &ClickHouseConfig,
    today: NaiveDate,
    days: u32,
) -> Result<RollupReport, Error> {
    let client = &ch.client();
    // Row-changing DDL goes to every shard in cluster mode.
    let target = |t: &str| veil_schemas::migrate::mutation_target(ch, t);
    let first = today - Duration::days(i64::from(days.max(1)));
    let mut report = RollupReport::default();
    // Raw counts per closed day (bots excluded, as in every report).
    let raw = fetch(
        client,
        &format!(
            "SELECT toString(toDate(timestamp)) AS d, count(), countIf(bot = '') FROM events \
             WHERE timestamp >= {} AND timestamp < {} GROUP BY d",
            utc(first.and_hms_opt(0, 0, 0).unwrap_or_default()),
            utc(today.and_hms_opt(0, 0, 0).unwrap_or_default())
        ),
    )
    .await?;
    let builds = fetch(
        client,
        &format!(
            "SELECT toString(day), argMax(events, build), max(build) FROM visit_builds WHERE day >= {} GROUP BY day",
            date(first)
        ),
    )
    .await?;
    let hourly = fetch(
        client,
        &format!(
            "SELECT toString(toDate(hour)) AS d, countMerge(hits) FROM events_hourly \
             WHERE hour >= {} AND hour < {} GROUP BY d",
            utc(first.and_hms_opt(0, 0, 0).unwrap_or_default()),
            utc(today.and_hms_opt(0, 0, 0).unwrap_or_default())
        ),
    )
    .await?;
    let daily = fetch(
        client,
        &format!(
            "SELECT toString(toDate(day, 'UTC')) AS d, countMerge(hits) FROM events_daily \
             WHERE day >= {} AND day < {} GROUP BY d",
            utc(first.and_hms_opt(0, 0, 0).unwrap_or_default()),
            utc(today.and_hms_opt(0, 0, 0).unwrap_or_default())
        ),
    )
    .await?;
    // Builds that have their per-dimension rows (older builds may predate visits_daily).
    let daily_builds = fetch(
        client,
        &format!(
            "SELECT toString(day), build FROM visits_daily WHERE day >= {} GROUP BY day, build",
            date(first)
        ),
    )
    .await?;
    let lookup = |rows: &[serde_json::Value], day: &str, col: usize| -> Option<u64> {
        rows.iter()
            .find(|r| r[0].as_str() == Some(day))
            .map(|r| n(&r[col]))
    };
    for r in &raw {
        let Some(day_s) = r[0].as_str() else { continue };
        let Ok(day) = NaiveDate::parse_from_str(day_s, "%Y-%m-%d") else {
            continue;
        };
        let all = n(&r[1]);
        let humans = n(&r[2]);
        let latest = lookup(&builds, day_s, 2);
        let has_daily = latest.is_some_and(|b| {
            daily_builds
                .iter()
                .any(|r| r[0].as_str() == Some(day_s) && n(&r[1]) == b)
        });
        if lookup(&builds, day_s, 1) != Some(all) || !has_daily {
            let build = latest.unwrap_or(0) + 1;
            exec(
                client,
                &format!(
                    "INSERT INTO visits {}",
                    derive_visits(&day_range(day), build)
                ),
            )
            .await?;
            let pairs: Vec<String> = std::iter::once("('', '')".to_string())
                .chain(DAILY_DIMS.iter().map(|c| format!("('{c}', {c})")))
                .collect();
            exec(
                client,
                &format!(
                    "INSERT INTO visits_daily (site, day, build, dim, value, visitors, uv, visits, \
                     pageviews, events, bounces, duration) SELECT site, day, build, kv.1 AS dim, \
                     kv.2 AS value, uniqState(visitor_id), uniqExact(visitor_id), count(), \
                     sum(pageviews), sum(events), sum(bounce), sum(duration) \
                     FROM visits ARRAY JOIN [{}] AS kv WHERE day = {} AND build = {build} \
                     GROUP BY site, day, build, dim, value",
                    pairs.join(", "),
                    date(day)
                ),
            )
            .await?;
            // The day's events by page, event name and host (what top pages and custom
            // events read), counted like the event rollups count them.
            let event_pairs: Vec<String> = EVENT_DAILY_DIMS
                .iter()
                .map(|c| format!("('event:{c}', {c})"))
                .collect();
            exec(
                client,
                &format!(
                    "INSERT INTO visits_daily (site, day, build, dim, value, visitors, uv, visits, \
                     pageviews, events, bounces, duration) SELECT site, toDate(timestamp, 'UTC') AS day, \
                     toUInt64({build}), kv.1 AS dim, kv.2 AS value, uniqState(visitor_id), \
                     uniqExact(visitor_id), toUInt64(0), countIf(name = 'pageview'), \
                     countIf(name != 'engagement'), toUInt64(0), toUInt64(0) \
                     FROM events ARRAY JOIN [{}] AS kv WHERE {} AND bot = '' \
                     GROUP BY site, day, dim, value",
                    event_pairs.join(", "),
                    day_range(day)
                ),
            )
            .await?;
            exec(
                client,
                &format!(
                    "INSERT INTO visit_builds (day, build, events, built_at) VALUES ({}, {build}, {all}, now())",
                    date(day)
                ),
            )
            .await?;
            if build > 1 {
                for table in ["visits", "visits_daily"] {
                    exec(
                        client,
                        &format!(
                            "ALTER TABLE {} DELETE WHERE day = {} AND build < {build}",
                            target(table),
                            date(day)
                        ),
                    )
                    .await?;
                }
            }
            report.visit_days.push(day);
        }
        if lookup(&hourly, day_s, 1).unwrap_or(0) != humans {
            let part = day.format("%Y%m%d").to_string();
            exec(
                client,
                &format!(
                    "ALTER TABLE {} DROP PARTITION {part}",
                    target("events_hourly")
                ),
            )
            .await?;
            exec(
                client,
                &format!(
                    "INSERT INTO events_hourly SELECT site, toStartOfHour(timestamp) AS hour, name, pathname, hostname, \
                     uniqState(visitor_id) AS visitors, countState() AS hits FROM events WHERE {} AND bot = '' \
                     GROUP BY site, hour, name, pathname, hostname",
                    day_range(day)
                ),
            )
            .await?;
            report.hourly_days.push(day);
        }
        if lookup(&daily, day_s, 1).unwrap_or(0) != humans {
            let part = day.format("%Y%m%d").to_string();
            exec(
                client,
                &format!(
                    "ALTER TABLE {} DROP PARTITION {part}",
                    target("events_daily")
                ),
            )
            .await?;
            exec(
                client,
                &format!(
                    "INSERT INTO events_daily SELECT site, toStartOfDay(timestamp, 'UTC') AS day, name, pathname, hostname, \
                     uniqState(visitor_id) AS visitors, countState() AS hits FROM events WHERE {} AND bot = '' \
                     GROUP BY site, day, name, pathname, hostname",
                    day_range(day)
                ),
            )
            .await?;
            if report.hourly_days.last() != Some(&day) {
                report.hourly_days.push(day);
            }
        }
    }
    Ok(report)
}
