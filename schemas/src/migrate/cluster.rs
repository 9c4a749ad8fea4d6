//! The cluster rewrite: how each single-node migration statement is applied to a ClickHouse
//! cluster (`--clickhouse-cluster NAME`), and where row-changing DDL goes there.
//!
//! Every table gets one of two [`Layout`]s, decided from all shipped migrations ([`tables`]);
//! [`cluster_statements`] turns one statement into the statements that build that layout on
//! every node (see the [`migrate`](super) module docs for the whole design). The rewritten SQL
//! is assembled from static slices of the embedded migration files, identifiers checked by
//! [`ident`] (database, cluster, table names) and literals escaped by [`lit`] (ZooKeeper
//! paths).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use super::ddl::{
    added_column, alter_action, column_names, is, is_ident_byte, parse_create_table, parse_mv,
    words, CreateTable,
};
use super::{column_exists, Migration, MIGRATIONS};
use crate::sql::{ident, lit, Run as _, Sql};
use crate::{sql, ClickHouseConfig, Error};

/// Where a table lives in cluster mode (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `x_local` on every node (Replicated, one copy per shard) plus Distributed `x`.
    Sharded,
    /// `x` on every node, all replicas of one ZooKeeper path; no Distributed table.
    Everywhere,
}

/// The MergeTree engines the rewrite knows the Replicated form of.
const MERGE_TREES: &[&str] = &[
    "MergeTree",
    "AggregatingMergeTree",
    "ReplacingMergeTree",
    "SummingMergeTree",
    "CollapsingMergeTree",
    "VersionedCollapsingMergeTree",
    "GraphiteMergeTree",
];

/// The layout of every table `migrations` create and do not drop again (what a migrated
/// database holds).
pub fn layouts(migrations: &[Migration]) -> BTreeMap<String, Layout> {
    let dropped: Vec<&str> = migrations
        .iter()
        .flat_map(|m| m.statements())
        .filter_map(|s| match words(s)[..] {
            [d, t, i, e, name]
                if is(d, "DROP") && is(t, "TABLE") && is(i, "IF") && is(e, "EXISTS") =>
            {
                Some(name)
            }
            _ => None,
        })
        .collect();
    tables(migrations)
        .into_iter()
        .filter(|(t, _)| !dropped.contains(t))
        .map(|(t, (l, _))| (t.to_string(), l))
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
pub type Tables = BTreeMap<&'static str, (Layout, &'static str)>;

/// [`Tables`] of `migrations`.
pub fn tables(migrations: &[Migration]) -> Tables {
    let stmts: Vec<&'static str> = migrations.iter().flat_map(|m| m.statements()).collect();
    let mv_targets: Vec<&str> = stmts
        .iter()
        .filter_map(|s| parse_mv(s))
        .map(|m| m.1)
        .collect();
    let mut out = BTreeMap::new();
    for s in stmts {
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
        out.insert(t.name, (layout, sharding_key(&cols)));
    }
    out
}

/// The cluster-mode layout of a shipped table (`None`: no migration creates it).
pub fn layout(table: &str) -> Option<Layout> {
    static SHIPPED: OnceLock<Tables> = OnceLock::new();
    SHIPPED
        .get_or_init(|| tables(MIGRATIONS))
        .get(table)
        .map(|t| t.0)
}

/// Where row-changing DDL on `table` (`ALTER … DELETE`, `DROP PARTITION`) must go: `table`
/// on one server; in cluster mode `DB.table_local ON CLUSTER NAME` for a sharded table (every
/// shard; one replica of each runs it, replication does the rest) and `table` for one
/// replicated everywhere (any node; replication does the rest). Fails only on a name that is
/// not an identifier.
pub fn mutation_target(cfg: &ClickHouseConfig, table: &str) -> Result<Sql, Error> {
    match (&cfg.cluster, layout(table)) {
        (Some(c), Some(Layout::Sharded)) => Ok(sql!(
            "{}.{}_local ON CLUSTER {}",
            ident(&cfg.database)?,
            ident(table)?,
            ident(c)?
        )),
        _ => ident(table),
    }
}

