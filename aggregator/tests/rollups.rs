//! The Stats API against a real ClickHouse on the known dataset (`common::seed`), answered from
//! raw events and from the rollup job's builds alike: every report, every dimension and metric,
//! the current day's partial build with the visits still open at its cut, and the builds
//! readers trust.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use chrono::NaiveDate;
use common::*;
use serde_json::{json, Value};
use veil_aggregator::site::SiteView;
use veil_aggregator::{builds, db, rollup};
use veil_schemas::sql;
use veil_schemas::sql::Sql;
use veil_schemas::ClickHouseConfig;

/// Every report the dataset answers, with the numbers worked out by hand in `seed`'s doc.
async fn check_reports(ch: &ClickHouseConfig, rollups: bool) {
    let s = site();
    let inc = json!({"rollups": rollups});
    let top = q(ch, &s, base(json!({"metrics": ["visitors", "visits", "pageviews", "events", "views_per_visit", "bounce_rate", "visit_duration", "sessions_per_user"], "include": inc}))).await;
    // visits: 10 + 12 + 2; pageviews: 16 + 12 + 2; events + 5 signups; bounces: 4 + 12 + 2 of 24;
    // durations: 5×180 + 60 over 24 visits.
    assert_eq!(
        top["results"][0]["metrics"],
        json!([18, 24, 30, 35, 1.25, 75, 40, 1.33]),
        "{top}"
    );

    let by_source = q(ch, &s, base(json!({"metrics": ["visitors", "visits", "bounce_rate", "visit_duration"], "dimensions": ["visit:source"], "include": inc}))).await;
    assert_eq!(
        rows(&by_source),
        vec![
            (
                vec!["Google".into()],
                vec![json!(10), json!(10), json!(40), json!(96)]
            ),
            (
                vec!["Direct / None".into()],
                vec![json!(6), json!(12), json!(100), json!(0)]
            ),
        ],
        "{by_source}"
    );
    // Hacker News (2 visitors) is folded, and the fold alone is under k: not shown, and
    // not even counted (a hidden fold's size would tell how many small groups exist).
    assert_eq!(by_source["meta"]["folded_rows"], 0);
    assert_eq!(by_source["meta"]["suppressed"], true);

    let pages = q(ch, &s, base(json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "include": inc}))).await;
    assert_eq!(
        rows(&pages),
        vec![
            (vec!["/".into()], vec![json!(18), json!(18)]),
            (vec!["/blog/x".into()], vec![json!(6), json!(6)]),
            (vec!["/pricing".into()], vec![json!(6), json!(6)]),
        ],
        "{pages}"
    );

    let entry = q(ch, &s, base(json!({"metrics": ["visits", "bounce_rate"], "dimensions": ["visit:entry_page"], "include": inc}))).await;
    assert_eq!(
        rows(&entry),
        vec![
            (vec!["/".into()], vec![json!(18), json!(67)]),
            (vec!["/blog/x".into()], vec![json!(6), json!(100)]),
        ],
        "{entry}"
    );
    let exit = q(
        ch,
        &s,
        base(json!({"metrics": ["visits"], "dimensions": ["visit:exit_page"], "include": inc})),
    )
    .await;
    assert_eq!(
        rows(&exit),
        vec![
            (vec!["/".into()], vec![json!(12)]),
            (vec!["/blog/x".into()], vec![json!(6)]),
            (vec!["/pricing".into()], vec![json!(6)]),
        ],
        "{exit}"
    );

    let hours = q(
        ch,
        &s,
        base(json!({"metrics": ["visitors"], "dimensions": ["time:hour"], "include": inc})),
    )
    .await;
    assert_eq!(
        rows(&hours),
        vec![
            (vec!["2026-11-20 10:00:00".into()], vec![json!(10)]),
            (vec!["2026-11-20 12:00:00".into()], vec![json!(6)]),
            (vec!["2026-11-20 14:00:00".into()], vec![json!(6)]),
            (vec!["2026-11-20 15:00:00".into()], vec![Value::Null]),
        ],
        "{hours}"
    );

    // Goals and conversion rates (5 of 18 signed up, 6 of 18 read the blog).
    let goals = q(ch, &s, base(json!({"metrics": ["visitors", "events", "conversion_rate"], "dimensions": ["event:goal"], "include": inc}))).await;
    assert_eq!(
        rows(&goals),
        vec![
            (vec!["Blog".into()], vec![json!(6), json!(6), json!(33.3)]),
            (
                vec!["Pricing".into()],
                vec![json!(6), json!(6), json!(33.3)]
            ),
            (vec!["Signup".into()], vec![json!(5), json!(5), json!(27.8)]),
        ],
        "{goals}"
    );
    // Conversions by source: goal filter joined to the visit's source. As Plausible's:
    // conversion_rate divides by every visitor (5 of 18), group_conversion_rate by the
    // source's own (5 of Google's 10).
    let conv = q(ch, &s, base(json!({"metrics": ["visitors", "conversion_rate", "group_conversion_rate", "total_revenue"], "dimensions": ["visit:source"], "filters": [["is", "event:goal", ["Signup"]]], "include": inc}))).await;
    assert_eq!(
        rows(&conv),
        vec![(
            vec!["Google".into()],
            vec![
                json!(5),
                json!(27.8),
                json!(50),
                json!({"value": 52.5, "currency": "EUR", "long": "€52.50", "short": "€52.5"})
            ]
        )],
        "{conv}"
    );
    // Neither denominator keeps a top-level custom-property filter (Plausible's special
    // metrics leave goal and property filters out of it): 5 pro sign-ups of 18 visitors, and
    // of Germany's 10.
    let conv = q(ch, &s, base(json!({"metrics": ["visitors", "conversion_rate", "group_conversion_rate"], "dimensions": ["visit:country"], "filters": [["is", "event:goal", ["Signup"]], ["is", "event:props:plan", ["pro"]]], "include": inc}))).await;
    assert_eq!(
        rows(&conv),
        vec![(vec!["DE".into()], vec![json!(5), json!(27.8), json!(50)])],
        "{conv}"
    );
    // The same without revenue reads the visit rows' hits once built (no sessionizing).
    let conv = q(ch, &s, base(json!({"metrics": ["visitors", "group_conversion_rate", "bounce_rate"], "dimensions": ["visit:source"], "filters": [["is", "event:goal", ["Signup"]]], "include": inc}))).await;
    assert_eq!(
        rows(&conv),
        vec![(vec!["Google".into()], vec![json!(5), json!(50), json!(0)])],
        "{conv}"
    );
    let want = if rollups { "visit_hits" } else { "joined" };
    assert_eq!(conv["meta"]["source"], want, "{conv}");
    // A page's visitors, visits, pageviews, bounce rate and duration (the visits that viewed
    // it; pageviews of that page only): the six /pricing visits are A0–A5's, none a bounce,
    // five of 180 s and one of 60 s (the durations above).
    let pricing = q(ch, &s, base(json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"], "filters": [["is", "event:page", ["/pricing"]]], "include": inc}))).await;
    assert_eq!(
        pricing["results"][0]["metrics"],
        json!([6, 6, 6, 0, (5 * 180 + 60) / 6]),
        "{pricing}"
    );
}

/// Questions that mix hits (a page, a goal, an event name, time) with visits (source, entry
/// page, country, bounce rate, duration): from the visit rows' stored hits
/// (`visit_hits`) they must equal the answers derived from raw events alone.
async fn visit_hits_match_raw(ch: &ClickHouseConfig) {
    let s = site();
    let questions = [
        // (views_per_visit under a page filter is refused, as Plausible refuses it.)
        json!({"metrics": ["visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration"], "filters": [["is", "event:page", ["/pricing"]]]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "filters": [["is", "visit:source", ["Google"]]]}),
        json!({"metrics": ["visitors", "events", "conversion_rate", "group_conversion_rate"], "dimensions": ["visit:source"], "filters": [["is", "event:goal", ["Signup"]]]}),
        json!({"metrics": ["visitors", "visits"], "dimensions": ["visit:source"], "filters": [["contains", "event:page", ["blog"]]]}),
        json!({"metrics": ["visits", "bounce_rate"], "dimensions": ["visit:entry_page"], "filters": [["or", [["is", "event:page", ["/pricing"]], ["is", "event:name", ["Signup"]]]]]}),
        json!({"metrics": ["visitors", "visits", "visit_duration"], "filters": [["not", ["is", "event:page", ["/pricing"]]]]}),
        json!({"metrics": ["visitors", "bounce_rate"], "dimensions": ["visit:country"], "filters": [["matches", "event:page", ["^/blog/"]]]}),
        json!({"metrics": ["visits", "pageviews"], "dimensions": ["time:day"], "filters": [["is", "event:page", ["/"]]]}),
        json!({"metrics": ["visitors", "visits"], "dimensions": ["event:goal"], "filters": [["is", "visit:source", ["Google"]]]}),
        json!({"metrics": ["visitors", "visit_duration"], "dimensions": ["event:page", "visit:source"]}),
        json!({"metrics": ["visitors", "visits", "bounce_rate"], "dimensions": ["visit:source"], "filters": [["is_not", "event:page", ["/"]]]}),
        json!({"metrics": ["visitors", "visits", "pageviews"], "dimensions": ["visit:entry_page"], "filters": [["is", "event:page", ["/PRICING"], {"case_sensitive": false}], ["not", ["is", "visit:source", ["Hacker News"]]]]}),
        json!({"metrics": ["visitors", "visits", "bounce_rate", "pageviews", "events"], "dimensions": ["visit:source"], "filters": [["is", "event:props:plan", ["pro"]]]}),
        json!({"metrics": ["visitors", "events"], "dimensions": ["event:props:plan"], "filters": [["is", "visit:source", ["Google"]]]}),
        json!({"metrics": ["visitors", "visits", "pageviews", "events", "bounce_rate"], "dimensions": ["visit:source"], "filters": [["is", "event:page", ["/pricing"]], ["is", "event:name", ["Signup"]]]}),
        json!({"metrics": ["visitors", "visits", "events"], "filters": [["not", ["is", "event:name", ["pageview"]]]]}),
        // By day, one row per visit (a visit's hits are on its UTC day).
        json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate"], "dimensions": ["time:day"], "date_range": ["2026-11-19", "2026-11-20"], "filters": [["is_not", "event:page", ["/pricing"]]]}),
        // Two hit conditions with a visit condition: one lambda that reads the visit's source
        // (which nothing else in the query reads).
        json!({"metrics": ["visitors"], "filters": [["is", "visit:source", ["Google"]], ["contains", "event:page", ["pric"]], ["is_not", "event:name", ["pageview"]]]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["visit:country"], "filters": [["or", [["is", "visit:source", ["Google"]], ["is", "event:page", ["/"]]]], ["is_not", "event:name", ["nothing"]]]}),
        json!({"metrics": ["visitors", "visits"], "dimensions": ["event:hostname"], "filters": [["is", "visit:entry_page", ["/blog/x"]], ["is", "event:page", ["/blog/x"]]]}),
    ];
    for body in questions {
        let mut raw = body.clone();
        raw["include"] = json!({"rollups": false});
        let (r, d) = (q(ch, &s, base(body)).await, q(ch, &s, base(raw)).await);
        // One filter value by a breakdown the filtered rows are written for: `visits_daily`
        // (filtered_rows_match_raw); the rest from the visits' hits.
        let src = r["meta"]["source"].as_str().unwrap_or_default();
        assert!(src == "visit_hits" || src == "visits_daily", "{r}");
        assert_eq!(d["meta"]["source"], "joined", "{d}");
        assert_eq!(r["results"], d["results"], "visit hits {r}\nraw {d}");
        assert!(
            r["results"].as_array().is_some_and(|a| !a.is_empty()),
            "{r}"
        );
    }
}

/// Asks `body` with the rollups and again from raw events (`include.rollups: false`): the
/// first must come from `source` (and the raw one from `raw_source` when given), both must
/// answer the same, and the first row's first metric must be above zero (the question
/// selects someone).
async fn same_as_raw(
    ch: &ClickHouseConfig,
    s: &SiteView,
    body: Value,
    source: &str,
    raw_source: Option<&str>,
) {
    let mut raw = body.clone();
    raw["include"] = json!({"rollups": false});
    let (r, d) = (q(ch, s, base(body)).await, q(ch, s, base(raw)).await);
    assert_eq!(r["meta"]["source"], source, "{r}");
    match raw_source {
        Some(want) => assert_eq!(d["meta"]["source"], want, "{d}"),
        None => assert_ne!(d["meta"]["source"], source, "{d}"),
    }
    assert_eq!(r["results"], d["results"], "rollups {r}\nraw {d}");
    assert!(
        r["results"][0]["metrics"][0].as_u64().unwrap_or(0) > 0,
        "the filter selects someone: {r}"
    );
}

/// Hit filters on the event rollups (a goal, a page pattern, an event name): applied in each
/// part's `PREWHERE` so only matching rows' states are read; every answer equals the raw
/// events' (exact mode).
async fn hourly_filters_match_raw(ch: &ClickHouseConfig) {
    let s = site();
    let questions = [
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "filters": [["is", "event:goal", ["Signup"]]]}),
        json!({"metrics": ["visitors", "events"], "dimensions": ["event:page"], "filters": [["is", "event:name", ["Signup"]]]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["time:hour"], "date_range": ["2026-11-19", "2026-11-20"], "filters": [["contains", "event:page", ["/"]]]}),
        json!({"metrics": ["visitors"], "dimensions": ["event:goal"], "filters": [["matches", "event:page", ["^/(pricing|blog)"]]]}),
        json!({"metrics": ["visitors", "events"], "dimensions": ["event:name"], "filters": [["is_not", "event:page", ["/"]], ["is", "event:hostname", ["shop.example"]]]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page", "event:name"], "filters": [["contains", "event:page", ["PRIC"], {"case_sensitive": false}]]}),
    ];
    for body in questions {
        same_as_raw(ch, &s, body, "event_rollups", None).await;
    }
    // By day or in total under a pattern or a negation: the visits with such a hit, not every
    // page's states merged (`source::wide_under_hits`).
    let wide = [
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["time:day"], "date_range": ["2026-11-19", "2026-11-20"], "filters": [["contains", "event:page", ["/"]]]}),
        json!({"metrics": ["visitors", "pageviews", "events"], "filters": [["is_not", "event:page", ["/"]]]}),
        json!({"metrics": ["visitors"], "dimensions": ["time:day"], "filters": [["not", ["is", "event:page", ["/pricing"]]]]}),
        json!({"metrics": ["visitors", "pageviews"], "filters": [["contains", "event:page", ["PRIC"], {"case_sensitive": false}]]}),
    ];
    for body in wide {
        same_as_raw(ch, &s, body, "visit_hits", None).await;
    }
}

