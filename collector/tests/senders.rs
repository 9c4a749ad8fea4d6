//! The drop-in endpoints against a real ClickHouse: Umami's `/api/send`, Aptabase's
//! `/api/v0/event(s)` and the no-JS pixel, with site aliases. (The real SDK packages are run
//! against Veil by `collector/tracker/test/sdk.test.mjs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::*;
use serde_json::json;
use veil_collector::pipeline::EventRow;

const UMAMI_ID: &str = "4fb7fa4c-5b46-438d-94b3-3a8fb9bc2e8b";
const APP_KEY: &str = "A-SH-0123456789";

fn cfg() -> veil_collector::CollectorConfig {
    let mut c = config(&["example.com", "app.example"]);
    c.site_aliases = vec![
        format!("{UMAMI_ID}=example.com"),
        format!("{APP_KEY}=app.example"),
    ];
    c
}

#[tokio::test]
async fn umami_events_are_stored_and_identify_is_not() {
    let mut c = start("umami", cfg()).await;
    let ev = json!({"type": "event", "payload": {
        "website": UMAMI_ID, "hostname": "example.com", "url": "/pricing?utm_source=umami&token=abc",
        "referrer": "https://news.example/", "title": "Pricing for jane@example.org", "screen": "1920x1080",
        "language": "de-DE", "name": "signup", "data": {"plan": "pro"}, "id": "user-123"
    }});
    let r = c
        .post(
            "/api/send",
            &[("User-Agent", CHROME), ("Content-Type", "application/json")],
            &ev.to_string(),
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, "{}"));
    let pv = json!({"type": "event", "payload": {"website": UMAMI_ID, "url": "/", "hostname": "example.com"}});
    assert_eq!(
        c.post("/api/send", &[("User-Agent", CHROME)], &pv.to_string())
            .await
            .status,
        200
    );
    let id = json!({"type": "identify", "payload": {"website": UMAMI_ID, "data": {"email": "jane@example.org", "userId": "u-77"}}});
    assert_eq!(
        c.post("/api/send", &[("User-Agent", CHROME)], &id.to_string())
            .await
            .status,
        200
    );
    assert_eq!(
        c.metric("veil_events_dropped_total{reason=\"identify\"}")
            .await,
        1.0
    );
    let bad = c
        .post("/api/send", &[], r#"{"type":"event","payload":{}}"#)
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("payload.website"));
    let pre = request(
        c.addr,
        "OPTIONS",
        "/api/send",
        &[("Origin", "https://example.com")],
        b"",
    )
    .await;
    assert!(pre.headers.contains("x-umami-cache"), "{}", pre.headers);
    c.shutdown().await.unwrap();
    let rows: Vec<EventRow> =
        c.ch.client()
            .sql(&sql!(
                "SELECT {} FROM events ORDER BY name",
                fields::<EventRow>()
            ))
            .fetch_all()
            .await
            .unwrap();
    assert_eq!(rows.len(), 2);
    let pageview = &rows[0];
    assert_eq!(
        (pageview.name.as_str(), pageview.pathname.as_str()),
        ("pageview", "/")
    );
    let signup = &rows[1];
    assert_eq!(signup.site, "example.com");
    assert_eq!(signup.name, "signup");
    assert_eq!(signup.pathname, "/pricing");
    assert_eq!(signup.utm_source, "umami");
    assert_eq!(signup.referrer_source, "news.example");
    assert_eq!(signup.screen_class, "desktop");
    assert_eq!(signup.locale, "de-DE");
    assert_eq!(
        (signup.prop_keys.clone(), signup.prop_values.clone()),
        (vec!["plan".to_string()], vec!["pro".to_string()])
    );
    let dump = format!("{rows:?}");
    assert!(
        !dump.contains("jane@example.org") && !dump.contains("user-123") && !dump.contains("u-77")
    );
}

