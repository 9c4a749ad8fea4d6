//! Runs one Stats API query for one site: parse and check it ([`crate::query`]), run the SQL,
//! apply the k-anonymity fold, shape the Plausible-v2 response.

use serde_json::{json, Value};

use crate::query::{self, Query};
use crate::site::SiteView;
use crate::Error;

/// The `site_id` of a request body, before anything else is checked (to find the site).
pub fn site_id(body: &[u8]) -> Result<String, Error> {
    #[derive(serde::Deserialize)]
    struct Only {
        site_id: Option<String>,
    }
    let o: Only = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("invalid query: {e}")))?;
    o.site_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::BadRequest("`site_id` is required".into()))
}

/// Parses `body`, runs it for `site` and returns the response document.
pub async fn run(
    client: &clickhouse::Client,
    site: &SiteView,
    body: &[u8],
    today: chrono::NaiveDate,
) -> Result<Value, Error> {
    let q = query::parse(body, today)?;
    if site.child_directed {
        query::check_child_query(&q)?;
    }
    let to_exclusive = q.to + chrono::Duration::days(1);
    let bytes = client
        .query(&query::sql(&q, site.child_directed))
        .bind(q.site.as_str())
        .bind(format!("{} 00:00:00", q.from.format("%Y-%m-%d")).as_str())
        .bind(format!("{} 00:00:00", to_exclusive.format("%Y-%m-%d")).as_str())
        .fetch_bytes("JSONCompact")
        .map_err(|e| Error::ClickHouse(e.to_string()))?
        .collect()
        .await
        .map_err(|e| Error::ClickHouse(e.to_string()))?;
    let parsed: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::ClickHouse(format!("bad JSON from ClickHouse: {e}")))?;
    let rows = parsed
        .get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok(fold(site.min_visitors, &q, rows))
}

/// A number from ClickHouse JSON (64-bit integers arrive quoted).
fn number(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(s) => s.parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

fn json_number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

fn fold(min_visitors: u64, q: &Query, rows: Vec<Value>) -> Value {
    let k = min_visitors as f64;
    let nd = q.dimensions.len();
    let nm = q.metrics.len();
    let time = q.dimensions.iter().any(|d| d.starts_with("time:"));
    let mut results = Vec::new();
    let mut other = vec![0.0; nm + 1];
    let mut folded = 0u64;
    let mut suppressed = false;
    for row in rows {
        let Some(cells) = row.as_array() else {
            continue;
        };
        if cells.len() != nd + nm + 1 {
            continue;
        }
        let dims: Vec<Value> = cells[..nd]
            .iter()
            .map(|v| {
                json!(v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()))
            })
            .collect();
        let metrics: Vec<f64> = cells[nd..nd + nm].iter().map(number).collect();
        let visitors = number(&cells[nd + nm]);
        if visitors >= k || visitors == 0.0 {
            results.push(json!({ "dimensions": dims, "metrics": metrics.into_iter().map(json_number).collect::<Vec<_>>() }));
        } else if nd == 0 || time {
            suppressed = true;
            results.push(json!({ "dimensions": dims, "metrics": vec![Value::Null; nm] }));
        } else {
            folded += 1;
            for (o, m) in other
                .iter_mut()
                .zip(metrics.iter().chain(std::iter::once(&visitors)))
            {
                *o += m;
            }
        }
    }
    if folded > 0 && other[nm] >= k {
        let dims = vec![json!(format!("(other: {folded} rows under k={})", min_visitors)); nd];
        results.push(json!({ "dimensions": dims, "metrics": other[..nm].iter().map(|x| json_number(*x)).collect::<Vec<_>>() }));
    }
    let total_rows = results.len();
    let page: Vec<Value> = results
        .into_iter()
        .skip(q.offset as usize)
        .take(q.limit as usize)
        .collect();
    json!({
        "results": page,
        "meta": { "min_visitors": min_visitors, "folded_rows": folded, "suppressed": suppressed, "total_rows": total_rows },
        "query": {
            "site_id": q.site,
            "metrics": q.metrics.iter().map(|m| m.name()).collect::<Vec<_>>(),
            "dimensions": q.dimensions,
            "date_range": [q.from.format("%Y-%m-%d").to_string(), q.to.format("%Y-%m-%d").to_string()],
        }
    })
}
