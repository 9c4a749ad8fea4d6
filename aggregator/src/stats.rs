//! Runs one Stats API query for one site and shapes the answer: parse and check it
//! ([`crate::query`]), run its SQL over the builds reports may read ([`crate::builds`],
//! through [`crate::db`]), apply k-anonymity and the differencing guard, add comparisons and conversion rates, and
//! shape the Plausible-v2 response (or CSV).
//!
//! k-anonymity, as applied here:
//! - a breakdown row with fewer than k visitors is folded, in SQL, into one row labelled
//!   `(other: N rows under k=K)` whose visitors are counted exactly over the union of the folded
//!   rows; that row is shown only when it reaches k itself (additive metrics are summed,
//!   rates are `null`), and `meta.folded_rows` is N only then (else 0: how many small rows
//!   exist is itself a fact about them);
//! - a time bucket (or a total) of 1 to k−1 visitors has its metrics replaced by `null` (one of
//!   nobody shows its zeros: it describes no one); a row of a time
//!   series broken down by another dimension too (`["time:hour", "visit:country"]`) is not
//!   folded, and under k it is dropped, label and all (its label alone would say "someone from
//!   Iceland at 03:00");
//! - a query with filters returns no numbers at all and `meta.too_few_visitors = true` unless
//!   the visitors its filters select (F) reach k *and* those they leave out (T − F, T being the
//!   same query without filters) are none or reach k too, so neither the filtered group nor its
//!   complement can be a small group isolated by subtraction (the differencing guard; with
//!   `conversion_rate` or `group_conversion_rate` the denominator's filter, goal and top-level
//!   property conditions taken out, is held to the same rule).
//!
//! For child-directed sites (no visitor hash) event counts take the place of visitors.
//!
//! A query ClickHouse stops at one of the report client's bounds ([`crate::db`]: memory,
//! time, rows of the answer) is answered with [`Error::TooExpensive`] naming its filters, dimensions and period in
//! words ([`too_expensive`]), never with ClickHouse's text. A query that must read raw events
//! (sources `events` and `joined`) is refused the same way before it runs when its site has
//! more than [`MAX_RAW_EVENTS`] events in its range ([`preflight`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::builds::{Builds, TodaySnapshots};
use crate::db::number;
use crate::imports::merge;
use crate::privacy;
use crate::query::expr::additive;
use crate::query::{self, Dim, DimKind, Filter, Metric, Op, Query};
use crate::site::SiteView;
use crate::snapshot::Snapshots;
use crate::Error;

use crate::db::fetch;
use crate::query::Source;
use veil_schemas::sql;
use veil_schemas::sql::{lit, utc};

/// The most raw events one question may read (sources `events` and `joined`): past it the
/// question is refused before it runs ([`preflight`]) rather than after [`crate::db`]'s
/// bounds stop it. 100 million: issue 21's filtered questions over 10 million raw events took
/// 7 to 12 s on 2 cores, so ten times as many cannot finish inside
/// [`crate::MAX_EXECUTION_SECS`]; a shorter range, or prepared tables, answer instead.
pub const MAX_RAW_EVENTS: u64 = 100_000_000;

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

fn json_number(x: Option<f64>) -> Value {
    match x {
        None => Value::Null,
        Some(x) if x.fract() == 0.0 && x.abs() < 9e15 => json!(x as i64),
        Some(x) => json!(x),
    }
}

