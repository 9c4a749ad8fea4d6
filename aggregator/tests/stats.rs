//! The Stats API against a real ClickHouse, on a known dataset with exact expected numbers:
//! every source (visit rows derived and rolled up, the hourly rollup, raw events, events
//! joined to visits), filters, goals, conversion rates, funnels, comparisons, time zones,
//! k-anonymity and the differencing guard, realtime, CSV and the export zip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use common::*;
use http::Request;
use serde_json::{json, Value};
use veil_aggregator::site::SiteView;
use veil_aggregator::{reports, rollup, stats, Aggregator, AggregatorConfig};
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
    // Conversions by source: goal filter joined to the visit's source.
    let conv = q(ch, &s, base(json!({"metrics": ["visitors", "conversion_rate", "total_revenue"], "dimensions": ["visit:source"], "filters": [["is", "event:goal", ["Signup"]]], "include": inc}))).await;
    assert_eq!(
        rows(&conv),
        vec![(
            vec!["Google".into()],
            vec![json!(5), json!(50), json!(52.5)]
        )],
        "{conv}"
    );
}

#[tokio::test]
async fn every_report_matches_the_known_dataset_from_raw_events_and_from_rollups() {
    let ch = veil_schemas::testing::fresh_database("stats_known").await;
    seed(&ch).await;
    // Before any build: visit rows are derived from raw events.
    check_reports(&ch, true).await;
    check_reports(&ch, false).await;
    // The rollup job builds the closed days; answers stay the same.
    let today = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
    let r = rollup::run_until(&ch, today, 30).await.unwrap();
    assert_eq!(r.visit_days.len(), 2, "{r:?}");
    let built = stats::visit_builds(&ch.client(), today - chrono::Duration::days(30), today)
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
    assert_eq!(src(json!({"metrics": ["visitors"], "dimensions": ["visit:source"], "filters": [["is", "visit:country", ["DE"]]]})).await, "visits");
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
    let built = stats::visit_builds(&ch.client(), day20, day20)
        .await
        .unwrap();
    assert_eq!(built[0].cut, day20.and_hms_opt(14, 30, 0), "{built:?}");
    let partial: u64 = ch
        .client()
        .query(&format!(
            "SELECT count() FROM visits WHERE day = '2026-11-20' AND build = {}",
            built[0].build
        ))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        partial, 16,
        "A0–A9's visits and B0–B5's first are over at the cut"
    );
    let open: u64 = ch
        .client()
        .query(&format!(
            "SELECT count() FROM open_visits WHERE day = '2026-11-20' AND build = {} AND start = toDateTime('2026-11-20 14:00:00', 'UTC')",
            built[0].build
        ))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(open, 6, "B0–B5's second visits are open");
    check_reports(&ch, true).await;
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
        stats::visit_builds(&ch.client(), day20, day20)
            .await
            .unwrap()
            .is_empty(),
        "a build missing a late hit is not used"
    );
    check_reports(&ch, true).await;
    // The next run builds it in, even with the same cut.
    assert!(rollup::build_today(&ch, at).await.unwrap());
    assert_eq!(
        stats::visit_builds(&ch.client(), day20, day20)
            .await
            .unwrap()[0]
            .cut,
        day20.and_hms_opt(14, 30, 0)
    );
    check_reports(&ch, true).await;
    // Once the day is closed, its partial build is replaced by a whole one.
    let r = rollup::run_until(&ch, today, 30).await.unwrap();
    assert_eq!(r.visit_days, vec![day20], "{r:?}");
    assert_eq!(
        stats::visit_builds(&ch.client(), day20, day20)
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

/// Plausible's behavioural filters: visitors who did (or never did) something in the range,
/// with all their rows.
#[tokio::test]
async fn has_done_and_has_not_done_filter_visitors_by_what_they_did() {
    let ch = veil_schemas::testing::fresh_database("stats_has_done").await;
    seed(&ch).await;
    let s = site();
    let signed_up = json!(["has_done", ["is", "event:goal", ["Signup"]]]);
    // A0–A4 signed up: 5 visitors, each with `/` and `/pricing` viewed (10 pageviews), from
    // Google; everyone else (13) did not.
    let d = q(
        &ch,
        &s,
        base(json!({"metrics": ["visitors", "pageviews", "visits"], "filters": [signed_up]})),
    )
    .await;
    assert_eq!(d["results"][0]["metrics"], json!([5, 10, 5]), "{d}");
    let d = q(&ch, &s, base(json!({"metrics": ["visitors"], "filters": [["has_not_done", ["is", "event:goal", ["Signup"]]]]}))).await;
    assert_eq!(d["results"][0]["metrics"], json!([13]), "{d}");
    // Their pages: what those who did it viewed, not only the rows that matched.
    let d = q(&ch, &s, base(json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "filters": [signed_up]}))).await;
    assert_eq!(
        rows(&d),
        vec![
            (vec!["/".into()], vec![json!(5), json!(5)]),
            (vec!["/pricing".into()], vec![json!(5), json!(5)]),
        ],
        "{d}"
    );
    // Visit metrics by source for those who read the blog (B0–B5: 6 visitors, 12 visits,
    // all one-page visits), combined with a plain condition.
    let d = q(&ch, &s, base(json!({"metrics": ["visitors", "visits", "bounce_rate"], "dimensions": ["visit:source"],
        "filters": [["has_done", ["contains", "event:page", ["/blog"]]], ["is", "visit:country", ["US"]]]}))).await;
    assert_eq!(
        rows(&d),
        vec![(
            vec!["Direct / None".into()],
            vec![json!(6), json!(12), json!(100)]
        )],
        "{d}"
    );
    // The differencing guard holds: the 2 from Hacker News are under k, and so is the
    // complement of everyone but them.
    let hn = json!(["has_done", ["is", "event:page", ["/"]]]);
    let d = q(&ch, &s, base(json!({"metrics": ["visitors"], "filters": [hn, ["is", "visit:source", ["Hacker News"]]]}))).await;
    assert_eq!(d["meta"]["too_few_visitors"], true, "{d}");
    let d = q(&ch, &s, base(json!({"metrics": ["visitors"], "filters": [["not", ["has_done", ["is", "event:page", ["/blog/x"]]]]]}))).await;
    assert_eq!(d["results"][0]["metrics"], json!([12]), "{d}");
}