/// `has_done` keeps whole visitors (`visitor_id IN` the set of those with a matching event):
/// questions of visits and visitor facts under it read visit rows (`visits`), not every raw
/// event, and equal what visits derived from raw events answer; by page, the hits of those
/// visitors from raw events.
async fn has_done_matches_raw(ch: &ClickHouseConfig) {
    let s = site();
    let signed_up = json!(["has_done", ["is", "event:goal", ["Signup"]]]);
    let questions = [
        (
            json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"], "filters": [signed_up]}),
            "visits",
        ),
        (
            json!({"metrics": ["visitors", "visits"], "dimensions": ["visit:source"], "filters": [["has_done", ["is", "event:page", ["/pricing"]]]]}),
            "visits",
        ),
        (
            json!({"metrics": ["visitors"], "dimensions": ["visit:country"], "filters": [["has_not_done", ["contains", "event:page", ["blog"]]]]}),
            "visits",
        ),
        (
            json!({"metrics": ["visitors"], "dimensions": ["time:day"], "filters": [signed_up, ["is", "visit:device", ["Desktop"]]]}),
            "visits",
        ),
        (
            json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "filters": [signed_up]}),
            "events",
        ),
    ];
    for (body, want) in questions {
        // Raw: visits derived from raw events (`visits`), or raw events by page.
        same_as_raw(ch, &s, body, want, Some(want)).await;
    }
}

