//! Differential privacy: the one module every published number passes through.
//!
//! Two modes ([`Mode`]): `dp` (the default) and `exact` (the operator's explicit choice: the
//! k-anonymity fold and differencing guard of [`crate::stats`], exact numbers).
//!
//! In `dp` mode a report is a *release* ([`Release`]) of noisy counts:
//!
//! - **Parts.** Every metric is computed from counted parts ([`Part`]): visitors, visits,
//!   pageviews, events, bounces, visit seconds, engaged seconds, crashes, revenue cents. Rates
//!   and means (bounce rate, visit duration, views per visit, sessions per user, time on page,
//!   conversion rate, percentage, daily active users) are divided out of noisy parts, so they
//!   cost nothing extra ([`plan`]). Launch and latency percentiles are read off a noisy
//!   histogram of their samples, one more part ([`quantile`]). Means without a counted part
//!   (scroll depth, average revenue) are withheld (`null`, named in `meta.privacy.withheld`).
//! - **Contribution bounds** ([`Bounds`]): what one visitor-day (one visitor id: hashes rotate
//!   daily) adds to one row of a part, and how many rows of a report it counts in, by the
//!   dimension's level (a visitor fact such as country: one row; a visit fact such as source:
//!   [`Bounds::visit_rows`]; a hit fact such as page or goal: [`Bounds::hit_rows`]; hours:
//!   [`Bounds::hour_rows`]). They are **enforced** in SQL ([`Release::clamp`],
//!   [`crate::query::assemble::bounded_sql`]): a release reads rows that carry visitor ids
//!   ([`Query::bounded`]: visit rows, hits, raw events — never the per-day rollup counts),
//!   groups them per visitor id and report row, keeps a pseudo-random `rows` of each visitor
//!   id's report rows (`LIMIT n BY`) and clamps its counts there (`least`), so one visitor-day
//!   moves a release by at most the sensitivity its noise is calibrated for, whatever it did.
//!   A range of D UTC days counts one person as up to min(D, [`Bounds::person_days`]) visitor
//!   ids (default 7: ranges up to a week count every day a person could come), and every
//!   sensitivity is that many times a visitor-day's. Days are not linked (daily salts make a
//!   person's days unlinkable, even to Veil): a person who comes on more days than that is
//!   protected at ε times its excess over a range longer than a week (docs/PRIVACY.md says
//!   so). Child-directed sites keep no visitor ids: their releases are thresholded on events
//!   and their bounds stay declared.
//! - **Noise.** Discrete Laplace on each part of each row, its scale calibrated with OpenDP
//!   (`make_laplace`: the query's ε split evenly over its parts, L1 sensitivity as above) and
//!   drawn from a keyed blake3 stream ([`noise`]) over the canonical question, row and part:
//!   the same question over the same data gets the same answer.
//! - **Noisy thresholds.** A breakdown row (any dimension but time) is published only when its
//!   noisy visitors (events, for a child-directed site) reach a threshold OpenDP's
//!   `make_laplace_threshold` derives for δ ([`Settings::delta`]); `--min-visitors` stays a
//!   floor. A time series lists every bucket of its range, noisy zeros included: whether a
//!   bucket is missing says nothing.
//! - **Budget.** Each new question spends ε_query per release (the report, its comparison,
//!   a conversion rate's denominator, an exit rate's pageviews, a percentage's total) from its
//!   credential's budget of the UTC day; a question asked again is free ([`Privacy::charge`],
//!   ledger in ClickHouse's
//!   `privacy_spend`, shared by every aggregator). Spent: `429` with `Retry-After`.
//! - **Today.** A question whose range reaches into the current UTC day is keyed by the
//!   current hour too: within the hour it is the same question (same noise, free), the next
//!   hour it is a new one (new noise, spends again), so data arriving cannot be differenced
//!   out of two answers for free.
//!
//! Wire format (Veil's, in every answer's `meta.privacy`): `{"mode": "dp", "epsilon": spent
//! by this answer, "repeated": bool, "epsilon_query", "delta", "threshold", "budget":
//! {"epsilon_day", "spent", "left", "resets_at"}, "interval95": {metric: ± half-width or
//! null}, "withheld": [metric…]}`; in exact mode `{"mode": "exact", "min_visitors": k}`.

pub mod noise;
pub mod quantile;

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use dashu::integer::IBig;
use dashu::rational::RBig;
use opendp::domains::{AtomDomain, MapDomain, VectorDomain};
use opendp::measurements::{make_laplace, make_laplace_threshold};
use opendp::measures::{Approximate, MaxDivergence};
use opendp::metrics::{AbsoluteDistance, L0PInfDistance, L1Distance};
use serde_json::{json, Value};
use veil_schemas::sql;
use veil_schemas::sql::{date, lit, utc};

use crate::db::{exec, fetch, number};
use crate::query::assemble::Clamp;
use crate::query::{DimKind, Metric, Query, TimeBucket};
use crate::Error;

/// How published numbers are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Differential privacy (the default).
    Dp,
    /// Exact numbers with k-anonymity only: the operator's explicit choice.
    Exact,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dp" => Ok(Mode::Dp),
            "exact" => Ok(Mode::Exact),
            other => Err(format!("--privacy {other:?}: use dp or exact")),
        }
    }
}

/// What one visitor-day may add (enforced by [`Release::clamp`]; see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Bounds {
    /// Days one person counts as in one range (one visitor id a day): a range of D UTC days
    /// counts one person as min(D, this) visitor-days (0: no cap, D always).
    pub person_days: u64,
    /// Rows of a breakdown by a hit fact (page, event name, goal, property, host).
    pub hit_rows: u64,
    /// Rows of a breakdown by a visit fact (source, entry page, campaign…).
    pub visit_rows: u64,
    /// Hour buckets (and realtime's minute buckets, `time:minute`).
    pub hour_rows: u64,
    /// Visits in one row.
    pub visits: u64,
    /// Pageviews in one row.
    pub pageviews: u64,
    /// Events (and crashes) in one row.
    pub events: u64,
    /// Seconds of visits in one row.
    pub visit_seconds: u64,
    /// Engaged seconds in one row.
    pub engaged_seconds: u64,
    /// Revenue in one row, in currency units.
    pub revenue: u64,
    /// Performance samples (launch times, latencies) in one row's histogram ([`quantile`]).
    pub samples: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            person_days: 7,
            hit_rows: 5,
            visit_rows: 2,
            hour_rows: 3,
            visits: 2,
            pageviews: 6,
            events: 6,
            visit_seconds: 1800,
            engaged_seconds: 600,
            revenue: 1000,
            samples: 2,
        }
    }
}