#[tokio::test]
async fn filters_comparisons_time_zones_and_the_differencing_guard() {
    let ch = veil_schemas::testing::fresh_database("stats_filters").await;
    seed(&ch).await;
    let s = site();
    let visitors = |doc: &Value| doc["results"][0]["metrics"][0].clone();
    let one = |f: Value| base(json!({"metrics": ["visitors"], "filters": f}));
    assert_eq!(
        visitors(&q(&ch, &s, one(json!([["is", "visit:country", ["DE"]]]))).await),
        10
    );
    assert_eq!(
        visitors(&q(&ch, &s, one(json!([["is_not", "visit:country", ["US"]]]))).await),
        12
    );
    assert_eq!(
        visitors(
            &q(
                &ch,
                &s,
                one(json!([["contains", "event:page", ["PRIC"], {"case_sensitive": false}]]))
            )
            .await
        ),
        6
    );
    assert_eq!(
        visitors(&q(&ch, &s, one(json!([["contains", "event:page", ["PRIC"]]]))).await),
        Value::Null
    );
    assert_eq!(
        visitors(
            &q(
                &ch,
                &s,
                one(json!([["matches", "event:page", ["^/blog/"]]]))
            )
            .await
        ),
        6
    );
    assert_eq!(
        visitors(
            &q(
                &ch,
                &s,
                one(json!([[
                    "or",
                    [
                        ["is", "visit:country", ["US"]],
                        ["is", "visit:country", ["FR"]]
                    ]
                ]]))
            )
            .await
        ),
        8
    );
    assert_eq!(
        visitors(
            &q(
                &ch,
                &s,
                one(json!([["not", ["is", "visit:source", ["Google"]]]]))
            )
            .await
        ),
        8
    );
    assert_eq!(
        visitors(&q(&ch, &s, one(json!([["is", "event:props:plan", ["pro"]]]))).await),
        5
    );
    assert_eq!(
        visitors(
            &q(
                &ch,
                &s,
                one(json!([
                    ["is", "visit:source", ["Direct / None"]],
                    ["is", "event:page", ["/"]]
                ]))
            )
            .await
        ),
        6
    );

    // Shares of all visitors.
    let share = q(
        &ch,
        &s,
        base(json!({"metrics": ["visitors", "percentage"], "dimensions": ["visit:source"]})),
    )
    .await;
    assert_eq!(rows(&share)[0].1, vec![json!(10), json!(55.6)], "{share}");
    assert_eq!(rows(&share)[1].1, vec![json!(6), json!(33.3)], "{share}");

    // Plausible's country names.
    assert_eq!(
        visitors(
            &q(
                &ch,
                &s,
                one(json!([["is", "visit:country_name", ["Germany"]]]))
            )
            .await
        ),
        10
    );
    let names = q(
        &ch,
        &s,
        base(json!({"metrics": ["visitors"], "dimensions": ["visit:country_name"]})),
    )
    .await;
    assert_eq!(
        rows(&names)[0],
        (vec!["Germany".to_string()], vec![json!(10)]),
        "{names}"
    );

    // Differencing guard: 2 French visitors are under k, so no number at all.
    let fr = q(&ch, &s, base(json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "filters": [["is", "visit:country", ["FR"]]]}))).await;
    assert_eq!(fr["meta"]["too_few_visitors"], true, "{fr}");
    assert_eq!(fr["results"], json!([]));
    let fr = q(&ch, &s, one(json!([["is", "visit:country", ["FR"]]]))).await;
    assert_eq!(fr["results"][0]["metrics"], json!([null]));

    // Props breakdown.
    let props = q(
        &ch,
        &s,
        base(json!({"metrics": ["visitors"], "dimensions": ["event:props:plan"]})),
    )
    .await;
    assert_eq!(
        rows(&props)[0],
        (vec!["(none)".to_string()], vec![json!(18)])
    );
    assert_eq!(rows(&props)[1], (vec!["pro".to_string()], vec![json!(5)]));

    // Comparison with the previous day (5 visitors on the 19th).
    let cmp = q(&ch, &s, base(json!({"metrics": ["visitors", "bounce_rate"], "include": {"comparisons": {"mode": "previous_period"}}}))).await;
    assert_eq!(
        cmp["results"][0]["comparison"]["metrics"],
        json!([5, 100]),
        "{cmp}"
    );
    assert_eq!(
        cmp["results"][0]["comparison"]["change"],
        json!([260, -25]),
        "{cmp}"
    );
    let by_day = q(&ch, &s, json!({"site_id": SITE, "metrics": ["visitors"], "date_range": ["2026-11-19", "2026-11-20"], "dimensions": ["time:day"], "include": {"time_labels": true, "total_rows": true}})).await;
    assert_eq!(
        rows(&by_day),
        vec![
            (vec!["2026-11-19".into()], vec![json!(5)]),
            (vec!["2026-11-20".into()], vec![json!(18)]),
        ]
    );
    assert_eq!(
        by_day["meta"]["time_labels"],
        json!(["2026-11-19", "2026-11-20"])
    );
    assert_eq!(by_day["meta"]["total_rows"], 2);

    // Tokyo (+9): the 15:00 UTC visitors fall on the 21st there.
    let mut tokyo = site();
    tokyo.timezone = "Asia/Tokyo".into();
    let t = q(&ch, &tokyo, json!({"site_id": SITE, "metrics": ["visitors"], "date_range": ["2026-11-20", "2026-11-21"], "dimensions": ["time:day"]})).await;
    assert_eq!(
        rows(&t),
        vec![
            (vec!["2026-11-20".into()], vec![json!(16)]),
            (vec!["2026-11-21".into()], vec![Value::Null]),
        ],
        "{t}"
    );
    // India (+5:30): the hourly rollups cannot cut its days, the per-day rollup (raw events
    // of the partial UTC days, counted per day) can, with the same numbers.
    let mut india = site();
    india.timezone = "Asia/Kolkata".into();
    let t = q(&ch, &india, json!({"site_id": SITE, "metrics": ["visitors", "pageviews"], "date_range": ["2026-11-20", "2026-11-20"], "dimensions": ["event:page"]})).await;
    assert_eq!(t["meta"]["source"], "visits_daily");
    assert_eq!(
        rows(&t)[0],
        (vec!["/".to_string()], vec![json!(18), json!(18)])
    );

    // Order and pagination.
    let p = q(&ch, &s, base(json!({"metrics": ["visitors"], "dimensions": ["event:page"], "order_by": [["event:page", "desc"]], "pagination": {"limit": 1, "offset": 1}}))).await;
    assert_eq!(
        rows(&p),
        vec![(vec!["/blog/x".to_string()], vec![json!(6)])]
    );
}