/// The table holding `table`'s rows on the node a client talks to (`system.parts`,
/// `system.mutations`): `table_local` for a sharded table in cluster mode, else `table`.
pub fn local_table(cfg: &ClickHouseConfig, table: &str) -> Result<Sql, Error> {
    match (&cfg.cluster, layout(table)) {
        (Some(_), Some(Layout::Sharded)) => Ok(sql!("{}_local", ident(table)?)),
        _ => ident(table),
    }
}

/// One rewritten statement and, for column changes, the (table, column) that shows it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatement {
    /// The SQL to run.
    pub sql: Sql,
    /// For `ADD COLUMN`: skip when this (table, column) exists on the node, and accept a
    /// failure once it does (a concurrent run added it).
    pub adds_column: Option<(String, String)>,
}

/// `ReplicatedX('path', '{replica}'[, args])` for a table whose engine is `X`.
fn replicated_engine(t: &CreateTable<'static>, path: &str) -> Result<Sql, String> {
    let Some(engine) = MERGE_TREES.iter().find(|e| **e == t.engine) else {
        return Err(format!("engine {} of table {}", t.engine, t.name));
    };
    let mut out = sql!("Replicated{}({}, '{{replica}}'", *engine, lit(path));
    if let Some(args) = t.engine_args {
        out.push(", ");
        out.push(args);
    }
    Ok(out.with(")"))
}

/// `CREATE TABLE IF NOT EXISTS db.x ON CLUSTER c AS db.x_local ENGINE = Distributed(…)`.
fn distributed(db: &Sql, cluster: &Sql, table: &Sql, key: &'static str) -> Sql {
    sql!(
        "CREATE TABLE IF NOT EXISTS {}.{} ON CLUSTER {} AS {}.{}_local \
         ENGINE = Distributed({}, {}, {}_local, {})",
        db,
        table,
        cluster,
        db,
        table,
        cluster,
        db,
        table,
        key
    )
}