/// Privacy settings (`--privacy`, `--epsilon-query`, `--epsilon-day`, `--dp-delta`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Settings {
    /// dp or exact.
    pub mode: Mode,
    /// ε one release of one question spends.
    pub epsilon_query: f64,
    /// ε one credential may spend in one UTC day.
    pub epsilon_day: f64,
    /// δ of one release's noisy threshold (the chance that a row of a few visitors shows).
    pub delta: f64,
    /// Contribution bounds.
    pub bounds: Bounds,
}

/// Default ε per release.
pub const EPSILON_QUERY: f64 = 0.5;
/// Default ε per credential and day.
pub const EPSILON_DAY: f64 = 50.0;
/// Default δ per release.
pub const DELTA: f64 = 1e-6;

impl Default for Settings {
    fn default() -> Self {
        Self {
            mode: Mode::Dp,
            epsilon_query: EPSILON_QUERY,
            epsilon_day: EPSILON_DAY,
            delta: DELTA,
            bounds: Bounds::default(),
        }
    }
}

impl Settings {
    /// Exact mode (tests that need exact counts).
    pub fn exact() -> Self {
        Self {
            mode: Mode::Exact,
            ..Self::default()
        }
    }

    /// These settings with `site`'s own ε per release and per day and its revenue bound,
    /// where it sets them.
    pub fn for_site(&self, site: &crate::site::SiteView) -> Settings {
        Settings {
            epsilon_query: site.epsilon_query.unwrap_or(self.epsilon_query),
            epsilon_day: site.epsilon_day.unwrap_or(self.epsilon_day),
            bounds: Bounds {
                revenue: site.revenue_bound.unwrap_or(self.bounds.revenue),
                ..self.bounds
            },
            ..self.clone()
        }
    }

    /// Checks the settings; the message names the flag.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::Config(m.into()));
        if !(self.epsilon_query.is_finite()
            && self.epsilon_query > 0.0
            && self.epsilon_query <= 10.0)
        {
            return bad("--epsilon-query must be above 0 and at most 10");
        }
        if !(self.epsilon_day.is_finite() && self.epsilon_day >= self.epsilon_query) {
            return bad("--epsilon-day must be at least --epsilon-query");
        }
        if !(self.delta > 0.0 && self.delta < 1e-3) {
            return bad("--dp-delta must be above 0 and below 0.001");
        }
        Ok(())
    }
}

/// A counted part of a row's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    /// Unique visitors (events, for a child-directed site's threshold).
    Visitors,
    /// Visits.
    Visits,
    /// Pageviews (hits).
    Pageviews,
    /// Pageviews of the row's visits (views per visit's numerator).
    VisitPageviews,
    /// Events.
    Events,
    /// Bounced visits.
    Bounces,
    /// Seconds of visits.
    VisitSeconds,
    /// Engaged seconds.
    EngagedSeconds,
    /// Crashes.
    Crashes,
    /// Revenue in cents.
    RevenueCents,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Visitors => "visitors",
            Part::Visits => "visits",
            Part::Pageviews => "pageviews",
            Part::VisitPageviews => "visit_pageviews",
            Part::Events => "events",
            Part::Bounces => "bounces",
            Part::VisitSeconds => "visit_seconds",
            Part::EngagedSeconds => "engaged_seconds",
            Part::Crashes => "crashes",
            Part::RevenueCents => "revenue_cents",
        }
    }

    /// What one visitor-day adds to one row.
    fn per_row(self, b: &Bounds) -> u64 {
        match self {
            Part::Visitors => 1,
            Part::Visits | Part::Bounces => b.visits,
            Part::Pageviews | Part::VisitPageviews => b.pageviews,
            Part::Events | Part::Crashes => b.events,
            Part::VisitSeconds => b.visit_seconds,
            Part::EngagedSeconds => b.engaged_seconds,
            Part::RevenueCents => b.revenue.saturating_mul(100),
        }
    }
}

/// How a question's metrics come out of SQL and parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The metrics the SQL asks for (unrounded), in order.
    pub sql_metrics: Vec<Metric>,
    /// The parts released, in order (each gets an equal share of ε).
    pub parts: Vec<Part>,
    /// The part rows are thresholded on, when the question has breakdown rows.
    pub threshold: Option<Part>,
    /// Metrics answered `null` (no counted part).
    pub withheld: Vec<Metric>,
    /// Histograms released (each one more share of ε): the percentiles' samples.
    pub samples: Vec<quantile::Sample>,
}

/// The parts a metric is divided out of.
fn parts_of(m: Metric) -> &'static [Part] {
    match m {
        Metric::Visitors
        | Metric::Dau
        | Metric::ConversionRate
        | Metric::GroupConversionRate
        | Metric::Percentage => &[Part::Visitors],
        // The row's exits; the rate is divided by its own release's pageviews (stats).
        Metric::Visits | Metric::ExitRate => &[Part::Visits],
        Metric::Pageviews => &[Part::Pageviews],
        Metric::Events => &[Part::Events],
        Metric::Crashes => &[Part::Crashes],
        Metric::TotalRevenue => &[Part::RevenueCents],
        Metric::ViewsPerVisit => &[Part::VisitPageviews, Part::Visits],
        Metric::BounceRate => &[Part::Bounces, Part::Visits],
        Metric::VisitDuration => &[Part::VisitSeconds, Part::Visits],
        Metric::SessionsPerUser => &[Part::Visits, Part::Visitors],
        Metric::TimeOnPage => &[Part::EngagedSeconds, Part::Pageviews],
        Metric::ScrollDepth
        | Metric::AverageRevenue
        | Metric::LaunchTimeP50
        | Metric::LaunchTimeP95
        | Metric::LatencyP50
        | Metric::LatencyP95 => &[],
    }
}