/// Visitor facts (country, device, browser…) under a hit filter no rollup answers (a page
/// pattern, two goals, a custom property): the visits with a matching hit, one row per visit
/// (`visit_hits`), equal the raw events' answer.
async fn visitor_facts_match_raw(ch: &ClickHouseConfig) {
    let s = site();
    let questions = [
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["visit:country"], "filters": [["contains", "event:page", ["blog"]]]}),
        json!({"metrics": ["visitors", "pageviews", "events"], "dimensions": ["visit:device"], "filters": [["is_not", "event:page", ["/pricing"]]]}),
        json!({"metrics": ["visitors", "events"], "dimensions": ["visit:browser"], "filters": [["is", "event:goal", ["Signup", "Blog"]]]}),
        json!({"metrics": ["visitors", "events"], "dimensions": ["visit:os"], "filters": [["is", "event:props:plan", ["pro"]]]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["visit:country_name"], "filters": [["or", [["is", "event:page", ["/pricing"]], ["is", "event:page", ["/"]]]]]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["visit:browser"], "filters": [["matches", "event:page", ["^/blog/"]]]}),
    ];
    for body in questions {
        same_as_raw(ch, &s, body, "visit_hits", Some("events")).await;
    }
}

/// A filter on the breakdown's own dimension (top pages under "page contains", sources
/// under "source is not", countries under two values): the unfiltered per-day rows of the
/// values that pass, read from `visits_daily`; every answer equals the raw events' (exact
/// mode), case-insensitive and Plausible's words (`Direct / None`) included.
async fn dimension_filters_match_raw(ch: &ClickHouseConfig) {
    let s = site();
    let questions = [
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "filters": [["contains", "event:page", ["/p", "blog"]]]}),
        json!({"metrics": ["visitors", "pageviews", "events"], "dimensions": ["event:page"], "filters": [["is_not", "event:page", ["/pricing"]]]}),
        json!({"metrics": ["visitors"], "dimensions": ["event:page"], "filters": [["matches", "event:page", ["^/blog/"]]]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "filters": [["or", [["is", "event:page", ["/"]], ["is", "event:page", ["/blog/x"]]]]]}),
        json!({"metrics": ["visitors", "events"], "dimensions": ["event:name"], "filters": [["is_not", "event:name", ["pageview"]]]}),
        json!({"metrics": ["visitors", "visits", "bounce_rate", "visit_duration"], "dimensions": ["visit:source"], "filters": [["is_not", "visit:source", ["Google"]]]}),
        json!({"metrics": ["visitors", "visits"], "dimensions": ["visit:source"], "filters": [["is", "visit:source", ["Direct / None", "Hacker News"]]]}),
        json!({"metrics": ["visitors"], "dimensions": ["visit:country"], "filters": [["is", "visit:country", ["DE", "FR"]]]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["visit:device"], "filters": [["contains", "visit:device", ["DESK"], {"case_sensitive": false}]]}),
        json!({"metrics": ["visitors", "visits", "bounce_rate"], "dimensions": ["visit:entry_page"], "filters": [["not", ["contains", "visit:entry_page", ["blog"]]]]}),
    ];
    for body in questions {
        same_as_raw(ch, &s, body, "visits_daily", None).await;
    }
    // A share of the filtered total is not the unfiltered rows' share: not answered so.
    let share = json!({"metrics": ["visitors", "percentage"], "dimensions": ["event:page"], "filters": [["contains", "event:page", ["/p"]]]});
    assert_ne!(
        q(ch, &s, base(share)).await["meta"]["source"],
        "visits_daily"
    );
}

/// One filter value (a page, an event name, a goal of one, a visit property), with the totals,
/// by day, by source, country or device, or by page under a visit property: read from
/// `visits_daily`'s filtered rows on built days (and filtered visit rows elsewhere), every
/// answer equals the raw events' (exact mode).
async fn filtered_rows_match_raw(ch: &ClickHouseConfig) {
    let s = site();
    let all = [
        "visitors",
        "visits",
        "pageviews",
        "events",
        "bounce_rate",
        "visit_duration",
        "sessions_per_user",
    ];
    let questions = [
        json!({"metrics": all, "filters": [["is", "event:page", ["/pricing"]]]}),
        json!({"metrics": all, "filters": [["is", "event:name", ["Signup"]]]}),
        json!({"metrics": all, "filters": [["is", "event:goal", ["Signup"]]]}),
        json!({"metrics": all, "filters": [["is", "event:hostname", ["shop.example"]]]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["visit:device"], "filters": [["is", "event:hostname", ["shop.example"]]]}),
        json!({"metrics": all, "filters": [["is", "visit:source", ["Google"]]]}),
        json!({"metrics": ["visits", "views_per_visit"], "filters": [["is", "visit:channel", ["Organic Search"]]]}),
        json!({"metrics": all, "filters": [["is", "visit:source", ["Direct / None"]]]}),
        json!({"metrics": all, "filters": [["is", "visit:entry_page", ["/"]]]}),
        json!({"metrics": all, "filters": [["is", "visit:country", ["DE"]]]}),
        json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate"], "dimensions": ["visit:source"], "filters": [["is", "event:page", ["/pricing"]]]}),
        json!({"metrics": ["visitors", "visits", "events"], "dimensions": ["visit:source"], "filters": [["is", "event:name", ["Signup"]]]}),
        json!({"metrics": ["visitors", "visit_duration"], "dimensions": ["visit:country"], "filters": [["is", "event:page", ["/"]]]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["visit:device"], "filters": [["is", "visit:source", ["Google"]]]}),
        json!({"metrics": ["visitors", "pageviews", "events"], "dimensions": ["event:page"], "filters": [["is", "visit:source", ["Google"]]]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "filters": [["is", "visit:country", ["DE"]]]}),
        json!({"metrics": ["visitors", "visits", "pageviews"], "dimensions": ["time:day"], "filters": [["is", "event:page", ["/"]]]}),
        json!({"metrics": ["visitors", "visits"], "dimensions": ["visit:source"], "filters": [["is", "visit:source", ["Google"]]]}),
    ];
    for body in questions {
        same_as_raw(ch, &s, body, "visits_daily", None).await;
    }
}

