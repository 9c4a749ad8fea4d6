//! Which rows answer a query: the five [`Source`]s and the rules that choose one.
//!
//! - [`Source::VisitsDaily`] — per UTC day and dimension value, plain counts (distinct
//!   visitors, visits, pageviews…): unfiltered reports by at most one visit dimension or page,
//!   event name or host, or by day/week/month — and the same under one filter value
//!   ([`DailyFilter`]: a page, an event name or a visit property) by the dimensions its
//!   filtered rows are written for; and under any filter on its one dimension alone (the
//!   unfiltered rows whose value passes: `dimension_filter`). Visitors over closed days are a sum (hashes rotate
//!   daily); today and unbuilt days add `uniq` states.
//! - [`Source::Visits`] — one row per visit. Used when every dimension and filter is a visit or
//!   visitor property (source, campaign, entry page, country, device…), time, or `has_done`
//!   (whole visitors: `visitor_id IN` a set made from events).
//! - [`Source::Hourly`] — the event rollups (materialized views), on days the rollup job has
//!   checked, else raw events in the same shape: visitors, pageviews and events by page, event
//!   name, host, goal and time, for time zones with whole-hour offsets.
//! - [`Source::Events`] — raw events: everything else that needs event rows (props, revenue,
//!   engagement, app performance, realtime).
//! - [`Source::VisitHits`] — each hit beside its visit's properties, from the visit rows'
//!   stored hits (`016_visit_hits.sql`): event-level dimensions or filters (page, goal, event
//!   name, host, time) combined with visit-level ones or with visit metrics (bounce rate of
//!   visits that reached a goal, visitors by page from one source, a page's visits and
//!   duration), and visitor facts (country, device…) under a hit filter the rollups do not
//!   answer (a page pattern: one row per visit, fewer rows than raw events), or under a pattern
//!   or negation the rollups answer only by merging every page's `uniq` states. Days without
//!   such a build are derived as for [`Source::Joined`].
//! - [`Source::Joined`] — raw events joined to their visit, derived per query: the same
//!   combinations when they need what visit rows do not carry (props, revenue, engagement),
//!   or rollups are off.
//!
//! A [`Query::bounded`] query (differential privacy's, whose rows must carry visitor ids to
//! clamp each one's contribution) is never answered from [`Source::VisitsDaily`] or
//! [`Source::Hourly`]: visit-level questions read visit rows, hit-level ones raw events or hits.
//!
//! How each source's rows are read is in [`super::rows`].

use chrono::{NaiveDateTime, Timelike};

use super::labels::{stored_value, PLACES};
use super::visits::{
    DAILY_DIMS, EVENT_DAILY_DIMS, FILTERED_DIMS, FILTER_HIT_KEYS, FILTER_VISIT_KEYS,
};
use super::vocab::{Dim, DimKind, Filter, Level, Metric, Op, Query, TimeBucket};
use crate::Error;
use veil_schemas::sql;
use veil_schemas::sql::{lit, Sql};

/// The rows a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Visit rows (rollup table ∪ derived).
    Visits,
    /// The event rollups: `events_daily` for whole UTC days, `events_hourly` for the rest.
    Hourly,
    /// The per-dimension daily visit rollup (`visits_daily`) for whole built UTC days, visit
    /// rows aggregated on the fly for the rest.
    VisitsDaily,
    /// Raw events.
    Events,
    /// Raw events with their visit's properties.
    Joined,
    /// Hits from the visit rows' hit arrays, with their visit's properties (as [`Self::Joined`]).
    VisitHits,
}

impl Source {
    /// The name `meta.source` reports.
    pub fn name(self) -> &'static str {
        match self {
            Source::Visits => "visits",
            Source::VisitsDaily => "visits_daily",
            Source::Hourly => "event_rollups",
            Source::Events => "events",
            Source::Joined => "joined",
            Source::VisitHits => "visit_hits",
        }
    }

    /// Whether its rows are hits with their visit's properties (`v_…` columns).
    pub fn hits_with_visits(self) -> bool {
        matches!(self, Source::Joined | Source::VisitHits)
    }
}

/// Whether a source reads recorded visit builds (the caller fetches them first).
pub fn uses_builds(src: Source) -> bool {
    match src {
        Source::Visits | Source::VisitsDaily | Source::Hourly | Source::VisitHits => true,
        Source::Joined | Source::Events => false,
    }
}

