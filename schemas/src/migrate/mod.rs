//! Applies the numbered SQL files in `schemas/migrations/` in order and records each one in
//! the `schema_migrations` table of Veil's database.
//!
//! One runner ([`migrate()`]) for one server and for a cluster: both read what is recorded,
//! refuse an applied migration whose checksum changed, apply what is missing and record it
//! (version, name, checksum) with the same code; only how a statement reaches the server
//! differs (as written on one server, rewritten by [`cluster_statements`] on a cluster).
//! Splitting files into statements and recognising statement shapes lives in `migrate/ddl.rs`,
//! the cluster rewrite in `migrate/cluster.rs`. Statements are static slices of the embedded
//! files, sent as [`Sql`] without being copied into a `String`; the runner's own statements
//! name the database and cluster through [`ident`] and values through [`lit`].
//!
//! Rules for migration files: numbered `NNN_name.sql`, append-only (an applied file may never
//! change: its blake3 checksum is recorded and checked), statements separated by a `;` at the
//! end of a line, comment and blank lines only between statements, every statement idempotent
//! (`IF NOT EXISTS`) so a run interrupted half-way can simply run again. Table names are
//! unqualified: the client selects the database.
//!
//! ## Cluster mode (`--clickhouse-cluster NAME`)
//! The same files are applied to a ClickHouse cluster (`remote_servers` entry NAME, ZooKeeper,
//! macros `{shard}` and `{replica}`, the replica macro unique across the cluster) by rewriting
//! each single-node statement generically ([`cluster_statements`]); no migration has a cluster
//! variant. Every table gets one of two [`Layout`]s, decided from all shipped migrations:
//! - **Sharded** — tables with a `visitor_id` column, aggregating tables and targets of a
//!   materialized view (events, visits, events_hourly): `x_local` with the Replicated engine on
//!   every node (ZooKeeper path `/clickhouse/tables/{shard}/DB/x_local`), plus `x` =
//!   `Distributed(NAME, DB, x_local, KEY)`. KEY is `sipHash64(site, visitor_id)` when the table
//!   has them (one visitor's hits on one shard, so visits and uniq counts never need another
//!   shard's rows), else `rand()` (rollup rows: written by each node's materialized view
//!   locally; KEY only places rows inserted through `x`).
//! - **Everywhere** — small shared state without visitor ids (salts, the site registry,
//!   visit_builds, schema_migrations): one Replicated table per node, all nodes replicas of one
//!   ZooKeeper path (`/clickhouse/tables/all/DB/x`), no Distributed table. Every node reads it
//!   locally and fully; `ALTER … DROP PARTITION`/`DELETE` issued on any node reach all of them.
//!
//! Statements: `CREATE TABLE` → the above, `ON CLUSTER`; `CREATE MATERIALIZED VIEW v TO t AS
//! SELECT … FROM src` → on every node, reading `src_local` and writing `t_local`;
//! `ALTER TABLE x ADD|DROP|MODIFY COLUMN` → `x_local` and `x` `ON CLUSTER` (an Everywhere
//! table: once, on one node; ZooKeeper carries it to the replicas); other `ALTER`s → the local
//! table only; `DROP TABLE IF EXISTS x` → `x` (and `x_local` for a sharded table) `ON
//! CLUSTER`. Anything else is refused. Names are qualified with the database (DDL run `ON
//! CLUSTER` resolves unqualified names in each host's default database).
//!
//! Concurrency: several `veil` processes may migrate at once. `ON CLUSTER` DDL is queued in
//! ZooKeeper and run in order on each host; every rewritten statement is idempotent, and an
//! `ADD COLUMN` that loses a race is accepted once the column is there. `schema_migrations` is
//! a ReplicatedReplacingMergeTree keyed by version, so a version recorded twice by racing
//! processes collapses to one row (readers group by version anyway). A process that finds
//! every version recorded on its node runs no DDL at all, so collectors start while a node of
//! the cluster is down.

mod cluster;
mod ddl;

pub use cluster::{
    cluster_statements, layout, layouts, local_table, mutation_target, tables, ClusterStatement,
    Layout, Tables,
};

use crate::sql::{ident, lit, Run as _, Sql};
use crate::{sql, ClickHouseConfig, Error};

/// One embedded migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The number the file starts with.
    pub version: u32,
    /// The file name without number and extension.
    pub name: &'static str,
    /// The SQL text.
    pub sql: &'static str,
}

