//! Expressions over a source's rows: a dimension's value, a filter's condition, a metric's
//! aggregate, whether a hit completes a goal. Column and function names come from the
//! vocabulary's allow-lists; every value (filter values, goal names, property names, the time
//! zone) goes through [`lit`]. Each returns [`Sql`].

use veil_schemas::sql;
use veil_schemas::sql::{date, lit, lit_list, utc, Sql};

use super::labels::{country_name_sql, label_sql, place_name_sql};
use super::source::Source;
use super::visits::{site_cond, HAS_VISITOR};
use super::vocab::{
    glob_to_regex, Dim, DimKind, Filter, Metric, Op, Query, TimeBucket, REGEX_SIZE_LIMIT,
};
use crate::site::{Goal, SiteView};

/// SQL for whether an event row completes `g`.
pub fn goal_cond(g: &Goal) -> Sql {
    match (&g.event_name, &g.page_path) {
        (Some(n), _) => sql!("name = {}", lit(n)),
        (None, Some(p)) => sql!(
            "(name = 'pageview' AND match(pathname, {}))",
            lit(&glob_to_regex(p))
        ),
        (None, None) => Sql::new("0"),
    }
}

/// Whether an event's revenue counts: it is in the currency of the revenue goal the event
/// completes (Plausible's revenue goals; Veil converts no currencies, so revenue sent in
/// another currency is left out). `0` when the site has no revenue goal.
fn revenue_cond(q: &Query) -> Sql {
    if q.revenue_goals.is_empty() {
        return Sql::new("0");
    }
    let arms: Vec<Sql> = q
        .revenue_goals
        .iter()
        .map(|g| {
            sql!(
                "{}, {}",
                goal_cond(g),
                lit(g.currency.as_deref().unwrap_or_default())
            )
        })
        .collect();
    sql!("revenue_currency = multiIf({}, '')", Sql::join(arms, ", "))
}

/// The query's time zone as a literal.
fn zone(q: &Query) -> Sql {
    lit(&q.tz)
}

/// The label of time bucket `b` of instant column `ts`, in the query's time zone.
fn time_expr(b: TimeBucket, ts: &'static str, q: &Query) -> Sql {
    let tz = zone(q);
    match b {
        // `toStartOfMinute` exists on ClickHouse 18.16 and 26 alike, and `toString(t, zone)`
        // writes `YYYY-MM-DD HH:MM:SS` on both (formatDateTime's `%M` is the minute on 18.16
        // but the month's name on 26).
        TimeBucket::Minute => sql!("toString(toStartOfMinute({}), {})", ts, tz),
        TimeBucket::Hour => sql!("formatDateTime({}, '%Y-%m-%d %H:00:00', {})", ts, tz),
        TimeBucket::Day => sql!("toString(toDate({}, {}))", ts, tz),
        // Plausible's week buckets start no earlier than the range: the first is labelled
        // with the range's first day when that is not a Monday.
        TimeBucket::Week => sql!(
            "toString(greatest(toMonday(toDate({}, {})), {}))",
            ts,
            tz,
            date(q.from)
        ),
        TimeBucket::Month => sql!("toString(toStartOfMonth(toDate({}, {})))", ts, tz),
    }
}

/// The instant column of `src` rows.
pub(super) fn ts_col(src: Source) -> &'static str {
    match src {
        Source::Visits => "start",
        Source::Hourly => "hour",
        Source::VisitsDaily => "toDateTime(day, 'UTC')",
        Source::Events | Source::Joined | Source::VisitHits => "timestamp",
    }
}

