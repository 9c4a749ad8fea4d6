//! The Stats API query: parsing a Plausible-v2-shaped request, checking every field against an
//! allow-list, and building the ClickHouse SQL.
//!
//! Request (`POST /api/v2/query`, the subset of Plausible's Stats API v2 served today):
//!
//! ```json
//! {"site_id":"example.com","metrics":["visitors","pageviews"],"date_range":"7d",
//!  "dimensions":["event:page"],"pagination":{"limit":10,"offset":0}}
//! ```
//!
//! Identifiers (columns, expressions) only ever come from the allow-lists below; values (site,
//! dates) are passed with the client's `?` binding, which escapes them. No user input is pasted
//! into SQL text.

use chrono::{Datelike, Duration, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::Error;

/// A metric the API serves and its SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Unique visitors (`uniq(visitor_id)`).
    Visitors,
    /// Visits (sessions).
    Visits,
    /// Pageview events.
    Pageviews,
    /// All events.
    Events,
}

impl Metric {
    /// Every metric, with its API name.
    pub const ALL: [(&'static str, Metric); 4] = [
        ("visitors", Metric::Visitors),
        ("visits", Metric::Visits),
        ("pageviews", Metric::Pageviews),
        ("events", Metric::Events),
    ];

    fn sql(self) -> &'static str {
        match self {
            Metric::Visitors => "uniq(visitor_id)",
            Metric::Visits => "uniqExact((visitor_id, visit))",
            Metric::Pageviews => "countIf(name = 'pageview')",
            Metric::Events => "countIf(name != 'engagement')",
        }
    }

    /// The API name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// Dimensions: API name → SQL expression over `events`.
pub const DIMENSIONS: &[(&str, &str)] = &[
    ("event:page", "pathname"),
    ("event:name", "name"),
    ("event:hostname", "hostname"),
    ("visit:source", "source"),
    ("visit:referrer_host", "referrer_source"),
    ("visit:channel", "channel"),
    ("visit:referrer", "referrer"),
    ("visit:utm_source", "utm_source"),
    ("visit:utm_medium", "utm_medium"),
    ("visit:utm_campaign", "utm_campaign"),
    ("visit:utm_content", "utm_content"),
    ("visit:utm_term", "utm_term"),
    ("visit:browser", "browser"),
    ("visit:browser_version", "browser_version"),
    ("visit:os", "os"),
    ("visit:os_version", "os_version"),
    ("visit:device", "device"),
    ("visit:country", "country_code"),
    ("visit:region", "region"),
    ("visit:city", "city"),
    ("visit:isp", "isp"),
    ("visit:screen", "screen_class"),
    ("visit:processor", "processor_class"),
    ("visit:locale", "locale"),
    ("visit:app_version", "app_version"),
    ("visit:device_model", "device_model"),
    ("visit:install_source", "install_source"),
    (
        "time:hour",
        "formatDateTime(toStartOfHour(timestamp), '%Y-%m-%d %H:00:00')",
    ),
    ("time:day", "toString(toDate(timestamp))"),
];

/// A checked query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Site domain.
    pub site: String,
    /// Metrics in request order.
    pub metrics: Vec<Metric>,
    /// Dimension API names in request order.
    pub dimensions: Vec<&'static str>,
    /// First day included (UTC).
    pub from: NaiveDate,
    /// Last day included (UTC).
    pub to: NaiveDate,
    /// Rows per page.
    pub limit: u32,
    /// Rows skipped.
    pub offset: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    site_id: Option<String>,
    metrics: Option<Vec<String>>,
    date_range: Option<Value>,
    #[serde(default)]
    dimensions: Vec<String>,
    #[serde(default)]
    filters: Vec<Value>,
    #[serde(default)]
    order_by: Option<Value>,
    #[serde(default)]
    include: Option<Value>,
    #[serde(default)]
    pagination: Option<Pagination>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pagination {
    limit: Option<u32>,
    offset: Option<u32>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::BadRequest(msg.into())
}

/// Largest page.
pub const MAX_LIMIT: u32 = 10_000;

/// Parses and checks a request body against `today` (UTC).
pub fn parse(body: &[u8], today: NaiveDate) -> Result<Query, Error> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| bad(format!("invalid query: {e}")))?;
    let site = raw
        .site_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("`site_id` is required"))?;
    let names = raw
        .metrics
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("`metrics` is required (e.g. [\"visitors\"])"))?;
    let mut metrics = Vec::new();
    for n in &names {
        let m = Metric::ALL
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, m)| *m)
            .ok_or_else(|| bad(format!("`metrics`: unknown metric {n:?}; supported: visitors, visits, pageviews, events")))?;
        metrics.push(m);
    }
    let mut dimensions = Vec::new();
    for d in &raw.dimensions {
        let (name, _) = DIMENSIONS
            .iter()
            .find(|(name, _)| name == d)
            .ok_or_else(|| bad(format!("`dimensions`: unknown dimension {d:?}")))?;
        dimensions.push(*name);
    }
    if !raw.filters.is_empty() {
        return Err(bad("`filters` are not supported yet"));
    }
    if raw.order_by.is_some() {
        return Err(bad(
            "`order_by` is not supported yet; results are ordered by the first metric, descending",
        ));
    }
    let _ = raw.include;
    let (from, to) = date_range(
        raw.date_range
            .as_ref()
            .ok_or_else(|| bad("`date_range` is required"))?,
        today,
    )?;
    let limit = raw
        .pagination
        .as_ref()
        .and_then(|p| p.limit)
        .unwrap_or(10_000);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad(format!("`pagination.limit` must be 1..={MAX_LIMIT}")));
    }
    let offset = raw.pagination.as_ref().and_then(|p| p.offset).unwrap_or(0);
    Ok(Query {
        site,
        metrics,
        dimensions,
        from,
        to,
        limit,
        offset,
    })
}

