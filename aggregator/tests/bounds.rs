//! Contribution bounds are enforced, not only declared (issue 15, point 2): what one visitor
//! id (one visitor-day) adds to a differentially private report is clamped in SQL, on every
//! source a report can read (visit rows derived from raw events or built by the rollup job,
//! raw events, hits with their visits), so the sensitivity the noise is calibrated for holds
//! whatever a visitor did.
//!
//! One heavy visitor (five visits in five hours, 40 pages viewed five times each, three
//! sources) among 20 ordinary ones (one visit, two pages). The bounded SQL is run against the
//! real ClickHouse and its numbers are checked exactly; the unbounded SQL over the same rows
//! shows how much the heavy visitor would otherwise have moved them. Then the same through
//! the HTTP API at the highest ε a site may set, against exact mode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use http::Request;
use serde_json::{json, Value};
use veil_aggregator::builds::Builds;
use veil_aggregator::privacy::{Bounds, Release, Settings};
use veil_aggregator::query::assemble::{bounded_sql, bounded_sql_general, sql as report_sql};
use veil_aggregator::query::{parse, Query};
use veil_aggregator::site::SiteView;
use veil_aggregator::{db, rollup, Aggregator, AggregatorConfig};
use veil_schemas::sql;
use veil_schemas::sql::{lit, Sql};
use veil_schemas::ClickHouseConfig;

const SITE: &str = "bounds.example";
const DAY: &str = "2026-11-20";
const ADMIN: &str = "admin-token-for-bounds-tests";
/// Ordinary visitors: one visit, /a then /b, from no source.
const ORDINARY: usize = 20;
/// The heavy visitor's distinct pages, each viewed this many times.
const HEAVY_PAGES: usize = 40;
const HEAVY_REPEATS: usize = 5;

fn event(at: &str, page: &str, visitor: &str, source: &str, region: &str) -> Sql {
    sql!(
        "({}, toDateTime({}, 'UTC'), 'pageview', {}, {}, toFixedString({}, 16), {}, {}, 'DE', {}, 'Desktop', 'Firefox')",
        lit(SITE),
        lit(&format!("{DAY} {at}")),
        lit(page),
        lit(SITE),
        lit(visitor),
        lit(source),
        lit(if source.is_empty() { "Direct" } else { "Referral" }),
        lit(region)
    )
}

/// Bavaria as the GeoIP data names it (`DE-BY|Bavaria`), and as a later release might: the
/// heavy visitor's visits alternate between the two names of one code.
const REGIONS: [&str; 2] = ["DE-BY|Bavaria", "DE-BY|Bayern"];

async fn store(ch: &ClickHouseConfig) {
    let mut rows = Vec::new();
    for i in 0..ORDINARY {
        let v = format!("or{i:014}");
        rows.push(event(&format!("08:{i:02}:00"), "/a", &v, "", REGIONS[0]));
        rows.push(event(&format!("08:{i:02}:30"), "/b", &v, "", REGIONS[0]));
    }
    // The heavy visitor: five visits of 40 minutes (10:00, 12:00 … 18:00) from three
    // sources, 200 pageviews over 40 pages.
    let sources = ["google.com", "bing.com", "twitter.com"];
    for n in 0..HEAVY_PAGES * HEAVY_REPEATS {
        let page = format!("/heavy/{}", n % HEAVY_PAGES);
        let visit = n / 40;
        let at = format!("{:02}:{:02}:00", 10 + 2 * visit, n % 40);
        rows.push(event(
            &at,
            &page,
            "heavy00000000000",
            sources[visit % 3],
            REGIONS[visit % 2],
        ));
    }
    let q = sql!(
        "INSERT INTO events (site, timestamp, name, pathname, hostname, visitor_id, source, channel, country_code, region, device, browser) VALUES {}",
        Sql::join(rows.iter(), ", ")
    );
    db::exec(&ch.client(), &q).await.unwrap();
}

fn site() -> SiteView {
    let mut s = SiteView::new(SITE);
    s.min_visitors = 1;
    s
}

fn query(body: Value) -> Query {
    let mut b = body;
    b["site_id"] = json!(SITE);
    b["date_range"] = json!([DAY, DAY]);
    parse(b.to_string().as_bytes(), &site(), Utc::now()).unwrap()
}

