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

/// Every other rule of the parser, each as Plausible states it (its Stats API v2 reference
/// and its query parser's messages: unknown and repeated metrics and dimensions, order_by
/// entries that are not a queried metric or dimension, a goal the site has not configured,
/// `event:props:` without a name, two-letter countries, behavioural filters of event
/// conditions only and not nested, pagination bounds, include keys), through HTTP: a 400
/// whose message names the field at fault. Bodies are the day of the known dataset unless
/// the rule is about the body's own fields.
#[tokio::test]
async fn every_other_refusal_is_a_400_naming_the_field() {
    let ch = veil_schemas::testing::fresh_database("stats_validation_all").await;
    seed(&ch).await;
    let agg = stats_aggregator(&ch);
    let day = json!(["2026-11-20", "2026-11-20"]);
    let v = || json!(["visitors"]);
    let deep = (0..10).fold(json!(["is", "visit:source", ["Google"]]), |f, _| {
        json!(["not", f])
    });
    let many: Vec<Value> = (0..21)
        .map(|i| json!(["is_not", "event:page", [format!("/p{i}")]]))
        .collect();
    let hundred_and_one: Vec<String> = (0..101).map(|i| format!("/p{i}")).collect();
    // (whole body, a text the message must contain)
    let refused: Vec<(Value, &str)> = vec![
        // The body's own fields.
        (json!({"metrics": v(), "date_range": day}), "site_id"),
        (json!({"site_id": SITE, "metrics": v()}), "date_range"),
        (json!({"site_id": SITE, "date_range": day}), "metrics"),
        (
            json!({"site_id": SITE, "metrics": [], "date_range": day}),
            "metrics",
        ),
        (
            json!({"site_id": SITE, "metrics": v(), "date_range": day, "dimension": ["event:page"]}),
            "`dimension`",
        ),
        // Plausible's date_range forms only.
        (
            json!({"site_id": SITE, "metrics": v(), "date_range": "fortnight"}),
            "date_range",
        ),
        (
            json!({"site_id": SITE, "metrics": v(), "date_range": "0d"}),
            "date_range",
        ),
        (
            json!({"site_id": SITE, "metrics": v(), "date_range": ["2026-11-20"]}),
            "date_range",
        ),
        (
            json!({"site_id": SITE, "metrics": v(), "date_range": ["2026-11-21", "2026-11-20"]}),
            "date_range",
        ),
        (
            json!({"site_id": SITE, "metrics": v(), "date_range": ["2026-11-20", "tomorrow"]}),
            "date_range",
        ),
        (
            json!({"site_id": SITE, "metrics": v(), "date_range": 7}),
            "date_range",
        ),
        // Metrics: unknown, listed twice.
        (
            base(json!({"metrics": ["visitors", "uniques"]})),
            "metrics[1]",
        ),
        (
            base(json!({"metrics": ["visitors", "pageviews", "visitors"]})),
            "metrics[2]",
        ),
        // Dimensions: unknown, listed twice, a custom property without a name, two time
        // dimensions, more than four.
        (
            base(json!({"metrics": v(), "dimensions": ["visit:planet"]})),
            "dimensions[0]",
        ),
        (
            base(json!({"metrics": v(), "dimensions": ["event:page", "event:page"]})),
            "dimensions[1]",
        ),
        (
            base(json!({"metrics": v(), "dimensions": ["event:props:"]})),
            "dimensions[0]",
        ),
        (
            base(json!({"metrics": v(), "dimensions": ["time:day", "time:hour"]})),
            "dimensions",
        ),
        (
            base(
                json!({"metrics": v(), "dimensions": ["visit:source", "visit:country", "visit:device", "visit:browser", "visit:os"]}),
            ),
            "dimensions",
        ),
        // order_by: not a queried metric or dimension, a bad direction, not a pair.
        (
            base(
                json!({"metrics": v(), "dimensions": ["event:page"], "order_by": [["pageviews", "desc"]]}),
            ),
            "order_by[0]",
        ),
        (
            base(
                json!({"metrics": v(), "dimensions": ["event:page"], "order_by": [["visitors", "desc"], ["visit:source", "asc"]]}),
            ),
            "order_by[1]",
        ),
        (
            base(
                json!({"metrics": v(), "dimensions": ["event:page"], "order_by": [["visitors", "descending"]]}),
            ),
            "order_by[0]",
        ),
        (
            base(json!({"metrics": v(), "dimensions": ["event:page"], "order_by": [["visitors"]]})),
            "order_by[0]",
        ),
        // Filters: shape, operator, dimension, values, modifiers.
        (
            base(json!({"metrics": v(), "filters": ["is"]})),
            "filters[0]",
        ),
        (base(json!({"metrics": v(), "filters": [[]]})), "filters[0]"),
        (
            base(json!({"metrics": v(), "filters": [["equals", "event:page", ["/"]]]})),
            "filters[0][0]",
        ),
        (
            base(json!({"metrics": v(), "filters": [["is", "event:page"]]})),
            "filters[0]",
        ),
        (
            base(json!({"metrics": v(), "filters": [["is", "visit:planet", ["Mars"]]]})),
            "filters[0][1]",
        ),
        (
            base(json!({"metrics": v(), "filters": [["is", "event:props:", ["x"]]]})),
            "filters[0][1]",
        ),
        (
            base(json!({"metrics": v(), "filters": [["is", "time:day", ["2026-11-20"]]]})),
            "filters[0][1]",
        ),
        (
            base(json!({"metrics": v(), "filters": [["is", "event:page", []]]})),
            "filters[0][2]",
        ),
        (
            base(json!({"metrics": v(), "filters": [["is", "event:page", hundred_and_one]]})),
            "filters[0][2]",
        ),
        (
            base(json!({"metrics": v(), "filters": [["is", "event:page", ["x".repeat(2001)]]]})),
            "filters[0][2][0]",
        ),
        (
            base(
                json!({"metrics": v(), "filters": [["is", "event:page", ["/"], {"case_insensitive": true}]]}),
            ),
            "filters[0][3]",
        ),
        (
            base(
                json!({"metrics": v(), "filters": [["contains", "event:page", ["/"], {"case_sensitive": "no"}]]}),
            ),
            "filters[0][3]",
        ),
        (
            base(json!({"metrics": v(), "filters": [["matches", "event:page", ["^/(blog"]]]})),
            "filters[0][2][0]",
        ),
        // A country is its ISO 3166-1 alpha-2 code: "USA" is refused, not an empty answer.
        (
            base(json!({"metrics": v(), "filters": [["is", "visit:country", ["USA"]]]})),
            "filters[0][2][0]",
        ),
        (
            base(json!({"metrics": v(), "filters": [["is_not", "visit:country", ["DE", "FRA"]]]})),
            "filters[0][2][1]",
        ),
        // Logical filters: an empty list, `not` of two.
        (
            base(json!({"metrics": v(), "filters": [["and", []]]})),
            "filters[0]",
        ),
        (
            base(
                json!({"metrics": v(), "filters": [["or", [["is", "visit:source", ["Google"]]], ["is", "visit:source", ["Bing"]]]]}),
            ),
            "filters[0]",
        ),
        // Behavioural filters: event conditions only, not nested.
        (
            base(
                json!({"metrics": v(), "filters": [["has_done", ["is", "visit:source", ["Google"]]]]}),
            ),
            "filters[0]",
        ),
        (
            base(
                json!({"metrics": v(), "filters": [["has_done", ["has_not_done", ["is", "event:name", ["Signup"]]]]]}),
            ),
            "filters[0]",
        ),
        // A goal the site has not configured (this site has none).
        (
            base(json!({"metrics": v(), "filters": [["is", "event:goal", ["Signup"]]]})),
            "filters",
        ),
        // conversion_rate with a custom property filter inside and/or.
        (
            base(
                json!({"metrics": ["conversion_rate"], "dimensions": ["event:goal"],
            "filters": [["or", [["is", "event:props:plan", ["pro"]], ["is", "visit:source", ["Google"]]]]]}),
            ),
            "filters[0][1][0]",
        ),
        // Cost bounds: nesting, number of conditions.
        (
            base(json!({"metrics": v(), "filters": [deep]})),
            "filters[0]",
        ),
        (base(json!({"metrics": v(), "filters": many})), "filters"),
        // Event metrics by a visit's entry page (Plausible's "Event metric(s) cannot be
        // queried along with session dimension(s)"; with event:page as well it allows them).
        (
            base(
                json!({"metrics": ["scroll_depth"], "dimensions": ["visit:entry_page"],
                "filters": [["is", "event:page", ["/"]]]}),
            ),
            "dimensions[0]",
        ),
        // include: unknown key, comparisons with realtime, an unknown comparison mode.
        (
            base(json!({"metrics": v(), "include": {"totals": true}})),
            "`totals`",
        ),
        (
            json!({"site_id": SITE, "metrics": v(), "date_range": "realtime", "include": {"comparisons": {"mode": "previous_period"}}}),
            "include.comparisons",
        ),
        (
            base(json!({"metrics": v(), "include": {"comparisons": {"mode": "last_year"}}})),
            "include.comparisons.mode",
        ),
        // Pagination: bounds, type, unknown key.
        (
            base(
                json!({"metrics": v(), "dimensions": ["event:page"], "pagination": {"limit": 10001}}),
            ),
            "pagination.limit",
        ),
        (
            base(
                json!({"metrics": v(), "dimensions": ["event:page"], "pagination": {"limit": 2.5}}),
            ),
            "pagination.limit",
        ),
        (
            base(
                json!({"metrics": v(), "dimensions": ["event:page"], "pagination": {"limit": "10"}}),
            ),
            "pagination.limit",
        ),
        (
            base(json!({"metrics": v(), "dimensions": ["event:page"], "pagination": {"page": 2}})),
            "pagination.page",
        ),
        (
            base(json!({"metrics": v(), "dimensions": ["event:page"], "pagination": [10, 0]})),
            "pagination",
        ),
    ];
    let mut wrong = Vec::new();
    for (body, field) in &refused {
        let (status, msg) = post(&agg, body).await;
        if status != 400 || !msg.contains(field) {
            wrong.push(format!("{body} → {status} {msg} (want 400 naming {field})"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Each rule's neighbour that Plausible allows still answers (the rule is not wider than
    // Plausible's): an ISO code, a configured goal, a one-name custom property, two pages.
    let goals = json!({"goals": [{"name": "Signup", "event_name": "Signup"}]});
    let r = agg
        .handle(request(
            &format!("/api/v1/sites/{SITE}"),
            "PUT",
            goals.to_string(),
            "application/json",
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for (body, want) in [
        (
            base(json!({"metrics": v(), "filters": [["is", "visit:country", ["US"]]]})),
            json!([6]),
        ),
        (
            base(json!({"metrics": v(), "filters": [["is", "event:goal", ["Signup"]]]})),
            json!([5]),
        ),
        (
            base(
                json!({"metrics": v(), "filters": [["has_done", ["is", "event:name", ["Signup"]]]]}),
            ),
            json!([5]),
        ),
        (
            base(json!({"metrics": ["events"], "filters": [["is", "event:props:plan", ["pro"]]]})),
            json!([5]),
        ),
        (
            base(json!({"metrics": v(), "pagination": {"limit": 10000, "offset": 0}})),
            json!([18]),
        ),
    ] {
        let (status, msg) = post(&agg, &body).await;
        assert_eq!(status, 200, "{body} → {msg}");
        let doc: Value = serde_json::from_str(&msg).unwrap();
        assert_eq!(doc["results"][0]["metrics"], want, "{body} → {doc}");
    }
}