#[tokio::test]
async fn aptabase_events_carry_app_facts() {
    let mut c = start("aptabase", cfg()).await;
    let sys = json!({"locale": "en_US", "osName": "iOS", "osVersion": "17.1.2", "appVersion": "1.2.0", "appBuildNumber": "42",
        "sdkVersion": "aptabase-swift@0.3.0", "engineName": "WebKit", "engineVersion": "617.1.17", "isDebug": false});
    let one = json!({"timestamp": chrono::Utc::now().to_rfc3339(), "sessionId": "1700000000123", "eventName": "app_started",
        "systemProps": sys, "props": {"launch_ms": 840}});
    let h = [
        ("App-Key", APP_KEY),
        ("User-Agent", "Mozilla/5.0 (Linux) Not-A-Browser"),
    ];
    let r = c.post("/api/v0/event", &h, &one.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let late = (chrono::Utc::now() - chrono::Duration::days(3)).to_rfc3339();
    let future = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let batch = json!([
        {"timestamp": late, "sessionId": "1700000000123", "eventName": "screen_view", "systemProps": sys, "props": {"screen": "settings"}},
        {"timestamp": future, "sessionId": "1700000000999", "eventName": "crash", "systemProps": sys}
    ]);
    assert_eq!(
        c.post("/api/v0/events", &h, &batch.to_string())
            .await
            .status,
        200
    );
    let missing = c.post("/api/v0/event", &[], &one.to_string()).await;
    assert_eq!(missing.status, 400);
    assert!(missing.body.contains("App-Key"));
    let bad = c
        .post(
            "/api/v0/events",
            &h,
            &json!([{"sessionId": "x"}]).to_string(),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body.contains("event 0") && bad.body.contains("eventName"),
        "{}",
        bad.body
    );
    c.shutdown().await.unwrap();
    let rows: Vec<EventRow> =
        c.ch.client()
            .sql(&sql!(
                "SELECT {} FROM events ORDER BY timestamp",
                fields::<EventRow>()
            ))
            .fetch_all()
            .await
            .unwrap();
    assert_eq!(rows.len(), 3);
    let r = &rows[1];
    assert_eq!(r.site, "app.example");
    assert_eq!(
        (r.os.as_str(), r.os_version.as_str(), r.device.as_str()),
        ("iOS", "17.1", "app")
    );
    assert_eq!(
        (
            r.app_version.as_str(),
            r.app_build.as_str(),
            r.locale.as_str()
        ),
        ("1.2.0", "42", "en-US")
    );
    assert_eq!(r.engine, "WebKit 617");
    assert!(
        rows[0].timestamp < rows[1].timestamp,
        "a 3-day-old event keeps its time"
    );
    assert!(
        i64::from(rows[2].timestamp) <= chrono::Utc::now().timestamp(),
        "the future is clamped"
    );
    assert_eq!(
        rows[0].session_id, rows[1].session_id,
        "same app session, same hashed id"
    );
    assert_ne!(rows[1].session_id, rows[2].session_id);
    let dump = format!("{rows:?}");
    assert!(
        !dump.contains("1700000000123"),
        "the app's session id is stored only hashed"
    );
}

#[tokio::test]
async fn the_pixel_answers_a_gif_and_records_a_pageview() {
    let mut c = start("pixel", cfg()).await;
    let r = request(c.addr, "GET", "/p.gif?d=example.com&u=https%3A%2F%2Fexample.com%2Fnewsletter%3Femail%3Da%40b.c&r=https%3A%2F%2Fmail.example%2F", &[("User-Agent", CHROME)], b"").await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers.contains("content-type: image/gif") && r.headers.contains("no-store"),
        "{}",
        r.headers
    );
    assert!(r.body.starts_with("GIF89a"));
    let bad = request(c.addr, "GET", "/p.gif?d=example.com", &[], b"").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("`u`"));
    c.shutdown().await.unwrap();
    let rows: Vec<EventRow> =
        c.ch.client()
            .sql(&sql!("SELECT {} FROM events", fields::<EventRow>()))
            .fetch_all()
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].pathname.as_str(), rows[0].referrer_source.as_str()),
        ("/newsletter", "mail.example")
    );
}

