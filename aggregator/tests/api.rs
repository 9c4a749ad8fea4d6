//! The Stats API over HTTP against a real ClickHouse: Plausible's documented request works
//! unchanged, reports come as CSV and as an export zip, invalid queries are a 400 naming the
//! field, hostile strings run as plain values, report queries carry their memory bounds, a
//! question past them (or over too many raw events) is a 400 naming its filters, never
//! ClickHouse's text; `exit_rate` answers as Plausible's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use bytes::Bytes;
use chrono::Utc;
use common::*;
use http::Request;
use serde_json::{json, Value};
use veil_aggregator::{db, Aggregator, AggregatorConfig};
use veil_schemas::sql::Sql;

/// The example request of Plausible's Stats API v2 reference (curl with a Bearer token, a
/// `site_id`, `visitors`, `7d`), sent unchanged. Its events are two days old: `7d` is the
/// seven whole days before today.
#[tokio::test]
async fn the_plausible_docs_example_request_works_unchanged() {
    let ch = veil_schemas::testing::fresh_database("stats_docs").await;
    let now = Utc::now().naive_utc();
    let at: &'static str = Box::leak(
        (now - chrono::Duration::hours(48))
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
            privacy: veil_aggregator::privacy::Settings::exact(),
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

#[tokio::test]
async fn reports_come_as_csv_and_as_an_export_zip() {
    let ch = veil_schemas::testing::fresh_database("stats_csv").await;
    seed(&ch).await;
    // Through HTTP: CSV, export zip.
    let agg = stats_aggregator(&ch);
    let call = request;
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
}

#[tokio::test]
async fn an_invalid_query_is_a_400_naming_the_field() {
    let ch = veil_schemas::testing::fresh_database("stats_bad").await;
    seed(&ch).await;
    let agg = stats_aggregator(&ch);
    let call = request;
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
    // Plausible's rules, refused instead of an empty 200: a country name where a code goes,
    // time labels without a time dimension.
    bad(
        base(json!({"metrics": ["visitors"], "filters": [["is", "visit:country", ["Germany"]]]})),
        "filters[0][2][0]",
    )
    .await;
    // (The unknown country, stored as "", is a value a filter may name.)
    let (s, v) = post_query(
        &agg,
        &base(json!({"metrics": ["visitors"], "filters": [["is", "visit:country", [""]]]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    bad(
        base(json!({"metrics": ["visitors"], "include": {"time_labels": true}})),
        "include.time_labels",
    )
    .await;
}

#[tokio::test]
async fn hostile_strings_in_a_query_run_as_plain_values() {
    let ch = veil_schemas::testing::fresh_database("stats_hostile").await;
    seed(&ch).await;
    let s = site();
    let agg = stats_aggregator(&ch);
    let call = request;
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
                // A country is a two-letter code: anything else is a 400 naming the filter.
                let want = if dim == "visit:country" && op.starts_with("is") {
                    400
                } else {
                    200
                };
                assert_eq!(r.status(), want, "{body}");
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

/// The status and parsed JSON body of a query sent over HTTP.
async fn post_query(agg: &Aggregator, body: &Value) -> (u16, Value) {
    let r = agg
        .handle(request("/api/v2/query", "POST", body.to_string(), "*/*"))
        .await
        .unwrap();
    let status = r.status().as_u16();
    let b = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, serde_json::from_slice(&b).unwrap())
}

#[tokio::test]
async fn report_queries_carry_their_memory_bounds() {
    let ch = veil_schemas::testing::fresh_database("stats_bounds").await;
    let agg = Aggregator::new(
        AggregatorConfig {
            sites: vec![SITE.into()],
            query_memory_mb: 1536,
            privacy: veil_aggregator::privacy::Settings::exact(),
            ..Default::default()
        },
        ch.clone(),
    );
    // ClickHouse (18.16 here) takes every setting the report client sends, as sent.
    let rows = db::fetch(
        agg.client(),
        &Sql::new("SELECT name, value FROM system.settings WHERE name IN ('max_execution_time', 'max_memory_usage', 'max_bytes_before_external_group_by', 'max_bytes_before_external_sort') ORDER BY name"),
    )
    .await
    .unwrap();
    let mib = 1024 * 1024_u64;
    assert_eq!(
        rows,
        vec![
            json!([
                "max_bytes_before_external_group_by",
                (512 * mib).to_string()
            ]),
            json!(["max_bytes_before_external_sort", (512 * mib).to_string()]),
            json!([
                "max_execution_time",
                veil_aggregator::MAX_EXECUTION_SECS.to_string()
            ]),
            json!(["max_memory_usage", (1536 * mib).to_string()]),
        ]
    );
}

#[tokio::test]
async fn a_big_group_by_spills_to_disk_within_the_budget() {
    let ch = veil_schemas::testing::fresh_database("stats_spill").await;
    // Distinct pages enough that their GROUP BY needs clearly more than the budget in memory
    // without spilling, and passes within it when it spills. Measured on 18.16 (query log,
    // 2026-12-06): two million need ~370 MiB without spilling and peak at 77–86 MiB when they
    // spill past a third of 192 MiB (five runs); a million against 96 MiB peaked at 63–106 MiB
    // spilled, by how the two threads' tables fell, and once failed in a loaded rehearsal.
    // ClickHouse 26.9 needs ~26 MiB a million without spilling, so eight million (~208 MiB)
    // against 160 MiB: four million against 96 MiB (~104 MiB) was too close — the spilled
    // question once went over 96 MiB in a loaded run. Eight million on 18.16 would cost
    // minutes for nothing.
    let version = veil_schemas::sql::ServerVersion::of(&ch.client())
        .await
        .unwrap();
    let (n, mib): (u64, u64) = if version.is_legacy() {
        (2_000_000, 192)
    } else {
        (8_000_000, 160)
    };
    let fill = veil_schemas::sql!(
        "INSERT INTO events (site, timestamp, name, pathname, visitor_id) \
         SELECT 'shop.example', toDateTime('2026-11-20 00:00:00', 'UTC') + number % 86400, 'pageview', \
         concat('/some/longer/path/', toString(number)), \
         toFixedString(substring(concat(toString(number % 300000), '-padding-padding'), 1, 16), 16) \
         FROM system.numbers LIMIT {}",
        n
    );
    db::exec(&ch.client(), &fill).await.unwrap();
    let pages = Sql::new(
        "SELECT count(), sum(c) FROM (SELECT pathname, count() AS c FROM events GROUP BY pathname)",
    );
    let budget = db::QueryBudget::mib(mib);
    let bounded = db::report_client(&ch, budget);
    let rows = db::fetch(&bounded, &pages).await.unwrap();
    assert_eq!(rows, vec![json!([n.to_string(), n.to_string()])]);
    // The same memory limit without spilling: ClickHouse stops it, and that is a TooExpensive.
    let unspilled = ch
        .client()
        .with_setting("max_memory_usage", budget.memory_bytes.to_string());
    match db::fetch(&unspilled, &pages).await {
        Err(veil_aggregator::Error::TooExpensive {
            code: Some(241), ..
        }) => {}
        other => panic!("expected MEMORY_LIMIT_EXCEEDED, got {other:?}"),
    }
}

/// 120 000 events of 6 000 visitors over 2026-11-20, 20 pages each, a tenth of the hits on
/// `/pricing` (600 visitors, all from Google, as are half of all visitors): enough that a filtered report over raw events
/// needs more than a few MiB.
async fn many_events(ch: &veil_schemas::ClickHouseConfig) {
    let q = Sql::new(
        "INSERT INTO events (site, timestamp, name, pathname, hostname, visitor_id, source, channel, country_code, device, browser) \
         SELECT 'shop.example', toDateTime('2026-11-20 00:00:00', 'UTC') + intDiv(number, 6000) * 60 + number % 60, 'pageview', \
         if(number % 10 = 0, '/pricing', concat('/p', toString(intDiv(number, 6000)))), 'shop.example', \
         toFixedString(substring(concat(toString(number % 6000), '-visitor-padding'), 1, 16), 16), \
         if(number % 2 = 0, 'Google', ''), if(number % 2 = 0, 'Organic Search', 'Direct'), 'DE', 'Desktop', 'Chrome' \
         FROM system.numbers LIMIT 120000",
    );
    db::exec(&ch.client(), &q).await.unwrap();
}

#[tokio::test]
async fn a_question_past_the_memory_budget_is_a_400_naming_its_filters() {
    let ch = veil_schemas::testing::fresh_database("stats_too_expensive").await;
    many_events(&ch).await;
    // A page filter with a visit metric and a visit dimension: answered from raw events.
    let body = base(json!({
        "metrics": ["visitors", "visits", "bounce_rate", "visit_duration"],
        "dimensions": ["visit:source"],
        "filters": [["is", "event:page", ["/pricing"]], ["is", "visit:source", ["Google"]]],
    }));
    let tiny = Aggregator::new(
        AggregatorConfig {
            sites: vec![SITE.into()],
            query_memory_mb: 2,
            privacy: veil_aggregator::privacy::Settings::exact(),
            ..Default::default()
        },
        ch.clone(),
    );
    let (status, doc) = post_query(&tiny, &body).await;
    assert_eq!(status, 400, "{doc}");
    let msg = doc["error"].as_str().unwrap();
    for part in [
        "too expensive",
        r#"event:page is "/pricing" AND visit:source is "Google""#,
        "dimensions visit:source",
        "over 1 day: 2026-11-20 to 2026-11-20",
        "shorter period or fewer filters",
    ] {
        assert!(msg.contains(part), "{part:?} missing from {msg}");
    }
    for raw in ["Code:", "DB::Exception", "Memory limit", "SELECT"] {
        assert!(!msg.contains(raw), "{raw:?} leaked into {msg}");
    }
    // The same question within the default budget is answered.
    let (status, doc) = post_query(&stats_aggregator(&ch), &body).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["results"][0]["dimensions"], json!(["Google"]), "{doc}");
    assert_eq!(doc["results"][0]["metrics"][0], json!(600), "{doc}");
}

#[tokio::test]
async fn a_failing_database_is_a_502_without_its_text() {
    let ch = veil_schemas::testing::fresh_database("stats_db_fails").await;
    seed(&ch).await;
    let agg = stats_aggregator(&ch);
    // The table a report reads is gone: ClickHouse answers an error quoting the table.
    db::exec(&ch.client(), &Sql::new("DROP TABLE events"))
        .await
        .unwrap();
    let (status, doc) = post_query(
        &agg,
        &base(
            json!({"metrics": ["visitors"], "filters": [["is", "event:page", ["/secret-page"]]]}),
        ),
    )
    .await;
    assert_eq!(status, 502, "{doc}");
    assert_eq!(
        doc["error"],
        json!(veil_aggregator::CLICKHOUSE_FAILED),
        "{doc}"
    );
}

#[tokio::test]
async fn a_raw_question_over_too_many_events_is_refused_before_it_runs() {
    let ch = veil_schemas::testing::fresh_database("stats_preflight").await;
    many_events(&ch).await;
    let s = site();
    let client = ch.client();
    let body = base(json!({
        "metrics": ["visitors", "bounce_rate"],
        "filters": [["is", "event:page", ["/pricing"]]],
    }));
    let parsed = veil_aggregator::query::parse(body.to_string().as_bytes(), &s, now()).unwrap();
    let pre = |ceiling: u64| {
        let (client, parsed, s) = (client.clone(), parsed.clone(), s.clone());
        async move {
            veil_aggregator::stats::preflight(&client, &parsed, ceiling)
                .await
                .map_err(veil_aggregator::stats::too_expensive(&parsed, &s))
        }
    };
    pre(120_000).await.unwrap();
    match pre(119_999).await {
        Err(veil_aggregator::Error::TooExpensive {
            code: None,
            message,
        }) => {
            assert!(
                message.contains(r#"filters event:page is "/pricing""#),
                "{message}"
            );
            assert!(message.contains("shorter period"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Another site's events on the same day pass the partitions' count, not the site's own.
    db::exec(
        &client,
        &Sql::new(
            "INSERT INTO events (site, timestamp, name, pathname, visitor_id) \
             SELECT 'other.example', toDateTime('2026-11-20 12:00:00', 'UTC'), 'pageview', '/', \
             toFixedString('other-visitor-00', 16) FROM system.numbers LIMIT 50000",
        ),
    )
    .await
    .unwrap();
    pre(150_000).await.unwrap();
    assert!(pre(100_000).await.is_err());
    // A range with no events is never refused.
    let empty = json!({"site_id": SITE, "date_range": ["2026-11-21", "2026-11-22"], "metrics": ["visitors", "bounce_rate"], "filters": [["is", "event:page", ["/pricing"]]]});
    let empty = veil_aggregator::query::parse(empty.to_string().as_bytes(), &s, now()).unwrap();
    veil_aggregator::stats::preflight(&client, &empty, 0)
        .await
        .unwrap();
    // Under the real ceiling the question is answered.
    let (status, doc) = post_query(&stats_aggregator(&ch), &body).await;
    assert_eq!(status, 200, "{doc}");
}

/// `"all"` covers the site's data (it answered `null` totals when it meant "since 2000"):
/// the same numbers as the explicit range from the site's first day, through the HTTP API.
#[tokio::test]
async fn all_time_covers_the_sites_data() {
    let ch = veil_schemas::testing::fresh_database("stats_all").await;
    seed(&ch).await;
    let agg = stats_aggregator(&ch);
    let (s, all) = post_query(
        &agg,
        &json!({"site_id": SITE, "metrics": ["visitors", "pageviews"], "date_range": "all"}),
    )
    .await;
    assert_eq!(s, 200, "{all}");
    // 23 visitors, 35 pageviews on 2026-11-19 and -20 (tests/common's dataset).
    assert_eq!(all["results"][0]["metrics"], json!([23, 35]), "{all}");
    assert!(
        all["query"]["date_range"][0]
            .as_str()
            .unwrap()
            .starts_with("2026-11-19"),
        "{all}"
    );
    let (_, series) = post_query(
        &agg,
        &json!({"site_id": SITE, "metrics": ["visitors"], "date_range": "all", "dimensions": ["time:day"]}),
    )
    .await;
    assert_eq!(
        series["results"][0]["dimensions"][0], "2026-11-19",
        "{series}"
    );
}

/// The answer's `query` is the normalised question (Plausible's echo): posting it back gives
/// the same answer; `include.imports` is accepted with a warning (no imported data yet).
#[tokio::test]
async fn the_query_echo_asks_the_same_question_again() {
    let ch = veil_schemas::testing::fresh_database("stats_echo").await;
    seed(&ch).await;
    let agg = stats_aggregator(&ch);
    let q = json!({"site_id": SITE, "metrics": ["visitors", "pageviews"], "date_range": ["2026-11-19", "2026-11-20"],
        "dimensions": ["event:page"], "filters": [["is_not", "visit:country", ["FR"]]],
        "order_by": [["pageviews", "desc"]], "include": {"total_rows": true, "imports": true},
        "pagination": {"limit": 2, "offset": 0}});
    let (s, first) = post_query(&agg, &q).await;
    assert_eq!(s, 200, "{first}");
    let echo = first["query"].clone();
    assert_eq!(echo["filters"], q["filters"], "{echo}");
    assert_eq!(echo["order_by"], json!([["pageviews", "desc"]]), "{echo}");
    assert_eq!(
        echo["pagination"],
        json!({"limit": 2, "offset": 0}),
        "{echo}"
    );
    assert_eq!(
        echo["date_range"],
        json!(["2026-11-19T00:00:00+00:00", "2026-11-20T23:59:59+00:00"]),
        "{echo}"
    );
    assert_eq!(first["meta"]["imports_included"], false);
    assert!(first["meta"]["imports_warning"].is_string(), "{first}");
    let (s, again) = post_query(&agg, &echo).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["results"], first["results"]);
    assert_eq!(again["query"], echo);
}

/// Revenue as Plausible answers it: in the currency of the site's revenue goals, in its money
/// shape; `null` with a warning when no revenue goal matches or the goals selected have
/// several currencies; revenue sent in another currency than its goal's is not counted (Veil
/// converts none). Exact mode (the known dataset: 5 sign-ups of 10.50 EUR).
#[tokio::test]
async fn revenue_is_in_its_goals_currency_in_plausibles_money_shape() {
    let ch = veil_schemas::testing::fresh_database("stats_revenue").await;
    seed(&ch).await;
    // A sign-up paid in dollars: not in the Signup goal's currency, so never counted.
    insert(
        &ch,
        SITE,
        &[Ev {
            revenue_micros: 99_000_000,
            currency: "USD",
            ..ev("A0".into(), "2026-11-20 10:04:00", "Signup", "/pricing")
        }],
    )
    .await;
    let eur = json!({"value": 52.5, "currency": "EUR", "long": "€52.50", "short": "€52.5"});
    let s = site();
    // One revenue goal: every revenue cell is in its currency, with or without a goal filter.
    for filters in [json!([["is", "event:goal", ["Signup"]]]), json!([])] {
        let d = q(
            &ch,
            &s,
            base(json!({"metrics": ["total_revenue", "average_revenue"], "filters": filters})),
        )
        .await;
        assert_eq!(d["results"][0]["metrics"][0], eur, "{d}");
        assert_eq!(d["results"][0]["metrics"][1]["long"], "€10.50", "{d}");
        assert!(d["meta"].get("metric_warnings").is_none(), "{d}");
    }
    // By goal: each goal row in its own goal's currency; goals without revenue are null.
    let d = q(
        &ch,
        &s,
        base(json!({"metrics": ["visitors", "total_revenue"], "dimensions": ["event:goal"]})),
    )
    .await;
    for r in d["results"].as_array().unwrap() {
        let want = if r["dimensions"][0] == "Signup" {
            eur.clone()
        } else {
            Value::Null
        };
        assert_eq!(r["metrics"][1], want, "{d}");
    }
    // The CSV carries the number.
    let (q2, doc) = veil_aggregator::stats::run(
        &ch.client(),
        &s,
        base(json!({"metrics": ["total_revenue"], "filters": [["is", "event:goal", ["Signup"]]]}))
            .to_string()
            .as_bytes(),
        now(),
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        veil_aggregator::stats::to_csv(&q2, &doc),
        "total_revenue\r\n52.5\r\n"
    );

    // No revenue goal: null, and the warning says why.
    let mut plain = site();
    plain.goals[0].currency = None;
    let d = q(&ch, &plain, base(json!({"metrics": ["visitors", "total_revenue"], "filters": [["is", "event:goal", ["Signup"]]]}))).await;
    assert_eq!(d["results"][0]["metrics"], json!([5, null]), "{d}");
    assert_eq!(
        d["meta"]["metric_warnings"]["total_revenue"]["code"], "no_revenue_goals_matching",
        "{d}"
    );

    // Two currencies among the goals selected: no single total (null, warned); by goal, each.
    let mut two = site();
    two.goals[1] = veil_aggregator::site::Goal {
        name: "Donation".into(),
        event_name: Some("Donation".into()),
        page_path: None,
        currency: Some("USD".into()),
    };
    let d = q(&ch, &two, base(json!({"metrics": ["total_revenue"]}))).await;
    assert_eq!(d["results"][0]["metrics"], json!([null]), "{d}");
    assert_eq!(
        d["meta"]["metric_warnings"]["total_revenue"]["code"], "no_single_revenue_currency",
        "{d}"
    );
    let d = q(
        &ch,
        &two,
        base(json!({"metrics": ["total_revenue"], "filters": [["is", "event:goal", ["Signup"]]]})),
    )
    .await;
    assert_eq!(d["results"][0]["metrics"][0], eur, "{d}");
    let d = q(
        &ch,
        &two,
        base(json!({"metrics": ["visitors", "total_revenue"], "dimensions": ["event:goal"]})),
    )
    .await;
    let signup = d["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dimensions"][0] == "Signup")
        .unwrap();
    assert_eq!(signup["metrics"][1], eur, "{d}");
}

/// Asks `q`, then asks the answer's `query` (Plausible's echo: the normalised question) and
/// checks it gives the same results and meta, and echoes itself. Returns the first answer.
async fn echo_round_trip(agg: &Aggregator, q: &Value) -> Value {
    let (s, first) = post_query(agg, q).await;
    assert_eq!(s, 200, "{q} → {first}");
    let echo = first["query"].clone();
    assert_eq!(echo["site_id"], SITE, "{first}");
    let (s, again) = post_query(agg, &echo).await;
    assert_eq!(s, 200, "{echo} → {again}");
    assert_eq!(again["results"], first["results"], "{q}\n{echo}");
    assert_eq!(again["query"], echo, "{q}");
    for k in ["time_labels", "comparison_date_range", "total_rows"] {
        assert_eq!(again["meta"][k], first["meta"][k], "{k}: {first}\n{again}");
    }
    first
}

/// The echo round trip for each kind of question whose echo is rewritten: a relative window
/// (`7d` on a fixed clock, resolved to its datetimes, so the echo still asks the same days
/// after the clock moves on), `all` (resolved from the site's first day), a time dimension
/// with labels, a previous-period comparison, a site in another time zone (the echo's offsets
/// are the zone's), and dp mode (the echo is the same question: answered as repeated, with the
/// same noisy numbers and nothing more spent).
#[tokio::test]
async fn every_rewritten_echo_asks_the_same_question_again() {
    let ch = veil_schemas::testing::fresh_database("stats_echo_all").await;
    seed(&ch).await;
    // 2026-11-21 12:00 UTC: `7d` is 11-14 ..= 11-20, the dataset's two days.
    let clock = veil_aggregator::ManualClock::new(
        chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 21, 12, 0, 0).unwrap(),
    );
    let agg = stats_aggregator(&ch).with_clock(clock.clone());
    let q = |extra: Value| {
        let mut b = json!({"site_id": SITE, "metrics": ["visitors", "pageviews"]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };

    let first = echo_round_trip(&agg, &q(json!({"date_range": "7d"}))).await;
    assert_eq!(first["results"][0]["metrics"], json!([23, 35]), "{first}");
    assert_eq!(
        first["query"]["date_range"],
        json!(["2026-11-14T00:00:00+00:00", "2026-11-20T23:59:59+00:00"]),
        "{first}"
    );
    // A week later `7d` means other days (none of the data); the echo still the same ones.
    clock.advance(std::time::Duration::from_secs(7 * 86_400));
    let (_, later) = post_query(&agg, &q(json!({"date_range": "7d"}))).await;
    assert_ne!(later["results"], first["results"], "{later}");
    let (_, echoed) = post_query(&agg, &first["query"]).await;
    assert_eq!(echoed["results"], first["results"], "{echoed}");

    let first = echo_round_trip(&agg, &q(json!({"date_range": "all"}))).await;
    assert_eq!(first["results"][0]["metrics"], json!([23, 35]), "{first}");
    assert_eq!(
        first["query"]["date_range"][0], "2026-11-19T00:00:00+00:00",
        "all starts on the first day with data: {first}"
    );

    let first = echo_round_trip(
        &agg,
        &q(
            json!({"date_range": ["2026-11-19", "2026-11-20"], "dimensions": ["time:day"],
            "include": {"time_labels": true, "total_rows": true}}),
        ),
    )
    .await;
    assert_eq!(
        rows(&first),
        vec![
            (vec!["2026-11-19".to_string()], vec![json!(5), json!(5)]),
            (vec!["2026-11-20".to_string()], vec![json!(18), json!(30)]),
        ],
        "{first}"
    );
    assert_eq!(first["query"]["dimensions"], json!(["time:day"]), "{first}");

    let first = echo_round_trip(
        &agg,
        &q(json!({"date_range": ["2026-11-20", "2026-11-20"],
            "include": {"comparisons": {"mode": "previous_period"}}})),
    )
    .await;
    assert_eq!(
        first["results"][0]["comparison"]["metrics"],
        json!([5, 5]),
        "{first}"
    );
    assert_eq!(
        first["query"]["include"]["comparisons"],
        json!({"mode": "previous_period"}),
        "{first}"
    );

    // Auckland (UTC+13): the local 21st holds the UTC afternoon of the 20th (B at 12:00 and
    // 14:00 UTC, C at 15:00 UTC; A's 10:00 UTC is 23:00 on the local 20th).
    let r = agg
        .handle(request(
            &format!("/api/v1/sites/{SITE}"),
            "PUT",
            json!({"timezone": "Pacific/Auckland"}).to_string(),
            "application/json",
        ))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = echo_round_trip(
        &agg,
        &q(json!({"date_range": ["2026-11-21", "2026-11-21"], "dimensions": ["time:hour"]})),
    )
    .await;
    assert_eq!(
        first["query"]["date_range"],
        json!(["2026-11-21T00:00:00+13:00", "2026-11-21T23:59:59+13:00"]),
        "{first}"
    );
    assert_eq!(
        rows(&first)[0],
        (
            vec!["2026-11-21 01:00:00".to_string()],
            vec![json!(6), json!(6)]
        ),
        "{first}"
    );

    // dp mode (in the site's Auckland zone): the same key asking the echo asks the same
    // question.
    let dp = Aggregator::new(
        AggregatorConfig {
            sites: vec![SITE.into()],
            ..Default::default()
        },
        ch.clone(),
    );
    // The stored settings (the Auckland zone) before the first question, as at start-up.
    dp.registry().refresh().await.unwrap();
    for body in [
        // A total is always a row (a noisy number), so the equality below is not of nothing.
        q(json!({"date_range": ["2026-11-19", "2026-11-20"]})),
        q(json!({"date_range": ["2026-11-19", "2026-11-20"], "dimensions": ["event:page"]})),
        q(json!({"date_range": ["2026-11-19", "2026-11-20"], "dimensions": ["time:day"]})),
    ] {
        let (s, first) = post_query(&dp, &body).await;
        assert_eq!(s, 200, "{first}");
        assert_eq!(first["meta"]["privacy"]["mode"], "dp", "{first}");
        if first["query"]["dimensions"] == json!([]) {
            assert!(first["results"][0]["metrics"][0].is_number(), "{first}");
        }
        assert_eq!(first["meta"]["privacy"]["repeated"], false, "{first}");
        let (s, again) = post_query(&dp, &first["query"]).await;
        assert_eq!(s, 200, "{again}");
        assert_eq!(again["results"], first["results"], "{first}\n{again}");
        assert_eq!(again["meta"]["privacy"]["repeated"], true, "{again}");
        assert_eq!(again["meta"]["privacy"]["epsilon"], 0.0, "{again}");
        assert_eq!(again["query"], first["query"]);
    }
}

/// `exit_rate` as Plausible's: each exit page's exits ÷ that page's pageviews, the pageviews
/// counted under the query's filters but those on the exit page (Plausible's own test cases,
/// with Veil's visits: a visit ends after 30 minutes without a hit).
#[tokio::test]
async fn exit_rate_is_a_pages_exits_over_its_pageviews_as_plausibles() {
    let ch = veil_schemas::testing::fresh_database("stats_exit_rate").await;
    let v = |n: u32| format!("exit-visitor{n:04}");
    let evs = vec![
        // 2026-11-20: one visit /one → /two (exits on /two); one /one → /never-exit → an
        // event on /one → /one (exits on /one).
        ev(v(1), "2026-11-20 10:00:00", "pageview", "/one"),
        ev(v(1), "2026-11-20 10:10:00", "pageview", "/two"),
        ev(v(3), "2026-11-20 10:00:00", "pageview", "/one"),
        ev(v(3), "2026-11-20 10:00:30", "pageview", "/never-exit"),
        ev(v(3), "2026-11-20 10:01:00", "a", "/one"),
        ev(v(3), "2026-11-20 10:10:00", "pageview", "/one"),
        // 2026-11-21: two visits of /one alone; one /one → /two.
        ev(v(4), "2026-11-21 10:00:00", "pageview", "/one"),
        ev(v(5), "2026-11-21 10:00:00", "pageview", "/one"),
        ev(v(6), "2026-11-21 10:00:00", "pageview", "/one"),
        ev(v(6), "2026-11-21 10:10:00", "pageview", "/two"),
    ];
    insert(&ch, SITE, &evs).await;
    let mut s = site();
    s.min_visitors = 1;
    let ask = |day: &str, filters: Value| {
        json!({"site_id": SITE, "metrics": ["exit_rate", "visits"], "dimensions": ["visit:exit_page"],
               "date_range": [day, day], "filters": filters, "order_by": [["visit:exit_page", "desc"]]})
    };
    let d = q(&ch, &s, ask("2026-11-20", json!([]))).await;
    assert_eq!(
        rows(&d),
        vec![
            (vec!["/two".to_string()], vec![json!(100), json!(1)]),
            (vec!["/one".to_string()], vec![json!(33.3), json!(1)]),
        ],
        "{d}"
    );
    // Filtered by the exit page: the page's pageviews of every visit count below the line.
    let d = q(
        &ch,
        &s,
        ask("2026-11-21", json!([["is", "visit:exit_page", ["/one"]]])),
    )
    .await;
    assert_eq!(
        rows(&d),
        vec![(vec!["/one".to_string()], vec![json!(66.7), json!(2)])],
        "{d}"
    );
    // Only by the exit page, and its filters only at the top level.
    for (body, says) in [
        (
            json!({"site_id": SITE, "metrics": ["exit_rate"], "date_range": ["2026-11-20", "2026-11-20"]}),
            "exit_rate needs a visit:exit_page dimension",
        ),
        (
            ask(
                "2026-11-21",
                json!([[
                    "or",
                    [
                        ["is", "visit:exit_page", ["/one"]],
                        ["is", "visit:source", ["Google"]]
                    ]
                ]]),
            ),
            "visit:exit_page filters must be at the top level",
        ),
    ] {
        let e = veil_aggregator::stats::run(
            &ch.client(),
            &s,
            body.to_string().as_bytes(),
            now(),
            Default::default(),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains(says), "{body}: {e}");
    }
}