/// Every migration shipped with this binary, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        sql: include_str!("../../migrations/001_events.sql"),
    },
    Migration {
        version: 2,
        name: "salts",
        sql: include_str!("../../migrations/002_salts.sql"),
    },
    Migration {
        version: 3,
        name: "tracker",
        sql: include_str!("../../migrations/003_tracker.sql"),
    },
    Migration {
        version: 4,
        name: "apps",
        sql: include_str!("../../migrations/004_apps.sql"),
    },
    Migration {
        version: 5,
        name: "spool",
        sql: include_str!("../../migrations/005_spool.sql"),
    },
    Migration {
        version: 6,
        name: "enrichment",
        sql: include_str!("../../migrations/006_enrichment.sql"),
    },
    Migration {
        version: 7,
        name: "app_install",
        sql: include_str!("../../migrations/007_app_install.sql"),
    },
    Migration {
        version: 8,
        name: "bots",
        sql: include_str!("../../migrations/008_bots.sql"),
    },
    Migration {
        version: 9,
        name: "revenue",
        sql: include_str!("../../migrations/009_revenue.sql"),
    },
    Migration {
        version: 10,
        name: "registry",
        sql: include_str!("../../migrations/010_registry.sql"),
    },
    Migration {
        version: 11,
        name: "rollups",
        sql: include_str!("../../migrations/011_rollups.sql"),
    },
    Migration {
        version: 12,
        name: "filtered",
        sql: include_str!("../../migrations/012_filtered.sql"),
    },
    Migration {
        version: 13,
        name: "daily_rollups",
        sql: include_str!("../../migrations/013_daily_rollups.sql"),
    },
    Migration {
        version: 14,
        name: "open_visits",
        sql: include_str!("../../migrations/014_open_visits.sql"),
    },
    Migration {
        version: 15,
        name: "today_snapshots",
        sql: include_str!("../../migrations/015_today_snapshots.sql"),
    },
    Migration {
        version: 16,
        name: "visit_hits",
        sql: include_str!("../../migrations/016_visit_hits.sql"),
    },
    Migration {
        version: 17,
        name: "privacy",
        sql: include_str!("../../migrations/017_privacy.sql"),
    },
    Migration {
        version: 18,
        name: "ingest_keys",
        sql: include_str!("../../migrations/018_ingest_keys.sql"),
    },
    Migration {
        version: 19,
        name: "people",
        sql: include_str!("../../migrations/019_people.sql"),
    },
    Migration {
        version: 20,
        name: "imports",
        sql: include_str!("../../migrations/020_imports.sql"),
    },
    Migration {
        version: 21,
        name: "digests",
        sql: include_str!("../../migrations/021_digests.sql"),
    },
    Migration {
        version: 22,
        name: "digest_options",
        sql: include_str!("../../migrations/022_digest_options.sql"),
    },
    Migration {
        version: 23,
        name: "link_embeds",
        sql: include_str!("../../migrations/023_link_embeds.sql"),
    },
    Migration {
        version: 24,
        name: "segments",
        sql: include_str!("../../migrations/024_segments.sql"),
    },
    Migration {
        version: 25,
        name: "events_tail",
        sql: include_str!("../../migrations/025_events_tail.sql"),
    },
];

impl Migration {
    /// blake3 of the SQL text, hex.
    pub fn checksum(&self) -> String {
        blake3::hash(self.sql.as_bytes()).to_hex().to_string()
    }

    /// The statements of the file, comments stripped, split at `;` line ends: slices of the
    /// embedded file, so each is static text.
    pub fn statements(&self) -> Vec<&'static str> {
        ddl::split_statements(self.sql)
    }
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Applied {
    version: u32,
    checksum: String,
}

/// How statements reach the server: as written (one server) or rewritten for a cluster.
enum Mode<'a> {
    Single,
    Cluster { name: &'a str, tables: Tables },
}