#[tokio::test]
async fn geoip_fills_country_region_city_and_isp_and_children_keep_only_the_country() {
    let mut cfg = cfg();
    cfg.child_sites = vec!["kids.example".into()];
    cfg.geoip_dir =
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geoip"));
    let mut c = start("geoip", cfg).await;
    for (site, ip, path) in [
        ("example.com", "203.0.113.20", "de"),
        ("example.com", "2001:db8::5", "fr"),
        ("example.com", "192.0.2.1", "jp"),
        ("kids.example", "198.51.100.7", "kid"),
    ] {
        let r = c
            .post(
                "/api/event",
                &[("User-Agent", CHROME), ("X-Forwarded-For", ip)],
                &plausible(site, &format!("https://{site}/{path}")),
            )
            .await;
        assert_eq!(r.status, 202);
    }
    c.shutdown().await.unwrap();
    let rows: Vec<EventRow> =
        c.ch.client()
            .sql(&sql!(
                "SELECT {} FROM events ORDER BY pathname",
                fields::<EventRow>()
            ))
            .fetch_all()
            .await
            .unwrap();
    let by = |p: &str| rows.iter().find(|r| r.pathname == p).unwrap();
    let de = by("/de");
    assert_eq!(
        (
            de.country_code.as_str(),
            de.region.as_str(),
            de.city.as_str()
        ),
        ("DE", "DE-BY|Bavaria", "2867714|Munich")
    );
    assert_eq!((de.asn, de.isp.as_str()), (64500, "Example Carrier"));
    let fr = by("/fr");
    assert_eq!(
        (fr.country_code.as_str(), fr.city.as_str()),
        ("FR", "2988507|Paris")
    );
    let jp = by("/jp");
    assert_eq!(
        (jp.country_code.as_str(), jp.city.as_str(), jp.asn),
        ("JP", "", 0)
    );
    let kid = by("/kid");
    assert_eq!(
        kid.country_code, "US",
        "child-directed sites keep the country"
    );
    assert!(kid.region.is_empty() && kid.city.is_empty() && kid.isp.is_empty() && kid.asn == 0);
}

#[tokio::test]
async fn apps_can_use_the_native_api() {
    let mut c = start("native_app", cfg()).await;
    let batch = json!([{"site": "app.example", "name": "app_launch", "url": "app://app.example/home",
        "props": {"launch_ms": 420}, "app": {"version": "2.0.1", "build": "77", "os": "Android", "os_version": "14.0.1",
        "locale": "pt_BR", "sdk": "veil-kotlin@0.1", "session_id": "s-123456789",
        "device_model": "SM-S921B", "install_source": "play-store"}}]);
    let r = c
        .post(
            "/v1/events",
            &[("User-Agent", "okhttp/4.12.0")],
            &batch.to_string(),
        )
        .await;
    assert_eq!(r.json()["accepted"], 1, "{}", r.body);
    c.shutdown().await.unwrap();
    let rows: Vec<EventRow> =
        c.ch.client()
            .sql(&sql!("SELECT {} FROM events", fields::<EventRow>()))
            .fetch_all()
            .await
            .unwrap();
    let a = &rows[0];
    assert_eq!(
        (a.device.as_str(), a.os.as_str(), a.os_version.as_str()),
        ("app", "Android", "14.0")
    );
    assert_eq!(
        (
            a.app_version.as_str(),
            a.app_build.as_str(),
            a.locale.as_str()
        ),
        ("2.0.1", "77", "pt-BR")
    );
    assert_eq!(a.prop_values, vec!["420".to_string()]);
    assert_eq!(
        (a.device_model.as_str(), a.install_source.as_str()),
        ("SM-S921B", "play-store")
    );
    assert!(!format!("{rows:?}").contains("s-123456789"));
}