/// Whether a query that mixes hits and visits can read built days from the visit rows' hits
/// (`016_visit_hits.sql`) instead of sessionizing raw events: every hit-level thing it asks
/// about is a hit's time, event name, path, host or custom property (or a goal) and every
/// metric counts visitors, visits, pageviews or events or is made of visit measures.
/// Engagement, revenue and app percentiles are not carried by visit rows.
pub fn joined_from_visits(q: &Query) -> bool {
    q.rollups
        && !q.realtime
        && q.metrics.iter().all(|m| {
            matches!(
                m,
                Metric::Visitors
                    | Metric::Visits
                    | Metric::Pageviews
                    | Metric::Events
                    | Metric::ViewsPerVisit
                    | Metric::BounceRate
                    | Metric::VisitDuration
                    | Metric::SessionsPerUser
                    | Metric::ConversionRate
                    | Metric::GroupConversionRate
                    | Metric::Percentage
                    | Metric::Dau
            )
        })
}

/// Checks combinations no source can answer.
pub fn check(q: &Query) -> Result<(), Error> {
    let percentiles = q.metrics.iter().any(|m| {
        matches!(
            m,
            Metric::LaunchTimeP50 | Metric::LaunchTimeP95 | Metric::LatencyP50 | Metric::LatencyP95
        )
    });
    if percentiles && source(q, false).hits_with_visits() {
        return Err(Error::BadRequest(
            "`metrics`: performance percentiles cannot be combined with visit metrics or visit:source/utm/entry/exit dimensions or filters".into(),
        ));
    }
    Ok(())
}

/// The dimensions a filter reads of the rows it keeps: a `has_done` part reads events in a
/// set of its own and keeps whole visitors (`visitor_id IN (…)`), which any row with a
/// visitor id can be asked — its event conditions do not make the question one of hits
/// (visitors by country who signed up read visit rows, not every raw event).
fn row_filter_dims(f: &Filter) -> Vec<&Dim> {
    match f {
        Filter::Cond { dim, .. } => vec![dim],
        Filter::And(v) | Filter::Or(v) => v.iter().flat_map(row_filter_dims).collect(),
        Filter::Not(x) => row_filter_dims(x),
        Filter::HasDone { .. } => Vec::new(),
    }
}

fn levels(q: &Query) -> (bool, bool) {
    let filter_dims = q.filter.as_ref().map(row_filter_dims).unwrap_or_default();
    let dims = q.dimensions.iter().chain(filter_dims);
    let (mut ev, mut vi) = (false, false);
    for d in dims {
        match d.level() {
            Level::Event => ev = true,
            Level::Visit => vi = true,
            Level::Both => {}
        }
    }
    for m in &q.metrics {
        match m.level() {
            Level::Event => ev = true,
            Level::Visit => vi = true,
            Level::Both => {}
        }
    }
    (ev, vi)
}

/// The source that answers `q`.
pub fn source(q: &Query, child_directed: bool) -> Source {
    // The differencing guard's "everyone" question, `f or not f` (`stats::guard_plan`), is
    // counted by `f`'s source: the same rows counted the same way, so the two counts differ
    // only by the visitors `f` leaves out (a page pattern's `f` reads visit rows; "f or not
    // f" merged every page's `uniq` states of the event rollups, or read raw events for a
    // property, at 50M events 5 s and more).
    if let Some(Filter::Or(v)) = &q.filter {
        if let [a, Filter::Not(b)] = v.as_slice() {
            if **b == *a {
                let mut fq = q.clone();
                fq.filter = Some(a.clone());
                return source(&fq, child_directed);
            }
        }
    }
    let (ev, vi) = levels(q);
    if child_directed {
        return if hourly_ok(q) {
            Source::Hourly
        } else {
            Source::Events
        };
    }
    match (ev, vi) {
        (_, _) if visits_daily_ok(q) => Source::VisitsDaily,
        (false, _) => Source::Visits,
        (true, false) if hourly_ok(q) && !(wide_under_hits(q) && visitor_facts_under_hits(q)) => {
            Source::Hourly
        }
        (true, false) if visitor_facts_under_hits(q) => Source::VisitHits,
        (true, false) => Source::Events,
        (true, true) if joined_from_visits(q) => Source::VisitHits,
        (true, true) => Source::Joined,
    }
}

