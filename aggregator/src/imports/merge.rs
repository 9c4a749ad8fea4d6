//! `include.imports: true`: which Stats API questions imported numbers can answer, and their
//! rows, added to Veil's own per row before the privacy module publishes them (the sum is one
//! number: noise and thresholds, or k-anonymity in exact mode, apply to it).
//!
//! As Plausible does: counts are summed per row (visitors too: an imported visitor and a
//! Veil visitor of the same day are two), and rates are divided out of summed parts (bounce
//! rate = (bounces + bounces) ÷ (visits + visits), visit duration and views per visit alike).
//! Each question reads one kind of imported row ([`super::plausible`]):
//!
//! - no dimension and no filter: `visitors` (events there are its pageviews, as Plausible's);
//! - `visit:source`, `visit:referrer`, `visit:utm_*`: `sources`; `event:page`,
//!   `event:hostname`: `pages`; `visit:entry_page`, `visit:exit_page`: `entry_pages`,
//!   `exit_pages`; `visit:country`, `visit:region`, `visit:city`: `locations` (and
//!   `visit:region_name`, `visit:city_name`: the imported code or id named from Veil's places
//!   table; filters on the names are not merged);
//!   `visit:device`; `visit:browser`, `visit:browser_version`; `visit:os`, `visit:os_version`;
//!   `event:goal`: `custom_events` (goals completed by a custom event, matched on the event's
//!   name), and, without a filter, `pages` for goals completed by a pageview (the imported
//!   pages their pattern matches: visitors, and pageviews as events);
//! - with `time:day`, `time:week` or `time:month` too (imported rows are daily);
//! - filters on the dimensions of that same kind only (`is`, `is_not`, `contains`,
//!   `contains_not`, `matches`, `matches_not`, and/or/not of them);
//! - metrics `visitors`, `visits`, `pageviews`, `events`, `percentage` (of the merged total),
//!   `bounce_rate`, `visit_duration`, `views_per_visit` (by page: the counts only; by goal:
//!   `visitors`, `events`, `percentage`).
//!
//! Anything else (hours, `conversion_rate`, `group_conversion_rate`, engagement and revenue metrics,
//! behavioural filters, dimensions an export does not carry such as `visit:channel`, a
//! filter on another kind's dimension, realtime) is answered without imported numbers and
//! `meta.imports_skip_reason` = `"unsupported_query"` (`"unsupported_interval"` for hours);
//! a site without imported days in the range: `"no_imported_data"` — Plausible's names.

use std::collections::HashMap;

use chrono::Datelike as _;
use serde_json::Value;
use veil_schemas::sql;
use veil_schemas::sql::{date, lit, Sql};

use crate::db::{count, fetch, number};
use crate::privacy::{Extra, Part};
use crate::query::dates::week_label;
use crate::query::{glob_to_regex, DimKind, Filter, Metric, Op, Query, TimeBucket};
use crate::site::SiteView;
use crate::Error;

/// Why a question is answered without imported numbers (`meta.imports_skip_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Its metrics, dimensions or filters cannot be merged.
    Unsupported,
    /// Hourly buckets (imported rows are daily).
    Interval,
    /// The site has no imported day in the range.
    NoData,
}

impl Skip {
    /// Plausible's name of the reason.
    pub fn reason(self) -> &'static str {
        match self {
            Skip::Unsupported => "unsupported_query",
            Skip::Interval => "unsupported_interval",
            Skip::NoData => "no_imported_data",
        }
    }

    /// The warning in words.
    pub fn warning(self) -> &'static str {
        match self {
            Skip::Unsupported => {
                "imported data is not included: this question's metrics, dimensions or filters \
                 cannot be answered from imported daily aggregates"
            }
            Skip::Interval => "imported data is not included: it is daily, not hourly",
            Skip::NoData => {
                "this site has no imported data in the range: the numbers are Veil's own"
            }
        }
    }
}

