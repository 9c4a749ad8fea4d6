//! Reports asked at once over the same filtered visit rows, answered by one statement.
//!
//! A dashboard's first screen under a filter that only visit rows answer (a page pattern, a
//! negation, a custom property, `has_done`) asks its total, its chart and its breakdowns at
//! once, and each of them read and filtered the range's visit rows by itself: at 50 M events
//! six reads of 13 M rows with their hit arrays, 10–16 s on two cores. Here the reports that
//! can share those rows ([`screen_member`]: exact counts over visit rows, in total, by time or
//! by one visit property) and arrive within [`WINDOW`] of each other with the same site,
//! range, time zone, filter and builds gather: the first one waits the window, then runs one
//! [`screen_sql`] statement for every member (under one place of the bound on expensive
//! reports, `crate::cost::Heavy`) and each member takes its own group's rows, in the shape
//! and order its own statement ([`crate::query::assemble::sql`]) gives. A report alone in its
//! window, or whose group has no row (a total of nobody), runs its own statement as before.
//!
//! Differential privacy's reports gather too ([`Asked::clamp`]): a bounded report
//! ([`crate::query::assemble::bounded_screen_member`]: the same panels, each visitor id's
//! contribution clamped) groups the filtered visit rows by visitor id, 10.9 M ids at 50 M
//! events, 2.2 s a panel. Gathered, one [`bounded_screen_sql`] statement groups them once and
//! picks and clamps each id's rows for every member's group as the member's own
//! [`crate::query::assemble::bounded_sql`] does; each member's rows (`d0`, `o…`, `ok`, sorted
//! by `d0`) are made from its group's clamped sums ([`bounded_screen_rows`]), so each
//! release's noise is drawn on the same numbers as alone. Bounded and exact reports never
//! share a gathering (the bounds are in its key).
//!
//! The differencing guard's count of a filter's visitors (`crate::stats::guarded`) is such a
//! report too — the total group — so a screen's six guard counts come with it, and a lone
//! question and its guard's count are one statement.
//!
//! The statement's rows (`screen_sql`): `g` (the group: an index into the members'
//! dimensions, the total included), `shown`, `g0` (the group's value, `''` in the folded row),
//! `o…` (the members' metrics, in [`crate::query::assemble::SCREEN_METRICS`] order), `ok` (the
//! k column), `n` (rows folded). [`Asked`] is what a member brings.
//!
//! Nothing is kept after the statement answers: the next report asked starts a new gathering.
//! The privacy rules see the same rows either way: each member's rows are those its own
//! statement gives, and k-anonymity and the guard's decision run per report in `crate::stats`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use crate::cost::Heavy;
use crate::db::{fetch, number};
use crate::query::assemble::{bounded_screen_rows, bounded_screen_sql, screen_sql, Clamp};
use crate::query::{Build, Dim, DimKind, Metric, Query};
use crate::site::SiteView;
use crate::Error;

pub use crate::query::assemble::screen_member;

/// How long the first report of a gathering waits for the others, again while more keep
/// arriving (up to [`MAX_WAITS`] times): a dashboard's panels reach their report within
/// milliseconds of each other (each first reads its builds and imports); a report that
/// gathers reads visit rows for hundreds of milliseconds to seconds.
pub const WINDOW: Duration = Duration::from_millis(25);

/// How many [`WINDOW`]s a gathering stays open at most.
pub const MAX_WAITS: u32 = 4;

/// The aggregator's `--gather-ms` by default: [`WINDOW`].
pub const DEFAULT_GATHER_MS: u64 = 25;

/// The longest `--gather-ms` allowed.
pub const MAX_GATHER_MS: u64 = 1000;

