//! Snapshots of the current day (`today_daily`, `today_snaps`: 015_today_snapshots.sql).
//!
//! A report of the current day merges today's build (up to its cut) with the hits after the
//! cut: it puts together the visits still open at the cut and merges the build's `uniq`
//! states with those of the later hits. That merge is most of a dashboard report's time, and
//! every panel of a dashboard repeats it. A snapshot does it once, for every dimension
//! `visits_daily` is built for ([`visits::snapshot_rows`]), and stores finished numbers; a report
//! then reads today as it reads a closed day.
//!
//! Freshness: a snapshot stands for the site's day as it was when it was taken. A reader uses
//! one only when it was made from the day's latest recorded build, is at most `max_age` old
//! (the aggregator's `--today-snapshot-secs`), and misses at most a thousandth of the day's
//! hits: the reader counts the site's hits from the build's cut on (one range of
//! `events_tail`, which is ordered by site and hour) and compares with the count recorded
//! with the snapshot. So a quiet or small site (a test event, a new site) is always read live
//! and exactly, and a busy one, whose live path costs most, shows today at most `max_age`
//! behind and 0.1 % short. When a reader finds no usable snapshot, or one older than a third of
//! `max_age`, it asks for a new one (stale while it revalidates); snapshots are taken in the
//! background, one at a time per site, and only for sites someone reads.
//!
//! After each build of the current day the rollup job takes one at once for the sites that had
//! one in the last few minutes ([`renew_watched`]): readers of the previous build's snapshots
//! would otherwise all take the live path until one asks.
//!
//! A snapshot is taken only from a build [`builds::visit_builds`] still trusts (no hit stored
//! since with a time before its cut, and `events_tail` holding every hit after it), so a late
//! hit stops the snapshots of the day until the next build, like it stops readers from using the
//! build; and only when the site's tail in `events_tail` is as long as in `events` when it is
//! counted (a view that missed an insert never makes a snapshot short beyond its `max_age`).
//!
//! Wire format: `today_daily` rows `(site, day, build, snap, id, dim, value, uv, visits,
//! pageviews, events, bounces, duration)` written by one `INSERT … SELECT` (`id` random: two
//! processes may take a snapshot in the same second), then one `today_snaps` row
//! `(site, day, build, snap, id, tail, hits)` recording it as complete (the two counts taken
//! before the rows were computed, so a hit stored meanwhile counts as missed); snapshots more
//! than [`KEEP_MINUTES`] older than the newest are deleted now and then.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::{Duration, NaiveDateTime, NaiveTime};
use veil_schemas::sql;
use veil_schemas::sql::{date, lit, utc, utc_text, Sql};
use veil_schemas::ClickHouseConfig;

use crate::builds::{self, SnapFuture, TodaySnapshots};
use crate::clock::{Clock, SystemClock};
use crate::db::{cell_u64 as count, exec, fetch, mutation_target};
use crate::query::visits;
use crate::query::{Build, Snap};
use crate::Error;

/// The longest `--today-snapshot-secs` (well under [`KEEP_MINUTES`]).
pub const MAX_AGE_SECS: u64 = 120;

