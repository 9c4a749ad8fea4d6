//! Imported history against a real ClickHouse: the fixture export made by
//! `testing/plausible/make_export.py` (Plausible's CSV export format, 2026-11-18 to
//! 2026-11-20) imported into the site of the shared dataset (`common::seed`: Veil's own
//! events on 2026-11-19 and 2026-11-20), then asked through the Stats API with
//! `include.imports: true`. Exact mode (numbers compared exactly) unless a test says dp.
//!
//! Veil's own numbers over 2026-11-18..20 (common::seed): 23 visitors, 29 visits,
//! 35 pageviews, 23 bounces, 960 s of visits; by source Google 10, Hacker News 2. The
//! export's: 230 visitors, 270 visits, 550 pageviews, 90 bounces, 13 500 s; by source
//! Google 138, Hacker News 23, Newsletter 23; Signup 15 visitors and 18 events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::Write;

use common::{q, rows, seed, site, SITE};
use serde_json::{json, Value};
use veil_aggregator::imports;
use veil_schemas::sql;
use veil_schemas::sql::lit;
use veil_schemas::ClickHouseConfig;

const EXPORT: &[u8] = include_bytes!("../../testing/plausible/export.zip");
const RANGE: [&str; 2] = ["2026-11-18", "2026-11-20"];

async fn seeded(label: &str) -> ClickHouseConfig {
    let ch = veil_schemas::testing::fresh_database(label).await;
    seed(&ch).await;
    ch
}

async fn import(ch: &ClickHouseConfig) -> imports::Outcome {
    imports::import_plausible(ch, SITE, "plausible-export.zip", EXPORT)
        .await
        .unwrap()
}

async fn ask(ch: &ClickHouseConfig, body: Value) -> Value {
    let mut b = json!({"site_id": SITE, "date_range": RANGE});
    for (k, v) in body.as_object().unwrap() {
        b[k] = v.clone();
    }
    q(ch, &site(), b).await
}

fn totals(doc: &Value) -> Vec<Value> {
    rows(doc)[0].1.clone()
}

const METRICS: [&str; 6] = [
    "visitors",
    "visits",
    "pageviews",
    "bounce_rate",
    "visit_duration",
    "views_per_visit",
];

#[tokio::test]
async fn imported_totals_are_added_to_veils_own() {
    let ch = seeded("imports_totals").await;
    let out = import(&ch).await;
    assert!(!out.already);
    assert_eq!(out.import.start_date, "2026-11-18");
    assert_eq!(out.import.end_date, "2026-11-20");
    assert_eq!(out.files.len(), 10, "{:?}", out.files);
    let own = ask(&ch, json!({"metrics": METRICS})).await;
    assert_eq!(
        totals(&own),
        vec![
            json!(23),
            json!(29),
            json!(35),
            json!(79),
            json!(33),
            json!(1.21)
        ],
        "{own}"
    );
    assert_eq!(own["meta"]["imports_included"], false);
    let both = ask(
        &ch,
        json!({"metrics": METRICS, "include": {"imports": true}}),
    )
    .await;
    // 253 visitors, 299 visits, 585 pageviews; bounce rate (23 + 90) / 299 = 37.8 %;
    // duration (960 + 13 500) / 299 = 48.4 s; views per visit 585 / 299 = 1.96.
    assert_eq!(
        totals(&both),
        vec![
            json!(253),
            json!(299),
            json!(585),
            json!(38),
            json!(48),
            json!(1.96)
        ],
        "{both}"
    );
    assert_eq!(both["meta"]["imports_included"], true, "{both}");
    assert!(both["meta"].get("imports_skip_reason").is_none(), "{both}");
    assert_eq!(both["query"]["include"]["imports"], true);
}

