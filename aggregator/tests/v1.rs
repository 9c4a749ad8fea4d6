//! Plausible's Stats API v1 against a real ClickHouse, through the aggregator's HTTP handling:
//! each endpoint in the shapes of Plausible's v1 docs, with the same numbers as the v2 query
//! it stands for (exact mode, the known dataset of `tests/common`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use serde_json::{json, Value};

async fn get(a: &veil_aggregator::Aggregator, path: &str) -> (u16, Value) {
    let req = Request::builder()
        .method("GET")
        .uri(path)
        .body(Bytes::new())
        .unwrap();
    let r = a.handle(req).await.expect("an aggregator path");
    let status = r.status().as_u16();
    let b = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, serde_json::from_slice(&b).unwrap())
}

async fn v2(a: &veil_aggregator::Aggregator, body: Value) -> Value {
    let (s, v) = {
        let req = request(
            "/api/v2/query",
            "POST",
            body.to_string(),
            "application/json",
        );
        let r = a.handle(req).await.unwrap();
        let s = r.status().as_u16();
        let b = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        (s, serde_json::from_slice::<Value>(&b).unwrap())
    };
    assert_eq!(s, 200, "{v}");
    v
}

#[tokio::test]
async fn stats_api_v1_answers_in_plausibles_shapes_with_v2s_numbers() {
    let ch = veil_schemas::testing::fresh_database("stats_v1").await;
    seed(&ch).await;
    let a = stats_aggregator(&ch);
    let day = "period=day&date=2026-11-20";

    // aggregate
    let (s, agg) = get(
        &a,
        &format!(
            "/api/v1/stats/aggregate?site_id={SITE}&{day}&metrics=visitors,pageviews,bounce_rate"
        ),
    )
    .await;
    assert_eq!(s, 200, "{agg}");
    let want = v2(
        &a,
        json!({"site_id": SITE, "metrics": ["visitors", "pageviews", "bounce_rate"], "date_range": ["2026-11-20", "2026-11-20"]}),
    )
    .await;
    assert_eq!(
        agg["results"]["visitors"]["value"], want["results"][0]["metrics"][0],
        "{agg}"
    );
    assert_eq!(agg["results"]["visitors"]["value"], 18, "{agg}");
    assert_eq!(
        agg["results"]["pageviews"]["value"],
        want["results"][0]["metrics"][1]
    );
    assert_eq!(
        agg["results"]["bounce_rate"]["value"],
        want["results"][0]["metrics"][2]
    );
    assert_eq!(agg["meta"]["privacy"]["mode"], "exact");

    // Filters in v1's syntax: `==`, `|`, `;`, `!=`, wildcards.
    let (_, f) = get(
        &a,
        &format!("/api/v1/stats/aggregate?site_id={SITE}&{day}&filters=visit:source%3D%3DGoogle%7CHacker%20News;visit:country!=FR"),
    )
    .await;
    assert_eq!(f["results"]["visitors"]["value"], 10, "{f}");
    let (_, f) = get(
        &a,
        &format!("/api/v1/stats/aggregate?site_id={SITE}&{day}&filters=event:page%3D%3D/blog/*"),
    )
    .await;
    assert_eq!(f["results"]["visitors"]["value"], 6, "{f}");

    // compare=previous_period adds the change.
    let (_, c) = get(
        &a,
        &format!("/api/v1/stats/aggregate?site_id={SITE}&{day}&compare=previous_period"),
    )
    .await;
    assert!(c["results"]["visitors"]["change"].is_number(), "{c}");

    // timeseries: every day of the period, zeros included.
    let (s, ts) = get(
        &a,
        &format!(
            "/api/v1/stats/timeseries?site_id={SITE}&period=custom&date=2026-11-18,2026-11-21"
        ),
    )
    .await;
    assert_eq!(s, 200, "{ts}");
    assert_eq!(
        ts["results"],
        json!([
            {"date": "2026-11-18", "visitors": 0},
            {"date": "2026-11-19", "visitors": 5},
            {"date": "2026-11-20", "visitors": 18},
            {"date": "2026-11-21", "visitors": 0},
        ]),
        "{ts}"
    );

    // breakdown: the property's short name, limit and page.
    let (s, b) = get(
        &a,
        &format!("/api/v1/stats/breakdown?site_id={SITE}&{day}&property=visit:source&metrics=visitors,bounce_rate&limit=1"),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let rows = b["results"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{b}");
    assert_eq!(rows[0]["visitors"], 10, "{b}");
    assert_eq!(rows[0]["source"], "Google", "{b}");
    assert!(rows[0]["bounce_rate"].is_number(), "{b}");
    let (_, p2) = get(
        &a,
        &format!(
            "/api/v1/stats/breakdown?site_id={SITE}&{day}&property=visit:source&limit=1&page=2"
        ),
    )
    .await;
    assert_ne!(p2["results"][0]["source"], "Google", "{p2}");

    // The site's goals (the dataset's: common::site).
    let goals = json!({"goals": [{"name": "Signup", "event_name": "Signup"}]});
    let req = Request::builder()
        .method("PUT")
        .uri(format!("/api/v1/sites/{SITE}"))
        .header("content-type", "application/json")
        .body(Bytes::from(goals.to_string()))
        .unwrap();
    let r = a.handle(req).await.unwrap();
    assert_eq!(r.status(), 200);
    // conversion_rate by a source is the source's own rate, as Plausible's v1 answers it (v2's
    // group_conversion_rate: 5 of Google's 10 signed up); by goal it is of every visitor
    // (5 of 18).
    let (s, b) = get(
        &a,
        &format!("/api/v1/stats/breakdown?site_id={SITE}&{day}&property=visit:source&metrics=visitors,conversion_rate&filters=event:goal%3D%3DSignup"),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["results"],
        json!([{"source": "Google", "visitors": 5, "conversion_rate": 50}]),
        "{b}"
    );
    let (s, b) = get(
        &a,
        &format!("/api/v1/stats/breakdown?site_id={SITE}&{day}&property=event:goal&metrics=visitors,conversion_rate&filters=event:goal%3D%3DSignup"),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["results"],
        json!([{"goal": "Signup", "visitors": 5, "conversion_rate": 27.8}]),
        "{b}"
    );

    // Errors name the parameter; realtime is a bare number.
    let (s, e) = get(&a, &format!("/api/v1/stats/breakdown?site_id={SITE}&{day}")).await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("property"), "{e}");
    let (s, e) = get(
        &a,
        &format!("/api/v1/stats/aggregate?site_id={SITE}&period=fortnight"),
    )
    .await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("period"), "{e}");
    let (s, e) = get(&a, "/api/v1/stats/aggregate?period=day").await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("site_id"), "{e}");
    let (s, n) = get(
        &a,
        &format!("/api/v1/stats/realtime/visitors?site_id={SITE}"),
    )
    .await;
    assert_eq!(s, 200);
    assert!(n.is_u64(), "{n}");
}

