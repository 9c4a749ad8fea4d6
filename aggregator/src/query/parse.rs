//! The request parser: a Plausible-v2 query body checked field by field against the
//! vocabulary ([`super::vocab`]) into a [`Query`]; anything else is a 400 whose message names
//! the field. So is a question Plausible's own parser refuses (which metrics go with which
//! dimensions and filters, where goal conditions may stand, value types, pagination bounds:
//! `check_metrics` and `filter`), except where Veil answers it with a meaning of its own.

use chrono::{Duration, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::dates::{date_range, local_today, snap_to_minute, time_bucket_for, timezone};
use super::source;
use super::vocab::{
    glob_to_regex, Compare, Dim, DimKind, Filter, Level, Metric, Op, Query, TimeBucket, DIMENSIONS,
    REGEX_SIZE_LIMIT,
};
use crate::site::SiteView;
use crate::Error;

/// Longest property name in `event:props:NAME`.
const MAX_PROP_NAME: usize = 300;

/// `time` resolves to [`time_bucket_for`] the range (`bucket`).
fn dimension(name: &str, field: &str, bucket: TimeBucket) -> Result<Dim, Error> {
    if let Some(prop) = name.strip_prefix("event:props:") {
        if prop.is_empty() || prop.len() > MAX_PROP_NAME {
            return Err(bad(format!(
                "{field}: {name:?} needs a property name of 1..={MAX_PROP_NAME} bytes"
            )));
        }
        return Ok(Dim {
            name: name.to_string(),
            kind: DimKind::Prop(prop.to_string()),
        });
    }
    if name == "time" {
        return Ok(Dim {
            name: name.to_string(),
            kind: DimKind::Time(bucket),
        });
    }
    DIMENSIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, k)| Dim {
            name: (*n).to_string(),
            kind: k.clone(),
        })
        .ok_or_else(|| {
            bad(format!(
                "{field}: unknown dimension {name:?}; see the README for the list (e.g. \"event:page\", \"visit:source\", \"time:day\", \"event:props:NAME\")"
            ))
        })
}

/// Longest filter value, regex or list.
const MAX_VALUE: usize = 2000;
const MAX_VALUES: usize = 100;
const MAX_DEPTH: usize = 8;
/// Most conditions in one query's filters, all nesting levels together.
pub const MAX_CONDITIONS: usize = 20;
/// Most regexes (values of `matches*` conditions) in one query's filters.
pub const MAX_REGEXES: usize = 5;
/// What the filters of one query have used so far of [`MAX_CONDITIONS`] and [`MAX_REGEXES`]
/// (counted while parsing, so an oversized request is refused before its regexes compile),
/// and what the metric rules ([`check_metrics`]) need to know of them. Conditions inside
/// `has_done`/`has_not_done` select visitors, not rows: as in Plausible, they do not count as
/// filtering on their dimension.
#[derive(Default)]
struct Budget {
    conditions: usize,
    regexes: usize,
    /// An `event:goal` condition outside behavioural filters.
    goal: bool,
    /// An `event:page` condition outside behavioural filters, at any depth.
    page: bool,
    /// An `event:page` condition that is itself one of the top-level filters.
    top_page: bool,
    /// The first `event:props:*` condition below the top level (its field).
    nested_prop: Option<String>,
}

/// Dimensions Plausible filters at the top level only (not inside `and`/`or`/`not`).
const TOP_LEVEL_ONLY: [&str; 2] = ["event:goal", "event:hostname"];

