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
