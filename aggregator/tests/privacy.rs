//! The k-anonymity hardening against a real ClickHouse: rows of time series broken down by
//! another dimension, the differencing guard's complement (also for funnels and conversion
//! rate denominators), what `meta` says about folded rows, minute-snapped sliding windows,
//! small filtered-traffic reasons, and input that used to panic or cost too much.
//!
//! The dataset and helpers are `tests/common` (the same as `tests/stats.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use common::*;
use http::Request;
use serde_json::{json, Value};
use veil_aggregator::site::SiteView;
use veil_aggregator::{db, reports, stats, Aggregator, AggregatorConfig};
use veil_schemas::sql;
use veil_schemas::sql::{lit, Sql};
use veil_schemas::ClickHouseConfig;

fn site_k(k: u64) -> SiteView {
    let mut s = site();
    s.min_visitors = k;
    s
}

fn agg(ch: &ClickHouseConfig) -> Aggregator {
    Aggregator::new(
        AggregatorConfig {
            sites: vec![SITE.into()],
            privacy: veil_aggregator::privacy::Settings::exact(),
            ..Default::default()
        },
        ch.clone(),
    )
}

/// Sends a request through the aggregator's HTTP handling: status and body.
async fn http(agg: &Aggregator, method: &str, path: &str, body: String) -> (u16, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(Bytes::from(body))
        .unwrap();
    let r = agg.handle(req).await.unwrap();
    let status = r.status().as_u16();
    let b = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8(b.to_vec()).unwrap())
}

#[tokio::test]
async fn time_series_broken_down_by_another_dimension_drop_rows_under_k() {
    let ch = veil_schemas::testing::fresh_database("privacy_time_dims").await;
    seed(&ch).await;
    let s = site();
    for rollups in [true, false] {
        let inc = json!({"rollups": rollups});
        // The 2 French visitors at 15:00 are under k: not even their label is shown.
        for dims in [
            json!(["time:hour", "visit:country"]),
            json!(["visit:country", "time:hour"]),
        ] {
            let d = q(
                &ch,
                &s,
                base(json!({"metrics": ["visitors", "pageviews"], "dimensions": dims, "include": inc})),
            )
            .await;
            let got = rows(&d);
            assert_eq!(got.len(), 3, "{d}");
            for (labels, metrics) in &got {
                assert!(!labels.contains(&"FR".to_string()), "{d}");
                assert!(!labels.iter().any(|l| l.contains("15:00")), "{d}");
                assert!(metrics.iter().all(|m| m.as_i64().unwrap() >= 5), "{d}");
            }
            assert_eq!(d["meta"]["suppressed"], true, "{d}");
        }
        let d = q(
            &ch,
            &s,
            base(json!({"metrics": ["visitors"], "dimensions": ["time:hour", "visit:country"], "include": {"rollups": rollups, "total_rows": true}})),
        )
        .await;
        assert_eq!(
            rows(&d),
            vec![
                (
                    vec!["2026-11-20 10:00:00".into(), "DE".into()],
                    vec![json!(10)]
                ),
                (
                    vec!["2026-11-20 12:00:00".into(), "US".into()],
                    vec![json!(6)]
                ),
                (
                    vec!["2026-11-20 14:00:00".into(), "US".into()],
                    vec![json!(6)]
                ),
            ],
            "{d}"
        );
        assert_eq!(d["meta"]["total_rows"], 3, "{d}");
        // A pure time series keeps its bucket, with null metrics.
        let d = q(
            &ch,
            &s,
            base(json!({"metrics": ["visitors"], "dimensions": ["time:hour"], "include": inc})),
        )
        .await;
        assert_eq!(
            rows(&d).last().unwrap(),
            &(vec!["2026-11-20 15:00:00".to_string()], vec![Value::Null]),
            "{d}"
        );
    }
}