#[tokio::test]
async fn every_report_matches_the_known_dataset_from_raw_events_and_from_rollups() {
    let ch = veil_schemas::testing::fresh_database("stats_known").await;
    seed(&ch).await;
    // Before any build: visit rows are derived from raw events.
    check_reports(&ch, true).await;
    check_reports(&ch, false).await;
    // The rollup job builds the closed days, here in slices of about 5 events' visitors
    // (a busy day is built a slice of visitor hashes at a time); answers stay the same.
    let today = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
    let r = rollup::run_until_sliced(&ch, today, 30, 5).await.unwrap();
    assert_eq!(r.visit_days.len(), 2, "{r:?}");
    let built = builds::visit_builds(&ch.client(), today - chrono::Duration::days(30), today)
        .await
        .unwrap();
    assert_eq!(built.len(), 2);
    let s = site();
    let doc = q(
        &ch,
        &s,
        base(json!({"metrics": ["visitors"], "dimensions": ["visit:source"]})),
    )
    .await;
    assert_eq!(doc["meta"]["source"], "visits_daily");
    let src = |b: Value| {
        let ch = ch.clone();
        let s = s.clone();
        async move { q(&ch, &s, base(b)).await["meta"]["source"].clone() }
    };
    // One filter value: the filtered rows; two, or a breakdown they are not written for: visits.
    assert_eq!(src(json!({"metrics": ["visitors"], "dimensions": ["visit:source"], "filters": [["is", "visit:country", ["DE"]]]})).await, "visits_daily");
    assert_eq!(src(json!({"metrics": ["visitors"], "dimensions": ["visit:source"], "filters": [["is", "visit:country", ["DE", "FR"]]]})).await, "visits");
    assert_eq!(src(json!({"metrics": ["visitors"], "dimensions": ["visit:city"], "filters": [["is", "visit:country", ["DE"]]]})).await, "visits");
    assert_eq!(
        src(json!({"metrics": ["visitors"], "dimensions": ["event:page"]})).await,
        "visits_daily"
    );
    assert_eq!(
        src(json!({"metrics": ["visitors"], "dimensions": ["event:goal"]})).await,
        "event_rollups"
    );
    assert_eq!(src(json!({"metrics": ["visitors"], "dimensions": ["event:page"], "include": {"rollups": false}})).await, "events");
    check_reports(&ch, true).await;
    visit_hits_match_raw(&ch).await;
    visitor_facts_match_raw(&ch).await;
    filtered_rows_match_raw(&ch).await;
    dimension_filters_match_raw(&ch).await;
    has_done_matches_raw(&ch).await;
    hourly_filters_match_raw(&ch).await;
    // The current day is built up to a cut: the visits still open at it (B0–B5's second
    // visit, 14:00) are stored as they stood, and every hit after it (C0, C1 at 15:00) comes
    // from raw events. Pretend the 20th is today: the answers stay the same.
    let day20 = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let at = day20.and_hms_opt(14, 32, 10).unwrap();
    assert!(rollup::build_today(&ch, at).await.unwrap());
    assert!(
        !rollup::build_today(&ch, at).await.unwrap(),
        "same cut twice"
    );
    let built = builds::visit_builds(&ch.client(), day20, day20)
        .await
        .unwrap();
    assert_eq!(built[0].cut, day20.and_hms_opt(14, 30, 0), "{built:?}");
    let partial: u64 = common::count(
        &ch,
        sql!(
            "SELECT count() FROM visits WHERE day = '2026-11-20' AND build = {}",
            built[0].build
        ),
    )
    .await;
    assert_eq!(
        partial, 16,
        "A0–A9's visits and B0–B5's first are over at the cut"
    );
    let open: u64 = common::count(
        &ch,
        sql!(
            "SELECT count() FROM open_visits WHERE day = '2026-11-20' AND build = {} AND start = toDateTime('2026-11-20 14:00:00', 'UTC')",
            built[0].build
        ),
    )
    .await;
    assert_eq!(open, 6, "B0–B5's second visits are open");
    check_reports(&ch, true).await;
    visit_hits_match_raw(&ch).await;
    visitor_facts_match_raw(&ch).await;
    filtered_rows_match_raw(&ch).await;
    dimension_filters_match_raw(&ch).await;
    has_done_matches_raw(&ch).await;
    // A hit stored after the build with a time before its cut (here another site's, from an
    // app's offline queue): the build no longer holds every hit before its cut, so readers
    // leave it out and derive the day from raw events.
    insert(
        &ch,
        "other.example",
        &[ev("O1".into(), "2026-11-20 13:00:00", "pageview", "/")],
    )
    .await;
    assert!(
        builds::visit_builds(&ch.client(), day20, day20)
            .await
            .unwrap()
            .is_empty(),
        "a build missing a late hit is not used"
    );
    check_reports(&ch, true).await;
    // The next run builds it in, even with the same cut.
    assert!(rollup::build_today(&ch, at).await.unwrap());
    assert_eq!(
        builds::visit_builds(&ch.client(), day20, day20)
            .await
            .unwrap()[0]
            .cut,
        day20.and_hms_opt(14, 30, 0)
    );
    check_reports(&ch, true).await;
    // A server killed between an insert and the materialized view that feeds events_tail
    // keeps the events and loses their tail rows (the retried insert is deduplicated and feeds
    // no view): readers must not take the build's tail from events_tail then. Here the
    // hits after the cut (C0, C1 at 15:00) vanish from events_tail alone.
    veil_aggregator::db::exec(
        &ch.client(),
        &sql!("ALTER TABLE events_tail DELETE WHERE timestamp >= toDateTime('2026-11-20 14:30:00', 'UTC') AND timestamp < toDateTime('2026-11-21 00:00:00', 'UTC')"),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while common::count(
        &ch,
        sql!("SELECT count() FROM events_tail WHERE timestamp >= toDateTime('2026-11-20 14:30:00', 'UTC') AND timestamp < toDateTime('2026-11-21 00:00:00', 'UTC')"),
    )
    .await
        > 0
    {
        assert!(std::time::Instant::now() < deadline, "the mutation never finished");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        builds::visit_builds(&ch.client(), day20, day20)
            .await
            .unwrap()
            .is_empty(),
        "a build whose tail lost rows in events_tail is not used"
    );
    check_reports(&ch, true).await;
    // Once the day is closed, its partial build is replaced by a whole one.
    let r = rollup::run_until(&ch, today, 30).await.unwrap();
    assert_eq!(r.visit_days, vec![day20], "{r:?}");
    assert_eq!(
        builds::visit_builds(&ch.client(), day20, day20)
            .await
            .unwrap()[0]
            .cut,
        None
    );
    // A second run finds nothing to do; a late event for a closed day triggers a rebuild.
    let r = rollup::run_until(&ch, today, 30).await.unwrap();
    assert!(r.visit_days.is_empty() && r.hourly_days.is_empty(), "{r:?}");
    insert(
        &ch,
        SITE,
        &[ev("L0".into(), "2026-11-20 20:00:00", "pageview", "/late")],
    )
    .await;
    let r = rollup::run_until(&ch, today, 30).await.unwrap();
    assert_eq!(
        r.visit_days,
        vec![NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()]
    );
    let top = q(&ch, &s, base(json!({"metrics": ["visitors", "visits"]}))).await;
    assert_eq!(top["results"][0]["metrics"], json!([19, 25]), "{top}");
}

/// Every dimension and every metric the API lists runs on 18.16, from raw events and from
/// rollups, with the same numbers, and the dataset's totals add up in each breakdown.
#[tokio::test]
async fn every_dimension_and_metric_answers_the_same_from_raw_and_rollups() {
    let ch = veil_schemas::testing::fresh_database("stats_every").await;
    seed(&ch).await;
    let today = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
    rollup::run_until(&ch, today, 30).await.unwrap();
    let s = site();
    // (`time:minute` is realtime's alone: no rollup is asked for it.)
    let mut dims: Vec<String> = veil_aggregator::query::DIMENSIONS
        .iter()
        .map(|(n, _)| n.to_string())
        .filter(|n| n != "time:minute")
        .collect();
    dims.push("event:props:plan".into());
    dims.push("time".into());
    for dim in &dims {
        let mut per_source = Vec::new();
        for rollups in [true, false] {
            let d = q(&ch, &s, base(json!({"metrics": ["visitors", "visits", "pageviews"], "dimensions": [dim], "include": {"rollups": rollups}}))).await;
            per_source.push(d["results"].clone());
            // Rows and folded rows together hold every pageview of the day (30), except
            // where a hit belongs to several rows (goals) or none (props of pageviews).
            let pv: i64 = d["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["metrics"][2].as_i64().unwrap_or(0))
                .sum();
            if !["event:goal", "event:name"].contains(&dim.as_str()) {
                assert!(pv == 30 || d["meta"]["suppressed"] == true, "{dim}: {d}");
            }
        }
        assert_eq!(
            per_source[0], per_source[1],
            "{dim}: rollups and raw differ"
        );
    }
    let all: Vec<&str> = veil_aggregator::query::Metric::ALL
        .iter()
        .map(|(n, _)| *n)
        // These need more than a metric alone (a goal; a page; an exit page, as in Plausible).
        .filter(|n| {
            ![
                "conversion_rate",
                "group_conversion_rate",
                "scroll_depth",
                "exit_rate",
            ]
            .contains(n)
        })
        .collect();
    // The exit rate by its exit page: the same from raw events and from the rollups.
    let mut exit = Vec::new();
    for rollups in [true, false] {
        let d = q(
            &ch,
            &s,
            base(
                json!({"metrics": ["exit_rate", "visits"], "dimensions": ["visit:exit_page"],
                        "include": {"rollups": rollups}}),
            ),
        )
        .await;
        assert!(!d["results"].as_array().unwrap().is_empty(), "{d}");
        exit.push(d["results"].clone());
    }
    assert_eq!(exit[0], exit[1], "exit rates: rollups and raw differ");
    for m in all {
        for rollups in [true, false] {
            let d = q(
                &ch,
                &s,
                base(json!({"metrics": [m], "include": {"rollups": rollups}})),
            )
            .await;
            assert_eq!(d["results"].as_array().unwrap().len(), 1, "{m}: {d}");
        }
    }
    let d = q(&ch, &s, base(json!({"metrics": ["visitors", "time_on_page", "average_revenue", "crashes"], "filters": [["is", "event:goal", ["Signup"]]]}))).await;
    assert_eq!(d["results"][0]["metrics"][3], 0, "{d}");
    assert_eq!(d["results"][0]["metrics"][2]["value"], 10.5, "{d}");
}

/// Today's build stops at a cut; the visits open then are stored as they stood
/// (`open_visits`) and carried on by the hits after the cut at query time
/// ([`open_visits_dataset`]).
/// A host condition every hit of the range passes (the site's own host, or `is_not` a host it
/// never had) is planned away (`query::passing`): top pages under it come from `visits_daily`
/// like the unfiltered ones and equal them and the raw events' answer. Once a hit on another
/// host is in the range — or in the comparison's range — the condition is kept and that hit
/// left out.
#[tokio::test]
async fn a_host_filter_every_hit_passes_is_planned_away_until_another_host_appears() {
    let ch = veil_schemas::testing::fresh_database("host_filters").await;
    seed(&ch).await;
    let today = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
    rollup::run_until_sliced(&ch, today, 30, 5).await.unwrap();
    let s = site();
    let top = |filters: Value| {
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"],
               "date_range": ["2026-11-19", "2026-11-27"], "filters": filters})
    };
    let unfiltered = q(&ch, &s, base(top(json!([])))).await;
    assert_eq!(unfiltered["meta"]["source"], "visits_daily");
    let own = json!([["is", "event:hostname", ["shop.example"]]]);
    let not_staging = json!([["is_not", "event:hostname", ["staging.shop.example"]]]);
    let not_other = json!([["is_not", "event:hostname", ["other.example"]]]);
    let shouting = json!([["is", "event:hostname", ["SHOP.Example"], {"case_sensitive": false}]]);
    for f in [&own, &not_staging, &not_other, &shouting] {
        let doc = q(&ch, &s, base(top(f.clone()))).await;
        assert_eq!(doc["results"], unfiltered["results"], "{f}: {doc}");
        same_as_raw(&ch, &s, top(f.clone()), "visits_daily", None).await;
    }
    // Beside a page filter: that filter's own rows.
    let all = [
        "visitors",
        "visits",
        "pageviews",
        "bounce_rate",
        "visit_duration",
    ];
    same_as_raw(
        &ch,
        &s,
        json!({"metrics": all, "date_range": ["2026-11-19", "2026-11-27"],
               "filters": [["is", "event:hostname", ["shop.example"]], ["is", "event:page", ["/pricing"]]]}),
        "visits_daily",
        None,
    )
    .await;
    // Five visitors' hits on a staging host on the 25th (a day without a build: read from raw
    // events; five, the site's k, so that their page is shown unfiltered).
    let staging = (0..5).map(|i| {
        sql!(
            "({}, toDateTime('2026-11-25 08:00:00', 'UTC'), 'pageview', '/only-on-staging', \
             'staging.shop.example', toFixedString({}, 16))",
            sql::lit(SITE),
            sql::lit(&format!("Z{i}"))
        )
    });
    db::exec(
        &ch.client(),
        &sql!(
            "INSERT INTO events (site, timestamp, name, pathname, hostname, visitor_id) VALUES {}",
            Sql::join(staging, ", ")
        ),
    )
    .await
    .unwrap();
    let with_staging = q(&ch, &s, base(top(json!([])))).await;
    assert!(
        with_staging.to_string().contains("/only-on-staging"),
        "{with_staging}"
    );
    for f in [&own, &not_staging, &shouting] {
        let doc = q(&ch, &s, base(top(f.clone()))).await;
        assert_ne!(doc["meta"]["source"], "visits_daily", "{f} is kept: {doc}");
        assert!(!doc.to_string().contains("/only-on-staging"), "{f}: {doc}");
        assert_eq!(doc["results"], unfiltered["results"], "{f}: {doc}");
        same_as_raw(&ch, &s, top(f.clone()), "event_rollups", None).await;
    }
    let doc = q(&ch, &s, base(top(not_other.clone()))).await;
    assert_eq!(doc["meta"]["source"], "visits_daily");
    assert_eq!(doc["results"], with_staging["results"]);
    // The 26th–27th have no hits; compared with the 24th–25th, they are asked with the
    // staging hit in the comparison's range: the condition is kept there too.
    let later = |compare: bool| {
        let mut b = json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"],
                           "date_range": ["2026-11-26", "2026-11-27"], "filters": own.clone()});
        if compare {
            b["include"] = json!({"comparisons": {"mode": "previous_period"}});
        }
        base(b)
    };
    assert_eq!(
        q(&ch, &s, later(false)).await["meta"]["source"],
        "visits_daily"
    );
    let cmp = q(&ch, &s, later(true)).await;
    assert_ne!(cmp["meta"]["source"], "visits_daily", "{cmp}");
    assert!(!cmp.to_string().contains("/only-on-staging"), "{cmp}");
}

