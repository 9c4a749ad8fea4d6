//! The admin API, site keys and shared links against a real ClickHouse: sites created through
//! the API reach the collector pipeline after a registry refresh; keys are shown once, stored
//! as hashes, scoped to one site (404 like an unknown site elsewhere) and revocable; shared
//! links with and without password and expiry; write-only ingest keys (hashed, never read
//! keys, revocable); a new site named like another site's alias refused; per-key rate limits;
//! field-naming 400s;
//! hostile strings stored verbatim; two aggregators sharing one registry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http::{HeaderMap, Request};
use serde_json::{json, Value};
use veil_aggregator::{db, Aggregator, AggregatorConfig, Clock, ManualClock};
use veil_collector::metrics::DropReason;
use veil_collector::pipeline::{Client, Incoming, Outcome, Pipeline};
use veil_collector::sites::SiteRegistry;
use veil_schemas::registry::Registry;
use veil_schemas::sql::Sql;
use veil_schemas::ClickHouseConfig;

const ADMIN: &str = "admin-token-0123456789";

fn config() -> AggregatorConfig {
    AggregatorConfig {
        api_token: Some(ADMIN.into()),
        sites: vec!["flag.example".into()],
        privacy: veil_aggregator::privacy::Settings::exact(),
        ..Default::default()
    }
}

async fn agg(label: &str, cfg: AggregatorConfig) -> (Aggregator, ClickHouseConfig) {
    let ch = veil_schemas::testing::fresh_database(label).await;
    let a = Aggregator::new(cfg, ch.clone());
    a.registry().refresh().await.unwrap();
    (a, ch)
}

async fn call_with(
    a: &Aggregator,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, HeaderMap, Value) {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(Bytes::from(body.unwrap_or_default().to_string()))
        .unwrap();
    let r = a.handle(req).await.expect("an aggregator path");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("non-JSON body ({e}): {:?}", String::from_utf8_lossy(&body)));
    (status, headers, v)
}

async fn call(
    a: &Aggregator,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|v| v.to_string());
    let (s, _, v) = call_with(a, method, path, token, &[], body.as_deref()).await;
    (s, v)
}

fn query(site: &str) -> Value {
    json!({"site_id": site, "metrics": ["pageviews"], "date_range": "day"})
}