/// `depth` counts the and/or/not/has_done levels above `v` (0: one of the top-level filters);
/// `behavioural` is whether one of them is `has_done`/`has_not_done`.
fn filter(
    v: &Value,
    field: &str,
    depth: usize,
    behavioural: bool,
    budget: &mut Budget,
) -> Result<Filter, Error> {
    if depth > MAX_DEPTH {
        return Err(bad(format!(
            "{field}: filters nest deeper than {MAX_DEPTH}"
        )));
    }
    let a = v.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
        bad(format!(
            "{field}: a filter is an array like [\"is\", \"visit:country\", [\"DE\"]]"
        ))
    })?;
    let op = a[0]
        .as_str()
        .ok_or_else(|| bad(format!("{field}[0]: the operator must be a string")))?;
    match op {
        "and" | "or" => {
            let items = a
                .get(1)
                .and_then(Value::as_array)
                .filter(|x| !x.is_empty() && a.len() == 2)
                .ok_or_else(|| {
                    bad(format!(
                        "{field}: [\"{op}\", [filter, …]] needs a non-empty list of filters"
                    ))
                })?;
            let fs = items
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    filter(
                        f,
                        &format!("{field}[1][{i}]"),
                        depth + 1,
                        behavioural,
                        budget,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if op == "and" {
                Filter::And(fs)
            } else {
                Filter::Or(fs)
            })
        }
        "not" => {
            let inner = a
                .get(1)
                .filter(|_| a.len() == 2)
                .ok_or_else(|| bad(format!("{field}: [\"not\", filter] takes one filter")))?;
            Ok(Filter::Not(Box::new(filter(
                inner,
                &format!("{field}[1]"),
                depth + 1,
                behavioural,
                budget,
            )?)))
        }
        "has_done" | "has_not_done" => {
            let inner = a
                .get(1)
                .filter(|_| a.len() == 2)
                .ok_or_else(|| bad(format!("{field}: [\"{op}\", filter] takes one filter")))?;
            let inner = filter(inner, &format!("{field}[1]"), depth + 1, true, budget)?;
            if inner.behavioural() {
                return Err(bad(format!(
                    "{field}: {op} cannot contain has_done/has_not_done"
                )));
            }
            if let Some(d) = inner.dims().into_iter().find(|d| d.level() != Level::Event) {
                return Err(bad(format!(
                    "{field}: {op} takes event:* conditions (event:name, event:page, event:goal, event:props:…), not {}",
                    d.name
                )));
            }
            Ok(Filter::HasDone {
                not: op == "has_not_done",
                inner: Box::new(inner),
            })
        }
        _ => {
            let op = Op::parse(op).ok_or_else(|| {
                bad(format!("{field}[0]: unknown operator {op:?}; use is, is_not, contains, contains_not, matches, matches_not, and, or, not, has_done, has_not_done"))
            })?;
            if a.len() < 3 || a.len() > 4 {
                return Err(bad(format!(
                    "{field}: a condition is [operator, dimension, [values…], {{\"case_sensitive\": bool}}?]"
                )));
            }
            budget.conditions += 1;
            if budget.conditions > MAX_CONDITIONS {
                return Err(bad(format!(
                    "`filters`: at most {MAX_CONDITIONS} conditions in all"
                )));
            }
            let dname = a[1]
                .as_str()
                .ok_or_else(|| bad(format!("{field}[1]: the dimension must be a string")))?;
            let dim = dimension(dname, &format!("{field}[1]"), TimeBucket::Day)?;
            if matches!(dim.kind, DimKind::Time(_)) {
                return Err(bad(format!(
                    "{field}[1]: time dimensions cannot be filtered; use date_range"
                )));
            }
            // Plausible's rules on where a condition may stand.
            if depth > 0 && !behavioural && TOP_LEVEL_ONLY.contains(&dim.name.as_str()) {
                return Err(bad(format!(
                    "{field}[1]: {} can only be filtered at the top level (one of the `filters`, not inside and/or/not)",
                    dim.name
                )));
            }
            if depth > 0 && matches!(dim.kind, DimKind::Prop(_)) && budget.nested_prop.is_none() {
                budget.nested_prop = Some(field.to_string());
            }
            if !behavioural {
                budget.goal |= dim.kind == DimKind::Goal;
                if dim.name == "event:page" {
                    budget.page = true;
                    budget.top_page |= depth == 0;
                }
            }
            let raw_values = a[2]
                .as_array()
                .filter(|v| !v.is_empty() && v.len() <= MAX_VALUES)
                .ok_or_else(|| {
                    bad(format!(
                        "{field}[2]: values must be a list of 1..={MAX_VALUES} strings"
                    ))
                })?;
            let mut values = Vec::new();
            for (i, v) in raw_values.iter().enumerate() {
                // Plausible's rule: values are strings, except that visit:city also takes
                // whole numbers (GeoName ids).
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) if dim.name == "visit:city" && (n.is_u64() || n.is_i64()) => {
                        n.to_string()
                    }
                    _ if dim.name == "visit:city" => {
                        return Err(bad(format!(
                            "{field}[2][{i}]: visit:city values are strings or whole numbers (GeoName ids)"
                        )))
                    }
                    _ => return Err(bad(format!("{field}[2][{i}]: values must be strings"))),
                };
                if s.len() > MAX_VALUE {
                    return Err(bad(format!(
                        "{field}[2][{i}]: a value is longer than {MAX_VALUE} bytes"
                    )));
                }
                values.push(s);
            }
            let case_sensitive = match a.get(3) {
                None => true,
                Some(m) => {
                    let obj = m.as_object().ok_or_else(|| {
                        bad(format!("{field}[3]: modifiers are an object like {{\"case_sensitive\": false}}"))
                    })?;
                    if let Some(k) = obj.keys().find(|k| *k != "case_sensitive") {
                        return Err(bad(format!("{field}[3]: unknown modifier {k:?}")));
                    }
                    obj.get("case_sensitive")
                        .map(|v| {
                            v.as_bool().ok_or_else(|| {
                                bad(format!("{field}[3].case_sensitive must be true or false"))
                            })
                        })
                        .transpose()?
                        .unwrap_or(true)
                }
            };
            if matches!(op, Op::Matches | Op::MatchesNot) {
                budget.regexes += values.len();
                if budget.regexes > MAX_REGEXES {
                    return Err(bad(format!(
                        "`filters`: at most {MAX_REGEXES} regular expressions (values of matches conditions) in all"
                    )));
                }
                let wildcard = a[0].as_str().is_some_and(|s| s.contains("wildcard"));
                for (i, v) in values.iter_mut().enumerate() {
                    if wildcard {
                        *v = glob_to_regex(v);
                    }
                    super::re2::check(v).map_err(|e| {
                        bad(format!(
                            "{field}[2][{i}]: not a regular expression ClickHouse can run: {e}"
                        ))
                    })?;
                    regex::RegexBuilder::new(v)
                        .size_limit(REGEX_SIZE_LIMIT)
                        .build()
                        .map_err(|e| {
                            bad(format!(
                                "{field}[2][{i}]: not a valid regular expression: {e}"
                            ))
                        })?;
                }
            }
            // Plausible's rule: a country is its two-letter code (a name matches nothing and
            // would answer an empty 200).
            if dim.name == "visit:country" && matches!(op, Op::Is | Op::IsNot) {
                if let Some((i, v)) = values
                    .iter()
                    .enumerate()
                    // "" is the stored "unknown country" (the dashboard's "(none)" row).
                    .find(|(_, v)| {
                        !v.is_empty()
                            && (v.len() != 2 || !v.bytes().all(|b| b.is_ascii_alphabetic()))
                    })
                {
                    return Err(bad(format!(
                        "{field}[2][{i}]: visit:country takes ISO 3166-1 alpha-2 codes such as \"DE\" (got {v:?}); filter visit:country_name for names"
                    )));
                }
            }
            Ok(Filter::Cond {
                op,
                dim,
                values,
                case_sensitive,
            })
        }
    }
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
    order_by: Option<Vec<Value>>,
    #[serde(default)]
    include: Option<Include>,
    #[serde(default)]
    pagination: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Include {
    #[serde(default)]
    imports: Option<bool>,
    #[serde(default)]
    time_labels: Option<bool>,
    #[serde(default)]
    total_rows: Option<bool>,
    #[serde(default)]
    comparisons: Option<Comparisons>,
    #[serde(default)]
    rollups: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Comparisons {
    mode: String,
    #[serde(default)]
    match_day_of_week: Option<bool>,
    #[serde(default)]
    date_range: Option<Vec<String>>,
}

/// `include.comparisons` as a [`Compare`] (Plausible's modes and options).
fn compare_of(c: &Comparisons) -> Result<Compare, Error> {
    let weekday = c.match_day_of_week.unwrap_or(false);
    if c.mode != "custom" && c.date_range.is_some() {
        return Err(bad(
            "`include.comparisons.date_range` goes with `\"mode\": \"custom\"` only",
        ));
    }
    Ok(match (c.mode.as_str(), weekday) {
        ("previous_period", false) => Compare::PreviousPeriod,
        ("previous_period", true) => Compare::PreviousPeriodMatchingWeekday,
        ("year_over_year", false) => Compare::YearOverYear,
        ("year_over_year", true) => Compare::YearOverYearMatchingWeekday,
        ("custom", _) => {
            let want = "`include.comparisons.date_range` must be two dates, first and last, \
                        like [\"2026-01-01\", \"2026-01-31\"], with `\"mode\": \"custom\"`";
            let range = c.date_range.as_deref().ok_or_else(|| bad(want))?;
            let [from, to] = range else {
                return Err(bad(want));
            };
            let day = |s: &str| {
                chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
                    bad(format!(
                        "`include.comparisons.date_range`: {s:?} is not a date (YYYY-MM-DD)"
                    ))
                })
            };
            let (from, to) = (day(from)?, day(to)?);
            if from > to {
                return Err(bad(
                    "`include.comparisons.date_range`: the first day is after the last",
                ));
            }
            Compare::Custom(from, to)
        }
        (m, _) => {
            return Err(bad(format!(
                "`include.comparisons.mode`: unknown mode {m:?}; use previous_period, \
                 year_over_year or custom"
            )))
        }
    })
}