fn text(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// One report row before shaping.
#[derive(Debug, Clone)]
struct Row {
    dims: Vec<String>,
    metrics: Vec<Option<f64>>,
    k: f64,
    /// Folded rows this row stands for (0: an ordinary row).
    folded: u64,
}

impl Row {
    /// A row the privacy module published: `(dimensions, metrics, k)`, folding none.
    fn published((dims, metrics, k): (Vec<String>, Vec<Option<f64>>, f64)) -> Self {
        Row {
            dims,
            metrics,
            k,
            folded: 0,
        }
    }
}

/// The rows of one query, folded.
struct Report {
    rows: Vec<Row>,
    folded: u64,
    suppressed: bool,
    total_k: Option<f64>,
}

impl Report {
    /// The answer the differencing guard withholds: no row, marked suppressed.
    fn withheld() -> Self {
        Report {
            rows: Vec::new(),
            folded: 0,
            suppressed: true,
            total_k: None,
        }
    }
}

async fn report(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    builds: &mut Builds,
) -> Result<Report, Error> {
    let kmin = site.min_visitors;
    let built = builds.for_query(client, site, q).await?;
    let foldable = !q.dimensions.is_empty() && q.time_bucket().is_none();
    let sql = query::assemble::sql(q, site, &built, foldable.then_some(kmin));
    let raw = match builds
        .screens()
        .filter(|_| crate::screen::screen_member(q, site))
    {
        Some(screens) => {
            let heavy = builds.heavy();
            let alone = async {
                let _place = crate::cost::Heavy::place(heavy).await?;
                fetch(client, &sql).await
            };
            screens
                .rows(
                    crate::screen::Asked {
                        client,
                        site,
                        q,
                        built: &built,
                        kmin,
                        heavy,
                        clamp: None,
                    },
                    alone,
                )
                .await?
        }
        None => fetch(client, &sql).await?,
    };
    let nd = q.dimensions.len();
    let nm = q.metrics.len();
    // A row labelled by anything but its time bucket names a group: under k it is dropped.
    let labelled = q
        .dimensions
        .iter()
        .any(|d| !matches!(d.kind, DimKind::Time(_)));
    let mut rows = Vec::new();
    let mut folded = 0;
    let mut suppressed = false;
    for r in raw {
        let Some(cells) = r.as_array() else { continue };
        if foldable {
            // shown, g…, o…, ok, n
            if cells.len() != 1 + nd + nm + 2 {
                continue;
            }
            let shown = number(&cells[0]) == Some(1.0);
            let k = number(&cells[1 + nd + nm]).unwrap_or(0.0);
            let n = number(&cells[2 + nd + nm]).unwrap_or(0.0) as u64;
            if shown {
                rows.push(Row {
                    dims: cells[1..1 + nd].iter().map(text).collect(),
                    metrics: cells[1 + nd..1 + nd + nm].iter().map(number).collect(),
                    k,
                    folded: 0,
                });
            } else if k >= kmin as f64 {
                // Only a shown (other) row says how many rows it folds.
                folded = n;
                let label = format!("(other: {n} rows under k={kmin})");
                rows.push(Row {
                    dims: vec![label; nd],
                    metrics: q
                        .metrics
                        .iter()
                        .zip(&cells[1 + nd..1 + nd + nm])
                        .map(|(m, v)| {
                            if additive(*m)
                                || matches!(
                                    m,
                                    Metric::Visitors
                                        | Metric::ConversionRate
                                        | Metric::GroupConversionRate
                                        | Metric::Percentage
                                )
                            {
                                number(v)
                            } else {
                                None
                            }
                        })
                        .collect(),
                    k,
                    folded: n,
                });
            } else {
                suppressed = true;
            }
        } else {
            if cells.len() != nd + nm + 1 {
                continue;
            }
            let k = number(&cells[nd + nm]).unwrap_or(0.0);
            let mut metrics: Vec<Option<f64>> = cells[nd..nd + nm].iter().map(number).collect();
            // A total or time bucket of nobody (k = 0) describes no one: its zeros show. Only
            // one of 1..k visitors is hidden.
            if k < kmin as f64 && (labelled || k > 0.0) {
                suppressed = true;
                if labelled {
                    continue;
                }
                metrics = vec![None; nm];
            }
            rows.push(Row {
                dims: cells[..nd].iter().map(text).collect(),
                metrics,
                k,
                folded: 0,
            });
        }
    }
    let total_k = if nd == 0 {
        rows.first().map(|r| r.k)
    } else {
        None
    };
    Ok(Report {
        rows,
        folded,
        suppressed,
        total_k,
    })
}

/// The two conversion rates, each divided by its own denominator ([`conversion_base`]).
const CONVERSIONS: [Metric; 2] = [Metric::ConversionRate, Metric::GroupConversionRate];

/// The query's filter without its goal conditions and its top-level custom-property
/// conditions (Plausible's conversion-rate denominators leave both out: "visitors who did X
/// with property P" over "visitors").
fn strip_goals(f: &Filter) -> Result<Option<Filter>, Error> {
    strip_top(
        f,
        &|d| matches!(d.kind, DimKind::Goal | DimKind::Prop(_)),
        &|d| d.kind == DimKind::Goal,
        "`filters`: with conversion_rate, goal filters must be at the top level (not inside or/not)",
    )
}

/// `f` without its top-level conditions on a dimension `drop` takes (`None`: nothing left); a
/// condition below the top level on a dimension `top_only` takes is refused with `nested`.
fn strip_top(
    f: &Filter,
    drop: &dyn Fn(&Dim) -> bool,
    top_only: &dyn Fn(&Dim) -> bool,
    nested: &str,
) -> Result<Option<Filter>, Error> {
    Ok(match f {
        Filter::Cond { dim, .. } if drop(dim) => None,
        Filter::Cond { .. } => Some(f.clone()),
        Filter::And(v) => {
            let mut kept = Vec::new();
            for g in v {
                kept.extend(strip_top(g, drop, top_only, nested)?);
            }
            match kept.len() {
                0 => None,
                _ => Some(Filter::And(kept)),
            }
        }
        other if other.dims().iter().any(|d| top_only(d)) => {
            return Err(Error::BadRequest(nested.into()))
        }
        other => Some(other.clone()),
    })
}

/// A conversion rate's denominator question: visitors without the goal (and top-level
/// property) filter, by no dimension for `conversion_rate` (one total for every row, as
/// Plausible's) and by `q`'s non-goal dimensions for `group_conversion_rate`; with the
/// positions in `q` of the dimensions kept.
fn conversion_base(q: &Query, rate: Metric) -> Result<(Vec<usize>, Query), Error> {
    let keep: Vec<usize> = match rate {
        Metric::GroupConversionRate => q
            .dimensions
            .iter()
            .enumerate()
            .filter(|(_, d)| d.kind != DimKind::Goal)
            .map(|(i, _)| i)
            .collect(),
        _ => Vec::new(),
    };
    let mut base = q.clone();
    base.dimensions = keep
        .iter()
        .map(|i| q.dimensions[*i].clone())
        .collect::<Vec<Dim>>();
    base.metrics = vec![Metric::Visitors];
    base.filter = match &q.filter {
        Some(f) => strip_goals(f)?,
        None => None,
    };
    base.asked_filter = match &q.asked_filter {
        Some(f) => strip_goals(f)?,
        None => None,
    };
    base.order_by = (0..base.dimensions.len()).map(|i| (i, false)).collect();
    Ok((keep, base))
}

/// The query's filter without its top-level `visit:exit_page` conditions (an exit rate's
/// denominator counts every pageview of the page, not only those of visits that exited there:
/// Plausible's).
fn strip_exit_pages(f: &Filter) -> Result<Option<Filter>, Error> {
    let exit = |d: &Dim| d.name == "visit:exit_page";
    strip_top(
        f,
        &exit,
        &exit,
        "`filters`: with exit_rate, visit:exit_page filters must be at the top level (not inside or/not/has_done)",
    )
}

/// An exit rate's denominator question: pageviews by `q`'s dimensions with `visit:exit_page`
/// read as `event:page` (the same label in the same place), under `q`'s filters without their
/// exit page conditions ([`strip_exit_pages`]).
fn exit_base(q: &Query) -> Result<Query, Error> {
    let page = query::DIMENSIONS
        .iter()
        .find(|(n, _)| *n == "event:page")
        .map(|(n, k)| Dim {
            name: (*n).to_string(),
            kind: k.clone(),
        })
        .ok_or_else(|| Error::Internal("no event:page dimension".into()))?;
    let mut base = q.clone();
    base.dimensions = q
        .dimensions
        .iter()
        .map(|d| {
            if d.name == "visit:exit_page" {
                page.clone()
            } else {
                d.clone()
            }
        })
        .collect();
    base.metrics = vec![Metric::Pageviews];
    base.filter = match &q.filter {
        Some(f) => strip_exit_pages(f)?,
        None => None,
    };
    base.asked_filter = match &q.asked_filter {
        Some(f) => strip_exit_pages(f)?,
        None => None,
    };
    base.order_by = (0..base.dimensions.len()).map(|i| (i, false)).collect();
    Ok(base)
}

/// Fills in exit rates: each row's exits ÷ its page's pageviews ([`exit_base`]).
async fn exit_rates(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    rep: &mut Report,
    builds: &mut Builds,
) -> Result<(), Error> {
    let Some(ei) = q.metrics.iter().position(|m| *m == Metric::ExitRate) else {
        return Ok(());
    };
    let base = exit_base(q)?;
    let built = builds.for_query(client, site, &base).await?;
    let sql = query::assemble::sql(&base, site, &built, None);
    let lookup = keyed_totals(&fetch(client, &sql).await?, base.dimensions.len());
    for row in &mut rep.rows {
        let folded = row.folded > 0;
        let total = lookup.iter().find(|(k, _)| *k == row.dims).map(|(_, t)| *t);
        if let Some(slot) = row.metrics.get_mut(ei) {
            *slot = if folded { None } else { rate(*slot, total) };
        }
    }
    Ok(())
}

/// A row's rate from its converted visitors and its denominator, percent with one decimal;
/// 0 over an empty denominator (as Plausible's), `None` when either is unknown (withheld).
fn rate(converted: Option<f64>, total: Option<f64>) -> Option<f64> {
    match (converted, total) {
        (Some(c), Some(t)) if t > 0.0 => Some(((c * 1000.0 / t).round() / 10.0).min(100.0)),
        (Some(_), Some(_)) => Some(0.0),
        _ => None,
    }
}

/// Fills in conversion rates: visitors of the row ÷ the visitors of its denominator
/// ([`conversion_base`]).
async fn conversion_rates(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    rep: &mut Report,
    builds: &mut Builds,
) -> Result<(), Error> {
    for which in CONVERSIONS {
        let Some(ci) = q.metrics.iter().position(|m| *m == which) else {
            continue;
        };
        let (keep, base) = conversion_base(q, which)?;
        let built = builds.for_query(client, site, &base).await?;
        let sql = query::assemble::sql(&base, site, &built, None);
        let totals = fetch(client, &sql).await?;
        let lookup = keyed_totals(&totals, base.dimensions.len());
        for row in &mut rep.rows {
            let key: Vec<String> = keep
                .iter()
                .filter_map(|i| row.dims.get(*i).cloned())
                .collect();
            let folded = row.folded > 0;
            let Some(slot) = row.metrics.get_mut(ci) else {
                continue;
            };
            if folded {
                *slot = None;
                continue;
            }
            let total = lookup.iter().find(|(k, _)| *k == key).map(|(_, t)| *t);
            *slot = rate(*slot, total);
        }
    }
    Ok(())
}

/// `(the first nb cells as labels, the next as a number)` of each row; rows too short or
/// without a number are skipped.
fn keyed_totals(rows: &[Value], nb: usize) -> Vec<(Vec<String>, f64)> {
    rows.iter()
        .filter_map(|r| {
            let c = r.as_array()?;
            Some((c.get(..nb)?.iter().map(text).collect(), number(c.get(nb)?)?))
        })
        .collect()
}

/// Fills in `percentage`: the row's visitors ÷ all visitors with the same filters.
async fn percentages(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    rep: &mut Report,
    builds: &mut Builds,
) -> Result<(), Error> {
    let Some(pi) = q.metrics.iter().position(|m| *m == Metric::Percentage) else {
        return Ok(());
    };
    let mut t = q.clone();
    t.dimensions.clear();
    t.metrics = vec![Metric::Visitors];
    t.order_by.clear();
    let built = builds.for_query(client, site, &t).await?;
    let sql = query::assemble::sql(&t, site, &built, None);
    let rows = fetch(client, &sql).await?;
    let total = rows
        .first()
        .and_then(|r| r.as_array())
        .and_then(|c| c.first())
        .and_then(number)
        .unwrap_or(0.0);
    for slot in rep.rows.iter_mut().filter_map(|r| r.metrics.get_mut(pi)) {
        *slot = match *slot {
            Some(v) if total > 0.0 => Some((v * 1000.0 / total).round() / 10.0),
            _ => None,
        };
    }
    Ok(())
}

/// The differencing guard: whether `q`'s filters must not be answered because the visitors
/// (events, for a child-directed site) they select over the whole range, or those they leave
/// out, are a group under k. With `conversion_rate`, the denominator's filter (the goal
/// conditions taken out) is held to the same rule, since the rate reveals its count too.
pub async fn too_few(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    builds: &mut Builds,
) -> Result<bool, Error> {
    let plan = guard_plan(client, site, q, builds).await?;
    plan.too_few(
        client,
        site,
        builds.inflight(),
        builds.all_screens(),
        builds.heavy(),
    )
    .await
}

/// A guard count's question and builds, to gather with reports ([`crate::screen`]).
type Gatherable = (Query, Vec<query::Build>);

/// What the differencing guard counts for one question: the population of each filter held to
/// the rule, and the total they are taken from — as statements, so that the counting (which
/// needs no builds any more) can run beside the report ([`guarded`]).
#[derive(Debug, Default)]
struct GuardPlan {
    /// The populations of the filters held to the rule, in order, each with its question
    /// and builds when it may gather with the reports asked at once ([`crate::screen`]).
    selected: Vec<(sql::Sql, Option<Gatherable>)>,
    /// The total the complements are taken from (none without a filter).
    total: Option<sql::Sql>,
}

impl GuardPlan {
    /// Whether the question must be withheld: a population under k, or a complement that is
    /// neither empty nor k.
    /// `heavy`: the bound a statement shared with reports waits under.
    async fn too_few(
        &self,
        client: &clickhouse::Client,
        site: &SiteView,
        inflight: Option<&crate::db::Inflight>,
        screens: Option<&crate::screen::Screens>,
        heavy: Option<&crate::cost::Heavy>,
    ) -> Result<bool, Error> {
        let k = site.min_visitors;
        let screens = screens.filter(|s| s.on());
        let Some(total) = &self.total else {
            return Ok(false);
        };
        let mut t = None;
        for (sel, member) in &self.selected {
            let selected = match (screens, member) {
                // The filter's visitors are the total a report asked at once counts too.
                (Some(s), Some((fq, built))) => {
                    let asked = crate::screen::Asked {
                        client,
                        site,
                        q: fq,
                        built,
                        kmin: k,
                        heavy,
                        clamp: None,
                    };
                    let rows = s
                        .rows(asked, async { count_rows(client, inflight, sel).await })
                        .await?;
                    last_number(&rows)
                }
                _ => count(client, inflight, sel).await?,
            };
            if selected < k as f64 {
                return Ok(true);
            }
            let t = match t {
                Some(t) => t,
                None => *t.insert(count(client, inflight, total).await?),
            };
            if !complement_ok(selected, t, k) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The guard's statements for `q` (see [`too_few`]).
async fn guard_plan(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    builds: &mut Builds,
) -> Result<GuardPlan, Error> {
    let Some(f) = &q.filter else {
        return Ok(GuardPlan::default());
    };
    let mut filters = vec![Some(f.clone())];
    if q.metrics.iter().any(|m| CONVERSIONS.contains(m)) {
        let base = strip_goals(f)?;
        if base.as_ref() != Some(f) {
            filters.push(base);
        }
    }
    // An exit rate reveals its denominator's pageviews too: its filter is held to the rule.
    if q.metrics.contains(&Metric::ExitRate) {
        let base = strip_exit_pages(f)?;
        if base.as_ref() != Some(f) {
            filters.push(base);
        }
    }
    // T is counted by the same source as F: "f or not f" keeps every row and the filter's
    // dimensions. Sources may count a visitor whose visit crosses UTC midnight differently
    // (once over raw events, once per day in the daily rollup), which would otherwise make up
    // a small remainder that is not there.
    let mut all = q.clone();
    all.filter = Some(Filter::Or(vec![
        f.clone(),
        Filter::Not(Box::new(f.clone())),
    ]));
    // A filter the daily rollup's filtered rows answer is counted from `visits_daily`; so is
    // T then, unfiltered (the same per-day counting, and no visit row read).
    let mut probe = q.clone();
    probe.dimensions.clear();
    probe.metrics = vec![Metric::Visitors];
    if query::source(&probe, site.child_directed) == Source::VisitsDaily {
        all.filter = None;
    }
    let mut plan = GuardPlan {
        selected: Vec::new(),
        total: Some(population(client, site, &all, builds).await?),
    };
    for filter in filters.into_iter().flatten() {
        let mut fq = q.clone();
        fq.asked_filter = Some(filter.clone());
        fq.filter = Some(filter);
        let sql = population(client, site, &fq, builds).await?;
        let mut pq = fq.clone();
        pq.dimensions.clear();
        pq.metrics = vec![Metric::Visitors];
        pq.order_by.clear();
        let gathers = builds.all_screens().is_some_and(|s| s.on());
        let member = if gathers && crate::screen::screen_member(&pq, site) {
            Some((pq.clone(), builds.for_query(client, site, &pq).await?))
        } else {
            None
        };
        plan.selected.push((sql, member));
    }
    Ok(plan)
}

/// The report `make` computes, or `None` when the differencing guard withholds `q`'s answer.
/// The guard's counts and the report run at once (the dashboard's first screen waited for the
/// guard's two counts, then for its report: 0.3–0.9 s of a filtered screen at 10M events); a
/// withheld answer drops the report unread, and its error too — the answer is the same as when
/// the report ran only after the guard allowed it.
async fn guarded<'b, Fut>(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    builds: &'b mut Builds,
    gather: bool,
    make: impl FnOnce(&'b mut Builds) -> Fut,
) -> Result<Option<Report>, Error>
where
    Fut: std::future::Future<Output = Result<Report, Error>>,
{
    let plan = guard_plan(client, site, q, builds).await?;
    let inflight = builds.inflight().cloned();
    // A report that may gather with the others asked at once (`crate::screen`) waits for its
    // place where its statement runs: panels waiting here would miss the gathering.
    let all_screens = builds.all_screens().cloned();
    let gathers = all_screens
        .as_ref()
        .is_some_and(|s| s.on() && gather && crate::screen::screen_member(q, site));
    // The report waits for a place under the bound on expensive reports; the guard's counts
    // do not: a dashboard's panels ask the same counts at once and share one read of them
    // (`Inflight`), which panels run one after another would each make again. (A count that
    // gathers with reports waits for a place only to run their one statement.)
    let guard_heavy = builds.heavy().cloned();
    let heavy = guard_heavy.clone().filter(|_| !gathers);
    builds.gather(gathers);
    let report = async move {
        let _place = crate::cost::Heavy::place(heavy.as_ref()).await?;
        make(builds).await
    };
    let (withheld, rep) = tokio::join!(
        plan.too_few(
            client,
            site,
            inflight.as_ref(),
            all_screens.as_ref(),
            guard_heavy.as_ref()
        ),
        report
    );
    if withheld? {
        return Ok(None);
    }
    rep.map(Some)
}

/// Whether the visitors a filter leaves out (`total - selected`) may be published by
/// subtraction: none, or at least k. (Counts from different sources can differ slightly for
/// large, approximate `uniq`s; a negative remainder counts as none.)
fn complement_ok(selected: f64, total: f64, k: u64) -> bool {
    let rest = total - selected;
    rest <= 0.0 || rest >= k as f64
}

/// The statement counting the visitors (events for a child-directed site) `q` counts over its
/// whole range, by the same k column the reports use.
async fn population(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    builds: &mut Builds,
) -> Result<sql::Sql, Error> {
    let mut t = q.clone();
    t.dimensions.clear();
    t.metrics = vec![Metric::Visitors];
    if site.child_directed {
        t.metrics = vec![Metric::Events];
    }
    t.order_by.clear();
    let built = builds.for_query(client, site, &t).await?;
    Ok(query::assemble::sql(&t, site, &built, None))
}

/// The one number a [`population`] statement answers (joining an identical read under way).
async fn count(
    client: &clickhouse::Client,
    inflight: Option<&crate::db::Inflight>,
    sql: &sql::Sql,
) -> Result<f64, Error> {
    Ok(last_number(&count_rows(client, inflight, sql).await?))
}

/// A [`population`] statement's rows (joining an identical read under way).
async fn count_rows(
    client: &clickhouse::Client,
    inflight: Option<&crate::db::Inflight>,
    sql: &sql::Sql,
) -> Result<Vec<Value>, Error> {
    match inflight {
        Some(inflight) => inflight.fetch(client, sql).await,
        None => fetch(client, sql).await,
    }
}

/// The first row's last cell (a population's `k`), or 0.
fn last_number(rows: &[Value]) -> f64 {
    rows.first()
        .and_then(|r| r.as_array())
        .and_then(|c| c.last())
        .and_then(number)
        .unwrap_or(0.0)
}

fn change(m: Metric, now: Option<f64>, before: Option<f64>) -> Value {
    match (now, before) {
        (Some(a), Some(b)) if m.change_is_difference() => {
            json_number(Some(((a - b) * 10.0).round() / 10.0))
        }
        (Some(a), Some(b)) if b != 0.0 => json_number(Some(((a - b) / b * 100.0).round())),
        // From zero: no change if still zero, else "100 %" as Plausible shows it.
        (Some(a), Some(_)) => json!(if a == 0.0 { 0 } else { 100 }),
        _ => Value::Null,
    }
}

/// The parsed query and its response document.
///
/// With `snapshots`, reports by day and dimension read the current day from a fresh snapshot
/// when there is one ([`crate::snapshot`]); without, always live.
pub async fn run(
    client: &clickhouse::Client,
    site: &SiteView,
    body: &[u8],
    now: DateTime<Utc>,
    shared: Shared<'_>,
) -> Result<(Query, Value), Error> {
    let mut q = query::parse(body, site, now)?;
    realtime_step(&mut q, shared);
    if all_time(body) {
        since_first_day(client, site, &mut q).await?;
    }
    let mut doc = run_query(client, site, &q, shared).await?;
    // The echo's filters are the request's own (already checked by the parser).
    if let Ok(Value::Object(b)) = serde_json::from_slice::<Value>(body) {
        if let Some(f) = b.get("filters") {
            doc["query"]["filters"] = f.clone();
        }
    }
    Ok((q, doc))
}

/// Under differential privacy a realtime window (`q.realtime`, or a window derived from it)
/// ends at the last mark of [`DP_REALTIME_STEP_SECS`] instead of the last whole minute, and
/// starts as much earlier: a dashboard refreshing every 30 s asks the same question again
/// until the next mark (same noise, no budget spent), so it spends once per mark, not twice a
/// minute. Exact mode keeps the minute (nothing to spend).
pub fn realtime_step(q: &mut Query, shared: Shared<'_>) {
    if !q.realtime || !shared.asker.is_some_and(|a| a.privacy.dp()) {
        return;
    }
    let secs = q.end.and_utc().timestamp();
    let back = chrono::Duration::seconds(secs.rem_euclid(DP_REALTIME_STEP_SECS));
    q.end -= back;
    q.start -= back;
}

/// The step of realtime windows under differential privacy ([`realtime_step`]): five minutes.
pub const DP_REALTIME_STEP_SECS: i64 = 300;

/// The query as answered, normalised the way Plausible echoes it: posting it back asks the
/// same question (filters are added by [`run`], which has the request's own).
fn echo(q: &Query, tz: chrono_tz::Tz) -> Value {
    let local = |t: chrono::NaiveDateTime| t.and_utc().with_timezone(&tz).to_rfc3339();
    let names: Vec<String> = q
        .dimensions
        .iter()
        .map(|d| d.name.clone())
        .chain(q.metrics.iter().map(|m| m.name().to_string()))
        .collect();
    let order_by: Vec<Value> = q
        .order_by
        .iter()
        .filter_map(|(i, desc)| Some(json!([names.get(*i)?, if *desc { "desc" } else { "asc" }])))
        .collect();
    let mut include = json!({
        "imports": q.imports,
        "time_labels": q.time_labels,
        "total_rows": q.total_rows,
    });
    if let Some(c) = q.compare {
        include["comparisons"] = c.to_json();
    }
    if !q.rollups {
        include["rollups"] = json!(false);
    }
    let range = if q.realtime {
        json!("realtime")
    } else {
        json!([local(q.start), local(q.end - chrono::Duration::seconds(1))])
    };
    json!({
        "site_id": q.site,
        "metrics": q.metrics.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "dimensions": q.dimensions.iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
        "date_range": range,
        "filters": [],
        "order_by": order_by,
        "include": include,
        "pagination": {"limit": q.limit, "offset": q.offset},
    })
}

/// Whether a request body asks `"date_range": "all"`.
fn all_time(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Only {
        date_range: Option<Value>,
    }
    serde_json::from_slice::<Only>(body)
        .ok()
        .and_then(|o| o.date_range)
        .is_some_and(|r| r == "all")
}

/// Starts an `"all"` range on the site's first day with events (Plausible: all of the
/// site's data), at most ten years back like any range; a site without events starts today.
/// One read of the site's slice of `events`' date column (its primary key's second part).
async fn since_first_day(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &mut Query,
) -> Result<(), Error> {
    let rows = fetch(
        client,
        &sql!(
            "SELECT toString(min(toDate(timestamp))), count() FROM events WHERE site = {}",
            lit(&site.domain)
        ),
    )
    .await?;
    let first = rows
        .first()
        .filter(|r| r.get(1).and_then(number).unwrap_or(0.0) > 0.0)
        .and_then(|r| r.get(0))
        .and_then(Value::as_str)
        .and_then(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .unwrap_or(q.to);
    // With imports, "all" starts on the first imported day when that is earlier.
    let first = match q.imports {
        true => match merge::first_day(client, &site.domain).await? {
            Some(d) => first.min(d),
            None => first,
        },
        false => first,
    };
    let floor = q.to - chrono::Duration::days(3660);
    let from = first.clamp(floor, q.to);
    q.from = from;
    q.start = query::local_midnight(query::timezone(&site.timezone), from);
    Ok(())
}

/// Runs a checked query (`snapshots` as in [`run`]); a query past the client's bounds is the
/// [`Error::TooExpensive`] of [`too_expensive`].
pub async fn run_query(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    shared: Shared<'_>,
) -> Result<Value, Error> {
    let planned = without_passing(client, site, q, shared).await?;
    let q = planned.as_ref().unwrap_or(q);
    let run = async {
        let src = query::source(q, site.child_directed);
        if matches!(src, Source::Events | Source::Joined) {
            preflight(client, q, MAX_RAW_EVENTS).await?;
        }
        // A place under the aggregator's bound on expensive reports, taken where the report
        // itself runs (`guarded`, `answer`), for questions the per-day visit rollup does not
        // answer.
        let shared = Shared {
            heavy: shared
                .heavy
                .filter(|_| crate::cost::heavy_source(src) && !q.realtime),
            ..shared
        };
        answer(client, site, q, shared).await
    };
    run.await.map_err(too_expensive(q, site))
}

/// `q` planned without the top-level host conditions that every host of its range (and its
/// comparison's) passes ([`query::passing`]), or `None` when it keeps them all, has none, or
/// is not planned on rollups (`include.rollups: false`, realtime, imports, child-directed
/// sites: nothing to gain). One read of `visits_daily` and of raw events outside the closed
/// days' builds, joined by the request's other panels asking the same (`Inflight`).
async fn without_passing(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    shared: Shared<'_>,
) -> Result<Option<Query>, Error> {
    let conds = query::passing::host_conds(q);
    if conds.is_empty() || !q.rollups || q.realtime || q.imports || site.child_directed {
        return Ok(None);
    }
    let mut ranges = vec![(q.start, q.end)];
    if let Some(how) = q.compare {
        let c = q.comparison(how, query::timezone(&site.timezone));
        ranges.push((c.start, c.end));
    }
    let first = ranges.iter().map(|r| r.0.date()).min().unwrap_or(q.from);
    let last = ranges
        .iter()
        .map(|r| (r.1 - chrono::Duration::seconds(1)).date())
        .max()
        .unwrap_or(q.to);
    let built = crate::builds::visit_builds(client, first, last).await?;
    let Some(stmt) = query::passing::hosts_sql(q, site, &ranges, &built, &conds) else {
        return Ok(None);
    };
    let rows = match shared.inflight {
        Some(inflight) => inflight.fetch(client, &stmt).await?,
        None => fetch(client, &stmt).await?,
    };
    let failing = rows.first().and_then(|r| r.as_array());
    let drop: Vec<usize> = conds
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            failing
                .and_then(|r| r.get(*i))
                .and_then(number)
                .is_some_and(|n| n == 0.0)
        })
        .map(|(_, c)| *c)
        .collect();
    if drop.is_empty() {
        return Ok(None);
    }
    Ok(Some(query::passing::without(q, &drop)))
}

/// Refuses `q`, a question that must read raw events ([`run_query`] asks for sources `events`
/// and `joined`, funnels always), with an [`Error::TooExpensive`] without a code when its site
/// has more than `ceiling` events in its range. First the row counts ClickHouse keeps for the
/// range's daily partitions of `events` (`toYYYYMMDD(timestamp)`, all sites: metadata,
/// nothing read, a few milliseconds); only when those pass `ceiling`, the site's own count
/// (its slice of the primary key). With no local parts to count (a cluster's `events` is a
/// `Distributed` table) the first count is 0 and the question runs, under [`crate::db`]'s
/// bounds.
pub async fn preflight(client: &clickhouse::Client, q: &Query, ceiling: u64) -> Result<(), Error> {
    let first = q.start.date();
    let last = (q.end - chrono::Duration::seconds(1)).date().max(first);
    let day = |d: chrono::NaiveDate| d.format("%Y%m%d").to_string();
    let stored = crate::db::count(
        client,
        &sql!(
            "SELECT sum(rows) FROM system.parts WHERE database = currentDatabase() AND table = 'events' \
             AND active AND partition_id >= {} AND partition_id <= {}",
            lit(&day(first)),
            lit(&day(last))
        ),
    )
    .await?;
    if stored <= ceiling {
        return Ok(());
    }
    let own = crate::db::count(
        client,
        &sql!(
            "SELECT count() FROM events WHERE site = {} AND timestamp >= {} AND timestamp < {}",
            lit(&q.site),
            utc(q.start),
            utc(q.end)
        ),
    )
    .await?;
    if own > ceiling {
        return Err(Error::TooExpensive {
            code: None,
            message: crate::db::TOO_EXPENSIVE.into(),
        });
    }
    Ok(())
}

/// Names `q` in an [`Error::TooExpensive`] (other errors pass unchanged) and logs that it
/// was refused: ClickHouse's error code and the query's source only (filter values can be
/// anything a visitor typed into a URL; they go to the client who asked, not to the log).
pub fn too_expensive<'a>(q: &'a Query, site: &'a SiteView) -> impl Fn(Error) -> Error + 'a {
    move |e| match e {
        Error::TooExpensive { code, .. } => {
            tracing::warn!(
                code = ?code,
                reason = code
                    .and_then(crate::db::too_expensive_code)
                    .unwrap_or("more raw events than MAX_RAW_EVENTS"),
                source = query::source(q, site.child_directed).name(),
                filters = q.filter.as_ref().map_or(0, |f| f.conds().len()),
                dimensions = q.dimensions.len(),
                "report refused: too expensive for the query bounds"
            );
            let message = match code {
                // The answer has more rows than the report client's `max_result_rows`.
                Some(158 | 396) => describe_too_many_rows(q),
                _ => describe_too_expensive(q, query::source(q, site.child_directed)),
            };
            Error::TooExpensive { code, message }
        }
        other => other,
    }
}

/// The message of [`too_expensive`] for an answer with more rows than
/// [`crate::db::MAX_RESULT_ROWS`] (or the configured bound): `this question has too many rows
/// to answer (dimensions event:page, over 30 days: …); add a filter, ask for fewer dimensions
/// or a shorter period`.
fn describe_too_many_rows(q: &Query) -> String {
    let names: Vec<&str> = q.dimensions.iter().map(|d| d.name.as_str()).collect();
    let dims = if names.is_empty() {
        "no dimensions".to_string()
    } else {
        format!("dimensions {}", names.join(", "))
    };
    let days = (q.to - q.from).num_days() + 1;
    let unit = if days == 1 { "day" } else { "days" };
    format!(
        "this question has too many rows to answer ({dims}, over {days} {unit}: {} to {}); \
         add a filter, ask for fewer dimensions or a shorter period",
        q.from, q.to
    )
}

/// The message of [`too_expensive`]: `this question is too expensive to answer from raw
/// events (filters event:page is "/pricing" AND visit:source is "Google", dimensions
/// event:page, over 30 days: 2026-10-30 to 2026-11-28); ask for a shorter period or fewer
/// filters` — naming what `src` reads: raw events, or every visit row of the range (a filter
/// no prepared row answers, `visits` / `visit_hits`), or the rollups.
fn describe_too_expensive(q: &Query, src: Source) -> String {
    // The filter as asked (a host condition planned away is still what the client sent).
    let filters = match &q.asked_filter {
        Some(f) => format!("filters {}", describe_filter(f, false)),
        None => "no filters".into(),
    };
    let dims = if q.dimensions.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = q.dimensions.iter().map(|d| d.name.as_str()).collect();
        format!(", dimensions {}", names.join(", "))
    };
    let period = if q.realtime {
        "over the last 30 minutes".to_string()
    } else {
        let days = (q.to - q.from).num_days() + 1;
        let unit = if days == 1 { "day" } else { "days" };
        format!("over {days} {unit}: {} to {}", q.from, q.to)
    };
    let reads = match src {
        Source::Events | Source::Joined => "from raw events",
        Source::Visits | Source::VisitHits => "from every visit row of its range",
        Source::VisitsDaily | Source::Hourly => "from the rollups",
    };
    format!(
        "this question is too expensive to answer {reads} ({filters}{dims}, {period}); \
         ask for a shorter period or fewer filters"
    )
}

/// A filter in words; `nested` puts a compound one in parentheses.
fn describe_filter(f: &Filter, nested: bool) -> String {
    let group = |parts: &[Filter], sep: &str| {
        let inner: Vec<String> = parts.iter().map(|p| describe_filter(p, true)).collect();
        let text = inner.join(sep);
        if nested && parts.len() > 1 {
            format!("({text})")
        } else {
            text
        }
    };
    match f {
        Filter::Cond {
            op, dim, values, ..
        } => {
            let op = match op {
                Op::Is => "is",
                Op::IsNot => "is not",
                Op::Contains => "contains",
                Op::ContainsNot => "does not contain",
                Op::Matches => "matches",
                Op::MatchesNot => "does not match",
            };
            let values: Vec<String> = values.iter().map(|v| format!("{:?}", short(v))).collect();
            format!("{} {op} {}", dim.name, values.join(" or "))
        }
        Filter::And(parts) => group(parts, " AND "),
        Filter::Or(parts) => group(parts, " OR "),
        Filter::Not(inner) => format!("NOT {}", describe_filter(inner, true)),
        Filter::HasDone { not, inner } => {
            let verb = if *not { "has not done" } else { "has done" };
            format!("{verb} ({})", describe_filter(inner, false))
        }
    }
}

/// A filter value cut to 80 characters for a message.
fn short(v: &str) -> String {
    match v.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &v[..at]),
        None => v.to_string(),
    }
}