/// The SQL for a dimension's value on `src` rows.
pub(super) fn dim_expr(d: &Dim, src: Source, q: &Query, site: &SiteView) -> Sql {
    match &d.kind {
        DimKind::Event(_) if src == Source::VisitsDaily => Sql::new("value"),
        DimKind::Event(c) => Sql::new(c),
        // Stored words answered in Plausible's vocabulary (`labels`).
        DimKind::Visitor(c) if src == Source::VisitsDaily => label_sql(c, Sql::new("value"), None),
        DimKind::Visitor(c) => {
            let os = (*c == "os_version").then(|| Sql::new("os"));
            label_sql(c, Sql::new(c), os)
        }
        DimKind::Visit(c) => {
            let col = match src {
                Source::Joined | Source::VisitHits => sql!("v_{}", *c),
                Source::VisitsDaily => Sql::new("value"),
                _ => Sql::new(c),
            };
            label_sql(c, col, None)
        }
        DimKind::Goal => {
            let items: Vec<Sql> = site
                .goals
                .iter()
                .map(|g| sql!("if({}, {}, '')", goal_cond(g), lit(&g.name)))
                .collect();
            if items.is_empty() {
                Sql::new("arrayJoin(emptyArrayString())")
            } else {
                sql!(
                    "arrayJoin(arrayFilter(x -> x != '', [{}]))",
                    Sql::join(items, ", ")
                )
            }
        }
        DimKind::PlaceName(c) => place_name_sql(match src {
            Source::VisitsDaily => Sql::new("value"),
            _ => Sql::new(c),
        }),
        DimKind::CountryName => country_name_sql(if src == Source::VisitsDaily {
            "value"
        } else {
            "country_code"
        }),
        DimKind::Prop(k) => sql!(
            "if(has(prop_keys, {0}), prop_values[indexOf(prop_keys, {0})], '(none)')",
            lit(k)
        ),
        DimKind::Time(b) => time_expr(*b, ts_col(src), q),
    }
}

/// SQL for a filter over [`joined_rows`](super::rows::joined_rows).
pub fn joined_filter(f: &Filter, q: &Query, site: &SiteView) -> Sql {
    filter_sql(f, Source::Joined, q, site)
}

/// SQL for a filter over `src` rows.
pub(super) fn filter_sql(f: &Filter, src: Source, q: &Query, site: &SiteView) -> Sql {
    match f {
        Filter::And(v) => sql!(
            "({})",
            Sql::join(v.iter().map(|x| filter_sql(x, src, q, site)), " AND ")
        ),
        Filter::Or(v) => sql!(
            "({})",
            Sql::join(v.iter().map(|x| filter_sql(x, src, q, site)), " OR ")
        ),
        Filter::Not(x) => sql!("(NOT {})", filter_sql(x, src, q, site)),
        // Visitors with a matching event in the query's range (bots excluded, as everywhere).
        // `GLOBAL`: in cluster mode the set is made once and sent to the shards.
        Filter::HasDone { not, inner } => {
            let not: &'static str = if *not { "NOT " } else { "" };
            sql!(
                "(visitor_id GLOBAL {}IN (SELECT visitor_id FROM events WHERE {} AND timestamp >= {} \
                 AND timestamp < {} AND bot = '' AND {} AND {}))",
                not,
                site_cond(&q.site),
                utc(q.start),
                utc(q.end),
                HAS_VISITOR,
                filter_sql(inner, Source::Events, q, site)
            )
        }
        Filter::Cond {
            op,
            dim,
            values,
            case_sensitive,
        } => {
            let positive = if dim.kind == DimKind::Goal {
                goal_filter(*op, values, *case_sensitive, site)
            } else {
                let col = dim_expr(dim, src, q, site);
                let (col, vals): (Sql, Vec<String>) = if *case_sensitive {
                    (col, values.clone())
                } else if matches!(op, Op::Matches | Op::MatchesNot) {
                    (col, values.iter().map(|v| format!("(?i){v}")).collect())
                } else {
                    (
                        sql!("lowerUTF8({})", col),
                        values.iter().map(|v| v.to_lowercase()).collect(),
                    )
                };
                match op {
                    Op::Is | Op::IsNot => sql!("{} IN {}", col, lit_list(&vals)),
                    Op::Contains | Op::ContainsNot => sql!(
                        "({})",
                        Sql::join(
                            vals.iter()
                                .map(|v| sql!("position({}, {}) > 0", col, lit(v))),
                            " OR "
                        )
                    ),
                    Op::Matches | Op::MatchesNot => sql!(
                        "({})",
                        Sql::join(
                            vals.iter().map(|v| sql!("match({}, {})", col, lit(v))),
                            " OR "
                        )
                    ),
                }
            };
            if op.negated() {
                sql!("(NOT {})", positive)
            } else {
                positive
            }
        }
    }
}