/// Whether `q` asks only about visitor facts (country, region, city, device, browser, OS…,
/// or nothing) under a filter on hits (a page pattern, several goals, a custom property):
/// each visit row carries the facts and its hits, so the visits with a matching hit answer
/// it one row per visit ([`Source::VisitHits`]) — about half the rows and bytes raw events
/// would be (1M events, visitors by country under "page contains": 25 against 50 ms).
/// Behavioural filters (`has_done`) keep their raw-events form.
fn visitor_facts_under_hits(q: &Query) -> bool {
    joined_from_visits(q)
        && utc_aligned(q)
        && q.filter
            .as_ref()
            .is_some_and(|f| !f.behavioural() && !f.is_tautology())
        && q.dimensions.iter().all(|d| match d.kind {
            DimKind::Visitor(_) | DimKind::CountryName | DimKind::PlaceName(_) => true,
            // A visit's hits are all on its UTC day.
            DimKind::Time(TimeBucket::Day | TimeBucket::Week | TimeBucket::Month) => {
                local_days_utc(q)
            }
            _ => false,
        })
        && !q.metrics.contains(&Metric::Dau)
}

/// Whether `q` asks visitors, pageviews or events under a hit filter that keeps many pages,
/// event names or hosts (a pattern, a negation, a value of any case): the event rollups would
/// merge one `uniq` state per kept key and hour or day — visitors by day under "page is not
/// /pricing" at 50M events is 45 000 states, 3.5 s alone, against 1.1–1.8 s for the visits
/// with such a hit ([`Source::VisitHits`], whose visit rows the screen's other panels read).
/// So do two keys or more (`is` with several values, or an `or` of hit conditions): at 10M
/// events visitors by day under "page is /pricing or /blog" merged 1.5–1.9 s of `uniq`
/// states, where the visit rows the screen's other panels read answer it in the same
/// statement ([`crate::screen`]). A plain `is` (one page, a goal, an event name) stays on the
/// rollups: its key is found by the primary key.
fn wide_under_hits(q: &Query) -> bool {
    fn on_hits(f: &Filter) -> bool {
        f.dims().iter().any(|d| matches!(d.kind, DimKind::Event(_)))
    }
    fn wide(f: &Filter) -> bool {
        match f {
            Filter::Cond {
                op,
                dim,
                case_sensitive,
                values,
            } => {
                matches!(dim.kind, DimKind::Event(_))
                    && (*op != Op::Is || !*case_sensitive || values.len() > 1)
            }
            Filter::Or(v) => v.iter().any(wide) || v.iter().filter(|f| on_hits(f)).count() > 1,
            Filter::And(v) => v.iter().any(wide),
            Filter::Not(x) => {
                let dims = x.dims();
                dims.iter().any(|d| matches!(d.kind, DimKind::Event(_)))
            }
            Filter::HasDone { .. } => false,
        }
    }
    q.metrics
        .iter()
        .all(|m| matches!(m, Metric::Visitors | Metric::Pageviews | Metric::Events))
        && q.filter.as_ref().is_some_and(wide)
}

fn hourly_ok(q: &Query) -> bool {
    if q.filter.as_ref().is_some_and(Filter::behavioural) {
        return false; // rollup rows have no visitor hashes
    }
    let whole_hours = |t: NaiveDateTime| t.minute() == 0 && t.second() == 0;
    let dims_ok = |d: &Dim| matches!(d.kind, DimKind::Event(_) | DimKind::Goal | DimKind::Time(_));
    q.rollups
        && !q.bounded
        && !q.realtime
        && whole_hours(q.start)
        && whole_hours(q.end)
        && q.metrics.iter().all(|m| {
            matches!(
                m,
                Metric::Visitors
                    | Metric::Pageviews
                    | Metric::Events
                    | Metric::ConversionRate
                    | Metric::GroupConversionRate
                    | Metric::Percentage
            )
        })
        && q.dimensions.iter().all(dims_ok)
        && q.filter
            .as_ref()
            .map(|f| f.dims().into_iter().all(dims_ok))
            .unwrap_or(true)
}

/// Whether the local days of `q` start and end at UTC midnight (daily rollups can bucket).
pub(super) fn utc_aligned(q: &Query) -> bool {
    q.start.time() == chrono::NaiveTime::MIN && q.end.time() == chrono::NaiveTime::MIN
}

/// Whether every local day of `q`'s range is a UTC day, so rows kept per UTC day (or per
/// visit, visits being cut at UTC midnight) can be put in its day, week and month buckets:
/// the range is [`utc_aligned`] and the site's zone is at offset zero at every UTC midnight
/// from its start to its end. A zone with summer time whose range ends in winter
/// (Europe/London over 12 months) is aligned but is not: in summer its days start at 23:00 UTC.
pub(super) fn local_days_utc(q: &Query) -> bool {
    use chrono::{Offset, TimeZone};
    if !utc_aligned(q) {
        return false;
    }
    let tz = super::dates::timezone(&q.tz);
    let mut d = q.start.date();
    while d <= q.end.date() {
        let at = d.and_time(chrono::NaiveTime::MIN);
        if tz.offset_from_utc_datetime(&at).fix().local_minus_utc() != 0 {
            return false;
        }
        match d.succ_opt() {
            Some(next) => d = next,
            None => break,
        }
    }
    true
}