/// A `has_done` set over a range with built days and a day without a build (hits stored
/// after the rollup job ran): the built days' visitors from their visit rows, the other day's
/// from its raw events — together the raw events' answer, the late day's visitors included.
#[tokio::test]
async fn a_has_done_set_joins_built_visit_rows_and_the_raw_events_of_unbuilt_days() {
    let ch = veil_schemas::testing::fresh_database("has_done_mixed").await;
    seed(&ch).await;
    let today = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
    rollup::run_until_sliced(&ch, today, 30, 5).await.unwrap();
    // E0–E5 view /pricing and sign up on the 21st, after the job ran: no build for that day.
    let mut late = Vec::new();
    for i in 0..6 {
        late.push(ev(
            format!("E{i}"),
            "2026-11-21 09:00:00",
            "pageview",
            "/pricing",
        ));
        late.push(ev(
            format!("E{i}"),
            "2026-11-21 09:01:00",
            "Signup",
            "/pricing",
        ));
    }
    insert(&ch, SITE, &late).await;
    let s = site();
    let signed_up = json!(["has_done", ["is", "event:goal", ["Signup"]]]);
    let range = json!(["2026-11-19", "2026-11-21"]);
    let body = json!({"metrics": ["visitors", "visits", "pageviews"], "date_range": range, "filters": [signed_up]});
    same_as_raw(&ch, &s, body.clone(), "visits", Some("visits")).await;
    // A0–A4 on the 20th (built), E0–E5 on the 21st (raw).
    let doc = q(&ch, &s, base(body)).await;
    assert_eq!(doc["results"][0]["metrics"][0], 11, "{doc}");
    let by_source = json!({"metrics": ["visitors"], "dimensions": ["visit:source"], "date_range": range,
                           "filters": [["has_not_done", ["is", "event:goal", ["Signup"]]]]});
    same_as_raw(&ch, &s, by_source, "visits", Some("visits")).await;
    // By page: raw events' rows, the set made the same way (builds are read for it): A0–A4's
    // and E0–E5's views of /pricing, A0–A4's of /.
    let by_page = json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "date_range": range,
                         "filters": [signed_up]});
    same_as_raw(&ch, &s, by_page.clone(), "events", Some("events")).await;
    let doc = q(&ch, &s, base(by_page)).await;
    assert!(
        doc.to_string()
            .contains(r#"{"dimensions":["/pricing"],"metrics":[11,11]}"#),
        "{doc}"
    );
}