/// What a request's reports share with their aggregator ([`crate::Aggregator::shared`]):
/// today's snapshots, which reports by day and dimension read instead of the live day, and the
/// identical reads under way ([`crate::db::Inflight`]), which the differencing guard's
/// counts join. The default shares nothing (every read live and on its own).
#[derive(Debug, Default, Clone, Copy)]
pub struct Shared<'a> {
    /// Today's snapshots, when the aggregator takes them.
    pub snapshots: Option<&'a Arc<Snapshots>>,
    /// Reads under way.
    pub inflight: Option<&'a crate::db::Inflight>,
    /// Reports asked at once over the same filtered visit rows ([`crate::screen`]); none:
    /// each report reads its own.
    pub screens: Option<&'a crate::screen::Screens>,
    /// The bound on reports not answered from the per-day visit rollup at once ([`crate::cost::Heavy`]);
    /// none: unbounded.
    pub heavy: Option<&'a crate::cost::Heavy>,
    /// Who asks, for differential privacy's budget; none: exact numbers (embedding code and
    /// tests that call [`run`] directly).
    pub asker: Option<Asker<'a>>,
}

/// Who asks a question, with the aggregator's privacy state.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    /// The aggregator's privacy settings, keys and budget charges.
    pub privacy: &'a privacy::Privacy,
    /// Whose budget is spent ([`crate::auth::Access::credential`]).
    pub credential: &'a str,
    /// The time the question is asked (the budget's UTC day; today's release hour).
    pub now: DateTime<Utc>,
    /// The share of ε per release this question's releases get (1: all of it; realtime's
    /// three questions a third each, so one refresh costs one release's ε).
    pub share: f64,
}