/// Rows of `q` as differential privacy reads them (bounded, unrounded) and, for comparison,
/// unbounded: `(dims, metrics)` each.
async fn both(
    ch: &ClickHouseConfig,
    q: &Query,
) -> (Vec<(Vec<String>, Vec<f64>)>, Vec<(Vec<String>, Vec<f64>)>) {
    let client = ch.client();
    let site = site();
    let rel = Release::new(q, false, [7; 32], &Settings::default(), 1, Utc::now()).unwrap();
    let mut bq = q.clone();
    bq.unrounded = true;
    bq.bounded = true;
    let built = Builds::new(None)
        .for_query(&client, &site, &bq)
        .await
        .unwrap();
    let bounded = bounded_sql(&bq, &site, &built, rel.clamp()).unwrap();
    let mut uq = q.clone();
    uq.unrounded = true;
    let built = Builds::new(None)
        .for_query(&client, &site, &uq)
        .await
        .unwrap();
    let plain = report_sql(&uq, &site, &built, None);
    let read = |rows: Vec<Value>| {
        let nd = q.dimensions.len();
        rows.into_iter()
            .map(|r| {
                let cells = r.as_array().unwrap().clone();
                let dims = cells[..nd]
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .collect();
                let ms = cells[nd..nd + q.metrics.len()]
                    .iter()
                    .map(|v| db::number(v).unwrap())
                    .collect();
                (dims, ms)
            })
            .collect::<Vec<_>>()
    };
    (
        read(db::fetch(&client, &bounded).await.unwrap()),
        read(db::fetch(&client, &plain).await.unwrap()),
    )
}

/// `body` as differential privacy asks it (bounded, unrounded): the query, the builds it reads
/// now and its release (whose clamp bounds it).
async fn as_dp(
    ch: &ClickHouseConfig,
    site: &SiteView,
    body: Value,
) -> (Query, Vec<veil_aggregator::query::Build>, Release) {
    let mut q = query(body);
    q.unrounded = true;
    q.bounded = true;
    let built = Builds::new(None)
        .for_query(&ch.client(), site, &q)
        .await
        .unwrap();
    let rel = Release::new(&q, false, [7; 32], &Settings::default(), 1, Utc::now()).unwrap();
    (q, built, rel)
}

/// `body` as differential privacy asks it (bounded, unrounded) on the rows as they are now:
/// its bounded SQL in the one-pass form and in the general form.
async fn bounded_forms(ch: &ClickHouseConfig, site: &SiteView, body: Value) -> (Sql, Sql) {
    let (q, built, rel) = as_dp(ch, site, body).await;
    (
        bounded_sql(&q, site, &built, rel.clamp()).unwrap(),
        bounded_sql_general(&q, site, &built, rel.clamp()).unwrap(),
    )
}

fn column(rows: &[(Vec<String>, Vec<f64>)], m: usize) -> f64 {
    rows.iter().map(|r| r.1[m]).sum()
}

fn row<'a>(rows: &'a [(Vec<String>, Vec<f64>)], label: &str) -> Option<&'a Vec<f64>> {
    rows.iter()
        .find(|r| r.0.first().map(String::as_str) == Some(label))
        .map(|r| &r.1)
}