fn date_range(v: &Value, today: NaiveDate) -> Result<(NaiveDate, NaiveDate), Error> {
    let r = match v {
        Value::String(s) => match s.as_str() {
            "day" => (today, today),
            "7d" => (today - Duration::days(6), today),
            "30d" => (today - Duration::days(29), today),
            "month" => (today.with_day(1).unwrap_or(today), today),
            "year" => (NaiveDate::from_ymd_opt(today.year(), 1, 1).unwrap_or(today), today),
            "all" => (NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or(today), today),
            other => return Err(bad(format!("`date_range`: unknown period {other:?}; use day, 7d, 30d, month, year, all or [\"YYYY-MM-DD\",\"YYYY-MM-DD\"]"))),
        },
        Value::Array(a) if a.len() == 2 => {
            let d = |i: usize| -> Result<NaiveDate, Error> {
                a[i].as_str()
                    .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                    .ok_or_else(|| bad("`date_range` dates must be \"YYYY-MM-DD\""))
            };
            let (f, t) = (d(0)?, d(1)?);
            if f > t {
                return Err(bad("`date_range` starts after it ends"));
            }
            (f, t)
        }
        _ => return Err(bad("`date_range` must be a period name or [from, to]")),
    };
    Ok(r)
}

/// Child-directed sites store no visitor hash, referrer, campaign or props: only counts of
/// events by page, name, host, country, device class, browser and OS family, and time.
pub fn check_child_query(q: &Query) -> Result<(), Error> {
    if let Some(m) = q
        .metrics
        .iter()
        .find(|m| !matches!(m, Metric::Pageviews | Metric::Events))
    {
        return Err(bad(format!(
            "`metrics`: {:?} is not reported for a child-directed site (only pageviews and events)",
            m.name()
        )));
    }
    const ALLOWED: [&str; 9] = [
        "event:page",
        "event:name",
        "event:hostname",
        "visit:country",
        "visit:device",
        "visit:browser",
        "visit:os",
        "time:hour",
        "time:day",
    ];
    if let Some(d) = q.dimensions.iter().find(|d| !ALLOWED.contains(d)) {
        return Err(bad(format!(
            "`dimensions`: {d:?} is not collected for a child-directed site"
        )));
    }
    Ok(())
}

/// Today's date in UTC.
pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// Raw events of one site in a time range (placeholders: site, from, to).
const EVENTS_SOURCE: &str =
    "events WHERE site = ? AND timestamp >= toDateTime(?) AND timestamp < toDateTime(?) AND bot = ''";

/// The same events with a `visit` number per visitor, derived from the stored visitor hashes
/// and times alone with the 30-minute rule (a gap of more than 1800 s starts a new visit). It
/// does not depend on which collector saw which hit, so visits are right when one visitor's
/// events went to several collectors. Works on 18.16 (arrays, no window functions).
const VISITS_SOURCE: &str = "(SELECT visitor_id, ev.1 AS timestamp, ev.2 AS name, ev.3 AS pathname, \
     ev.4 AS hostname, ev.5 AS referrer_source, ev.6 AS referrer, ev.7 AS utm_source, ev.8 AS utm_medium, \
     ev.9 AS utm_campaign, ev.10 AS utm_content, ev.11 AS utm_term, ev.12 AS browser, ev.13 AS browser_version, \
     ev.14 AS os, ev.15 AS os_version, ev.16 AS device, ev.17 AS country_code, ev.18 AS source, \
     ev.19 AS channel, ev.20 AS region, ev.21 AS city, ev.22 AS isp, ev.23 AS screen_class, \
     ev.24 AS processor_class, ev.25 AS locale, ev.26 AS app_version, ev.27 AS device_model, \
     ev.28 AS install_source, visit \
     FROM (SELECT visitor_id, arraySort(x -> x.1, groupArray((timestamp, name, pathname, hostname, \
     referrer_source, referrer, utm_source, utm_medium, utm_campaign, utm_content, utm_term, browser, \
     browser_version, os, os_version, device, country_code, source, channel, region, city, isp, \
     screen_class, processor_class, locale, app_version, device_model, install_source))) AS evs \
     FROM events WHERE site = ? AND timestamp >= toDateTime(?) AND timestamp < toDateTime(?) AND bot = '' \
     GROUP BY visitor_id) \
     ARRAY JOIN evs AS ev, \
     arrayCumSum(arrayMap((e, i) -> toUInt8(i = 1 OR e.1 - evs[i - 1].1 > 1800), evs, arrayEnumerate(evs))) AS visit)";