/// Rewrites one single-node migration statement for cluster `cluster` and database `db`.
pub fn cluster_statements(
    stmt: &'static str,
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
    let plain = |sql: Sql| ClusterStatement {
        sql,
        adds_column: None,
    };
    let (db_name, db, cluster) = (db, ident(db)?, ident(cluster)?);
    let w = words(stmt);
    if let Some(t) = parse_create_table(stmt) {
        let (layout, key) = tables
            .get(t.name)
            .copied()
            .ok_or_else(|| refuse(format!("unknown table {}", t.name)))?;
        let name = ident(t.name)?;
        let columns = t.columns.trim_matches('\n');
        return Ok(match layout {
            Layout::Sharded => {
                let path = format!("/clickhouse/tables/{{shard}}/{db_name}/{}_local", t.name);
                let engine = replicated_engine(&t, &path).map_err(refuse)?;
                vec![
                    plain(sql!(
                        "CREATE TABLE IF NOT EXISTS {}.{}_local ON CLUSTER {}\n({})\nENGINE = {}\n{}",
                        db,
                        name,
                        cluster,
                        columns,
                        engine,
                        t.rest
                    )),
                    plain(distributed(&db, &cluster, &name, key)),
                ]
            }
            Layout::Everywhere => {
                let path = format!("/clickhouse/tables/all/{db_name}/{}", t.name);
                let engine = replicated_engine(&t, &path).map_err(refuse)?;
                vec![plain(sql!(
                    "CREATE TABLE IF NOT EXISTS {}.{} ON CLUSTER {}\n({})\nENGINE = {}\n{}",
                    db,
                    name,
                    cluster,
                    columns,
                    engine,
                    t.rest
                ))]
            }
        });
    }
    if let Some((view, target, as_at)) = parse_mv(stmt) {
        let local = |t: &str| match tables.get(t) {
            Some((Layout::Sharded, _)) => Ok(sql!("{}.{}_local", db, ident(t)?)),
            Some((Layout::Everywhere, _)) => Ok(sql!("{}.{}", db, ident(t)?)),
            None => Err(refuse(format!("unknown table {t}"))),
        };
        let target = local(target)?;
        // Every table named after FROM or JOIN in the SELECT reads the node's local table:
        // the SELECT is copied slice by slice, with those names replaced.
        let select: &'static str = &stmt[as_at..];
        let mut out = Sql::default();
        let mut copied = 0;
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
                    out.push(&select[copied..start]);
                    out.push(local(word)?);
                    copied = i;
                }
                prev = word;
            } else {
                if !bytes[i].is_ascii_whitespace() {
                    prev = "";
                }
                i += 1;
            }
        }
        out.push(&select[copied..]);
        return Ok(vec![plain(sql!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {}.{} ON CLUSTER {} TO {} {}",
            db,
            ident(view)?,
            cluster,
            target,
            out
        ))]);
    }
    if w.len() > 3 && is(w[0], "ALTER") && is(w[1], "TABLE") {
        let table = w[2];
        let (layout, key) = tables
            .get(table)
            .copied()
            .ok_or_else(|| refuse(format!("unknown table {table}")))?;
        let name = ident(table)?;
        let action = alter_action(stmt, table);
        let column_change = w.len() > 4
            && (is(w[3], "ADD") || is(w[3], "DROP") || is(w[3], "MODIFY"))
            && is(w[4], "COLUMN");
        let added = (is(w[3], "ADD") && column_change)
            .then(|| w.get(5).map(|c| c.to_string()))
            .flatten();
        return Ok(match layout {
            Layout::Sharded => {
                let mut v = vec![ClusterStatement {
                    sql: sql!(
                        "ALTER TABLE {}.{}_local ON CLUSTER {} {}",
                        db,
                        name,
                        cluster,
                        action
                    ),
                    adds_column: added.clone().map(|c| (format!("{table}_local"), c)),
                }];
                if column_change {
                    // 18.16 refuses ALTER … ON CLUSTER on a Distributed table of a cluster with
                    // internal_replication (it runs ALTERs on one replica per shard): the
                    // Distributed table, which holds no rows (inserts are synchronous), is
                    // created again over the changed local table instead.
                    v.push(ClusterStatement {
                        sql: sql!(
                            "DROP TABLE IF EXISTS {}.{} ON CLUSTER {}",
                            db,
                            name,
                            cluster
                        ),
                        adds_column: added.map(|c| (table.to_string(), c)),
                    });
                    v.push(plain(distributed(&db, &cluster, &name, key)));
                }
                v
            }
            Layout::Everywhere => vec![ClusterStatement {
                sql: sql!("ALTER TABLE {}.{} {}", db, name, action),
                adds_column: added.map(|c| (table.to_string(), c)),
            }],
        });
    }
    if w.len() > 1 && is(w[0], "DROP") && is(w[1], "TABLE") {
        // `DROP TABLE IF EXISTS x`: a sharded table's Distributed `x` and its `x_local` on
        // every node, a table replicated everywhere or a materialized view (one per node) as
        // named, each `ON CLUSTER`.
        let [_, _, if_, exists, name] = w[..] else {
            return Err(refuse("only DROP TABLE IF EXISTS name is rewritten".into()));
        };
        if !is(if_, "IF") || !is(exists, "EXISTS") {
            return Err(refuse("only DROP TABLE IF EXISTS name is rewritten".into()));
        }
        let drop = |t: Sql| {
            plain(sql!(
                "DROP TABLE IF EXISTS {}.{} ON CLUSTER {}",
                db,
                t,
                cluster
            ))
        };
        let n = ident(name)?;
        return Ok(match tables.get(name) {
            Some((Layout::Sharded, _)) => vec![drop(n.clone()), drop(sql!("{}_local", n))],
            Some((Layout::Everywhere, _)) | None => vec![drop(n)],
        });
    }
    Err(refuse(
        "only CREATE TABLE, CREATE MATERIALIZED VIEW … TO, ALTER TABLE and DROP TABLE IF EXISTS \
         are rewritten"
            .into(),
    ))
}