/// Every check, on the rows as they are when asked (derived from raw events, or built).
async fn checks(ch: &ClickHouseConfig, when: &str) {
    let b = Bounds::default();
    let heavy_pv = (HEAVY_PAGES * HEAVY_REPEATS) as f64;
    let ordinary = ORDINARY as f64;

    // Totals (visit rows): the heavy visitor adds at most `pageviews` pageviews and `visits`
    // visits; visitors are exact. The same under a region code (on built days the filtered
    // rows keyed by code answer it): every visit is in DE-BY, the heavy visitor's five under
    // two names of it, and it is one visitor clamped once.
    for (body, what) in [
        (
            json!({"metrics": ["visitors", "visits", "pageviews"]}),
            "totals",
        ),
        (
            json!({"metrics": ["visitors", "visits", "pageviews"], "filters": [["is", "visit:region", ["DE-BY"]]]}),
            "region DE-BY",
        ),
    ] {
        let (bounded, plain) = both(ch, &query(body)).await;
        assert_eq!(
            plain[0].1,
            vec![ordinary + 1.0, ordinary + 5.0, 2.0 * ordinary + heavy_pv],
            "{when}: {what} unbounded"
        );
        assert_eq!(
            bounded[0].1,
            vec![
                ordinary + 1.0,
                ordinary + b.visits as f64,
                2.0 * ordinary + b.pageviews as f64
            ],
            "{when}: {what} with the heavy visitor clamped"
        );
    }

    // By page (raw events): the heavy visitor counts in at most `hit_rows` rows, with at
    // most `pageviews` pageviews in each (it has five per page: all kept).
    let q = query(json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"]}));
    let (bounded, plain) = both(ch, &q).await;
    assert_eq!(plain.len(), 2 + HEAVY_PAGES, "{when}: every page unbounded");
    assert_eq!(
        bounded.len(),
        2 + b.hit_rows as usize,
        "{when}: {bounded:?}"
    );
    assert_eq!(
        column(&bounded, 0),
        2.0 * ordinary + b.hit_rows as f64,
        "{when}"
    );
    assert_eq!(
        column(&bounded, 1),
        2.0 * ordinary + (b.hit_rows as usize * HEAVY_REPEATS) as f64,
        "{when}"
    );
    assert_eq!(
        row(&bounded, "/a"),
        Some(&vec![ordinary, ordinary]),
        "{when}: ordinary pages untouched"
    );

    // By source (visit rows): three sources, at most `visit_rows` of them counted.
    let q = query(
        json!({"metrics": ["visitors", "visits", "bounce_rate", "visit_duration"], "dimensions": ["visit:source"]}),
    );
    let (bounded, plain) = both(ch, &q).await;
    assert_eq!(column(&plain, 0), ordinary + 3.0, "{when}: {plain:?}");
    assert_eq!(
        column(&bounded, 0),
        ordinary + b.visit_rows as f64,
        "{when}: {bounded:?}"
    );
    for r in bounded.iter().filter(|r| !r.0[0].is_empty()) {
        // Heavy visits of 39 minutes each: their seconds clamped.
        assert!(r.1[3] <= b.visit_seconds as f64, "{when}: {r:?}");
        assert_eq!(
            r.1[2], 0.0,
            "{when}: the heavy visits did not bounce: {r:?}"
        );
    }

    // A filter on a hit beside a visit dimension (hits with their visits): the same bounds.
    let q = query(
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["visit:source"], "filters": [["contains", "event:page", ["/heavy/"]]]}),
    );
    let (bounded, plain) = both(ch, &q).await;
    assert_eq!(column(&plain, 1), heavy_pv, "{when}: {plain:?}");
    assert_eq!(
        column(&bounded, 0),
        b.visit_rows as f64,
        "{when}: {bounded:?}"
    );
    assert!(
        column(&bounded, 1) <= (b.visit_rows * b.pageviews) as f64,
        "{when}: {bounded:?}"
    );

    // One filter value (what the filtered rows answer on built days): a source, the heavy
    // visitor's two Google visits of 40 pageviews each.
    let q = query(
        json!({"metrics": ["visitors", "visits", "pageviews"], "filters": [["is", "visit:source", ["google.com"]]]}),
    );
    let (bounded, plain) = both(ch, &q).await;
    assert_eq!(plain[0].1, vec![1.0, 2.0, 80.0], "{when}: {plain:?}");
    assert_eq!(
        bounded[0].1,
        vec![1.0, b.visits.min(2) as f64, b.pageviews as f64],
        "{when}: {bounded:?}"
    );
    // A page seen once in each of the heavy visitor's five visits.
    let q = query(
        json!({"metrics": ["visitors", "visits", "pageviews"], "filters": [["is", "event:page", ["/heavy/0"]]]}),
    );
    let (bounded, plain) = both(ch, &q).await;
    assert_eq!(plain[0].1, vec![1.0, 5.0, 5.0], "{when}: {plain:?}");
    assert_eq!(
        bounded[0].1,
        vec![1.0, b.visits as f64, b.pageviews.min(5) as f64],
        "{when}: {bounded:?}"
    );
    // Pages of the Google visits: 40 pages of 2 pageviews, at most `hit_rows` counted.
    let q = query(
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "filters": [["is", "visit:source", ["google.com"]]]}),
    );
    let (bounded, plain) = both(ch, &q).await;
    assert_eq!(
        (column(&plain, 0), column(&plain, 1)),
        (40.0, 80.0),
        "{when}: {plain:?}"
    );
    assert_eq!(
        (column(&bounded, 0), column(&bounded, 1)),
        (b.hit_rows as f64, 2.0 * b.hit_rows as f64),
        "{when}: {bounded:?}"
    );
    // Sources of the visits that saw /a: the ordinary visitors, untouched.
    let q = query(
        json!({"metrics": ["visitors", "visits", "pageviews"], "dimensions": ["visit:source"], "filters": [["is", "event:page", ["/a"]]]}),
    );
    let (bounded, _) = both(ch, &q).await;
    assert_eq!(
        row(&bounded, "Direct / None"),
        Some(&vec![ordinary, ordinary, ordinary]),
        "{when}: {bounded:?}"
    );

    // By hour: five hours active, at most `hour_rows` counted.
    let q = query(json!({"metrics": ["visitors", "pageviews"], "dimensions": ["time:hour"]}));
    let (bounded, plain) = both(ch, &q).await;
    assert_eq!(column(&plain, 0), ordinary + 5.0, "{when}: {plain:?}");
    assert_eq!(
        column(&bounded, 0),
        ordinary + b.hour_rows as f64,
        "{when}: {bounded:?}"
    );
    assert!(
        column(&bounded, 1) <= 2.0 * ordinary + (b.hour_rows * b.pageviews) as f64,
        "{when}: {bounded:?}"
    );
}