#[tokio::test]
async fn a_breakdown_by_source_sums_both_per_source() {
    let ch = seeded("imports_sources").await;
    import(&ch).await;
    let doc = ask(
        &ch,
        json!({"metrics": ["visitors", "visits"], "dimensions": ["visit:source"],
               "include": {"imports": true}}),
    )
    .await;
    let by: std::collections::HashMap<String, Vec<Value>> = rows(&doc)
        .into_iter()
        .map(|(d, m)| (d[0].clone(), m))
        .collect();
    // Google: 10 of Veil's (10 visits) + 138 imported (162 visits).
    assert_eq!(by["Google"], vec![json!(148), json!(172)], "{doc}");
    // Hacker News: 2 of Veil's, under k = 5 alone, shown once the sum reaches it.
    assert_eq!(by["Hacker News"], vec![json!(25), json!(29)], "{doc}");
    assert_eq!(by["Newsletter"], vec![json!(23), json!(27)], "{doc}");
    // Direct visits: Plausible exports an empty source, Veil says `Direct / None` for both:
    // 11 of Veil's (B0–B5, D0–D4: 17 visits) + 46 imported (54 visits).
    assert_eq!(by["Direct / None"], vec![json!(57), json!(71)], "{doc}");
    assert!(!by.contains_key(""), "{doc}");
    // A percentage is of the merged total: Google 148 of 253.
    let pct = ask(
        &ch,
        json!({"metrics": ["visitors", "percentage"], "dimensions": ["visit:source"],
               "include": {"imports": true}}),
    )
    .await;
    assert_eq!(
        rows(&pct)[0],
        (vec!["Google".to_string()], vec![json!(148), json!(58.5)]),
        "{pct}"
    );
    // Ordered by visitors, descending.
    assert_eq!(rows(&doc)[0].0, vec!["Google".to_string()]);
    // A filter on the same kind of row keeps only it.
    let f = ask(
        &ch,
        json!({"metrics": ["visitors"], "filters": [["is", "visit:source", ["Google"]]],
               "include": {"imports": true}}),
    )
    .await;
    assert_eq!(totals(&f), vec![json!(148)], "{f}");
    assert_eq!(f["meta"]["imports_included"], true);
    let d = ask(
        &ch,
        json!({"metrics": ["visitors"], "filters": [["is", "visit:source", ["Direct / None"]]],
               "include": {"imports": true}}),
    )
    .await;
    assert_eq!(totals(&d), vec![json!(57)], "{d}");
}

#[tokio::test]
async fn time_series_and_goals_merge_by_day_and_by_goal() {
    let ch = seeded("imports_series").await;
    import(&ch).await;
    let doc = ask(
        &ch,
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["time:day"],
               "include": {"imports": true}}),
    )
    .await;
    assert_eq!(
        rows(&doc),
        vec![
            (vec!["2026-11-18".to_string()], vec![json!(100), json!(250)]),
            (vec!["2026-11-19".to_string()], vec![json!(85), json!(205)]),
            (vec!["2026-11-20".to_string()], vec![json!(68), json!(130)]),
        ],
        "{doc}"
    );
    // Goals completed by a custom event: Signup, 5 of Veil's visitors and events + 15 and 18.
    let g = ask(
        &ch,
        json!({"metrics": ["visitors", "events"], "dimensions": ["event:goal"],
               "filters": [["is", "event:goal", ["Signup"]]], "include": {"imports": true}}),
    )
    .await;
    assert_eq!(
        rows(&g),
        vec![(vec!["Signup".to_string()], vec![json!(20), json!(23)])],
        "{g}"
    );
    // Unfiltered, goals completed by a pageview count the imported pages their pattern
    // matches too: Pricing (`/pricing`) 69 visitors and 165 pageviews imported, Blog
    // (`/blog/*`) 46 and 110; Veil's own are what the same question without imports says.
    let body = json!({"metrics": ["visitors", "events"], "dimensions": ["event:goal"]});
    let own = ask(&ch, body.clone()).await;
    let mut with = body.clone();
    with["include"] = json!({"imports": true});
    let both = ask(&ch, with).await;
    let of = |doc: &Value, goal: &str| -> Vec<i64> {
        rows(doc)
            .into_iter()
            .find(|(d, _)| d[0] == goal)
            .map(|(_, m)| m.iter().map(|v| v.as_i64().unwrap()).collect())
            .unwrap_or_else(|| vec![0, 0])
    };
    let (p, b, s) = (of(&own, "Pricing"), of(&own, "Blog"), of(&own, "Signup"));
    assert_eq!(p[0], 6, "{own}");
    assert_eq!(of(&both, "Pricing"), vec![p[0] + 69, p[1] + 165], "{both}");
    assert_eq!(of(&both, "Blog"), vec![b[0] + 46, b[1] + 110], "{both}");
    assert_eq!(of(&both, "Signup"), vec![s[0] + 15, s[1] + 18], "{both}");
    // A week bucket starts no earlier than the range, imported days included.
    let w = ask(
        &ch,
        json!({"metrics": ["visitors"], "dimensions": ["time:week"], "include": {"imports": true}}),
    )
    .await;
    assert_eq!(
        rows(&w),
        vec![(vec!["2026-11-18".to_string()], vec![json!(253)])],
        "{w}"
    );
}

