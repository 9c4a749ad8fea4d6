//! Plausible's Stats API v1 (legacy, still called by WordPress plugins, Grafana, Raycast and
//! scripts), answered by translating each request into a Stats API v2 query run by
//! [`crate::stats`] — the same numbers, the same privacy ([`crate::privacy`]: noisy and
//! budgeted in dp mode).
//!
//! Wire format (GET, query parameters URL-encoded, `Authorization: Bearer KEY`):
//! - `/api/v1/stats/realtime/visitors?site_id=S` → a bare number: visitors of the last 5
//!   minutes;
//! - `/api/v1/stats/aggregate?site_id&period&date&metrics&filters&compare` → `{"results":
//!   {METRIC: {"value": N, "change"?: PCT}}}`;
//! - `/api/v1/stats/timeseries?site_id&period&date&metrics&filters&interval` → `{"results":
//!   [{"date": LABEL, METRIC: N, …}]}`, every bucket of the period;
//! - `/api/v1/stats/breakdown?site_id&property&period&date&metrics&filters&limit&page` →
//!   `{"results": [{NAME: VALUE, METRIC: N, …}]}` (NAME: the property without its prefix,
//!   `page` for `event:page`, `method` for `event:props:method`).
//!
//! `period`: `day`, `7d`, `30d`, `month`, `6mo`, `12mo` (default `30d`) relative to `date`
//! (default today in the site's zone), as Plausible's v1 resolves them today (its legacy query
//! builder): `day` is `date`; `7d` and `30d` the 7 or 30 days ending the day before `date`
//! (`date` excluded, as in v2); `month` the whole calendar month of `date`; `6mo` and `12mo`
//! the 6 or 12 calendar months ending with `date`'s month (included: v1 differs from v2's
//! `6mo`, which ends with the month before); or `custom` with `date=FROM,TO`. `filters`: `PROP==A|B`,
//! `PROP!=A`, joined by `;`; `*` is a wildcard; `\|` a literal bar. JSON answers carry Veil's
//! `meta.privacy` beside `results`; every answer carries an `X-Veil-Privacy` header (`dp` or
//! `exact`). `with_imported=true` merges imported history (v2's `include.imports`,
//! [`crate::imports::merge`]). Errors are `{"error": "…"}` with a 400 naming the parameter.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde_json::{json, Map, Value};

use crate::query;
use crate::site::SiteView;
use crate::stats::{self, Shared};
use crate::Error;

fn bad(m: impl Into<String>) -> Error {
    Error::BadRequest(m.into())
}