#[tokio::test]
async fn one_visitor_days_contribution_is_clamped_on_every_source() {
    let ch = veil_schemas::testing::fresh_database("dp_bounds").await;
    store(&ch).await;
    checks(&ch, "derived from raw events").await;
    let day = NaiveDate::parse_from_str(DAY, "%Y-%m-%d").unwrap();
    rollup::run_until(&ch, day.succ_opt().unwrap(), 3)
        .await
        .unwrap();
    // The closed day now has bounded rows, and the questions the daily rollup answers read
    // them instead of visit rows.
    let n = db::count(
        &ch.client(),
        &sql!("SELECT count() FROM visits_daily WHERE dim LIKE 'dp:%'"),
    )
    .await
    .unwrap();
    assert!(n > 0, "no bounded rows built");
    let site = site();
    for body in [
        json!({"metrics": ["visitors", "visits", "pageviews"]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"]}),
        json!({"metrics": ["visitors", "visits", "bounce_rate", "visit_duration"], "dimensions": ["visit:source"]}),
        json!({"metrics": ["visitors", "visits", "pageviews"], "filters": [["is", "visit:source", ["google.com"]]]}),
        json!({"metrics": ["visitors", "visits", "pageviews"], "filters": [["is", "visit:region", ["DE-BY"]]]}),
        json!({"metrics": ["visitors", "visits", "pageviews"], "filters": [["is", "event:page", ["/heavy/0"]]]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "filters": [["is", "visit:source", ["google.com"]]]}),
        json!({"metrics": ["visitors", "visits"], "dimensions": ["visit:source"], "filters": [["is", "event:page", ["/a"]]]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "filters": [["contains", "event:page", ["/heavy/"]]]}),
        json!({"metrics": ["visitors", "visits"], "dimensions": ["visit:source"], "filters": [["is_not", "visit:source", ["bing.com"]]]}),
    ] {
        let (s, _) = bounded_forms(&ch, &site, body).await;
        assert!(
            s.as_str().contains("'dp:") && !s.as_str().contains("LIMIT"),
            "{s}"
        );
    }
    // A filter on the breakdown's own dimension reads the unfiltered bounded rows of the
    // values that pass: the same rows and numbers as the unfiltered answer's.
    for (filtered, passes) in [
        (
            json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "filters": [["matches", "event:page", ["^/heavy/"]]]}),
            (|p: &str| p.starts_with("/heavy/")) as fn(&str) -> bool,
        ),
        (
            json!({"metrics": ["visitors", "visits", "bounce_rate"], "dimensions": ["visit:source"], "filters": [["is_not", "visit:source", ["bing.com"]]]}),
            |s: &str| s != "bing.com",
        ),
    ] {
        let mut unfiltered = filtered.clone();
        unfiltered.as_object_mut().unwrap().remove("filters");
        let fetch = |body: Value| {
            let ch = ch.clone();
            let site = site.clone();
            async move {
                let (s, _) = bounded_forms(&ch, &site, body).await;
                assert!(!s.as_str().contains("LIMIT"), "{s}");
                db::fetch(&ch.client(), &s).await.unwrap()
            }
        };
        let all = fetch(unfiltered).await;
        let want: Vec<Value> = all
            .into_iter()
            .filter(|r| passes(r[0].as_str().unwrap_or("")))
            .collect();
        let got = fetch(filtered.clone()).await;
        assert!(want.len() > 1, "{filtered}: {want:?}");
        assert_eq!(got, want, "{filtered}");
    }
    checks(&ch, "built by the rollup job").await;
}