#[tokio::test]
async fn questions_imports_cannot_answer_say_why() {
    let ch = seeded("imports_unsupported").await;
    let none = ask(
        &ch,
        json!({"metrics": ["visitors"], "include": {"imports": true}}),
    )
    .await;
    assert_eq!(none["meta"]["imports_included"], false);
    assert_eq!(
        none["meta"]["imports_skip_reason"], "no_imported_data",
        "{none}"
    );
    // A question imports could not answer anyway says the same while there is no import (the
    // dashboard then shows no "not included" note on a site that never imported anything).
    let app = ask(
        &ch,
        json!({"metrics": ["visitors"], "dimensions": ["visit:channel"], "include": {"imports": true}}),
    )
    .await;
    assert_eq!(
        app["meta"]["imports_skip_reason"], "no_imported_data",
        "{app}"
    );
    import(&ch).await;
    for (body, reason) in [
        (
            json!({"metrics": ["visitors"], "dimensions": ["visit:channel"]}),
            "unsupported_query",
        ),
        (
            json!({"metrics": ["visitors"], "dimensions": ["time:hour"]}),
            "unsupported_interval",
        ),
        (
            json!({"metrics": ["conversion_rate"], "dimensions": ["event:goal"]}),
            "unsupported_query",
        ),
        (
            json!({"metrics": ["visitors"], "dimensions": ["visit:source"],
                   "filters": [["is", "visit:country", ["DE"]]]}),
            "unsupported_query",
        ),
        (
            json!({"metrics": ["bounce_rate"], "dimensions": ["event:page"]}),
            "unsupported_query",
        ),
    ] {
        let mut body = body;
        body["include"] = json!({"imports": true});
        let doc = ask(&ch, body.clone()).await;
        assert_eq!(doc["meta"]["imports_included"], false, "{body}: {doc}");
        assert_eq!(doc["meta"]["imports_skip_reason"], reason, "{body}: {doc}");
        assert!(doc["meta"]["imports_warning"].is_string());
    }
    // Outside the imported days: no imported data.
    let later = q(
        &ch,
        &site(),
        json!({"site_id": SITE, "date_range": ["2026-11-21", "2026-11-27"],
               "metrics": ["visitors"], "include": {"imports": true}}),
    )
    .await;
    assert_eq!(later["meta"]["imports_skip_reason"], "no_imported_data");
    // "all" starts on the first imported day.
    let all = q(
        &ch,
        &site(),
        json!({"site_id": SITE, "date_range": "all", "metrics": ["visitors"],
               "include": {"imports": true}}),
    )
    .await;
    assert_eq!(totals(&all), vec![json!(253)], "{all}");
}