fn bad(msg: impl Into<String>) -> Error {
    Error::BadRequest(msg.into())
}

/// Largest page.
pub const MAX_LIMIT: u32 = 10_000;

/// Parses and checks a request body for `site` at `now`.
pub fn parse(body: &[u8], site: &SiteView, now: chrono::DateTime<Utc>) -> Result<Query, Error> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| bad(format!("invalid query: {e}")))?;
    let site_id = raw
        .site_id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("`site_id` is required"))?;
    let tz = timezone(&site.timezone);
    let today = local_today(tz, now);
    let range = raw.date_range.as_ref().ok_or_else(|| {
        bad("`date_range` is required (e.g. \"7d\" or [\"2026-01-01\",\"2026-01-31\"])")
    })?;
    let realtime = range.as_str() == Some("realtime");
    let last24h = range.as_str() == Some("24h");
    // Sliding windows end at the start of the current UTC minute, so every query within one
    // minute sees the same window: two requests seconds apart cannot be subtracted to isolate
    // the few events that slid in or out between them (whole minutes still can; see
    // docs/PRIVACY.md).
    let n = snap_to_minute(now.naive_utc());
    let (from, to, start, end) = if realtime {
        (today, today, n - Duration::minutes(30), n)
    } else if last24h {
        (
            local_today(tz, now - Duration::hours(24)),
            today,
            n - Duration::hours(24),
            n,
        )
    } else {
        let r = date_range(range, today, tz)?;
        (r.from, r.to, r.start, r.end)
    };
    let bucket = time_bucket_for(start, end);
    let names = raw
        .metrics
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("`metrics` is required (e.g. [\"visitors\"])"))?;
    let mut metrics = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let m = Metric::ALL
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                let all: Vec<&str> = Metric::ALL.iter().map(|(n, _)| *n).collect();
                bad(format!(
                    "`metrics[{i}]`: unknown metric {n:?}; supported: {}",
                    all.join(", ")
                ))
            })?;
        if metrics.contains(&m) {
            return Err(bad(format!("`metrics[{i}]`: {n:?} is listed twice")));
        }
        metrics.push(m);
    }
    let mut dimensions: Vec<Dim> = Vec::new();
    for (i, d) in raw.dimensions.iter().enumerate() {
        let dim = dimension(d, &format!("`dimensions[{i}]`"), bucket)?;
        if dimensions.iter().any(|x| x.name == dim.name) {
            return Err(bad(format!("`dimensions[{i}]`: {d:?} is listed twice")));
        }
        dimensions.push(dim);
    }
    // Minute buckets are for the last 30 minutes only: over a longer range they would be
    // thousands of rows, and only raw events carry the minute (no rollup does).
    if !realtime
        && dimensions
            .iter()
            .any(|d| d.kind == DimKind::Time(TimeBucket::Minute))
    {
        return Err(bad(
            "`time:minute` is only available with `date_range: \"realtime\"` (the last 30 minutes); use time:hour or longer for other ranges",
        ));
    }
    if dimensions.len() > 4 {
        return Err(bad("`dimensions`: at most 4"));
    }
    if dimensions
        .iter()
        .filter(|d| matches!(d.kind, DimKind::Time(_)))
        .count()
        > 1
    {
        return Err(bad("`dimensions`: at most one time dimension"));
    }
    let mut filters = Vec::new();
    let mut budget = Budget::default();
    for (i, f) in raw.filters.iter().enumerate() {
        filters.push(filter(f, &format!("filters[{i}]"), 0, false, &mut budget)?);
    }
    let filter = match filters.len() {
        0 => None,
        1 => filters.pop(),
        _ => Some(Filter::And(filters)),
    };
    if let Some(f) = &filter {
        for dim in f.dims() {
            if dim.kind == DimKind::Goal {
                for c in f.conds() {
                    if let Filter::Cond {
                        dim: d, values, op, ..
                    } = c
                    {
                        if d.kind == DimKind::Goal && matches!(op, Op::Is | Op::IsNot) {
                            if let Some(v) = values
                                .iter()
                                .find(|v| !site.goals.iter().any(|g| &g.name == *v))
                            {
                                return Err(bad(format!(
                                    "`filters`: {v:?} is not a goal of this site"
                                )));
                            }
                        }
                    }
                }
            }
        }
    }
    check_metrics(&metrics, &dimensions, &budget)?;
    let ncols = dimensions.len() + metrics.len();
    let mut order_by = Vec::new();
    for (i, o) in raw.order_by.unwrap_or_default().iter().enumerate() {
        let pair = o.as_array().filter(|p| p.len() == 2).ok_or_else(|| {
            bad(format!(
                "`order_by[{i}]`: use [\"metric or dimension\", \"asc\"|\"desc\"]"
            ))
        })?;
        let name = pair[0].as_str().unwrap_or_default();
        let desc = match pair[1].as_str() {
            Some("desc") => true,
            Some("asc") => false,
            _ => {
                return Err(bad(format!(
                    "`order_by[{i}]`: direction must be \"asc\" or \"desc\""
                )))
            }
        };
        let idx = dimensions
            .iter()
            .position(|d| d.name == name)
            .or_else(|| {
                metrics
                    .iter()
                    .position(|m| m.name() == name)
                    .map(|p| p + dimensions.len())
            })
            .ok_or_else(|| {
                bad(format!(
                    "`order_by[{i}]`: {name:?} is not one of the query's metrics or dimensions"
                ))
            })?;
        order_by.push((idx, desc));
    }
    // Plausible's default order: the time dimension ascending, then the first metric
    // descending; Veil then breaks ties by the other dimensions, ascending, so pages are
    // stable.
    if order_by.is_empty() {
        if let Some(t) = dimensions
            .iter()
            .position(|d| matches!(d.kind, DimKind::Time(_)))
        {
            order_by.push((t, false));
        }
        if !dimensions.is_empty() {
            order_by.push((dimensions.len(), true));
        }
        for i in 0..dimensions.len() {
            if !order_by.iter().any(|(j, _)| *j == i) {
                order_by.push((i, false));
            }
        }
    }
    debug_assert!(order_by.iter().all(|(i, _)| *i < ncols));
    let include = raw.include.unwrap_or(Include {
        imports: None,
        time_labels: None,
        total_rows: None,
        comparisons: None,
        rollups: None,
    });
    if include.time_labels == Some(true)
        && !dimensions
            .iter()
            .any(|d| matches!(d.kind, DimKind::Time(_)))
    {
        return Err(bad(
            "`include.time_labels` needs a time dimension (e.g. \"time:day\") in `dimensions`",
        ));
    }
    let compare = include.comparisons.as_ref().map(compare_of).transpose()?;
    if compare.is_some() && (realtime || last24h) {
        return Err(bad(
            "`include.comparisons` is not available for realtime and 24h",
        ));
    }
    let (limit, offset) = pagination(raw.pagination.as_ref())?;
    let q = Query {
        asked_filter: filter.clone(),
        today,
        site: site_id,
        tz: tz.name().to_string(),
        metrics,
        dimensions,
        filter,
        order_by,
        from,
        to,
        start,
        end,
        realtime,
        compare,
        time_labels: include.time_labels.unwrap_or(false),
        total_rows: include.total_rows.unwrap_or(false),
        rollups: include.rollups.unwrap_or(true),
        limit,
        offset,
        imports: include.imports == Some(true),
        unrounded: false,
        bounded: false,
        event_goals: site
            .goals
            .iter()
            .filter_map(|g| Some((g.name.clone(), g.event_name.clone()?)))
            .collect(),
        revenue_goals: site
            .goals
            .iter()
            .filter(|g| g.currency.is_some() && g.event_name.is_some())
            .cloned()
            .collect(),
    };
    if site.child_directed {
        check_child_query(&q)?;
    }
    source::check(&q)?;
    Ok(q)
}

