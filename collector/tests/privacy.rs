//! The privacy core against a real ClickHouse: pinned visitor-hash vectors, shared daily salts
//! (agreement, rotation at 00:00 UTC, deletion after 48 h), two collectors agreeing on a visitor,
//! consent signals, child-directed sites and scrubbing of stored strings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use common::*;
use serde_json::json;
use veil_collector::pipeline::privacy::salts::{ClickHouseSaltStore, SaltStore, Salts};
use veil_collector::pipeline::privacy::VisitorHasher;
use veil_collector::pipeline::EventRow;
use veil_collector::Clock;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn visitor_hash_matches_the_pinned_vectors() {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("vectors/visitor_hash.json")).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for c in cases {
        let salt: [u8; 32] = hex(c["salt_hex"].as_str().unwrap()).try_into().unwrap();
        let ip = c["ip"].as_str().map(|s| s.parse().unwrap());
        let got = VisitorHasher::new(salt).visitor_id(
            c["site"].as_str().unwrap(),
            ip,
            c["user_agent"].as_str().unwrap(),
        );
        assert_eq!(
            got.to_vec(),
            hex(c["visitor_id_hex"].as_str().unwrap()),
            "{c}"
        );
    }
}

struct TestClock(Mutex<DateTime<Utc>>);
impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

#[tokio::test]
async fn salts_are_shared_rotate_at_midnight_and_vanish_after_48h() {
    let ch = veil_schemas::testing::fresh_database("salts").await;
    let clock = Arc::new(TestClock(Mutex::new(
        Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 0).unwrap(),
    )));
    let store: Arc<dyn SaltStore> = Arc::new(ClickHouseSaltStore::new(&ch));
    // Two collectors starting at the same moment on an empty table.
    let a = Salts::shared(store.clone(), clock.clone()).with_settle(Duration::from_millis(300));
    let b = Salts::shared(Arc::new(ClickHouseSaltStore::new(&ch)), clock.clone())
        .with_settle(Duration::from_millis(300));
    let (ra, rb) = tokio::join!(a.refresh(), b.refresh());
    ra.unwrap();
    rb.unwrap();
    let d1 = NaiveDate::from_ymd_opt(2026, 5, 1).unwrap();
    let d2 = NaiveDate::from_ymd_opt(2026, 5, 2).unwrap();
    let d3 = NaiveDate::from_ymd_opt(2026, 5, 3).unwrap();
    assert!(a.get(d1).is_some());
    assert_eq!(
        a.get(d1),
        b.get(d1),
        "both collectors use the same salt today"
    );
    assert_eq!(a.get(d2), b.get(d2), "and tomorrow");
    assert_ne!(a.get(d1), a.get(d2), "a new salt every day");
    let salt_d1 = a.get(d1).unwrap();

    // 00:00:01 the next day: the new salt is in force, yesterday's is still known.
    *clock.0.lock().unwrap() = Utc.with_ymd_and_hms(2026, 5, 2, 0, 0, 1).unwrap();
    a.refresh().await.unwrap();
    assert_eq!(a.get(d1), Some(salt_d1));
    let v1 = VisitorHasher::new(a.get(d1).unwrap()).visitor_id(
        "s.example",
        Some("203.0.113.1".parse().unwrap()),
        "UA",
    );
    let v2 = VisitorHasher::new(a.get(d2).unwrap()).visitor_id(
        "s.example",
        Some("203.0.113.1".parse().unwrap()),
        "UA",
    );
    assert_ne!(v1, v2, "visitor ids do not link across days");

    // Two days on: the first day's salt is gone from memory and from ClickHouse.
    *clock.0.lock().unwrap() = Utc.with_ymd_and_hms(2026, 5, 3, 0, 0, 1).unwrap();
    a.refresh().await.unwrap();
    assert_eq!(a.get(d1), None);
    assert!(a.get(d3).is_some());
    let left: u64 = ch
        .client()
        .sql(&Sql::new(
            "SELECT count() FROM salts WHERE day = toDate('2026-05-01')",
        ))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(left, 0);
    let kept: u64 = ch
        .client()
        .sql(&Sql::new(
            "SELECT count() FROM salts WHERE day >= toDate('2026-05-02')",
        ))
        .fetch_one()
        .await
        .unwrap();
    assert!(kept >= 3, "yesterday, today and tomorrow remain: {kept}");
}

#[tokio::test]
async fn two_collectors_on_one_clickhouse_see_one_visitor() {
    // Visitor ids hash with the UTC day's salt: the same person on either side of midnight is
    // two ids by design. If the day turned between the two posts, they are made again (on a
    // fresh database) on the new day — midnight passes once.
    let (ch, visitors) = loop {
        let day = chrono::Utc::now().date_naive();
        let ch = veil_schemas::testing::fresh_database("two_collectors").await;
        let (mut c1, mut c2) = tokio::join!(
            start_on(ch.clone(), config(&["example.com"])),
            start_on(ch.clone(), config(&["example.com"]))
        );
        for c in [&c1, &c2] {
            let r = c
                .post(
                    "/api/event",
                    &[("User-Agent", CHROME), ("X-Forwarded-For", "203.0.113.50")],
                    &plausible("example.com", "https://example.com/"),
                )
                .await;
            assert_eq!(r.status, 202);
        }
        let same_day = chrono::Utc::now().date_naive() == day;
        c1.shutdown().await.unwrap();
        c2.shutdown().await.unwrap();
        let visitors: u64 = ch
            .client()
            .sql(&Sql::new("SELECT uniqExact(visitor_id) FROM events"))
            .fetch_one()
            .await
            .unwrap();
        if same_day {
            break (ch, visitors);
        }
    };
    assert_eq!(count(&ch, "1").await, 2);
    assert_eq!(
        visitors, 1,
        "the same person through two collectors is one visitor"
    );
}

