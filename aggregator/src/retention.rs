//! Retention and erasure: keeping raw data only as long as needed, and deleting a site on request.
//!
//! - [`purge`] removes raw events older than each site's retention (`--retention-days`, default
//!   395, per site with `--site-retention DOMAIN=DAYS` or a stored site's `retention_days`,
//!   which wins). Whole daily partitions older than the
//!   longest retention are dropped (`ALTER TABLE … DROP PARTITION`: immediate, no rewrite); sites
//!   with a shorter retention get an `ALTER TABLE … DELETE` for their older rows. The aggregator
//!   runs it at start and daily; `veil purge` runs it on demand. It also drops the privacy
//!   budget ledger's days before yesterday (`privacy_spend`, [`crate::privacy`]).
//! - [`erase_site`] deletes every row of one site from every table of Veil's database that has a
//!   `site` column, waits until ClickHouse has applied the deletions, and reports how many rows
//!   each table lost. `veil erase-site DOMAIN` calls it.
//!
//! ClickHouse 18.16 has no TTL, so both use partition drops and mutations, which every version has.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde::Serialize;
use veil_schemas::sql;
use veil_schemas::sql::{date, ident, lit, utc, Sql};
use veil_schemas::{valid_identifier, ClickHouseConfig};

use crate::db::{count, exec, mutation_target, one, rows};
use crate::Error;

/// Default retention of raw events, in days (13 months: a year plus a month of comparison).
pub const DEFAULT_RETENTION_DAYS: u32 = 395;

/// How long raw events of each site are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retention {
    /// Days for sites without their own setting.
    pub default_days: u32,
    /// Per-site overrides.
    pub per_site: BTreeMap<String, u32>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            default_days: DEFAULT_RETENTION_DAYS,
            per_site: BTreeMap::new(),
        }
    }
}

impl Retention {
    /// Builds from `--retention-days` and `--site-retention DOMAIN=DAYS` values.
    pub fn parse(default_days: Option<u32>, per_site: &[String]) -> Result<Self, Error> {
        let default_days = default_days.unwrap_or(DEFAULT_RETENTION_DAYS);
        if default_days == 0 {
            return Err(Error::BadRequest(
                "--retention-days must be at least 1".into(),
            ));
        }
        let mut map = BTreeMap::new();
        for item in per_site {
            let (domain, days) = item.split_once('=').ok_or_else(|| {
                Error::BadRequest(format!("--site-retention {item:?} must be DOMAIN=DAYS"))
            })?;
            let days: u32 = days.trim().parse().ok().filter(|d| *d > 0).ok_or_else(|| {
                Error::BadRequest(format!(
                    "--site-retention {item:?}: DAYS must be a positive number"
                ))
            })?;
            map.insert(domain.trim().to_ascii_lowercase(), days);
        }
        Ok(Self {
            default_days,
            per_site: map,
        })
    }

    /// Days kept for `site`.
    pub fn days_for(&self, site: &str) -> u32 {
        self.per_site
            .get(site)
            .copied()
            .unwrap_or(self.default_days)
    }

    fn longest(&self) -> u32 {
        self.per_site
            .values()
            .copied()
            .chain([self.default_days])
            .max()
            .unwrap_or(self.default_days)
    }
}

/// What [`purge`] removed.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct PurgeReport {
    /// Daily partitions dropped (`YYYYMMDD`).
    pub dropped_partitions: Vec<u32>,
    /// Rows deleted per site by per-site retention.
    pub deleted_rows: BTreeMap<String, u64>,
}

/// What [`erase_site`] removed.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct EraseReport {
    /// The site.
    pub site: String,
    /// Rows removed per table.
    pub tables: BTreeMap<String, u64>,
}

/// How a table's day column is typed.
#[derive(Clone, Copy)]
enum DayCol {
    /// A `Date` (the rollup job's per-day tables).
    Date,
    /// A `DateTime` (events, and rollups keyed by hour or midnight).
    DateTime,
}

