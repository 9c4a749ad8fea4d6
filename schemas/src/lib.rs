//! Veil's side of ClickHouse: where the database is ([`ClickHouseConfig`]), how SQL is written
//! ([`sql`](mod@sql), the one escaper), what is in the database (the numbered migrations in
//! `schemas/migrations/`, applied by [`migrate()`], one runner for one server and for a
//! cluster), the site registry and its policy ([`registry`], [`policy`]), the local server `veil
//! up` and the test suite run as a child process ([`managed`]), a local cluster of them
//! ([`local_cluster`]), the data generator ([`gen`]), how places are stored
//! ([`places`]) and, with the `testing` feature, the test
//! harness (`testing`).
//!
//! # Features
//! - `testing`: `veil_schemas::testing`, one throwaway ClickHouse per test process and a
//!   fresh migrated database per test; enabled by the other crates' `[dev-dependencies]`.
//!
//! Everything here must work on ClickHouse 18.16 (the server Debian ships) and on current
//! releases: no TTL, no `{name:Type}` query parameters, no window functions, no DateTime64,
//! no IPv4/IPv6 column types.

pub mod digests;
pub mod gen;
pub mod local_cluster;
pub mod managed;
pub mod migrate;
pub mod people;
pub mod places;
pub mod policy;
pub mod registry;
pub mod segments;
pub mod sql;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::time::Duration;

use sql::Run as _;

pub use migrate::{migrate, Migration, MIGRATIONS};

/// Everything that can go wrong talking to or running ClickHouse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query failed (network, server error, bad SQL).
    #[error("ClickHouse query failed: {0}")]
    Query(#[from] clickhouse::error::Error),
    /// The `clickhouse-server` binary could not be found.
    #[error(
        "`clickhouse-server` was not found on PATH. Install it with \
         `sudo apt-get install -y clickhouse-server` (Debian/Ubuntu), or pass \
         --clickhouse-url to use a server you run yourself"
    )]
    ServerNotFound,
    /// The managed server did not start or did not answer in time.
    #[error("managed ClickHouse failed to start: {0}")]
    Start(String),
    /// Local file or process I/O.
    #[error("{context}: {source}")]
    Io {
        /// What Veil was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An applied migration differs from the one shipped with this binary.
    #[error("migration {version} ({name}) was applied with different content (checksum {applied} != {shipped}); migrations are append-only: add a new numbered file instead of editing one")]
    Checksum {
        /// Migration number.
        version: u32,
        /// Migration name.
        name: String,
        /// Checksum recorded in the database.
        applied: String,
        /// Checksum of the shipped file.
        shipped: String,
    },
    /// A configuration value is not acceptable.
    #[error("invalid ClickHouse configuration: {0}")]
    Config(String),
    /// A registry value is not acceptable; the message names the field.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Where Veil's ClickHouse is and which database holds Veil's tables. Its `Debug` and
/// `Serialize` leave the password out.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClickHouseConfig {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// Database holding Veil's tables (created by [`migrate()`]).
    pub database: String,
    /// User name (ClickHouse's `default` when `None`).
    pub user: Option<String>,
    /// Password; never printed.
    #[serde(skip_serializing)]
    pub password: Option<String>,
    /// `--clickhouse-cluster`: the `remote_servers` cluster Veil's tables span (sharded,
    /// replicated; see [`migrate`](mod@migrate) and docs/DEPLOY.md). `None`: one server, plain MergeTree.
    pub cluster: Option<String>,
}

impl std::fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl ClickHouseConfig {
    /// A config for `url` and `database` with the default user.
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            database: database.into(),
            user: None,
            password: None,
            cluster: None,
        }
    }

    /// Checks the URL and database name; called before anything connects.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(Error::Config(format!(
                "--clickhouse-url must be the HTTP interface (http://host:8123), got {:?}",
                self.url
            )));
        }
        if !valid_identifier(&self.database) {
            return Err(Error::Config(format!(
                "--clickhouse-database must be letters, digits and underscores and not start with a digit, got {:?}",
                self.database
            )));
        }
        if let Some(c) = &self.cluster {
            if !valid_identifier(c) {
                return Err(Error::Config(format!(
                    "--clickhouse-cluster must be letters, digits and underscores and not start with a digit, got {c:?}"
                )));
            }
        }
        Ok(())
    }

    /// A client bound to [`Self::database`].
    pub fn client(&self) -> clickhouse::Client {
        self.server_client().with_database(&self.database)
    }

    /// A client with no database selected (for `CREATE DATABASE`).
    pub fn server_client(&self) -> clickhouse::Client {
        // 18.16 lacks the system tables row validation asks for.
        let mut c = clickhouse::Client::default()
            .with_url(&self.url)
            .with_validation(false);
        // The crate sends these as X-ClickHouse-User/-Key; 18.16 refuses a key without a
        // user ("Unknown user"), so a password alone goes with ClickHouse's `default` user.
        match (&self.user, &self.password) {
            (Some(u), _) => c = c.with_user(u),
            (None, Some(_)) => c = c.with_user("default"),
            (None, None) => {}
        }
        if let Some(p) = &self.password {
            c = c.with_password(p);
        }
        c
    }

    /// `SELECT 1` with a timeout: is the server up and answering?
    pub async fn ping(&self, timeout: Duration) -> Result<(), Error> {
        let client = self.server_client();
        let q = client.sql(&sql::Sql::new("SELECT 1")).fetch_one::<u8>();
        match tokio::time::timeout(timeout, q).await {
            Ok(r) => r.map(|_| ()).map_err(Error::from),
            Err(_) => Err(Error::Start(format!(
                "no answer from {} within {timeout:?}",
                self.url
            ))),
        }
    }
}

pub use sql::valid_identifier;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(valid_identifier("veil"));
        assert!(valid_identifier("test_db_1"));
        assert!(!valid_identifier("1db"));
        assert!(!valid_identifier("db; DROP TABLE x"));
        assert!(!valid_identifier(""));
        assert!(!valid_identifier("a-b"));
    }

    #[test]
    fn debug_and_serialize_leave_the_password_out() {
        let mut c = ClickHouseConfig::new("http://127.0.0.1:8123", "veil");
        c.password = Some("hunter2-secret-value".into());
        let debug = format!("{c:?} {c:#?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
    }

    #[test]
    fn config_validation_names_the_flag() {
        let e = ClickHouseConfig::new("localhost:8123", "veil")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("--clickhouse-url"));
        let e = ClickHouseConfig::new("http://localhost:8123", "bad-name")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("--clickhouse-database"));
        assert!(ClickHouseConfig::new("http://localhost:8123", "veil")
            .validate()
            .is_ok());
    }
}