/// The query parameters of a request, decoded.
pub fn params(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(p: &'a [(String, String)], name: &str) -> Option<&'a str> {
    p.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// `site_id` of a v1 request.
pub fn site_id(p: &[(String, String)]) -> Result<String, Error> {
    param(p, "site_id")
        .map(str::to_string)
        .ok_or_else(|| bad("`site_id` is required"))
}

/// The first and last day of `period` relative to `date` (module docs).
fn range(p: &[(String, String)], today: NaiveDate) -> Result<(NaiveDate, NaiveDate), Error> {
    let period = param(p, "period").unwrap_or("30d");
    let day = |s: &str| {
        NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .map_err(|_| bad(format!("`date`: {s:?} is not a date (YYYY-MM-DD)")))
    };
    if period == "custom" {
        let d = param(p, "date")
            .ok_or_else(|| bad("`date` is required with period=custom (FROM,TO)"))?;
        let (a, b) = d
            .split_once(',')
            .ok_or_else(|| bad("`date` with period=custom is two dates: FROM,TO"))?;
        let (a, b) = (day(a)?, day(b)?);
        if b < a {
            return Err(bad("`date`: the range ends before it starts"));
        }
        return Ok((a, b));
    }
    let date = match param(p, "date") {
        Some(d) => day(d)?,
        None => today,
    };
    let first_of = |d: NaiveDate| d.with_day(1).unwrap_or(d);
    let months_back = |d: NaiveDate, n: u32| {
        let m = d.year() * 12 + d.month0() as i32 - n as i32;
        NaiveDate::from_ymd_opt(m.div_euclid(12), m.rem_euclid(12) as u32 + 1, 1).unwrap_or(d)
    };
    let last_of_month =
        |d: NaiveDate| months_back(d, 0) + chrono::Months::new(1) - Duration::days(1);
    Ok(match period {
        "day" => (date, date),
        "7d" => (date - Duration::days(7), date - Duration::days(1)),
        "30d" => (date - Duration::days(30), date - Duration::days(1)),
        "month" => (first_of(date), last_of_month(date)),
        "6mo" => (months_back(date, 5), last_of_month(date)),
        "12mo" => (months_back(date, 11), last_of_month(date)),
        other => {
            return Err(bad(format!(
                "`period`: {other:?} is not one of day, 7d, 30d, month, 6mo, 12mo, custom"
            )))
        }
    })
}

/// v1 `filters` (`a==x|y;b!=z`, `*` wildcards, `\|` a literal bar) as v2 filters.
fn filters(p: &[(String, String)]) -> Result<Vec<Value>, Error> {
    let Some(text) = param(p, "filters") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for part in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (dim, negate, values) = if let Some((d, v)) = part.split_once("!=") {
            (d, true, v)
        } else if let Some((d, v)) = part.split_once("==") {
            (d, false, v)
        } else {
            return Err(bad(format!(
                "`filters`: {part:?} is not PROPERTY==VALUE or PROPERTY!=VALUE"
            )));
        };
        // Split on bars that are not escaped.
        let mut vals = Vec::new();
        let mut cur = String::new();
        let mut chars = values.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&'|') => {
                    cur.push('|');
                    chars.next();
                }
                '|' => vals.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        vals.push(cur);
        let wild = vals.iter().any(|v| v.contains('*'));
        let op = match (negate, wild) {
            (false, false) => "is",
            (true, false) => "is_not",
            (false, true) => "matches_wildcard",
            (true, true) => "matches_wildcard_not",
        };
        out.push(json!([op, dim.trim(), vals]));
    }
    Ok(out)
}

fn metrics(p: &[(String, String)]) -> Vec<String> {
    param(p, "metrics")
        .unwrap_or("visitors")
        .split(',')
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

/// The v2 metrics asking v1's `metrics` by time or by `property` (`None`: by nothing). As
/// Plausible's v1 does, `conversion_rate` broken down by time or by a dimension other than a
/// goal or a custom property is each group's own rate (v2's `group_conversion_rate`); the
/// answer keeps v1's name.
fn v2_metrics(ms: &[String], by: Option<&str>) -> Vec<String> {
    let per_group = by.is_some_and(|d| d != "event:goal" && !d.starts_with("event:props:"));
    ms.iter()
        .map(|m| match m.as_str() {
            "conversion_rate" if per_group => "group_conversion_rate".to_string(),
            _ => m.clone(),
        })
        .collect()
}

/// Runs a v2 body and returns its answer; `with_imported=true` in `p` asks v2's
/// `include.imports` (imported history merged, as Plausible's v1 does).
async fn run(
    client: &clickhouse::Client,
    site: &SiteView,
    mut body: Value,
    p: &[(String, String)],
    now: DateTime<Utc>,
    shared: Shared<'_>,
) -> Result<Value, Error> {
    match param(p, "with_imported") {
        None | Some("false") => {}
        Some("true") => {
            if !body["include"].is_object() {
                body["include"] = json!({});
            }
            body["include"]["imports"] = json!(true);
        }
        Some(other) => {
            return Err(bad(format!(
                "`with_imported`: {other:?} is not true or false"
            )))
        }
    }
    let (_, doc) = stats::run(client, site, body.to_string().as_bytes(), now, shared).await?;
    Ok(doc)
}

/// `results` beside Veil's `meta.privacy`.
fn with_privacy(results: Value, doc: &Value) -> Value {
    json!({"results": results, "meta": {"privacy": doc["meta"]["privacy"]}})
}

/// Answers `what` (`realtime/visitors`, `aggregate`, `timeseries`, `breakdown`) for `site`.
pub async fn answer(
    client: &clickhouse::Client,
    site: &SiteView,
    what: &str,
    p: &[(String, String)],
    now: DateTime<Utc>,
    shared: Shared<'_>,
) -> Result<Value, Error> {
    let tz = query::timezone(&site.timezone);
    let today = now.with_timezone(&tz).date_naive();
    let base = |metrics: Vec<String>| -> Result<Map<String, Value>, Error> {
        let (from, to) = range(p, today)?;
        let mut b = Map::new();
        b.insert("site_id".into(), json!(site.domain));
        b.insert("metrics".into(), json!(metrics));
        b.insert(
            "date_range".into(),
            json!([from.to_string(), to.to_string()]),
        );
        b.insert("filters".into(), json!(filters(p)?));
        Ok(b)
    };
    match what {
        "realtime/visitors" => {
            let metric = if site.child_directed {
                "events"
            } else {
                "visitors"
            };
            let body =
                json!({"site_id": site.domain, "metrics": [metric], "date_range": "realtime"});
            let mut q = query::parse(body.to_string().as_bytes(), site, now)?;
            q.start = q.end - Duration::minutes(5);
            stats::realtime_step(&mut q, shared);
            let doc = stats::run_query(client, site, &q, shared).await?;
            Ok(json!(
                doc["results"][0]["metrics"][0].as_f64().unwrap_or(0.0) as u64
            ))
        }
        "aggregate" => {
            let ms = metrics(p);
            let mut b = base(ms.clone())?;
            match param(p, "compare") {
                None => {}
                Some("previous_period") => {
                    b.insert(
                        "include".into(),
                        json!({"comparisons": {"mode": "previous_period"}}),
                    );
                }
                Some(other) => {
                    return Err(bad(format!("`compare`: {other:?} is not previous_period")))
                }
            }
            let doc = run(client, site, Value::Object(b), p, now, shared).await?;
            let row = &doc["results"][0];
            let mut out = Map::new();
            for (i, m) in ms.iter().enumerate() {
                let mut o = json!({"value": row["metrics"][i]});
                if !row["comparison"].is_null() {
                    o["change"] = row["comparison"]["change"][i].clone();
                }
                out.insert(m.clone(), o);
            }
            Ok(with_privacy(Value::Object(out), &doc))
        }
        "timeseries" => {
            let ms = metrics(p);
            let period = param(p, "period").unwrap_or("30d");
            let interval = match (param(p, "interval"), period) {
                (Some("month"), _) => "time:month",
                (Some("day") | Some("date"), _) => "time:day",
                (Some(other), _) => {
                    return Err(bad(format!("`interval`: {other:?} is not day or month")))
                }
                (None, "6mo" | "12mo") => "time:month",
                (None, "day") => "time:hour",
                (None, _) => "time:day",
            };
            let mut b = base(v2_metrics(&ms, Some(interval)))?;
            b.insert("dimensions".into(), json!([interval]));
            b.insert("include".into(), json!({"time_labels": true}));
            let doc = run(client, site, Value::Object(b), p, now, shared).await?;
            let rows: Vec<&Value> = doc["results"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            let labels: Vec<String> = doc["meta"]["time_labels"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            // Every bucket: one without a row counted nobody (exact mode leaves such out).
            let results: Vec<Value> = labels
                .iter()
                .map(|l| {
                    let row = rows
                        .iter()
                        .find(|r| r["dimensions"][0].as_str() == Some(l.as_str()));
                    let mut o = Map::new();
                    o.insert("date".into(), json!(l));
                    for (i, m) in ms.iter().enumerate() {
                        o.insert(m.clone(), row.map_or(json!(0), |r| r["metrics"][i].clone()));
                    }
                    Value::Object(o)
                })
                .collect();
            Ok(with_privacy(Value::Array(results), &doc))
        }
        "breakdown" => {
            let property = param(p, "property").ok_or_else(|| bad("`property` is required"))?;
            let ms = metrics(p);
            let limit: u32 = match param(p, "limit") {
                Some(l) => l
                    .parse()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| bad("`limit` must be 1..=1000"))?,
                None => 100,
            };
            let page: u32 = match param(p, "page") {
                Some(n) => n
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| bad("`page` starts at 1"))?,
                None => 1,
            };
            let mut b = base(v2_metrics(&ms, Some(property)))?;
            b.insert("dimensions".into(), json!([property]));
            b.insert(
                "pagination".into(),
                json!({"limit": limit, "offset": (page - 1).saturating_mul(limit)}),
            );
            let doc = run(client, site, Value::Object(b), p, now, shared).await?;
            let name = property.rsplit(':').next().unwrap_or(property).to_string();
            let results: Vec<Value> = doc["results"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let mut o = Map::new();
                    o.insert(name.clone(), r["dimensions"][0].clone());
                    for (i, m) in ms.iter().enumerate() {
                        o.insert(m.clone(), r["metrics"][i].clone());
                    }
                    Value::Object(o)
                })
                .collect();
            Ok(with_privacy(Value::Array(results), &doc))
        }
        other => Err(Error::NotFound(format!(
            "no such Stats API v1 endpoint: {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> Vec<(String, String)> {
        params(Some(q))
    }

    #[test]
    fn periods_are_relative_to_date() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 15).unwrap_or_default();
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default();
        let r = |q: &str| range(&p(q), today).map_err(|e| e.to_string());
        // Plausible's v1 today (Legacy.QueryBuilder): 7d/30d end the day before `date`.
        assert_eq!(r(""), Ok((d("2026-02-13"), d("2026-03-14"))));
        assert_eq!(
            r("period=30d&date=2026-03-01"),
            Ok((d("2026-01-30"), d("2026-02-28")))
        );
        assert_eq!(
            r("period=day&date=2026-01-02"),
            Ok((d("2026-01-02"), d("2026-01-02")))
        );
        assert_eq!(r("period=7d"), Ok((d("2026-03-08"), d("2026-03-14"))));
        assert_eq!(
            r("period=7d&date=2026-01-03"),
            Ok((d("2025-12-27"), d("2026-01-02")))
        );
        assert_eq!(
            r("period=month&date=2024-02-10"),
            Ok((d("2024-02-01"), d("2024-02-29")))
        );
        assert_eq!(r("period=6mo"), Ok((d("2025-10-01"), d("2026-03-31"))));
        assert_eq!(
            r("period=12mo&date=2026-01-20"),
            Ok((d("2025-02-01"), d("2026-01-31")))
        );
        assert_eq!(
            r("period=custom&date=2026-01-01,2026-01-31"),
            Ok((d("2026-01-01"), d("2026-01-31")))
        );
        assert!(r("period=custom").unwrap_err().contains("`date`"));
        assert!(r("period=week").unwrap_err().contains("`period`"));
        assert!(r("period=day&date=yesterday")
            .unwrap_err()
            .contains("`date`"));
    }

    #[test]
    fn filters_translate_to_v2() {
        let f = |q: &str| filters(&p(q)).map_err(|e| e.to_string());
        assert_eq!(
            f("filters=visit%3Asource%3D%3DGithub%7CTwitter%3Bvisit:country!=FR"),
            Ok(vec![
                json!(["is", "visit:source", ["Github", "Twitter"]]),
                json!(["is_not", "visit:country", ["FR"]])
            ])
        );
        assert_eq!(
            f("filters=event:page==/blog/**"),
            Ok(vec![json!([
                "matches_wildcard",
                "event:page",
                ["/blog/**"]
            ])])
        );
        assert_eq!(
            f(r"filters=visit:utm_campaign==campaign\|one"),
            Ok(vec![json!(["is", "visit:utm_campaign", ["campaign|one"]])])
        );
        assert_eq!(
            f("filters=event:goal==Visit+/register"),
            Ok(vec![json!(["is", "event:goal", ["Visit /register"]])])
        );
        assert!(f("filters=visit:country").unwrap_err().contains("filters"));
    }
}
