//! Applies the numbered SQL files in `schemas/migrations/` in order and records each one in
//! the `schema_migrations` table of Veil's database.
//!
//! Rules for migration files: numbered `NNN_name.sql`, append-only (an applied file may never
//! change: its blake3 checksum is recorded and checked), statements separated by a `;` at the
//! end of a line, every statement idempotent (`IF NOT EXISTS`) so a run interrupted half-way can
//! simply run again. Table names are unqualified: the client selects the database.
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
//! table only. Anything else is refused. Names are qualified with the database (DDL run `ON
//! CLUSTER` resolves unqualified names in each host's default database).
//!
//! Concurrency: several `veil` processes may migrate at once. `ON CLUSTER` DDL is queued in
//! ZooKeeper and run in order on each host; every rewritten statement is idempotent, and an
//! `ADD COLUMN` that loses a race is accepted once the column is there. `schema_migrations` is
//! a ReplicatedReplacingMergeTree keyed by version, so a version recorded twice by racing
//! processes collapses to one row (readers group by version anyway). A process that finds
//! every version recorded on its node runs no DDL at all, so collectors start while a node of
//! the cluster is down.

use std::collections::BTreeMap;

use crate::{quote, ClickHouseConfig, Error};

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
        sql: include_str!("../migrations/001_events.sql"),
    },
    Migration {
        version: 2,
        name: "salts",
        sql: include_str!("../migrations/002_salts.sql"),
    },
    Migration {
        version: 3,
        name: "tracker",
        sql: include_str!("../migrations/003_tracker.sql"),
    },
    Migration {
        version: 4,
        name: "apps",
        sql: include_str!("../migrations/004_apps.sql"),
    },
    Migration {
        version: 5,
        name: "spool",
        sql: include_str!("../migrations/005_spool.sql"),
    },
    Migration {
        version: 6,
        name: "enrichment",
        sql: include_str!("../migrations/006_enrichment.sql"),
    },
    Migration {
        version: 7,
        name: "app_install",
        sql: include_str!("../migrations/007_app_install.sql"),
    },
    Migration {
        version: 8,
        name: "bots",
        sql: include_str!("../migrations/008_bots.sql"),
    },
    Migration {
        version: 9,
        name: "revenue",
        sql: include_str!("../migrations/009_revenue.sql"),
    },
    Migration {
        version: 10,
        name: "registry",
        sql: include_str!("../migrations/010_registry.sql"),
    },
    Migration {
        version: 11,
        name: "rollups",
        sql: include_str!("../migrations/011_rollups.sql"),
    },
    Migration {
        version: 12,
        name: "filtered",
        sql: include_str!("../migrations/012_filtered.sql"),
    },
    Migration {
        version: 13,
        name: "daily_rollups",
        sql: include_str!("../migrations/013_daily_rollups.sql"),
    },
    Migration {
        version: 14,
        name: "open_visits",
        sql: include_str!("../migrations/014_open_visits.sql"),
    },
    Migration {
        version: 15,
        name: "today_snapshots",
        sql: include_str!("../migrations/015_today_snapshots.sql"),
    },
];

impl Migration {
    /// blake3 of the SQL text, hex.
    pub fn checksum(&self) -> String {
        blake3::hash(self.sql.as_bytes()).to_hex().to_string()
    }

    /// The statements of the file, comments stripped, split at `;` line ends.
    pub fn statements(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = String::new();
        for line in self.sql.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with("--") || trimmed.is_empty() {
                continue;
            }
            cur.push_str(line);
            cur.push('\n');
            if trimmed.ends_with(';') {
                let stmt = cur.trim().trim_end_matches(';').trim().to_string();
                if !stmt.is_empty() {
                    out.push(stmt);
                }
                cur.clear();
            }
        }
        let rest = cur.trim();
        if !rest.is_empty() {
            out.push(rest.to_string());
        }
        out
    }
}