/// A row's dimension values as the answer writes them: strings, except Plausible's
/// `visit:city`, a GeoNames id, which is a number (`0` for no city); a city stored by name
/// alone (no id known, `veil_schemas::places`) stays its name.
fn dims_json(q: &Query, dims: &[String]) -> Value {
    Value::Array(
        q.dimensions
            .iter()
            .zip(dims)
            .map(|(d, v)| {
                if d.name != "visit:city" {
                    return Value::String(v.clone());
                }
                if v.is_empty() {
                    return json!(0);
                }
                match v.parse::<u64>() {
                    Ok(id) if v.bytes().all(|b| b.is_ascii_digit()) => json!(id),
                    _ => Value::String(v.clone()),
                }
            })
            .collect(),
    )
}

async fn answer(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    shared: Shared<'_>,
) -> Result<Value, Error> {
    let tz = query::timezone(&site.timezone);
    let mut builds = Builds::new(
        shared
            .snapshots
            .map(|s| Box::new(Arc::clone(s)) as Box<dyn TodaySnapshots>),
    )
    .sharing(shared.inflight.cloned())
    .gathering(shared.screens.cloned());
    let builds = &mut builds;
    let imports = imports_plan(client, site, q).await?;
    let merge = imports.as_ref().ok();
    let (rep, comparison, guard, privacy_meta) = match shared.asker.filter(|a| a.privacy.dp()) {
        Some(asker) if shared.screens.is_some_and(|s| s.on()) => {
            // Each statement takes its place (`dp_rows`): a statement shared with the
            // screen's other reports takes one for all of them, and the reports must reach
            // their gathering before waiting for a place, or no more than the bound's number
            // would ever gather.
            builds.gate(shared.heavy.cloned());
            builds.gather(true);
            dp_reports(client, site, q, builds, asker, tz, merge).await?
        }
        Some(asker) => {
            // Its releases and their bases run one after another under one place.
            let _place = crate::cost::Heavy::place(shared.heavy).await?;
            dp_reports(client, site, q, builds, asker, tz, merge).await?
        }
        None => {
            builds.gate(shared.heavy.cloned());
            let (rep, comparison, guard) =
                exact_reports(client, site, q, builds, tz, merge).await?;
            let meta = json!({"mode": "exact", "min_visitors": site.min_visitors});
            (rep, comparison, guard, meta)
        }
    };
    let total_rows = rep.rows.len();
    let mut results = Vec::new();
    let time_idx = q
        .dimensions
        .iter()
        .position(|d| matches!(d.kind, DimKind::Time(_)));
    let labels = q.time_labels();
    let cmp_labels = comparison
        .as_ref()
        .map(|(cq, _)| cq.time_labels())
        .unwrap_or_default();
    // Revenue cells in Plausible's money shape (after the privacy module: the published number).
    let currencies = crate::money::resolve(q, site);
    let cells = |values: &[Option<f64>], dims: &[String]| -> Vec<Value> {
        q.metrics
            .iter()
            .zip(values)
            .map(|(m, v)| {
                if crate::money::is_revenue(*m) {
                    crate::money::cell(*v, &currencies, dims, q)
                } else {
                    json_number(*v)
                }
            })
            .collect()
    };
    for row in rep
        .rows
        .iter()
        .skip(q.offset as usize)
        .take(q.limit as usize)
    {
        let mut o = Map::new();
        o.insert("dimensions".into(), dims_json(q, &row.dims));
        o.insert(
            "metrics".into(),
            Value::Array(cells(&row.metrics, &row.dims)),
        );
        if let Some((_, c)) = &comparison {
            // Rows match on their dimensions; a time bucket matches the bucket at the same
            // position of the comparison period.
            let key = |dims: &Vec<String>, labels: &[String]| -> Vec<String> {
                let mut k = dims.clone();
                if let Some(slot) = time_idx.and_then(|t| k.get_mut(t)) {
                    let pos = labels.iter().position(|l| l == slot);
                    *slot = pos.map(|p| p.to_string()).unwrap_or_default();
                }
                k
            };
            let mine = key(&row.dims, &labels);
            let other = c.rows.iter().find(|r| key(&r.dims, &cmp_labels) == mine);
            let cm: Vec<Option<f64>> = other.map(|r| r.metrics.clone()).unwrap_or_else(|| {
                q.metrics
                    .iter()
                    .map(|m| {
                        if additive(*m) || *m == Metric::Visitors {
                            Some(0.0)
                        } else {
                            None
                        }
                    })
                    .collect()
            });
            o.insert(
                "comparison".into(),
                json!({
                    "dimensions": other.map(|r| dims_json(q, &r.dims)).unwrap_or_else(|| json!([])),
                    "metrics": cells(&cm, &row.dims),
                    "change": q.metrics.iter().zip(row.metrics.iter().zip(&cm)).map(|(m, (a, b))| change(*m, *a, *b)).collect::<Vec<_>>(),
                }),
            );
        }
        results.push(Value::Object(o));
    }
    let mut meta = json!({
        "min_visitors": site.min_visitors,
        "folded_rows": rep.folded,
        "suppressed": rep.suppressed,
        "too_few_visitors": guard,
        "imports_included": q.imports && imports.is_ok(),
        "source": query::source(q, site.child_directed).name(),
    });
    if q.total_rows {
        meta["total_rows"] = json!(total_rows);
    }
    if let crate::money::Currencies::Unavailable(code) = currencies {
        let warnings: Map<String, Value> = q
            .metrics
            .iter()
            .filter(|m| crate::money::is_revenue(**m))
            .map(|m| (m.name().to_string(), crate::money::warning(code)))
            .collect();
        meta["metric_warnings"] = Value::Object(warnings);
    }
    if let (true, Err(skip)) = (q.imports, &imports) {
        meta["imports_skip_reason"] = json!(skip.reason());
        meta["imports_warning"] = json!(skip.warning());
    }
    if q.time_labels {
        meta["time_labels"] = json!(labels);
    }
    if let Some((cq, _)) = &comparison {
        meta["comparison_date_range"] = json!([cq.from.to_string(), cq.to.to_string()]);
    }
    meta["privacy"] = privacy_meta;
    if let Some(at) = builds.snapshot() {
        // Veil-only: the current day was read from a snapshot taken then (UTC).
        meta["today_as_of"] = json!(at.and_utc().to_rfc3339());
    }
    let _ = rep.total_k;
    Ok(json!({
        "results": results,
        "meta": meta,
        "query": echo(q, tz),
    }))
}