#[tokio::test]
async fn filters_whose_complement_is_under_k_get_no_numbers() {
    let ch = veil_schemas::testing::fresh_database("privacy_complement").await;
    seed(&ch).await;
    let s = site();
    // 18 visitors on the 20th; everyone but the 2 French is 16 (≥ k), but 18 − 16 = 2 < k.
    for filters in [
        json!([["is_not", "visit:country", ["FR"]]]),
        json!([["not", ["is", "visit:source", ["Hacker News"]]]]),
        json!([["is", "visit:country", ["DE", "US"]]]),
    ] {
        let d = q(
            &ch,
            &s,
            base(json!({"metrics": ["visitors"], "filters": filters})),
        )
        .await;
        assert_eq!(d["meta"]["too_few_visitors"], true, "{filters}: {d}");
        assert_eq!(
            d["results"],
            json!([{"dimensions": [], "metrics": [null]}]),
            "{d}"
        );
        let d = q(
            &ch,
            &s,
            base(
                json!({"metrics": ["visitors"], "dimensions": ["event:page"], "filters": filters}),
            ),
        )
        .await;
        assert_eq!(d["meta"]["too_few_visitors"], true, "{filters}: {d}");
        assert_eq!(d["results"], json!([]), "{d}");
    }
    // A complement of k or more, or none at all, is fine.
    for (filters, n) in [
        (json!([["is_not", "visit:country", ["US"]]]), 12),
        (json!([["is", "visit:country", ["DE"]]]), 10),
        (json!([["is_not", "visit:country", ["JP"]]]), 18),
    ] {
        let d = q(
            &ch,
            &s,
            base(json!({"metrics": ["visitors"], "filters": filters})),
        )
        .await;
        assert_eq!(d["results"][0]["metrics"], json!([n]), "{filters}: {d}");
        assert_eq!(d["meta"]["too_few_visitors"], false, "{d}");
    }
    // The comparison period is guarded the same way: on the 19th all 5 visitors are from the
    // US, so "not FR" leaves nobody out there.
    let d = q(&ch, &s, json!({"site_id": SITE, "metrics": ["visitors"], "date_range": ["2026-11-19", "2026-11-19"], "filters": [["is_not", "visit:country", ["FR"]]]})).await;
    assert_eq!(d["results"][0]["metrics"], json!([5]), "{d}");
    // A conversion rate reveals its denominator: Signup ∧ not FR selects 5 (complement 13),
    // but its goal-less denominator "not FR" (16) leaves out 2.
    let d = q(&ch, &s, base(json!({"metrics": ["visitors", "conversion_rate"], "filters": [["is", "event:goal", ["Signup"]], ["is_not", "visit:country", ["FR"]]]}))).await;
    assert_eq!(d["meta"]["too_few_visitors"], true, "{d}");
    assert_eq!(d["results"][0]["metrics"], json!([null, null]), "{d}");
    let d = q(&ch, &s, base(json!({"metrics": ["visitors", "conversion_rate"], "filters": [["is", "event:goal", ["Signup"]], ["is_not", "visit:country", ["US"]]]}))).await;
    assert_eq!(d["results"][0]["metrics"], json!([5, 41.7]), "{d}");
}