/// For `ALTER TABLE t ADD COLUMN c …`, the table and column (the runner skips it when the
/// column exists: 18.16 has no `ADD COLUMN IF NOT EXISTS`).
fn added_column(stmt: &str) -> Option<(&str, &str)> {
    let words: Vec<&str> = stmt.split_whitespace().take(6).collect();
    match words.as_slice() {
        [a, t, table, add, c, column]
            if a.eq_ignore_ascii_case("ALTER")
                && t.eq_ignore_ascii_case("TABLE")
                && add.eq_ignore_ascii_case("ADD")
                && c.eq_ignore_ascii_case("COLUMN") =>
        {
            Some((table, column))
        }
        _ => None,
    }
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Applied {
    version: u32,
    checksum: String,
}

/// Creates the database if needed and applies every migration not yet recorded.
/// Returns the versions applied by this call (empty when already up to date).
pub async fn migrate(cfg: &ClickHouseConfig) -> Result<Vec<u32>, Error> {
    cfg.validate()?;
    if let Some(cluster) = &cfg.cluster {
        // Every statement is idempotent: a run cut by a dropped connection (a server closing an
        // idle keep-alive connection as the next DDL is sent) simply runs again.
        let mut attempt = 0;
        loop {
            match migrate_cluster(cfg, cluster).await {
                Err(Error::Query(e)) if attempt < 3 && e.to_string().contains("network error") => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "migration interrupted; running it again");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                other => return other,
            }
        }
    }
    cfg.server_client()
        .query(&format!("CREATE DATABASE IF NOT EXISTS {}", cfg.database))
        .execute()
        .await?;
    let client = cfg.client();
    client
        .query(
            "CREATE TABLE IF NOT EXISTS schema_migrations \
             (version UInt32, name String, checksum String, applied_at DateTime) \
             ENGINE = MergeTree ORDER BY version",
        )
        .execute()
        .await?;
    let applied: Vec<Applied> = client
        .query("SELECT version, any(checksum) FROM schema_migrations GROUP BY version")
        .fetch_all()
        .await?;
    let mut done = Vec::new();
    for m in MIGRATIONS {
        if let Some(a) = applied.iter().find(|a| a.version == m.version) {
            if a.checksum != m.checksum() {
                return Err(Error::Checksum {
                    version: m.version,
                    name: m.name.to_string(),
                    applied: a.checksum.clone(),
                    shipped: m.checksum(),
                });
            }
            continue;
        }
        for stmt in m.statements() {
            if let Some((table, column)) = added_column(&stmt) {
                let exists: u64 = client
                    .query("SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = ? AND name = ?")
                    .bind(table)
                    .bind(column)
                    .fetch_one()
                    .await?;
                if exists > 0 {
                    continue;
                }
            }
            client.query(&stmt).execute().await?;
        }
        client
            .query(&format!(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ({}, {}, {}, now())",
                m.version,
                quote(m.name),
                quote(&m.checksum())
            ))
            .execute()
            .await?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        done.push(m.version);
    }
    Ok(done)
}

/// Where a table lives in cluster mode (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `x_local` on every node (Replicated, one copy per shard) plus Distributed `x`.
    Sharded,
    /// `x` on every node, all replicas of one ZooKeeper path; no Distributed table.
    Everywhere,
}

