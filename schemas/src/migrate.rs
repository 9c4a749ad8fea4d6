//! Applies the numbered SQL files in `schemas/migrations/` in order and records each one in
//! the `schema_migrations` table of Veil's database.
//!
//! Rules for migration files: numbered `NNN_name.sql`, append-only (an applied file may never
//! change: its blake3 checksum is recorded and checked), statements separated by a `;` at the
//! end of a line, every statement idempotent (`IF NOT EXISTS`) so a run interrupted half-way can
//! simply run again. Table names are unqualified: the client selects the database.

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