/// How one dimension of the question reads imported rows.
#[derive(Debug, Clone, PartialEq)]
enum Label {
    Column(&'static str),
    /// `visit:region_name` / `visit:city_name`: the imported code or GeoNames id (Plausible's
    /// export carries no names) named from Veil's places table (`veil_schemas::places`).
    PlaceName(&'static str),
    Time(TimeBucket),
    /// The site's goals: `(event name, goal)` of those a custom event completes, `(page
    /// regex, goal)` of those a pageview completes.
    Goal {
        events: Vec<(String, String)>,
        pages: Vec<(String, String)>,
    },
}

/// A question imported numbers can answer: the kind of row it reads, what each dimension
/// is, and its filter as SQL over `imported`.
#[derive(Debug, Clone)]
pub struct Plan {
    kind: &'static str,
    labels: Vec<Label>,
    filter: Option<Sql>,
}

/// The kind and column of a dimension an export carries.
fn column(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "visit:source" => ("sources", "source"),
        "visit:referrer" => ("sources", "referrer"),
        "visit:utm_source" => ("sources", "utm_source"),
        "visit:utm_medium" => ("sources", "utm_medium"),
        "visit:utm_campaign" => ("sources", "utm_campaign"),
        "visit:utm_content" => ("sources", "utm_content"),
        "visit:utm_term" => ("sources", "utm_term"),
        "event:page" => ("pages", "page"),
        "event:hostname" => ("pages", "hostname"),
        "visit:entry_page" => ("entry_pages", "entry_page"),
        "visit:exit_page" => ("exit_pages", "exit_page"),
        "visit:country" => ("locations", "country"),
        "visit:region" => ("locations", "region"),
        "visit:city" => ("locations", "city"),
        "visit:device" => ("devices", "device"),
        "visit:browser" => ("browsers", "browser"),
        "visit:browser_version" => ("browsers", "browser_version"),
        "visit:os" => ("operating_systems", "os"),
        "visit:os_version" => ("operating_systems", "os_version"),
        _ => return None,
    })
}

/// A stored column as the report labels it: Veil's own labels for the same values (an empty
/// source is `Direct / None`, as in the query compiler's `visit:source`; Plausible exports
/// direct visits with an empty source too).
fn label_expr(col: &'static str) -> Sql {
    // Imported values are Plausible's words already; an empty one reads as Veil's own empty
    // values do (`Direct / None`, `(not set)`: query::labels), so both land in one row.
    match crate::query::labels::empty_label(col) {
        Some(empty) => sql!(
            "if({} = '', {}, {})",
            Sql::new(col),
            lit(empty),
            Sql::new(col)
        ),
        None => Sql::new(col),
    }
}

/// The name of an imported region code or city id, as Veil's own rows answer
/// `visit:region_name` / `visit:city_name`; the value itself when the table does not know it.
fn place_name(col: &str, cell: &str) -> String {
    let name = match col {
        "region" => veil_schemas::places::region_name(cell),
        _ => cell.parse().ok().and_then(veil_schemas::places::city_name),
    };
    name.unwrap_or(cell).to_string()
}

/// Whether imported rows of `kind` can give metric `m`.
fn serves(kind: &str, m: Metric) -> bool {
    use Metric::*;
    match kind {
        "custom_events" => matches!(m, Visitors | Events | Percentage),
        "pages" => matches!(m, Visitors | Visits | Pageviews | Events | Percentage),
        _ => matches!(
            m,
            Visitors
                | Visits
                | Pageviews
                | Events
                | Percentage
                | BounceRate
                | VisitDuration
                | ViewsPerVisit
        ),
    }
}

/// Sets `kind` to `k`, or fails when it is another one already.
fn same(kind: &mut Option<&'static str>, k: &'static str) -> Result<(), Skip> {
    match kind {
        Some(x) if *x != k => Err(Skip::Unsupported),
        _ => {
            *kind = Some(k);
            Ok(())
        }
    }
}

/// The plan of `q`, or why imported numbers cannot answer it.
pub fn plan(q: &Query, site: &SiteView) -> Result<Plan, Skip> {
    if q.realtime {
        return Err(Skip::Unsupported);
    }
    let event_goals: Vec<(String, String)> = site
        .goals
        .iter()
        .filter_map(|g| Some((g.event_name.clone()?, g.name.clone())))
        .collect();
    let mut kind: Option<&'static str> = None;
    let mut labels = Vec::new();
    for d in &q.dimensions {
        match &d.kind {
            DimKind::Time(TimeBucket::Hour | TimeBucket::Minute) => return Err(Skip::Interval),
            DimKind::Time(b) => labels.push(Label::Time(*b)),
            DimKind::Goal => {
                same(&mut kind, "custom_events")?;
                let pages = site
                    .goals
                    .iter()
                    .filter(|g| g.event_name.is_none())
                    .filter_map(|g| Some((glob_to_regex(g.page_path.as_ref()?), g.name.clone())))
                    .collect();
                labels.push(Label::Goal {
                    events: event_goals.clone(),
                    pages,
                });
            }
            DimKind::PlaceName(c) => {
                same(&mut kind, "locations")?;
                labels.push(Label::PlaceName(c));
            }
            _ => {
                let (k, c) = column(&d.name).ok_or(Skip::Unsupported)?;
                same(&mut kind, k)?;
                labels.push(Label::Column(c));
            }
        }
    }
    let filter = match &q.filter {
        Some(f) => Some(filter_sql(f, &mut kind, &event_goals)?),
        None => None,
    };
    let kind = kind.unwrap_or("visitors");
    if !q.metrics.iter().all(|m| serves(kind, *m)) {
        return Err(Skip::Unsupported);
    }
    Ok(Plan {
        kind,
        labels,
        filter,
    })
}