/// The gatherings open now, and what they have done. One per [`crate::Aggregator`] (beside
/// its [`crate::db::Inflight`]; `crate::stats::Shared::screens`).
#[derive(Debug, Clone)]
pub struct Screens {
    open: Arc<Mutex<HashMap<String, Arc<Gathering>>>>,
    counts: Arc<Counts>,
    /// [`WINDOW`] unless set (`--gather-ms`); zero: no report gathers.
    window: Duration,
    /// Close a gathering as soon as it has this many members (tests that know how many
    /// reports they ask; none: by the window only).
    quorum: Option<usize>,
}

impl Default for Screens {
    fn default() -> Self {
        Self::with_window(WINDOW)
    }
}

/// One report that may gather ([`Screens::rows`]): its question (a [`screen_member`]), the
/// builds its rows read, the site's k (for breakdowns by a property), and the bound a shared
/// statement waits under.
#[derive(Clone, Copy)]
pub struct Asked<'a> {
    /// Where statements go.
    pub client: &'a clickhouse::Client,
    /// The site asked about.
    pub site: &'a SiteView,
    /// The report's question.
    pub q: &'a Query,
    /// The builds its rows read.
    pub built: &'a [Build],
    /// The site's k.
    pub kmin: u64,
    /// The bound on expensive reports, if any.
    pub heavy: Option<&'a Heavy>,
    /// A bounded report's bounds (differential privacy's, a
    /// [`crate::query::assemble::bounded_screen_member`]); none: an exact report (a
    /// [`screen_member`]). Bounded and exact reports never gather together.
    pub clamp: Option<Clamp>,
}

/// A member of a gathering: its group (dimension, `None` the total), its metrics, and for a
/// bounded report the rows one visitor id counts in.
#[derive(Debug, Clone)]
struct Member {
    dim: Option<Dim>,
    metrics: Vec<Metric>,
    rows: Option<u64>,
}

impl Member {
    fn group(&self) -> (Option<&Dim>, Option<u64>) {
        (self.dim.as_ref(), self.rows)
    }
}

/// How many statements answered several reports, and how many reports they answered.
#[derive(Debug, Default)]
struct Counts {
    statements: AtomicU64,
    reports: AtomicU64,
}

/// The statement's answer: the groups and metrics it computed and its rows.
#[derive(Debug)]
struct Answer {
    /// Each group's dimension, and its rows per visitor id (bounded reports).
    groups: Vec<(Option<Dim>, Option<u64>)>,
    metrics: Vec<Metric>,
    rows: Vec<Value>,
}

/// `None`: each member runs its own statement (the gathering had one member, or its first
/// one went away before answering).
type Outcome = Option<Arc<Result<Answer, Error>>>;

/// The members of one gathering, while it is open.
#[derive(Debug)]
struct Gathering {
    members: Mutex<Vec<Member>>,
    /// Told when a member joins.
    joined: tokio::sync::Notify,
    answer: watch::Receiver<Outcome>,
}

/// The first member's hold on its gathering: if its report is dropped before the answer
/// (the client went away), the gathering closes and the others run their own statements.
struct Leading<'a> {
    screens: &'a Screens,
    key: String,
    gathering: Arc<Gathering>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.screens.close(&self.key, &self.gathering);
    }
}

impl Screens {
    /// Gatherings that wait `window` (instead of [`WINDOW`]) for more members; zero: none.
    pub fn with_window(window: Duration) -> Self {
        Self {
            open: Arc::default(),
            counts: Arc::default(),
            window,
            quorum: None,
        }
    }

    /// The same, but a gathering closes as soon as `n` reports have joined it (a test that
    /// asks `n` at once then waits for nothing else).
    pub fn closing_at(mut self, n: usize) -> Self {
        self.quorum = Some(n);
        self
    }

    /// Whether reports gather at all.
    pub fn on(&self) -> bool {
        !self.window.is_zero()
    }

    /// How many statements answered more than one report, and how many reports they answered.
    pub fn shared(&self) -> (u64, u64) {
        (
            self.counts.statements.load(Ordering::Relaxed),
            self.counts.reports.load(Ordering::Relaxed),
        )
    }