/// The SQL for a query, with `?` placeholders bound by the caller in this order:
/// site, from (`YYYY-MM-DD`), to-exclusive (`YYYY-MM-DD`). Columns come out as the dimensions
/// then the metrics, then `uniq(visitor_id)` (for the k-anonymity check).
pub fn sql(q: &Query, child_site: bool) -> String {
    let dims: Vec<&str> = q
        .dimensions
        .iter()
        .filter_map(|d| DIMENSIONS.iter().find(|(n, _)| n == d).map(|(_, e)| *e))
        .collect();
    let mut select: Vec<String> = dims
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{e} AS d{i}"))
        .collect();
    select.extend(
        q.metrics
            .iter()
            .enumerate()
            .map(|(i, m)| format!("{} AS m{i}", m.sql())),
    );
    // Child-directed sites have no visitor hash: k applies to their event counts.
    select.push(if child_site {
        "count() AS k_visitors".into()
    } else {
        "uniq(visitor_id) AS k_visitors".into()
    });
    let source = if q.metrics.contains(&Metric::Visits) {
        VISITS_SOURCE
    } else {
        EVENTS_SOURCE
    };
    let mut s = format!("SELECT {} FROM {source}", select.join(", "));
    if !dims.is_empty() {
        // 18.16 has no positional GROUP BY: group and order by the aliases.
        let aliases: Vec<String> = (0..dims.len()).map(|i| format!("d{i}")).collect();
        s.push_str(&format!(" GROUP BY {}", aliases.join(", ")));
        let time = q.dimensions.iter().any(|d| d.starts_with("time:"));
        if time {
            s.push_str(&format!(" ORDER BY {} ASC", aliases.join(" ASC, ")));
        } else {
            s.push_str(&format!(
                " ORDER BY m0 DESC, {} ASC",
                aliases.join(" ASC, ")
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn parses_a_plausible_query() {
        let q = parse(br#"{"site_id":"a.com","metrics":["visitors","pageviews"],"date_range":"7d","dimensions":["event:page"]}"#, d("2026-11-28")).unwrap();
        assert_eq!(q.metrics, vec![Metric::Visitors, Metric::Pageviews]);
        assert_eq!(q.dimensions, vec!["event:page"]);
        assert_eq!((q.from, q.to), (d("2026-11-22"), d("2026-11-28")));
        let s = sql(&q, false);
        assert!(s.starts_with("SELECT pathname AS d0, uniq(visitor_id) AS m0, countIf(name = 'pageview') AS m1, uniq(visitor_id) AS k_visitors FROM events"), "{s}");
        assert!(s.contains("GROUP BY d0 ORDER BY m0 DESC, d0 ASC"), "{s}");
    }

    #[test]
    fn errors_name_the_field() {
        let t = d("2026-11-28");
        let e = |b: &str| parse(b.as_bytes(), t).unwrap_err().to_string();
        assert!(e(r#"{"metrics":["visitors"],"date_range":"day"}"#).contains("site_id"));
        assert!(e(r#"{"site_id":"a","metrics":["nope"],"date_range":"day"}"#).contains("metrics"));
        assert!(e(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","dimensions":["x; DROP"]}"#
        )
        .contains("dimensions"));
        assert!(
            e(r#"{"site_id":"a","metrics":["visitors"],"date_range":"fortnight"}"#)
                .contains("date_range")
        );
        assert!(e(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":["2026-02-01","2026-01-01"]}"#
        )
        .contains("date_range"));
        assert!(
            e(r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","bogus":1}"#)
                .contains("bogus")
        );
    }

    #[test]
    fn custom_ranges_and_months() {
        let q = parse(
            br#"{"site_id":"a","metrics":["events"],"date_range":["2026-01-01","2026-01-31"]}"#,
            d("2026-11-28"),
        )
        .unwrap();
        assert_eq!((q.from, q.to), (d("2026-01-01"), d("2026-01-31")));
        let q = parse(
            br#"{"site_id":"a","metrics":["events"],"date_range":"month"}"#,
            d("2026-11-28"),
        )
        .unwrap();
        assert_eq!(q.from, d("2026-11-01"));
    }
}