#[tokio::test]
async fn funnels_are_guarded_and_small_dropoffs_are_null() {
    let ch = veil_schemas::testing::fresh_database("privacy_funnel").await;
    seed(&ch).await;
    let s = site();
    let funnel = |extra: Value| {
        let ch = ch.clone();
        let s = s.clone();
        async move {
            let mut body = json!({"site_id": SITE, "funnel": "Buy", "date_range": ["2026-11-20", "2026-11-20"]});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            reports::funnel(
                &ch.client(),
                &s,
                body.to_string().as_bytes(),
                Utc::now(),
                Default::default(),
            )
            .await
            .unwrap()
        }
    };
    // 6 saw pricing, 5 signed up: the 1 who dropped off is under k.
    let f = funnel(json!({})).await;
    assert_eq!(f["steps"][0]["visitors"], 6.0, "{f}");
    assert_eq!(f["steps"][0]["dropoff"], 0.0, "{f}");
    assert_eq!(f["steps"][1]["visitors"], 5.0, "{f}");
    assert_eq!(f["steps"][1]["dropoff"], Value::Null, "{f}");
    assert_eq!(f["meta"]["too_few_visitors"], false, "{f}");
    // Everyone but the 2 French: the complement is under k, so no numbers.
    let f = funnel(json!({"filters": [["is_not", "visit:country", ["FR"]]]})).await;
    assert_eq!(f["meta"]["too_few_visitors"], true, "{f}");
    for step in f["steps"].as_array().unwrap() {
        assert_eq!(step["visitors"], Value::Null, "{f}");
        assert_eq!(step["dropoff"], Value::Null, "{f}");
    }
    // The French alone are under k too.
    let f = funnel(json!({"filters": [["is", "visit:country", ["FR"]]]})).await;
    assert_eq!(f["meta"]["too_few_visitors"], true, "{f}");
    // Germans (10 of 18): allowed.
    let f = funnel(json!({"filters": [["is", "visit:country", ["DE"]]]})).await;
    assert_eq!(f["meta"]["too_few_visitors"], false, "{f}");
    assert_eq!(f["steps"][0]["visitors"], 6.0, "{f}");
}

#[tokio::test]
async fn folded_rows_are_reported_only_with_their_other_row() {
    let ch = veil_schemas::testing::fresh_database("privacy_folded").await;
    seed(&ch).await;
    let by_source = json!({"metrics": ["visitors"], "dimensions": ["visit:source"]});
    // k = 5: Hacker News (2) is folded alone and the fold is under k: hidden, and so is how
    // many rows it held.
    let d = q(&ch, &site(), base(by_source.clone())).await;
    assert_eq!(d["meta"]["suppressed"], true, "{d}");
    assert_eq!(d["meta"]["folded_rows"], 0, "{d}");
    assert_eq!(rows(&d).len(), 2, "{d}");
    // k = 7: Direct (6) and Hacker News (2) fold into 8 visitors, shown with its count.
    let d = q(&ch, &site_k(7), base(by_source)).await;
    assert_eq!(d["meta"]["folded_rows"], 2, "{d}");
    assert_eq!(
        rows(&d),
        vec![
            (vec!["Google".into()], vec![json!(10)]),
            (vec!["(other: 2 rows under k=7)".into()], vec![json!(8)]),
        ],
        "{d}"
    );
}

#[tokio::test]
async fn realtime_windows_do_not_slide_within_a_minute() {
    let ch = veil_schemas::testing::fresh_database("privacy_realtime").await;
    // A fixed "now" minute: 3 visitors 29.5 minutes before it, 5 ten minutes before it, 4 in
    // its first seconds.
    let evs: Vec<Ev> = (0..3)
        .map(|i| ev(format!("E{i}"), "2026-11-28 11:30:30", "pageview", "/early"))
        .chain((0..5).map(|i| ev(format!("M{i}"), "2026-11-28 11:50:00", "pageview", "/mid")))
        .chain((0..4).map(|i| ev(format!("L{i}"), "2026-11-28 12:00:20", "pageview", "/late")))
        .collect();
    insert(&ch, SITE, &evs).await;
    let s = site_k(2);
    let at = |sec: u32| Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, sec).unwrap();
    for body in [
        json!({"site_id": SITE, "metrics": ["visitors"], "date_range": "realtime"}),
        json!({"site_id": SITE, "metrics": ["visitors"], "date_range": "realtime", "dimensions": ["event:page"]}),
        json!({"site_id": SITE, "metrics": ["visitors"], "date_range": "24h"}),
    ] {
        let run = |now| {
            let ch = ch.clone();
            let s = s.clone();
            let body = body.to_string();
            async move {
                stats::run(&ch.client(), &s, body.as_bytes(), now, Default::default())
                    .await
                    .unwrap()
                    .1
            }
        };
        // Two queries 40 seconds apart: without snapping, the early visitors slide out and
        // the late ones in, and the difference names them.
        let a = run(at(10)).await;
        let b = run(at(50)).await;
        assert_eq!(a["results"], b["results"], "{body}");
        if body["dimensions"].is_null() {
            assert_eq!(a["results"][0]["metrics"], json!([8]), "{body}: {a}");
        }
    }
}