#[tokio::test]
async fn open_visits_carry_on_after_the_cut() {
    let ch = veil_schemas::testing::fresh_database("stats_open_visits").await;
    let evs = open_visits_dataset();
    insert(&ch, SITE, &evs).await;
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    assert!(
        rollup::build_today(&ch, day.and_hms_opt(14, 32, 10).unwrap())
            .await
            .unwrap()
    );
    let built = builds::visit_builds(&ch.client(), day, day).await.unwrap();
    assert_eq!(built[0].cut, day.and_hms_opt(14, 30, 0), "{built:?}");
    let count = |table: &'static str| {
        let ch = ch.clone();
        let build = built[0].build;
        async move {
            common::count(
                &ch,
                sql!(
                    "SELECT count() FROM {} WHERE day = '2026-11-20' AND build = {}",
                    table,
                    build
                ),
            )
            .await
        }
    };
    assert_eq!(count("visits").await, 5, "U's visits are over at the cut");
    assert_eq!(count("open_visits").await, 20, "P, Q, R and S are open");

    let s = site();
    // Every report from the build plus the hits after the cut equals the one derived from
    // raw events alone, and both equal the numbers worked out above.
    let both = |body: Value| {
        let ch = ch.clone();
        let s = s.clone();
        async move {
            let mut raw = body.clone();
            raw["include"] = json!({"rollups": false});
            let (r, d) = (q(&ch, &s, base(body)).await, q(&ch, &s, base(raw)).await);
            assert_eq!(r["results"], d["results"], "rollups {r}\nraw {d}");
            assert_ne!(r["meta"]["source"], "events", "{r}");
            r
        }
    };
    // visits: P 5, Q 10, R 5, S 5, T 5, U 5 = 35; pageviews 10 + 10 + 5 + 10 + 5 + 5 = 45;
    // bounces: Q 10, T 5, U 5 = 20 of 35 (57 %); durations: P 26 min, S 5 min, R 20 min.
    let top = both(
        json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"]}),
    )
    .await;
    assert_eq!(
        top["results"][0]["metrics"],
        json!([30, 35, 45, 57, (5 * 1560 + 5 * 300 + 5 * 1200) / 35]),
        "{top}"
    );
    let by = |dim: &'static str| {
        let both = &both;
        async move {
            rows(&both(json!({"metrics": ["visits", "bounce_rate"], "dimensions": [dim], "order_by": [[dim, "asc"]]})).await)
        }
    };
    let r = |v: &str, visits: i64, bounce: i64| {
        (vec![v.to_string()], vec![json!(visits), json!(bounce)])
    };
    assert_eq!(
        by("visit:entry_page").await,
        vec![
            r("/a", 5, 0),
            r("/p2", 5, 0),
            r("/q", 5, 100),
            r("/r", 5, 100),
            r("/s1", 5, 0),
            r("/t", 5, 100),
            r("/u", 5, 100)
        ]
    );
    assert_eq!(
        by("visit:exit_page").await,
        vec![
            r("/b", 5, 0),
            r("/p2", 5, 0),
            r("/q", 5, 100),
            r("/r", 5, 100),
            r("/s2", 5, 0),
            r("/t", 5, 100),
            r("/u", 5, 100)
        ]
    );
    assert_eq!(
        by("visit:source").await,
        vec![
            r("Bing", 10, 100),
            r("DuckDuckGo", 5, 0),
            r("Ecosia", 5, 0),
            r("Google", 5, 0),
            r("Qwant", 5, 100),
            r("Yahoo!", 5, 100)
        ]
    );
    // Visitors alone, by nothing or by a visitor fact: no visit is put together after the
    // cut, and Q (open, then a new visit after it) and T (only after it) count once.
    for dims in [json!([]), json!(["visit:country"]), json!(["time:day"])] {
        let d = both(json!({"metrics": ["visitors"], "dimensions": dims})).await;
        assert_eq!(d["meta"]["source"], "visits_daily", "{d}");
        assert_eq!(d["results"][0]["metrics"], json!([30]), "{d}");
    }
    // Pages count every hit before the cut (the build) and after it.
    let pages = both(json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "order_by": [["event:page", "asc"]]})).await;
    assert_eq!(rows(&pages).len(), 9, "{pages}");
    assert_eq!(
        rows(&pages)[1],
        (vec!["/b".to_string()], vec![json!(5), json!(5)])
    );
    // A filtered report reads visit rows (source `visits`), also with open visits.
    let filtered = both(json!({"metrics": ["visits", "visit_duration"], "filters": [["is", "visit:entry_page", ["/a", "/p2"]]]})).await;
    assert_eq!(
        filtered["results"][0]["metrics"],
        json!([10, 1380]),
        "{filtered}"
    );
    // Hits beside their visits (`visit_hits`): an open visit's stored hits joined with those
    // after the cut, in order — a page seen only after the cut (P's /b) belongs to the visit
    // that started before it. One page filter value reads `visits_daily`, whose today is
    // those visit rows filtered on the fly.
    for (body, want) in [
        (
            json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"], "filters": [["is", "event:page", ["/b"]]]}),
            "visits_daily",
        ),
        (
            json!({"metrics": ["visitors", "pageviews", "visits"], "dimensions": ["event:page"], "filters": [["is", "visit:entry_page", ["/a", "/s1", "/q"]]], "order_by": [["event:page", "asc"]]}),
            "visit_hits",
        ),
        (
            json!({"metrics": ["visits", "bounce_rate"], "dimensions": ["visit:source"], "filters": [["contains", "event:page", ["2"]]], "order_by": [["visit:source", "asc"]]}),
            "visit_hits",
        ),
        (
            json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "filters": [["is", "visit:entry_page", ["/a"]]], "order_by": [["event:page", "asc"]]}),
            "visits_daily",
        ),
    ] {
        let d = both(body).await;
        assert_eq!(d["meta"]["source"], want, "{d}");
        assert!(!rows(&d).is_empty(), "{d}");
    }
    // The hits after the cut are read from events_tail, which keeps two days: trimming on
    // the 21st keeps the 20th, on the 22nd drops it.
    let recent = || {
        let ch = ch.clone();
        async move { common::count(&ch, Sql::new("SELECT count() FROM events_tail")).await }
    };
    assert_eq!(
        recent().await,
        55,
        "every hit is copied by the materialized view"
    );
    rollup::trim_recent(&ch, day.succ_opt().unwrap())
        .await
        .unwrap();
    assert_eq!(recent().await, 55);
    rollup::trim_recent(&ch, day + chrono::Duration::days(2))
        .await
        .unwrap();
    assert_eq!(recent().await, 0);
}