#[tokio::test]
async fn the_same_file_twice_changes_nothing_and_delete_removes_it() {
    let ch = seeded("imports_idempotent").await;
    let first = import(&ch).await;
    let body = json!({"metrics": ["visitors", "pageviews"], "include": {"imports": true}});
    let before = ask(&ch, body.clone()).await;
    let again = import(&ch).await;
    assert!(again.already);
    assert_eq!(again.import.id, first.import.id);
    assert_eq!(ask(&ch, body.clone()).await["results"], before["results"]);
    let listed = imports::list(&ch, SITE).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, first.import.id);
    assert_eq!(listed[0].rows, first.import.rows);
    // Another export of overlapping days is refused (it would count them twice).
    let other = first.import.id.clone();
    let err = imports::import_plausible(
        &ch,
        SITE,
        "imported_sources_20261119_20261119.csv",
        SOURCES_ONLY,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("overlaps import") && err.contains(&other),
        "{err}"
    );

    let gone = imports::delete(&ch, SITE, &first.import.id).await.unwrap();
    assert_eq!(gone.id, first.import.id);
    let after = ask(&ch, body).await;
    assert_eq!(totals(&after), vec![json!(23), json!(35)], "{after}");
    assert_eq!(after["meta"]["imports_skip_reason"], "no_imported_data");
    assert!(imports::list(&ch, SITE).await.unwrap().is_empty());
    let left = common::count(
        &ch,
        sql!("SELECT count() FROM imported WHERE site = {}", lit(SITE)),
    )
    .await;
    assert_eq!(left, 0);
    let e = imports::delete(&ch, SITE, &first.import.id)
        .await
        .unwrap_err();
    assert!(matches!(e, veil_aggregator::Error::NotFound(_)), "{e}");
}

/// One CSV of the export's format on its own.
const SOURCES_ONLY: &[u8] = b"date,source,referrer,utm_source,utm_medium,utm_campaign,utm_content,utm_term,pageviews,visitors,visits,visit_duration,bounces\n\
2026-11-19,Google,,,,,,,5,2,2,10,1\n";

#[tokio::test]
async fn erasing_the_site_removes_its_imports() {
    let ch = seeded("imports_erase").await;
    import(&ch).await;
    imports::import_plausible(&ch, "other.example", "plausible-export.zip", EXPORT)
        .await
        .unwrap();
    let report = veil_aggregator::retention::erase_site(&ch, SITE)
        .await
        .unwrap();
    assert_eq!(report.tables["imports"], 1, "{report:?}");
    assert!(report.tables["imported"] > 0);
    for table in ["imports", "imported"] {
        let n = common::count(
            &ch,
            sql!("SELECT count() FROM {} WHERE site = {}", table, lit(SITE)),
        )
        .await;
        assert_eq!(n, 0, "{table}");
    }
    assert!(imports::list(&ch, SITE).await.unwrap().is_empty());
    assert_eq!(imports::list(&ch, "other.example").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_malformed_export_names_file_line_and_column_and_stores_nothing() {
    let ch = seeded("imports_malformed").await;
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let o = zip::write::SimpleFileOptions::default();
        z.start_file("imported_visitors_20261118_20261120.csv", o)
            .unwrap();
        z.write_all(
            b"date,visitors,pageviews,bounces,visits,visit_duration\n2026-11-18,1,1,1,1,1\n",
        )
        .unwrap();
        z.start_file("imported_sources_20261118_20261120.csv", o)
            .unwrap();
        z.write_all(
            b"date,source,referrer,utm_source,utm_medium,utm_campaign,utm_content,utm_term,pageviews,visitors,visits,visit_duration,bounces\n\
              2026-11-18,Google,,,,,,,5,2,2,10,1\n\
              2026-11-19,\"Bing, the search\",,,,,,,5,many,2,10,1\n",
        )
        .unwrap();
        z.finish().unwrap();
    }
    let bytes = buf.into_inner();
    let e = imports::import_plausible(&ch, SITE, "bad.zip", &bytes)
        .await
        .unwrap_err();
    assert!(matches!(e, veil_aggregator::Error::BadRequest(_)));
    assert_eq!(
        e.to_string(),
        "imported_sources_20261118_20261120.csv line 3, column visitors: \"many\" is not a whole number"
    );
    let e = imports::import_plausible(&ch, SITE, "notes.txt", b"hello")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("notes.txt: neither a zip nor a CSV file"),
        "{e}"
    );
    assert!(imports::list(&ch, SITE).await.unwrap().is_empty());
    let n = common::count(&ch, sql!("SELECT count() FROM imported")).await;
    assert_eq!(n, 0);
}