/// What a `visits_daily` row's `dim` holds for a dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DailyDim {
    /// A visit column (`dim` is its name).
    Visit(&'static str),
    /// An event column (`dim` is `event:` and its name).
    Event(&'static str),
}

pub(super) fn daily_dim(d: &Dim) -> Option<DailyDim> {
    match d.kind {
        // Windows' release is in the OS name, which a row of another dimension lacks.
        DimKind::Visitor("os_version") => None,
        DimKind::Visit(c) | DimKind::Visitor(c) | DimKind::PlaceName(c)
            if DAILY_DIMS.contains(&c) =>
        {
            Some(DailyDim::Visit(c))
        }
        DimKind::CountryName => Some(DailyDim::Visit("country_code")),
        DimKind::Event(c) if EVENT_DAILY_DIMS.contains(&c) => Some(DailyDim::Event(c)),
        _ => None,
    }
}

/// A filter the daily rollup's filtered rows answer ([`super::visits::filtered_dim`]): one
/// case-sensitive `is` with one value, on a visit column of [`FILTER_VISIT_KEYS`] or a hit's
/// page or event name. `key` is the row's filter key, `value` the stored value it selects
/// ([`stored_value`]: the source `Direct / None` is stored empty, the browser `Microsoft Edge`
/// as `Edge`), or for a region or city the code: its rows in builds of
/// [`super::visits::CODES_LAYOUT`], in older ones those of every stored value with that code
/// (`code`: `DE-BY|Bavaria`, or `DE-BY` stored alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DailyFilter {
    /// A visit column, or `event:pathname` / `event:name`.
    pub key: &'static str,
    /// The stored value.
    pub value: String,
    /// A place code (`region`, `city`): stored with its name after a `|` (`DE-BY|Bavaria`),
    /// so the rows of every stored value with this code are read ([`dim_cond`]: builds before
    /// [`super::visits::CODES_LAYOUT`] key the stored value, later ones the code).
    pub code: bool,
}

impl DailyFilter {
    /// Whether the key is about a hit (page, event name, host) rather than the visit.
    pub fn about_hit(&self) -> bool {
        self.key.starts_with("event:")
    }
}

/// The filter of `q` as a [`DailyFilter`], if it is one.
pub(super) fn daily_filter(q: &Query) -> Option<DailyFilter> {
    let mut f = q.filter.as_ref()?;
    while let Filter::And(v) = f {
        match v.as_slice() {
            [one] => f = one,
            _ => return None,
        }
    }
    let Filter::Cond {
        op: Op::Is,
        dim,
        values,
        case_sensitive: true,
    } = f
    else {
        return None;
    };
    let [v] = values.as_slice() else {
        return None;
    };
    if dim.kind == DimKind::Goal {
        // A goal completed by a custom event: that event name (one goal of the name).
        let mut goals = q.event_goals.iter().filter(|(g, _)| g == v);
        return match (goals.next(), goals.next()) {
            (Some((_, event)), None) => Some(DailyFilter {
                key: "event:name",
                value: event.clone(),
                code: false,
            }),
            _ => None,
        };
    }
    let key: &'static str = match dim.kind {
        DimKind::Visit(c) | DimKind::Visitor(c) => FILTER_VISIT_KEYS.iter().find(|k| **k == c)?,
        DimKind::Event(c) => FILTER_HIT_KEYS
            .iter()
            .find(|k| k.strip_prefix("event:") == Some(c))?,
        _ => return None,
    };
    // Filter values are Plausible's words (`Direct / None`, `Microsoft Edge`); the rows are
    // keyed by stored ones. A word several stored values read as reads visit rows instead.
    // A place code selects its stored values with any name (`code`).
    if PLACES.contains(&key) {
        return Some(DailyFilter {
            key,
            value: v.clone(),
            code: true,
        });
    }
    let value = stored_value(key, v)?;
    Some(DailyFilter {
        key,
        value,
        code: false,
    })
}

