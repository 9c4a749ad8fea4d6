//! The known dataset and helpers the Stats API tests share: one site with goals and a
//! funnel, events written straight into `events`, a query runner, one-number queries, and an
//! aggregator with a request builder for the tests that go through HTTP.

#![allow(dead_code)]

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use http::Request;
use serde_json::{json, Value};
use veil_aggregator::site::{Funnel, Goal, SiteView};
use veil_aggregator::{db, stats, Aggregator, AggregatorConfig};
use veil_schemas::sql;
use veil_schemas::sql::{lit, Sql};
use veil_schemas::ClickHouseConfig;

pub const SITE: &str = "shop.example";

pub struct Ev {
    pub visitor: String,
    pub at: &'static str,
    pub name: &'static str,
    pub path: &'static str,
    pub source: &'static str,
    pub country: &'static str,
    pub device: &'static str,
    pub props: &'static [(&'static str, &'static str)],
    pub revenue_micros: i64,
    /// The revenue's currency (the dataset's is euros).
    pub currency: &'static str,
}

pub fn ev(visitor: String, at: &'static str, name: &'static str, path: &'static str) -> Ev {
    Ev {
        visitor,
        at,
        name,
        path,
        source: "",
        country: "US",
        device: "Mobile",
        props: &[],
        revenue_micros: 0,
        currency: "EUR",
    }
}

/// Writes `evs` of `site` straight into `events`.
pub async fn insert(ch: &ClickHouseConfig, site: &str, evs: &[Ev]) {
    let rows = evs.iter().map(|e| {
        let keys = Sql::join(e.props.iter().map(|(k, _)| lit(k)), ",");
        let vals = Sql::join(e.props.iter().map(|(_, v)| lit(v)), ",");
        sql!(
            "({}, toDateTime({}, 'UTC'), {}, {}, 'shop.example', toFixedString({}, 16), {}, {}, {}, {}, [{}], [{}], {}, {}, {})",
            lit(site),
            lit(e.at),
            lit(e.name),
            lit(e.path),
            lit(&e.visitor),
            lit(e.source),
            lit(if e.source.is_empty() { "Direct" } else { "Organic Search" }),
            lit(e.country),
            lit(e.device),
            keys,
            vals,
            e.revenue_micros,
            lit(if e.revenue_micros != 0 { e.currency } else { "" }),
            lit(if e.device == "Mobile" { "Safari" } else { "Chrome" }),
        )
    });
    let q = sql!(
        "INSERT INTO events (site, timestamp, name, pathname, hostname, visitor_id, source, channel, country_code, device, prop_keys, prop_values, revenue_micros, revenue_currency, browser) VALUES {}",
        Sql::join(rows, ", ")
    );
    db::exec(&ch.client(), &q).await.unwrap();
}

/// `SELECT count() …` (or any one-number query) through the aggregator's own door.
pub async fn count(ch: &ClickHouseConfig, q: Sql) -> u64 {
    db::count(&ch.client(), &q)
        .await
        .unwrap_or_else(|e| panic!("{q:?}: {e}"))
}

/// The dataset (UTC):
/// - 2026-11-20: 10 Google visitors from DE on desktop (A0–A9) land on `/` at 10:00; A0–A5
///   go on to `/pricing` at 10:01; A0–A4 sign up at 10:03 (plan=pro, 10.50 EUR).
///   6 direct visitors from the US on mobile (B0–B5) read `/blog/x` at 12:00 and come back to
///   `/` at 14:00 (a second visit). 2 Hacker News visitors from FR (C0, C1) view `/` at 15:00.
/// - 2026-11-19: 5 direct visitors (D0–D4) view `/`.
pub async fn seed(ch: &ClickHouseConfig) {
    let mut evs = Vec::new();
    for i in 0..10 {
        let a = format!("A{i}");
        let g = |at, name, path| Ev {
            source: "Google",
            country: "DE",
            device: "Desktop",
            ..ev(a.clone(), at, name, path)
        };
        evs.push(g("2026-11-20 10:00:00", "pageview", "/"));
        if i < 6 {
            evs.push(g("2026-11-20 10:01:00", "pageview", "/pricing"));
        }
        if i < 5 {
            evs.push(Ev {
                props: &[("plan", "pro")],
                revenue_micros: 10_500_000,
                ..g("2026-11-20 10:03:00", "Signup", "/pricing")
            });
        }
    }
    for i in 0..6 {
        evs.push(ev(
            format!("B{i}"),
            "2026-11-20 12:00:00",
            "pageview",
            "/blog/x",
        ));
        evs.push(ev(format!("B{i}"), "2026-11-20 14:00:00", "pageview", "/"));
    }
    for i in 0..2 {
        evs.push(Ev {
            source: "Hacker News",
            country: "FR",
            ..ev(format!("C{i}"), "2026-11-20 15:00:00", "pageview", "/")
        });
    }
    for i in 0..5 {
        evs.push(ev(format!("D{i}"), "2026-11-19 09:00:00", "pageview", "/"));
    }
    insert(ch, SITE, &evs).await;
}

pub fn site() -> SiteView {
    let mut s = SiteView::new(SITE);
    s.goals = vec![
        Goal {
            name: "Signup".into(),
            event_name: Some("Signup".into()),
            page_path: None,
            currency: Some("EUR".into()),
        },
        Goal {
            name: "Blog".into(),
            event_name: None,
            page_path: Some("/blog/*".into()),
            currency: None,
        },
        Goal {
            name: "Pricing".into(),
            event_name: None,
            page_path: Some("/pricing".into()),
            currency: None,
        },
    ];
    s.funnels = vec![Funnel {
        name: "Buy".into(),
        steps: vec!["Pricing".into(), "Signup".into()],
    }];
    s
}

pub fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
}

pub async fn q(ch: &ClickHouseConfig, site: &SiteView, body: Value) -> Value {
    let (_, doc) = stats::run(
        &ch.client(),
        site,
        body.to_string().as_bytes(),
        now(),
        Default::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{body}: {e}"));
    doc
}

pub fn base(extra: Value) -> Value {
    let mut b = json!({"site_id": SITE, "date_range": ["2026-11-20", "2026-11-20"]});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

pub fn rows(doc: &Value) -> Vec<(Vec<String>, Vec<Value>)> {
    doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dimensions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    // Strings, and numbers (`visit:city`'s GeoNames ids) as their digits.
                    .map(|d| {
                        d.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| d.to_string())
                    })
                    .collect(),
                r["metrics"].as_array().unwrap().clone(),
            )
        })
        .collect()
}

/// An aggregator serving [`SITE`] from flags, open (no admin token), for HTTP tests.
pub fn stats_aggregator(ch: &ClickHouseConfig) -> Aggregator {
    Aggregator::new(
        AggregatorConfig {
            sites: vec![SITE.into()],
            privacy: veil_aggregator::privacy::Settings::exact(),
            ..Default::default()
        },
        ch.clone(),
    )
}

/// A request to the aggregator with an `Accept` header.
pub fn request(path: &str, method: &str, body: String, accept: &str) -> Request<Bytes> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("accept", accept)
        .body(Bytes::from(body))
        .unwrap()
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
pub fn open_visits_dataset() -> Vec<Ev> {
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
