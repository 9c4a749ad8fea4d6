//! Issue 16's attacks against the real `veil up`, each with the refusal expected (docs/SECURITY.md
//! names these tests): a foreign Host (DNS rebinding) with proxy headers on an admin route, a
//! cross-origin POST, a `text/plain` POST (a CORS "simple request"), forged visitor overrides on
//! `/v1/events` without an ingest key (refused) and with one (accepted), a new site whose
//! domain is another site's alias; and the security headers on every page and API answer.
//!
//! One `veil up` serves every check (each check is its own function, run in order): it trusts
//! `203.0.113.0/24` as senders, so this test's own loopback connection is *not* a trusted sender
//! unless a trusted proxy (loopback) forwards for such an address.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use veil_schemas::sql::{lit, Sql};

/// One raw HTTP/1.1 request with exactly the given headers (the caller writes `Host`): the
/// status, the head (lower-cased) and the body.
fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

struct Ctx {
    addr: SocketAddr,
    host: String,
    clickhouse: ClickHouse,
}

impl Ctx {
    fn host(&self) -> (&str, &str) {
        ("Host", self.host.as_str())
    }

    fn get(&self, path: &str) -> (u16, String, String) {
        raw(self.addr, "GET", path, &[self.host()], "")
    }

    fn post(&self, path: &str, extra: &[(&str, &str)], body: &str) -> (u16, String, String) {
        let mut h = vec![self.host(), JSON];
        h.extend_from_slice(extra);
        raw(self.addr, "POST", path, &h, body)
    }

