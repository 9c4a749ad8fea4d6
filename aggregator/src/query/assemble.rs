//! The whole report statement for a query: the chosen source's rows ([`super::rows`]), the
//! dimension, metric and filter expressions ([`super::expr`]), grouping and order, and the
//! k-anonymity fold of small rows into one `(other)` row.
//!
//! Every query's columns come out as `d0…` (dimensions), `m0…` (metrics), then `k` (the number
//! k-anonymity is checked against: visitors, or events for child-directed sites).

use veil_schemas::sql;
use veil_schemas::sql::{utc, Sql};

use super::build::Build;
use super::expr::{additive, dim_expr, filter_sql, metric_sql, ts_col, visit_prefilter};
use super::rows::{hourly_rows, joined_rows, raw_joined_rows, visit_rows, visits_daily_rows};
use super::source::{source, Source};
use super::visits::site_cond;
use super::vocab::{Metric, Query};
use crate::site::SiteView;

/// `ASC` or `DESC`.
fn direction(desc: bool) -> &'static str {
    if desc {
        "DESC"
    } else {
        "ASC"
    }
}

/// The full SQL for `q` on `site`, given the recorded visit builds (latest per UTC day).
///
/// With `fold = Some(k)` a breakdown (dimensions, none of them time) is folded in SQL: rows
/// with fewer than k visitors become one row whose counts (visitors too) are the sums of the
/// folded rows', shown only if the folded rows' distinct visitors — `k`: the exact union of
/// their `uniq` states, or on built days its lower bound — reach k. Output: `shown` (0 for
/// the folded row), `d…`, `m…`, `k`, `n` (rows folded).
pub fn sql(q: &Query, site: &SiteView, built: &[Build], fold: Option<u64>) -> Sql {
    let inner = inner_sql(q, site, built, fold);
    let Some(kmin) = fold.filter(|_| !q.dimensions.is_empty() && q.time_bucket().is_none()) else {
        return inner;
    };
    let nd = q.dimensions.len();
    let mut select = vec![sql!("toUInt8(k >= {}) AS shown", kmin)];
    select.extend((0..nd).map(|i| sql!("if(shown, d{0}, '') AS g{0}", i)));
    for (i, m) in q.metrics.iter().enumerate() {
        select.push(
            if additive(*m)
                || matches!(
                    m,
                    Metric::Visitors | Metric::ConversionRate | Metric::Percentage
                )
            {
                sql!("if(shown, any(m{0}), sum(m{0})) AS o{0}", i)
            } else {
                sql!("any(m{0}) AS o{0}", i)
            },
        );
    }
    select.push(if site.child_directed {
        Sql::new("sum(k) AS ok")
    } else if source(q, false) == Source::VisitsDaily {
        // Closed days carry plain per-day counts, not hashes: their part of the union is at
        // least the sum over days of the largest folded row of each day (days never share a
        // hash). The other days' part is exact (the states of their rows under k: a row at
        // or over k on some day is never folded). The sum is a lower bound, so a fold shown
        // because of it has at least k visitors; one under it is hidden.
        sql!("arraySum(arrayMap(d -> arrayReduce('max', arrayMap(t -> if(t.1 = d, t.2, toUInt64(0)), {0})), arrayDistinct(arrayMap(t -> t.1, {0})))) + uniqMerge(ks) AS ok", "groupArrayArray(kd)")
    } else {
        Sql::new("uniqMerge(ks) AS ok")
    });
    select.push(Sql::new("count() AS n"));
    let groups = std::iter::once(Sql::new("shown")).chain((0..nd).map(|i| sql!("g{}", i)));
    let order =
        std::iter::once(Sql::new("shown DESC")).chain(q.order_by.iter().map(|(i, desc)| {
            let col = if *i < nd {
                sql!("g{}", *i)
            } else {
                sql!("o{}", *i - nd)
            };
            sql!("{} {}", col, direction(*desc))
        }));
    sql!(
        "SELECT {} FROM ({}) GROUP BY {} ORDER BY {}",
        Sql::join(select, ", "),
        inner,
        Sql::join(groups, ", "),
        Sql::join(order, ", ")
    )
}