fn pageview(domain: &str) -> Incoming {
    Incoming {
        domain: domain.into(),
        name: "pageview".into(),
        url: format!("https://{domain}/"),
        client: Client {
            ip: Some("203.0.113.7".parse().unwrap()),
            user_agent: "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
                .into(),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn sites_created_through_the_api_reach_the_collector() {
    let (a, ch) = agg("admin_reach", config()).await;
    // The collector of another process: its own registry on the same database.
    let sites = Arc::new(SiteRegistry::new(Vec::<String>::new()));
    let store = Registry::new(&ch);
    store.refresh().await.unwrap();
    sites.attach_store(store.clone());
    let p = Pipeline::with_key(sites.clone(), Default::default(), [3; 32]);
    assert!(matches!(
        p.process(pageview("new.example"), Utc::now()).unwrap(),
        Outcome::Drop(DropReason::UnknownSite)
    ));

    let (s, v) = call(
        &a,
        "POST",
        "/api/v1/sites",
        Some(ADMIN),
        Some(json!({"domain": "New.Example", "aliases": ["umami-0b6d", "A-EU-42"], "timezone": "Europe/Berlin"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["domain"], "new.example");
    assert_eq!(v["source"], "stored");
    assert_eq!(v["timezone"], "Europe/Berlin");
    assert_eq!(v["min_visitors"], 5);
    let (s, v) = call(
        &a,
        "POST",
        "/api/v1/sites",
        Some(ADMIN),
        Some(json!({"domain": "new.example"})),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    let (s, _) = call(
        &a,
        "POST",
        "/api/v1/sites",
        Some(ADMIN),
        Some(json!({"domain": "flag.example"})),
    )
    .await;
    assert_eq!(s, 409, "a flag site exists too");

    // Within one refresh the other process accepts its events, under its aliases too.
    store.refresh().await.unwrap();
    match p.process(pageview("new.example"), Utc::now()).unwrap() {
        Outcome::Store(r) => assert_eq!(r.site, "new.example"),
        o => panic!("{o:?}"),
    }
    assert_eq!(sites.resolve("A-EU-42").unwrap().0, "new.example");
    assert!(sites.list().contains(&"new.example".to_string()));

    // The aggregator reports on it, with its time zone.
    assert_eq!(a.site("new.example").unwrap().timezone, "Europe/Berlin");
    let (s, v) = call(
        &a,
        "POST",
        "/api/v2/query",
        Some(ADMIN),
        Some(query("new.example")),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(&a, "GET", "/api/v1/sites", Some(ADMIN), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["sites"], json!(["flag.example", "new.example"]));
    assert_eq!(v["details"][0]["source"], "flags");

    // PUT replaces settings: child mode reaches the collector.
    let (s, v) = call(
        &a,
        "PUT",
        "/api/v1/sites/new.example",
        Some(ADMIN),
        Some(json!({"child_directed": true, "honor_dnt": false})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["aliases"], json!([]), "PUT replaces, it does not merge");
    assert_eq!(v["timezone"], "UTC");
    store.refresh().await.unwrap();
    let (_, settings) = sites.resolve("new.example").unwrap();
    assert!(settings.child_directed);
    assert!(!settings.honor_dnt);
    assert!(sites.resolve("A-EU-42").is_none());

    // A stored record for a flag site wins; deleting it falls back to the flags.
    let (s, v) = call(
        &a,
        "PUT",
        "/api/v1/sites/flag.example",
        Some(ADMIN),
        Some(json!({"min_visitors": 10})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(a.site("flag.example").unwrap().min_visitors, 10);
    let (s, v) = call(
        &a,
        "DELETE",
        "/api/v1/sites/flag.example",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["still_defined_by_flags"], true);
    assert_eq!(a.site("flag.example").unwrap().min_visitors, 5);
    let (s, _) = call(
        &a,
        "DELETE",
        "/api/v1/sites/flag.example",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(s, 409, "a flag-only site cannot be deleted through the API");

    // DELETE unregisters everywhere.
    let (s, _) = call(&a, "DELETE", "/api/v1/sites/new.example", Some(ADMIN), None).await;
    assert_eq!(s, 200);
    store.refresh().await.unwrap();
    assert!(matches!(
        p.process(pageview("new.example"), Utc::now()).unwrap(),
        Outcome::Drop(DropReason::UnknownSite)
    ));
    let (s, _) = call(
        &a,
        "POST",
        "/api/v2/query",
        Some(ADMIN),
        Some(query("new.example")),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call(&a, "GET", "/api/v1/sites/new.example", Some(ADMIN), None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn ingest_keys_are_write_only_hashed_scoped_and_revocable() {
    let (a, ch) = agg("admin_ingest_keys", config()).await;
    let (s, _) = call(
        &a,
        "POST",
        "/api/v1/sites",
        Some(ADMIN),
        Some(json!({"domain": "a.example"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, v) = call(
        &a,
        "POST",
        "/api/v1/sites/a.example/ingest-keys",
        Some(ADMIN),
        Some(json!({"name": "backend"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_string();
    let id = v["id"].as_str().unwrap().to_string();
    assert!(key.starts_with("vi_") && key.len() == 67, "{key}");
    assert_eq!(v["site"], "a.example");
    // Stored as its hash only, in its own table: never a read key.
    let rows: Vec<(String, String)> = db::rows(
        &ch.client(),
        &Sql::new("SELECT key_hash, concat(id, site, name) FROM ingest_keys"),
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, blake3::hash(key.as_bytes()).to_hex().to_string());
    assert!(!rows[0].1.contains(&key[3..]));
    let reads = db::count(&ch.client(), &Sql::new("SELECT count() FROM site_keys"))
        .await
        .unwrap();
    assert_eq!(reads, 0);
    // It reads nothing, and opens no admin route.
    for (m, path, body) in [
        ("POST", "/api/v2/query", Some(query("a.example"))),
        ("GET", "/api/v1/sites", None),
        ("GET", "/api/v1/sites/a.example/ingest-keys", None),
    ] {
        let (s, v) = call(&a, m, path, Some(&key), body).await;
        assert_eq!(s, 401, "{path}: {v}");
    }
    // Listed without the key; revocable; scoped to its site like read keys.
    let (s, v) = call(
        &a,
        "GET",
        "/api/v1/sites/a.example/ingest-keys",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["ingest_keys"][0]["id"], id.as_str());
    assert_eq!(v["ingest_keys"][0]["name"], "backend");
    assert!(!v.to_string().contains(&key[3..]), "{v}");
    let (s, v) = call(
        &a,
        "DELETE",
        &format!("/api/v1/sites/flag.example/ingest-keys/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = call(
        &a,
        "DELETE",
        &format!("/api/v1/sites/a.example/ingest-keys/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!((s, v["revoked"].as_str()), (200, Some(id.as_str())));
    let snap = a.registry().snapshot();
    assert!(snap.ingest_key(&id).unwrap().revoked);
    // A second registry (another process) loads it, revoked.
    let other = Registry::new(&ch);
    let snap = other.refresh().await.unwrap();
    let hash = blake3::hash(key.as_bytes()).to_hex().to_string();
    assert!(snap.ingest_key_by_hash(&hash).unwrap().revoked);
    // Unregistering a site revokes its ingest keys too.
    let (_, v) = call(
        &a,
        "POST",
        "/api/v1/sites/a.example/ingest-keys",
        Some(ADMIN),
        Some(json!({})),
    )
    .await;
    let id2 = v["id"].as_str().unwrap().to_string();
    let (s, _) = call(&a, "DELETE", "/api/v1/sites/a.example", Some(ADMIN), None).await;
    assert_eq!(s, 200);
    assert!(a.registry().snapshot().ingest_key(&id2).unwrap().revoked);
}

#[tokio::test]
async fn a_new_site_named_like_another_sites_alias_is_refused() {
    let cfg = AggregatorConfig {
        site_aliases: vec!["flag-alias.example=flag.example".into()],
        ..config()
    };
    let (a, _) = agg("admin_alias_domain", cfg).await;
    let (s, v) = call(
        &a,
        "POST",
        "/api/v1/sites",
        Some(ADMIN),
        Some(json!({"domain": "shop.example", "aliases": ["www.shop.example"]})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    for (alias, owner) in [
        ("www.shop.example", "shop.example"),
        ("flag-alias.example", "flag.example"),
    ] {
        let (s, v) = call(
            &a,
            "POST",
            "/api/v1/sites",
            Some(ADMIN),
            Some(json!({ "domain": alias })),
        )
        .await;
        assert_eq!(s, 400, "{v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains("alias") && msg.contains(owner), "{msg}");
    }
    let (_, v) = call(&a, "GET", "/api/v1/sites", Some(ADMIN), None).await;
    assert_eq!(v["sites"], json!(["flag.example", "shop.example"]));
}

#[tokio::test]
async fn keys_are_shown_once_stored_as_hashes_scoped_and_revocable() {
    let (a, ch) = agg("admin_keys", config()).await;
    for d in ["a.example", "b.example"] {
        let (s, _) = call(
            &a,
            "POST",
            "/api/v1/sites",
            Some(ADMIN),
            Some(json!({"domain": d})),
        )
        .await;
        assert_eq!(s, 201);
    }
    // Before c.example exists, what does a key for A hear about it?
    let (s, v) = call(
        &a,
        "POST",
        "/api/v1/sites/a.example/keys",
        Some(ADMIN),
        Some(json!({"name": "reporting"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_string();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["site"], "a.example");
    assert!(key.starts_with("vk_") && key.len() == 67, "{key}");
    let (_, unknown_c) = call(
        &a,
        "POST",
        "/api/v2/query",
        Some(&key),
        Some(query("c.example")),
    )
    .await;

    // Listing never shows the key; the table holds only its blake3 hash.
    let (s, v) = call(&a, "GET", "/api/v1/sites/a.example/keys", Some(ADMIN), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["keys"][0]["id"], id.as_str());
    assert_eq!(v["keys"][0]["name"], "reporting");
    assert!(!v.to_string().contains(&key[3..]), "{v}");
    let stmt = Sql::new("SELECT key_hash, concat(id, site, name) FROM site_keys");
    let rows: Vec<(String, String)> = db::rows(&ch.client(), &stmt).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, blake3::hash(key.as_bytes()).to_hex().to_string());
    assert!(!rows[0].1.contains(&key[3..]));

    // The key reads its site, and nothing else: B looks exactly like an unknown site.
    let (s, v) = call(
        &a,
        "POST",
        "/api/v2/query",
        Some(&key),
        Some(query("a.example")),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v_b) = call(
        &a,
        "POST",
        "/api/v2/query",
        Some(&key),
        Some(query("b.example")),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call(
        &a,
        "POST",
        "/api/v1/sites",
        Some(ADMIN),
        Some(json!({"domain": "c.example"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, known_c) = call(
        &a,
        "POST",
        "/api/v2/query",
        Some(&key),
        Some(query("c.example")),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(
        known_c, unknown_c,
        "a registered site and an unknown one answer alike"
    );
    assert_eq!(
        v_b,
        json!({"error": "site \"b.example\" is not registered"})
    );
    let (s, v) = call(&a, "GET", "/api/v1/sites", Some(&key), None).await;
    assert_eq!(s, 200);
    assert_eq!(v["sites"], json!(["a.example"]));
    let (s, _) = call(&a, "GET", "/api/v1/sites/b.example", Some(&key), None).await;
    assert_eq!(s, 404);
    let (s, _) = call(&a, "GET", "/api/v1/sites/a.example", Some(&key), None).await;
    assert_eq!(s, 200);

    // Admin routes: 403 on its own site, 404 on others, 401 without a credential.
    for (m, p, want) in [
        ("POST", "/api/v1/sites", 403),
        ("PUT", "/api/v1/sites/a.example", 403),
        ("DELETE", "/api/v1/sites/a.example", 403),
        ("GET", "/api/v1/sites/a.example/keys", 403),
        ("POST", "/api/v1/sites/a.example/keys", 403),
        ("POST", "/api/v1/sites/a.example/shared-links", 403),
        ("GET", "/api/v1/sites/b.example/keys", 404),
        ("DELETE", "/api/v1/sites/b.example", 404),
    ] {
        let (s, v) = call(&a, m, p, Some(&key), Some(json!({"domain": "x.example"}))).await;
        assert_eq!(s, want, "{m} {p}: {v}");
        assert!(v["error"].is_string());
    }
    let (s, _) = call(&a, "GET", "/api/v1/sites", None, None).await;
    assert_eq!(s, 401);
    let (s, _) = call(
        &a,
        "POST",
        "/api/v2/query",
        Some("vk_wrong"),
        Some(query("a.example")),
    )
    .await;
    assert_eq!(s, 401);

    // Revoked: 401, on every route.
    let (s, _) = call(
        &a,
        "DELETE",
        &format!("/api/v1/sites/b.example/keys/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(s, 404, "a key is revoked through its own site");
    let (s, v) = call(
        &a,
        "DELETE",
        &format!("/api/v1/sites/a.example/keys/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(
        &a,
        "POST",
        "/api/v2/query",
        Some(&key),
        Some(query("a.example")),
    )
    .await;
    assert_eq!(s, 401);
    assert!(v["error"].as_str().unwrap().contains("revoked"));
    let (_, v) = call(&a, "GET", "/api/v1/sites/a.example/keys", Some(ADMIN), None).await;
    assert_eq!(v["keys"][0]["revoked"], true);
}

#[tokio::test]
async fn shared_links_with_and_without_password_and_expiry() {
    let (a, _) = agg("admin_links", config()).await;
    // Expiry is judged by the aggregator's clock, moved below instead of waiting.
    let clock = ManualClock::new(Utc::now());
    let a = a.with_clock(clock.clone());
    call(
        &a,
        "POST",
        "/api/v1/sites",
        Some(ADMIN),
        Some(json!({"domain": "a.example"})),
    )
    .await;
    call(
        &a,
        "POST",
        "/api/v1/sites",
        Some(ADMIN),
        Some(json!({"domain": "b.example"})),
    )
    .await;

    let (s, open) = call(
        &a,
        "POST",
        "/api/v1/sites/a.example/shared-links",
        Some(ADMIN),
        Some(json!({"name": "board"})),
    )
    .await;
    assert_eq!(s, 201, "{open}");
    let token = open["token"].as_str().unwrap();
    assert_eq!(open["url"], format!("/share/a.example#auth={token}"));
    assert_eq!(open["password"], false);
    let (s, v) = call(
        &a,
        "POST",
        "/api/v2/query",
        Some(token),
        Some(query("a.example")),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = call(
        &a,
        "POST",
        "/api/v2/query",
        Some(token),
        Some(query("b.example")),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call(
        &a,
        "GET",
        "/api/v1/sites/a.example/shared-links",
        Some(token),
        None,
    )
    .await;
    assert_eq!(s, 403);

    // With a password: the header is needed, and only the right one opens it.
    let (s, locked) = call(
        &a,
        "POST",
        "/api/v1/sites/a.example/shared-links",
        Some(ADMIN),
        Some(json!({"password": "correct horse battery"})),
    )
    .await;
    assert_eq!(s, 201, "{locked}");
    assert_eq!(locked["password"], true);
    let lt = locked["token"].as_str().unwrap();
    let body = query("a.example").to_string();
    let (s, _, v) = call_with(&a, "POST", "/api/v2/query", Some(lt), &[], Some(&body)).await;
    assert_eq!(s, 401, "{v}");
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("X-Veil-Link-Password"));
    let (s, _, _) = call_with(
        &a,
        "POST",
        "/api/v2/query",
        Some(lt),
        &[("x-veil-link-password", "wrong")],
        Some(&body),
    )
    .await;
    assert_eq!(s, 401);
    for _ in 0..2 {
        let (s, _, v) = call_with(
            &a,
            "POST",
            "/api/v2/query",
            Some(lt),
            &[("x-veil-link-password", "correct horse battery")],
            Some(&body),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }

    // Expiry.
    let soon = clock.now().timestamp() + 2;
    let (s, exp) = call(
        &a,
        "POST",
        "/api/v1/sites/a.example/shared-links",
        Some(ADMIN),
        Some(json!({"expires_at": soon})),
    )
    .await;
    assert_eq!(s, 201, "{exp}");
    let et = exp["token"].as_str().unwrap();
    let (s, _) = call(
        &a,
        "POST",
        "/api/v2/query",
        Some(et),
        Some(query("a.example")),
    )
    .await;
    assert_eq!(s, 200);
    clock.advance(Duration::from_millis(2100));
    let (s, v) = call(
        &a,
        "POST",
        "/api/v2/query",
        Some(et),
        Some(query("a.example")),
    )
    .await;
    assert_eq!(s, 401);
    assert!(v["error"].as_str().unwrap().contains("expired"), "{v}");

    // Listing shows no token; revoking closes the link.
    let (_, list) = call(
        &a,
        "GET",
        "/api/v1/sites/a.example/shared-links",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(list["shared_links"].as_array().unwrap().len(), 3);
    assert!(!list.to_string().contains(&token[3..]));
    let id = open["id"].as_str().unwrap();
    let (s, _) = call(
        &a,
        "DELETE",
        &format!("/api/v1/sites/a.example/shared-links/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(
        &a,
        "POST",
        "/api/v2/query",
        Some(token),
        Some(query("a.example")),
    )
    .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn keys_are_rate_limited_each_on_its_own() {
    let cfg = AggregatorConfig {
        key_rate_per_second: 1,
        key_rate_burst: 3,
        ..config()
    };
    let (a, _) = agg("admin_rate", cfg).await;
    // Buckets refill by the aggregator's clock, moved below instead of waiting.
    let clock = ManualClock::new(Utc::now());
    let a = a.with_clock(clock.clone());
    call(
        &a,
        "POST",
        "/api/v1/sites",
        Some(ADMIN),
        Some(json!({"domain": "a.example"})),
    )
    .await;
    let (_, k1) = call(
        &a,
        "POST",
        "/api/v1/sites/a.example/keys",
        Some(ADMIN),
        None,
    )
    .await;
    let (_, k2) = call(
        &a,
        "POST",
        "/api/v1/sites/a.example/keys",
        Some(ADMIN),
        None,
    )
    .await;
    let (k1, k2) = (k1["key"].as_str().unwrap(), k2["key"].as_str().unwrap());
    for _ in 0..3 {
        let (s, _) = call(&a, "GET", "/api/v1/sites", Some(k1), None).await;
        assert_eq!(s, 200);
    }
    let (s, headers, v) = call_with(&a, "GET", "/api/v1/sites", Some(k1), &[], None).await;
    assert_eq!(s, 429);
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    assert!(v["error"].as_str().unwrap().contains("rate limit"));
    let (s, _) = call(&a, "GET", "/api/v1/sites", Some(k2), None).await;
    assert_eq!(s, 200, "another key has its own bucket");
    let (s, _) = call(&a, "GET", "/api/v1/sites", Some(ADMIN), None).await;
    assert_eq!(s, 200, "the admin is not limited");
    clock.advance(Duration::from_millis(1100));
    let (s, _) = call(&a, "GET", "/api/v1/sites", Some(k1), None).await;
    assert_eq!(s, 200, "the bucket refills");
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field() {
    let (a, _) = agg("admin_bad", config()).await;
    call(
        &a,
        "POST",
        "/api/v1/sites",
        Some(ADMIN),
        Some(json!({"domain": "a.example"})),
    )
    .await;
    let post = |body: &'static str| {
        let a = a.clone();
        async move {
            let (s, _, v) =
                call_with(&a, "POST", "/api/v1/sites", Some(ADMIN), &[], Some(body)).await;
            (s, v["error"].as_str().unwrap_or_default().to_string())
        }
    };
    for (body, want) in [
        ("{not json", "invalid JSON"),
        ("[1]", "JSON object"),
        ("{}", "`domain` is required"),
        (r#"{"domain": 5}"#, "`domain`"),
        (r#"{"domain": "a.com'; DROP TABLE sites; --"}"#, "`domain`"),
        (
            r#"{"domain": "x.example", "colour": "red"}"#,
            "unknown field `colour`",
        ),
        (
            r#"{"domain": "x.example", "min_visitors": 1}"#,
            "`min_visitors`",
        ),
        (
            r#"{"domain": "x.example", "min_visitors": "5"}"#,
            "`min_visitors`",
        ),
        (
            r#"{"domain": "x.example", "timezone": "Mars/Olympus"}"#,
            "`timezone`",
        ),
        (
            r#"{"domain": "x.example", "timezone": "UTC'); DROP TABLE sites; --"}"#,
            "`timezone`",
        ),
        (
            r#"{"domain": "x.example", "retention_days": 0}"#,
            "`retention_days`",
        ),
        (r#"{"domain": "x.example", "aliases": "one"}"#, "`aliases`"),
        (
            r#"{"domain": "x.example", "goals": [{"name": "G"}]}"#,
            "`goals[0]`",
        ),
        (
            r#"{"domain": "x.example", "goals": [{"name": "G", "event_name": "g"}], "funnels": [{"name": "F", "steps": ["G", "H"]}]}"#,
            "`funnels[0].steps[1]`",
        ),
        (
            r#"{"domain": "x.example", "funnels": [{"name": "F", "steps": []}]}"#,
            "`funnels[0].steps`",
        ),
    ] {
        let (s, e) = post(body).await;
        assert_eq!(s, 400, "{body}: {e}");
        assert!(e.contains(want), "{body}: {e:?} lacks {want:?}");
    }
    // A valid goal and funnel are accepted and reach the query engine's view.
    let (s, v) = call(
        &a,
        "PUT",
        "/api/v1/sites/a.example",
        Some(ADMIN),
        Some(json!({"goals": [{"name": "Signup", "event_name": "Signup"}, {"name": "Cart", "page_path": "/cart*"}],
                    "funnels": [{"name": "Buy", "steps": ["Cart", "Signup"]}]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let view = a.site("a.example").unwrap();
    assert_eq!(view.goals.len(), 2);
    assert_eq!(view.funnels[0].steps, vec!["Cart", "Signup"]);

    // Alias already used by another site: 409 naming the alias.
    call(
        &a,
        "PUT",
        "/api/v1/sites/a.example",
        Some(ADMIN),
        Some(json!({"aliases": ["shared"]})),
    )
    .await;
    let (s, v) = call(
        &a,
        "POST",
        "/api/v1/sites",
        Some(ADMIN),
        Some(json!({"domain": "y.example", "aliases": ["shared"]})),
    )
    .await;
    assert_eq!(s, 409);
    assert!(v["error"].as_str().unwrap().contains("`aliases[0]`"), "{v}");

    // Keys and links.
    for (path, body, want) in [
        ("/api/v1/sites/a.example/keys", r#"{"name": 5}"#, "`name`"),
        (
            "/api/v1/sites/a.example/keys",
            r#"{"nom": "x"}"#,
            "unknown field `nom`",
        ),
        (
            "/api/v1/sites/a.example/shared-links",
            r#"{"expires_at": 1}"#,
            "`expires_at`",
        ),
        (
            "/api/v1/sites/a.example/shared-links",
            r#"{"expires_at": "soon"}"#,
            "`expires_at`",
        ),
        (
            "/api/v1/sites/a.example/shared-links",
            r#"{"password": "short"}"#,
            "`password`",
        ),
    ] {
        let (s, _, v) = call_with(&a, "POST", path, Some(ADMIN), &[], Some(body)).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(want), "{body}: {v}");
    }
    let (s, _) = call(&a, "PATCH", "/api/v1/sites/a.example", Some(ADMIN), None).await;
    assert_eq!(s, 405);
    let (s, _) = call(
        &a,
        "GET",
        "/api/v1/sites/a.example/nothing",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn hostile_strings_are_stored_and_read_back_verbatim() {
    let (a, ch) = agg("admin_hostile", config()).await;
    let evil = [
        "x'); DROP TABLE sites; --",
        "\\' OR 1=1 --",
        "\"},{\"deleted\":1}",
        "?",
        "ö 🚀 <script>alert(1)</script>",
    ];
    let (s, v) = call(
        &a,
        "POST",
        "/api/v1/sites",
        Some(ADMIN),
        Some(json!({"domain": "evil.example", "aliases": evil})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (_, k) = call(
        &a,
        "POST",
        "/api/v1/sites/evil.example/keys",
        Some(ADMIN),
        Some(json!({"name": evil[0]})),
    )
    .await;
    let (_, l) = call(
        &a,
        "POST",
        "/api/v1/sites/evil.example/shared-links",
        Some(ADMIN),
        Some(json!({"name": evil[1]})),
    )
    .await;
    assert_eq!(k["name"], evil[0]);
    assert_eq!(l["name"], evil[1]);

    // A fresh aggregator reads everything back from ClickHouse, verbatim.
    let b = Aggregator::new(config(), ch.clone());
    b.registry().refresh().await.unwrap();
    let (_, v) = call(&b, "GET", "/api/v1/sites/evil.example", Some(ADMIN), None).await;
    assert_eq!(v["aliases"], json!(evil));
    let (_, v) = call(
        &b,
        "GET",
        "/api/v1/sites/evil.example/keys",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(v["keys"][0]["name"], evil[0]);
    let (_, v) = call(
        &b,
        "GET",
        "/api/v1/sites/evil.example/shared-links",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(v["shared_links"][0]["name"], evil[1]);
    // Every alias resolves for the collector, and nothing was dropped or altered.
    let sites = SiteRegistry::new(Vec::<String>::new());
    sites.attach_store(b.registry().clone());
    for e in evil {
        assert_eq!(sites.resolve(e).unwrap().0, "evil.example", "{e}");
    }
    let n = db::count(&ch.client(), &Sql::new("SELECT count() FROM sites"))
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn two_aggregators_share_one_registry() {
    let (a, ch) = agg("admin_two", config()).await;
    let b = Aggregator::new(config(), ch.clone());
    call(
        &a,
        "POST",
        "/api/v1/sites",
        Some(ADMIN),
        Some(json!({"domain": "a.example"})),
    )
    .await;
    let (_, k) = call(
        &a,
        "POST",
        "/api/v1/sites/a.example/keys",
        Some(ADMIN),
        None,
    )
    .await;
    let key = k["key"].as_str().unwrap();
    b.registry().refresh().await.unwrap();
    let (s, v) = call(
        &b,
        "POST",
        "/api/v2/query",
        Some(key),
        Some(query("a.example")),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // B revokes; A sees it after its background refresh (every 2 s by default).
    let id = k["id"].as_str().unwrap();
    let (s, _) = call(
        &b,
        "DELETE",
        &format!("/api/v1/sites/a.example/keys/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(s, 200);
    // A key made on A a moment ago can be revoked through B at once (B reloads on a miss).
    let (_, k2) = call(
        &a,
        "POST",
        "/api/v1/sites/a.example/keys",
        Some(ADMIN),
        None,
    )
    .await;
    let path = format!(
        "/api/v1/sites/a.example/keys/{}",
        k2["id"].as_str().unwrap()
    );
    let (s, v) = call(&b, "DELETE", &path, Some(ADMIN), None).await;
    assert_eq!(s, 200, "{v}");
    // And a site registered on A a moment ago is a 409 on B, not a second registration.
    call(
        &a,
        "POST",
        "/api/v1/sites",
        Some(ADMIN),
        Some(json!({"domain": "fresh.example"})),
    )
    .await;
    let (s, _) = call(
        &b,
        "POST",
        "/api/v1/sites",
        Some(ADMIN),
        Some(json!({"domain": "fresh.example"})),
    )
    .await;
    assert_eq!(s, 409);
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    loop {
        let (s, _) = call(
            &a,
            "POST",
            "/api/v2/query",
            Some(key),
            Some(query("a.example")),
        )
        .await;
        if s == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "A never saw the revocation"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Pageviews for `site`, one per given day (noon UTC), written to ClickHouse.
async fn seed_days(ch: &ClickHouseConfig, site: &str, days: &[chrono::NaiveDate]) {
    use chrono::TimeZone;
    use veil_collector::pipeline::sink::{clickhouse::ClickHouseSink, RowBatch, Sink};
    let p = Pipeline::with_key(
        Arc::new(SiteRegistry::new([site.to_string()])),
        Default::default(),
        [1; 32],
    );
    let mut rows = Vec::new();
    for d in days {
        let at = Utc.from_utc_datetime(&d.and_hms_opt(12, 0, 0).unwrap());
        match p.process(pageview(site), at).unwrap() {
            Outcome::Store(r) => rows.push(*r),
            o => panic!("{o:?}"),
        }
    }
    let mut sink = ClickHouseSink::new(ch).unwrap();
    tokio::task::spawn_blocking(move || sink.write(&RowBatch::from_rows(&rows)).unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn purge_uses_a_stored_sites_retention() {
    let (a, ch) = agg("admin_retention", config()).await;
    let today = Utc::now().date_naive();
    let days: Vec<_> = [0, 5, 20]
        .iter()
        .map(|n| today - chrono::Duration::days(*n))
        .collect();
    seed_days(&ch, "short.example", &days).await;
    seed_days(&ch, "flag.example", &days).await;
    let (s, v) = call(
        &a,
        "POST",
        "/api/v1/sites",
        Some(ADMIN),
        Some(json!({"domain": "short.example", "retention_days": 10})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let flags = veil_aggregator::retention::Retention::parse(Some(30), &[]).unwrap();
    let report = veil_aggregator::retention::purge(&ch, &flags, today)
        .await
        .unwrap();
    assert_eq!(report.deleted_rows.get("short.example"), Some(&1));
    assert!(!report.deleted_rows.contains_key("flag.example"));
    let stmt = Sql::new("SELECT count() FROM events WHERE site = 'short.example'");
    let n = db::count(&ch.client(), &stmt).await.unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn a_running_collector_picks_up_new_sites_by_itself() {
    let (a, ch) = agg("admin_collector", config()).await;
    let spool = std::env::temp_dir().join(format!(
        "veil-admin-test-spool-{}-{}",
        std::process::id(),
        veil_schemas::registry::random_hex(4).unwrap()
    ));
    let mut cfg = veil_collector::CollectorConfig {
        sites: vec!["flag.example".into()],
        ..Default::default()
    };
    cfg.spool.dir = spool.clone();
    let c = veil_collector::Collector::start(cfg, ch.clone(), prometheus::Registry::new())
        .await
        .unwrap();
    assert!(c.sites().resolve("late.example").is_none());
    assert!(!c.sites().resolve("flag.example").unwrap().1.child_directed);

    call(
        &a,
        "POST",
        "/api/v1/sites",
        Some(ADMIN),
        Some(json!({"domain": "late.example", "aliases": ["A-US-7"]})),
    )
    .await;
    // A stored record for a flag site wins over the flags.
    call(
        &a,
        "PUT",
        "/api/v1/sites/flag.example",
        Some(ADMIN),
        Some(json!({"child_directed": true})),
    )
    .await;
    let start = std::time::Instant::now();
    while c.sites().resolve("A-US-7").is_none()
        || !c.sites().resolve("flag.example").unwrap().1.child_directed
    {
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "the collector never refreshed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.sites().resolve("A-US-7").unwrap().0, "late.example");
    eprintln!("collector saw the new site after {:?}", start.elapsed());
    // Unregistering the stored record leaves the flag site, with its flag settings.
    call(
        &a,
        "DELETE",
        "/api/v1/sites/flag.example",
        Some(ADMIN),
        None,
    )
    .await;
    while c.sites().resolve("flag.example").unwrap().1.child_directed {
        assert!(
            start.elapsed() < Duration::from_secs(12),
            "the collector never refreshed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c2 = c.clone();
    tokio::task::spawn_blocking(move || c2.finish())
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(spool);
}

#[tokio::test]
async fn a_key_made_by_another_process_works_on_the_next_request() {
    let (a, ch) = agg("admin_key_elsewhere", config()).await;
    let stranger = format!("vk_{}", "0".repeat(64));
    // Unknown credentials, one after another: each forces (or shares) a registry reload.
    for _ in 0..2 {
        let (s, v) = call(
            &a,
            "POST",
            "/api/v2/query",
            Some(&stranger),
            Some(query("flag.example")),
        )
        .await;
        assert_eq!(s, 401, "{v}");
    }
    // `veil key create` in another process, a moment later: the key works on the next request
    // although the last forced reload ran less than a second ago.
    let other = Registry::new(&ch);
    other.refresh().await.unwrap();
    let (_, key) = other.create_key("flag.example", "cli").await.unwrap();
    let (s, v) = call(
        &a,
        "POST",
        "/api/v2/query",
        Some(&key),
        Some(query("flag.example")),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}