/// How `q` reads imported numbers ([`merge::plan`]), or why it does not (`include.imports`
/// not asked: [`merge::Skip::NoData`], never shown).
async fn imports_plan(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
) -> Result<Result<merge::Plan, merge::Skip>, Error> {
    if !q.imports {
        return Ok(Err(merge::Skip::NoData));
    }
    // A site without imported days in the range says so (`no_imported_data`) whatever it
    // asks, as Plausible does: "unsupported" would suggest there is history it leaves out.
    let mut any = merge::present(client, q).await?;
    if let (false, Some(how)) = (any, q.compare) {
        let tz = query::timezone(&site.timezone);
        any = merge::present(client, &q.comparison(how, tz)).await?;
    }
    if !any {
        return Ok(Err(merge::Skip::NoData));
    }
    Ok(merge::plan(q, site))
}

/// A report of `q` with imported rows merged (exact mode): the plan's parts read unrounded
/// and unfolded, imported parts added per row, then k-anonymity on the sums
/// ([`privacy::Release::exact`]). Rows under k are left out (breakdowns: no `(other)` row)
/// or nulled (time buckets, totals). `percentage` divides by the merged total of the same
/// filters.
async fn merged_report(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    builds: &mut Builds,
    plan: &merge::Plan,
) -> Result<Report, Error> {
    let (mut rows, suppressed) = merged_rows(client, site, q, builds, plan).await?;
    if let Some(pi) = q.metrics.iter().position(|m| *m == Metric::Percentage) {
        let t = total_question(q);
        let total = match merge::plan(&t, site) {
            Ok(tp) => merged_rows(client, site, &t, builds, &tp)
                .await?
                .0
                .first()
                .and_then(|r| r.metrics.first().copied().flatten()),
            Err(_) => None,
        };
        for slot in rows.iter_mut().filter_map(|r| r.metrics.get_mut(pi)) {
            *slot = match (*slot, total) {
                (Some(v), Some(t)) if t > 0.0 => Some(((v * 1000.0 / t).round() / 10.0).min(100.0)),
                _ => None,
            };
        }
    }
    sort_rows(q, &mut rows);
    Ok(Report {
        rows,
        folded: 0,
        suppressed,
        total_k: None,
    })
}