/// Creates the database if needed and applies every migration not yet recorded.
/// Returns the versions applied by this call (empty when already up to date).
pub async fn migrate(cfg: &ClickHouseConfig) -> Result<Vec<u32>, Error> {
    cfg.validate()?;
    let Some(cluster) = &cfg.cluster else {
        return run(cfg, &Mode::Single).await;
    };
    let mode = Mode::Cluster {
        name: cluster,
        tables: tables(MIGRATIONS),
    };
    // Every statement is idempotent: a run cut by a dropped connection (a server closing an
    // idle keep-alive connection as the next DDL is sent) simply runs again.
    let mut attempt = 0;
    loop {
        match run(cfg, &mode).await {
            Err(Error::Query(e)) if attempt < 3 && e.to_string().contains("network error") => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "migration interrupted; running it again");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

/// The one record/check/apply path of both modes.
async fn run(cfg: &ClickHouseConfig, mode: &Mode<'_>) -> Result<Vec<u32>, Error> {
    let db_name = cfg.database.as_str();
    let db = ident(db_name)?;
    let client = cfg.server_client();
    // Up to date on this node: no DDL at all (ON CLUSTER DDL waits for every node).
    if let Some(applied) = applied_versions(&client, db_name).await? {
        let mut all = true;
        for m in MIGRATIONS {
            all &= check_applied(&applied, m)?;
        }
        if all {
            return Ok(Vec::new());
        }
    }
    match mode {
        Mode::Single => {
            client
                .sql(&sql!("CREATE DATABASE IF NOT EXISTS {}", db))
                .execute()
                .await?;
            let q = sql!(
                "CREATE TABLE IF NOT EXISTS {}.schema_migrations \
                 (version UInt32, name String, checksum String, applied_at DateTime) \
                 ENGINE = MergeTree ORDER BY version",
                db
            );
            client.sql(&q).execute().await?;
        }
        Mode::Cluster { name, .. } => cluster::prepare(&client, cfg, name).await?,
    }
    let applied = applied_versions(&client, db_name)
        .await?
        .unwrap_or_default();
    let db_client = cfg.client();
    let mut done = Vec::new();
    for m in MIGRATIONS {
        if check_applied(&applied, m)? {
            continue;
        }
        match mode {
            Mode::Single => apply_single(&db_client, db_name, m).await?,
            Mode::Cluster { name, tables } => {
                cluster::apply(&client, db_name, name, tables, m).await?
            }
        }
        record(&client, &db, m).await?;
        match mode {
            Mode::Single => {
                tracing::info!(version = m.version, name = m.name, "applied migration")
            }
            Mode::Cluster { name, .. } => tracing::info!(
                version = m.version,
                name = m.name,
                cluster = name,
                "applied migration on the cluster"
            ),
        }
        done.push(m.version);
    }
    Ok(done)
}

/// Runs a migration's statements as written, through a client bound to the database; an
/// `ADD COLUMN` whose column exists is skipped (18.16 has no `ADD COLUMN IF NOT EXISTS`).
async fn apply_single(client: &clickhouse::Client, db: &str, m: &Migration) -> Result<(), Error> {
    for stmt in m.statements() {
        if let Some((table, column)) = ddl::added_column(stmt) {
            if column_exists(client, db, table, column).await? {
                continue;
            }
        }
        client.sql(&Sql::new(stmt)).execute().await?;
    }
    Ok(())
}

/// Whether `db.table` has `column` on the node `client` talks to.
async fn column_exists(
    client: &clickhouse::Client,
    db: &str,
    table: &str,
    column: &str,
) -> Result<bool, Error> {
    let q = sql!(
        "SELECT count() FROM system.columns WHERE database = {} AND table = {} AND name = {}",
        lit(db),
        lit(table),
        lit(column)
    );
    Ok(client.sql(&q).fetch_one::<u64>().await? > 0)
}

/// The recorded versions and checksums (`None`: no `schema_migrations` table yet).
async fn applied_versions(
    client: &clickhouse::Client,
    db: &str,
) -> Result<Option<Vec<Applied>>, Error> {
    let q = sql!(
        "SELECT count() FROM system.tables WHERE database = {} AND name = 'schema_migrations'",
        lit(db)
    );
    if client.sql(&q).fetch_one::<u64>().await? == 0 {
        return Ok(None);
    }
    let q = sql!(
        "SELECT version, any(checksum) FROM {}.schema_migrations GROUP BY version",
        ident(db)?
    );
    Ok(Some(client.sql(&q).fetch_all().await?))
}

/// True when `m` is recorded; an error when it was recorded with another checksum (an applied
/// migration was edited).
fn check_applied(applied: &[Applied], m: &Migration) -> Result<bool, Error> {
    match applied.iter().find(|a| a.version == m.version) {
        Some(a) if a.checksum != m.checksum() => Err(Error::Checksum {
            version: m.version,
            name: m.name.to_string(),
            applied: a.checksum.clone(),
            shipped: m.checksum(),
        }),
        Some(_) => Ok(true),
        None => Ok(false),
    }
}

/// Records `m` with its checksum, unless a concurrent run already did.
async fn record(client: &clickhouse::Client, db: &Sql, m: &Migration) -> Result<(), Error> {
    let q = sql!(
        "SELECT count() FROM {}.schema_migrations WHERE version = {}",
        db,
        m.version
    );
    if client.sql(&q).fetch_one::<u64>().await? == 0 {
        let q = sql!(
            "INSERT INTO {}.schema_migrations (version, name, checksum, applied_at) VALUES ({}, {}, {}, now())",
            db,
            m.version,
            lit(m.name),
            lit(&m.checksum())
        );
        client.sql(&q).execute().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.version as usize,
                i + 1,
                "migration {} out of order",
                m.name
            );
            assert!(!m.statements().is_empty());
        }
    }

    #[test]
    fn shipped_files_keep_comments_between_statements() {
        for m in MIGRATIONS {
            assert!(
                !ddl::has_lines_inside_statements(m.sql),
                "migration {} has a comment or blank line inside a statement",
                m.name
            );
        }
    }

    #[test]
    fn statements_split_and_drop_comments() {
        let m = Migration { version: 9, name: "x", sql: "-- c\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\nCREATE TABLE b\n(y UInt8)\nENGINE = Memory;\n" };
        let s = m.statements();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0], "CREATE TABLE a (x UInt8) ENGINE = Memory");
        assert!(s[1].starts_with("CREATE TABLE b"));
    }

    #[test]
    fn shipped_sql_avoids_what_18_16_lacks() {
        for m in MIGRATIONS {
            let up = format!(" {} ", m.statements().join(" ").to_uppercase());
            for bad in [
                " TTL ",
                "DATETIME64",
                "LOWCARDINALITY",
                "IPV4",
                "IPV6",
                " OVER (",
            ] {
                assert!(!up.contains(bad), "migration {} uses {bad}", m.name);
            }
        }
    }
}