#[tokio::test]
async fn filtered_traffic_leaves_out_reasons_under_k() {
    let ch = veil_schemas::testing::fresh_database("privacy_filtered").await;
    let stmt = sql!(
        "INSERT INTO filtered_hourly (site, hour, reason, events) VALUES \
         ({0}, toDateTime('2026-11-20 10:00:00', 'UTC'), 'bot_crawler', 6), \
         ({0}, toDateTime('2026-11-20 10:00:00', 'UTC'), 'consent', 4), \
         ({0}, toDateTime('2026-11-20 11:00:00', 'UTC'), 'consent', 1), \
         ({0}, toDateTime('2026-11-20 10:00:00', 'UTC'), 'bot_library', 2)",
        lit(SITE)
    );
    db::exec(&ch.client(), &stmt).await.unwrap();
    let bots = (0..7).map(|i: u32| {
        sql!(
            "({}, toDateTime('2026-11-20 12:00:00', 'UTC'), 'pageview', '/', toFixedString({}, 16), {})",
            lit(SITE),
            lit(&format!("X{i}")),
            lit(if i < 6 { "bot_headless" } else { "bot_monitoring" })
        )
    });
    let stmt = sql!(
        "INSERT INTO events (site, timestamp, name, pathname, visitor_id, bot) VALUES {}",
        Sql::join(bots, ", ")
    );
    db::exec(&ch.client(), &stmt).await.unwrap();
    let doc = reports::filtered_traffic(
        &ch.client(),
        &site(),
        "2026-11-20,2026-11-20",
        Utc::now(),
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        doc["dropped"],
        json!([
            {"reason": "bot_crawler", "events": 6},
            {"reason": "consent", "events": 5},
        ]),
        "{doc}"
    );
    assert_eq!(
        doc["stored_bots"],
        json!([{"reason": "bot_headless", "events": 6}]),
        "{doc}"
    );
}

#[tokio::test]
async fn hostile_dates_and_costly_filters_are_400s_naming_the_field() {
    let ch = veil_schemas::testing::fresh_database("privacy_input").await;
    seed(&ch).await;
    let agg = agg(&ch);
    for range in [
        json!(["+262142-12-31", "+262142-12-31"]),
        json!(["-0001-01-01", "2026-11-20"]),
        json!(["2026-11-20", "+10000-01-01"]),
        json!(["1969-12-31", "1970-01-01"]),
    ] {
        let body = json!({"site_id": SITE, "metrics": ["visitors"], "date_range": range, "dimensions": ["time"], "include": {"comparisons": {"mode": "previous_period"}, "time_labels": true}});
        let (status, msg) = http(&agg, "POST", "/api/v2/query", body.to_string()).await;
        assert_eq!(status, 400, "{range}: {msg}");
        assert!(msg.contains("date_range"), "{range}: {msg}");
        let body = json!({"site_id": SITE, "funnel": "Buy", "date_range": range});
        let e = reports::funnel(
            &ch.client(),
            &site(),
            body.to_string().as_bytes(),
            Utc::now(),
            Default::default(),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("date_range"), "{range}: {e}");
    }
    for path in [
        format!("/api/v1/sites/{SITE}/filtered-traffic?date_range=+262142-12-31,+262142-12-31"),
        format!("/api/v1/sites/{SITE}/export?date_range=-0001-01-01,2026-11-20"),
    ] {
        let (status, msg) = http(&agg, "GET", &path, String::new()).await;
        assert_eq!(status, 400, "{path}: {msg}");
        assert!(msg.contains("date_range"), "{path}: {msg}");
    }
    // The edges of the accepted range answer.
    let body = json!({"site_id": SITE, "metrics": ["visitors"], "date_range": ["1970-01-01", "1970-01-01"]});
    let (status, msg) = http(&agg, "POST", "/api/v2/query", body.to_string()).await;
    assert_eq!(status, 200, "{msg}");

    let conds: Vec<Value> = (0..21)
        .map(|i| json!(["is", "event:page", [format!("/{i}")]]))
        .collect();
    let (status, msg) = http(
        &agg,
        "POST",
        "/api/v2/query",
        base(json!({"metrics": ["visitors"], "filters": conds})).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("filters"), "{msg}");
    let regexes: Vec<String> = (0..6).map(|i| format!("^/{i}")).collect();
    let (status, msg) = http(
        &agg,
        "POST",
        "/api/v2/query",
        base(json!({"metrics": ["visitors"], "filters": [["matches", "event:page", regexes]]}))
            .to_string(),
    )
    .await;
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("filters"), "{msg}");
}

