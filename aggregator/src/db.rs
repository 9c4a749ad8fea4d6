//! The aggregator's one door to ClickHouse: every statement is an [`Sql`] (see
//! [`mod@veil_schemas::sql`]) run by [`fetch`], [`exec`], [`count`], [`one`] or [`rows`], with one mapping
//! of ClickHouse failures to [`Error::ClickHouse`] (a 502).
//!
//! Timeouts: the client reports are read with ([`report_client`]) sends ClickHouse's
//! `max_execution_time` = [`MAX_EXECUTION_SECS`] with every query; past it ClickHouse answers
//! an error, a 502 here. Background jobs (rollups, snapshots, retention) use the plain client
//! of their [`ClickHouseConfig`]: a rollup of a busy day may take longer.
//!
//! Wire format: [`fetch`] reads ClickHouse's `JSONCompact` output (`{"data": [[cell, …], …]}`),
//! in which 64-bit integers arrive as quoted strings; [`number`] and [`cell_u64`] read cells of
//! either kind.

use serde_json::Value;
use veil_schemas::sql::{Run, Sql};
use veil_schemas::ClickHouseConfig;

use crate::Error;

/// The longest a ClickHouse query of a report may run, in seconds (the server's
/// `max_execution_time` setting, sent with every query; an overrun is an error, not a
/// partial answer).
pub const MAX_EXECUTION_SECS: u32 = 30;

/// The client reports read with: `ch`'s, with [`MAX_EXECUTION_SECS`].
pub fn report_client(ch: &ClickHouseConfig) -> clickhouse::Client {
    ch.client()
        .with_setting("max_execution_time", MAX_EXECUTION_SECS.to_string())
}

/// The table a row-changing statement (`ALTER TABLE … DELETE`, `DROP PARTITION`) names:
/// [`veil_schemas::migrate::mutation_target`] (in cluster mode `DB.table_local ON CLUSTER NAME`
/// for a sharded table), built from checked identifiers.
pub fn mutation_target(ch: &ClickHouseConfig, table: &str) -> Result<Sql, Error> {
    veil_schemas::migrate::mutation_target(ch, table)
        .map_err(|e| Error::Internal(format!("mutation target: {e}")))
}

/// The one mapping of a ClickHouse failure.
fn failed(e: clickhouse::error::Error) -> Error {
    Error::ClickHouse(e.to_string())
}

/// Runs a statement that returns no rows (`INSERT`, `ALTER`, …).
pub async fn exec(client: &clickhouse::Client, q: &Sql) -> Result<(), Error> {
    client.sql(q).execute().await.map_err(failed)
}

/// Runs a query and returns the rows of its `JSONCompact` answer.
pub async fn fetch(client: &clickhouse::Client, q: &Sql) -> Result<Vec<Value>, Error> {
    let bytes = client
        .sql(q)
        .fetch_bytes("JSONCompact")
        .map_err(failed)?
        .collect()
        .await
        .map_err(failed)?;
    let parsed: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::ClickHouse(format!("bad JSON from ClickHouse: {e}")))?;
    Ok(parsed
        .get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

/// Runs a query and returns its rows as `T` (the `clickhouse` crate's row format).
pub async fn rows<T>(client: &clickhouse::Client, q: &Sql) -> Result<Vec<T>, Error>
where
    T: clickhouse::RowOwned + clickhouse::RowRead,
{
    client.sql(q).fetch_all::<T>().await.map_err(failed)
}

/// Runs a query and returns its first row as `T` (no row is an error).
pub async fn one<T>(client: &clickhouse::Client, q: &Sql) -> Result<T, Error>
where
    T: clickhouse::RowOwned + clickhouse::RowRead,
{
    client.sql(q).fetch_one::<T>().await.map_err(failed)
}

/// Runs a query whose answer is one unsigned number (`SELECT count() …`).
pub async fn count(client: &clickhouse::Client, q: &Sql) -> Result<u64, Error> {
    one::<u64>(client, q).await
}

/// A number from a `JSONCompact` cell (64-bit integers arrive quoted); `None` for null/NaN.
pub fn number(v: &Value) -> Option<f64> {
    let x = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }?;
    x.is_finite().then_some(x)
}

/// A count from a `JSONCompact` cell (64-bit integers arrive quoted).
pub fn cell_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mutation_targets_follow_the_schema_layout() {
        let one = ClickHouseConfig::new("http://127.0.0.1:1", "veil");
        assert_eq!(mutation_target(&one, "events").unwrap().as_str(), "events");
        let mut cluster = one.clone();
        cluster.cluster = Some("c1".into());
        let t = mutation_target(&cluster, "events").unwrap();
        assert_eq!(t.as_str(), "veil.events_local ON CLUSTER c1");
        assert!(mutation_target(&one, "events; DROP TABLE x").is_err());
    }

    #[test]
    fn cells_are_read_quoted_or_not() {
        assert_eq!(number(&json!("12")), Some(12.0));
        assert_eq!(number(&json!(1.5)), Some(1.5));
        assert_eq!(number(&json!("nan")), None);
        assert_eq!(number(&Value::Null), None);
        assert_eq!(cell_u64(&json!("18446744073709551615")), Some(u64::MAX));
        assert_eq!(cell_u64(&json!(7)), Some(7));
        assert_eq!(cell_u64(&json!("x")), None);
    }
}