#[tokio::test]
async fn funnels_realtime_csv_export_and_hostile_input() {
    let ch = veil_schemas::testing::fresh_database("stats_funnel").await;
    seed(&ch).await;
    let s = site();
    let f = reports::funnel(
        &ch.client(),
        &s,
        json!({"site_id": SITE, "funnel": "Buy", "date_range": ["2026-11-20", "2026-11-20"]})
            .to_string()
            .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(f["steps"][0]["visitors"], 6.0, "{f}");
    assert_eq!(f["steps"][1]["visitors"], 5.0, "{f}");
    assert_eq!(f["steps"][1]["conversion_rate"], 83.3, "{f}");
    // Reversed order: nobody signed up before seeing pricing.
    let f = reports::funnel(
        &ch.client(),
        &s,
        json!({"site_id": SITE, "steps": ["Signup", "Pricing"], "date_range": ["2026-11-20", "2026-11-20"]}).to_string().as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(f["steps"][1]["visitors"], Value::Null, "{f}");

    // Realtime: 5 visitors right now, 1 more a while ago.
    let now = Utc::now().naive_utc();
    let at = |m: i64| -> &'static str {
        Box::leak(
            (now - chrono::Duration::minutes(m))
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
                .into_boxed_str(),
        )
    };
    let mut evs: Vec<Ev> = (0..5)
        .map(|i| ev(format!("R{i}"), at(1), "pageview", "/live"))
        .collect();
    evs.push(ev("R9".into(), at(20), "pageview", "/live"));
    insert(&ch, SITE, &evs).await;
    let day = stats::run(
        &ch.client(),
        &s,
        json!({"site_id": SITE, "metrics": ["visitors"], "date_range": "24h"})
            .to_string()
            .as_bytes(),
        Utc::now(),
        None,
    )
    .await
    .unwrap()
    .1;
    assert_eq!(day["results"][0]["metrics"], json!([6]), "{day}");
    let rt = reports::realtime(&ch.client(), &s).await.unwrap();
    assert_eq!(rt["visitors_5m"], 5, "{rt}");
    assert_eq!(rt["pageviews_30m"], 6, "{rt}");
    assert_eq!(
        rt["top_pages"][0],
        json!({"page": "/live", "visitors": 6}),
        "{rt}"
    );

    // Through HTTP: CSV, export zip, errors naming fields, hostile strings.
    let agg = Aggregator::new(
        AggregatorConfig {
            sites: vec![SITE.into()],
            ..Default::default()
        },
        ch.clone(),
    );
    let call = |path: &str, method: &str, body: String, accept: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("accept", accept)
            .body(Bytes::from(body))
            .unwrap()
    };
    let pages = base(json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"]}))
        .to_string();
    let r = agg
        .handle(call("/api/v2/query", "POST", pages.clone(), "text/csv"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(
        String::from_utf8(body.to_vec()).unwrap(),
        "event:page,visitors,pageviews\r\n/,18,18\r\n/blog/x,6,6\r\n/pricing,6,6\r\n"
    );
    let r = agg
        .handle(call(
            &format!("/api/v1/sites/{SITE}/export?date_range=2026-11-19,2026-11-20"),
            "GET",
            String::new(),
            "*/*",
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(body.to_vec())).unwrap();
    assert!(zip.len() >= 15);
    let mut visitors = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("visitors.csv").unwrap(), &mut visitors)
        .unwrap();
    assert!(visitors.contains("2026-11-20,18,24,30,75,40"), "{visitors}");

    let bad = |body: Value, field: &str| {
        let agg = agg.clone();
        let field = field.to_string();
        async move {
            let r = agg
                .handle(call("/api/v2/query", "POST", body.to_string(), "*/*"))
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{body}");
            let b = http_body_util::BodyExt::collect(r.into_body())
                .await
                .unwrap()
                .to_bytes();
            let msg = String::from_utf8(b.to_vec()).unwrap();
            assert!(msg.contains(&field), "{body} → {msg}");
        }
    };
    bad(
        base(
            json!({"metrics": ["visitors"], "dimensions": ["event:page'); DROP TABLE events; --"]}),
        ),
        "dimensions[0]",
    )
    .await;
    bad(base(json!({"metrics": ["visitors", "nope"]})), "metrics[1]").await;
    bad(
        base(json!({"metrics": ["visitors"], "filters": [["is", "visit:country", "DE"]]})),
        "filters[0][2]",
    )
    .await;
    bad(
        base(json!({"metrics": ["visitors"], "order_by": [["x", "desc"]]})),
        "order_by[0]",
    )
    .await;
    bad(
        base(json!({"metrics": ["visitors"], "filters": [["has_done", ["is", "visit:country", ["DE"]]]]})),
        "has_done takes event:* conditions",
    )
    .await;

    // Injection attempts in every string a query carries run as plain values.
    let hostile = [
        "'; DROP TABLE events; --",
        "\\'; SELECT 1; --",
        "') OR 1=1 OR ('",
        "?",
        "{x:String}",
        "\u{0}",
        "%' OR '%'='",
    ];
    for h in hostile {
        for dim in [
            "event:page",
            "visit:source",
            "visit:utm_campaign",
            "event:props:plan",
            "visit:country",
            "event:hostname",
        ] {
            for op in ["is", "is_not", "contains", "contains_not"] {
                let body = base(json!({"metrics": ["visitors"], "filters": [[op, dim, [h]]]}));
                let r = agg
                    .handle(call("/api/v2/query", "POST", body.to_string(), "*/*"))
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{body}");
            }
        }
        let body =
            base(json!({"metrics": ["visitors"], "dimensions": [format!("event:props:{h}")]}));
        let r = agg
            .handle(call("/api/v2/query", "POST", body.to_string(), "*/*"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{body}");
    }
    let top = q(&ch, &s, base(json!({"metrics": ["visitors"]}))).await;
    assert_eq!(top["results"][0]["metrics"], json!([18]), "events survived");
}

#[tokio::test]
async fn child_directed_sites_report_counts_only() {
    let ch = veil_schemas::testing::fresh_database("stats_child").await;
    let zero = "\0".to_string();
    let evs: Vec<Ev> = (0..7)
        .map(|_| ev(zero.clone(), "2026-11-20 10:00:00", "pageview", "/games"))
        .chain((0..2).map(|_| ev(zero.clone(), "2026-11-20 10:00:00", "pageview", "/rare")))
        .collect();
    insert(&ch, "kids.example", &evs).await;
    let mut s = SiteView::new("kids.example");
    s.child_directed = true;
    let d = q(&ch, &s, json!({"site_id": "kids.example", "metrics": ["pageviews"], "date_range": ["2026-11-20", "2026-11-20"], "dimensions": ["event:page"]})).await;
    assert_eq!(
        rows(&d),
        vec![(vec!["/games".to_string()], vec![json!(7)])],
        "{d}"
    );
    let e = stats::run(
        &ch.client(),
        &s,
        br#"{"site_id":"kids.example","metrics":["visitors"],"date_range":"day"}"#,
        now(),
        None,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("child-directed"));
}

/// The example request of Plausible's Stats API v2 reference (curl with a Bearer token, a
/// `site_id`, `visitors`, `7d`), sent unchanged.
#[tokio::test]
async fn the_plausible_docs_example_request_works_unchanged() {
    let ch = veil_schemas::testing::fresh_database("stats_docs").await;
    let now = Utc::now().naive_utc();
    let at: &'static str = Box::leak(
        (now - chrono::Duration::hours(1))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
            .into_boxed_str(),
    );
    let evs: Vec<Ev> = (0..6)
        .map(|i| ev(format!("P{i}"), at, "pageview", "/"))
        .collect();
    insert(&ch, "dummy.site", &evs).await;
    let agg = Aggregator::new(
        AggregatorConfig {
            sites: vec!["dummy.site".into()],
            api_token: Some("YOUR-TOKEN-0123456789".into()),
            ..Default::default()
        },
        ch.clone(),
    );
    let req = Request::builder()
        .method("POST")
        .uri("/api/v2/query")
        .header("Authorization", "Bearer YOUR-TOKEN-0123456789")
        .header("Content-Type", "application/json")
        .body(Bytes::from_static(
            br#"{ "site_id": "dummy.site", "metrics": ["visitors"], "date_range": "7d" }"#,
        ))
        .unwrap();
    let r = agg.handle(req).await.unwrap();
    assert_eq!(r.status(), 200);
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        doc["results"],
        json!([{"dimensions": [], "metrics": [6]}]),
        "{doc}"
    );
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
    let mut dims: Vec<String> = veil_aggregator::query::DIMENSIONS
        .iter()
        .map(|(n, _)| n.to_string())
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
        .filter(|n| *n != "conversion_rate")
        .collect();
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
    let d = q(&ch, &s, base(json!({"metrics": ["visitors", "time_on_page", "scroll_depth", "average_revenue", "crashes"], "filters": [["is", "event:goal", ["Signup"]]]}))).await;
    assert_eq!(
        d["results"][0]["metrics"],
        json!([5, 0, null, 10.5, 0]),
        "{d}"
    );
}

/// Every way a visit open at today's cut can go on, five visitors each (k = 5), on
/// 2026-11-20 with the cut at 14:30 (55 hits):
/// - P: `/a` at 14:10, `/b` at 14:35, an engagement at 14:36 — one visit of 26 minutes,
///   entry `/a`, exit `/b`, no bounce.
/// - Q: `/q` at 14:05, `/r` at 14:50 — more than 30 minutes apart: two one-page visits.
/// - R: a Signup event on `/r` at 14:20 (no pageview), `/p2` at 14:40 — one visit, entry and
///   exit `/p2` (its only pageview), not a bounce (an interactive event).
/// - S: `/s1` at 14:15, `/s2` at 14:20, nothing after the cut — one visit, exit `/s2`.
/// - T: `/t` at 14:45 only — a visit that starts after the cut.
/// - U: `/u` at 09:00 — over long before the cut (a `visits` row of the build).
fn open_visits_dataset() -> Vec<Ev> {
    let mut evs = Vec::new();
    let src = |source: &'static str, e: Ev| Ev { source, ..e };
    for i in 0..5 {
        let v = |g: &str| format!("{g}{i}");
        evs.push(src(
            "Google",
            ev(v("P"), "2026-11-20 14:10:00", "pageview", "/a"),
        ));
        evs.push(src(
            "Google",
            ev(v("P"), "2026-11-20 14:35:00", "pageview", "/b"),
        ));
        evs.push(src(
            "Google",
            ev(v("P"), "2026-11-20 14:36:00", "engagement", "/b"),
        ));
        evs.push(src(
            "Bing",
            ev(v("Q"), "2026-11-20 14:05:00", "pageview", "/q"),
        ));
        evs.push(src(
            "Bing",
            ev(v("Q"), "2026-11-20 14:50:00", "pageview", "/r"),
        ));
        evs.push(src(
            "DuckDuckGo",
            ev(v("R"), "2026-11-20 14:20:00", "Signup", "/r"),
        ));
        evs.push(src(
            "DuckDuckGo",
            ev(v("R"), "2026-11-20 14:40:00", "pageview", "/p2"),
        ));
        evs.push(src(
            "Ecosia",
            ev(v("S"), "2026-11-20 14:15:00", "pageview", "/s1"),
        ));
        evs.push(src(
            "Ecosia",
            ev(v("S"), "2026-11-20 14:20:00", "pageview", "/s2"),
        ));
        evs.push(src(
            "Qwant",
            ev(v("T"), "2026-11-20 14:45:00", "pageview", "/t"),
        ));
        evs.push(src(
            "Yahoo!",
            ev(v("U"), "2026-11-20 09:00:00", "pageview", "/u"),
        ));
    }
    evs
}

/// Today's build stops at a cut; the visits open then are stored as they stood
/// (`open_visits`) and carried on by the hits after the cut at query time
/// ([`open_visits_dataset`]).
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
    let built = stats::visit_builds(&ch.client(), day, day).await.unwrap();
    assert_eq!(built[0].cut, day.and_hms_opt(14, 30, 0), "{built:?}");
    let count = |table: &'static str| {
        let ch = ch.clone();
        let build = built[0].build;
        async move {
            ch.client()
                .query(&format!(
                    "SELECT count() FROM {table} WHERE day = '2026-11-20' AND build = {build}"
                ))
                .fetch_one::<u64>()
                .await
                .unwrap()
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
    // The hits after the cut are read from events_recent, which keeps two days: trimming on
    // the 21st keeps the 20th, on the 22nd drops it.
    let recent = || {
        let ch = ch.clone();
        async move {
            ch.client()
                .query("SELECT count() FROM events_recent")
                .fetch_one::<u64>()
                .await
                .unwrap()
        }
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

/// Today's snapshot: every dashboard report read from it equals the live one; a reader asks
/// for one when it finds none it may read; it is read only while fresh and while it misses
/// no more than a thousandth of the day's hits (none, for this small day); a build a late hit
/// made untrustworthy gets no new snapshot.
#[tokio::test]
async fn todays_snapshot_answers_like_the_live_day_while_fresh() {
    use std::sync::{Arc, Mutex};
    use veil_aggregator::snapshot::{self, Snapshots};
    let ch = veil_schemas::testing::fresh_database("stats_snapshot").await;
    insert(&ch, SITE, &open_visits_dataset()).await;
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let at = |h: u32, m: u32, s: u32| day.and_hms_opt(h, m, s).unwrap();
    assert!(rollup::build_today(&ch, at(14, 32, 10)).await.unwrap());
    let clock = Arc::new(Mutex::new(at(14, 55, 0)));
    let c = Arc::clone(&clock);
    let snaps =
        Snapshots::with_clock(ch.clone(), 30, Arc::new(move || *c.lock().unwrap())).unwrap();
    let s = site();
    let run = |body: Value, snaps: Option<Arc<Snapshots>>| {
        let (ch, s) = (ch.clone(), s.clone());
        async move {
            let body = base(body).to_string();
            stats::run(&ch.client(), &s, body.as_bytes(), now(), snaps.as_ref())
                .await
                .unwrap()
                .1
        }
    };
    let recorded = || {
        let ch = ch.clone();
        async move {
            ch.client()
                .query("SELECT count() FROM today_snaps")
                .fetch_one::<u64>()
                .await
                .unwrap()
        }
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
    *clock.lock().unwrap() = at(14, 56, 30);
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
    *clock.lock().unwrap() = at(14, 57, 1);
    let old = run(top.clone(), Some(Arc::clone(&snaps))).await;
    assert_eq!(as_of(&old), None, "{old}");
    wait_for(4).await;

    // A new build of the day: the rollup job renews at once the snapshots of the sites being
    // read, so they need not take the live path until a reader asks.
    assert!(rollup::build_today(&ch, at(14, 58, 10)).await.unwrap());
    *clock.lock().unwrap() = at(14, 58, 20);
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
    *clock.lock().unwrap() = at(14, 59, 0);
    let late = run(top.clone(), Some(Arc::clone(&snaps))).await;
    assert_eq!(as_of(&late), None, "{late}");
    assert_eq!(late["results"][0]["metrics"][0], json!(32), "{late}");
}
