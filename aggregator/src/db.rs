//! The aggregator's one door to ClickHouse: every statement is an [`Sql`] (see
//! [`mod@veil_schemas::sql`]) run by [`fetch`], [`exec`], [`count`], [`one`] or [`rows`], with one mapping
//! of ClickHouse failures ([`failed`]): a query ClickHouse gave up on because of its cost (the
//! error codes of [`too_expensive_code`]: memory, time, rows or bytes) is
//! [`Error::TooExpensive`] (a 400 once the report names its question, see
//! [`crate::stats`]); a regular expression RE2 refused ([`CANNOT_COMPILE_REGEXP`], which
//! [`crate::query::re2`] should have caught first) is a 400 in general words; any other
//! failure is [`Error::ClickHouse`] (a 502 whose body says only that the database failed, with
//! a request id: ClickHouse's text, which can quote SQL and its values, stays on this side).
//!
//! Bounds: the client reports are read with ([`report_client`]) sends, with every query,
//! ClickHouse's `max_execution_time` = [`MAX_EXECUTION_SECS`], a per-query
//! `max_memory_usage` ([`QueryBudget`], [`DEFAULT_QUERY_MEMORY_MB`] unless configured, below
//! the managed server's 4 GB profile limit), and `max_bytes_before_external_group_by` /
//! `max_bytes_before_external_sort` at a third of it each, so a large `GROUP BY` or sort
//! over raw events spills to disk instead of failing; and `max_result_rows` =
//! [`MAX_RESULT_ROWS`] (the final answer only: subqueries over raw events are not bounded by
//! it), so a breakdown of millions of groups is refused rather than read whole. Nothing is sampled. Background jobs
//! (rollups, snapshots, retention) use the plain client of their [`ClickHouseConfig`]: a
//! rollup of a busy day may take longer.
//!
//! Wire format: [`fetch`] reads ClickHouse's `JSONCompact` output (`{"data": [[cell, …], …]}`),
//! in which 64-bit integers arrive as quoted strings (18.16's default, asked for explicitly
//! with `output_format_json_quote_64bit_integers=1`, since ClickHouse 26 defaults to bare
//! numbers); [`number`] and [`cell_u64`] read cells of either kind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use veil_schemas::sql::{Run, Sql};
use veil_schemas::ClickHouseConfig;

use crate::Error;

/// The longest a ClickHouse query of a report may run, in seconds (the server's
/// `max_execution_time` setting, sent with every query; an overrun is an error, not a
/// partial answer).
pub const MAX_EXECUTION_SECS: u32 = 30;

/// The memory one report query may use by default, in MiB (ClickHouse's `max_memory_usage`):
/// 3 GiB, under the 4 GB (3.73 GiB) limit of the managed server's profile
/// (`veil_schemas::managed`), so the query, not the server's profile, decides when to stop,
/// and its spill thresholds (a third each) stay well inside it.
pub const DEFAULT_QUERY_MEMORY_MB: u64 = 3 * 1024;

/// The most rows one report query may answer by default (ClickHouse's `max_result_rows`,
/// checked on the final result only, block by block: a little more can pass): a breakdown
/// with more groups than this (each at least k visitors) is refused as too expensive instead
/// of being carried whole into Veil's memory to cut one page of at most
/// [`crate::query::MAX_LIMIT`] rows from it.
pub const MAX_RESULT_ROWS: u64 = 1_000_000;

/// How much a report query may use: its memory, and from it the points where a `GROUP BY`
/// and a sort start writing to disk (`max_bytes_before_external_group_by`,
/// `max_bytes_before_external_sort`, a third of the memory each: both can hold their share at
/// once, with a third left for reading blocks and building the answer); the rows of its
/// answer (`max_result_rows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryBudget {
    /// `max_memory_usage`, in bytes.
    pub memory_bytes: u64,
    /// `max_result_rows` (0: no bound).
    pub result_rows: u64,
}

impl QueryBudget {
    /// A budget of `mb` MiB and [`MAX_RESULT_ROWS`].
    pub fn mib(mb: u64) -> Self {
        Self {
            memory_bytes: mb.saturating_mul(1024 * 1024),
            result_rows: MAX_RESULT_ROWS,
        }
    }

    /// The same budget answering at most `rows` rows per query (0: no bound).
    pub fn with_result_rows(self, rows: u64) -> Self {
        Self {
            result_rows: rows,
            ..self
        }
    }

    /// Where a `GROUP BY` or a sort starts spilling to disk, in bytes.
    pub fn spill_bytes(self) -> u64 {
        self.memory_bytes / 3
    }
}