/// `q`'s visitors without its dimensions (a percentage's denominator).
fn total_question(q: &Query) -> Query {
    let mut t = q.clone();
    t.dimensions.clear();
    t.metrics = vec![Metric::Visitors];
    t.order_by.clear();
    t
}

/// The rows of [`merged_report`], unsorted, and whether one was withheld under k.
async fn merged_rows(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    builds: &mut Builds,
    plan: &merge::Plan,
) -> Result<(Vec<Row>, bool), Error> {
    let rel = privacy::Release::exact(q, site.child_directed, site.min_visitors);
    let mut iq = q.clone();
    iq.metrics = rel.plan().sql_metrics.clone();
    iq.unrounded = true;
    iq.order_by = (0..iq.dimensions.len()).map(|i| (i, false)).collect();
    let built = builds.for_query(client, site, &iq).await?;
    let sql = query::assemble::sql(&iq, site, &built, None);
    let extra = merge::rows(client, q, plan).await?;
    let (published, suppressed) = rel.rows_with(q, &fetch(client, &sql).await?, &extra);
    let rows = published.into_iter().map(Row::published).collect();
    Ok((rows, suppressed))
}

/// A report with its conversion rates, exit rates and percentages (of the merged imports
/// with `merge`): what an exact answer shows once the differencing guard allows it.
async fn full_report(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    builds: &mut Builds,
    merge: Option<&merge::Plan>,
) -> Result<Report, Error> {
    if let Some(plan) = merge {
        return merged_report(client, site, q, builds, plan).await;
    }
    let mut r = report(client, site, q, builds).await?;
    conversion_rates(client, site, q, &mut r, builds).await?;
    exit_rates(client, site, q, &mut r, builds).await?;
    percentages(client, site, q, &mut r, builds).await?;
    Ok(r)
}