#[tokio::test]
async fn report_queries_run_under_a_time_limit() {
    let ch = veil_schemas::testing::fresh_database("privacy_timeout").await;
    let agg = agg(&ch);
    let rows = db::fetch(
        agg.client(),
        &Sql::new("SELECT value FROM system.settings WHERE name = 'max_execution_time'"),
    )
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![json!([veil_aggregator::MAX_EXECUTION_SECS.to_string()])]
    );
}

#[tokio::test]
async fn a_visit_across_midnight_is_not_mistaken_for_a_small_excluded_group() {
    let ch = veil_schemas::testing::fresh_database("privacy_midnight").await;
    // 5 visitors on each of two days, and X whose visit crosses midnight under one hash (the
    // collector keeps yesterday's id for up to 30 minutes). Everyone is from the US.
    let mut evs: Vec<Ev> = (0..5)
        .map(|i| ev(format!("P{i}"), "2026-11-20 10:00:00", "pageview", "/"))
        .chain((0..5).map(|i| ev(format!("Q{i}"), "2026-11-21 10:00:00", "pageview", "/")))
        .collect();
    evs.push(ev("X".into(), "2026-11-20 23:50:00", "pageview", "/"));
    evs.push(ev("X".into(), "2026-11-21 00:10:00", "pageview", "/a"));
    insert(&ch, SITE, &evs).await;
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
    veil_aggregator::rollup::run_until(&ch, today, 30)
        .await
        .unwrap();
    let s = site();
    let range = json!(["2026-11-20", "2026-11-21"]);
    // Unfiltered, the daily rollup counts X on both days (12); so do its filtered rows (one
    // filter value), while a filter they do not answer (two values) is counted over visits
    // (11). The guard compares like with like: nobody is left out.
    let all = q(
        &ch,
        &s,
        json!({"site_id": SITE, "metrics": ["visitors"], "date_range": range}),
    )
    .await;
    assert_eq!(all["meta"]["source"], "visits_daily", "{all}");
    assert_eq!(all["results"][0]["metrics"], json!([12]), "{all}");
    let us = q(&ch, &s, json!({"site_id": SITE, "metrics": ["visitors"], "date_range": range, "filters": [["is", "visit:country", ["US"]]]})).await;
    assert_eq!(us["meta"]["too_few_visitors"], false, "{us}");
    assert_eq!(us["meta"]["source"], "visits_daily", "{us}");
    assert_eq!(us["results"][0]["metrics"], json!([12]), "{us}");
    let two = q(&ch, &s, json!({"site_id": SITE, "metrics": ["visitors"], "date_range": range, "filters": [["is", "visit:country", ["US", "DE"]]]})).await;
    assert_eq!(two["meta"]["too_few_visitors"], false, "{two}");
    assert_eq!(two["meta"]["source"], "visits", "{two}");
    assert_eq!(two["results"][0]["metrics"], json!([11]), "{two}");
}