impl Default for QueryBudget {
    fn default() -> Self {
        Self::mib(DEFAULT_QUERY_MEMORY_MB)
    }
}

/// The client reports read with: `ch`'s, with [`MAX_EXECUTION_SECS`] and `budget` (see the
/// module's doc; ClickHouse 18.16 accepts all these settings over HTTP).
pub fn report_client(ch: &ClickHouseConfig, budget: QueryBudget) -> clickhouse::Client {
    let spill = budget.spill_bytes().to_string();
    let client = ch
        .client()
        .with_setting("max_execution_time", MAX_EXECUTION_SECS.to_string())
        .with_setting("max_memory_usage", budget.memory_bytes.to_string())
        .with_setting("max_bytes_before_external_group_by", spill.clone())
        .with_setting("max_bytes_before_external_sort", spill);
    if budget.result_rows == 0 {
        return client;
    }
    client
        .with_setting("max_result_rows", budget.result_rows.to_string())
        .with_setting("result_overflow_mode", "throw")
}

/// ClickHouse's error codes for a query stopped because of what it costs, with their names:
/// it answers `Code: N` at the start of its error text.
const EXPENSIVE: [(u32, &str); 6] = [
    (158, "TOO_MANY_ROWS"),
    (159, "TIMEOUT_EXCEEDED"),
    (160, "TOO_SLOW"),
    (241, "MEMORY_LIMIT_EXCEEDED"),
    (307, "TOO_MANY_BYTES"),
    (396, "TOO_MANY_ROWS_OR_BYTES"),
];

/// The error code of a ClickHouse error text (`Code: 241, e.displayText() = …` in 18.16,
/// `Code: 241. DB::Exception: …` later), if it has one.
pub fn error_code(text: &str) -> Option<u32> {
    let at = text.find("Code: ")? + "Code: ".len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The name of an error code of a query stopped for its cost (`MEMORY_LIMIT_EXCEEDED`, …),
/// `None` for any other code.
pub fn too_expensive_code(code: u32) -> Option<&'static str> {
    EXPENSIVE.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// The message of an [`Error::TooExpensive`] before the report names its question.
pub const TOO_EXPENSIVE: &str = "this question is too expensive to answer from raw events; \
                                 ask for a shorter period or fewer filters";

/// The table a row-changing statement (`ALTER TABLE … DELETE`, `DROP PARTITION`) names:
/// [`veil_schemas::migrate::mutation_target`] (in cluster mode `DB.table_local ON CLUSTER NAME`
/// for a sharded table), built from checked identifiers.
pub fn mutation_target(ch: &ClickHouseConfig, table: &str) -> Result<Sql, Error> {
    veil_schemas::migrate::mutation_target(ch, table)
        .map_err(|e| Error::Internal(format!("mutation target: {e}")))
}

/// The one mapping of a ClickHouse failure: [`Error::TooExpensive`] for the codes of
/// [`too_expensive_code`], else [`Error::ClickHouse`] with ClickHouse's text (for the log,
/// never for the client: see [`Error::public_message`]).
pub fn failed(e: clickhouse::error::Error) -> Error {
    classify(e.to_string())
}

/// ClickHouse's error code for a regular expression RE2 refused (`CANNOT_COMPILE_REGEXP`).
pub const CANNOT_COMPILE_REGEXP: u32 = 427;

/// The 400 of a filter regex that ClickHouse's RE2 refused although [`crate::query::re2`]
/// let it through (a backstop: ClickHouse's text is not sent, it can quote the SQL).
pub const REGEX_REFUSED: &str = "a regular expression in the filters was refused by ClickHouse's \
                                 RE2; simplify it (RE2 syntax: no look-around, no back-references)";

/// [`failed`] on an error text.
fn classify(text: String) -> Error {
    match error_code(&text) {
        Some(code) if too_expensive_code(code).is_some() => Error::TooExpensive {
            code: Some(code),
            message: TOO_EXPENSIVE.into(),
        },
        Some(CANNOT_COMPILE_REGEXP) => Error::BadRequest(REGEX_REFUSED.into()),
        _ => Error::ClickHouse(text),
    }
}

/// Runs a statement that returns no rows (`INSERT`, `ALTER`, …).
pub async fn exec(client: &clickhouse::Client, q: &Sql) -> Result<(), Error> {
    client.sql(q).execute().await.map_err(failed)
}

/// Identical reads under way at the same time share one ClickHouse query: the panels of a
/// dashboard, loaded at once, each ask the differencing guard's counts for the same filter
/// and range (the same SQL text), and a second asker waits for the first one's answer
/// instead of running it again. Nothing is kept once the query has answered (no cache: the
/// next asker runs it anew). One per [`crate::Aggregator`] (its client and database).
#[derive(Debug, Default, Clone)]
pub struct Inflight {
    under_way: Arc<Mutex<HashMap<String, Arc<Answer>>>>,
}

/// One shared read's answer, set once by whichever asker runs it.
type Answer = tokio::sync::OnceCell<Result<Arc<Vec<Value>>, Error>>;

impl Inflight {
    /// [`fetch`], shared with the askers of the same statement under way.
    pub async fn fetch(&self, client: &clickhouse::Client, q: &Sql) -> Result<Vec<Value>, Error> {
        let key = q.as_str();
        let cell = {
            let mut map = self.under_way.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(key.to_string()).or_default())
        };
        let answer = cell
            .get_or_init(|| async { fetch(client, q).await.map(Arc::new) })
            .await
            .clone();
        {
            let mut map = self.under_way.lock().unwrap_or_else(|p| p.into_inner());
            if map.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                map.remove(key);
            }
        }
        answer.map(|rows| rows.as_ref().clone())
    }
}