    fn close(&self, key: &str, g: &Arc<Gathering>) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.get(key).is_some_and(|o| Arc::ptr_eq(o, g)) {
            open.remove(key);
        }
    }

    /// The rows of `q`'s report (a [`screen_member`]) as [`crate::query::assemble::sql`]
    /// with fold `k` gives them (`k` only for breakdowns by a property), from a statement
    /// shared with the reports gathered with it, or from `alone` (its own statement, run as
    /// the caller runs it). `heavy`: the bound the shared statement waits under.
    pub async fn rows<F>(&self, a: Asked<'_>, alone: F) -> Result<Vec<Value>, Error>
    where
        F: std::future::Future<Output = Result<Vec<Value>, Error>>,
    {
        let Asked { q, built, .. } = a;
        let me = Member {
            dim: q.dimensions.first().cloned(),
            metrics: q.metrics.clone(),
            rows: a.clamp.map(|c| c.rows),
        };
        // Bounded reports gather with those of the same bounds but for their rows.
        let bounds = a.clamp.map(|c| Clamp { rows: 0, ..c });
        let key = format!(
            "{:?}",
            (&q.site, q.start, q.end, &q.tz, &q.filter, q.rollups, built, bounds)
        );
        let mut lead = None;
        let mut answer = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            match open.get(&key) {
                // A gathering whose first member went away is replaced.
                Some(g) if g.answer.has_changed().is_ok() => {
                    g.members
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(me.clone());
                    g.joined.notify_one();
                    g.answer.clone()
                }
                _ => {
                    let (tx, rx) = watch::channel(None);
                    let g = Arc::new(Gathering {
                        members: Mutex::new(vec![me.clone()]),
                        joined: tokio::sync::Notify::new(),
                        answer: rx.clone(),
                    });
                    open.insert(key.clone(), Arc::clone(&g));
                    lead = Some((tx, g));
                    rx
                }
            }
        };
        if let Some((tx, g)) = lead {
            let hold = Leading {
                screens: self,
                key,
                gathering: g,
            };
            let count = || {
                hold.gathering
                    .members
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .len()
            };
            let full = |n: usize| self.quorum.is_some_and(|q| n >= q);
            let mut seen = 1;
            'waits: for _ in 0..MAX_WAITS {
                let until = tokio::time::Instant::now() + self.window;
                while !full(count()) {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        _ = hold.gathering.joined.notified() => {}
                    }
                }
                let now = count();
                if now == seen || full(now) {
                    break 'waits;
                }
                seen = now;
            }
            self.close(&hold.key, &hold.gathering);
            let members = std::mem::take(
                &mut *hold
                    .gathering
                    .members
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()),
            );
            let outcome = if members.len() < 2 {
                None
            } else {
                self.run(&a, &members).await.map(Arc::new)
            };
            // Receivers are held by the members; none left is no error.
            let _ = tx.send(outcome);
        }
        let outcome = match answer.wait_for(|o| o.is_some()).await {
            Ok(o) => o.clone(),
            // The first member went away, or had no one to share with.
            Err(_) => None,
        };
        let mine = match outcome.as_deref() {
            Some(Ok(ans)) => match a.clamp {
                Some(c) => own_bounded_rows(ans, &me, q, &c),
                None => own_rows(ans, me.dim.as_ref(), q),
            },
            Some(Err(e)) => return Err(e.clone()),
            None => None,
        };
        match mine {
            Some(rows) => Ok(rows),
            None => alone.await,
        }
    }

    /// The gathering's one statement, or `None` when its members do not make one.
    async fn run(&self, a: &Asked<'_>, members: &[Member]) -> Option<Result<Answer, Error>> {
        let Asked {
            client,
            site,
            q,
            built,
            kmin,
            heavy,
            clamp,
        } = *a;
        let mut groups: Vec<(Option<Dim>, Option<u64>)> = Vec::new();
        for m in members {
            if !groups
                .iter()
                .any(|g| same_group((g.0.as_ref(), g.1), m.group()))
            {
                groups.push((m.dim.clone(), m.rows));
            }
        }
        let in_order = |of: &mut dyn Iterator<Item = &Member>| {
            let of: Vec<&Member> = of.collect();
            crate::query::assemble::SCREEN_METRICS
                .iter()
                .copied()
                .filter(|m| of.iter().any(|x| x.metrics.contains(m)))
                .collect::<Vec<Metric>>()
        };
        let metrics = in_order(&mut members.iter());
        let sql = match clamp {
            None => {
                let dims: Vec<Option<Dim>> = groups.iter().map(|g| g.0.clone()).collect();
                screen_sql(q, &dims, &metrics, site, built, kmin)?
            }
            Some(c) => {
                let asked: Vec<Vec<Metric>> = groups
                    .iter()
                    .map(|g| {
                        in_order(
                            &mut members
                                .iter()
                                .filter(|m| same_group((g.0.as_ref(), g.1), m.group())),
                        )
                    })
                    .collect();
                let dims: Vec<(Option<Dim>, u64)> = groups
                    .iter()
                    .map(|g| (g.0.clone(), g.1.unwrap_or(1)))
                    .collect();
                bounded_screen_sql(q, &dims, &asked, &metrics, site, built, &c)?
            }
        };
        let run = async {
            let _place = crate::cost::Heavy::place(heavy).await?;
            fetch(client, &sql).await
        };
        let rows = run.await;
        if rows.is_ok() {
            self.counts.statements.fetch_add(1, Ordering::Relaxed);
            self.counts
                .reports
                .fetch_add(members.len() as u64, Ordering::Relaxed);
        }
        Some(rows.map(|rows| Answer {
            groups,
            metrics,
            rows,
        }))
    }
}

