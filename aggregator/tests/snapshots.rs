//! Today's snapshots against a real ClickHouse: a report reads one only while it is fresh and
//! nearly complete, and then answers like the live day.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use chrono::NaiveDate;
use common::*;
use serde_json::{json, Value};
use veil_aggregator::{rollup, stats};
use veil_schemas::sql::Sql;

/// Today's snapshot: every dashboard report read from it equals the live one; a reader asks
/// for one when it finds none it may read; it is read only while fresh and while it misses
/// no more than a thousandth of the day's hits (none, for this small day); a build a late hit
/// made untrustworthy gets no new snapshot.
#[tokio::test]
async fn todays_snapshot_answers_like_the_live_day_while_fresh() {
    use std::sync::Arc;
    use veil_aggregator::snapshot::{self, Snapshots};
    use veil_aggregator::ManualClock;
    let ch = veil_schemas::testing::fresh_database("stats_snapshot").await;
    insert(&ch, SITE, &open_visits_dataset()).await;
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let at = |h: u32, m: u32, s: u32| day.and_hms_opt(h, m, s).unwrap();
    assert!(rollup::build_today(&ch, at(14, 32, 10)).await.unwrap());
    let clock = ManualClock::new(at(14, 55, 0).and_utc());
    let snaps = Snapshots::with_clock(ch.clone(), 30, clock.clone()).unwrap();
    let s = site();
    let run = |body: Value, snaps: Option<Arc<Snapshots>>| {
        let (ch, s) = (ch.clone(), s.clone());
        async move {
            let body = base(body).to_string();
            stats::run(
                &ch.client(),
                &s,
                body.as_bytes(),
                now(),
                stats::Shared {
                    snapshots: snaps.as_ref(),
                    inflight: None,
                    screens: None,
                    heavy: None,
                    asker: None,
                },
            )
            .await
            .unwrap()
            .1
        }
    };
    let recorded = || {
        let ch = ch.clone();
        async move { common::count(&ch, Sql::new("SELECT count() FROM today_snaps")).await }
    };
    let wait_for = |n: u64| {
        let recorded = &recorded;
        async move {
            for _ in 0..200 {
                if recorded().await >= n {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("snapshot {n} was never taken");
        }
    };
    let top =
        json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"]});
    let as_of = |d: &Value| d["meta"]["today_as_of"].as_str().map(str::to_string);

    // None yet: the live day, and a snapshot is asked for.
    let first = run(top.clone(), Some(Arc::clone(&snaps))).await;
    assert_eq!(as_of(&first), None, "{first}");
    assert_eq!(first["results"][0]["metrics"][0], json!(30), "{first}");
    wait_for(1).await;
    let reports = [
        top.clone(),
        json!({"metrics": ["visitors"], "dimensions": ["time:day"]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"]}),
        json!({"metrics": ["visitors", "visits", "bounce_rate"], "dimensions": ["visit:source"]}),
        json!({"metrics": ["visitors"], "dimensions": ["visit:country"]}),
        json!({"metrics": ["visitors"], "dimensions": ["visit:device"]}),
        json!({"metrics": ["visits", "visit_duration"], "dimensions": ["visit:entry_page"]}),
        json!({"metrics": ["visits", "bounce_rate"], "dimensions": ["visit:exit_page"]}),
    ];
    for body in &reports {
        let (live, snap) = (
            run(body.clone(), None).await,
            run(body.clone(), Some(Arc::clone(&snaps))).await,
        );
        assert_eq!(
            snap["results"], live["results"],
            "{body}: snapshot {snap}\nlive {live}"
        );
        assert_eq!(
            as_of(&snap).as_deref(),
            Some("2026-11-20T14:55:00+00:00"),
            "{snap}"
        );
        assert_eq!(as_of(&live), None);
    }
    // Two snapshots taken in the same second (two aggregator processes): each is read on its
    // own, never both.
    assert!(snapshot::take(&ch, SITE, at(14, 55, 0))
        .await
        .unwrap()
        .is_some());
    let twice = run(top.clone(), Some(Arc::clone(&snaps))).await;
    assert_eq!(
        as_of(&twice).as_deref(),
        Some("2026-11-20T14:55:00+00:00"),
        "{twice}"
    );
    assert_eq!(twice["results"], first["results"], "{twice}");

    // A hit after the snapshot: on a day this small, any missed hit sends readers live, and
    // they ask for a new snapshot, which has it.
    insert(
        &ch,
        SITE,
        &[ev("V0".into(), "2026-11-20 14:56:00", "pageview", "/v")],
    )
    .await;
    clock.set(at(14, 56, 30).and_utc());
    let after = run(top.clone(), Some(Arc::clone(&snaps))).await;
    assert_eq!(as_of(&after), None, "{after}");
    assert_eq!(after["results"][0]["metrics"][0], json!(31), "{after}");
    wait_for(3).await;
    let again = run(top.clone(), Some(Arc::clone(&snaps))).await;
    assert_eq!(
        as_of(&again).as_deref(),
        Some("2026-11-20T14:56:30+00:00"),
        "{again}"
    );
    assert_eq!(again["results"], after["results"]);

    // Older than the maximum age: live again (and a newer one is asked for).
    clock.set(at(14, 57, 1).and_utc());
    let old = run(top.clone(), Some(Arc::clone(&snaps))).await;
    assert_eq!(as_of(&old), None, "{old}");
    wait_for(4).await;

    // A new build of the day: the rollup job renews at once the snapshots of the sites being
    // read, so they need not take the live path until a reader asks.
    assert!(rollup::build_today(&ch, at(14, 58, 10)).await.unwrap());
    clock.set(at(14, 58, 20).and_utc());
    assert_eq!(
        snapshot::renew_watched(&ch, at(14, 58, 20)).await.unwrap(),
        vec![SITE.to_string()]
    );
    let renewed = run(top.clone(), Some(Arc::clone(&snaps))).await;
    assert_eq!(
        as_of(&renewed).as_deref(),
        Some("2026-11-20T14:58:20+00:00"),
        "{renewed}"
    );
    assert_eq!(renewed["results"], run(top.clone(), None).await["results"]);

    // A late hit (before the cut) makes the build untrustworthy: no snapshot is taken from
    // it, and once the last one is too old, readers derive the day from raw events.
    insert(
        &ch,
        SITE,
        &[ev("L0".into(), "2026-11-20 14:00:00", "pageview", "/late")],
    )
    .await;
    assert_eq!(
        snapshot::take(&ch, SITE, at(14, 58, 30)).await.unwrap(),
        None
    );
    clock.set(at(14, 59, 0).and_utc());
    let late = run(top.clone(), Some(Arc::clone(&snaps))).await;
    assert_eq!(as_of(&late), None, "{late}");
    assert_eq!(late["results"][0]["metrics"][0], json!(32), "{late}");
}