/// A filter as SQL over `imported` rows of one kind (set in `kind`).
fn filter_sql(
    f: &Filter,
    kind: &mut Option<&'static str>,
    goals: &[(String, String)],
) -> Result<Sql, Skip> {
    let group = |parts: &[Filter], sep: &'static str, kind: &mut Option<&'static str>| {
        let v = parts
            .iter()
            .map(|p| filter_sql(p, kind, goals))
            .collect::<Result<Vec<_>, _>>()?;
        Ok::<Sql, Skip>(Sql::tuple([Sql::join(v, sep)]))
    };
    match f {
        Filter::And(v) => group(v, " AND ", kind),
        Filter::Or(v) => group(v, " OR ", kind),
        Filter::Not(x) => Ok(sql!("NOT ({})", filter_sql(x, kind, goals)?)),
        Filter::HasDone { .. } => Err(Skip::Unsupported),
        Filter::Cond {
            op,
            dim,
            values,
            case_sensitive,
        } => {
            let (col, values): (&'static str, Vec<String>) = if dim.kind == DimKind::Goal {
                same(kind, "custom_events")?;
                if !matches!(op, Op::Is | Op::IsNot) {
                    return Err(Skip::Unsupported);
                }
                let events = values
                    .iter()
                    .map(|v| {
                        goals
                            .iter()
                            .find(|(_, g)| g == v)
                            .map(|(e, _)| e.clone())
                            .ok_or(Skip::Unsupported)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                ("name", events)
            } else {
                let (k, c) = column(&dim.name).ok_or(Skip::Unsupported)?;
                same(kind, k)?;
                (c, values.clone())
            };
            let subject = if *case_sensitive {
                label_expr(col)
            } else {
                sql!("lowerUTF8({})", label_expr(col))
            };
            let value = |v: &str| {
                if *case_sensitive {
                    lit(v)
                } else {
                    lit(&v.to_lowercase())
                }
            };
            let one = |v: &String| match op {
                Op::Is | Op::IsNot => sql!("{} = {}", subject.clone(), value(v)),
                Op::Contains | Op::ContainsNot => {
                    sql!("positionUTF8({}, {}) > 0", subject.clone(), value(v))
                }
                Op::Matches | Op::MatchesNot => sql!("match({}, {})", label_expr(col), lit(v)),
            };
            let any = Sql::tuple([Sql::join(values.iter().map(one), " OR ")]);
            Ok(if op.negated() {
                sql!("NOT {}", any)
            } else {
                any
            })
        }
    }
}

/// Whether `site` has imported rows between `q`'s first and last day.
pub async fn present(client: &clickhouse::Client, q: &Query) -> Result<bool, Error> {
    let n = count(
        client,
        &sql!(
            "SELECT count() FROM imported WHERE site = {} AND kind = 'visitors' AND date >= {} \
             AND date <= {} AND import_id IN (SELECT import_id FROM imports WHERE site = {})",
            lit(&q.site),
            date(q.from),
            date(q.to),
            lit(&q.site)
        ),
    )
    .await?;
    Ok(n > 0)
}

/// The first day of `site`'s imported data, if any.
pub async fn first_day(
    client: &clickhouse::Client,
    site: &str,
) -> Result<Option<chrono::NaiveDate>, Error> {
    let rows = fetch(
        client,
        &sql!(
            "SELECT toString(min(date)), count() FROM imported WHERE site = {} \
             AND import_id IN (SELECT import_id FROM imports WHERE site = {})",
            lit(site),
            lit(site)
        ),
    )
    .await?;
    Ok(rows
        .first()
        .filter(|r| r.get(1).and_then(number).unwrap_or(0.0) > 0.0)
        .and_then(|r| r.get(0))
        .and_then(Value::as_str)
        .and_then(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()))
}

/// The imported parts of each row of `q` (labels as the report's: time buckets as
/// [`Query::time_labels`] writes them, goals by name), for [`crate::privacy::Release::rows_with`].
/// Goals completed by a pageview count the imported pages their pattern matches (visitors and
/// pageviews, as Plausible's), when no filter restricts the goals.
pub async fn rows(
    client: &clickhouse::Client,
    q: &Query,
    plan: &Plan,
) -> Result<Vec<Extra>, Error> {
    let mut out: Vec<Extra> = Vec::new();
    read(client, q, plan, Pass::Main, &mut out).await?;
    if plan.filter.is_none() {
        for l in &plan.labels {
            if let Label::Goal { pages, .. } = l {
                for (regex, goal) in pages {
                    read(client, q, plan, Pass::PageGoal { regex, goal }, &mut out).await?;
                }
            }
        }
    }
    Ok(out)
}

/// Which imported rows one read takes.
#[derive(Clone, Copy)]
enum Pass<'a> {
    /// The plan's kind and filter; a goal dimension from custom events' names.
    Main,
    /// The imported pages a pageview goal's pattern matches, labelled with the goal.
    PageGoal { regex: &'a str, goal: &'a str },
}

/// Adds the parts of the imported rows `pass` reads to `out`, labelled as `plan`'s dimensions.
async fn read(
    client: &clickhouse::Client,
    q: &Query,
    plan: &Plan,
    pass: Pass<'_>,
    out: &mut Vec<Extra>,
) -> Result<(), Error> {
    let (kind, cond, goal) = match pass {
        Pass::Main => (plan.kind, plan.filter.clone(), Sql::new("name")),
        Pass::PageGoal { regex, goal } => (
            "pages",
            Some(sql!("match(page, {})", lit(regex))),
            lit(goal),
        ),
    };
    let goals_of = |cell: &str| -> Vec<String> {
        match pass {
            Pass::PageGoal { goal, .. } => vec![goal.to_string()],
            Pass::Main => plan
                .labels
                .iter()
                .find_map(|l| match l {
                    Label::Goal { events, .. } => Some(
                        events
                            .iter()
                            .filter(|(e, _)| e == cell)
                            .map(|(_, g)| g.clone())
                            .collect(),
                    ),
                    _ => None,
                })
                .unwrap_or_default(),
        }
    };
    let cols: Vec<Sql> = plan
        .labels
        .iter()
        .map(|l| match l {
            Label::Column(c) | Label::PlaceName(c) => label_expr(c),
            Label::Time(_) => Sql::new("toString(date)"),
            Label::Goal { .. } => goal.clone(),
        })
        .collect();
    let mut filter = sql!(
        "site = {} AND kind = {} AND date >= {} AND date <= {} \
         AND import_id IN (SELECT import_id FROM imports WHERE site = {})",
        lit(&q.site),
        lit(kind),
        date(q.from),
        date(q.to),
        lit(&q.site)
    );
    if let Some(c) = cond {
        filter = sql!("{} AND {}", filter, c);
    }
    let sums = Sql::new(
        "sum(visitors), sum(visits), sum(pageviews), sum(bounces), sum(visit_duration), sum(events)",
    );
    let stmt = if cols.is_empty() {
        sql!("SELECT {} FROM imported WHERE {}", sums, filter)
    } else {
        let g = Sql::join(cols, ", ");
        sql!(
            "SELECT {}, {} FROM imported WHERE {} GROUP BY {}",
            g.clone(),
            sums,
            filter,
            g
        )
    };
    let nl = plan.labels.len();
    for r in fetch(client, &stmt).await? {
        let Some(c) = r.as_array() else { continue };
        if c.len() != nl + 6 {
            continue;
        }
        let n = |i: usize| c.get(nl + i).and_then(number).unwrap_or(0.0);
        // Custom events count events; every other kind its pageviews (Plausible's `events`
        // of imported visitors and pages).
        let events = if kind == "custom_events" { n(5) } else { n(2) };
        let parts = HashMap::from([
            (Part::Visitors, n(0)),
            (Part::Visits, n(1)),
            (Part::Pageviews, n(2)),
            (Part::VisitPageviews, n(2)),
            (Part::Bounces, n(3)),
            (Part::VisitSeconds, n(4)),
            (Part::Events, events),
        ]);
        // Each label, or several (one event name can complete several goals); none: not a
        // row of the report.
        let mut keys: Vec<Vec<String>> = vec![Vec::new()];
        for (i, l) in plan.labels.iter().enumerate() {
            let cell = c.get(i).and_then(Value::as_str).unwrap_or_default();
            let options: Vec<String> = match l {
                Label::Column(_) => vec![cell.to_string()],
                Label::PlaceName(c) => vec![place_name(c, cell)],
                Label::Time(b) => {
                    // A day that does not parse is no row (ClickHouse writes dates so).
                    chrono::NaiveDate::parse_from_str(cell, "%Y-%m-%d")
                        .map(|d| match b {
                            TimeBucket::Week => week_label(d, q.from),
                            TimeBucket::Month => d.with_day0(0).unwrap_or(d),
                            _ => d,
                        })
                        .map(|d| d.format("%Y-%m-%d").to_string())
                        .into_iter()
                        .collect()
                }
                Label::Goal { .. } => goals_of(cell),
            };
            keys = keys
                .into_iter()
                .flat_map(|k| {
                    options.iter().map(move |o| {
                        let mut k = k.clone();
                        k.push(o.clone());
                        k
                    })
                })
                .collect();
        }
        for k in keys {
            match out.iter_mut().find(|(d, _)| *d == k) {
                Some((_, p)) => {
                    for (part, v) in &parts {
                        *p.entry(*part).or_default() += v;
                    }
                }
                None => out.push((k, parts.clone())),
            }
        }
    }
    Ok(())
}