/// A build whose writing failed half-way leaves rows under a number never recorded in
/// `visit_builds`; the next run must not write its build under that number beside them (its
/// numbers would count twice), but take the next one and delete the leftovers.
#[tokio::test]
async fn a_build_left_half_written_is_never_counted() {
    let ch = veil_schemas::testing::fresh_database("stats_leftover").await;
    seed(&ch).await;
    let site_lit = veil_schemas::sql::lit(SITE);
    for stmt in [
        sql!(
            "INSERT INTO visits (site, day, build, visitor_id, start, pageviews) VALUES \
             ({}, toDate('2026-11-20'), 1, toFixedString('leftover00000000', 16), \
             toDateTime('2026-11-20 09:00:00', 'UTC'), 1)",
            site_lit.clone()
        ),
        sql!(
            "INSERT INTO visits_daily (site, day, build, dim, value, visitors, uv, visits, \
             pageviews, events, bounces, duration) SELECT {}, toDate('2026-11-20'), 1, \
             '|source=Google', '', uniqStateIf(toFixedString('', 16), 0), 1000, 1000, 1000, \
             1000, 0, 0",
            site_lit
        ),
    ] {
        veil_aggregator::db::exec(&ch.client(), &stmt)
            .await
            .unwrap();
    }
    let today = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
    rollup::run_until(&ch, today, 30).await.unwrap();
    let s = site();
    for body in [
        json!({"metrics": ["visitors", "visits", "pageviews"]}),
        json!({"metrics": ["visitors", "visits", "pageviews"], "filters": [["is", "visit:source", ["Google"]]]}),
    ] {
        let mut raw = body.clone();
        raw["include"] = json!({"rollups": false});
        let (r, d) = (q(&ch, &s, base(body)).await, q(&ch, &s, base(raw)).await);
        assert_eq!(r["meta"]["source"], "visits_daily", "{r}");
        assert_eq!(r["results"], d["results"], "built {r}\nraw {d}");
    }
}