/// The stored array of a visit's hits that holds hit column `col` (`016_visit_hits.sql`).
pub(super) fn hit_array(col: &str) -> Option<&'static str> {
    match col {
        "timestamp" => Some("hit_times"),
        "name" => Some("hit_names"),
        "pathname" => Some("hit_paths"),
        "hostname" => Some("hit_hosts"),
        "prop_keys" => Some("hit_prop_keys"),
        "prop_values" => Some("hit_prop_values"),
        _ => None,
    }
}

/// A condition on one stored visit row (with its hit arrays, its properties as `v_…` and the
/// visitor facts) that every visit holding a hit that passes `f` meets — `f` loosened to the
/// visit, so [`Source::VisitHits`] expands only the hits of visits that can match, and the
/// exact per-hit filter then runs on those. A hit condition becomes "some hit of the visit
/// passes it" (`hasAny` for case-sensitive `is`, else `arrayExists` with the lambda's
/// argument named as the hit column, so [`filter_sql`] serves unchanged); conditions on the
/// visit or visitor stay as they are; `and`/`or` keep their shape; `not` of anything about a
/// hit is "some hit passes it" as one lambda over the hits.
pub(super) fn visit_prefilter(f: &Filter, q: &Query, site: &SiteView) -> Sql {
    let src = Source::VisitHits;
    match f {
        Filter::And(v) => sql!(
            "({})",
            Sql::join(v.iter().map(|x| visit_prefilter(x, q, site)), " AND ")
        ),
        Filter::Or(v) => sql!(
            "({})",
            Sql::join(v.iter().map(|x| visit_prefilter(x, q, site)), " OR ")
        ),
        Filter::Not(x) if !about_hits(x) => filter_sql(f, src, q, site),
        Filter::Not(_) => some_hit(f, src, q, site),
        Filter::HasDone { .. } => filter_sql(f, src, q, site),
        Filter::Cond {
            op,
            dim,
            values,
            case_sensitive,
        } => match dim.kind {
            DimKind::Event(c) => {
                let Some(arr) = hit_array(c) else {
                    return Sql::new("1");
                };
                if *op == Op::Is && *case_sensitive {
                    sql!(
                        "hasAny({}, [{}])",
                        arr,
                        Sql::join(values.iter().map(|v| lit(v)), ", ")
                    )
                } else {
                    sql!(
                        "arrayExists(({}) -> {}, {})",
                        c,
                        filter_sql(f, src, q, site),
                        arr
                    )
                }
            }
            DimKind::Goal => sql!(
                "arrayExists((name, pathname) -> {}, hit_names, hit_paths)",
                filter_sql(f, src, q, site)
            ),
            DimKind::Prop(_) => sql!(
                "arrayExists((prop_keys, prop_values) -> {}, hit_prop_keys, hit_prop_values)",
                filter_sql(f, src, q, site)
            ),
            DimKind::Time(_) => some_hit(f, src, q, site),
            _ => filter_sql(f, src, q, site),
        },
    }
}

/// Whether a filter says anything about a hit (page, event name, host, goal, time).
pub(super) fn about_hits(f: &Filter) -> bool {
    f.dims().iter().any(|d| {
        matches!(
            d.kind,
            DimKind::Event(_) | DimKind::Goal | DimKind::Prop(_) | DimKind::Time(_)
        )
    })
}