/// Today's snapshots as one aggregator process uses them.
pub struct Snapshots {
    ch: ClickHouseConfig,
    max_age: Duration,
    clock: Arc<dyn Clock>,
    /// Sites with a snapshot being taken.
    busy: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl Snapshots {
    /// Snapshots read while at most `max_age_secs` old; `None` when 0 (every report of the
    /// current day takes the live path).
    pub fn new(ch: ClickHouseConfig, max_age_secs: u64) -> Option<Arc<Self>> {
        Self::with_clock(ch, max_age_secs, Arc::new(SystemClock))
    }

    /// [`Snapshots::new`] on another clock (tests replay a past day).
    pub fn with_clock(
        ch: ClickHouseConfig,
        max_age_secs: u64,
        clock: Arc<dyn Clock>,
    ) -> Option<Arc<Self>> {
        (max_age_secs > 0).then(|| {
            Arc::new(Self {
                ch,
                max_age: Duration::seconds(max_age_secs.min(MAX_AGE_SECS) as i64),
                clock,
                busy: Mutex::new(HashSet::new()),
            })
        })
    }

    /// The snapshot of `site` made from build `b` (the current day's latest recorded build,
    /// with cut `cut`) that a report may read now, if there is one; asks for a new one in the
    /// background when there is none it may read or it is getting old.
    pub async fn usable(
        self: &Arc<Self>,
        client: &clickhouse::Client,
        site: &str,
        b: &Build,
        cut: NaiveDateTime,
    ) -> Result<Option<Snap>, Error> {
        let now = self.clock.now().naive_utc();
        let stmt = sql!(
            "SELECT {}, id, tail, hits, \
                 (SELECT count() FROM {}) FROM today_snaps \
                 WHERE site = {} AND day = {} AND build = {} ORDER BY snap DESC, id DESC LIMIT 1",
            utc_text(Sql::new("snap")),
            tail_cond(site, b, cut),
            lit(site),
            date(b.day),
            b.build
        );
        let rows = fetch(client, &stmt).await?;
        let row = rows.first().and_then(|r| {
            let snap =
                NaiveDateTime::parse_from_str(r.get(0)?.as_str()?, "%Y-%m-%d %H:%M:%S").ok()?;
            Some((
                Snap {
                    at: snap,
                    id: count(r.get(1)?)?,
                },
                count(r.get(2)?)?,
                count(r.get(3)?)?,
                count(r.get(4)?)?,
            ))
        });
        let usable = row.and_then(|(snap, tail, hits, tail_now)| {
            readable(
                now - snap.at,
                self.max_age,
                tail_now.saturating_sub(tail),
                hits,
            )
            .then_some(snap)
        });
        if usable.is_none_or(|snap| now - snap.at > self.max_age / 3) {
            self.refresh(site);
        }
        Ok(usable)
    }

    /// Takes a snapshot of `site`'s current day in the background, unless one is being taken.
    pub fn refresh(self: &Arc<Self>, site: &str) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        {
            let Ok(mut busy) = self.busy.lock() else {
                return;
            };
            if !busy.insert(site.to_string()) {
                return;
            }
        }
        let (this, site) = (Arc::clone(self), site.to_string());
        tokio::spawn(async move {
            if let Err(e) = take(&this.ch, &site, this.clock.now().naive_utc()).await {
                tracing::warn!(error = %e, "today's snapshot failed; reports take the live path");
            }
            if let Ok(mut busy) = this.busy.lock() {
                busy.remove(&site);
            }
        });
    }
}

/// Takes a snapshot of `site`'s UTC day of `now` (the clock's time; what is stored then),
/// from the day's latest recorded build if it has a cut and is still trusted; returns the
/// snapshot's moment, or `None` when there is no such build (the day is too young, or a late
/// hit awaits the next build).
pub async fn take(
    ch: &ClickHouseConfig,
    site: &str,
    now: NaiveDateTime,
) -> Result<Option<NaiveDateTime>, Error> {
    let client = &ch.client();
    let snap = now - Duration::nanoseconds(i64::from(now.and_utc().timestamp_subsec_nanos()));
    let day = snap.date();
    let builds = builds::visit_builds(client, day, day).await?;
    let Some((b, cut)) = builds
        .iter()
        .find_map(|b| b.cut.map(|c| (b, c)))
        .filter(|(b, _)| b.day == day)
    else {
        return Ok(None);
    };
    // Counted before the rows are computed: a hit stored meanwhile may or may not be in
    // them, and counts as missed.
    // The raw tail too: a snapshot is made only while `events_tail` holds every hit after
    // the cut that `events` has (its view may have missed an insert; see builds.rs).
    let stmt = sql!(
        "SELECT (SELECT count() FROM {}), (SELECT count() FROM events WHERE site = {} \
             AND timestamp >= {} AND timestamp < {}), (SELECT count() FROM events WHERE site = {} \
             AND timestamp >= {} AND timestamp < {})",
        tail_cond(site, b, cut),
        lit(site),
        utc(day.and_time(NaiveTime::MIN)),
        utc(day.and_time(NaiveTime::MIN) + Duration::days(1)),
        lit(site),
        utc(cut),
        utc(day.and_time(NaiveTime::MIN) + Duration::days(1))
    );
    let counts = fetch(client, &stmt).await?;
    let (tail, hits, raw_tail) = counts
        .first()
        .and_then(|r| Some((count(r.get(0)?)?, count(r.get(1)?)?, count(r.get(2)?)?)))
        .ok_or_else(|| Error::ClickHouse("no counts for today's snapshot".into()))?;
    if tail < raw_tail {
        return Ok(None);
    }
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| Error::Internal(format!("random snapshot id: {e}")))?;
    let id = u64::from_le_bytes(id);
    let rows = visits::snapshot_rows(site, b, cut);
    let stmt = sql!(
        "INSERT INTO today_daily (site, day, build, snap, id, dim, value, uv, visits, \
             pageviews, events, bounces, duration) SELECT {}, {}, toUInt64({}), {}, toUInt64({}), \
             * FROM ({})",
        lit(site),
        date(day),
        b.build,
        utc(snap),
        id,
        rows
    );
    exec(client, &stmt).await?;
    let stmt = sql!(
        "INSERT INTO today_snaps (site, day, build, snap, id, tail, hits) \
             VALUES ({}, {}, {}, {}, {}, {}, {})",
        lit(site),
        date(day),
        b.build,
        utc(snap),
        id,
        tail,
        hits
    );
    exec(client, &stmt).await?;
    // Readers that looked up an older snapshot a moment ago may still be reading it, so old
    // ones go only once they are well past any reader's `max_age`, and in one mutation every
    // few minutes rather than one per snapshot.
    let keep = snap - Duration::minutes(KEEP_MINUTES);
    let stmt = sql!(
        "SELECT count() FROM today_daily WHERE site = {} AND day = {} AND snap < {}",
        lit(site),
        date(day),
        utc(keep - Duration::minutes(KEEP_MINUTES))
    );
    let oldest = fetch(client, &stmt).await?;
    if oldest.first().and_then(|r| r.get(0)).and_then(count) > Some(0) {
        let stmt = sql!(
            "ALTER TABLE {} DELETE WHERE site = {} AND day = {} AND snap < {}",
            mutation_target(ch, "today_daily")?,
            lit(site),
            date(day),
            utc(keep)
        );
        exec(client, &stmt).await?;
    }
    Ok(Some(snap))
}