/// The filter of `q` when it only narrows the values of `q`'s one dimension (top pages under
/// "page contains blog", sources under "source is not Google", countries under "country is
/// DE or FR"): every hit or visit of a report row has the row's value, so the filter keeps a
/// row whole or drops it, and the answer is the unfiltered one's rows whose value passes.
/// [`Source::VisitsDaily`] reads it so — the unfiltered per-day rows, the filter a condition
/// on their value (`rows_and_conds`) — where the filter alone would read every hit. Not
/// with shares of a total (percentage, conversion rates: their denominator is the filtered
/// total) nor `has_done` (about the visitor's other hits).
/// The filter whose filtered rows a [`Source::VisitsDaily`] question reads: its
/// [`DailyFilter`], but none for a filter on its dimension alone (the unfiltered rows then,
/// [`dimension_filter`]).
pub(super) fn rows_filter(q: &Query) -> Option<DailyFilter> {
    match dimension_filter(q) {
        Some(_) => None,
        None => daily_filter(q),
    }
}

/// The condition on `visits_daily.dim` that selects the rows of `dim` (a dimension, or the
/// filtered dimension of `f`, [`super::visits::filtered_dim`], perhaps after the bounded
/// prefix): that one, or for a place code also those of its values stored with a name (`dim`
/// then `|`: between `dim|` and `dim}` byte-wise, `}` following `|`), each visit having one.
pub(super) fn dim_cond(f: Option<&DailyFilter>, dim: &str) -> Sql {
    if f.is_some_and(|f| f.code) {
        sql!(
            "(dim = {0} OR (dim > {1} AND dim < {2}))",
            lit(dim),
            lit(&format!("{dim}|")),
            lit(&format!("{dim}}}"))
        )
    } else {
        sql!("dim = {}", lit(dim))
    }
}

pub(super) fn dimension_filter(q: &Query) -> Option<&Filter> {
    let f = q.filter.as_ref()?;
    let [d] = q.dimensions.as_slice() else {
        return None;
    };
    let same = f
        .conds()
        .iter()
        .all(|c| matches!(c, Filter::Cond { dim, .. } if dim.kind == d.kind));
    let shares = q.metrics.iter().any(|m| {
        matches!(
            m,
            Metric::Percentage | Metric::ConversionRate | Metric::GroupConversionRate
        )
    });
    (daily_dim(d).is_some() && !f.behavioural() && same && !shares).then_some(f)
}

fn visits_daily_ok(q: &Query) -> bool {
    let plain: Vec<&Dim> = q
        .dimensions
        .iter()
        .filter(|d| !matches!(d.kind, DimKind::Time(_)))
        .collect();
    // A filter: one the filtered rows answer, by a dimension they are written for (pages only
    // under a visit key).
    let filter_ok = match (&q.filter, daily_filter(q)) {
        (None, _) => true,
        (Some(_), _) if dimension_filter(q).is_some() => true,
        (Some(_), None) => false,
        // Views per visit under a page or event filter are the visits' own pageviews, which
        // the filtered rows (counting the matching hits) do not keep.
        (Some(_), Some(f)) if f.about_hit() && q.metrics.contains(&Metric::ViewsPerVisit) => false,
        (Some(_), Some(f)) => plain.iter().all(|d| match daily_dim(d) {
            Some(DailyDim::Visit(c)) => FILTERED_DIMS.contains(&c),
            Some(DailyDim::Event(c)) => {
                !f.about_hit()
                    && FILTERED_DIMS
                        .iter()
                        .any(|x| x.strip_prefix("event:") == Some(c))
            }
            None => false,
        }),
    };
    let time_ok = match q.time_bucket() {
        None => true,
        Some(TimeBucket::Hour | TimeBucket::Minute) => false,
        Some(_) => local_days_utc(q) && plain.is_empty(),
    };
    let event_dim = plain
        .iter()
        .any(|d| matches!(daily_dim(d), Some(DailyDim::Event(_))));
    q.rollups
        && !q.bounded
        && !q.realtime
        && filter_ok
        && time_ok
        && plain.len() <= 1
        && plain.iter().all(|d| daily_dim(d).is_some())
        && (!event_dim
            || q.metrics.iter().all(|m| {
                matches!(
                    m,
                    Metric::Visitors | Metric::Pageviews | Metric::Events | Metric::Percentage
                )
            }))
        && q.metrics.iter().all(|m| {
            matches!(
                m,
                Metric::Visitors
                    | Metric::Visits
                    | Metric::Pageviews
                    | Metric::Events
                    | Metric::ViewsPerVisit
                    | Metric::BounceRate
                    | Metric::VisitDuration
                    | Metric::SessionsPerUser
                    | Metric::Percentage
            )
        })
}