/// A report and its comparison with exact numbers, k-anonymity and the differencing guard
/// (exact mode); the bool says whether the guard refused the filters.
async fn exact_reports(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    builds: &mut Builds,
    tz: chrono_tz::Tz,
    merge: Option<&merge::Plan>,
) -> Result<(Report, Option<(Query, Report)>, bool), Error> {
    // A report merged with imported history reads its own statement (`merged_report`).
    let made = guarded(client, site, q, builds, merge.is_none(), |b| {
        full_report(client, site, q, b, merge)
    })
    .await?;
    let guard = made.is_none();
    let mut rep = made.unwrap_or_else(Report::withheld);
    if guard && q.dimensions.is_empty() {
        rep.rows.push(Row {
            dims: Vec::new(),
            metrics: vec![None; q.metrics.len()],
            k: 0.0,
            folded: 0,
        });
    }
    let comparison = match q.compare {
        Some(how) if !guard => {
            let cq = q.comparison(how, tz);
            // As before the guard ran beside it: the comparison's rates are added to whatever
            // it is (withheld, merged with imports or not).
            let made = guarded(client, site, &cq, builds, merge.is_none(), |b| async {
                match merge {
                    Some(plan) => merged_report(client, site, &cq, b, plan).await,
                    None => report(client, site, &cq, b).await,
                }
            })
            .await?;
            let mut c = made.unwrap_or_else(Report::withheld);
            conversion_rates(client, site, &cq, &mut c, builds).await?;
            exit_rates(client, site, &cq, &mut c, builds).await?;
            percentages(client, site, &cq, &mut c, builds).await?;
            Some((cq, c))
        }
        _ => None,
    };
    Ok((rep, comparison, guard))
}

/// A report and its comparison with differential privacy ([`crate::privacy`]): the
/// question's budget charged first (a 429 when spent; free when asked already today), then
/// each release's noisy rows; `meta.privacy` last.
async fn dp_reports(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    builds: &mut Builds,
    asker: Asker<'_>,
    tz: chrono_tz::Tz,
    merge: Option<&merge::Plan>,
) -> Result<(Report, Option<(Query, Report)>, bool, Value), Error> {
    let p = asker.privacy;
    let mut settings = p.settings().for_site(site);
    settings.epsilon_query *= asker.share.clamp(0.01, 1.0);
    let settings = &settings;
    let key = p.site_key(client, &site.domain).await?;
    let per_report = 1
        + q.metrics.iter().filter(|m| CONVERSIONS.contains(m)).count()
        + usize::from(q.metrics.contains(&Metric::ExitRate))
        + usize::from(q.metrics.contains(&Metric::Percentage));
    let releases = per_report * (1 + usize::from(q.compare.is_some()));
    let spend = p
        .charge(
            client,
            asker.credential,
            &site.domain,
            privacy::question_key(q, asker.now, ""),
            settings.epsilon_query * releases as f64,
            settings.epsilon_day,
            asker.now,
        )
        .await?;
    let noise = Noise {
        key,
        settings,
        now: asker.now,
    };
    let (rep, rel) = dp_report(client, site, q, builds, noise, merge).await?;
    let comparison = match q.compare {
        Some(how) => {
            let cq = q.comparison(how, tz);
            let (c, _) = dp_report(client, site, &cq, builds, noise, merge).await?;
            Some((cq, c))
        }
        None => None,
    };
    let withheld: Vec<&str> = rel.plan().withheld.iter().map(|m| m.name()).collect();
    let meta = spend.meta(
        settings,
        settings.delta,
        rel.threshold(),
        rel.intervals(&q.metrics),
        &withheld,
    );
    Ok((rep, comparison, false, meta))
}

/// What a release's noise is drawn with: the site's key, the settings, the time asked.
#[derive(Clone, Copy)]
struct Noise<'a> {
    key: [u8; 32],
    settings: &'a privacy::Settings,
    now: DateTime<Utc>,
}

/// One noisy report of `q`: its release's rows sorted by `q`'s order on the noisy numbers,
/// conversion rates and percentages divided by their own releases' noisy denominators.
async fn dp_report(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    builds: &mut Builds,
    noise: Noise<'_>,
    merge: Option<&merge::Plan>,
) -> Result<(Report, privacy::Release), Error> {
    let Noise { key, settings, now } = noise;
    let release = |q: &Query| {
        privacy::Release::new(
            q,
            site.child_directed,
            key,
            settings,
            site.min_visitors,
            now,
        )
    };
    let rel = release(q)?;
    let extra = match merge {
        Some(plan) => merge::rows(client, q, plan).await?,
        None => Vec::new(),
    };
    let mut rows: Vec<Row> = dp_rows(client, site, q, builds, &rel, &extra)
        .await?
        .into_iter()
        .map(Row::published)
        .collect();
    dp_percentiles(client, site, q, builds, &rel, &mut rows).await?;
    for which in CONVERSIONS {
        let Some(ci) = q.metrics.iter().position(|m| *m == which) else {
            continue;
        };
        let (keep, base) = conversion_base(q, which)?;
        let totals = dp_rows(client, site, &base, builds, &release(&base)?, &[]).await?;
        for row in &mut rows {
            let k: Vec<String> = keep
                .iter()
                .filter_map(|i| row.dims.get(*i).cloned())
                .collect();
            let total = totals
                .iter()
                .find(|t| t.0 == k)
                .and_then(|t| t.1.first().copied().flatten());
            if let Some(slot) = row.metrics.get_mut(ci) {
                *slot = rate(*slot, total);
            }
        }
    }
    if let Some(ei) = q.metrics.iter().position(|m| *m == Metric::ExitRate) {
        let base = exit_base(q)?;
        let totals = dp_rows(client, site, &base, builds, &release(&base)?, &[]).await?;
        for row in &mut rows {
            let total = totals
                .iter()
                .find(|t| t.0 == row.dims)
                .and_then(|t| t.1.first().copied().flatten());
            if let Some(slot) = row.metrics.get_mut(ei) {
                *slot = rate(*slot, total);
            }
        }
    }
    if let Some(pi) = q.metrics.iter().position(|m| *m == Metric::Percentage) {
        let t = total_question(q);
        // With imports, the total merges them too (the same filters, no dimension).
        let extra_t = match merge.map(|_| merge::plan(&t, site)) {
            Some(Ok(tp)) => merge::rows(client, &t, &tp).await?,
            _ => Vec::new(),
        };
        let total = dp_rows(client, site, &t, builds, &release(&t)?, &extra_t)
            .await?
            .first()
            .and_then(|r| r.1.first().copied().flatten())
            .unwrap_or(0.0);
        for slot in rows.iter_mut().filter_map(|r| r.metrics.get_mut(pi)) {
            *slot = match *slot {
                Some(v) if total > 0.0 => Some(((v * 1000.0 / total).round() / 10.0).min(100.0)),
                _ => None,
            };
        }
    }
    sort_rows(q, &mut rows);
    Ok((
        Report {
            rows,
            folded: 0,
            suppressed: false,
            total_k: None,
        },
        rel,
    ))
}