/// The hit columns filter `f` reads (of `timestamp`, `name`, `pathname`, `hostname`,
/// `prop_keys`, `prop_values`), each once.
pub(super) fn filter_hit_cols(f: &Filter) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for d in f.dims() {
        let cols: &[&'static str] = match d.kind {
            DimKind::Event(c) => &[c],
            DimKind::Goal => &["name", "pathname"],
            DimKind::Prop(_) => &["prop_keys", "prop_values"],
            DimKind::Time(_) => &["timestamp"],
            _ => &[],
        };
        for c in cols {
            if !out.contains(c) {
                out.push(c);
            }
        }
    }
    out
}

/// "Some hit of the visit passes `f`", exactly: one lambda over the hit arrays `f` reads, its
/// arguments named as the hit columns so [`filter_sql`] (over `src` rows' visit columns)
/// serves unchanged.
fn some_hit(f: &Filter, src: Source, q: &Query, site: &SiteView) -> Sql {
    let cols = filter_hit_cols(f);
    if cols.is_empty() {
        return filter_sql(f, src, q, site);
    }
    let arrays: Vec<&'static str> = cols.iter().filter_map(|c| hit_array(c)).collect();
    sql!(
        "arrayExists(({}) -> {}, {})",
        Sql::join(cols.iter().map(|c| Sql::new(c)), ", "),
        filter_sql(f, src, q, site),
        Sql::join(arrays.iter().map(|a| Sql::new(a)), ", ")
    )
}

/// `f` as an exact condition on one visit row (plain column names, as [`Source::Visits`]
/// rows, and the visit's hit arrays): "some hit of the visit passes `f`". `or` distributes
/// over "some hit", an `and` of one condition about hits with conditions on the visit splits,
/// a case-sensitive `is` on a hit column is `hasAny`; anything else about hits (two hit
/// conditions that must hold of the same hit, `not` of one) is one lambda over the hits.
pub(super) fn visit_level(f: &Filter, q: &Query, site: &SiteView) -> Sql {
    let src = Source::Visits;
    match f {
        Filter::Or(v) => sql!(
            "({})",
            Sql::join(v.iter().map(|x| visit_level(x, q, site)), " OR ")
        ),
        Filter::And(v) if v.iter().filter(|x| about_hits(x)).count() <= 1 => sql!(
            "({})",
            Sql::join(v.iter().map(|x| visit_level(x, q, site)), " AND ")
        ),
        Filter::Cond {
            op: Op::Is,
            dim,
            values,
            case_sensitive: true,
        } if matches!(dim.kind, DimKind::Event(_)) => {
            let arr = match dim.kind {
                DimKind::Event(c) => hit_array(c),
                _ => None,
            };
            match arr {
                Some(arr) => sql!(
                    "hasAny({}, [{}])",
                    arr,
                    Sql::join(values.iter().map(|v| lit(v)), ", ")
                ),
                None => some_hit(f, src, q, site),
            }
        }
        // Two hit conditions that must hold of the same hit, `not` of one, a single one:
        // one lambda over the hits.
        _ if about_hits(f) => some_hit(f, src, q, site),
        _ => filter_sql(f, src, q, site),
    }
}