/// dp mode: the merged number is one noisy release (near the sum, `meta.privacy` says dp).
#[tokio::test]
async fn in_dp_mode_the_sum_is_released_with_noise() {
    use bytes::Bytes;
    let ch = seeded("imports_dp").await;
    import(&ch).await;
    let a = veil_aggregator::Aggregator::new(
        veil_aggregator::AggregatorConfig {
            api_token: Some("admin-token-imports-0123".into()),
            sites: vec![SITE.into()],
            privacy: veil_aggregator::privacy::Settings::default(),
            ..Default::default()
        },
        ch.clone(),
    );
    a.registry().refresh().await.unwrap();
    let body = json!({"site_id": SITE, "date_range": RANGE, "metrics": ["visitors", "pageviews"],
                      "include": {"imports": true}});
    let req = http::Request::builder()
        .method("POST")
        .uri("/api/v2/query")
        .header("authorization", "Bearer admin-token-imports-0123")
        .body(Bytes::from(body.to_string()))
        .unwrap();
    let r = a.handle(req).await.unwrap();
    assert_eq!(r.status(), 200);
    let b = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    let doc: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(doc["meta"]["privacy"]["mode"], "dp", "{doc}");
    assert_eq!(doc["meta"]["imports_included"], true, "{doc}");
    let m = totals(&doc);
    let iv = doc["meta"]["privacy"]["interval95"]["visitors"]
        .as_f64()
        .unwrap();
    let v = m[0].as_f64().unwrap();
    assert!((v - 253.0).abs() <= 3.0 * iv.max(1.0), "{v} ± {iv}: {doc}");
    let ip = doc["meta"]["privacy"]["interval95"]["pageviews"]
        .as_f64()
        .unwrap();
    let p = m[1].as_f64().unwrap();
    assert!((p - 585.0).abs() <= 3.0 * ip.max(1.0), "{p} ± {ip}: {doc}");
}

/// The admin API: upload, list, delete, each audited; the same file twice is a 200 that
/// changes nothing; an unknown import is a 404; a malformed one a 400 naming the place.
#[tokio::test]
async fn the_admin_api_imports_lists_and_deletes_audited() {
    use bytes::Bytes;
    const ADMIN: &str = "admin-token-imports-api-0123";
    let ch = seeded("imports_api").await;
    let a = veil_aggregator::Aggregator::new(
        veil_aggregator::AggregatorConfig {
            api_token: Some(ADMIN.into()),
            sites: vec![SITE.into()],
            privacy: veil_aggregator::privacy::Settings::exact(),
            ..Default::default()
        },
        ch.clone(),
    );
    a.registry().refresh().await.unwrap();
    let call = |method: &'static str, path: String, body: Vec<u8>| {
        let a = &a;
        async move {
            let req = http::Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Bytes::from(body))
                .unwrap();
            let r = a.handle(req).await.unwrap();
            let status = r.status().as_u16();
            let b = http_body_util::BodyExt::collect(r.into_body())
                .await
                .unwrap()
                .to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null),
            )
        }
    };
    let base = format!("/api/v1/sites/{SITE}/imports");
    let (s, v) = call(
        "POST",
        format!("{base}?source=plausible&file=export.zip"),
        EXPORT.to_vec(),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id = v["import"]["id"].as_str().unwrap().to_string();
    let (s, v) = call("POST", format!("{base}?file=export.zip"), EXPORT.to_vec()).await;
    assert_eq!((s, &v["already"]), (200, &json!(true)), "{v}");
    let (s, v) = call("GET", base.clone(), Vec::new()).await;
    assert_eq!(s, 200);
    assert_eq!(v["imports"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["imports"][0]["id"], id.as_str());
    assert_eq!(v["imports"][0]["start_date"], "2026-11-18");
    let (s, v) = call(
        "POST",
        format!("{base}?file=imported_devices_20261201_20261201.csv"),
        b"date,device,visitors\n2026-12-01,Desktop,1\n".to_vec(),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("line 1: no `visits` column"),
        "{v}"
    );
    let (s, v) = call("DELETE", format!("{base}/{id}"), Vec::new()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["deleted"]["id"], id.as_str());
    let (s, _) = call("DELETE", format!("{base}/{id}"), Vec::new()).await;
    assert_eq!(s, 404);
    let (_, v) = call("GET", base, Vec::new()).await;
    assert_eq!(v["imports"], json!([]));
    let (s, v) = call("GET", format!("/api/v1/audit?site={SITE}"), Vec::new()).await;
    assert_eq!(s, 200, "{v}");
    let actions: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"import.create") && actions.contains(&"import.delete"),
        "{v}"
    );
}