/// Whether two groups are the same dimension (`None`: the total).
fn same_dim(a: Option<&Dim>, b: Option<&Dim>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.name == b.name && a.kind == b.kind,
        _ => false,
    }
}

/// Whether two groups are the same: the same dimension, and for bounded reports the same
/// rows per visitor id.
fn same_group(a: (Option<&Dim>, Option<u64>), b: (Option<&Dim>, Option<u64>)) -> bool {
    same_dim(a.0, b.0) && a.1 == b.1
}

/// A bounded member's rows out of the shared answer (`g, d0, p…, pk` rows of
/// [`bounded_screen_sql`]), as its own [`crate::query::assemble::bounded_sql`] gives them
/// ([`bounded_screen_rows`]). `None` when the answer does not hold them.
fn own_bounded_rows(a: &Answer, me: &Member, q: &Query, c: &Clamp) -> Option<Vec<Value>> {
    let g = a
        .groups
        .iter()
        .position(|x| same_group((x.0.as_ref(), x.1), me.group()))? as f64;
    let nm = a.metrics.len();
    let mut mine = Vec::new();
    for r in &a.rows {
        let cells = r.as_array()?;
        if cells.len() != 3 + nm {
            return None;
        }
        if number(&cells[0]) != Some(g) {
            continue;
        }
        let p: Vec<f64> = cells[2..2 + nm].iter().map(number).collect::<Option<_>>()?;
        mine.push((text(&cells[1]), p, number(&cells[2 + nm])?));
    }
    bounded_screen_rows(
        q,
        &Clamp {
            rows: me.rows?,
            ..*c
        },
        &a.metrics,
        mine,
    )
}