/// The SQL metric a part is read from (ratios are multiplied back by their denominator).
fn sql_metric_of(p: Part) -> Metric {
    match p {
        Part::Visitors => Metric::Visitors,
        Part::Visits => Metric::Visits,
        Part::Pageviews => Metric::Pageviews,
        Part::VisitPageviews => Metric::ViewsPerVisit,
        Part::Events => Metric::Events,
        Part::Bounces => Metric::BounceRate,
        Part::VisitSeconds => Metric::VisitDuration,
        Part::EngagedSeconds => Metric::TimeOnPage,
        Part::Crashes => Metric::Crashes,
        Part::RevenueCents => Metric::TotalRevenue,
    }
}

/// The plan of `q` (`child`: a child-directed site, thresholded on events).
pub fn plan(q: &Query, child: bool) -> Plan {
    let mut parts: Vec<Part> = Vec::new();
    let mut withheld = Vec::new();
    let mut samples = Vec::new();
    for m in &q.metrics {
        let ps = parts_of(*m);
        // A child-directed site keeps no visitor ids to clamp samples by: withheld there.
        match quantile::Sample::of(*m).filter(|_| !child) {
            Some((s, _)) if !samples.contains(&s) => samples.push(s),
            Some(_) => {}
            None if ps.is_empty() => withheld.push(*m),
            None => {}
        }
        for p in ps {
            if !parts.contains(p) {
                parts.push(*p);
            }
        }
    }
    // Ratios are read unrounded and multiplied back by their denominator.
    for (num, den) in [
        (Part::VisitPageviews, Part::Visits),
        (Part::Bounces, Part::Visits),
        (Part::VisitSeconds, Part::Visits),
        (Part::EngagedSeconds, Part::Pageviews),
    ] {
        if parts.contains(&num) && !parts.contains(&den) {
            parts.push(den);
        }
    }
    let labelled = q
        .dimensions
        .iter()
        .any(|d| !matches!(d.kind, DimKind::Time(_)));
    let threshold = labelled.then_some(if child { Part::Events } else { Part::Visitors });
    if let Some(t) = threshold {
        if !parts.contains(&t) {
            parts.push(t);
        }
    }
    let mut sql_metrics: Vec<Metric> = Vec::new();
    for p in &parts {
        let m = sql_metric_of(*p);
        if !sql_metrics.contains(&m) {
            sql_metrics.push(m);
        }
    }
    Plan {
        sql_metrics,
        parts,
        threshold,
        withheld,
        samples,
    }
}

/// UTC days `[start, end)` touches: one person is at most that many visitor ids.
pub fn days_touched(start: NaiveDateTime, end: NaiveDateTime) -> u64 {
    let last = (end - Duration::seconds(1)).date().max(start.date());
    (last - start.date()).num_days().max(0) as u64 + 1
}

impl Bounds {
    /// Visitor-days one person counts as over `[start, end)`: the UTC days it touches, at
    /// most [`Bounds::person_days`] (module docs).
    pub fn person_days(&self, start: NaiveDateTime, end: NaiveDateTime) -> u64 {
        let d = days_touched(start, end);
        match self.person_days {
            0 => d,
            cap => d.min(cap),
        }
    }
}

impl Bounds {
    /// Rows of a report by one dimension of `kind` one visitor-day can fall in (`utc`: the
    /// site's days are UTC days).
    pub fn rows_of(&self, kind: &DimKind, utc: bool) -> u64 {
        match kind {
            DimKind::Visitor(_) | DimKind::CountryName | DimKind::PlaceName(_) => 1,
            DimKind::Visit(_) => self.visit_rows,
            DimKind::Event(_) | DimKind::Goal | DimKind::Prop(_) => self.hit_rows,
            // Realtime's minutes are bounded like hours: a visitor-day counts in at most
            // `hour_rows` of them.
            DimKind::Time(TimeBucket::Hour | TimeBucket::Minute) => self.hour_rows,
            DimKind::Time(_) if utc => 1,
            // A UTC day spans two local days unless the site's zone is UTC.
            DimKind::Time(_) => 2,
        }
    }

    /// What one visitor id may add to a report whose rows it can fall in `rows` of.
    pub fn clamp(&self, rows: u64) -> Clamp {
        Clamp {
            rows,
            visits: self.visits,
            pageviews: self.pageviews,
            events: self.events,
            visit_seconds: self.visit_seconds,
            engaged_seconds: self.engaged_seconds,
            revenue: self.revenue,
            samples: self.samples,
            // The rollup job clamps closed days with the default bounds (revenue is never
            // read from the rollups, so a site's own revenue bound keeps them usable).
            daily: Bounds {
                revenue: Bounds::default().revenue,
                ..*self
            } == Bounds::default(),
        }
    }
}

/// Rows of `q`'s breakdown one visitor-day can fall in.
fn rows_per_visitor_day(q: &Query, b: &Bounds) -> u64 {
    q.dimensions
        .iter()
        .map(|d| b.rows_of(&d.kind, q.tz == "UTC"))
        .fold(1u64, |a, n| a.saturating_mul(n.max(1)))
}

/// One part's noise for one release.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// The discrete Laplace scale.
    pub scale: f64,
    scale_exact: RBig,
    /// ± half-width of the 95 % interval of one noisy count.
    pub interval95: f64,
}

fn opendp_failed(e: opendp::error::Error) -> Error {
    Error::Internal(format!("privacy calibration failed: {e}"))
}

/// The scale of discrete Laplace noise for L1 sensitivity `l1` at `epsilon`, checked with
/// OpenDP's privacy map of `make_laplace` (widened until the map says at most `epsilon`).
pub fn calibrate(l1: u64, epsilon: f64) -> Result<Calibration, Error> {
    let mut scale = l1 as f64 / epsilon;
    let space = (
        VectorDomain::new(AtomDomain::<i64>::default()),
        L1Distance::<i64>::default(),
    );
    for _ in 0..64 {
        let m = make_laplace::<_, _, MaxDivergence>(space.0.clone(), space.1.clone(), scale, None)
            .map_err(opendp_failed)?;
        let spent = m
            .map(&i64::try_from(l1).unwrap_or(i64::MAX))
            .map_err(opendp_failed)?;
        if spent <= epsilon {
            let interval95 = opendp::accuracy::discrete_laplacian_scale_to_accuracy(scale, 0.05)
                .map_err(opendp_failed)?;
            let scale_exact = RBig::try_from(scale)
                .map_err(|_| Error::Internal("privacy scale is not finite".into()))?;
            return Ok(Calibration {
                scale,
                scale_exact,
                interval95,
            });
        }
        scale *= 1.0 + 1e-9;
    }
    Err(Error::Internal(
        "privacy calibration did not converge".into(),
    ))
}