/// Runs a query and returns the rows of its `JSONCompact` answer.
pub async fn fetch(client: &clickhouse::Client, q: &Sql) -> Result<Vec<Value>, Error> {
    // 64-bit integers as JSON strings on every server: 18.16's default, no longer the default
    // on current ClickHouse (26 writes bare numbers), so rows read the same on both.
    let bytes = client
        .sql(q)
        .with_setting("output_format_json_quote_64bit_integers", "1")
        .fetch_bytes("JSONCompact")
        .map_err(failed)?
        .collect()
        .await
        .map_err(failed)?;
    // An error after the answer began streaming arrives at the end of the body, as text.
    let parsed: Value = serde_json::from_slice(&bytes).map_err(|e| {
        let tail = String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(4096)..]);
        match error_code(&tail) {
            Some(_) => classify(tail.into_owned()),
            None => Error::ClickHouse(format!("bad JSON from ClickHouse: {e}")),
        }
    })?;
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
    fn failures_are_classified_by_their_code() {
        let old = "Code: 241, e.displayText() = DB::Exception: Memory limit (for query) exceeded: would use 3.73 GiB (attempt to allocate chunk of 1048576 bytes), maximum: 3.73 GiB, e.what() = DB::Exception";
        assert_eq!(error_code(old), Some(241));
        let new = "bad response: Code: 159. DB::Exception: Timeout exceeded: elapsed 30.1 seconds, maximum: 30. (TIMEOUT_EXCEEDED) (version 24.3)";
        assert_eq!(error_code(new), Some(159));
        for text in [old, new] {
            match classify(text.into()) {
                Error::TooExpensive { message, .. } => {
                    assert_eq!(message, TOO_EXPENSIVE);
                    assert!(!message.contains("Code:") && !message.contains("DB::Exception"));
                }
                other => panic!("{other:?}"),
            }
        }
        for code in [158, 160, 307, 396] {
            let t =
                format!("Code: {code}, e.displayText() = DB::Exception: Limit for rows exceeded");
            assert!(matches!(classify(t), Error::TooExpensive { code: c, .. } if c == Some(code)));
        }
        // Bad SQL, an unknown table, a refused connection: the database failed, not the question.
        let syntax = "Code: 62, e.displayText() = DB::Exception: Syntax error: failed at position 8 (line 1, col 8): WHERE pathname = '/secret'";
        assert_eq!(error_code(syntax), Some(62));
        assert!(matches!(classify(syntax.into()), Error::ClickHouse(t) if t == syntax));
        let down = "network error: client error (Connect): tcp connect error: Connection refused";
        assert_eq!(error_code(down), None);
        assert!(matches!(classify(down.into()), Error::ClickHouse(_)));
        assert_eq!(error_code("Code: x"), None);
        let re = "Code: 427, e.displayText() = DB::Exception: OptimizedRegularExpression: cannot compile re2: (?<=x)y, error: invalid perl operator: (?<";
        assert!(matches!(classify(re.into()), Error::BadRequest(m) if m == REGEX_REFUSED));
        assert_eq!(too_expensive_code(241), Some("MEMORY_LIMIT_EXCEEDED"));
        assert_eq!(too_expensive_code(62), None);
    }

    #[test]
    fn budgets_spill_at_a_third_of_their_memory() {
        let b = QueryBudget::default();
        assert_eq!(b.memory_bytes, 3 << 30);
        assert_eq!(b.spill_bytes(), 1 << 30);
        assert!(
            b.memory_bytes < 4_000_000_000,
            "under the managed server's limit"
        );
        assert_eq!(QueryBudget::mib(u64::MAX).memory_bytes, u64::MAX);
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