/// The one-pass clamp (each visitor id's hits or visits grouped once, its rows picked from an
/// array) gives exactly the rows and numbers of the general form (`GROUP BY` row and visitor
/// id, `ORDER BY … LIMIT n BY`), on raw events, derived visit rows and built ones, with and
/// without a hit filter.
#[tokio::test]
async fn the_one_pass_clamp_equals_the_general_form() {
    let ch = veil_schemas::testing::fresh_database("dp_bounds_one_pass").await;
    store(&ch).await;
    let site = site();
    let compare = |when: &'static str| {
        let ch = ch.clone();
        let site = site.clone();
        async move {
            let (mut one_pass, mut arg_min) = (0, 0);
            for body in [
                json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"]}),
                json!({"metrics": ["visitors", "pageviews", "events"], "dimensions": ["time:hour"]}),
                json!({"metrics": ["visitors", "events"], "dimensions": ["visit:country"], "filters": [["contains", "event:page", ["/heavy/"]]]}),
                json!({"metrics": ["visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration"], "dimensions": ["visit:source"]}),
                json!({"metrics": ["visits", "views_per_visit"], "filters": [["is", "visit:source", ["google.com"]]], "dimensions": ["time:hour"]}),
                json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"], "dimensions": ["visit:source"], "filters": [["contains", "event:page", ["/heavy/"]]]}),
                json!({"metrics": ["visitors", "visits"], "dimensions": ["visit:entry_page"], "filters": [["is", "visit:source", ["google.com"]]]}),
                // Whole visitors who did something: visit rows with `visitor_id IN (…)`.
                json!({"metrics": ["visitors", "visits", "pageviews"], "dimensions": ["visit:source"], "filters": [["has_done", ["is", "event:page", ["/heavy/3"]]]]}),
                // The chart under a page pattern: visit rows, one per visit, by their day.
                json!({"metrics": ["visitors", "pageviews"], "dimensions": ["time:day"], "filters": [["contains", "event:page", ["/heavy/"]]]}),
                // Visitors alone, one row per visitor: the row picked by `argMin` (the heavy
                // visitor's two region names, three sources; by day under a page pattern).
                json!({"metrics": ["visitors"], "dimensions": ["visit:region"]}),
                json!({"metrics": ["visitors", "percentage"], "dimensions": ["visit:country"], "filters": [["contains", "event:page", ["/heavy/"]]]}),
                json!({"metrics": ["visitors"], "dimensions": ["time:day"], "filters": [["contains", "event:page", ["/heavy/"]]]}),
                json!({"metrics": ["visitors"], "dimensions": ["visit:source"], "filters": [["contains", "event:page", ["/heavy/"]]]}),
            ] {
                let (fast, general) = bounded_forms(&ch, &site, body.clone()).await;
                // Built days the daily rollup answers have no per-visitor part at all.
                if general.as_str().contains("LIMIT") {
                    let picked = if fast.as_str().contains("argMin(") {
                        arg_min += 1;
                        true
                    } else {
                        fast.as_str().contains("ARRAY JOIN rs AS r")
                    };
                    assert!(picked, "{when} {body}: {fast}");
                    assert!(!fast.as_str().contains("LIMIT"), "{when} {body}: {fast}");
                    one_pass += 1;
                }
                let (a, b) = (
                    db::fetch(&ch.client(), &fast).await.unwrap(),
                    db::fetch(&ch.client(), &general).await.unwrap(),
                );
                assert!(!a.is_empty(), "{when} {body}");
                assert_eq!(a, b, "{when} {body}");
            }
            (one_pass, arg_min)
        }
    };
    let (one_pass, arg_min) = compare("derived from raw events").await;
    assert_eq!(one_pass, 13);
    assert!(arg_min >= 3, "{arg_min}");
    let day = NaiveDate::parse_from_str(DAY, "%Y-%m-%d").unwrap();
    rollup::run_until(&ch, day.succ_opt().unwrap(), 3)
        .await
        .unwrap();
    // Visit rows of the build (a hit filter: one row per visit with its hits).
    let (one_pass, arg_min) = compare("built by the rollup job").await;
    assert!(one_pass >= 3 && arg_min >= 1, "{one_pass} {arg_min}");
}

/// The dashboard's visit-row panels asked under `filter`, as differential privacy asks them
/// (bounded, unrounded): each query, its builds and its release's clamp.
async fn screen_panels(
    ch: &ClickHouseConfig,
    site: &SiteView,
    filter: &Value,
) -> Vec<(Query, Vec<veil_aggregator::query::Build>, Release)> {
    let panels = [
        json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"]}),
        json!({"metrics": ["visitors"], "dimensions": ["time:day"]}),
        json!({"metrics": ["visitors", "visits"], "dimensions": ["visit:source"]}),
        json!({"metrics": ["visitors"], "dimensions": ["visit:country"]}),
        json!({"metrics": ["visitors", "pageviews", "events", "visits"], "dimensions": ["visit:device"]}),
        // Visitors alone by a visit property: each id's two sources of its three.
        json!({"metrics": ["visitors"], "dimensions": ["visit:source"]}),
        // The total of visitors alone.
        json!({"metrics": ["visitors"]}),
    ];
    let mut out = Vec::new();
    for p in panels {
        let mut body = p.clone();
        body["filters"] = filter.clone();
        out.push(as_dp(ch, site, body).await);
    }
    out
}