/// `pagination`: `{"limit": 1..=MAX_LIMIT, "offset": 0..}`, both optional (null is absent).
fn pagination(v: Option<&Value>) -> Result<(u32, u32), Error> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok((MAX_LIMIT, 0));
    };
    let obj = v
        .as_object()
        .ok_or_else(|| bad("`pagination` is an object like {\"limit\": 100, \"offset\": 0}"))?;
    if let Some(k) = obj.keys().find(|k| *k != "limit" && *k != "offset") {
        return Err(bad(format!(
            "`pagination.{k}`: unknown field; pagination takes limit and offset"
        )));
    }
    let limit = match obj.get("limit").filter(|l| !l.is_null()) {
        None => MAX_LIMIT,
        Some(l) => l
            .as_u64()
            .filter(|n| (1..=u64::from(MAX_LIMIT)).contains(n))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                bad(format!(
                    "`pagination.limit` must be a whole number 1..={MAX_LIMIT} (got {l})"
                ))
            })?,
    };
    let offset = match obj.get("offset").filter(|o| !o.is_null()) {
        None => 0,
        Some(o) => o
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                bad(format!(
                    "`pagination.offset` must be a whole number from 0 to {} (got {o})",
                    u32::MAX
                ))
            })?,
    };
    Ok((limit, offset))
}