/// Stats API v1: `with_imported=true` merges as v2's `include.imports` does.
#[tokio::test]
async fn stats_api_v1_with_imported_merges_too() {
    let ch = seeded("imports_v1").await;
    import(&ch).await;
    let a = common::stats_aggregator(&ch);
    let get = |path: String| {
        let a = &a;
        async move {
            let r = a
                .handle(common::request(
                    &path,
                    "GET",
                    String::new(),
                    "application/json",
                ))
                .await
                .unwrap();
            let s = r.status().as_u16();
            let b = http_body_util::BodyExt::collect(r.into_body())
                .await
                .unwrap()
                .to_bytes();
            (s, serde_json::from_slice::<Value>(&b).unwrap())
        }
    };
    let period = "period=custom&date=2026-11-18,2026-11-20";
    let (s, v) = get(format!(
        "/api/v1/stats/aggregate?site_id={SITE}&{period}&metrics=visitors,pageviews&with_imported=true"
    ))
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"]["visitors"]["value"], 253, "{v}");
    assert_eq!(v["results"]["pageviews"]["value"], 585, "{v}");
    let (_, v) = get(format!(
        "/api/v1/stats/aggregate?site_id={SITE}&{period}&metrics=visitors"
    ))
    .await;
    assert_eq!(v["results"]["visitors"]["value"], 23, "{v}");
    let (s, v) = get(format!(
        "/api/v1/stats/breakdown?site_id={SITE}&{period}&property=visit:source&with_imported=true"
    ))
    .await;
    assert_eq!(s, 200, "{v}");
    let google = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["source"] == "Google")
        .cloned();
    assert_eq!(
        google,
        Some(json!({"source": "Google", "visitors": 148})),
        "{v}"
    );
    let (s, _) = get(format!(
        "/api/v1/stats/aggregate?site_id={SITE}&{period}&with_imported=yes"
    ))
    .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn imported_places_answer_by_code_id_and_name() {
    // Plausible's export names places by ISO 3166-2 code and GeoNames id (US-CA, 588409);
    // `visit:region_name` and `visit:city_name` name them from Veil's places table, so the
    // dashboard's Regions and Cities tabs (which ask for names) include imported history.
    let ch = seeded("imports_places").await;
    import(&ch).await;
    let by = |doc: &Value| -> std::collections::HashMap<String, Value> {
        rows(doc)
            .into_iter()
            .map(|(d, m)| (d[0].clone(), m[0].clone()))
            .collect()
    };
    let ask_by = |dim: &'static str| {
        let ch = ch.clone();
        async move {
            let doc = ask(
                &ch,
                json!({"metrics": ["visitors"], "dimensions": [dim], "include": {"imports": true}}),
            )
            .await;
            assert_eq!(doc["meta"]["imports_included"], true, "{dim}: {doc}");
            by(&doc)
        }
    };
    let codes = ask_by("visit:region").await;
    let names = ask_by("visit:region_name").await;
    assert!(codes["US-CA"].as_u64().unwrap() > 0, "{codes:?}");
    assert_eq!(names["California"], codes["US-CA"], "{names:?}");
    assert!(!names.contains_key("US-CA"), "{names:?}");
    let ids = ask_by("visit:city").await;
    let cities = ask_by("visit:city_name").await;
    for (id, name) in [
        ("588409", "Tallinn"),
        ("5368361", "Los Angeles"),
        ("2950159", "Berlin"),
    ] {
        assert!(ids[id].as_u64().unwrap() > 0, "{ids:?}");
        assert_eq!(cities[name], ids[id], "{name}: {cities:?}");
    }
    // A filter on a name is not merged (the export has no names): said, not guessed.
    let f = ask(
        &ch,
        json!({"metrics": ["visitors"], "filters": [["is", "visit:city_name", ["Tallinn"]]],
               "include": {"imports": true}}),
    )
    .await;
    assert_eq!(f["meta"]["imports_included"], false, "{f}");
    assert_eq!(f["meta"]["imports_skip_reason"], "unsupported_query", "{f}");
}

