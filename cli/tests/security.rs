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
    // The admin token on API paths, unless the request brings its own credential.
    let own = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization") || k.eq_ignore_ascii_case("cookie"));
    if path.starts_with("/api/v") && !own {
        req.push_str(&format!("Authorization: Bearer {}\r\n", common::ADMIN));
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

/// A shared link's token that leaked into a URL or a Referer (an old `?auth=` link) opens
/// nothing there: the API takes credentials only from the `Authorization` header (or a
/// session cookie), never from a query string or a Referer; pages never send a Referer.
fn a_share_token_in_a_url_or_referer_opens_nothing(c: &Ctx) {
    let (s, _, body) = c.post(
        "/api/v1/sites/example.com/shared-links",
        &[],
        r#"{"name": "board"}"#,
    );
    assert_eq!(s, 201, "{body}");
    let token = serde_json::from_str::<Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let referer = format!("http://{}/share/example.com?auth={token}", c.host);
    let q = r#"{"site_id": "example.com", "metrics": ["visitors"], "date_range": "day"}"#;
    // A browser's cookie (not a session) stands in for "no credential".
    let no_credential = ("Cookie", "theme=dark");
    for path in [
        format!("/api/v2/query?auth={token}"),
        "/api/v2/query".to_string(),
    ] {
        let (s, _, b) = raw(
            c.addr,
            "POST",
            &path,
            &[c.host(), JSON, no_credential, ("Referer", &referer)],
            q,
        );
        assert_eq!(s, 401, "{path}: {b}");
    }
    // The same token in the header is what opens the site (the link itself works).
    let bearer = format!("Bearer {token}");
    let (s, _, b) = raw(
        c.addr,
        "POST",
        "/api/v2/query",
        &[c.host(), JSON, ("Authorization", &bearer)],
        q,
    );
    assert_eq!(s, 200, "{b}");
    // The shared page itself tells browsers to send no Referer anywhere.
    let (s, head, _) = raw(c.addr, "GET", "/share/example.com", &[c.host()], "");
    assert_eq!(s, 200);
    assert!(head.contains("referrer-policy: no-referrer"), "{head}");
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
    a_share_token_in_a_url_or_referer_opens_nothing(&c);
    stop(v);
}

/// `veil` run as a command (user create, key create) on `dir`'s data, with `stdin`.
fn veil_cmd(dir: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("var"))
        .env_remove("VEIL_CLICKHOUSE_URL")
        .env_remove("VEIL_ADMIN_TOKEN")
        .env_remove("VEIL_API_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// No silent open admin: a fresh `veil up` without an admin token answers every data and
/// management route — even a request that looks proxied, with forwarding headers — only with
/// the way to the setup (ingest works from the first second); the printed setup link is
/// one-time; `veil user create` makes the owner without a browser, who then logs in (a
/// session cookie) and sees the sites; `veil key create` prints a key that reads, as the
/// README's curl example does.
#[test]
fn a_fresh_veil_up_opens_nothing_until_its_owner_exists() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let v = start_with(dir.path(), port, &["--privacy", "exact"], false);
    let out = std::fs::read_to_string(dir.path().join(format!("stdout-{port}.log"))).unwrap();
    let line = out
        .lines()
        .find(|l| l.starts_with("No owner yet: open "))
        .unwrap_or_else(|| panic!("no setup link printed: {out}"));
    let link = line.split_whitespace().nth(4).unwrap();
    assert!(
        link.starts_with(&format!("http://{}/setup#token=vn_", v.addr)),
        "{line}"
    );
    let setup_token = link.split_once("token=").unwrap().1.to_string();
    let host = v.addr.to_string();
    let proxied = [
        ("Host", host.as_str()),
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-Proto", "https"),
        ("X-Real-IP", "203.0.113.9"),
        ("Authorization", "Bearer guessed-admin-token-123"),
        JSON,
    ];
    for (m, p, body) in [
        ("GET", "/api/v1/sites", ""),
        ("GET", "/api/v1/sites/example.com/keys", ""),
        ("POST", "/api/v1/sites", r#"{"domain": "evil.example"}"#),
        (
            "POST",
            "/api/v2/query",
            r#"{"site_id": "example.com", "metrics": ["visitors"], "date_range": "day"}"#,
        ),
        ("GET", "/api/v1/stats/aggregate?site_id=example.com", ""),
    ] {
        let (s, _, b) = raw(v.addr, m, p, &proxied, body);
        assert_eq!(s, 401, "{m} {p}: {b}");
        let b: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(b["setup_required"], true, "{m} {p}: {b}");
    }
    // Ingest is open from the first second.
    let (s, _, b) = raw(
        v.addr,
        "POST",
        "/api/event",
        &[
            ("Host", &host),
            JSON,
            ("User-Agent", "Mozilla/5.0 Firefox/126.0"),
        ],
        r#"{"n": "pageview", "u": "https://example.com/", "d": "example.com"}"#,
    );
    assert_eq!(s, 202, "{b}");

    // The owner, made without a browser.
    let (ok, so, se) = veil_cmd(
        dir.path(),
        &[
            "user",
            "create",
            "--email",
            "Owner@Example.com",
            "--role",
            "owner",
        ],
        "a long enough password\n",
    );
    assert!(ok, "{so}{se}");
    assert!(
        so.contains("owner@example.com is owner of every site"),
        "{so}"
    );
    // The setup link no longer opens anything.
    let (s, _, b) = raw(
        v.addr,
        "POST",
        "/api/v1/auth/accept",
        &[("Host", &host), JSON],
        &json!({"token": setup_token, "email": "eve@example.com", "password": "eve's password!"})
            .to_string(),
    );
    assert_eq!(s, 409, "{b}");
    let (s, head, b) = raw(
        v.addr,
        "POST",
        "/api/v1/auth/login",
        &[("Host", &host), JSON],
        r#"{"email": "owner@example.com", "password": "a long enough password"}"#,
    );
    assert_eq!(s, 200, "{b}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("veil_session=vs_"), "{cookie}");
    assert!(
        head.contains("httponly") && head.contains("samesite=strict"),
        "{head}"
    );
    let (s, _, b) = raw(
        v.addr,
        "GET",
        "/api/v1/sites",
        &[("Host", &host), ("Cookie", &cookie)],
        "",
    );
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("example.com"), "{b}");
    // A cookie write without the CSRF token, even from this origin, is refused.
    let origin = format!("http://{host}");
    let (s, _, b) = raw(
        v.addr,
        "POST",
        "/api/v1/sites",
        &[
            ("Host", &host),
            ("Cookie", &cookie),
            ("Origin", &origin),
            JSON,
        ],
        r#"{"domain": "new.example"}"#,
    );
    assert_eq!(s, 403, "{b}");

    // A site key from the command line reads the site.
    let (ok, key, se) = veil_cmd(
        dir.path(),
        &["key", "create", "--site", "example.com", "--name", "readme"],
        "",
    );
    assert!(ok, "{se}");
    let key = key.trim();
    assert!(key.starts_with("vk_"), "{key}");
    let bearer = format!("Bearer {key}");
    let (s, _, b) = raw(
        v.addr,
        "POST",
        "/api/v2/query",
        &[("Host", &host), ("Authorization", &bearer), JSON],
        r#"{"site_id": "example.com", "metrics": ["pageviews"], "date_range": "day"}"#,
    );
    assert_eq!(s, 200, "{b}");
    stop(v);
}