/// Plausible's rules on which metrics go with which dimensions and filters (its query
/// builder's metric checks and its table decider's metric/dimension conflicts), so a question
/// Plausible refuses is refused here too rather than answered with numbers that mean something
/// else. Veil allows more where it answers with a meaning of its own: `time_on_page` without a
/// page (the mean engaged time per pageview of the pages selected; the dashboard's top stats
/// and chart ask it so), `views_per_visit` by time (Plausible's v1 timeseries has it),
/// `pageviews` and `events` by entry or exit page (counted from whole visits), and its own
/// metrics (`sessions_per_user`, `dau`, app percentiles).
fn check_metrics(metrics: &[Metric], dims: &[Dim], filters: &Budget) -> Result<(), Error> {
    let has_page_dim = dims.iter().any(|d| d.name == "event:page");
    for (i, m) in metrics.iter().enumerate() {
        let name = m.name();
        match m {
            Metric::ConversionRate | Metric::GroupConversionRate => {
                if !dims.iter().any(|d| d.kind == DimKind::Goal) && !filters.goal {
                    return Err(bad(format!(
                        "`metrics[{i}]`: {name} needs an event:goal dimension or filter (a goal inside has_done/has_not_done does not count)"
                    )));
                }
                if let Some(f) = &filters.nested_prop {
                    return Err(bad(format!(
                        "{f}[1]: with {name}, custom property filters (event:props:…) can only be used at the top level (one of the `filters`, not inside and/or/not/has_done)"
                    )));
                }
            }
            Metric::ExitRate if !dims.iter().any(|d| d.name == "visit:exit_page") => {
                return Err(bad(format!(
                    "`metrics[{i}]`: {name} needs a visit:exit_page dimension (the rate is each exit page's)"
                )));
            }
            Metric::ScrollDepth if !has_page_dim && !filters.top_page => {
                return Err(bad(format!(
                    "`metrics[{i}]`: {name} needs an event:page dimension or a top-level event:page filter"
                )));
            }
            Metric::ViewsPerVisit if filters.page => {
                return Err(bad(format!(
                    "`metrics[{i}]`: {name} cannot be asked with a filter on event:page (a visit's pageviews are not a page's); ask pageviews and visits"
                )));
            }
            // Veil allows a time dimension: Plausible's v1 timeseries (answered by this
            // parser too) reports views per visit per bucket.
            Metric::ViewsPerVisit => {
                if let Some((j, d)) = dims
                    .iter()
                    .enumerate()
                    .find(|(_, d)| !matches!(d.kind, DimKind::Time(_)))
                {
                    return Err(bad(format!(
                        "`metrics[{i}]`: {name} cannot be broken down by {:?} (`dimensions[{j}]`); ask pageviews and visits by it",
                        d.name
                    )));
                }
            }
            _ => {}
        }
    }
    // Visit (session) metrics by event dimensions: a visit has many pages, names, goals and
    // props, so "bounce rate by event name" has no meaning; event:page alone is the exception
    // Plausible makes (the visits that viewed the page).
    let event_dims: Vec<(usize, &Dim)> = dims
        .iter()
        .enumerate()
        .filter(|(_, d)| d.level() == Level::Event)
        .collect();
    let page_only = event_dims.len() == 1 && event_dims[0].1.name == "event:page";
    let session: Vec<&str> = metrics
        .iter()
        .filter(|m| {
            matches!(
                m,
                Metric::BounceRate | Metric::VisitDuration | Metric::ViewsPerVisit
            )
        })
        .map(|m| m.name())
        .collect();
    if !page_only && !session.is_empty() {
        if let Some((j, d)) = event_dims.iter().find(|(_, d)| d.name != "event:page") {
            return Err(bad(format!(
                "`dimensions[{j}]`: visit metric(s) {} cannot be broken down by the event dimension {:?}; of the event dimensions only event:page, alone, goes with them",
                session.join(", "),
                d.name
            )));
        }
    }
    // Event metrics by the entry or exit page of the visit: the same in reverse.
    let session_dims = dims
        .iter()
        .enumerate()
        .find(|(_, d)| matches!(d.name.as_str(), "visit:entry_page" | "visit:exit_page"));
    let event: Vec<&str> = metrics
        .iter()
        .filter(|m| matches!(m, Metric::TimeOnPage | Metric::ScrollDepth))
        .map(|m| m.name())
        .collect();
    if let Some((j, d)) = session_dims {
        if !page_only && !event.is_empty() {
            return Err(bad(format!(
                "`dimensions[{j}]`: event metric(s) {} cannot be broken down by {:?} (a visit's entry or exit page is not the page the event was on)",
                event.join(", "),
                d.name
            )));
        }
    }
    Ok(())
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
    const ALLOWED: [&str; 13] = [
        "event:page",
        "event:name",
        "event:hostname",
        "visit:country",
        "visit:device",
        "visit:browser",
        "visit:os",
        "time",
        "time:hour",
        "time:day",
        "time:week",
        "time:month",
        "event:goal",
    ];
    let filter_dims = q.filter.as_ref().map(|f| f.dims()).unwrap_or_default();
    if let Some(d) = q
        .dimensions
        .iter()
        .chain(filter_dims)
        .find(|d| !ALLOWED.contains(&d.name.as_str()))
    {
        return Err(bad(format!(
            "`dimensions`: {:?} is not collected for a child-directed site",
            d.name
        )));
    }
    Ok(())
}