/// The smallest threshold at which rows thresholded on noise of `scale` keep δ at most
/// `delta`, for a person in at most `l0` rows, adding at most `linf` to one and `l1` in all
/// (OpenDP's `make_laplace_threshold` privacy map, searched by bisection).
pub fn threshold(scale: f64, l0: u64, l1: u64, linf: u64, delta: f64) -> Result<u64, Error> {
    let d_in = (
        u32::try_from(l0).unwrap_or(u32::MAX),
        i64::try_from(l1).unwrap_or(i64::MAX),
        i64::try_from(linf).unwrap_or(i64::MAX),
    );
    let delta_at = |t: u64| -> Result<f64, Error> {
        let m = make_laplace_threshold::<_, _, Approximate<MaxDivergence>>(
            MapDomain::new(
                AtomDomain::<String>::default(),
                AtomDomain::<i64>::default(),
            ),
            L0PInfDistance(AbsoluteDistance::<i64>::default()),
            scale,
            i64::try_from(t).unwrap_or(i64::MAX),
            None,
        )
        .map_err(opendp_failed)?;
        Ok(m.map(&d_in).map_err(opendp_failed)?.1)
    };
    let mut hi = linf.max(1);
    while delta_at(hi)? > delta {
        hi = hi.saturating_mul(2);
        if hi > 1 << 40 {
            return Err(Error::Internal("privacy threshold did not converge".into()));
        }
    }
    let mut lo = 0;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if delta_at(mid)? <= delta {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

/// One release of a question's rows: its calibrations and its noise key.
#[derive(Debug, Clone)]
pub struct Release {
    key: [u8; 32],
    context: [u8; 32],
    plan: Plan,
    cals: HashMap<Part, Calibration>,
    /// The noise of the samples' histograms ([`quantile`]), when the plan has any.
    sample_cal: Option<Calibration>,
    threshold: u64,
    days: f64,
    labels: Option<Vec<String>>,
    clamp: Clamp,
    /// No noise: exact numbers under k-anonymity ([`Release::exact`]).
    exact: bool,
}

/// The canonical text of what a release counts: site, dimensions, filter (as asked), range, zone and,
/// for a range reaching into the current UTC day, the current hour (module docs: Today).
fn release_text(q: &Query, now: DateTime<Utc>) -> String {
    let dims: Vec<&str> = q.dimensions.iter().map(|d| d.name.as_str()).collect();
    let today = now.date_naive().and_hms_opt(0, 0, 0).unwrap_or_default();
    let live = if q.end > today {
        now.format("%Y%m%d%H").to_string()
    } else {
        String::new()
    };
    format!(
        "veil-release-v1\u{1f}{}\u{1f}{}\u{1f}{:?}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
        q.site,
        dims.join(","),
        q.asked_filter,
        q.start,
        q.end,
        q.tz,
        q.realtime,
        live
    )
}

/// The budget key of a whole question: its releases and metrics (order, limit and offset
/// change no number, so they are not part of it).
pub fn question_key(q: &Query, now: DateTime<Utc>, extra: &str) -> [u8; 32] {
    let mut metrics: Vec<&str> = q.metrics.iter().map(|m| m.name()).collect();
    metrics.sort_unstable();
    let text = format!(
        "veil-question-v1\u{1f}{}\u{1f}{}\u{1f}{:?}\u{1f}{}",
        release_text(q, now),
        metrics.join(","),
        q.compare,
        extra
    );
    *blake3::hash(text.as_bytes()).as_bytes()
}

impl Release {
    /// The release of `q` (`child`: a child-directed site) with the site's noise `key`,
    /// `settings`' ε per release and `min_visitors` as the threshold's floor.
    pub fn new(
        q: &Query,
        child: bool,
        key: [u8; 32],
        settings: &Settings,
        min_visitors: u64,
        now: DateTime<Utc>,
    ) -> Result<Self, Error> {
        let plan = plan(q, child);
        let days = settings.bounds.person_days(q.start, q.end);
        let rows = rows_per_visitor_day(q, &settings.bounds);
        let share = settings.epsilon_query / (plan.parts.len() + plan.samples.len()).max(1) as f64;
        let mut cals = HashMap::new();
        let mut threshold_at = 0;
        for p in &plan.parts {
            let linf = days.saturating_mul(p.per_row(&settings.bounds));
            let l1 = linf.saturating_mul(rows);
            let cal = calibrate(l1, share)?;
            if plan.threshold == Some(*p) {
                threshold_at = threshold(
                    cal.scale,
                    days.saturating_mul(rows),
                    l1,
                    linf,
                    settings.delta,
                )?
                .max(min_visitors);
            }
            cals.insert(*p, cal);
        }
        // A visitor-day's samples in a row move its histogram by `samples` in all (L1).
        let sample_cal = match plan.samples.is_empty() {
            true => None,
            false => Some(calibrate(
                days.saturating_mul(settings.bounds.samples.max(1))
                    .saturating_mul(rows),
                share,
            )?),
        };
        let context = *blake3::hash(release_text(q, now).as_bytes()).as_bytes();
        let labels =
            (q.dimensions.len() == 1 && q.time_bucket().is_some()).then(|| q.time_labels());
        Ok(Self {
            key,
            context,
            plan,
            cals,
            sample_cal,
            threshold: threshold_at,
            days: local_days(q),
            labels,
            clamp: settings.bounds.clamp(rows),
            exact: false,
        })
    }

    /// Exact mode's "release" of `q` for rows merged with imported ones
    /// (the imports merge): no noise, every row counted on its visitors (events, for
    /// a child-directed site); a row under `min_visitors` is dropped when it names a group
    /// (any dimension but time) and has its metrics `null` otherwise, as
    /// [`crate::stats`]'s k-anonymity does.
    pub fn exact(q: &Query, child: bool, min_visitors: u64) -> Self {
        let mut plan = plan(q, child);
        let k = if child { Part::Events } else { Part::Visitors };
        if !plan.parts.contains(&k) {
            plan.parts.push(k);
            let m = sql_metric_of(k);
            if !plan.sql_metrics.contains(&m) {
                plan.sql_metrics.push(m);
            }
        }
        plan.threshold = Some(k);
        Self {
            key: [0; 32],
            context: [0; 32],
            plan,
            cals: HashMap::new(),
            sample_cal: None,
            threshold: min_visitors,
            days: local_days(q),
            labels: None,
            clamp: Bounds::default().clamp(1),
            exact: true,
        }
    }

    /// What one visitor id may add to this release's SQL rows: the bounds its noise is
    /// calibrated for, enforced by [`crate::query::assemble::bounded_sql`].
    pub fn clamp(&self) -> &Clamp {
        &self.clamp
    }

    /// The plan released.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The noisy-count threshold of breakdown rows (0 when the question has none).
    pub fn threshold(&self) -> u64 {
        self.threshold
    }

    /// ± half-width of the 95 % interval of each metric of `metrics` that is a count
    /// (rates and means: `null`).
    pub fn intervals(&self, metrics: &[Metric]) -> Value {
        let mut o = serde_json::Map::new();
        for m in metrics {
            let part = match m {
                Metric::Visitors => Some(Part::Visitors),
                Metric::Visits => Some(Part::Visits),
                Metric::Pageviews => Some(Part::Pageviews),
                Metric::Events => Some(Part::Events),
                Metric::Crashes => Some(Part::Crashes),
                _ => None,
            };
            let v = part
                .and_then(|p| self.cals.get(&p))
                .map(|c| json!(c.interval95.ceil()))
                .or_else(|| {
                    (*m == Metric::TotalRevenue)
                        .then(|| self.cals.get(&Part::RevenueCents))
                        .flatten()
                        .map(|c| json!((c.interval95 / 100.0 * 100.0).ceil() / 100.0))
                })
                .unwrap_or(Value::Null);
            o.insert(m.name().to_string(), v);
        }
        Value::Object(o)
    }

    /// One noisy count: `truth` plus the keyed noise of this row and part, never below 0.
    fn noisy(&self, labels: &[String], part: Part, truth: f64) -> f64 {
        let Some(cal) = self.cals.get(&part) else {
            return truth.max(0.0);
        };
        (truth.round() + self.draw(cal, part.name(), labels) as f64).max(0.0)
    }

    /// The keyed noise of this release for `what` (a part's name, or a histogram's bucket) of
    /// the row with `labels`.
    fn draw(&self, cal: &Calibration, what: &str, labels: &[String]) -> i64 {
        let mut ctx = Vec::with_capacity(128);
        ctx.extend_from_slice(&self.context);
        ctx.extend_from_slice(what.as_bytes());
        ctx.push(0x1f);
        ctx.extend_from_slice(cal.scale.to_bits().to_le_bytes().as_slice());
        for l in labels {
            ctx.push(0x1e);
            ctx.extend_from_slice(l.as_bytes());
        }
        let mut stream = noise::KeyedStream::new(&self.key, &ctx);
        let n = stream.discrete_laplace(&cal.scale_exact);
        i64::try_from(n.clamp(IBig::from(-(1i64 << 52)), IBig::from(1i64 << 52))).unwrap_or(0)
    }

    /// The `qs`-quantiles of `sample` in the row with `labels`, from its true histogram
    /// (`truth[b]`: bucket `b`'s clamped samples, [`quantile`]): each bucket noised, then
    /// read. Exact mode and a release without the sample read the true histogram.
    pub fn quantiles(
        &self,
        labels: &[String],
        sample: quantile::Sample,
        truth: &[f64],
        qs: &[f64],
    ) -> Vec<Option<f64>> {
        let cal = self
            .sample_cal
            .as_ref()
            .filter(|_| self.plan.samples.contains(&sample));
        let noisy: Vec<f64> = (0..=quantile::TOP)
            .map(|b| {
                let t = truth.get(usize::from(b)).copied().unwrap_or(0.0).round();
                match cal {
                    Some(cal) => {
                        let what = format!("sample:{}:{b}", sample.prop());
                        t + self.draw(cal, &what, labels) as f64
                    }
                    None => t,
                }
            })
            .collect();
        let floor = cal.map_or(0.0, |c| quantile::floor(c.scale));
        quantile::quantiles(&noisy, qs, floor)
    }

    /// The published rows of a report: `raw` are the SQL answer's rows of `q`'s dimensions,
    /// then the plan's SQL metrics, then the k column. Returns `(dimensions, metrics in q's
    /// order, noisy threshold count)` per published row: breakdown rows under the threshold
    /// are left out; a time series gets every bucket of its range.
    pub fn rows(&self, q: &Query, raw: &[Value]) -> Vec<(Vec<String>, Vec<Option<f64>>, f64)> {
        self.rows_with(q, raw, &[]).0
    }

    /// [`Release::rows`] with `extra` parts added to the true parts of the row with the same
    /// labels (a row of its own when the SQL has none): imported numbers, merged before noise
    /// and thresholds so the published number is one (the imports merge). The bool
    /// says whether a row was left out or nulled under the threshold (exact mode).
    pub fn rows_with(&self, q: &Query, raw: &[Value], extra: &[Extra]) -> (Vec<Published>, bool) {
        let nd = q.dimensions.len();
        let nm = self.plan.sql_metrics.len();
        let mut truths: Vec<(Vec<String>, HashMap<Part, f64>)> = Vec::new();
        for r in raw {
            let Some(cells) = r.as_array() else { continue };
            if cells.len() != nd + nm + 1 {
                continue;
            }
            let dims: Vec<String> = cells[..nd].iter().map(text).collect();
            let sql: HashMap<Metric, f64> = self
                .plan
                .sql_metrics
                .iter()
                .zip(&cells[nd..nd + nm])
                .map(|(m, v)| (*m, number(v).unwrap_or(0.0)))
                .collect();
            let k = number(&cells[nd + nm]).unwrap_or(0.0);
            truths.push((dims, self.truth(&sql, k)));
        }
        for (dims, parts) in extra {
            let at = match truths.iter().position(|(d, _)| d == dims) {
                Some(at) => at,
                None => {
                    truths.push((dims.clone(), HashMap::new()));
                    truths.len() - 1
                }
            };
            for p in &self.plan.parts {
                if let Some(v) = parts.get(p) {
                    *truths[at].1.entry(*p).or_default() += v.round();
                }
            }
        }
        if let Some(labels) = &self.labels {
            // Every bucket, in order; a bucket without rows counts zero.
            let mut by_label: HashMap<String, HashMap<Part, f64>> = truths
                .into_iter()
                .filter_map(|(d, t)| Some((d.into_iter().next()?, t)))
                .collect();
            truths = labels
                .iter()
                .map(|l| (vec![l.clone()], by_label.remove(l).unwrap_or_default()))
                .collect();
        }
        if nd == 0 && truths.is_empty() {
            truths.push((Vec::new(), HashMap::new()));
        }
        let labelled = q
            .dimensions
            .iter()
            .any(|d| !matches!(d.kind, DimKind::Time(_)));
        let mut under = false;
        let mut out = Vec::new();
        for (dims, truth) in truths {
            let noisy: HashMap<Part, f64> = self
                .plan
                .parts
                .iter()
                .map(|p| {
                    (
                        *p,
                        self.noisy(&dims, *p, truth.get(p).copied().unwrap_or(0.0)),
                    )
                })
                .collect();
            let k = self
                .plan
                .threshold
                .and_then(|t| noisy.get(&t).copied())
                .unwrap_or(0.0);
            if self.plan.threshold.is_some() && k < self.threshold as f64 {
                under = true;
                if self.exact && !labelled {
                    out.push((dims, vec![None; q.metrics.len()], k));
                }
                continue;
            }
            let metrics = q.metrics.iter().map(|m| self.compose(*m, &noisy)).collect();
            out.push((dims, metrics, k));
        }
        (out, under)
    }

    /// The true parts of one row from its SQL metrics (ratios times their denominators).
    fn truth(&self, sql: &HashMap<Metric, f64>, k: f64) -> HashMap<Part, f64> {
        let get = |m: Metric| sql.get(&m).copied().unwrap_or(0.0);
        let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
        self.plan
            .parts
            .iter()
            .map(|p| {
                let v = match p {
                    Part::Visitors if self.plan.threshold == Some(Part::Visitors) => k,
                    Part::Events if self.plan.threshold == Some(Part::Events) => k,
                    Part::VisitPageviews => {
                        finite(get(Metric::ViewsPerVisit)) * get(Metric::Visits)
                    }
                    Part::Bounces => finite(get(Metric::BounceRate)) / 100.0 * get(Metric::Visits),
                    Part::VisitSeconds => finite(get(Metric::VisitDuration)) * get(Metric::Visits),
                    Part::EngagedSeconds => {
                        finite(get(Metric::TimeOnPage)) * get(Metric::Pageviews).max(1.0)
                    }
                    Part::RevenueCents => get(Metric::TotalRevenue) * 100.0,
                    other => get(sql_metric_of(*other)),
                };
                (*p, v.round())
            })
            .collect()
    }

    /// A metric from noisy parts (conversion rate and percentage: the visitors, divided
    /// later by [`crate::stats`] by their own release's denominators).
    fn compose(&self, m: Metric, n: &HashMap<Part, f64>) -> Option<f64> {
        let p = |x: Part| n.get(&x).copied().unwrap_or(0.0);
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        let r = |x: f64, digits: i32| {
            let f = 10f64.powi(digits);
            (x * f).round() / f
        };
        match m {
            Metric::Visitors
            | Metric::ConversionRate
            | Metric::GroupConversionRate
            | Metric::Percentage => Some(p(Part::Visitors)),
            Metric::Visits | Metric::ExitRate => Some(p(Part::Visits)),
            Metric::Pageviews => Some(p(Part::Pageviews)),
            Metric::Events => Some(p(Part::Events)),
            Metric::Crashes => Some(p(Part::Crashes)),
            Metric::TotalRevenue => Some(p(Part::RevenueCents) / 100.0),
            Metric::ViewsPerVisit => {
                ratio(p(Part::VisitPageviews), p(Part::Visits)).map(|x| r(x, 2))
            }
            Metric::BounceRate => {
                ratio(p(Part::Bounces) * 100.0, p(Part::Visits)).map(|x| r(x.min(100.0), 0))
            }
            Metric::VisitDuration => ratio(p(Part::VisitSeconds), p(Part::Visits)).map(|x| r(x, 0)),
            Metric::SessionsPerUser => ratio(p(Part::Visits), p(Part::Visitors)).map(|x| r(x, 2)),
            Metric::TimeOnPage => {
                ratio(p(Part::EngagedSeconds), p(Part::Pageviews).max(1.0)).map(|x| r(x, 0))
            }
            Metric::Dau => ratio(p(Part::Visitors), self.days).map(|x| r(x, 1)),
            _ => None,
        }
    }
}

/// A published row: `(dimensions, metrics in the question's order, threshold count)`.
pub type Published = (Vec<String>, Vec<Option<f64>>, f64);

/// True parts of a row from elsewhere (imported numbers), by the row's labels.
pub type Extra = (Vec<String>, HashMap<Part, f64>);

/// Noisy counts for a report that is not a Stats API query (funnel steps, filtered traffic):
/// one part, labels given by the route, noise keyed by the route's canonical text.
#[derive(Debug, Clone)]
pub struct Counts {
    key: [u8; 32],
    context: [u8; 32],
    cal: Calibration,
    threshold: u64,
}

impl Counts {
    /// Counts where one person adds at most `linf` to a label and `l1` over all labels, at
    /// `epsilon`; labels that are not public (bot kinds, say) are kept only over a threshold
    /// for `delta` (at least `floor`), public ones always (`delta` None).
    pub fn new(
        key: [u8; 32],
        canonical: &str,
        linf: u64,
        l1: u64,
        epsilon: f64,
        delta: Option<f64>,
        floor: u64,
    ) -> Result<Self, Error> {
        let cal = calibrate(l1, epsilon)?;
        let threshold = match delta {
            Some(d) => threshold(cal.scale, l1.div_ceil(linf.max(1)), l1, linf, d)?.max(floor),
            None => 0,
        };
        Ok(Self {
            key,
            context: *blake3::hash(canonical.as_bytes()).as_bytes(),
            cal,
            threshold,
        })
    }

    /// `truth` plus the keyed noise of `label`, never below 0; `None` under the threshold.
    pub fn noisy(&self, label: &str, truth: f64) -> Option<f64> {
        let mut ctx = Vec::with_capacity(64);
        ctx.extend_from_slice(&self.context);
        ctx.extend_from_slice(label.as_bytes());
        let mut stream = noise::KeyedStream::new(&self.key, &ctx);
        let n = stream.discrete_laplace(&self.cal.scale_exact);
        let n =
            i64::try_from(n.clamp(IBig::from(-(1i64 << 52)), IBig::from(1i64 << 52))).unwrap_or(0);
        let v = (truth.round() + n as f64).max(0.0);
        (v >= self.threshold as f64).then_some(v)
    }

    /// ± half-width of the 95 % interval of one count.
    pub fn interval95(&self) -> f64 {
        self.cal.interval95.ceil()
    }

    /// The threshold (0: none).
    pub fn threshold(&self) -> u64 {
        self.threshold
    }
}

/// The canonical text of a route's question (route name and its parts), with the current
/// hour when its range reaches into the current UTC day (module docs: Today).
pub fn route_text(route: &str, parts: &[&str], end: NaiveDateTime, now: DateTime<Utc>) -> String {
    let today = now.date_naive().and_hms_opt(0, 0, 0).unwrap_or_default();
    let live = if end > today {
        now.format("%Y%m%d%H").to_string()
    } else {
        String::new()
    };
    format!(
        "veil-route-v1\u{1f}{route}\u{1f}{}\u{1f}{live}",
        parts.join("\u{1f}")
    )
}

/// Local days of `q`'s range (for daily active users).
fn local_days(q: &Query) -> f64 {
    ((q.to - q.from).num_days() + 1).max(1) as f64
}

fn text(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// What a charge left.
#[derive(Debug, Clone, PartialEq)]
pub struct Spend {
    /// ε this answer spent (0 when repeated).
    pub epsilon: f64,
    /// Whether the question had been asked today already.
    pub repeated: bool,
    /// ε spent today, this answer included.
    pub spent: f64,
    /// ε per day.
    pub epsilon_day: f64,
    /// When the budget is whole again (next UTC midnight).
    pub resets_at: DateTime<Utc>,
}

impl Spend {
    /// `meta.privacy` of a dp answer that spent this (module docs: wire format).
    pub fn meta(
        &self,
        settings: &Settings,
        delta: f64,
        threshold: u64,
        interval95: Value,
        withheld: &[&str],
    ) -> Value {
        json!({
            "mode": "dp",
            "epsilon": self.epsilon,
            "repeated": self.repeated,
            "epsilon_query": settings.epsilon_query,
            "delta": delta,
            "threshold": threshold,
            "budget": self.budget_json(),
            "interval95": interval95,
            "withheld": withheld,
        })
    }

    /// `meta.privacy.budget`.
    pub fn budget_json(&self) -> Value {
        json!({
            "epsilon_day": self.epsilon_day,
            "spent": round6(self.spent),
            "left": round6((self.epsilon_day - self.spent).max(0.0)),
            "resets_at": self.resets_at.to_rfc3339(),
        })
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The privacy state of one aggregator: settings, the sites' noise keys (read once from
/// ClickHouse), and a lock serialising budget charges of this process.
#[derive(Debug)]
pub struct Privacy {
    settings: Settings,
    keys: Mutex<HashMap<String, [u8; 32]>>,
    making_keys: tokio::sync::Mutex<()>,
    charging: tokio::sync::Mutex<()>,
    /// What this process knows of the ledger: per UTC day and credential-and-site, each
    /// question's ε (a question found here is answered as repeated without a ClickHouse read).
    asked: Mutex<HashMap<(NaiveDate, String), HashMap<String, f64>>>,
}

impl Privacy {
    /// With `settings`.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            keys: Mutex::new(HashMap::new()),
            making_keys: tokio::sync::Mutex::new(()),
            charging: tokio::sync::Mutex::new(()),
            asked: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// True in dp mode.
    pub fn dp(&self) -> bool {
        self.settings.mode == Mode::Dp
    }

    /// `site`'s noise key: the stored one with the lowest nonce; made (random) when none is
    /// stored yet, the way collectors agree on daily salts. One asker at a time looks for a
    /// missing key (a dashboard's first panels arrive together: they must not each make one
    /// and answer with different noise). Two aggregators of a cluster that make a site's
    /// first key in the same instant can still answer one question each with their own key
    /// before both read the lowest; from then on every aggregator uses the same.
    pub async fn site_key(
        &self,
        client: &clickhouse::Client,
        site: &str,
    ) -> Result<[u8; 32], Error> {
        if let Some(k) = self.cached(site) {
            return Ok(k);
        }
        let _one_at_a_time = self.making_keys.lock().await;
        if let Some(k) = self.cached(site) {
            return Ok(k);
        }
        let read = sql!(
            "SELECT hex(secret) FROM privacy_keys WHERE site = {} ORDER BY nonce, secret LIMIT 1",
            lit(site)
        );
        let mut found = fetch(client, &read).await?;
        if found.is_empty() {
            let mut secret = [0u8; 32];
            let mut nonce = [0u8; 8];
            getrandom::fill(&mut secret)
                .and_then(|()| getrandom::fill(&mut nonce))
                .map_err(|e| Error::Internal(format!("no randomness for a privacy key: {e}")))?;
            exec(
                client,
                &sql!(
                    "INSERT INTO privacy_keys (site, secret, nonce, created_at) SELECT {}, unhex({}), {}, now()",
                    lit(site),
                    lit(&hex(&secret)),
                    u64::from_le_bytes(nonce)
                ),
            )
            .await?;
            found = fetch(client, &read).await?;
        }
        let hexed = found
            .first()
            .and_then(|r| r.get(0))
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Internal("privacy key missing after insert".into()))?;
        let key =
            unhex32(hexed).ok_or_else(|| Error::Internal("privacy key is malformed".into()))?;
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(site.to_string(), key);
        Ok(key)
    }

    fn cached(&self, site: &str) -> Option<[u8; 32]> {
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(site)
            .copied()
    }

    /// Forgets cached keys (after a site's data and key were erased).
    pub fn forget(&self, site: &str) {
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(site);
    }

    /// Spends `epsilon` of `credential`'s budget for `site` of `now`'s UTC day (at most
    /// `epsilon_day`) for `question`, or nothing when it asked the question today already;
    /// [`Error::BudgetSpent`] when the rest of the day's budget is smaller. The budget is per
    /// site: the admin reading two sites spends each site's own (what is protected is each
    /// site's visitors).
    #[allow(clippy::too_many_arguments)]
    pub async fn charge(
        &self,
        client: &clickhouse::Client,
        credential: &str,
        site: &str,
        question: [u8; 32],
        epsilon: f64,
        epsilon_day: f64,
        now: DateTime<Utc>,
    ) -> Result<Spend, Error> {
        let credential = &format!("{credential} {site}");
        let _one_at_a_time = self.charging.lock().await;
        let day = now.date_naive();
        let resets_at = (day + Duration::days(1))
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc();
        let q = hex(&question);
        let slot = (day, credential.clone());
        let known =
            |asked: &HashMap<String, f64>| (asked.values().sum::<f64>(), asked.contains_key(&q));
        let local = {
            let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
            asked.retain(|(d, _), _| *d + Duration::days(1) >= day);
            asked.get(&slot).map(known)
        };
        if let Some((spent, true)) = local {
            return Ok(Spend {
                epsilon: 0.0,
                repeated: true,
                spent,
                epsilon_day,
                resets_at,
            });
        }
        // Not known here: the ledger every aggregator writes.
        let rows = fetch(
            client,
            &sql!(
                "SELECT question, epsilon FROM privacy_spend WHERE day = {} AND credential = {}",
                date(day),
                lit(credential)
            ),
        )
        .await?;
        let (spent, repeated) = {
            let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
            let mine = asked.entry(slot.clone()).or_default();
            for r in &rows {
                if let Some(question) = r.get(0).and_then(Value::as_str) {
                    mine.insert(
                        question.to_string(),
                        r.get(1).and_then(number).unwrap_or(0.0),
                    );
                }
            }
            known(mine)
        };
        if repeated {
            return Ok(Spend {
                epsilon: 0.0,
                repeated,
                spent,
                epsilon_day,
                resets_at,
            });
        }
        if spent + epsilon > epsilon_day + 1e-9 {
            let wait = (resets_at - now).num_seconds().max(1) as u64;
            let budget = Spend {
                epsilon: 0.0,
                repeated: false,
                spent,
                epsilon_day,
                resets_at,
            }
            .budget_json();
            return Err(Error::BudgetSpent {
                message: format!(
                    "the privacy budget of this credential for today is spent (ε {:.2} of {:.2} used; this question needs {:.2}); it renews at {} — questions already asked today can be asked again",
                    spent,
                    epsilon_day,
                    epsilon,
                    resets_at.to_rfc3339()
                ),
                retry_after: wait,
                budget,
            });
        }
        exec(
            client,
            &sql!(
                "INSERT INTO privacy_spend (day, credential, question, epsilon, at) SELECT {}, {}, {}, {}, {}",
                date(day),
                lit(credential),
                lit(&q),
                epsilon,
                utc(now.naive_utc())
            ),
        )
        .await?;
        self.asked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(slot)
            .or_default()
            .insert(q, epsilon);
        Ok(Spend {
            epsilon,
            repeated,
            spent: spent + epsilon,
            epsilon_day,
            resets_at,
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_matches_opendp_and_widens_with_sensitivity() {
        let a = calibrate(1, 0.5).expect("calibrates");
        assert!((a.scale - 2.0).abs() < 1e-6, "scale {}", a.scale);
        let b = calibrate(10, 0.5).expect("calibrates");
        assert!((b.scale - 20.0).abs() < 1e-5);
        assert!(b.interval95 > a.interval95 * 9.0);
        // 95 % of discrete Laplace(2) draws lie within about 2·ln(20) + 1 ≈ 7.
        assert!((6.0..8.0).contains(&a.interval95), "{}", a.interval95);
    }

    #[test]
    fn thresholds_grow_with_rows_and_shrink_with_delta() {
        let one = threshold(2.0, 1, 1, 1, 1e-6).expect("threshold");
        let five = threshold(10.0, 5, 5, 1, 1e-6).expect("threshold");
        let loose = threshold(2.0, 1, 1, 1, 1e-3).expect("threshold");
        assert!(one > 20 && one < 40, "{one}");
        assert!(five > one * 4, "{five} vs {one}");
        assert!(loose < one);
    }

    #[test]
    fn days_touched_counts_utc_days() {
        let t = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").expect("time");
        assert_eq!(
            days_touched(t("2026-01-01 00:00:00"), t("2026-01-02 00:00:00")),
            1
        );
        assert_eq!(
            days_touched(t("2026-01-01 05:00:00"), t("2026-01-02 05:00:00")),
            2
        );
        assert_eq!(
            days_touched(t("2026-01-01 00:00:00"), t("2026-01-31 00:00:00")),
            30
        );
    }

    #[test]
    fn a_site_may_set_its_own_epsilons_within_bounds() {
        let mut site = crate::site::SiteView::new("a.example");
        let d = Settings::default();
        assert_eq!(d.for_site(&site), d);
        site.epsilon_query = Some(0.25);
        site.epsilon_day = Some(5.0);
        let s = d.for_site(&site);
        assert_eq!((s.epsilon_query, s.epsilon_day), (0.25, 5.0));
        let stored = |q: Option<f64>, day: Option<f64>| veil_schemas::registry::SiteSettings {
            epsilon_query: q,
            epsilon_day: day,
            ..Default::default()
        };
        assert!(stored(Some(0.25), Some(5.0)).validate().is_ok());
        for (q, day) in [
            (Some(0.0), None),
            (Some(11.0), None),
            (Some(1.0), Some(0.5)),
            (None, Some(-1.0)),
        ] {
            let e = stored(q, day).validate().unwrap_err().to_string();
            assert!(e.contains("epsilon"), "{e}");
        }
    }

    #[test]
    fn hex_round_trips() {
        let k = [0xabu8; 32];
        assert_eq!(unhex32(&hex(&k)), Some(k));
        assert_eq!(unhex32("zz"), None);
    }
}