/// Runs `ALTER TABLE … ADD COLUMN …, ADD COLUMN …` for the columns of `group` that `table`
/// lacks on this node (for a sharded table: on `table_local` on every shard, then the
/// Distributed `table` is created again over it if it lacks any).
async fn add_columns(
    client: &clickhouse::Client,
    db: &str,
    cluster: &str,
    table: &'static str,
    (layout, key): (Layout, &'static str),
    group: &[(&'static str, &'static str)],
) -> Result<(), Error> {
    let (db_name, db, cluster, name) = (db, ident(db)?, ident(cluster)?, ident(table)?);
    let (local_name, target) = match layout {
        Layout::Sharded => (
            format!("{table}_local"),
            sql!("{}.{}_local ON CLUSTER {}", db, name, cluster),
        ),
        Layout::Everywhere => (table.to_string(), sql!("{}.{}", db, name)),
    };
    async fn missing<'a>(
        client: &clickhouse::Client,
        db: &str,
        table: &str,
        group: &'a [(&'static str, &'static str)],
    ) -> Result<Vec<&'a (&'static str, &'static str)>, Error> {
        let mut out = Vec::new();
        for g in group {
            if !column_exists(client, db, table, g.0).await? {
                out.push(g);
            }
        }
        Ok(out)
    }
    let todo = missing(client, db_name, &local_name, group).await?;
    if !todo.is_empty() {
        let actions = Sql::join(todo.iter().map(|g| g.1), ", ");
        let q = sql!("ALTER TABLE {} {}", target, actions);
        if let Err(e) = client.sql(&q).execute().await {
            // A concurrent run added them first: what this statement wanted.
            if !missing(client, db_name, &local_name, group)
                .await?
                .is_empty()
            {
                return Err(e.into());
            }
        }
    }
    if layout == Layout::Sharded && !missing(client, db_name, table, group).await?.is_empty() {
        // 18.16 refuses ALTER … ON CLUSTER on a Distributed table of a cluster with
        // internal_replication: the Distributed table (no rows of its own: inserts are
        // synchronous) is created again over the changed local table.
        let drop = sql!(
            "DROP TABLE IF EXISTS {}.{} ON CLUSTER {}",
            db,
            name,
            cluster
        );
        client.sql(&drop).execute().await?;
        client
            .sql(&distributed(&db, &cluster, &name, key))
            .execute()
            .await?;
    }
    Ok(())
}

/// Before the first migration on a cluster: checks the server knows the cluster, creates the
/// database and `schema_migrations` (replicated everywhere) `ON CLUSTER`. Without a
/// distributed DDL queue, says what to configure rather than half-migrate node by node.
pub(super) async fn prepare(
    client: &clickhouse::Client,
    cfg: &ClickHouseConfig,
    name: &str,
) -> Result<(), Error> {
    let (db, cluster) = (ident(&cfg.database)?, ident(name)?);
    let q = sql!(
        "SELECT count() FROM system.clusters WHERE cluster = {}",
        lit(name)
    );
    if client.sql(&q).fetch_one::<u64>().await? == 0 {
        return Err(Error::Config(format!(
            "--clickhouse-cluster {name}: the server at {} has no such cluster in remote_servers",
            cfg.url
        )));
    }
    // Every server version Veil supports runs `ON CLUSTER` DDL, given a DDL queue in
    // ZooKeeper (which Replicated tables need anyway).
    let q = sql!(
        "CREATE DATABASE IF NOT EXISTS {} ON CLUSTER {}",
        db,
        cluster
    );
    client.sql(&q).execute().await.map_err(|e| {
        let text = e.to_string();
        if text.contains("DDL background thread is not initialized")
            || text.contains("DistributedDDL")
        {
            Error::Config(format!(
                "--clickhouse-cluster {name}: the server at {} has no distributed DDL queue; \
                 add <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl> \
                 to every node's config (docs/DEPLOY.md)",
                cfg.url
            ))
        } else {
            Error::from(e)
        }
    })?;
    let path = format!("/clickhouse/tables/all/{}/schema_migrations", cfg.database);
    let q = sql!(
        "CREATE TABLE IF NOT EXISTS {}.schema_migrations ON CLUSTER {} \
         (version UInt32, name String, checksum String, applied_at DateTime) \
         ENGINE = ReplicatedReplacingMergeTree({}, '{{replica}}') \
         ORDER BY version",
        db,
        cluster,
        lit(&path)
    );
    client.sql(&q).execute().await?;
    Ok(())
}