/// Device, browser and OS breakdowns merge Veil's rows and the export's under Plausible's
/// words: Veil's stored `desktop`, `Mac OSX`, `iPhone`, `Windows 11` (the collector's) answer
/// `Desktop`, `Mac`, `iOS`, `Windows`, the export's values as they are, one row per value.
/// Veil's own here (2026-11-20, five visitors each): desktop Chrome 131 on Mac OSX 15.1,
/// mobile Safari 18 on iPhone 18.1, desktop Firefox 133 on Windows 11. The export's
/// (2026-11-18..20, 230 visitors): Desktop 138, Mobile 69, Tablet 23; Chrome 138, Safari 69,
/// Firefox 23; Mac 92, Windows 69, iOS 69.
#[tokio::test]
async fn device_browser_and_os_breakdowns_merge_under_plausibles_words() {
    let ch = veil_schemas::testing::fresh_database("imports_devices").await;
    let groups = [
        ("W", "desktop", "Chrome", "131", "Mac OSX", "15.1"),
        ("X", "mobile", "Safari", "18", "iPhone", "18.1"),
        ("Y", "desktop", "Firefox", "133", "Windows 11", ""),
    ];
    let rows_sql = groups.iter().flat_map(|(g, dev, br, brv, os, osv)| {
        (0..5).map(move |i| {
            sql!(
                "({}, toDateTime('2026-11-20 10:00:00', 'UTC'), 'pageview', '/', 'shop.example', toFixedString({}, 16), {}, {}, {}, {}, {})",
                lit(SITE),
                lit(&format!("{g}{i}")),
                lit(dev),
                lit(br),
                lit(brv),
                lit(os),
                lit(osv)
            )
        })
    });
    veil_aggregator::db::exec(
        &ch.client(),
        &sql!(
            "INSERT INTO events (site, timestamp, name, pathname, hostname, visitor_id, device, browser, browser_version, os, os_version) VALUES {}",
            veil_schemas::sql::Sql::join(rows_sql, ", ")
        ),
    )
    .await
    .unwrap();
    import(&ch).await;
    for (dim, want) in [
        (
            "visit:device",
            vec![("Desktop", 148), ("Mobile", 74), ("Tablet", 23)],
        ),
        (
            "visit:browser",
            vec![("Chrome", 143), ("Safari", 74), ("Firefox", 28)],
        ),
        ("visit:os", vec![("Mac", 97), ("Windows", 74), ("iOS", 74)]),
    ] {
        let own = ask(&ch, json!({"metrics": ["visitors"], "dimensions": [dim]})).await;
        assert_eq!(own["meta"]["imports_included"], false, "{own}");
        let doc = ask(
            &ch,
            json!({"metrics": ["visitors"], "dimensions": [dim], "include": {"imports": true}}),
        )
        .await;
        assert_eq!(doc["meta"]["imports_included"], true, "{dim}: {doc}");
        let mut got = rows(&doc);
        // Ties (Windows and iOS: 74 each) in the tie-break order (the dimension, ascending).
        got.sort_by(|a, b| b.1[0].as_i64().cmp(&a.1[0].as_i64()).then(a.0.cmp(&b.0)));
        let want: Vec<(Vec<String>, Vec<Value>)> = want
            .into_iter()
            .map(|(v, n)| (vec![v.to_string()], vec![json!(n)]))
            .collect();
        assert_eq!(got, want, "{dim}: {doc}");
        assert_eq!(rows(&doc), want, "{dim} in Plausible's order: {doc}");
    }
}