/// A report reads the builds catalog once, then runs its queries (the differencing guard's
/// counts, a comparison, each part of a release): a build of today recorded meanwhile must not
/// take the rows away from under it. The build readers used until then keeps its rows until
/// the next one is recorded; the one before goes.
#[tokio::test]
async fn a_report_that_read_the_catalog_before_a_rebuild_still_finds_its_rows() {
    use veil_aggregator::db;
    use veil_aggregator::query::{assemble, parse};
    let ch = veil_schemas::testing::fresh_database("stats_stale_catalog").await;
    insert(&ch, SITE, &open_visits_dataset()).await;
    let client = ch.client();
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let s = site();
    let body = base(
        json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate"], "dimensions": ["visit:source"], "filters": [["contains", "event:page", ["/"]]]}),
    );
    let query = parse(body.to_string().as_bytes(), &s, now()).unwrap();
    let build_at = |hm: (u32, u32)| {
        let ch = ch.clone();
        async move {
            assert!(
                rollup::build_today(&ch, day.and_hms_opt(hm.0, hm.1, 10).unwrap())
                    .await
                    .unwrap()
            );
        }
    };
    // Deletes are mutations, applied after the statement returns: wait for them.
    let settled = || {
        let ch = ch.clone();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            let pending = sql!(
                "SELECT count() FROM system.mutations WHERE database = {} AND is_done = 0",
                veil_schemas::sql::lit(&ch.database)
            );
            while count(&ch, pending.clone()).await > 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "mutations still pending"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    let rows_of = |build: u64| {
        let ch = ch.clone();
        async move {
            count(
                &ch,
                sql!(
                    "SELECT count() FROM visits WHERE day = '2026-11-20' AND build = {}",
                    build
                ),
            )
            .await
        }
    };
    build_at((14, 32)).await;
    let catalog = builds::Builds::new(None)
        .for_query(&client, &s, &query)
        .await
        .unwrap();
    let first = catalog[0].build;
    let stmt = assemble::sql(&query, &s, &catalog, None);
    let before = db::fetch(&client, &stmt).await.unwrap();
    assert!(!before.is_empty() && rows_of(first).await > 0);

    // Today is built again at a later cut while the report still holds the old catalog.
    build_at((14, 50)).await;
    settled().await;
    let now_built = builds::visit_builds(&client, day, day).await.unwrap();
    assert!(now_built[0].build > first, "{now_built:?}");
    assert_eq!(
        db::fetch(&client, &stmt).await.unwrap(),
        before,
        "the report's later queries read the build it chose"
    );
    // The next build takes the first one's rows away (only the last two builds are kept).
    build_at((15, 10)).await;
    settled().await;
    assert_eq!(rows_of(first).await, 0, "the build before last is deleted");
    assert!(rows_of(now_built[0].build).await > 0);
}

/// Days without a build on which the site has no event (before its first, after its last, or
/// before the rollup job's first day) are read as built and empty instead of being derived
/// from raw events by every query (`builds::empty_days`); another site's events do not make
/// them busy, and a hit stored on one shows in the next request.
#[tokio::test]
async fn days_without_a_build_or_an_event_are_not_derived_from_raw_events() {
    use veil_aggregator::query::{assemble, parse};
    let ch = veil_schemas::testing::fresh_database("empty_days").await;
    seed(&ch).await;
    // Builds of the 19th and 20th only (the job's first day is the 19th).
    rollup::run_until_sliced(&ch, NaiveDate::from_ymd_opt(2026, 11, 21).unwrap(), 2, 5)
        .await
        .unwrap();
    let client = ch.client();
    let s = site();
    let body = json!({"metrics": ["visitors", "visits", "pageviews"], "dimensions": ["visit:source"],
                      "date_range": ["2026-11-14", "2026-11-27"]});
    let query = parse(base(body.clone()).to_string().as_bytes(), &s, now()).unwrap();
    let day = |d: u32| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
    let empty = |catalog: &[veil_aggregator::query::Build]| {
        let mut days: Vec<u32> = catalog
            .iter()
            .filter(|b| b.build == 0)
            .map(|b| chrono::Datelike::day(&b.day))
            .collect();
        days.sort_unstable();
        days
    };
    let raw_read = |catalog: &[veil_aggregator::query::Build]| {
        assemble::sql(&query, &s, catalog, None)
            .as_str()
            .contains("FROM events WHERE")
    };
    // Another site's hit on the 25th.
    insert(
        &ch,
        "other.example",
        &[ev("O1".into(), "2026-11-25 10:00:00", "pageview", "/")],
    )
    .await;
    let catalog = builds::Builds::new(None)
        .for_query(&client, &s, &query)
        .await
        .unwrap();
    // The range ends on the 28th at 00:00 (exclusive): the 28th is not looked up.
    let mut want: Vec<u32> = (14..=18).chain(21..=27).collect();
    want.sort_unstable();
    assert_eq!(empty(&catalog), want, "{catalog:?}");
    assert!(catalog.iter().all(|b| b.day < day(28)), "{catalog:?}");
    assert!(catalog.iter().any(|b| b.day == day(20) && b.build > 0));
    assert!(!raw_read(&catalog), "no day is derived from raw events");
    // An empty day holds no row, so the statement does not name it (on 18.16 naming 340 of
    // them cost each statement ~50 ms of analysis).
    assert!(
        !assemble::sql(&query, &s, &catalog, None)
            .as_str()
            .contains("toUInt64(0))"),
        "an empty day is not named"
    );
    same_as_raw(&ch, &s, body.clone(), "visits_daily", None).await;
    let before = q(&ch, &s, base(body.clone())).await;

    // A late hit of the site on the 25th: that stretch is read from raw events again.
    insert(
        &ch,
        SITE,
        &[ev("L1".into(), "2026-11-25 10:00:00", "pageview", "/")],
    )
    .await;
    let catalog = builds::Builds::new(None)
        .for_query(&client, &s, &query)
        .await
        .unwrap();
    assert_eq!(
        empty(&catalog),
        (14..=18).collect::<Vec<_>>(),
        "{catalog:?}"
    );
    assert!(raw_read(&catalog));
    same_as_raw(&ch, &s, body.clone(), "visits_daily", None).await;
    let after = q(&ch, &s, base(body)).await;
    let visitors = |doc: &Value| -> u64 {
        doc["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["metrics"][0].as_u64().unwrap())
            .sum()
    };
    assert_eq!(visitors(&after), visitors(&before) + 1, "{before}\n{after}");

    // A range of empty days only: no build to name, so no row (and no SQL error), as from
    // raw events.
    for body in [
        json!({"metrics": ["visitors", "visits", "pageviews"], "dimensions": ["visit:source"]}),
        json!({"metrics": ["visitors", "visits", "bounce_rate", "visit_duration"]}),
        json!({"metrics": ["visitors"], "dimensions": ["time:day"]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"]}),
    ] {
        let mut body = body;
        body["date_range"] = json!(["2026-11-01", "2026-11-10"]);
        let query = parse(base(body.clone()).to_string().as_bytes(), &s, now()).unwrap();
        let catalog = builds::Builds::new(None)
            .for_query(&client, &s, &query)
            .await
            .unwrap();
        assert!(
            !catalog.is_empty() && catalog.iter().all(|b| b.build == 0),
            "{catalog:?}"
        );
        let mut raw = body.clone();
        raw["include"] = json!({"rollups": false});
        let (r, d) = (q(&ch, &s, base(body)).await, q(&ch, &s, base(raw)).await);
        assert_ne!(r["meta"]["source"], "events", "{r}");
        assert_eq!(r["results"], d["results"], "rollups {r}\nraw {d}");
        let no_one = r["results"].as_array().is_some_and(|rows| {
            rows.iter().all(|row| {
                row["metrics"]
                    .as_array()
                    .is_some_and(|m| m.iter().all(|v| v.as_u64().unwrap_or(0) == 0))
            })
        });
        assert!(no_one, "{r}");
    }
}

/// A dashboard's panels asked at once under a filter only visit rows answer gather into one
/// statement (`veil_aggregator::screen`), with the differencing guard's counts of the
/// filter's visitors: the total, the chart and the breakdowns by a visit property each get
/// exactly the answer they get alone (k-anonymity's folds and the guard's refusals included),
/// and the answer raw events give; top pages, which counts hits, runs its own.
#[tokio::test]
async fn panels_asked_at_once_share_one_statement_and_answer_as_alone() {
    let ch = veil_schemas::testing::fresh_database("stats_screens").await;
    seed(&ch).await;
    let today = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
    rollup::run_until(&ch, today, 30).await.unwrap();
    let s = site();
    let client = ch.client();
    // Six panels and their six guard counts: the gathering closes when the eleven that
    // gather have joined (top pages does not; its guard count does), however loaded the
    // machine (the window, far longer than any spread, is only the bound).
    let inflight = db::Inflight::default();
    let screens = veil_aggregator::screen::Screens::with_window(std::time::Duration::from_secs(20))
        .closing_at(11);
    let panels = [
        json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"]}),
        json!({"metrics": ["visitors"], "dimensions": ["time:day"]}),
        json!({"metrics": ["visitors", "visits"], "dimensions": ["visit:source"], "include": {"total_rows": true}}),
        json!({"metrics": ["visitors"], "dimensions": ["visit:country"], "order_by": [["visitors", "asc"]]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["visit:device"]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"]}),
    ];
    let filters = [
        json!([["contains", "event:page", ["pric"]]]),
        json!([["is_not", "event:page", ["/pricing"]]]),
        json!([["is", "event:props:plan", ["pro"]]]),
        json!([["has_done", ["is", "event:goal", ["Signup"]]]]),
        json!([
            ["matches", "event:page", ["^/"]],
            ["is", "visit:source", ["Google"]]
        ]),
    ];
    let mut statements = 0;
    let (mut folded, mut suppressed) = (0, 0);
    for (f, k) in filters.iter().flat_map(|f| [(f, 5), (f, 11)]) {
        let mut s = s.clone();
        s.min_visitors = k;
        let bodies: Vec<Value> = panels
            .iter()
            .map(|p| {
                let mut b = base(p.clone());
                b["date_range"] = json!(["2026-11-18", "2026-11-21"]);
                b["filters"] = f.clone();
                b
            })
            .collect();
        let mut alone = Vec::new();
        for b in &bodies {
            alone.push(q(&ch, &s, b.clone()).await);
        }
        let run = |b: &Value| {
            let body = b.to_string();
            let (client, s, inflight, screens) = (&client, s.clone(), &inflight, &screens);
            async move {
                let shared = veil_aggregator::stats::Shared {
                    inflight: Some(inflight),
                    screens: Some(screens),
                    ..Default::default()
                };
                veil_aggregator::stats::run(client, &s, body.as_bytes(), now(), shared)
                    .await
                    .unwrap()
                    .1
            }
        };
        let (t0, t1, t2, t3, t4, t5) = tokio::join!(
            run(&bodies[0]),
            run(&bodies[1]),
            run(&bodies[2]),
            run(&bodies[3]),
            run(&bodies[4]),
            run(&bodies[5])
        );
        let together = [t0, t1, t2, t3, t4, t5];
        for ((b, a), t) in bodies.iter().zip(&alone).zip(&together) {
            folded += usize::from(t["meta"]["folded_rows"].as_u64().unwrap_or(0) > 0);
            suppressed += usize::from(t["meta"]["suppressed"] == true);
            assert_eq!(t["results"], a["results"], "{b}\ntogether {t}\nalone {a}");
            assert_eq!(t["meta"], a["meta"], "{b}");
            let mut raw = b.clone();
            raw["include"] = json!({"rollups": false});
            let r = q(&ch, &s, raw).await;
            assert_eq!(t["results"], r["results"], "{b}\ntogether {t}\nraw {r}");
        }
        assert!(
            k > 5
                || together[0]["results"][0]["metrics"][0]
                    .as_u64()
                    .unwrap_or(0)
                    > 0,
            "the filter selects someone: {}",
            together[0]
        );
        // The total, the chart, three breakdowns and the differencing guard's count of the
        // filter's visitors for each of the six: one statement; top pages runs its own.
        statements += 1;
        assert_eq!(screens.shared(), (statements, 11 * statements), "{f}");
    }
    // k-anonymity's fold and its suppression both met on the way.
    assert!(folded > 0 && suppressed > 0, "{folded} {suppressed}");
}