#[tokio::test]
async fn a_site_may_keep_bots_flagged_instead_of_dropped() {
    let mut cfg = cfg();
    cfg.keep_bots_sites = vec!["app.example".into()];
    let mut c = start("keep_bots", cfg).await;
    for site in ["app.example", "example.com"] {
        let r = c
            .post(
                "/api/event",
                &[("User-Agent", GOOGLEBOT)],
                &plausible(site, &format!("https://{site}/crawled")),
            )
            .await;
        assert_eq!(r.status, 202);
    }
    assert_eq!(
        c.metric("veil_events_dropped_total{reason=\"bot_crawler\"}")
            .await,
        1.0,
        "dropped for the other site"
    );
    c.shutdown().await.unwrap();
    let rows: Vec<EventRow> =
        c.ch.client()
            .sql(&sql!("SELECT {} FROM events", fields::<EventRow>()))
            .fetch_all()
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].site.as_str(), rows[0].bot.as_str()),
        ("app.example", "bot_crawler")
    );
}

#[tokio::test]
async fn a_site_may_keep_chosen_query_parameters() {
    let mut cfg = cfg();
    cfg.site_query_params = vec!["example.com=page".into(), "example.com=q".into()];
    let mut c = start("query_params", cfg).await;
    let url = "https://example.com/search?token=secret123&q=red+shoes&email=a%40b.example&page=2";
    assert_eq!(
        c.post(
            "/api/event",
            &[("User-Agent", CHROME)],
            &plausible("example.com", url)
        )
        .await
        .status,
        202
    );
    assert_eq!(
        c.post(
            "/api/event",
            &[("User-Agent", CHROME)],
            &plausible("app.example", "https://app.example/s?page=2")
        )
        .await
        .status,
        202
    );
    c.shutdown().await.unwrap();
    let mut paths: Vec<String> =
        c.ch.client()
            .sql(&Sql::new("SELECT pathname FROM events ORDER BY pathname"))
            .fetch_all()
            .await
            .unwrap();
    paths.sort();
    assert_eq!(
        paths,
        vec!["/s".to_string(), "/search?page=2&q=red+shoes".to_string()],
        "only the allowed ones, only for that site"
    );
}

#[tokio::test]
async fn browser_hits_from_data_centres_are_bots_but_servers_may_send_from_there() {
    let mut cfg = cfg();
    cfg.geoip_dir =
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geoip"));
    cfg.keep_bots_sites = vec!["app.example".into()];
    let mut c = start("datacenter", cfg).await;
    // 192.0.2.200 sits in the fixture's hosting network (AS16509).
    let h = [("User-Agent", CHROME), ("X-Forwarded-For", "192.0.2.200")];
    assert_eq!(
        c.post(
            "/api/event",
            &h,
            &plausible("example.com", "https://example.com/dc")
        )
        .await
        .status,
        202
    );
    assert_eq!(
        c.post(
            "/api/event",
            &h,
            &plausible("app.example", "https://app.example/dc")
        )
        .await
        .status,
        202
    );
    let native =
        json!([{"site": "example.com", "name": "server_event", "url": "https://example.com/srv"}]);
    assert_eq!(
        c.post("/v1/events", &h, &native.to_string()).await.json()["accepted"],
        1
    );
    assert_eq!(
        c.metric("veil_events_dropped_total{reason=\"bot_datacenter\"}")
            .await,
        1.0
    );
    c.shutdown().await.unwrap();
    let rows: Vec<EventRow> =
        c.ch.client()
            .sql(&sql!(
                "SELECT {} FROM events ORDER BY pathname",
                fields::<EventRow>()
            ))
            .fetch_all()
            .await
            .unwrap();
    let got: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.pathname.clone(), r.bot.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("/dc".to_string(), "bot_datacenter".to_string()),
            ("/srv".to_string(), String::new())
        ]
    );
}