/// Applies one migration's statements to the cluster: consecutive `ADD COLUMN`s of one table
/// as one `ALTER` (each `ON CLUSTER` statement costs about a second of DDL-queue round trips),
/// everything else through [`cluster_statements`].
pub(super) async fn apply(
    client: &clickhouse::Client,
    db: &str,
    cluster: &str,
    tables: &Tables,
    m: &Migration,
) -> Result<(), Error> {
    let stmts = m.statements();
    let mut i = 0;
    while i < stmts.len() {
        let stmt = stmts[i];
        i += 1;
        if let Some((table, column)) = added_column(stmt) {
            if let Some((&table, &placement)) = tables.get_key_value(table) {
                let mut group = vec![(column, alter_action(stmt, table))];
                while let Some((t, c)) = stmts.get(i).and_then(|s| added_column(s)) {
                    if t != table {
                        break;
                    }
                    group.push((c, alter_action(stmts[i], table)));
                    i += 1;
                }
                add_columns(client, db, cluster, table, placement, &group).await?;
                continue;
            }
        }
        for cs in cluster_statements(stmt, db, cluster, tables)? {
            if let Some((table, column)) = &cs.adds_column {
                if column_exists(client, db, table, column).await? {
                    continue;
                }
            }
            if let Err(e) = client.sql(&cs.sql).execute().await {
                // A concurrent run added the column first: what this statement wanted.
                let won_elsewhere = match &cs.adds_column {
                    Some((table, column)) => column_exists(client, db, table, column).await?,
                    None => false,
                };
                if !won_elsewhere {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
                let out = cluster_statements(stmt, "db", "c", &tables)
                    .unwrap_or_else(|e| panic!("migration {}: {e}", m.name));
                assert!(!out.is_empty());
                for cs in out {
                    // Every name the rewrite writes is qualified; unqualified DDL ON CLUSTER
                    // would land in each host's default database.
                    assert!(cs.sql.as_str().contains(" db."), "{}", cs.sql);
                    all.push(cs.sql.to_string());
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
        // 025 replaces events_recent: its view (one per node), then the sharded table's
        // Distributed table and its local tables.
        assert_eq!(layouts.get("events_tail"), Some(&Layout::Sharded));
        assert_eq!(layouts.get("events_recent"), None, "dropped by 025");
        assert_eq!(
            tables.get("events_recent").map(|t| t.0),
            Some(Layout::Sharded)
        );
        let tail = "CREATE MATERIALIZED VIEW IF NOT EXISTS db.events_tail_mv ON CLUSTER c TO db.events_tail_local";
        assert!(all.contains(tail));
        let mv = all.find("DROP TABLE IF EXISTS db.events_recent_mv ON CLUSTER c");
        let dist = all.find("DROP TABLE IF EXISTS db.events_recent ON CLUSTER c");
        let local = all.find("DROP TABLE IF EXISTS db.events_recent_local ON CLUSTER c");
        assert!(mv.is_some() && dist.is_some() && local.is_some(), "{all}");
        assert!(all.find(tail) < mv && mv < dist && dist < local);
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
        let c = cluster_statements(s[0], "db", "c", &l).unwrap();
        assert_eq!(c.len(), 1);
        assert!(
            c[0].sql.as_str().contains(
                "ReplicatedReplacingMergeTree('/clickhouse/tables/all/db/r', '{replica}', v)"
            ),
            "{}",
            c[0].sql
        );
        let c = cluster_statements(s[1], "db", "c", &l).unwrap();
        assert_eq!(
            c[0].sql.as_str(),
            "ALTER TABLE db.r ADD COLUMN w UInt8 DEFAULT 0"
        );
        assert_eq!(c[0].adds_column, Some(("r".into(), "w".into())));
        assert!(cluster_statements("DROP TABLE r", "db", "c", &l).is_err());
        assert!(cluster_statements("DROP TABLE IF EXISTS r SYNC", "db", "c", &l).is_err());
        let c = cluster_statements("DROP TABLE IF EXISTS r", "db", "c", &l).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].sql.as_str(), "DROP TABLE IF EXISTS db.r ON CLUSTER c");
        assert!(cluster_statements("ALTER TABLE nope ADD COLUMN a UInt8", "db", "c", &l).is_err());
        let mut cfg = ClickHouseConfig::new("http://x", "db");
        assert_eq!(mutation_target(&cfg, "events").unwrap().as_str(), "events");
        cfg.cluster = Some("c".into());
        assert_eq!(
            mutation_target(&cfg, "events").unwrap().as_str(),
            "db.events_local ON CLUSTER c"
        );
        assert_eq!(mutation_target(&cfg, "salts").unwrap().as_str(), "salts");
        assert_eq!(
            local_table(&cfg, "events").unwrap().as_str(),
            "events_local"
        );
    }
}