/// Tables of per-event data, the column their daily partitions come from and its type,
/// purged together.
const TABLES: &[(&str, &str, DayCol)] = &[
    ("events", "timestamp", DayCol::DateTime),
    ("events_hourly", "hour", DayCol::DateTime),
    ("visits", "day", DayCol::Date),
    ("filtered_hourly", "hour", DayCol::DateTime),
    ("events_daily", "day", DayCol::DateTime),
    ("visits_daily", "day", DayCol::Date),
    ("visit_open", "day", DayCol::Date),
    ("open_visits", "day", DayCol::Date),
    ("visits_daily_partial", "day", DayCol::Date),
    ("events_tail", "timestamp", DayCol::DateTime),
    ("today_daily", "day", DayCol::Date),
    ("today_snaps", "day", DayCol::Date),
];

/// `col < the start of day d`, written for the column's type.
fn before_day(col: &'static str, kind: DayCol, d: NaiveDate) -> Sql {
    if let DayCol::Date = kind {
        sql!("{} < {}", col, date(d))
    } else {
        sql!("{} < {}", col, utc(d.and_time(chrono::NaiveTime::MIN)))
    }
}

/// Waits until `SELECT count() FROM table WHERE cond` is 0 — read through the Distributed
/// table in cluster mode, so it sees every shard's mutation finish.
async fn wait_gone(
    client: &clickhouse::Client,
    table: &Sql,
    cond: &Sql,
    timeout: Duration,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let stmt = sql!("SELECT count() FROM {} WHERE {}", table, cond);
        let left = count(client, &stmt).await?;
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::ClickHouse(format!(
                "deletion in {table} still running after {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes raw events (and their rollups) older than each site's retention, as of `today` (UTC).
pub async fn purge(
    cfg: &ClickHouseConfig,
    retention: &Retention,
    today: NaiveDate,
) -> Result<PurgeReport, Error> {
    let client = cfg.client();
    let mut report = PurgeReport::default();
    // Sites stored through the admin API may set their own retention: it wins over flags.
    let stored = veil_schemas::registry::Registry::new(cfg).load().await?;
    let mut retention = retention.clone();
    for s in stored.sites() {
        if let Some(days) = s.settings.retention_days {
            retention.per_site.insert(s.domain.clone(), days);
        }
    }
    let retention = &retention;
    // 1. Whole days older than the longest retention, for every site at once.
    let oldest_kept = today - chrono::Duration::days(i64::from(retention.longest()) - 1);
    let cutoff: u32 = oldest_kept
        .format("%Y%m%d")
        .to_string()
        .parse()
        .unwrap_or(0);
    // The rollups are partitioned by the same UTC day and go with them. Partitions are found
    // through the table itself (in cluster mode the Distributed table, so every shard's
    // count), and dropped on every shard (`mutation_target`).
    for (table, col, kind) in TABLES {
        let before = before_day(col, *kind, oldest_kept);
        let stmt = sql!(
            "SELECT DISTINCT toYYYYMMDD({}) FROM {} WHERE {}",
            *col,
            *table,
            before
        );
        let parts: Vec<u32> = rows(&client, &stmt).await?;
        let target = mutation_target(cfg, table)?;
        for n in parts {
            if n < cutoff {
                let stmt = sql!("ALTER TABLE {} DROP PARTITION {}", target, n);
                exec(&client, &stmt).await?;
                if *table == "events" {
                    report.dropped_partitions.push(n);
                }
            }
        }
        wait_gone(&client, &Sql::new(table), &before, Duration::from_secs(300)).await?;
    }
    report.dropped_partitions.sort_unstable();
    // 2. Sites whose retention is shorter than the longest.
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct SiteCount {
        site: String,
        oldest: u32,
    }
    let sites: Vec<SiteCount> = rows(
        &client,
        &Sql::new("SELECT site, toUInt32(min(timestamp)) FROM events GROUP BY site"),
    )
    .await?;
    for s in sites {
        let keep_from = today - chrono::Duration::days(i64::from(retention.days_for(&s.site)) - 1);
        let keep_from_ts = keep_from
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp())
            .unwrap_or(0);
        if i64::from(s.oldest) >= keep_from_ts {
            continue;
        }
        let stmt = sql!(
            "SELECT count() FROM events WHERE site = {} AND {}",
            lit(&s.site),
            before_day("timestamp", DayCol::DateTime, keep_from)
        );
        let n = count(&client, &stmt).await?;
        if n > 0 {
            for (table, col, kind) in TABLES {
                let target = mutation_target(cfg, table)?;
                let cond = sql!(
                    "site = {} AND {}",
                    lit(&s.site),
                    before_day(col, *kind, keep_from)
                );
                let stmt = sql!("ALTER TABLE {} DELETE WHERE {}", target, cond);
                exec(&client, &stmt).await?;
                wait_gone(&client, &Sql::new(table), &cond, Duration::from_secs(300)).await?;
            }
            report.deleted_rows.insert(s.site, n);
        }
    }
    // 3. The privacy budget ledger keeps today and yesterday (a day's budget is over at UTC
    // midnight; yesterday stays for answers under way across it).
    let keep = today - chrono::Duration::days(1);
    let stmt = sql!(
        "SELECT DISTINCT toYYYYMMDD(day) FROM privacy_spend WHERE day < {}",
        date(keep)
    );
    let old: Vec<u32> = rows(&client, &stmt).await?;
    let target = mutation_target(cfg, "privacy_spend")?;
    for n in old {
        exec(
            &client,
            &sql!("ALTER TABLE {} DROP PARTITION {}", target, n),
        )
        .await?;
    }
    Ok(report)
}

/// Tables with a `site` column that erasing a site's data keeps: who may reach the site and
/// the audit log of who changed what (no visitor data in either; the audit log records the
/// erasure itself).
pub const KEPT_ON_ERASE: &[&str] = &["audit_log", "memberships", "invitations"];

/// Deletes every row of `site` from every table with a `site` column (but
/// [`KEPT_ON_ERASE`]); returns rows removed per table.
pub async fn erase_site(cfg: &ClickHouseConfig, site: &str) -> Result<EraseReport, Error> {
    let client = cfg.client();
    let tables: Vec<String> = rows(
        &client,
        &Sql::new(
            "SELECT c.table FROM system.columns AS c \
             WHERE c.database = currentDatabase() AND c.name = 'site' ORDER BY c.table",
        ),
    )
    .await?;
    let mut report = EraseReport {
        site: site.to_string(),
        tables: BTreeMap::new(),
    };
    for table in tables {
        // In cluster mode each sharded table has a `_local` twin per node: rows are counted
        // and deleted through the base name (Distributed, `ON CLUSTER`).
        if cfg.cluster.is_some() && table.ends_with("_local") {
            continue;
        }
        let base = table.strip_suffix("_local").unwrap_or(&table);
        if KEPT_ON_ERASE.contains(&base) {
            continue;
        }
        if !valid_identifier(&table) {
            tracing::warn!(table = %table, "skipping a table whose name cannot be pasted safely");
            continue;
        }
        let name = ident(&table)?;
        let stmt = sql!(
            "SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = {}",
            lit(&table)
        );
        let engine: String = one(&client, &stmt).await?;
        if !engine.contains("MergeTree") && engine != "Distributed" {
            continue; // views hold no rows of their own
        }
        let cond = sql!("site = {}", lit(site));
        let stmt = sql!("SELECT count() FROM {} WHERE {}", name, cond);
        let n = count(&client, &stmt).await?;
        if n > 0 {
            let target = mutation_target(cfg, &table)?;
            let stmt = sql!("ALTER TABLE {} DELETE WHERE {}", target, cond);
            exec(&client, &stmt).await?;
            wait_gone(&client, &name, &cond, Duration::from_secs(600)).await?;
        }
        report.tables.insert(table, n);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_per_site_retention() {
        let r = Retention::parse(Some(30), &["a.com=7".into(), " B.com = 400 ".into()]).unwrap();
        assert_eq!(r.days_for("a.com"), 7);
        assert_eq!(r.days_for("b.com"), 400);
        assert_eq!(r.days_for("c.com"), 30);
        assert_eq!(r.longest(), 400);
        assert!(Retention::parse(None, &["a.com".into()])
            .unwrap_err()
            .to_string()
            .contains("DOMAIN=DAYS"));
        assert!(Retention::parse(None, &["a.com=0".into()]).is_err());
        assert!(Retention::parse(Some(0), &[]).is_err());
        assert_eq!(Retention::parse(None, &[]).unwrap().default_days, 395);
    }
}