/// `q`'s rows out of the shared answer, as its own statement gives them: `shown, g0, o…, ok,
/// n` for a breakdown by a property, `d0, m…, k` by time, `m…, k` for the total; sorted as
/// its `ORDER BY` sorts them. `None` when the answer does not hold them (a total of nobody
/// has no row).
fn own_rows(a: &Answer, dim: Option<&Dim>, q: &Query) -> Option<Vec<Value>> {
    let g = a.groups.iter().position(|x| same_dim(x.0.as_ref(), dim))? as f64;
    let cols: Vec<usize> = q
        .metrics
        .iter()
        .map(|m| a.metrics.iter().position(|x| x == m))
        .collect::<Option<_>>()?;
    let folded = dim.is_some_and(|d| !matches!(d.kind, DimKind::Time(_)));
    let nm = a.metrics.len();
    // Answer rows: g, shown, g0, o…, ok, n.
    let mut rows: Vec<Vec<Value>> = Vec::new();
    for r in &a.rows {
        let cells = r.as_array()?;
        if cells.len() != 3 + nm + 2 {
            return None;
        }
        if number(&cells[0]) != Some(g) {
            continue;
        }
        let mut out = Vec::new();
        if folded {
            out.push(cells[1].clone());
        }
        if dim.is_some() {
            out.push(cells[2].clone());
        }
        out.extend(cols.iter().map(|&i| cells[3 + i].clone()));
        out.push(cells[3 + nm].clone());
        if folded {
            out.push(cells[4 + nm].clone());
        }
        rows.push(out);
    }
    if dim.is_none() && rows.len() != 1 {
        return None;
    }
    let lead = usize::from(folded);
    let nd = usize::from(dim.is_some());
    rows.sort_by(|x, y| {
        let shown = |r: &[Value]| if folded { number(&r[0]) } else { None };
        let mut o = cmp_num(shown(y), shown(x));
        for (i, desc) in &q.order_by {
            if o.is_ne() {
                break;
            }
            let c = lead + *i;
            let (vx, vy) = (&x[c], &y[c]);
            let by = if *i < nd {
                text(vx).cmp(&text(vy))
            } else {
                cmp_num(number(vx), number(vy))
            };
            o = if *desc { by.reverse() } else { by };
        }
        o
    });
    Some(rows.into_iter().map(Value::Array).collect())
}

/// Numbers in ClickHouse's order (a missing one first).
fn cmp_num(a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}