/// After a new build of the current day: takes a snapshot now for every site that had one
/// in the last [`KEEP_MINUTES`] (sites someone is reading), so their readers find one of the
/// new build. Returns the sites snapshotted.
pub async fn renew_watched(
    ch: &ClickHouseConfig,
    now: NaiveDateTime,
) -> Result<Vec<String>, Error> {
    let stmt = sql!(
        "SELECT DISTINCT site FROM today_snaps WHERE day = {} AND snap >= {} ORDER BY site",
        date(now.date()),
        utc(now - Duration::minutes(KEEP_MINUTES))
    );
    let rows = fetch(&ch.client(), &stmt).await?;
    let mut done = Vec::new();
    for site in rows.iter().filter_map(|r| r.get(0)?.as_str()) {
        if take(ch, site, now).await?.is_some() {
            done.push(site.to_string());
        }
    }
    Ok(done)
}

/// Whether a snapshot `age` old that misses `missed` of the day's `hits` may be read (at most
/// `max_age` old, at most a thousandth of the hits missed).
fn readable(age: Duration, max_age: Duration, missed: u64, hits: u64) -> bool {
    age <= max_age && missed <= hits / 1000
}

/// How long a snapshot's rows outlive a newer snapshot (longer than any `max_age` readers
/// use, which [`Snapshots::new`] caps).
pub const KEEP_MINUTES: i64 = 5;

/// The site's rows in `events_tail` from build `b`'s cut to the end of its day (bots too: a
/// count to compare, not to report).
fn tail_cond(site: &str, b: &Build, cut: NaiveDateTime) -> Sql {
    let cond = visits::after_cut_cond(site, b, cut);
    sql!("{} WHERE {}", visits::RECENT, cond)
}

impl TodaySnapshots for Arc<Snapshots> {
    fn usable<'a>(
        &'a self,
        client: &'a clickhouse::Client,
        site: &'a str,
        b: &'a Build,
        cut: NaiveDateTime,
    ) -> SnapFuture<'a> {
        Box::pin(Snapshots::usable(self, client, site, b, cut))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_read_only_while_fresh_and_nearly_complete() {
        let max = Duration::seconds(30);
        assert!(readable(Duration::seconds(30), max, 0, 10));
        assert!(!readable(Duration::seconds(31), max, 0, 10));
        // A small day: any hit since the snapshot sends readers to the live path.
        assert!(!readable(Duration::seconds(1), max, 1, 999));
        // A busy day: up to a thousandth of its hits may be missing.
        assert!(readable(Duration::seconds(1), max, 1_500, 1_500_000));
        assert!(!readable(Duration::seconds(1), max, 1_501, 1_500_000));
    }
}