    fn sites(&self) -> Vec<String> {
        let (s, _, b) = self.get("/api/v1/sites");
        assert_eq!(s, 200, "{b}");
        serde_json::from_str::<Value>(&b).unwrap()["sites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    /// Stored events of example.com on `path`.
    fn stored(&self, path: &str) -> u64 {
        let q = veil_schemas::sql!(
            "SELECT count() FROM veil.events WHERE site = 'example.com' AND pathname = {}",
            lit(path)
        );
        clickhouse_query(&self.clickhouse, &q)
            .trim()
            .parse()
            .unwrap()
    }
}

/// DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 reaches the
/// loopback port with its own Host, here with proxy headers too: 421 on the admin API and the
/// dashboard; the loopback names and --public-url's host are served.
fn foreign_host_is_misdirected(c: &Ctx) {
    for path in ["/api/v1/sites", "/", "/site/example.com"] {
        let (s, head, body) = raw(
            c.addr,
            "GET",
            path,
            &[
                ("Host", "evil.example"),
                ("X-Forwarded-For", "127.0.0.1"),
                ("X-Forwarded-Host", "127.0.0.1"),
            ],
            "",
        );
        assert_eq!(s, 421, "{path}: {body}");
        assert!(
            body.contains("evil.example") && body.contains("--public-url"),
            "{body}"
        );
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    }
    let (s, _, body) = raw(
        c.addr,
        "POST",
        "/api/v1/sites",
        &[("Host", "evil.example:80"), JSON],
        r#"{"domain": "rebound.example"}"#,
    );
    assert_eq!(s, 421, "{body}");
    let port = c.addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "veil.test".to_string(),
    ] {
        let (s, _, body) = raw(c.addr, "GET", "/api/v1/sites", &[("Host", &host)], "");
        assert_eq!(s, 200, "{host}: {body}");
    }
    assert!(!c.sites().contains(&"rebound.example".to_string()));
}

/// A page of another origin POSTs (even with the JSON content type a preflight would guard)
/// or DELETEs: 403, nothing done. The dashboard's own origin is served.
fn cross_origin_writes_are_forbidden(c: &Ctx) {
    for origin in ["https://evil.example", "null", "http://127.0.0.1:1"] {
        let (s, _, body) = c.post(
            "/api/v1/sites",
            &[("Origin", origin)],
            r#"{"domain": "csrf.example"}"#,
        );
        assert_eq!(s, 403, "{origin}: {body}");
        assert!(body.contains("cross-origin"), "{body}");
        let (s, _, body) = c.post(
            "/api/v2/query",
            &[("Origin", origin)],
            r#"{"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d"}"#,
        );
        assert_eq!(s, 403, "{origin}: {body}");
    }
    let (s, _, body) = raw(
        c.addr,
        "POST",
        "/api/v2/query",
        &[c.host(), JSON, ("Sec-Fetch-Site", "cross-site")],
        r#"{"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d"}"#,
    );
    assert_eq!(s, 403, "{body}");
    assert!(!c.sites().contains(&"csrf.example".to_string()));
    let own = format!("http://{}", c.host);
    let (s, _, body) = c.post(
        "/api/v1/sites",
        &[("Origin", &own)],
        r#"{"domain": "shop.example", "aliases": ["www.shop.example"]}"#,
    );
    assert_eq!(s, 201, "{body}");
    let (s, _, body) = raw(
        c.addr,
        "DELETE",
        "/api/v1/sites/shop.example",
        &[c.host(), ("Origin", "https://evil.example")],
        "",
    );
    assert_eq!(s, 403, "{body}");
    assert!(c.sites().contains(&"shop.example".to_string()));
}

/// A cross-origin `text/plain` POST needs no preflight, so a browser sends it from any page:
/// 415, and the query or the change does not run.
fn text_plain_posts_are_unsupported(c: &Ctx) {
    for ct in ["text/plain", "application/x-www-form-urlencoded", ""] {
        let mut h = vec![c.host()];
        if !ct.is_empty() {
            h.push(("Content-Type", ct));
        }
        let (s, _, body) = raw(
            c.addr,
            "POST",
            "/api/v1/sites",
            &h,
            r#"{"domain": "plain.example"}"#,
        );
        assert_eq!(s, 415, "{ct}: {body}");
        assert!(body.contains("application/json"), "{body}");
        let (s, _, body) = raw(
            c.addr,
            "POST",
            "/api/v2/query",
            &h,
            r#"{"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d"}"#,
        );
        assert_eq!(s, 415, "{ct}: {body}");
        assert!(!body.contains("results"), "{body}");
    }
    assert!(!c.sites().contains(&"plain.example".to_string()));
    let (s, _, body) = c.post(
        "/api/v2/query",
        &[],
        r#"{"site_id": "example.com", "metrics": ["visitors"], "date_range": "7d"}"#,
    );
    assert_eq!(s, 200, "{body}");
}

/// Pages, API answers, errors and downloads all carry the security headers.
fn answers_carry_security_headers(c: &Ctx) {
    let answers = [
        c.get("/"),
        c.get("/app.js"),
        c.get("/api/v1/sites"),
        c.get("/api/v1/sites/unknown.example"),
        c.get("/nowhere"),
        c.post("/api/v2/query", &[], "{}"),
    ];
    for (s, head, _) in answers {
        for h in [
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
            "x-frame-options: deny",
            "cross-origin-opener-policy: same-origin",
            "frame-ancestors 'none'",
        ] {
            assert!(head.contains(h), "{s}: no {h} in\n{head}");
        }
    }
}

/// Forged visitors: `ip`, `user_agent` or a back-dated `timestamp` on `/v1/events` from a
/// sender that is not trusted is a 403 and stores nothing; with the site's ingest key, or from
/// a trusted sender behind a trusted proxy, it is accepted. Browser-like beacons (no
/// overrides) are unchanged.
fn forged_overrides_need_an_ingest_key(c: &Ctx) {
    let event = |path: &str, extra: Value| {
        let mut e = json!({"site": "example.com", "name": "pageview", "url": format!("https://example.com{path}")});
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        json!([e]).to_string()
    };
    let three_days_ago = (chrono::Utc::now() - chrono::Duration::days(3)).to_rfc3339();
    let forged = [
        ("/forged-ip", json!({"ip": "198.51.100.9"})),
        ("/forged-ua", json!({"user_agent": "Mozilla/5.0 Forged"})),
        ("/forged-time", json!({"timestamp": three_days_ago})),
    ];
    for (path, extra) in &forged {
        let (s, _, body) = c.post("/v1/events", &[], &event(path, extra.clone()));
        assert_eq!(s, 403, "{path}: {body}");
        assert!(body.contains("ingest key"), "{body}");
    }
    // A browser on a trusted sender's address is no trusted sender.
    let (s, _, body) = c.post(
        "/v1/events",
        &[
            ("X-Forwarded-For", "203.0.113.7"),
            ("Origin", "https://evil.example"),
        ],
        &event("/forged-browser", json!({"ip": "198.51.100.9"})),
    );
    assert_eq!(s, 403, "{body}");
    // A read key is no ingest key.
    let (s, _, body) = c.post("/api/v1/sites/example.com/keys", &[], "{}");
    assert_eq!(s, 201, "{body}");
    let read_key = serde_json::from_str::<Value>(&body).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _, body) = c.post(
        "/v1/events",
        &[("Authorization", &format!("Bearer {read_key}"))],
        &event("/forged-readkey", json!({"ip": "198.51.100.9"})),
    );
    assert_eq!(s, 403, "{body}");
    // Another site's ingest key does not cover example.com.
    let (s, _, body) = c.post("/api/v1/sites/shop.example/ingest-keys", &[], "{}");
    assert_eq!(s, 201, "{body}");
    let other = serde_json::from_str::<Value>(&body).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _, body) = c.post(
        "/v1/events",
        &[("Authorization", &format!("Bearer {other}"))],
        &event("/forged-otherkey", json!({"ip": "198.51.100.9"})),
    );
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("shop.example"), "{body}");

    // The site's own ingest key: accepted.
    let (s, _, body) = c.post(
        "/api/v1/sites/example.com/ingest-keys",
        &[],
        r#"{"name": "backend"}"#,
    );
    assert_eq!(s, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("vi_") && key.len() == 67, "{key}");
    let bearer = format!("Bearer {key}");
    for (path, extra) in [
        (
            "/keyed-ip",
            json!({"ip": "198.51.100.9", "user_agent": "Mozilla/5.0 Keyed"}),
        ),
        ("/keyed-time", json!({"timestamp": three_days_ago})),
    ] {
        let (s, _, body) = c.post(
            "/v1/events",
            &[("Authorization", &bearer)],
            &event(path, extra),
        );
        assert_eq!(s, 202, "{path}: {body}");
    }
    // A trusted sender (203.0.113.0/24) behind the trusted proxy (loopback): accepted.
    let (s, _, body) = c.post(
        "/v1/events",
        &[("X-Forwarded-For", "203.0.113.7")],
        &event("/trusted-sender", json!({"ip": "198.51.100.10"})),
    );
    assert_eq!(s, 202, "{body}");
    // No override: accepted from anyone, as browser beacons are.
    let (s, _, body) = c.post("/v1/events", &[], &event("/plain", json!({})));
    assert_eq!(s, 202, "{body}");
    // The key is listed (never shown again), and once revoked it opens nothing.
    let (s, _, body) = c.get("/api/v1/sites/example.com/ingest-keys");
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("backend") && !body.contains(&key), "{body}");
    let id = created["id"].as_str().unwrap();
    let (s, _, body) = raw(
        c.addr,
        "DELETE",
        &format!("/api/v1/sites/example.com/ingest-keys/{id}"),
        &[c.host()],
        "",
    );
    assert_eq!(s, 200, "{body}");
    let (s, _, body) = c.post(
        "/v1/events",
        &[("Authorization", &bearer)],
        &event("/forged-revoked", json!({"ip": "198.51.100.9"})),
    );
    assert_eq!(s, 403, "{body}");

    // What was accepted is stored; nothing refused is.
    let deadline = Instant::now() + Duration::from_secs(20);
    let accepted = ["/keyed-ip", "/keyed-time", "/trusted-sender", "/plain"];
    while accepted.iter().any(|p| c.stored(p) != 1) {
        assert!(Instant::now() < deadline, "accepted events not stored");
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in [
        "/forged-ip",
        "/forged-ua",
        "/forged-time",
        "/forged-browser",
        "/forged-readkey",
        "/forged-otherkey",
        "/forged-revoked",
    ] {
        assert_eq!(c.stored(p), 0, "{p} was stored");
    }
    let q = Sql::new(
        "SELECT toDate(timestamp) < today() FROM veil.events WHERE pathname = '/keyed-time'",
    );
    assert_eq!(clickhouse_query(&c.clickhouse, &q).trim(), "1");
}

/// A new site whose domain is already another site's alias: 400, not registered.
fn alias_domain_sites_are_refused(c: &Ctx) {
    let (s, _, body) = c.post("/api/v1/sites", &[], r#"{"domain": "www.shop.example"}"#);
    assert_eq!(s, 400, "{body}");
    assert!(
        body.contains("alias") && body.contains("shop.example"),
        "{body}"
    );
    assert!(!c.sites().contains(&"www.shop.example".to_string()));
}

#[test]
fn issue_16_attacks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = start(
        dir.path(),
        free_port(),
        &[
            "--privacy",
            "exact",
            "--public-url",
            "http://veil.test",
            "--trusted-sender",
            "203.0.113.0/24",
        ],
    );
    let c = Ctx {
        addr: v.addr,
        host: v.addr.to_string(),
        clickhouse: managed_clickhouse(&dir.path().join("var")),
    };
    foreign_host_is_misdirected(&c);
    cross_origin_writes_are_forbidden(&c);
    text_plain_posts_are_unsupported(&c);
    answers_carry_security_headers(&c);
    forged_overrides_need_an_ingest_key(&c);
    alias_domain_sites_are_refused(&c);
    stop(v);
}