/// What a hit count (`pageviews`: `kind` = `name = 'pageview'`; `events`) adds up over visit
/// rows under filter `f` (plain column names): the hits of each visit that are of that kind
/// and pass `f`, counted in its hit arrays — `cols` the hit columns `f` reads, `name` among
/// them — without expanding them.
pub(super) fn visit_hit_count(
    kind: &'static str,
    f: Option<&Filter>,
    cols: &[&'static str],
    q: &Query,
    site: &SiteView,
) -> Sql {
    sql!("sum({})", visit_hits_matching(kind, f, cols, q, site))
}

/// [`visit_hit_count`]'s count for one visit row (not summed).
pub(super) fn visit_hits_matching(
    kind: &'static str,
    f: Option<&Filter>,
    cols: &[&'static str],
    q: &Query,
    site: &SiteView,
) -> Sql {
    let cond = f
        .map(|f| filter_sql(f, Source::Visits, q, site))
        .unwrap_or_else(|| Sql::new("1"));
    let arrays: Vec<&'static str> = cols.iter().filter_map(|c| hit_array(c)).collect();
    sql!(
        "arrayCount(({}) -> {} AND {}, {})",
        Sql::join(cols.iter().map(|c| Sql::new(c)), ", "),
        kind,
        cond,
        Sql::join(arrays.iter().map(|a| Sql::new(a)), ", ")
    )
}

/// A goal filter: the goals whose names the condition selects, as an OR of their conditions.
fn goal_filter(op: Op, values: &[String], case_sensitive: bool, site: &SiteView) -> Sql {
    let norm = |s: &str| {
        if case_sensitive {
            s.to_string()
        } else {
            s.to_lowercase()
        }
    };
    let selected: Vec<&Goal> = site
        .goals
        .iter()
        .filter(|g| {
            let name = norm(&g.name);
            values.iter().any(|v| match op {
                Op::Is | Op::IsNot => name == norm(v),
                Op::Contains | Op::ContainsNot => name.contains(&norm(v)),
                Op::Matches | Op::MatchesNot => regex::RegexBuilder::new(v)
                    .case_insensitive(!case_sensitive)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map(|r| r.is_match(&g.name))
                    .unwrap_or(false),
            })
        })
        .collect();
    if selected.is_empty() {
        Sql::new("0")
    } else {
        sql!(
            "({})",
            Sql::join(selected.iter().map(|g| goal_cond(g)), " OR ")
        )
    }
}

/// A custom property's value as a number (0 when absent or not a number).
pub(super) fn prop_num(name: &str) -> Sql {
    sql!(
        "toFloat64OrZero(prop_values[indexOf(prop_keys, {})])",
        lit(name)
    )
}

/// A metric's aggregate over `src` rows.
pub(super) fn metric_sql(m: Metric, src: Source, q: &Query) -> Sql {
    let tz = zone(q);
    match src {
        Source::Visits => match m {
            Metric::Visitors | Metric::Percentage => Sql::new("uniq(visitor_id)"),
            // A row's exits: its visits (the rate is made with stats::exit_rates).
            Metric::Visits | Metric::ExitRate => Sql::new("count()"),
            Metric::Pageviews => Sql::new("sum(pageviews)"),
            Metric::Events => Sql::new("sum(events)"),
            // The same arithmetic as the daily rollup's sums, so both round alike.
            Metric::ViewsPerVisit => rnd(q, Sql::new("sum(pageviews) / count()"), 2),
            Metric::BounceRate => rnd(q, Sql::new("sum(bounce) * 100 / count()"), 0),
            Metric::VisitDuration => rnd(q, Sql::new("sum(duration) / count()"), 0),
            Metric::SessionsPerUser => rnd(q, Sql::new("count() / uniq(visitor_id)"), 2),
            Metric::Dau => rnd(q, sql!("uniq(visitor_id) / uniq(toDate(start, {}))", tz), 1),
            _ => Sql::new("0"),
        },
        Source::VisitsDaily => match m {
            Metric::Visits | Metric::ExitRate => Sql::new("sum(visits_n)"),
            Metric::Pageviews => Sql::new("sum(pv_n)"),
            Metric::Events => Sql::new("sum(ev_n)"),
            Metric::ViewsPerVisit => rnd(q, Sql::new("sum(pv_n) / sum(visits_n)"), 2),
            Metric::BounceRate => rnd(q, Sql::new("sum(bounces_n) * 100 / sum(visits_n)"), 0),
            Metric::VisitDuration => rnd(q, Sql::new("sum(dur_n) / sum(visits_n)"), 0),
            Metric::SessionsPerUser => rnd(q, Sql::new("sum(visits_n) / sum(dv)"), 2),
            // Hashes rotate at UTC midnight: visitors of a range are the sum of its days'.
            _ => Sql::new("sum(dv)"),
        },
        Source::Hourly => match m {
            Metric::Pageviews => Sql::new("countMergeIf(hits, name = 'pageview')"),
            Metric::Events => Sql::new("countMergeIf(hits, name != 'engagement')"),
            _ => Sql::new("uniqMerge(visitors)"),
        },
        Source::Events | Source::Joined | Source::VisitHits => {
            let visit = "(visitor_id, visit)";
            match m {
                Metric::Visitors
                | Metric::ConversionRate
                | Metric::GroupConversionRate
                | Metric::Percentage => {
                    Sql::new("uniq(visitor_id)")
                }
                Metric::Pageviews => Sql::new("countIf(name = 'pageview')"),
                Metric::Events => Sql::new("countIf(name != 'engagement')"),
                Metric::TimeOnPage => rnd(q, Sql::new("sumIf(engagement_ms, name = 'engagement') / 1000 / greatest(countIf(name = 'pageview'), 1)"), 0),
                Metric::ScrollDepth => rnd(q, Sql::new("avgIf(scroll_depth, name = 'engagement' AND scroll_depth > 0)"), 0),
                Metric::TotalRevenue => rnd(q, sql!("sumIf(revenue_micros, {}) / 1000000", revenue_cond(q)), 2),
                Metric::AverageRevenue => rnd(q, sql!("avgIf(revenue_micros, revenue_micros != 0 AND {}) / 1000000", revenue_cond(q)), 2),
                Metric::Dau => rnd(q, sql!("uniq(visitor_id) / uniq(toDate(timestamp, {}))", tz), 1),
                Metric::LaunchTimeP50 => rnd(q, sql!("quantileIf(0.5)({}, has(prop_keys, 'launch_ms'))", prop_num("launch_ms")), 0),
                Metric::LaunchTimeP95 => rnd(q, sql!("quantileIf(0.95)({}, has(prop_keys, 'launch_ms'))", prop_num("launch_ms")), 0),
                Metric::LatencyP50 => rnd(q, sql!("quantileIf(0.5)({}, has(prop_keys, 'latency_ms'))", prop_num("latency_ms")), 0),
                Metric::LatencyP95 => rnd(q, sql!("quantileIf(0.95)({}, has(prop_keys, 'latency_ms'))", prop_num("latency_ms")), 0),
                Metric::Crashes => sql!("countIf(has(prop_keys, 'crash') AND {} >= 1)", prop_num("crash")),
                Metric::Visits | Metric::ExitRate => sql!("uniqExact{}", visit),
                Metric::BounceRate => rnd(q, sql!("100 * uniqExactIf({0}, v_bounce = 1) / uniqExact{0}", visit), 0),
                Metric::VisitDuration => rnd(q, Sql::new("arraySum(arrayMap(t -> t.2, groupUniqArray((cityHash64(visitor_id, visit), v_duration)))) / uniqExact(visitor_id, visit)"), 0),
                Metric::ViewsPerVisit => rnd(q, Sql::new("arraySum(arrayMap(t -> t.2, groupUniqArray((cityHash64(visitor_id, visit), v_pageviews)))) / uniqExact(visitor_id, visit)"), 2),
                Metric::SessionsPerUser => rnd(q, sql!("uniqExact{} / uniq(visitor_id)", visit), 2),
            }
        }
    }
}

/// `round(e, digits)`, or `e` itself for a query that wants unrounded ratios
/// ([`Query::unrounded`]: differential privacy takes their numerators apart).
fn rnd(q: &Query, e: Sql, digits: u8) -> Sql {
    if q.unrounded {
        e
    } else {
        sql!("round({}, {})", e, digits)
    }
}

/// Whether a metric of the `(other)` row is the sum of the folded rows' values.
pub fn additive(m: Metric) -> bool {
    matches!(
        m,
        Metric::Visits
            | Metric::Pageviews
            | Metric::Events
            | Metric::TotalRevenue
            | Metric::Crashes
    )
}