#[tokio::test]
async fn opt_out_signals_are_honoured() {
    let mut cfg = config(&["strict.example", "nodnt.example"]);
    cfg.ignore_dnt_sites = vec!["nodnt.example".into()];
    let mut c = start("consent", cfg).await;
    let send = |site: &'static str, path: &'static str, h: (&'static str, &'static str)| {
        let body = plausible(site, &format!("https://{site}{path}"));
        let c = &c;
        async move {
            c.post("/api/event", &[("User-Agent", CHROME), h], &body)
                .await
                .status
        }
    };
    assert_eq!(send("strict.example", "/gpc", ("Sec-GPC", "1")).await, 202);
    assert_eq!(send("strict.example", "/dnt", ("DNT", "1")).await, 202);
    assert_eq!(
        send("strict.example", "/plain", ("X-Nothing", "1")).await,
        202
    );
    assert_eq!(
        send("nodnt.example", "/dnt-ignored", ("DNT", "1")).await,
        202
    );
    assert_eq!(
        send("nodnt.example", "/gpc-always", ("Sec-GPC", "1")).await,
        202
    );
    let native = json!([
        {"site": "strict.example", "name": "app_open", "url": "app://strict.example/home", "opt_out": true},
        {"site": "strict.example", "name": "app_open", "url": "app://strict.example/ok"}
    ]);
    let r = c.post("/v1/events", &[], &native.to_string()).await;
    assert_eq!(
        (r.json()["accepted"].clone(), r.json()["ignored"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        c.metric("veil_events_dropped_total{reason=\"consent\"}")
            .await,
        4.0
    );
    c.shutdown().await.unwrap();
    let mut paths: Vec<String> =
        c.ch.client()
            .sql(&Sql::new("SELECT pathname FROM events ORDER BY pathname"))
            .fetch_all()
            .await
            .unwrap();
    paths.sort();
    assert_eq!(paths, vec!["/dnt-ignored", "/ok", "/plain"]);
}

#[tokio::test]
async fn child_directed_sites_store_the_minimum() {
    let mut cfg = config(&[]);
    cfg.child_sites = vec!["kids.example".into()];
    let mut c = start("children", cfg).await;
    let body = json!({
        "n": "pageview", "d": "kids.example",
        "u": "https://kids.example/games?utm_source=newsletter",
        "r": "https://search.example/?q=name", "p": {"favourite": "dinosaurs"}
    });
    let r = c
        .post(
            "/api/event",
            &[("User-Agent", CHROME), ("X-Forwarded-For", "203.0.113.8")],
            &body.to_string(),
        )
        .await;
    assert_eq!(r.status, 202);
    c.shutdown().await.unwrap();
    let rows: Vec<EventRow> =
        c.ch.client()
            .sql(&sql!("SELECT {} FROM events", fields::<EventRow>()))
            .fetch_all()
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (r.pathname.as_str(), r.device.as_str(), r.browser.as_str()),
        ("/games", "desktop", "Chrome")
    );
    assert_eq!(r.visitor_id, [0; 16], "no visitor hash for children");
    assert_eq!(r.session_id, [0; 16]);
    assert!(r.referrer.is_empty() && r.referrer_source.is_empty() && r.utm_source.is_empty());
    assert!(r.browser_version.is_empty() && r.os_version.is_empty());
    assert!(r.prop_keys.is_empty() && r.prop_values.is_empty());
}

#[tokio::test]
async fn identifiers_in_paths_and_props_are_scrubbed_before_storage() {
    let mut c = start("scrub", config(&["example.com"])).await;
    let body = json!({
        "n": "signup", "d": "example.com",
        "u": "https://example.com/users/jane.doe%40example.org/orders/123e4567-e89b-12d3-a456-426614174000",
        "p": {"contact": "call +44 20 7946 0958 or jane@example.org", "card": "4111 1111 1111 1111", "plan": "pro"}
    });
    assert_eq!(
        c.post("/api/event", &[("User-Agent", CHROME)], &body.to_string())
            .await
            .status,
        202
    );
    c.shutdown().await.unwrap();
    let rows: Vec<EventRow> =
        c.ch.client()
            .sql(&sql!("SELECT {} FROM events", fields::<EventRow>()))
            .fetch_all()
            .await
            .unwrap();
    let r = &rows[0];
    assert_eq!(r.pathname, "/users/[email]/orders/[uuid]");
    let props: std::collections::BTreeMap<_, _> = r.prop_keys.iter().zip(&r.prop_values).collect();
    assert_eq!(props[&"contact".to_string()], "call [phone] or [email]");
    assert_eq!(props[&"card".to_string()], "[number]");
    assert_eq!(props[&"plan".to_string()], "pro");
}