/// A panel's rows from the statement its gathering shares (an error if it ran alone).
async fn gathered(
    screens: &veil_aggregator::screen::Screens,
    client: &clickhouse::Client,
    site: &SiteView,
    panel: &(Query, Vec<veil_aggregator::query::Build>, Release),
) -> Result<Vec<Value>, veil_aggregator::Error> {
    let (q, built, rel) = panel;
    let asked = veil_aggregator::screen::Asked {
        client,
        site,
        q,
        built,
        kmin: 1,
        heavy: None,
        clamp: Some(*rel.clamp()),
    };
    screens
        .rows(asked, async {
            Err(veil_aggregator::Error::Internal("ran alone".into()))
        })
        .await
}

/// The same rows, numbers equal but for the last bits of a float sum's order.
fn same_rows(a: &[Value], b: &[Value]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            let (x, y) = (x.as_array().unwrap(), y.as_array().unwrap());
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(u, v)| match (db::number(u), db::number(v)) {
                        (Some(u), Some(v)) if !u.is_nan() => {
                            (u - v).abs() <= 1e-9 * u.abs().max(1.0)
                        }
                        _ => u == v,
                    })
        })
}

/// A screen's bounded reports asked at once (`crate::screen`, differential privacy's panels
/// under a filter only visit rows answer) group the filtered visit rows by visitor id once,
/// and each gets exactly the clamped rows its own statement gives — the heavy visitor's three
/// sources, five visits and 200 pageviews clamped per panel as alone — on rows derived from
/// raw events and on the rollup job's build.
#[tokio::test]
async fn bounded_panels_asked_at_once_share_one_grouping_and_equal_each_alone() {
    use veil_aggregator::query::assemble::bounded_screen_member;
    use veil_aggregator::screen::Screens;
    let ch = veil_schemas::testing::fresh_database("dp_bounds_screens").await;
    store(&ch).await;
    let site = site();
    let client = ch.client();
    let screens = Screens::with_window(std::time::Duration::from_secs(20)).closing_at(5);
    let filters = [
        json!([["contains", "event:page", ["/heavy/"]]]),
        json!([["is_not", "event:page", ["/a"]]]),
        json!([["has_done", ["is", "event:page", ["/heavy/3"]]]]),
        json!([
            ["matches", "event:page", ["^/"]],
            ["is_not", "visit:source", ["bing.com"]]
        ]),
    ];
    let mut statements = 0;
    for when in ["derived from raw events", "built by the rollup job"] {
        if when.starts_with("built") {
            let day = NaiveDate::parse_from_str(DAY, "%Y-%m-%d").unwrap();
            rollup::run_until(&ch, day.succ_opt().unwrap(), 3)
                .await
                .unwrap();
        }
        for f in &filters {
            let panels = screen_panels(&ch, &site, f).await;
            let mut alone = Vec::new();
            for (q, built, rel) in &panels {
                assert!(
                    bounded_screen_member(q, &site, rel.clamp()),
                    "{when} {f} {:?}",
                    q.dimensions
                );
                let own = bounded_sql(q, &site, built, rel.clamp()).unwrap();
                alone.push(db::fetch(&client, &own).await.unwrap());
            }
            let ask = |i: usize| gathered(&screens, &client, &site, &panels[i]);
            let (a0, a1, a2, a3, a4) = tokio::join!(ask(0), ask(1), ask(2), ask(3), ask(4));
            let together = [a0, a1, a2, a3, a4];
            for (i, (t, a)) in together.iter().zip(&alone).enumerate() {
                let t = t.as_ref().unwrap();
                assert!(
                    same_rows(t, a),
                    "{when} {f} panel {i}\ntogether {t:?}\nalone {a:?}"
                );
            }
            // The heavy visitor is in the pattern's screens: its clamps are met on the way.
            assert!(!alone[0].is_empty() && !alone[2].is_empty(), "{when} {f}");
            statements += 1;
            assert_eq!(screens.shared(), (statements, 5 * statements), "{when} {f}");
            // Smaller screens: panels of visitors alone (no visit's fields kept: the rows
            // then carry no event names), and a total and a chart of visitors (each visit
            // kept with one value: the chart's).
            for three in [[1, 3, 5], [1, 2, 3], [6, 1, 6]] {
                let small = Screens::with_window(std::time::Duration::from_secs(20)).closing_at(3);
                let ask = |i: usize| gathered(&small, &client, &site, &panels[i]);
                let (c, d, e) = tokio::join!(ask(three[0]), ask(three[1]), ask(three[2]));
                for (rows, i) in [c, d, e].into_iter().zip(three) {
                    let rows = rows.unwrap_or_else(|e| panic!("{when} {f} {three:?}: {e}"));
                    assert!(same_rows(&rows, &alone[i]), "{when} {f} panel {i}");
                }
            }
        }
    }
}

