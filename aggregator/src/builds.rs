//! The builds catalog: which recorded build of each UTC day's visits (`visit_builds`, written
//! by the rollup job) reports may read, and a per-request cache of that answer.
//!
//! A day's latest *recorded* build is complete (the rollup job records a build only after
//! writing its rows). A build of the current day (one with a cut) is left out when the events
//! before its cut are no longer the ones it was built from (a hit stored since with an earlier
//! time), or when `events_tail` lacks hits after the cut that `events` has (its materialized
//! view missed an insert: a server killed between the insert and the view's write): that day
//! is then derived from raw events until the next rollup run builds it again.
//!
//! Reports by day and dimension may read the current day from a snapshot instead
//! (the snapshot module); this module asks for one through [`TodaySnapshots`], which the
//! snapshot module implements, so the catalog does not depend on how snapshots are taken.

use std::future::Future;
use std::pin::Pin;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use veil_schemas::sql;
use veil_schemas::sql::{date, utc, utc_text};

use crate::db::{fetch, number};
use crate::query::source::{source, uses_builds};
use crate::query::visits::{BOUNDED_LAYOUT, CODES_LAYOUT, FILTERED_LAYOUT, HITS_LAYOUT};
use crate::query::Query;
use crate::query::{Build, Snap, Source};
use crate::site::SiteView;
use crate::Error;

/// What [`TodaySnapshots::usable`] returns.
pub type SnapFuture<'a> = Pin<Box<dyn Future<Output = Result<Option<Snap>, Error>> + Send + 'a>>;

/// Snapshots of the current day a report may read instead of merging today's build with the
/// hits after its cut (implemented by the snapshot module's `Snapshots`).
pub trait TodaySnapshots: Send + Sync + std::fmt::Debug {
    /// The snapshot of `site` made from build `b` (the current day's latest recorded build,
    /// with cut `cut`) that a report may read now, if there is one.
    fn usable<'a>(
        &'a self,
        client: &'a clickhouse::Client,
        site: &'a str,
        b: &'a Build,
        cut: NaiveDateTime,
    ) -> SnapFuture<'a>;
}