/// v2's answer as a map from its first dimension to its metrics.
fn by_dim(doc: &Value) -> Vec<(Value, Vec<Value>)> {
    doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dimensions"][0].clone(),
                r["metrics"].as_array().unwrap().clone(),
            )
        })
        .collect()
}

/// Each v1 endpoint in the shape of Plausible's v1 docs (`date` and the metrics per bucket,
/// the property's short name per row, `value` and `change` per metric, a bare number) with
/// the numbers v2 gives for the same question on the same data, on a fixed clock
/// (2026-11-28 12:00 UTC). The v2 side is asked, not written down.
#[tokio::test]
async fn every_v1_endpoint_gives_the_numbers_of_its_v2_question() {
    let ch = veil_schemas::testing::fresh_database("stats_v1_parity").await;
    seed(&ch).await;
    let clock = veil_aggregator::ManualClock::new(now());
    let a = stats_aggregator(&ch).with_clock(clock.clone());
    let ms = [
        "visitors",
        "visits",
        "pageviews",
        "bounce_rate",
        "visit_duration",
    ];
    let ms_csv = ms.join(",");

    // timeseries by day: period=7d ending the day before `date` (11-14 ..= 11-20), one row per
    // day, zeros where v2 has no row.
    let (s, ts) = get(
        &a,
        &format!("/api/v1/stats/timeseries?site_id={SITE}&period=7d&date=2026-11-21&interval=day&metrics={ms_csv}"),
    )
    .await;
    assert_eq!(s, 200, "{ts}");
    let want = v2(
        &a,
        json!({"site_id": SITE, "metrics": ms, "date_range": ["2026-11-14", "2026-11-20"],
            "dimensions": ["time:day"], "include": {"time_labels": true}}),
    )
    .await;
    let want_rows = by_dim(&want);
    let got = ts["results"].as_array().unwrap();
    assert_eq!(got.len(), 7, "{ts}");
    assert_eq!(
        json!(got.iter().map(|r| r["date"].clone()).collect::<Vec<_>>()),
        want["meta"]["time_labels"],
        "{ts}"
    );
    for row in got {
        let v2row = want_rows.iter().find(|(d, _)| *d == row["date"]);
        for (i, m) in ms.iter().enumerate() {
            let expect = v2row.map_or(json!(0), |(_, v)| v[i].clone());
            assert_eq!(row[*m], expect, "{m} on {}: {ts}\n{want}", row["date"]);
        }
        assert_eq!(row.as_object().unwrap().len(), ms.len() + 1, "{row}");
    }
    // Not vacuous: the 19th's 5 and the 20th's 18.
    assert_eq!(got[5]["visitors"], 5, "{ts}");
    assert_eq!(got[6]["visitors"], 18, "{ts}");

    // timeseries by month: period=12mo (the 12 calendar months ending with today's month,
    // 2025-12 ..= 2026-11), interval=month; buckets labelled with their first day.
    let (s, ts) = get(
        &a,
        &format!("/api/v1/stats/timeseries?site_id={SITE}&period=12mo&interval=month&metrics=visitors,pageviews,events"),
    )
    .await;
    assert_eq!(s, 200, "{ts}");
    let want = v2(
        &a,
        json!({"site_id": SITE, "metrics": ["visitors", "pageviews", "events"], "date_range": ["2025-12-01", "2026-11-30"],
            "dimensions": ["time:month"], "include": {"time_labels": true}}),
    )
    .await;
    let want_rows = by_dim(&want);
    let got = ts["results"].as_array().unwrap();
    assert_eq!(got.len(), 12, "{ts}");
    assert_eq!(got[0]["date"], "2025-12-01", "{ts}");
    assert_eq!(got[11]["date"], "2026-11-01", "{ts}");
    for row in got {
        let v2row = want_rows.iter().find(|(d, _)| *d == row["date"]);
        for (i, m) in ["visitors", "pageviews", "events"].iter().enumerate() {
            let expect = v2row.map_or(json!(0), |(_, v)| v[i].clone());
            assert_eq!(row[*m], expect, "{m} in {}: {ts}\n{want}", row["date"]);
        }
    }
    // A0–A9, B0–B5, C0–C1, D0–D4; 5 + 10 + 6 + 12 + 2 pageviews, plus 5 sign-ups.
    assert_eq!(got[11]["visitors"], 23, "{ts}");
    assert_eq!(got[11]["pageviews"], 35, "{ts}");
    assert_eq!(got[11]["events"], 40, "{ts}");

    // breakdown by a visit property, a page and a custom property, page by page: each page
    // is v2's page of the same size, in v2's order.
    let day = "period=custom&date=2026-11-19,2026-11-20";
    for (property, name, metrics) in [
        (
            "visit:source",
            "source",
            vec!["visitors", "visits", "bounce_rate", "visit_duration"],
        ),
        (
            "event:page",
            "page",
            vec!["visitors", "pageviews", "bounce_rate"],
        ),
        ("event:props:plan", "plan", vec!["visitors", "events"]),
    ] {
        let mut seen = 0;
        for page in 1..=3u32 {
            let (s, b) = get(
                &a,
                &format!(
                    "/api/v1/stats/breakdown?site_id={SITE}&{day}&property={property}&metrics={}&limit=2&page={page}",
                    metrics.join(",")
                ),
            )
            .await;
            assert_eq!(s, 200, "{b}");
            let want = v2(
                &a,
                json!({"site_id": SITE, "metrics": metrics, "date_range": ["2026-11-19", "2026-11-20"],
                    "dimensions": [property], "pagination": {"limit": 2, "offset": (page - 1) * 2}}),
            )
            .await;
            let want_rows = by_dim(&want);
            let got = b["results"].as_array().unwrap();
            assert_eq!(
                got.len(),
                want_rows.len(),
                "{property} page {page}: {b}\n{want}"
            );
            for (row, (dim, vals)) in got.iter().zip(&want_rows) {
                assert_eq!(&row[name], dim, "{property} page {page}: {b}\n{want}");
                for (i, m) in metrics.iter().enumerate() {
                    assert_eq!(row[*m], vals[i], "{property} {m}: {b}\n{want}");
                }
                assert_eq!(row.as_object().unwrap().len(), metrics.len() + 1, "{row}");
            }
            seen += got.len();
        }
        // Sources: direct and Google (Hacker News's 2 visitors are under exact mode's
        // minimum of 5, in v1 as in v2); pages: /, /pricing, /blog/x; plan: pro and
        // `(none)` (the visitors without it, as Plausible answers it).
        let expect = match property {
            "visit:source" => 2,
            "event:page" => 3,
            _ => 2,
        };
        assert_eq!(seen, expect, "{property}");
    }
    let (_, b) = get(
        &a,
        &format!("/api/v1/stats/breakdown?site_id={SITE}&{day}&property=event:props:plan&metrics=visitors"),
    )
    .await;
    assert_eq!(
        b["results"],
        json!([{"plan": "(none)", "visitors": 23}, {"plan": "pro", "visitors": 5}]),
        "{b}"
    );

    // compare=previous_period: each metric's `change` is v2's previous-period change (the
    // 20th against the 19th: 18 visitors against 5 is +260 %).
    let (s, c) = get(
        &a,
        &format!("/api/v1/stats/aggregate?site_id={SITE}&period=day&date=2026-11-20&metrics=visitors,pageviews,visits&compare=previous_period"),
    )
    .await;
    assert_eq!(s, 200, "{c}");
    let want = v2(
        &a,
        json!({"site_id": SITE, "metrics": ["visitors", "pageviews", "visits"], "date_range": ["2026-11-20", "2026-11-20"],
            "include": {"comparisons": {"mode": "previous_period"}}}),
    )
    .await;
    for (i, m) in ["visitors", "pageviews", "visits"].iter().enumerate() {
        assert_eq!(
            c["results"][*m]["value"], want["results"][0]["metrics"][i],
            "{c}\n{want}"
        );
        assert_eq!(
            c["results"][*m]["change"], want["results"][0]["comparison"]["change"][i],
            "{c}\n{want}"
        );
    }
    assert_eq!(c["results"]["visitors"]["change"], 260, "{c}");

    // realtime/visitors: the visitors of the last 5 minutes — v2 asked for the same five
    // minutes. Six visitors at 11:57, five at 11:50 (in v2's 30-minute realtime, not in
    // these 5 minutes); both groups are over exact mode's minimum of 5.
    let mut evs: Vec<Ev> = (0..6)
        .map(|i| ev(format!("R{i}"), "2026-11-28 11:57:00", "pageview", "/"))
        .collect();
    evs.extend((0..5).map(|i| ev(format!("S{i}"), "2026-11-28 11:50:00", "pageview", "/")));
    insert(&ch, SITE, &evs).await;
    let (s, n) = get(
        &a,
        &format!("/api/v1/stats/realtime/visitors?site_id={SITE}"),
    )
    .await;
    assert_eq!(s, 200, "{n}");
    let want = v2(
        &a,
        json!({"site_id": SITE, "metrics": ["visitors"],
            "date_range": ["2026-11-28T11:55:00+00:00", "2026-11-28T12:00:00+00:00"]}),
    )
    .await;
    assert_eq!(n, want["results"][0]["metrics"][0], "{want}");
    assert_eq!(n, 6);
    let thirty = v2(
        &a,
        json!({"site_id": SITE, "metrics": ["visitors"], "date_range": "realtime"}),
    )
    .await;
    assert_eq!(thirty["results"][0]["metrics"][0], 11, "{thirty}");
    // Six minutes later the 11:57 visitors have left the window.
    clock.advance(std::time::Duration::from_secs(6 * 60));
    let (_, n) = get(
        &a,
        &format!("/api/v1/stats/realtime/visitors?site_id={SITE}"),
    )
    .await;
    assert_eq!(n, 0);
}