/// Through the API with differential privacy on (the default), a screen's panels asked at
/// once gather into one statement and each publishes its noisy clamped numbers.
#[tokio::test]
async fn a_dp_screen_through_the_api_gathers_its_panels() {
    let ch = veil_schemas::testing::fresh_database("dp_bounds_screen_api").await;
    store(&ch).await;
    let dp = Aggregator::new(
        AggregatorConfig {
            api_token: Some(ADMIN.into()),
            sites: vec![SITE.into()],
            privacy: Settings {
                epsilon_query: 10.0,
                epsilon_day: 1000.0,
                ..Settings::default()
            },
            // The bound of a gathering's window: the five requests reach it well within it.
            gather_ms: veil_aggregator::screen::MAX_GATHER_MS,
            ..Default::default()
        },
        ch.clone(),
    );
    let body = |p: Value| {
        let mut b = p;
        b["site_id"] = json!(SITE);
        b["date_range"] = json!([DAY, DAY]);
        b["filters"] = json!([["contains", "event:page", ["/heavy/"]]]);
        b
    };
    let (t, c, s, d, e) = tokio::join!(
        ask(
            &dp,
            body(
                json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"]})
            )
        ),
        ask(
            &dp,
            body(json!({"metrics": ["visitors"], "dimensions": ["time:day"]}))
        ),
        ask(
            &dp,
            body(json!({"metrics": ["visitors", "visits"], "dimensions": ["visit:source"]}))
        ),
        ask(
            &dp,
            body(json!({"metrics": ["visitors"], "dimensions": ["visit:country"]}))
        ),
        ask(
            &dp,
            body(json!({"metrics": ["visitors"], "dimensions": ["visit:device"]}))
        ),
    );
    for r in [&t, &c, &s, &d, &e] {
        assert_eq!(r["meta"]["privacy"]["mode"], "dp", "{r}");
    }
    // One visitor (the heavy one) has /heavy/ pages: its one visitor-day, noised.
    let visitors = t["results"][0]["metrics"][0].as_f64().unwrap();
    let interval = t["meta"]["privacy"]["interval95"]["visitors"]
        .as_f64()
        .unwrap();
    assert!((visitors - 1.0).abs() <= 3.0 * interval, "{t}");
    let (statements, reports) = dp.shared().screens.unwrap().shared();
    assert!(statements >= 1 && reports >= 2, "{statements} {reports}");
}

async fn ask(a: &Aggregator, body: Value) -> Value {
    let req = Request::builder()
        .method("POST")
        .uri("/api/v2/query")
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/json")
        .body(Bytes::from(body.to_string()))
        .unwrap();
    let r = a.handle(req).await.expect("an aggregator path");
    let status = r.status();
    let b = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
    serde_json::from_slice(&b).unwrap()
}

#[tokio::test]
async fn the_api_publishes_the_clamped_numbers() {
    let ch = veil_schemas::testing::fresh_database("dp_bounds_api").await;
    store(&ch).await;
    let b = Bounds::default();
    let config = |privacy: Settings| AggregatorConfig {
        api_token: Some(ADMIN.into()),
        sites: vec![SITE.into()],
        privacy,
        ..Default::default()
    };
    let question = json!({"site_id": SITE, "metrics": ["pageviews"], "date_range": [DAY, DAY]});
    let exact = Aggregator::new(config(Settings::exact()), ch.clone());
    let d = ask(&exact, question.clone()).await;
    let stored = (2 * ORDINARY + HEAVY_PAGES * HEAVY_REPEATS) as f64;
    assert_eq!(d["results"][0]["metrics"][0].as_f64(), Some(stored), "{d}");

    // The highest ε a site may set (10): noise of a few pageviews, so the clamp shows.
    let dp = Aggregator::new(
        config(Settings {
            epsilon_query: 10.0,
            epsilon_day: 100.0,
            ..Settings::default()
        }),
        ch.clone(),
    );
    let d = ask(&dp, question).await;
    let got = d["results"][0]["metrics"][0].as_f64().unwrap();
    let interval = d["meta"]["privacy"]["interval95"]["pageviews"]
        .as_f64()
        .unwrap();
    let clamped = (2 * ORDINARY) as f64 + b.pageviews as f64;
    assert!(interval < 10.0, "{d}");
    // Three 95 % intervals: outside them about once in 10^4 runs.
    assert!(
        (got - clamped).abs() <= 3.0 * interval,
        "published {got}, clamped truth {clamped}, stored {stored}: {d}"
    );
}