/// Splits a statement into words, keeping `(`, `)` and `,` as words of their own.
fn words(stmt: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in stmt.char_indices() {
        let sep = c.is_whitespace() || c == '(' || c == ')' || c == ',';
        if sep {
            if let Some(s) = start.take() {
                out.push(&stmt[s..i]);
            }
            if !c.is_whitespace() {
                out.push(&stmt[i..i + c.len_utf8()]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push(&stmt[s..]);
    }
    out
}

fn is(word: &str, kw: &str) -> bool {
    word.eq_ignore_ascii_case(kw)
}

/// Byte offset of the keyword `kw` as a whole word at depth 0 of parentheses, from `from`.
fn find_kw(stmt: &str, kw: &str, from: usize) -> Option<usize> {
    let bytes = stmt.as_bytes();
    let mut depth = 0i32;
    let mut in_str = false;
    let mut i = from;
    while i < bytes.len() {
        let c = bytes[i];
        if in_str {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == b'\'' {
                in_str = false;
            }
        } else if c == b'\'' {
            in_str = true;
        } else if c == b'(' {
            depth += 1;
        } else if c == b')' {
            depth -= 1;
        } else if depth == 0
            && stmt[i..].len() >= kw.len()
            && stmt.is_char_boundary(i + kw.len())
            && stmt[i..i + kw.len()].eq_ignore_ascii_case(kw)
            && (i == 0 || !is_ident_byte(bytes[i - 1]))
            && bytes.get(i + kw.len()).is_none_or(|b| !is_ident_byte(*b))
        {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A parsed `CREATE TABLE [IF NOT EXISTS] name (columns) ENGINE = E[(args)] rest`.
struct CreateTable<'a> {
    name: &'a str,
    columns: &'a str,
    engine: &'a str,
    engine_args: Option<&'a str>,
    rest: &'a str,
}

fn parse_create_table(stmt: &str) -> Option<CreateTable<'_>> {
    let w = words(stmt);
    if !(w.len() > 3 && is(w[0], "CREATE") && is(w[1], "TABLE")) {
        return None;
    }
    let name = if is(w[2], "IF") { *w.get(5)? } else { w[2] };
    let name_at = stmt.find(name)?;
    let open = name_at + stmt[name_at..].find('(')?;
    let engine_kw = find_kw(stmt, "ENGINE", open)?;
    let close = stmt[..engine_kw].rfind(')')?;
    let columns = &stmt[open + 1..close];
    let after = stmt[engine_kw + "ENGINE".len()..].trim_start();
    let after = after.strip_prefix('=')?.trim_start();
    let end = after
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(after.len());
    let engine = &after[..end];
    let mut rest = after[end..].trim_start();
    let mut engine_args = None;
    if let Some(r) = rest.strip_prefix('(') {
        let close = r.find(')')?;
        engine_args = Some(r[..close].trim()).filter(|a| !a.is_empty());
        rest = r[close + 1..].trim_start();
    }
    Some(CreateTable {
        name,
        columns,
        engine,
        engine_args,
        rest,
    })
}

/// Column names of a column list (the first word of each top-level comma-separated item).
fn column_names(columns: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let bytes = columns.as_bytes();
    for i in 0..=bytes.len() {
        let c = bytes.get(i).copied().unwrap_or(b',');
        match c {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b',' if depth == 0 => {
                if let Some(n) = columns[start..i].split_whitespace().next() {
                    out.push(n.trim_matches('`'));
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    out
}

/// For `CREATE MATERIALIZED VIEW [IF NOT EXISTS] v TO t …`, (v, t, offset of `AS`).
fn parse_mv(stmt: &str) -> Option<(&str, &str, usize)> {
    let w = words(stmt);
    if !(w.len() > 5 && is(w[0], "CREATE") && is(w[1], "MATERIALIZED") && is(w[2], "VIEW")) {
        return None;
    }
    let i = if is(w[3], "IF") { 6 } else { 3 };
    let view = *w.get(i)?;
    if !is(w.get(i + 1)?, "TO") {
        return None;
    }
    let target = *w.get(i + 2)?;
    let as_at = find_kw(stmt, "AS", 0)?;
    Some((view, target, as_at))
}

const MERGE_TREES: &[&str] = &[
    "MergeTree",
    "AggregatingMergeTree",
    "ReplacingMergeTree",
    "SummingMergeTree",
    "CollapsingMergeTree",
    "VersionedCollapsingMergeTree",
    "GraphiteMergeTree",
];

/// The layout of every table the shipped migrations create.
pub fn layouts(migrations: &[Migration]) -> BTreeMap<String, Layout> {
    tables(migrations)
        .into_iter()
        .map(|(t, (l, _))| (t, l))
        .collect()
}

/// Sharding key of a sharded table's Distributed table, from its column names.
fn sharding_key(cols: &[&str]) -> &'static str {
    if cols.contains(&"visitor_id") && cols.contains(&"site") {
        "sipHash64(site, visitor_id)"
    } else if cols.contains(&"visitor_id") {
        "sipHash64(visitor_id)"
    } else {
        "rand()"
    }
}

/// Every table the migrations create, with its layout and sharding key.
pub type Tables = BTreeMap<String, (Layout, &'static str)>;

/// [`Tables`] of `migrations`.
pub fn tables(migrations: &[Migration]) -> Tables {
    let stmts: Vec<String> = migrations.iter().flat_map(|m| m.statements()).collect();
    let mv_targets: Vec<&str> = stmts
        .iter()
        .filter_map(|s| parse_mv(s))
        .map(|m| m.1)
        .collect();
    let mut out = BTreeMap::new();
    for s in &stmts {
        let Some(t) = parse_create_table(s) else {
            continue;
        };
        let cols = column_names(t.columns);
        let sharded = cols.contains(&"visitor_id")
            || t.engine.contains("Aggregating")
            || t.engine.contains("Summing")
            || mv_targets.contains(&t.name);
        let layout = if sharded {
            Layout::Sharded
        } else {
            Layout::Everywhere
        };
        out.insert(t.name.to_string(), (layout, sharding_key(&cols)));
    }
    out
}

/// The cluster-mode layout of a shipped table (`None`: no migration creates it).
pub fn layout(table: &str) -> Option<Layout> {
    layouts(MIGRATIONS).get(table).copied()
}

/// Where row-changing DDL on `table` (`ALTER … DELETE`, `DROP PARTITION`) must go: `table`
/// on one server; in cluster mode `DB.table_local ON CLUSTER NAME` for a sharded table (every
/// shard; one replica of each runs it, replication does the rest) and `table` for one
/// replicated everywhere (any node; replication does the rest).
pub fn mutation_target(cfg: &ClickHouseConfig, table: &str) -> String {
    match (&cfg.cluster, layout(table)) {
        (Some(c), Some(Layout::Sharded)) => {
            format!("{}.{table}_local ON CLUSTER {c}", cfg.database)
        }
        _ => table.to_string(),
    }
}

/// The table holding `table`'s rows on the node a client talks to (`system.parts`,
/// `system.mutations`): `table_local` for a sharded table in cluster mode, else `table`.
pub fn local_table(cfg: &ClickHouseConfig, table: &str) -> String {
    match (&cfg.cluster, layout(table)) {
        (Some(_), Some(Layout::Sharded)) => format!("{table}_local"),
        _ => table.to_string(),
    }
}

/// One rewritten statement and, for column changes, the (table, column) that shows it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatement {
    /// The SQL to run.
    pub sql: String,
    /// For `ADD COLUMN`: skip when this (table, column) exists on the node, and accept a
    /// failure once it does (a concurrent run added it).
    pub adds_column: Option<(String, String)>,
}

fn replicated_engine(t: &CreateTable<'_>, path: &str) -> Result<String, String> {
    if !MERGE_TREES.contains(&t.engine) {
        return Err(format!("engine {} of table {}", t.engine, t.name));
    }
    let args = t.engine_args.map(|a| format!(", {a}")).unwrap_or_default();
    Ok(format!(
        "Replicated{}('{path}', '{{replica}}'{args})",
        t.engine
    ))
}

/// Rewrites one single-node migration statement for cluster `cluster` and database `db`.
pub fn cluster_statements(
    stmt: &str,
    db: &str,
    cluster: &str,
    tables: &Tables,
) -> Result<Vec<ClusterStatement>, Error> {
    let refuse = |why: String| {
        Error::Config(format!(
            "cluster mode cannot apply this migration statement ({why}): {}",
            stmt.lines().next().unwrap_or("")
        ))
    };
    let plain = |sql: String| ClusterStatement {
        sql,
        adds_column: None,
    };
    let w = words(stmt);
    if let Some(t) = parse_create_table(stmt) {
        let (layout, key) = tables
            .get(t.name)
            .copied()
            .ok_or_else(|| refuse(format!("unknown table {}", t.name)))?;
        let name = t.name;
        return Ok(match layout {
            Layout::Sharded => {
                let engine = replicated_engine(
                    &t,
                    &format!("/clickhouse/tables/{{shard}}/{db}/{name}_local"),
                )
                .map_err(refuse)?;
                vec![
                    plain(format!(
                        "CREATE TABLE IF NOT EXISTS {db}.{name}_local ON CLUSTER {cluster}\n({})\nENGINE = {engine}\n{}",
                        t.columns.trim_matches('\n'),
                        t.rest
                    )),
                    plain(format!(
                        "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {cluster} AS {db}.{name}_local \
                         ENGINE = Distributed({cluster}, {db}, {name}_local, {key})"
                    )),
                ]
            }
            Layout::Everywhere => {
                let engine = replicated_engine(&t, &format!("/clickhouse/tables/all/{db}/{name}"))
                    .map_err(refuse)?;
                vec![plain(format!(
                    "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {cluster}\n({})\nENGINE = {engine}\n{}",
                    t.columns.trim_matches('\n'),
                    t.rest
                ))]
            }
        });
    }
    if let Some((view, target, as_at)) = parse_mv(stmt) {
        let local = |t: &str| match tables.get(t) {
            Some((Layout::Sharded, _)) => Ok(format!("{db}.{t}_local")),
            Some((Layout::Everywhere, _)) => Ok(format!("{db}.{t}")),
            None => Err(refuse(format!("unknown table {t}"))),
        };
        let target = local(target)?;
        // Every table named after FROM or JOIN in the SELECT reads the node's local table.
        let select = &stmt[as_at..];
        let mut out = String::with_capacity(select.len() + 32);
        let mut prev = "";
        let mut i = 0;
        let bytes = select.as_bytes();
        while i < bytes.len() {
            if is_ident_byte(bytes[i]) {
                let start = i;
                while i < bytes.len() && (is_ident_byte(bytes[i]) || bytes[i] == b'.') {
                    i += 1;
                }
                let word = &select[start..i];
                if (is(prev, "FROM") || is(prev, "JOIN")) && !word.contains('.') {
                    out.push_str(&local(word)?);
                } else {
                    out.push_str(word);
                }
                prev = word;
            } else {
                out.push(bytes[i] as char);
                if !bytes[i].is_ascii_whitespace() {
                    prev = "";
                }
                i += 1;
            }
        }
        return Ok(vec![plain(format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{view} ON CLUSTER {cluster} TO {target} {out}"
        ))]);
    }
    if w.len() > 3 && is(w[0], "ALTER") && is(w[1], "TABLE") {
        let table = w[2];
        let (layout, key) = tables
            .get(table)
            .copied()
            .ok_or_else(|| refuse(format!("unknown table {table}")))?;
        let table_at = stmt.find(table).unwrap_or(0) + table.len();
        let action = stmt[table_at..].trim_start();
        let column_change = w.len() > 4
            && (is(w[3], "ADD") || is(w[3], "DROP") || is(w[3], "MODIFY"))
            && is(w[4], "COLUMN");
        let added = (is(w[3], "ADD") && column_change)
            .then(|| w.get(5).map(|c| c.to_string()))
            .flatten();
        return Ok(match layout {
            Layout::Sharded => {
                let mut v = vec![ClusterStatement {
                    sql: format!("ALTER TABLE {db}.{table}_local ON CLUSTER {cluster} {action}"),
                    adds_column: added.clone().map(|c| (format!("{table}_local"), c)),
                }];
                if column_change {
                    // 18.16 refuses ALTER … ON CLUSTER on a Distributed table of a cluster with
                    // internal_replication (it runs ALTERs on one replica per shard): the
                    // Distributed table, which holds no rows (inserts are synchronous), is
                    // created again over the changed local table instead.
                    v.push(ClusterStatement {
                        sql: format!("DROP TABLE IF EXISTS {db}.{table} ON CLUSTER {cluster}"),
                        adds_column: added.map(|c| (table.to_string(), c)),
                    });
                    v.push(plain(format!(
                        "CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {cluster} AS {db}.{table}_local \
                         ENGINE = Distributed({cluster}, {db}, {table}_local, {key})"
                    )));
                }
                v
            }
            Layout::Everywhere => vec![ClusterStatement {
                sql: format!("ALTER TABLE {db}.{table} {action}"),
                adds_column: added.map(|c| (table.to_string(), c)),
            }],
        });
    }
    Err(refuse(
        "only CREATE TABLE, CREATE MATERIALIZED VIEW … TO and ALTER TABLE are rewritten".into(),
    ))
}

async fn column_exists(
    client: &clickhouse::Client,
    db: &str,
    table: &str,
    column: &str,
) -> Result<bool, Error> {
    let n: u64 = client
        .query("SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?")
        .bind(db)
        .bind(table)
        .bind(column)
        .fetch_one()
        .await?;
    Ok(n > 0)
}

/// Runs `ALTER TABLE … ADD COLUMN …, ADD COLUMN …` for the columns of `group` that `table`
/// lacks on this node (for a sharded table: on `table_local` on every shard, then the
/// Distributed `table` is created again over it if it lacks any).
async fn add_columns(
    client: &clickhouse::Client,
    db: &str,
    cluster: &str,
    table: &str,
    layout: Layout,
    key: &str,
    group: &[(String, String)],
) -> Result<(), Error> {
    let (local, on_cluster) = match layout {
        Layout::Sharded => (format!("{table}_local"), format!(" ON CLUSTER {cluster}")),
        Layout::Everywhere => (table.to_string(), String::new()),
    };
    async fn missing<'a>(
        client: &clickhouse::Client,
        db: &str,
        table: &str,
        group: &'a [(String, String)],
    ) -> Result<Vec<&'a (String, String)>, Error> {
        let mut out = Vec::new();
        for g in group {
            if !column_exists(client, db, table, &g.0).await? {
                out.push(g);
            }
        }
        Ok(out)
    }
    let todo = missing(client, db, &local, group).await?;
    if !todo.is_empty() {
        let actions: Vec<&str> = todo.iter().map(|g| g.1.as_str()).collect();
        let sql = format!(
            "ALTER TABLE {db}.{local}{on_cluster} {}",
            actions.join(", ")
        );
        if let Err(e) = client.query_raw(&sql).execute().await {
            // A concurrent run added them first: what this statement wanted.
            if !missing(client, db, &local, group).await?.is_empty() {
                return Err(e.into());
            }
        }
    }
    if layout == Layout::Sharded && !missing(client, db, table, group).await?.is_empty() {
        // 18.16 refuses ALTER … ON CLUSTER on a Distributed table of a cluster with
        // internal_replication: the Distributed table (no rows of its own: inserts are
        // synchronous) is created again over the changed local table.
        client
            .query_raw(&format!(
                "DROP TABLE IF EXISTS {db}.{table} ON CLUSTER {cluster}"
            ))
            .execute()
            .await?;
        client
            .query_raw(&format!(
                "CREATE TABLE IF NOT EXISTS {db}.{table} ON CLUSTER {cluster} AS {db}.{local} \
                 ENGINE = Distributed({cluster}, {db}, {local}, {key})"
            ))
            .execute()
            .await?;
    }
    Ok(())
}

async fn applied_versions(
    client: &clickhouse::Client,
    db: &str,
) -> Result<Option<Vec<Applied>>, Error> {
    let exists: u64 = client
        .query(
            "SELECT count() FROM system.tables WHERE database = ? AND name = 'schema_migrations'",
        )
        .bind(db)
        .fetch_one()
        .await?;
    if exists == 0 {
        return Ok(None);
    }
    Ok(Some(
        client
            .query_raw(&format!(
                "SELECT version, any(checksum) FROM {db}.schema_migrations GROUP BY version"
            ))
            .fetch_all()
            .await?,
    ))
}

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

async fn migrate_cluster(cfg: &ClickHouseConfig, cluster: &str) -> Result<Vec<u32>, Error> {
    let db = cfg.database.as_str();
    let client = cfg.server_client();
    // Up to date on this node: no DDL at all (ON CLUSTER DDL waits for every node).
    if let Some(applied) = applied_versions(&client, db).await? {
        let mut all = true;
        for m in MIGRATIONS {
            all &= check_applied(&applied, m)?;
        }
        if all {
            return Ok(Vec::new());
        }
    }
    let known: u64 = client
        .query("SELECT count() FROM system.clusters WHERE cluster = ?")
        .bind(cluster)
        .fetch_one()
        .await?;
    if known == 0 {
        return Err(Error::Config(format!(
            "--clickhouse-cluster {cluster}: the server at {} has no such cluster in remote_servers",
            cfg.url
        )));
    }
    // Every server version Veil supports runs `ON CLUSTER` DDL, given a DDL queue in
    // ZooKeeper (which Replicated tables need anyway); without one, say what to configure
    // rather than half-migrate node by node.
    client
        .query_raw(&format!(
            "CREATE DATABASE IF NOT EXISTS {db} ON CLUSTER {cluster}"
        ))
        .execute()
        .await
        .map_err(|e| {
            let text = e.to_string();
            if text.contains("DDL background thread is not initialized")
                || text.contains("DistributedDDL")
            {
                Error::Config(format!(
                    "--clickhouse-cluster {cluster}: the server at {} has no distributed DDL queue; \
                     add <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl> \
                     to every node's config (docs/DEPLOY.md)",
                    cfg.url
                ))
            } else {
                Error::from(e)
            }
        })?;
    client
        .query_raw(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations ON CLUSTER {cluster} \
             (version UInt32, name String, checksum String, applied_at DateTime) \
             ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{db}/schema_migrations', '{{replica}}') \
             ORDER BY version"
        ))
        .execute()
        .await?;
    let applied = applied_versions(&client, db).await?.unwrap_or_default();
    let tables = tables(MIGRATIONS);
    let mut done = Vec::new();
    for m in MIGRATIONS {
        if check_applied(&applied, m)? {
            continue;
        }
        let stmts = m.statements();
        let mut i = 0;
        while i < stmts.len() {
            let stmt = &stmts[i];
            i += 1;
            // Consecutive ADD COLUMNs of one table become one ALTER: each ON CLUSTER statement
            // costs about a second of DDL-queue round trips.
            if let Some((table, column)) = added_column(stmt) {
                if let Some((layout, key)) = tables.get(table).copied() {
                    let action_of = |s: &str| {
                        let at = s.find(table).unwrap_or(0) + table.len();
                        s[at..].trim().to_string()
                    };
                    let mut group = vec![(column.to_string(), action_of(stmt))];
                    while let Some((t, c)) = stmts.get(i).and_then(|s| added_column(s)) {
                        if t != table {
                            break;
                        }
                        group.push((c.to_string(), action_of(&stmts[i])));
                        i += 1;
                    }
                    add_columns(&client, db, cluster, table, layout, key, &group).await?;
                    continue;
                }
            }
            for cs in cluster_statements(stmt, db, cluster, &tables)? {
                if let Some((table, column)) = &cs.adds_column {
                    if column_exists(&client, db, table, column).await? {
                        continue;
                    }
                }
                if let Err(e) = client.query_raw(&cs.sql).execute().await {
                    // A concurrent run added the column first: what this statement wanted.
                    let won_elsewhere = match &cs.adds_column {
                        Some((table, column)) => column_exists(&client, db, table, column).await?,
                        None => false,
                    };
                    if !won_elsewhere {
                        return Err(e.into());
                    }
                }
            }
        }
        let recorded: u64 = client
            .query_raw(&format!(
                "SELECT count() FROM {db}.schema_migrations WHERE version = {}",
                m.version
            ))
            .fetch_one()
            .await?;
        if recorded == 0 {
            client
                .query_raw(&format!(
                    "INSERT INTO {db}.schema_migrations (version, name, checksum, applied_at) VALUES ({}, {}, {}, now())",
                    m.version,
                    quote(m.name),
                    quote(&m.checksum())
                ))
                .execute()
                .await?;
        }
        tracing::info!(
            version = m.version,
            name = m.name,
            cluster,
            "applied migration on the cluster"
        );
        done.push(m.version);
    }
    Ok(done)
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
    fn statements_split_and_drop_comments() {
        let m = Migration { version: 9, name: "x", sql: "-- c\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\nCREATE TABLE b\n(y UInt8)\nENGINE = Memory;\n" };
        let s = m.statements();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0], "CREATE TABLE a (x UInt8) ENGINE = Memory");
        assert!(s[1].starts_with("CREATE TABLE b"));
    }

    #[test]
    fn add_column_statements_are_recognised() {
        assert_eq!(
            added_column("ALTER TABLE events ADD COLUMN x UInt8 DEFAULT 0"),
            Some(("events", "x"))
        );
        assert_eq!(
            added_column("CREATE TABLE x (a UInt8) ENGINE = Memory"),
            None
        );
    }

    #[test]
    fn every_shipped_statement_has_a_cluster_form() {
        let tables = tables(MIGRATIONS);
        let layouts = layouts(MIGRATIONS);
        assert_eq!(layouts.get("events"), Some(&Layout::Sharded));
        assert_eq!(layouts.get("visits"), Some(&Layout::Sharded));
        assert_eq!(layouts.get("events_hourly"), Some(&Layout::Sharded));
        assert_eq!(layouts.get("salts"), Some(&Layout::Everywhere));
        assert_eq!(layouts.get("sites"), Some(&Layout::Everywhere));
        let mut all = Vec::new();
        for m in MIGRATIONS {
            for stmt in m.statements() {
                let out = cluster_statements(&stmt, "db", "c", &tables)
                    .unwrap_or_else(|e| panic!("migration {}: {e}", m.name));
                assert!(!out.is_empty());
                for cs in out {
                    // Every name the rewrite writes is qualified; unqualified DDL ON CLUSTER
                    // would land in each host's default database.
                    assert!(cs.sql.contains(" db."), "{}", cs.sql);
                    all.push(cs.sql);
                }
            }
        }
        let all = all.join(";\n");
        if std::env::var_os("VEIL_PRINT_CLUSTER_SQL").is_some() {
            println!("{all}");
        }
        assert!(all.contains("CREATE TABLE IF NOT EXISTS db.events_local ON CLUSTER c"));
        assert!(all.contains(
            "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db/events_local', '{replica}')"
        ));
        assert!(
            all.contains("ENGINE = Distributed(c, db, events_local, sipHash64(site, visitor_id))")
        );
        assert!(all.contains(
            "ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/db/events_hourly_local'"
        ));
        assert!(all.contains("ENGINE = Distributed(c, db, events_hourly_local, rand())"));
        assert!(all.contains("ReplicatedMergeTree('/clickhouse/tables/all/db/salts', '{replica}')"));
        assert!(!all.contains("db.salts_local"));
        assert!(all.contains(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS db.events_hourly_mv ON CLUSTER c TO db.events_hourly_local AS"
        ));
        assert!(all.contains("FROM db.events_local"));
        assert!(all
            .contains("ALTER TABLE db.events_local ON CLUSTER c ADD COLUMN bot String DEFAULT ''"));
        assert!(all.contains("DROP TABLE IF EXISTS db.events ON CLUSTER c"));
    }

    #[test]
    fn cluster_rewrite_handles_engine_arguments_and_refuses_the_unknown() {
        let m = Migration {
            version: 99,
            name: "x",
            sql: "CREATE TABLE IF NOT EXISTS r (k String, v UInt64) ENGINE = ReplacingMergeTree(v) ORDER BY k;\n\
                  ALTER TABLE r ADD COLUMN w UInt8 DEFAULT 0;\n\
                  ALTER TABLE r DELETE WHERE k = '';\n",
        };
        let l = tables(&[m]);
        assert_eq!(l.get("r").map(|x| x.0), Some(Layout::Everywhere));
        let s = m.statements();
        let c = cluster_statements(&s[0], "db", "c", &l).unwrap();
        assert_eq!(c.len(), 1);
        assert!(
            c[0].sql.contains(
                "ReplicatedReplacingMergeTree('/clickhouse/tables/all/db/r', '{replica}', v)"
            ),
            "{}",
            c[0].sql
        );
        let c = cluster_statements(&s[1], "db", "c", &l).unwrap();
        assert_eq!(c[0].sql, "ALTER TABLE db.r ADD COLUMN w UInt8 DEFAULT 0");
        assert_eq!(c[0].adds_column, Some(("r".into(), "w".into())));
        assert!(cluster_statements("DROP TABLE r", "db", "c", &l).is_err());
        assert!(cluster_statements("ALTER TABLE nope ADD COLUMN a UInt8", "db", "c", &l).is_err());
        let mut cfg = ClickHouseConfig::new("http://x", "db");
        assert_eq!(mutation_target(&cfg, "events"), "events");
        cfg.cluster = Some("c".into());
        assert_eq!(
            mutation_target(&cfg, "events"),
            "db.events_local ON CLUSTER c"
        );
        assert_eq!(mutation_target(&cfg, "salts"), "salts");
        assert_eq!(local_table(&cfg, "events"), "events_local");
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