/// The report's rows before folding; with `fold = Some(k)`, also what the fold needs (`ks`,
/// and `kd` for [`Source::VisitsDaily`]).
fn inner_sql(q: &Query, site: &SiteView, built: &[Build], fold: Option<u64>) -> Sql {
    let src = source(q, site.child_directed);
    let mut select: Vec<Sql> = q
        .dimensions
        .iter()
        .enumerate()
        .map(|(i, d)| sql!("{} AS d{}", dim_expr(d, src, q, site), i))
        .collect();
    select.extend(
        q.metrics
            .iter()
            .enumerate()
            .map(|(i, m)| sql!("{} AS m{}", metric_sql(*m, src, q), i)),
    );
    let k = match (src, site.child_directed) {
        (Source::Hourly, true) => "countMerge(hits)",
        (Source::Hourly, false) => "uniqMerge(visitors)",
        (Source::VisitsDaily, _) => "sum(dv)",
        (_, true) => "count()",
        (_, false) => "uniq(visitor_id)",
    };
    select.push(sql!("{} AS k", k));
    if let Some(kmin) = fold {
        let ks = match (src, site.child_directed) {
            (_, true) => Sql::new("count()"),
            (Source::Hourly, false) => Sql::new("uniqMergeState(visitors)"),
            (Source::VisitsDaily, false) => {
                sql!("uniqMergeStateIf(s, b = 0 AND dv < {})", kmin)
            }
            (_, false) => Sql::new("uniqState(visitor_id)"),
        };
        select.push(sql!("{} AS ks", ks));
        if src == Source::VisitsDaily {
            select.push(Sql::new("groupArrayIf((day, dv), b = 1) AS kd"));
        }
    }
    let (from, mut conds) = match src {
        Source::Visits => (visit_rows(q, built), Vec::new()),
        Source::Hourly => (hourly_rows(q, built), Vec::new()),
        Source::VisitsDaily => (visits_daily_rows(q, built), Vec::new()),
        Source::Events => {
            let range = sql!(
                "{0} AND {1} >= {2} AND {1} < {3}",
                site_cond(&q.site),
                ts_col(src),
                utc(q.start),
                utc(q.end)
            );
            (Sql::new("events"), vec![range, Sql::new("bot = ''")])
        }
        Source::Joined => (raw_joined_rows(q), Vec::new()),
        Source::VisitHits => {
            let pre = q
                .filter
                .as_ref()
                .filter(|f| !f.is_tautology())
                .map(|f| visit_prefilter(f, q, site));
            (joined_rows(q, built, pre.as_ref()), Vec::new())
        }
    };
    // `x or not x` keeps every row: visit hits may then leave out the hit columns it names.
    let tautology = src == Source::VisitHits && q.filter.as_ref().is_some_and(|f| f.is_tautology());
    if let Some(f) = q.filter.as_ref().filter(|_| !tautology) {
        conds.push(filter_sql(f, src, q, site));
    }
    let mut s = sql!("SELECT {} FROM {}", Sql::join(select, ", "), from);
    if !conds.is_empty() {
        s.push(sql!(" WHERE {}", Sql::join(conds, " AND ")));
    }
    if !q.dimensions.is_empty() {
        // 18.16 has no positional GROUP BY: group and order by the aliases.
        let nd = q.dimensions.len();
        s.push(sql!(
            " GROUP BY {}",
            Sql::join((0..nd).map(|i| sql!("d{}", i)), ", ")
        ));
        let order = q.order_by.iter().map(|(i, desc)| {
            let col = if *i < nd {
                sql!("d{}", *i)
            } else {
                sql!("m{}", *i - nd)
            };
            sql!("{} {}", col, direction(*desc))
        });
        s.push(sql!(" ORDER BY {}", Sql::join(order, ", ")));
    }
    s
}
