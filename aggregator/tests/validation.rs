//! Plausible's query rules over HTTP against a real ClickHouse: each question Plausible's
//! Stats API v2 refuses is a 400 whose message names the field at fault (never an empty or
//! differently-meant 200), and the questions the dashboard asks still answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::*;
use serde_json::{json, Value};
use veil_aggregator::Aggregator;

/// The status and body (as text) of a query sent over HTTP.
async fn post(agg: &Aggregator, body: &Value) -> (u16, String) {
    let r = agg
        .handle(request("/api/v2/query", "POST", body.to_string(), "*/*"))
        .await
        .unwrap();
    let status = r.status().as_u16();
    let b = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8(b.to_vec()).unwrap())
}

#[tokio::test]
async fn plausibles_refusals_are_400s_and_the_dashboards_questions_answer() {
    let ch = veil_schemas::testing::fresh_database("stats_validation").await;
    seed(&ch).await;
    let agg = stats_aggregator(&ch);
    let refused = [
        // Visit metrics by an event dimension other than event:page alone.
        (
            json!({"metrics": ["visitors", "bounce_rate"], "dimensions": ["event:name"]}),
            "dimensions[0]",
        ),
        (
            json!({"metrics": ["visit_duration"], "dimensions": ["visit:source", "event:props:plan"]}),
            "dimensions[1]",
        ),
        // views_per_visit with a page filter, or broken down.
        (
            json!({"metrics": ["views_per_visit"], "filters": [["is", "event:page", ["/pricing"]]]}),
            "metrics[0]",
        ),
        (
            json!({"metrics": ["visits", "views_per_visit"], "dimensions": ["visit:source"]}),
            "metrics[1]",
        ),
        // scroll_depth without a page.
        (json!({"metrics": ["scroll_depth"]}), "metrics[0]"),
        // Either conversion rate without a goal dimension or a top-level goal filter.
        (
            json!({"metrics": ["visitors", "group_conversion_rate"], "dimensions": ["visit:source"]}),
            "metrics[1]",
        ),
        // Goal and hostname conditions inside and/or/not.
        (
            json!({"metrics": ["visitors"], "filters": [["or", [["is", "event:goal", ["Signup"]], ["is", "visit:source", ["Google"]]]]]}),
            "filters[0][1][0][1]",
        ),
        (
            json!({"metrics": ["visitors"], "filters": [["not", ["is", "event:hostname", ["shop.example"]]]]}),
            "filters[0][1][1]",
        ),
        // time_labels without a time dimension; a country name for a code.
        (
            json!({"metrics": ["visitors"], "include": {"time_labels": true}}),
            "include.time_labels",
        ),
        (
            json!({"metrics": ["visitors"], "filters": [["is", "visit:country", ["Germany"]]]}),
            "filters[0][2][0]",
        ),
        // Pagination out of bounds, values of the wrong type.
        (
            json!({"metrics": ["visitors"], "dimensions": ["event:page"], "pagination": {"limit": 0}}),
            "pagination.limit",
        ),
        (
            json!({"metrics": ["visitors"], "dimensions": ["event:page"], "pagination": {"offset": -5}}),
            "pagination.offset",
        ),
        (
            json!({"metrics": ["visitors"], "filters": [["is", "event:page", [404]]]}),
            "filters[0][2][0]",
        ),
    ];
    for (body, field) in refused {
        let (status, msg) = post(&agg, &base(body.clone())).await;
        assert_eq!(status, 400, "{body} → {msg}");
        assert!(msg.contains(field), "{body} → {msg}");
    }
    // The dashboard's questions (dashboards/web/app.js): top stats in two groups, the chart
    // with time labels, panels, all under a page filter as a visitor would set one.
    let page = json!([["is", "event:page", ["/pricing"]]]);
    let asked = [
        json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"], "filters": page}),
        json!({"metrics": ["time_on_page"], "filters": page}),
        json!({"metrics": ["time_on_page"]}),
        json!({"metrics": ["time_on_page"], "dimensions": ["time:day"], "include": {"time_labels": true}}),
        json!({"metrics": ["bounce_rate"], "dimensions": ["time:hour"], "include": {"time_labels": true}, "filters": page}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "pagination": {"limit": 9, "offset": 0}, "include": {"total_rows": true}}),
        json!({"metrics": ["visitors", "visits"], "dimensions": ["visit:entry_page"], "filters": page}),
        json!({"metrics": ["visitors", "events"], "dimensions": ["event:name"], "filters": [["is_not", "event:name", ["pageview", "engagement"]]]}),
        // What Plausible allows: visit metrics by event:page.
        json!({"metrics": ["visitors", "bounce_rate", "visit_duration"], "dimensions": ["event:page"]}),
    ];
    for body in asked {
        let (status, msg) = post(&agg, &base(body.clone())).await;
        assert_eq!(status, 200, "{body} → {msg}");
        let doc: Value = serde_json::from_str(&msg).unwrap();
        assert!(
            doc["results"].as_array().is_some_and(|a| !a.is_empty()),
            "{body} → {doc}"
        );
    }
}