/// A cell as the text it shows.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::query::TimeBucket;
    use serde_json::json;

    fn dim(name: &str, kind: DimKind) -> Dim {
        Dim {
            name: name.into(),
            kind,
        }
    }

    fn answer() -> Answer {
        // Groups: the total, by day, by source; metrics visitors and visits.
        Answer {
            groups: vec![
                (None, None),
                (Some(dim("time:day", DimKind::Time(TimeBucket::Day))), None),
                (Some(dim("visit:source", DimKind::Visit("source"))), None),
            ],
            metrics: vec![Metric::Visitors, Metric::Visits],
            // g, shown, g0, o0, o1, ok, n
            rows: vec![
                json!([2, 1, "Bing", "7", "9", "7", "1"]),
                json!([1, 1, "2026-11-02", "4", "4", "4", "1"]),
                json!([0, 1, "", "30", "41", "30", "1"]),
                json!([2, 0, "", "6", "6", "5", "3"]),
                json!([2, 1, "Google", "20", "31", "20", "1"]),
                json!([1, 1, "2026-11-01", "26", "37", "26", "1"]),
                json!([2, 1, "Ask", "7", "8", "7", "1"]),
            ],
        }
    }

    fn asked<'a>(client: &'a clickhouse::Client, site: &'a SiteView, q: &'a Query) -> Asked<'a> {
        Asked {
            client,
            site,
            q,
            built: &[],
            kmin: 5,
            heavy: None,
            clamp: None,
        }
    }

    fn query(dims: Vec<Dim>, metrics: Vec<Metric>, order_by: Vec<(usize, bool)>) -> Query {
        let mut q = crate::query::parse(
            br#"{"site_id":"a.com","metrics":["visitors"],"date_range":"7d"}"#,
            &SiteView::new("a.com"),
            chrono::Utc::now(),
        )
        .unwrap();
        q.dimensions = dims;
        q.metrics = metrics;
        q.order_by = order_by;
        q
    }

    #[test]
    fn each_member_gets_its_groups_rows_in_its_own_shape_and_order() {
        let a = answer();
        // By source, visits then visitors, by visitors descending then source: the folded
        // row last (shown DESC), ties by name.
        let source = dim("visit:source", DimKind::Visit("source"));
        let q = query(
            vec![source.clone()],
            vec![Metric::Visits, Metric::Visitors],
            vec![(2, true), (0, false)],
        );
        let rows = own_rows(&a, Some(&source), &q).unwrap();
        assert_eq!(
            rows,
            vec![
                json!([1, "Google", "31", "20", "20", "1"]),
                json!([1, "Ask", "8", "7", "7", "1"]),
                json!([1, "Bing", "9", "7", "7", "1"]),
                json!([0, "", "6", "6", "5", "3"]),
            ]
        );
        // By day: `d0, m…, k`, in day order; the total: `m…, k`.
        let day = dim("time:day", DimKind::Time(TimeBucket::Day));
        let q = query(vec![day.clone()], vec![Metric::Visitors], vec![(0, false)]);
        assert_eq!(
            own_rows(&a, Some(&day), &q).unwrap(),
            vec![
                json!(["2026-11-01", "26", "26"]),
                json!(["2026-11-02", "4", "4"])
            ]
        );
        let q = query(Vec::new(), vec![Metric::Visits], Vec::new());
        assert_eq!(own_rows(&a, None, &q).unwrap(), vec![json!(["41", "30"])]);
        // A metric or a group the statement did not compute: the member runs its own.
        let q = query(Vec::new(), vec![Metric::Pageviews], Vec::new());
        assert_eq!(own_rows(&a, None, &q), None);
        let device = dim("visit:device", DimKind::Visit("device"));
        let q = query(vec![device.clone()], vec![Metric::Visitors], Vec::new());
        assert_eq!(own_rows(&a, Some(&device), &q), None);
        // A total of nobody has no row: its own statement answers it.
        let mut empty = answer();
        empty.rows.retain(|r| r[0] != 0);
        let q = query(Vec::new(), vec![Metric::Visitors], Vec::new());
        assert_eq!(own_rows(&empty, None, &q), None);
    }

    /// A first member that goes away (its request dropped) closes the gathering: the others
    /// run their own statements instead of waiting for an answer that never comes.
    #[tokio::test]
    async fn members_of_a_gathering_whose_first_member_went_away_run_their_own() {
        let screens = Screens::with_window(Duration::from_secs(3600));
        let site = SiteView::new("a.com");
        let q = query(Vec::new(), vec![Metric::Visitors], Vec::new());
        let client = clickhouse::Client::default();
        let first = {
            let (screens, site, q, client) =
                (screens.clone(), site.clone(), q.clone(), client.clone());
            tokio::spawn(async move {
                screens
                    .rows(asked(&client, &site, &q), async {
                        Ok(vec![json!(["first"])])
                    })
                    .await
            })
        };
        // The first member holds the gathering open (an hour); the second joins it.
        let second = {
            let (screens, site, q, client) =
                (screens.clone(), site.clone(), q.clone(), client.clone());
            tokio::spawn(async move {
                while screens.open.lock().unwrap().is_empty() {
                    tokio::task::yield_now().await;
                }
                screens
                    .rows(asked(&client, &site, &q), async {
                        Ok(vec![json!(["second"])])
                    })
                    .await
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let joined = screens
                .open
                .lock()
                .unwrap()
                .values()
                .any(|g| g.members.lock().unwrap().len() == 2);
            if joined {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the second never joined"
            );
            tokio::task::yield_now().await;
        }
        first.abort();
        let rows = tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("the second member does not wait for the one that went away")
            .unwrap()
            .unwrap();
        assert_eq!(rows, vec![json!(["second"])]);
        assert!(
            screens.open.lock().unwrap().is_empty(),
            "the gathering is closed"
        );
        assert_eq!(screens.shared(), (0, 0));
    }
}