/// A release's published rows of `q`: its SQL (`q`'s dimensions, the plan's metrics
/// unrounded, the k column) through [`privacy::Release::rows`].
async fn dp_rows(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    builds: &mut Builds,
    rel: &privacy::Release,
    extra: &[privacy::Extra],
) -> Result<Vec<privacy::Published>, Error> {
    let mut iq = q.clone();
    iq.metrics = rel.plan().sql_metrics.clone();
    iq.unrounded = true;
    // Child-directed sites keep no visitor ids: there is nothing to bound per visitor.
    iq.bounded = !site.child_directed;
    iq.order_by = (0..iq.dimensions.len()).map(|i| (i, false)).collect();
    let built = builds.for_query(client, site, &iq).await?;
    let c = rel.clamp();
    let sql = if iq.bounded {
        query::assemble::bounded_sql(&iq, site, &built, c).map_err(Error::Internal)?
    } else {
        query::assemble::sql(&iq, site, &built, None)
    };
    let heavy = builds.heavy();
    let alone = async {
        let _place = crate::cost::Heavy::place(heavy).await?;
        fetch(client, &sql).await
    };
    let rows = match builds
        .screens()
        .filter(|_| iq.bounded && query::assemble::bounded_screen_member(&iq, site, c))
    {
        // The screen's other reports over the same visit rows group them by visitor id
        // once ([`crate::screen`]); each release's rows are the ones its own statement gives.
        Some(screens) => {
            let asked = crate::screen::Asked {
                client,
                site,
                q: &iq,
                built: &built,
                kmin: site.min_visitors,
                heavy,
                clamp: Some(*c),
            };
            screens.rows(asked, alone).await?
        }
        None => alone.await?,
    };
    Ok(rel.rows_with(q, &rows, extra).0)
}

/// Fills the performance percentiles of `rows` (published rows of `q`'s release `rel`) from
/// their samples' noisy histograms (`privacy::quantile`): one statement per sample, each
/// visitor id's samples clamped as the release's noise is calibrated for.
async fn dp_percentiles(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &Query,
    builds: &mut Builds,
    rel: &privacy::Release,
    rows: &mut [Row],
) -> Result<(), Error> {
    use privacy::quantile;
    let nd = q.dimensions.len();
    for sample in rel.plan().samples.clone() {
        let at: Vec<(usize, f64)> = q
            .metrics
            .iter()
            .enumerate()
            .filter_map(|(i, m)| match quantile::Sample::of(*m) {
                Some((s, p)) if s == sample => Some((i, p)),
                _ => None,
            })
            .collect();
        let mut iq = q.clone();
        iq.unrounded = true;
        iq.bounded = true;
        iq.order_by = (0..nd).map(|i| (i, false)).collect();
        let built = builds.for_query(client, site, &iq).await?;
        let sql = query::assemble::sample_sql(
            &iq,
            site,
            &built,
            rel.clamp(),
            sample.prop(),
            quantile::bucket_sql,
        )
        .map_err(Error::Internal)?;
        let mut histograms: std::collections::HashMap<Vec<String>, Vec<f64>> =
            std::collections::HashMap::new();
        let fetched = {
            let _place = crate::cost::Heavy::place(builds.heavy()).await?;
            fetch(client, &sql).await?
        };
        for r in fetched {
            let Some(cells) = r.as_array().filter(|c| c.len() == nd + 2) else {
                continue;
            };
            let dims: Vec<String> = cells[..nd].iter().map(text).collect();
            let (Some(b), Some(n)) = (number(&cells[nd]), number(&cells[nd + 1])) else {
                continue;
            };
            let h = histograms
                .entry(dims)
                .or_insert_with(|| vec![0.0; usize::from(quantile::TOP) + 1]);
            if let Some(slot) = h.get_mut(b as usize) {
                *slot += n;
            }
        }
        let qs: Vec<f64> = at.iter().map(|(_, p)| *p).collect();
        for row in rows.iter_mut() {
            let truth = histograms.get(&row.dims).map(Vec::as_slice).unwrap_or(&[]);
            let values = rel.quantiles(&row.dims, sample, truth, &qs);
            for ((i, _), v) in at.iter().zip(values) {
                if let Some(slot) = row.metrics.get_mut(*i) {
                    *slot = v;
                }
            }
        }
    }
    Ok(())
}

/// Sorts rows by `q.order_by` (dimension or metric indices) on the published numbers (the
/// SQL's order would follow the true ones), labels ascending last.
fn sort_rows(q: &Query, rows: &mut [Row]) {
    let nd = q.dimensions.len();
    rows.sort_by(|a, b| {
        for (i, desc) in &q.order_by {
            let o = if *i < nd {
                a.dims.get(*i).cmp(&b.dims.get(*i))
            } else {
                let x = a
                    .metrics
                    .get(i - nd)
                    .copied()
                    .flatten()
                    .unwrap_or(f64::NEG_INFINITY);
                let y = b
                    .metrics
                    .get(i - nd)
                    .copied()
                    .flatten()
                    .unwrap_or(f64::NEG_INFINITY);
                x.total_cmp(&y)
            };
            let o = if *desc { o.reverse() } else { o };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        a.dims.cmp(&b.dims)
    });
}

/// A response document as CSV: a header of dimension then metric names, one line per row.
/// With differential privacy each count metric gets a last column `METRIC_ci95`: the ± half
/// width of its 95 % interval (the same for every row of one answer).
pub fn to_csv(q: &Query, doc: &Value) -> String {
    let mut out = String::new();
    let intervals: Vec<(String, String)> = q
        .metrics
        .iter()
        .filter_map(|m| {
            let v = doc["meta"]["privacy"]["interval95"].get(m.name())?;
            (!v.is_null()).then(|| (format!("{}_ci95", m.name()), v.to_string()))
        })
        .collect();
    let header: Vec<String> = q
        .dimensions
        .iter()
        .map(|d| d.name.clone())
        .chain(q.metrics.iter().map(|m| m.name().to_string()))
        .chain(intervals.iter().map(|(n, _)| n.clone()))
        .collect();
    out.push_str(&csv_line(&header));
    for r in doc["results"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let cells: Vec<String> = r["dimensions"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(r["metrics"].as_array().into_iter().flatten())
            .map(|v| match v {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                // Revenue in the money shape: its number (the header names the metric).
                Value::Object(o) => o.get("value").map(Value::to_string).unwrap_or_default(),
                other => other.to_string(),
            })
            .chain(intervals.iter().map(|(_, v)| v.clone()))
            .collect();
        out.push_str(&csv_line(&cells));
    }
    out
}

/// One CSV line (RFC 4180 quoting). Cells that a spreadsheet would run as a formula
/// (`=`, `+`, `-`, `@` first) are prefixed with `'`.
pub fn csv_line(cells: &[String]) -> String {
    let quoted: Vec<String> = cells
        .iter()
        .map(|c| {
            let c = if c.starts_with(['=', '+', '@', '\t', '\r'])
                || (c.starts_with('-') && c.parse::<f64>().is_err())
            {
                format!("'{c}")
            } else {
                c.clone()
            };
            if c.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c
            }
        })
        .collect();
    quoted.join(",") + "\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_rows_are_skipped_not_a_panic() {
        let rows = vec![
            json!(["Google", "10"]),
            json!(["Direct"]),
            json!([]),
            json!("not a row"),
            json!(["Bing", null]),
        ];
        assert_eq!(
            keyed_totals(&rows, 1),
            vec![(vec!["Google".to_string()], 10.0)]
        );
        assert!(keyed_totals(&rows, 3).is_empty());
    }

    #[test]
    fn a_refusal_names_what_the_question_reads() {
        let site = SiteView::new("a.com");
        let body = br#"{"site_id":"a.com","metrics":["visitors","visits"],"date_range":"30d","dimensions":["visit:source"],"filters":[["not",["is","event:page",["/pricing"]]]]}"#;
        let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 28, 12, 0, 0).unwrap();
        let q = query::parse(body, &site, now).unwrap();
        let msg = describe_too_expensive(&q, Source::VisitHits);
        assert!(
            msg.starts_with("this question is too expensive to answer from every visit row of its range (filters NOT event:page is \"/pricing\", dimensions visit:source, over 30 days: 2026-10-29 to 2026-11-27)"),
            "{msg}"
        );
        assert!(describe_too_expensive(&q, Source::Joined).contains("answer from raw events ("));
    }

    #[test]
    fn the_complement_must_be_empty_or_reach_k() {
        assert!(complement_ok(18.0, 18.0, 5));
        assert!(complement_ok(13.0, 18.0, 5));
        assert!(!complement_ok(16.0, 18.0, 5));
        assert!(!complement_ok(17.0, 18.0, 2));
        // Approximate counts from two sources may cross.
        assert!(complement_ok(18.5, 18.0, 5));
    }
}