/// The latest recorded visit build of each UTC day in `[from, to]` that reports may read
/// (see the module docs for when the current day's is left out).
pub async fn visit_builds(
    client: &clickhouse::Client,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<Build>, Error> {
    visit_builds_for(client, from, to, None, None).await
}

/// [`visit_builds`], and for `Some((snapshots, site))` the fresh snapshot of the current
/// day's build (`Build::snap`). A build with a fresh snapshot is not checked for late hits
/// again: the snapshot was taken from it while it was trusted, at most the snapshots' maximum
/// age ago, and a report that reads it shows the day as it was then.
async fn visit_builds_for(
    client: &clickhouse::Client,
    from: NaiveDate,
    to: NaiveDate,
    snapshots: Option<(&dyn TodaySnapshots, &str)>,
    shared: Option<&crate::db::Inflight>,
) -> Result<Vec<Build>, Error> {
    let stmt = sql!(
        "SELECT toString(day), max(build), {}, \
             argMax(events, build), argMax(layout, build) FROM visit_builds \
             WHERE day >= {} AND day <= {} GROUP BY day",
        utc_text(veil_schemas::sql::Sql::new("argMax(cut, build)")),
        date(from),
        date(to)
    );
    let rows = read(shared, client, &stmt).await?;
    let mut out = Vec::new();
    for r in &rows {
        let parsed = (|| {
            let day = NaiveDate::parse_from_str(r.get(0)?.as_str()?, "%Y-%m-%d").ok()?;
            let build = number(r.get(1)?)? as u64;
            // A closed day's build has no cut (the epoch, as ClickHouse prints it).
            let cut = NaiveDateTime::parse_from_str(r.get(2)?.as_str()?, "%Y-%m-%d %H:%M:%S")
                .ok()
                .filter(|c| c.date() == day);
            let events = number(r.get(3)?)?;
            let layout = number(r.get(4)?)?;
            Some((
                Build {
                    day,
                    build,
                    cut,
                    snap: None,
                    hits: layout >= f64::from(HITS_LAYOUT),
                    bounded: layout >= f64::from(BOUNDED_LAYOUT),
                    filtered: layout >= f64::from(FILTERED_LAYOUT),
                    codes: layout >= f64::from(CODES_LAYOUT),
                },
                events,
            ))
        })();
        let Some((mut b, events)) = parsed else {
            continue;
        };
        if let (Some((snaps, site)), Some(cut)) = (snapshots, b.cut) {
            if let Some(at) = snaps.usable(client, site, &b, cut).await? {
                b.snap = Some(at);
                out.push(b);
                continue;
            }
        }
        if let Some(cut) = b.cut {
            // The events before the cut must be the ones the build was made from, and
            // `events_tail` (fed by a materialized view, which is not atomic with the insert
            // it follows) must hold every hit after the cut: a server killed between the two
            // writes keeps the events, and the retried insert, deduplicated, never feeds the
            // view again. Either way the day is derived from raw events.
            let day_end = b.day.and_time(NaiveTime::MIN) + chrono::Duration::days(1);
            // Two statements (each a Distributed read in cluster mode): the view's table is
            // counted first, so a hit stored in between makes `events` the larger and the day
            // is read raw, never short.
            let recent = read(
                shared,
                client,
                &sql!(
                    "SELECT count() FROM {} WHERE {} AND timestamp >= {} AND timestamp < {}",
                    crate::query::visits::RECENT,
                    crate::query::visits::from_cut_hour(cut),
                    utc(cut),
                    utc(day_end)
                ),
            )
            .await?;
            let raw = read(
                shared,
                client,
                &sql!(
                    "SELECT countIf(timestamp < {0}), countIf(timestamp >= {0}) FROM events \
                     WHERE timestamp >= {1} AND timestamp < {2}",
                    utc(cut),
                    utc(b.day.and_time(NaiveTime::MIN)),
                    utc(day_end)
                ),
            )
            .await?;
            let cell = |rows: &[serde_json::Value], i: usize| {
                rows.first().and_then(|c| c.get(i)).and_then(number)
            };
            if cell(&raw, 0) != Some(events) || cell(&raw, 1) != cell(&recent, 0) {
                continue;
            }
        }
        out.push(b);
    }
    Ok(out)
}

/// A site, the first and last day of a range, and whether today's snapshot was looked up.
type RangeKey = (String, NaiveDate, NaiveDate, bool);

/// The recorded visit builds one request's queries read, fetched once per date range: a
/// request runs up to seven queries over the same range (guard, report, conversion rates,
/// percentages, and again for a comparison), and checking today's build counts today's events.
#[derive(Debug, Default)]
pub struct Builds {
    /// Builds by site, date range and whether today's snapshot was looked up (with the
    /// site's [`empty_days`]).
    seen: Vec<(RangeKey, Vec<Build>)>,
    snapshots: Option<Box<dyn TodaySnapshots>>,
    /// Reads under way that the request's guard counts may join.
    inflight: Option<crate::db::Inflight>,
    /// The bound its reports wait under (an expensive question in exact mode: `stats::guarded`).
    heavy: Option<crate::cost::Heavy>,
    /// The aggregator's gatherings of reports asked at once ([`crate::screen`]).
    screens: Option<crate::screen::Screens>,
    /// Whether the report running now gathers (`stats::guarded`): it then waits under
    /// [`Self::heavy`] itself.
    gathers: bool,
}

impl Builds {
    /// Builds for one request; reports by day and dimension read today's fresh snapshot
    /// when `snapshots` is given.
    pub fn new(snapshots: Option<Box<dyn TodaySnapshots>>) -> Self {
        Self {
            seen: Vec::new(),
            snapshots,
            inflight: None,
            heavy: None,
            screens: None,
            gathers: false,
        }
    }

    /// These builds, with the aggregator's reads under way (see [`crate::db::Inflight`]).
    pub fn sharing(mut self, inflight: Option<crate::db::Inflight>) -> Self {
        self.inflight = inflight;
        self
    }

    /// Its reports wait for a place under `heavy` ([`crate::cost::Heavy`]).
    pub fn gate(&mut self, heavy: Option<crate::cost::Heavy>) {
        self.heavy = heavy;
    }

    /// These builds, with the aggregator's gatherings of reports ([`crate::screen`]).
    pub fn gathering(mut self, screens: Option<crate::screen::Screens>) -> Self {
        self.screens = screens;
        self
    }

    /// Let the next report gather with others ([`crate::screen`]), or not.
    pub fn gather(&mut self, on: bool) {
        self.gathers = on;
    }

    /// Where the report running now gathers with others, if it does.
    pub fn screens(&self) -> Option<&crate::screen::Screens> {
        self.screens.as_ref().filter(|_| self.gathers)
    }

    /// The aggregator's gatherings, whether or not the report running now gathers.
    pub fn all_screens(&self) -> Option<&crate::screen::Screens> {
        self.screens.as_ref()
    }

    /// The bound its reports wait under, if any.
    pub fn heavy(&self) -> Option<&crate::cost::Heavy> {
        self.heavy.as_ref()
    }

    /// The reads under way the request may join.
    pub fn inflight(&self) -> Option<&crate::db::Inflight> {
        self.inflight.as_ref()
    }

    /// The latest snapshot of the current day any of the request's reports read.
    pub fn snapshot(&self) -> Option<NaiveDateTime> {
        self.seen
            .iter()
            .filter(|((_, _, _, snap), _)| *snap)
            .flat_map(|(_, b)| b.iter().filter_map(|b| b.snap.map(|s| s.at)))
            .max()
    }

    /// The builds `q` reads: none when rollups are off or its source reads no builds (nor
    /// makes a `has_done` set, which reads visit rows where they are built). A
    /// [`Query::bounded`] question reads the closed days' bounded rows where the daily rollup
    /// would answer it unbounded (`query::assemble::bounded_sql`), and never today's snapshot
    /// (it holds no visitor ids).
    pub async fn for_query(
        &mut self,
        client: &clickhouse::Client,
        site: &SiteView,
        q: &Query,
    ) -> Result<Vec<Build>, Error> {
        let src = source(q, site.child_directed);
        let daily = q.bounded && {
            let mut plain = q.clone();
            plain.bounded = false;
            source(&plain, site.child_directed) == Source::VisitsDaily
        };
        // A `has_done` set is made from built visit rows wherever they give it
        // (`query::assemble`), whatever rows the question itself reads.
        let done = q
            .filter
            .as_ref()
            .is_some_and(crate::query::Filter::behavioural);
        if !q.rollups || q.realtime || !(uses_builds(src) || daily || done) {
            return Ok(Vec::new());
        }
        let snap = self.snapshots.is_some() && src == Source::VisitsDaily;
        let key = (site.domain.clone(), q.start.date(), last_day(q), snap);
        if let Some((_, b)) = self.seen.iter().find(|(k, _)| *k == key) {
            return Ok(b.clone());
        }
        let snapshots = self
            .snapshots
            .as_deref()
            .filter(|_| snap)
            .map(|s| (s, site.domain.as_str()));
        let shared = self.inflight.as_ref();
        let mut b = visit_builds_for(client, key.1, key.2, snapshots, shared).await?;
        let empty = empty_days(client, shared, &site.domain, key.1, key.2, &b).await?;
        b.extend(empty);
        self.seen.push((key, b.clone()));
        Ok(b)
    }
}

/// A catalog read, shared with the same statement under way for another report (the panels
/// of a dashboard, loaded at once, each look up the same range's builds, empty days and
/// late-hit counts: one ClickHouse query each instead of six). Sharing keeps the late-hit
/// check's order: an asker's raw count is read after its `events_tail` count has answered.
async fn read(
    shared: Option<&crate::db::Inflight>,
    client: &clickhouse::Client,
    q: &veil_schemas::sql::Sql,
) -> Result<Vec<serde_json::Value>, Error> {
    match shared {
        Some(inflight) => inflight.fetch(client, q).await,
        None => fetch(client, q).await,
    }
}

/// The last UTC day `q`'s range has a moment of: its end is exclusive, so a range that ends
/// at midnight (every whole-day range of a UTC site: "30 days" ends today at 00:00) does not
/// reach that day. Looking its build up too cost each report of such a range today's checks
/// (the snapshot, and the raw count of today's events against `events_tail`: 10M events,
/// ~21 ms of ClickHouse's time per report, six per dashboard load) for a day it never reads.
fn last_day(q: &Query) -> NaiveDate {
    if q.end > q.start && q.end.time() == NaiveTime::MIN {
        q.end.date().pred_opt().unwrap_or(q.end.date())
    } else {
        q.end.date()
    }
}

/// At most this many stretches of days without a build are looked at per request (a range
/// of alternating built and unbuilt days is rare; the rest stay derived from raw events).
const EMPTY_STRETCHES: usize = 16;

/// The UTC days in `[from, to]` without a recorded build (in `built`) on which `site` has no
/// event at all, as builds of nothing (`Build::whole(day, 0)`: no rows have build 0).
///
/// A day without a build is derived from raw events by every query that reads it, and the
/// sessionizing SQL costs ClickHouse 18.16 about 25–55 ms to plan and run even when it reads
/// no row: on a fresh install, before a site's first event, or over a range reaching past
/// the rollup job's first day, that was most of an unfiltered dashboard panel. Days without
/// builds are checked per request, in contiguous stretches, one `LIMIT 1` read each (an
/// empty stretch is ruled out by the primary key, a busy one stops at its first row), so a
/// hit stored on such a day shows in the next request, as it would from raw events.
async fn empty_days(
    client: &clickhouse::Client,
    shared: Option<&crate::db::Inflight>,
    site: &str,
    from: NaiveDate,
    to: NaiveDate,
    built: &[Build],
) -> Result<Vec<Build>, Error> {
    let stretches = unbuilt_stretches(from, to, built);
    if stretches.is_empty() {
        return Ok(Vec::new());
    }
    let parts = stretches.iter().enumerate().map(|(i, (a, b))| {
        sql!(
            "SELECT i FROM (SELECT toUInt32({}) AS i FROM events \
             WHERE site = {} AND timestamp >= {} AND timestamp < {} LIMIT 1)",
            i as u32,
            sql::lit(site),
            utc(a.and_time(NaiveTime::MIN)),
            utc((*b + chrono::Duration::days(1)).and_time(NaiveTime::MIN))
        )
    });
    let rows = read(
        shared,
        client,
        &veil_schemas::sql::Sql::join(parts, " UNION ALL "),
    )
    .await?;
    let busy: Vec<usize> = rows
        .iter()
        .filter_map(|r| r.get(0).and_then(number).map(|n| n as usize))
        .collect();
    let mut out = Vec::new();
    for (i, (a, b)) in stretches.iter().enumerate() {
        if busy.contains(&i) {
            continue;
        }
        out.extend(
            a.iter_days()
                .take_while(|d| d <= b)
                .map(|d| Build::whole(d, 0)),
        );
    }
    Ok(out)
}

/// The contiguous stretches (first and last day) of days in `[from, to]` without a build in
/// `built`, at most [`EMPTY_STRETCHES`].
fn unbuilt_stretches(
    from: NaiveDate,
    to: NaiveDate,
    built: &[Build],
) -> Vec<(NaiveDate, NaiveDate)> {
    let mut out: Vec<(NaiveDate, NaiveDate)> = Vec::new();
    for d in from.iter_days().take_while(|d| *d <= to) {
        if built.iter().any(|b| b.day == d) {
            continue;
        }
        match out.last_mut() {
            Some((_, last)) if *last + chrono::Duration::days(1) == d => *last = d,
            _ => out.push((d, d)),
        }
    }
    out.truncate(EMPTY_STRETCHES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap_or_default()
    }

    #[test]
    fn unbuilt_days_are_grouped_in_stretches() {
        let built = [
            Build::whole(day(3), 1),
            Build::whole(day(4), 2),
            Build::whole(day(7), 1),
        ];
        assert_eq!(
            unbuilt_stretches(day(1), day(9), &built),
            vec![(day(1), day(2)), (day(5), day(6)), (day(8), day(9))]
        );
        assert!(unbuilt_stretches(day(3), day(4), &built).is_empty());
        // Every other day built over 60 days: 30 stretches, the first 16 looked at.
        let base = day(1);
        let at = |i: i64| base + chrono::Duration::days(i);
        let alternate: Vec<Build> = (0..60).step_by(2).map(|i| Build::whole(at(i), 1)).collect();
        let stretches = unbuilt_stretches(base, at(59), &alternate);
        assert_eq!(stretches.len(), EMPTY_STRETCHES);
        assert_eq!(stretches[0], (at(1), at(1)));
        assert_eq!(stretches[EMPTY_STRETCHES - 1], (at(31), at(31)));
    }
}
