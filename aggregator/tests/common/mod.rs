//! The known dataset and helpers the Stats API tests share (`stats.rs`, `privacy.rs`): one
//! site with goals and a funnel, events written straight into `events`, and a query runner.

#![allow(dead_code)]

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use veil_aggregator::site::{Funnel, Goal, SiteView};
use veil_aggregator::stats;
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
    }
}

pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

pub async fn insert(ch: &ClickHouseConfig, site: &str, evs: &[Ev]) {
    let rows: Vec<String> = evs
        .iter()
        .map(|e| {
            let keys: Vec<String> = e.props.iter().map(|(k, _)| lit(k)).collect();
            let vals: Vec<String> = e.props.iter().map(|(_, v)| lit(v)).collect();
            format!(
                "({}, toDateTime({}, 'UTC'), {}, {}, 'shop.example', toFixedString({}, 16), {}, {}, {}, {}, [{}], [{}], {}, {})",
                lit(site),
                lit(e.at),
                lit(e.name),
                lit(e.path),
                lit(&e.visitor),
                lit(e.source),
                lit(if e.source.is_empty() { "Direct" } else { "Organic Search" }),
                lit(e.country),
                lit(e.device),
                keys.join(","),
                vals.join(","),
                e.revenue_micros,
                lit(if e.device == "Mobile" { "Safari" } else { "Chrome" }),
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO events (site, timestamp, name, pathname, hostname, visitor_id, source, channel, country_code, device, prop_keys, prop_values, revenue_micros, browser) VALUES {}",
        rows.join(", ")
    );
    ch.client().query_raw(&sql).execute().await.unwrap();
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
        },
        Goal {
            name: "Blog".into(),
            event_name: None,
            page_path: Some("/blog/*".into()),
        },
        Goal {
            name: "Pricing".into(),
            event_name: None,
            page_path: Some("/pricing".into()),
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
    let (_, doc) = stats::run(&ch.client(), site, body.to_string().as_bytes(), now(), None)
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
                    .map(|d| d.as_str().unwrap().to_string())
                    .collect(),
                r["metrics"].as_array().unwrap().clone(),
            )
        })
        .collect()
}
