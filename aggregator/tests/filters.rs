//! Filters of the Stats API against a real ClickHouse on the known dataset: behavioural filters
//! (`has_done`), comparisons, time zones, shares, and the differencing guard.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::*;
use serde_json::{json, Value};

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