/// A site's own revenue bound (`revenue_bound` in its settings): the noise on revenue scales
/// with it, and one visitor-day's revenue above it is clamped. Two sites with the same rows —
/// 40 buyers of 20 USD and one of 5 000 USD — one with the deployment's bound (1 000 USD),
/// one with 50 USD; differential privacy at the highest ε a site may set.
#[tokio::test]
async fn a_sites_revenue_bound_narrows_the_noise_and_clamps_a_big_spender() {
    use veil_schemas::registry::{Registry, SiteSettings};
    let ch = veil_schemas::testing::fresh_database("dp_revenue_bound").await;
    let (wide, tight) = ("wide.example", "tight.example");
    let mut rows = Vec::new();
    for site in [wide, tight] {
        for i in 0..41 {
            let micros: u64 = if i == 40 { 5_000_000_000 } else { 20_000_000 };
            rows.push(sql!(
                "({}, toDateTime({}, 'UTC'), 'Purchase', '/checkout', {}, toFixedString({}, 16), {}, 'USD')",
                lit(site),
                lit(&format!("{DAY} 10:{:02}:00", i % 60)),
                lit(site),
                lit(&format!("buyer-{i:02}")),
                micros
            ));
        }
    }
    db::exec(
        &ch.client(),
        &sql!(
            "INSERT INTO events (site, timestamp, name, pathname, hostname, visitor_id, \
             revenue_micros, revenue_currency) VALUES {}",
            Sql::join(rows, ", ")
        ),
    )
    .await
    .unwrap();
    let goals = json!([{"name": "Purchase", "event_name": "Purchase", "currency": "USD"}]);
    let reg = Registry::new(&ch);
    for (site, bound) in [(wide, None), (tight, Some(50))] {
        let s = SiteSettings {
            goals: goals.as_array().unwrap().clone(),
            revenue_bound: bound,
            ..SiteSettings::default()
        };
        s.validate().unwrap();
        reg.put_site(site, s).await.unwrap();
    }
    // A bound of 0 or an absurd one is refused, naming the field.
    for bad in [0u64, 2_000_000_000] {
        let s = SiteSettings {
            revenue_bound: Some(bad),
            ..SiteSettings::default()
        };
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("revenue_bound"));
    }
    let dp = Aggregator::new(
        AggregatorConfig {
            api_token: Some(ADMIN.into()),
            privacy: Settings {
                epsilon_query: 10.0,
                epsilon_day: 100.0,
                ..Settings::default()
            },
            ..Default::default()
        },
        ch.clone(),
    );
    dp.registry().refresh().await.unwrap();
    let revenue = |site: &str| {
        json!({"site_id": site, "metrics": ["total_revenue"], "date_range": [DAY, DAY],
               "filters": [["is", "event:goal", ["Purchase"]]]})
    };
    let w = ask(&dp, revenue(wide)).await;
    let t = ask(&dp, revenue(tight)).await;
    let interval = |d: &Value| {
        d["meta"]["privacy"]["interval95"]["total_revenue"]
            .as_f64()
            .unwrap()
    };
    // The noise is proportional to the bound: 1 000 USD against 50 (the intervals are
    // published to the cent).
    let ratio = interval(&w) / interval(&t);
    assert!((ratio - 20.0).abs() < 0.1, "{ratio}: {w}\n{t}");
    // The big spender adds 50 USD, not 5 000: the published revenue is near 40 × 20 + 50.
    let got = t["results"][0]["metrics"][0]["value"].as_f64().unwrap();
    let clamped = 40.0 * 20.0 + 50.0;
    assert!(interval(&t) < 300.0, "{t}");
    assert!(
        (got - clamped).abs() <= 3.0 * interval(&t),
        "published {got}, clamped truth {clamped} (stored 5 800): {t}"
    );
    // The stored settings keep it.
    assert_eq!(
        reg.refresh()
            .await
            .unwrap()
            .site(tight)
            .unwrap()
            .settings
            .revenue_bound,
        Some(50)
    );
}
