//! People and sessions against a real ClickHouse, as an attacker and as each role would try
//! them: the first-run setup (nothing but the way to it until an owner exists), login and
//! logout, sessions shared by two aggregators (a load balancer's), "log out everywhere" (and a
//! session started in the same second, or by a password change, still working),
//! cookie writes without Origin or CSRF token refused, a brute-forced password locked out
//! (unknown e-mails too, so nobody learns which exist), the TOTP second factor and recovery
//! codes, roles per site with invitations (a viewer of one site never sees another), removal
//! ending sessions, and the audit log of who changed what, readable by owners only. Expiry
//! with the aggregator's clock moved on: a session past 7 days, an invitation past 7 days and
//! the setup link past 24 hours are refused (the last two saying they expired and what to do;
//! a new setup link, as a restart of `veil up` prints, works), and no setup link exists when
//! an admin token is set. Segments, personal and site ones: who may make, see, use and remove
//! each, and a question asked with a segment answered as with its filters.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http::{HeaderMap, Request};
use serde_json::{json, Value};
use veil_aggregator::account::{
    csrf_token, INVITATION_SECS, LOCK_SECS, MAX_FAILURES, SESSION_SECS, SETUP_SECS,
};
use veil_aggregator::{Aggregator, AggregatorConfig, ManualClock};
use veil_schemas::sql::Run as _;
use veil_schemas::ClickHouseConfig;

const ORIGIN: &str = "http://127.0.0.1:8000";
const OWNER: &str = "owner@example.com";
const OWNER_PW: &str = "correct horse battery";

fn config() -> AggregatorConfig {
    AggregatorConfig {
        accounts: true,
        sites: vec!["a.com".into(), "b.com".into()],
        privacy: veil_aggregator::privacy::Settings::exact(),
        ..Default::default()
    }
}

async fn agg(label: &str) -> (Aggregator, ClickHouseConfig, Arc<ManualClock>) {
    let ch = veil_schemas::testing::fresh_database(label).await;
    let clock = ManualClock::new(Utc::now());
    let a = Aggregator::new(config(), ch.clone()).with_clock(clock.clone());
    a.registry().refresh().await.unwrap();
    (a, ch, clock)
}

/// A browser: its session cookie and CSRF token, once logged in.
#[derive(Clone, Default)]
struct Browser {
    cookie: Option<String>,
    csrf: Option<String>,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

async fn send(
    a: &Aggregator,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(Bytes::from(body.map(|v| v.to_string()).unwrap_or_default()))
        .unwrap();
    let r = a.handle(req).await.expect("an aggregator path");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    // Downloads (the export's zip) are not JSON: their body reads as null.
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

impl Browser {
    /// A request as the dashboard sends it: the cookie, and on writes Origin and CSRF.
    async fn call(&self, a: &Aggregator, method: &str, path: &str, body: Option<Value>) -> Answer {
        let cookie = self.cookie.as_ref().map(|c| format!("veil_session={c}"));
        let mut h: Vec<(&str, &str)> = Vec::new();
        if let Some(c) = &cookie {
            h.push(("cookie", c));
        }
        if method != "GET" {
            h.push(("origin", ORIGIN));
            if let Some(t) = &self.csrf {
                h.push(("x-veil-csrf", t));
            }
        }
        if body.is_some() {
            h.push(("content-type", "application/json"));
        }
        send(a, method, path, &h, body).await
    }

    /// Takes the session from a login-like answer.
    fn keep(&mut self, r: &Answer) {
        assert_eq!(r.status, 200, "{}", r.body);
        let set = r.headers["set-cookie"].to_str().unwrap();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=604800"] {
            assert!(set.contains(attr), "{set}");
        }
        let token = set
            .strip_prefix("veil_session=")
            .and_then(|s| s.split(';').next())
            .unwrap();
        assert!(token.starts_with("vs_"), "{set}");
        assert_eq!(r.body["csrf"], csrf_token(token));
        self.cookie = Some(token.to_string());
        self.csrf = r.body["csrf"].as_str().map(str::to_string);
    }
}

fn token_of(url: &str) -> String {
    url.split_once("token=").unwrap().1.to_string()
}

/// The first-run setup done by the owner; returns their browser.
async fn set_up_owner(a: &Aggregator) -> Browser {
    let link = a.setup_link().await.unwrap().expect("a setup link");
    let mut b = Browser::default();
    let r = b
        .call(
            a,
            "POST",
            "/api/v1/auth/accept",
            Some(json!({"token": token_of(&link), "email": OWNER, "password": OWNER_PW})),
        )
        .await;
    b.keep(&r);
    b
}

/// A new account made by accepting the invitation at `url` with `password`; its browser.
async fn join(a: &Aggregator, url: &str, password: &str) -> Browser {
    let mut b = Browser::default();
    let r = b
        .call(
            a,
            "POST",
            "/api/v1/auth/accept",
            Some(json!({"token": token_of(url), "password": password})),
        )
        .await;
    b.keep(&r);
    b
}

async fn login(a: &Aggregator, email: &str, pw: &str) -> Answer {
    Browser::default()
        .call(
            a,
            "POST",
            "/api/v1/auth/login",
            Some(json!({"email": email, "password": pw})),
        )
        .await
}

async fn logged_in(a: &Aggregator, email: &str, pw: &str) -> Browser {
    let mut b = Browser::default();
    b.keep(&login(a, email, pw).await);
    b
}

/// Polls (one registry refresh at most) until `f` holds.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn nothing_opens_before_the_owner_sets_up_and_sessions_then_work_everywhere() {
    let (a, ch, _) = agg("accounts_setup").await;
    let stranger = Browser::default();
    // Before the setup: data and management answer only with the way to it.
    for (m, p, body) in [
        ("GET", "/api/v1/sites", None),
        (
            "POST",
            "/api/v2/query",
            Some(json!({"site_id": "a.com", "metrics": ["visitors"], "date_range": "day"})),
        ),
        ("POST", "/api/v1/sites", Some(json!({"domain": "c.com"}))),
        ("GET", "/api/v1/me", None),
    ] {
        let r = stranger.call(&a, m, p, body).await;
        assert_eq!(
            (r.status, &r.body["setup_required"]),
            (401, &json!(true)),
            "{m} {p}: {}",
            r.body
        );
        assert!(
            r.body["error"].as_str().unwrap().contains("setup"),
            "{}",
            r.body
        );
    }
    let status = stranger.call(&a, "GET", "/api/v1/auth/status", None).await;
    assert_eq!(
        status.body,
        json!({"accounts": true, "setup_required": true})
    );
    // A made-up setup token opens nothing.
    let r = stranger
        .call(
            &a,
            "POST",
            "/api/v1/auth/accept",
            Some(json!({"token": "vn_00", "email": OWNER, "password": OWNER_PW})),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.body);

    let link = a.setup_link().await.unwrap().unwrap();
    assert!(link.starts_with("/setup#token=vn_"), "{link}");
    let token = token_of(&link);
    let info = stranger
        .call(
            &a,
            "POST",
            "/api/v1/auth/invitation",
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(info.body["setup"], true, "{}", info.body);
    assert_eq!(info.body["role"], "owner");
    // A weak password is refused, naming the field; the link still works after that.
    let weak = stranger
        .call(
            &a,
            "POST",
            "/api/v1/auth/accept",
            Some(json!({"token": token, "email": OWNER, "password": "short"})),
        )
        .await;
    assert_eq!(weak.status, 400);
    assert!(
        weak.body["error"].as_str().unwrap().contains("`password`"),
        "{}",
        weak.body
    );
    let mut owner = Browser::default();
    let r = owner
        .call(
            &a,
            "POST",
            "/api/v1/auth/accept",
            Some(json!({"token": token, "email": OWNER, "password": OWNER_PW})),
        )
        .await;
    owner.keep(&r);
    assert_eq!(r.body["roles"], json!([{"site": "*", "role": "owner"}]));
    // The link is one-time, and no new one is made once an owner exists.
    let again = stranger
        .call(
            &a,
            "POST",
            "/api/v1/auth/accept",
            Some(json!({"token": token, "email": "x@example.com", "password": OWNER_PW})),
        )
        .await;
    assert_eq!(again.status, 401, "{}", again.body);
    assert_eq!(a.setup_link().await.unwrap(), None);
    let r = stranger.call(&a, "GET", "/api/v1/sites", None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body.get("setup_required"), None, "{}", r.body);

    // The owner's session reads and manages.
    let me = owner.call(&a, "GET", "/api/v1/me", None).await;
    assert_eq!(me.body["kind"], "user");
    assert_eq!(me.body["email"], OWNER);
    assert_eq!(me.body["csrf"], json!(owner.csrf));
    let sites = owner.call(&a, "GET", "/api/v1/sites", None).await;
    assert_eq!(sites.body["sites"], json!(["a.com", "b.com"]));

    // Cookie writes need the browser's Origin and the session's CSRF token.
    let cookie = format!("veil_session={}", owner.cookie.as_deref().unwrap());
    let forged = send(
        &a,
        "POST",
        "/api/v1/sites",
        &[("cookie", &cookie), ("content-type", "application/json")],
        Some(json!({"domain": "c.com"})),
    )
    .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    let no_csrf = send(
        &a,
        "POST",
        "/api/v1/sites",
        &[
            ("cookie", &cookie),
            ("origin", ORIGIN),
            ("content-type", "application/json"),
        ],
        Some(json!({"domain": "c.com"})),
    )
    .await;
    assert_eq!(no_csrf.status, 403);
    assert!(
        no_csrf.body["error"]
            .as_str()
            .unwrap()
            .contains("X-Veil-CSRF"),
        "{}",
        no_csrf.body
    );
    let other_csrf = send(
        &a,
        "POST",
        "/api/v1/sites",
        &[
            ("cookie", &cookie),
            ("origin", ORIGIN),
            ("x-veil-csrf", &csrf_token("vs_other")),
            ("content-type", "application/json"),
        ],
        Some(json!({"domain": "c.com"})),
    )
    .await;
    assert_eq!(other_csrf.status, 403);
    assert_eq!(
        a.site_list(),
        vec!["a.com", "b.com"],
        "no refused write ran"
    );
    let made = owner
        .call(
            &a,
            "POST",
            "/api/v1/sites",
            Some(json!({"domain": "c.com"})),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.body);

    // A second aggregator on the same ClickHouse (behind one load balancer) knows the session
    // at once: an unknown cookie makes it reload.
    let b = Aggregator::new(config(), ch.clone());
    let there = owner.call(&b, "GET", "/api/v1/me", None).await;
    assert_eq!(
        (there.status, &there.body["email"]),
        (200, &json!(OWNER)),
        "{}",
        there.body
    );

    // Wrong passwords and unknown e-mails get the same answer.
    let wrong = login(&a, OWNER, "not the password").await;
    let unknown = login(&a, "nobody@example.com", "not the password").await;
    assert_eq!((wrong.status, &wrong.body), (unknown.status, &unknown.body));
    assert_eq!(wrong.status, 401);

    // Logout ends this session only, everywhere it is known; the cookie is cleared.
    let laptop = logged_in(&a, OWNER, OWNER_PW).await;
    let out = owner.call(&a, "POST", "/api/v1/auth/logout", None).await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out.headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(owner.call(&a, "GET", "/api/v1/me", None).await.status, 401);
    eventually(
        "the other aggregator forgets a logged-out session",
        || async { owner.call(&b, "GET", "/api/v1/me", None).await.status == 401 },
    )
    .await;
    assert_eq!(laptop.call(&a, "GET", "/api/v1/me", None).await.status, 200);
    // "Log out everywhere" from a phone ends the laptop's session too.
    let phone = logged_in(&a, OWNER, OWNER_PW).await;
    let all = phone
        .call(&a, "POST", "/api/v1/auth/logout-everywhere", None)
        .await;
    assert_eq!(all.status, 200, "{}", all.body);
    for s in [&phone, &laptop] {
        let r = s.call(&a, "GET", "/api/v1/sites", None).await;
        assert_eq!(r.status, 401, "{}", r.body);
    }
    // A login in the same second (the clock has not moved) opens a session that works.
    let mut again = logged_in(&a, OWNER, OWNER_PW).await;
    let me = again.call(&a, "GET", "/api/v1/me", None).await;
    assert_eq!(me.status, 200, "{}", me.body);
    // A password change ends the older sessions and hands this browser a new one that works.
    let stale = Browser {
        cookie: again.cookie.clone(),
        csrf: None,
    };
    let changed = again
        .call(
            &a,
            "POST",
            "/api/v1/auth/password",
            Some(json!({"current": OWNER_PW, "new": "another long password"})),
        )
        .await;
    again.keep(&changed);
    let me = again.call(&a, "GET", "/api/v1/me", None).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(stale.call(&a, "GET", "/api/v1/me", None).await.status, 401);
}

#[tokio::test]
async fn a_brute_forced_password_locks_the_account_for_a_while() {
    let (a, _, clock) = agg("accounts_lockout").await;
    set_up_owner(&a).await;
    for i in 1..=MAX_FAILURES {
        let r = login(&a, OWNER, &format!("guess number {i}")).await;
        if i < MAX_FAILURES {
            assert_eq!(r.status, 401, "{i}: {}", r.body);
        } else {
            assert_eq!(r.status, 429, "{i}: {}", r.body);
            assert_eq!(r.headers["retry-after"], LOCK_SECS.to_string().as_str());
        }
    }
    // Locked: even the right password waits, and says for how long.
    let r = login(&a, OWNER, OWNER_PW).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(
        r.body["error"].as_str().unwrap().contains("locked"),
        "{}",
        r.body
    );
    assert!(r.headers.contains_key("retry-after"));
    // Another aggregator reads the lock from ClickHouse.
    let b = Aggregator::new(config(), a.clickhouse().clone()).with_clock(clock.clone());
    b.registry().refresh().await.unwrap();
    assert_eq!(login(&b, OWNER, OWNER_PW).await.status, 429);
    // An e-mail without an account locks the same way (no oracle for which exist).
    for i in 1..=MAX_FAILURES {
        let r = login(&a, "ghost@example.com", &format!("guess {i}")).await;
        assert_eq!(
            r.status,
            if i < MAX_FAILURES { 401 } else { 429 },
            "{}",
            r.body
        );
    }
    clock.advance(Duration::from_secs(u64::from(LOCK_SECS) + 60));
    assert_eq!(login(&a, OWNER, OWNER_PW).await.status, 200);
}

#[tokio::test]
async fn a_second_factor_with_recovery_codes() {
    let (a, _, clock) = agg("accounts_totp").await;
    let owner = set_up_owner(&a).await;
    let setup = owner
        .call(&a, "POST", "/api/v1/auth/totp/setup", None)
        .await;
    assert_eq!(setup.status, 200, "{}", setup.body);
    let secret = setup.body["secret"].as_str().unwrap().to_string();
    assert!(setup.body["otpauth_uri"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/Veil:owner%40example.com?secret="));
    let totp = |t: chrono::DateTime<Utc>| {
        let bytes = totp_rs::Secret::Encoded(secret.clone()).to_bytes().unwrap();
        totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes)
            .unwrap()
            .generate(t.timestamp() as u64)
    };
    let bad = owner
        .call(
            &a,
            "POST",
            "/api/v1/auth/totp/enable",
            Some(json!({"secret": secret, "code": "000000"})),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let on = owner
        .call(
            &a,
            "POST",
            "/api/v1/auth/totp/enable",
            Some(json!({"secret": secret, "code": totp(a.now())})),
        )
        .await;
    assert_eq!(on.status, 200, "{}", on.body);
    let codes: Vec<String> = serde_json::from_value(on.body["recovery_codes"].clone()).unwrap();
    assert_eq!(codes.len(), 10);

    // The password alone is not enough any more.
    let r = login(&a, OWNER, OWNER_PW).await;
    assert_eq!(
        (r.status, &r.body["second_factor"]),
        (401, &json!(true)),
        "{}",
        r.body
    );
    let with = |code: String| {
        let a = &a;
        async move {
            Browser::default()
                .call(
                    a,
                    "POST",
                    "/api/v1/auth/login",
                    Some(json!({"email": OWNER, "password": OWNER_PW, "code": code})),
                )
                .await
        }
    };
    assert_eq!(with("123456".into()).await.status, 401);
    clock.advance(Duration::from_secs(60));
    assert_eq!(with(totp(a.now())).await.status, 200);
    // A recovery code works once.
    assert_eq!(with(codes[0].to_uppercase()).await.status, 200);
    let reused = with(codes[0].clone()).await;
    assert_eq!(reused.status, 401, "{}", reused.body);
    // A code already used is refused (a replay), the next one works.
    let replay = with(totp(a.now())).await;
    assert_eq!(replay.status, 401, "{}", replay.body);
    clock.advance(Duration::from_secs(30));
    let me = logged_in_with_code(&a, totp(a.now())).await;
    let me = me.call(&a, "GET", "/api/v1/me", None).await;
    assert_eq!(me.body["second_factor"], true);
    assert_eq!(me.body["recovery_codes_left"], 9);
}

async fn logged_in_with_code(a: &Aggregator, code: String) -> Browser {
    let mut b = Browser::default();
    let r = b
        .call(
            a,
            "POST",
            "/api/v1/auth/login",
            Some(json!({"email": OWNER, "password": OWNER_PW, "code": code})),
        )
        .await;
    b.keep(&r);
    b
}

#[tokio::test]
async fn roles_per_site_invitations_removal_and_the_audit_log() {
    let (a, _, _) = agg("accounts_roles").await;
    let owner = set_up_owner(&a).await;

    // The owner invites an admin of a.com: a one-time link, shown to the inviter.
    let inv = owner
        .call(
            &a,
            "POST",
            "/api/v1/sites/a.com/people",
            Some(json!({"email": "Ada@Example.com", "role": "admin"})),
        )
        .await;
    assert_eq!(inv.status, 201, "{}", inv.body);
    let url = inv.body["url"].as_str().unwrap();
    assert!(url.starts_with("/invite#token=vn_"), "{url}");
    let listed = owner
        .call(&a, "GET", "/api/v1/sites/a.com/people", None)
        .await;
    assert_eq!(listed.body["invitations"][0]["email"], "ada@example.com");
    let stranger = Browser::default();
    let info = stranger
        .call(
            &a,
            "POST",
            "/api/v1/auth/invitation",
            Some(json!({"token": token_of(url)})),
        )
        .await;
    assert_eq!(
        (
            &info.body["email"],
            &info.body["site"],
            &info.body["role"],
            &info.body["account_exists"]
        ),
        (
            &json!("ada@example.com"),
            &json!("a.com"),
            &json!("admin"),
            &json!(false)
        )
    );
    // The invitation is for Ada: another address cannot take it.
    let taken = stranger
        .call(&a, "POST", "/api/v1/auth/accept", Some(json!({"token": token_of(url), "email": "eve@example.com", "password": "eve's password 1"})))
        .await;
    assert_eq!(taken.status, 400, "{}", taken.body);
    let ada = join(&a, url, "ada's long password").await;
    // The link is one-time: accepted once, it opens nothing, even with Ada's own password.
    let reused = stranger
        .call(
            &a,
            "POST",
            "/api/v1/auth/accept",
            Some(json!({"token": token_of(url), "password": "ada's long password"})),
        )
        .await;
    assert_eq!(reused.status, 401, "{}", reused.body);
    assert!(
        reused.body["error"].as_str().unwrap().contains("not valid"),
        "{}",
        reused.body
    );

    // Ada administers a.com and nothing else.
    assert_eq!(
        ada.call(&a, "GET", "/api/v1/sites", None).await.body["sites"],
        json!(["a.com"])
    );
    let put = ada
        .call(
            &a,
            "PUT",
            "/api/v1/sites/a.com",
            Some(json!({"honor_dnt": false, "retention_days": 30})),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(
        ada.call(
            &a,
            "POST",
            "/api/v1/sites/a.com/keys",
            Some(json!({"name": "ci"}))
        )
        .await
        .status,
        201
    );
    let del = ada.call(&a, "DELETE", "/api/v1/sites/a.com", None).await;
    assert_eq!(del.status, 403);
    assert!(
        del.body["error"].as_str().unwrap().contains("owner"),
        "{}",
        del.body
    );
    assert_eq!(
        ada.call(&a, "GET", "/api/v1/sites/b.com", None)
            .await
            .status,
        404
    );
    assert_eq!(
        ada.call(
            &a,
            "POST",
            "/api/v1/sites",
            Some(json!({"domain": "d.com"}))
        )
        .await
        .status,
        403
    );
    let too_high = ada
        .call(
            &a,
            "POST",
            "/api/v1/sites/a.com/people",
            Some(json!({"email": "x@example.com", "role": "owner"})),
        )
        .await;
    assert_eq!(too_high.status, 403, "{}", too_high.body);
    assert_eq!(ada.call(&a, "GET", "/api/v1/audit", None).await.status, 403);

    // Ada invites a viewer, the marketer.
    let inv = ada
        .call(
            &a,
            "POST",
            "/api/v1/sites/a.com/people",
            Some(json!({"email": "mo@example.com", "role": "viewer"})),
        )
        .await;
    assert_eq!(inv.status, 201, "{}", inv.body);
    let mo = join(&a, inv.body["url"].as_str().unwrap(), "mo's long password").await;
    let q = |site: &str| json!({"site_id": site, "metrics": ["visitors"], "date_range": "day"});
    assert_eq!(
        mo.call(&a, "POST", "/api/v2/query", Some(q("a.com")))
            .await
            .status,
        200
    );
    assert_eq!(
        mo.call(&a, "GET", "/api/v1/sites/a.com/export", None)
            .await
            .status,
        200
    );
    // A viewer of a.com never sees b.com: the same 404 as an unknown site.
    let other = mo.call(&a, "POST", "/api/v2/query", Some(q("b.com"))).await;
    let unknown = mo
        .call(&a, "POST", "/api/v2/query", Some(q("nowhere.example")))
        .await;
    assert_eq!((other.status, unknown.status), (404, 404));
    assert_eq!(
        mo.call(&a, "GET", "/api/v1/sites", None).await.body["sites"],
        json!(["a.com"])
    );
    for (m, p, body) in [
        (
            "PUT",
            "/api/v1/sites/a.com",
            Some(json!({"honor_dnt": true})),
        ),
        ("GET", "/api/v1/sites/a.com/keys", None),
        ("POST", "/api/v1/sites/a.com/shared-links", Some(json!({}))),
        ("GET", "/api/v1/sites/a.com/people", None),
    ] {
        let r = mo.call(&a, m, p, body).await;
        assert_eq!(r.status, 403, "{m} {p}: {}", r.body);
    }
    let me = mo.call(&a, "GET", "/api/v1/me", None).await;
    assert_eq!(
        me.body["roles"],
        json!([{"site": "a.com", "role": "viewer"}])
    );
    assert_eq!(me.body["can_create_sites"], false);

    // An existing account accepts another invitation with its own password.
    let inv = owner
        .call(
            &a,
            "POST",
            "/api/v1/sites/b.com/people",
            Some(json!({"email": "ada@example.com", "role": "viewer"})),
        )
        .await;
    let tok = token_of(inv.body["url"].as_str().unwrap());
    let wrong = stranger
        .call(
            &a,
            "POST",
            "/api/v1/auth/accept",
            Some(json!({"token": tok, "password": "not ada's password"})),
        )
        .await;
    assert_eq!(wrong.status, 401);
    let r = stranger
        .call(
            &a,
            "POST",
            "/api/v1/auth/accept",
            Some(json!({"token": tok, "password": "ada's long password"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        ada.call(&a, "GET", "/api/v1/sites", None).await.body["sites"],
        json!(["a.com", "b.com"])
    );

    // Removing Mo ends Mo's sessions at once.
    let people = ada
        .call(&a, "GET", "/api/v1/sites/a.com/people", None)
        .await;
    let mo_id = people.body["people"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["email"] == "mo@example.com")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let gone = ada
        .call(
            &a,
            "DELETE",
            &format!("/api/v1/sites/a.com/people/{mo_id}"),
            None,
        )
        .await;
    assert_eq!(gone.status, 200, "{}", gone.body);
    assert_eq!(
        mo.call(&a, "POST", "/api/v2/query", Some(q("a.com")))
            .await
            .status,
        401
    );
    // The last owner of every site cannot be removed.
    let owners = owner.call(&a, "GET", "/api/v1/people", None).await;
    let owner_id = owners.body["people"][0]["id"].as_str().unwrap().to_string();
    let last = owner
        .call(&a, "DELETE", &format!("/api/v1/people/{owner_id}"), None)
        .await;
    assert_eq!(last.status, 409, "{}", last.body);

    // The audit log says who changed what, for owners only, with no visitor data.
    let log = owner.call(&a, "GET", "/api/v1/audit", None).await;
    assert_eq!(log.status, 200, "{}", log.body);
    let entries = log.body["entries"].as_array().unwrap();
    let find = |action: &str, actor: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action && e["actor"] == actor)
            .unwrap_or_else(|| panic!("no {action} by {actor} in {entries:?}"))
    };
    let upd = find("site.update", "ada@example.com");
    assert_eq!(upd["site"], "a.com");
    assert_eq!(upd["detail"]["honor_dnt"], json!([true, false]));
    assert_eq!(upd["detail"]["retention_days"], json!([null, 30]));
    find("key.create", "ada@example.com");
    find("person.invite", OWNER);
    find("person.invite", "ada@example.com");
    find("person.join", "mo@example.com");
    find("person.remove", "ada@example.com");
    find("owner.setup", OWNER);
    let text = log.body.to_string();
    for secret in ["vs_", "vk_", "ada's long password", OWNER_PW] {
        assert!(!text.contains(secret), "{secret} in the audit log");
    }
    let only_b = owner
        .call(&a, "GET", "/api/v1/audit?site=b.com", None)
        .await;
    assert!(only_b.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["site"] == "b.com"));
}

#[tokio::test]
async fn behind_tls_the_session_cookie_is_secure_and_host_bound() {
    let ch = veil_schemas::testing::fresh_database("accounts_tls").await;
    let a = Aggregator::new(
        AggregatorConfig {
            public_url: Some("https://veil.example".into()),
            ..config()
        },
        ch,
    );
    a.registry().refresh().await.unwrap();
    let link = a.setup_link().await.unwrap().unwrap();
    let r = Browser::default()
        .call(
            &a,
            "POST",
            "/api/v1/auth/accept",
            Some(json!({"token": token_of(&link), "email": OWNER, "password": OWNER_PW})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let set = r.headers["set-cookie"].to_str().unwrap();
    assert!(set.starts_with("__Host-veil_session=vs_"), "{set}");
    for attr in ["; Secure", "; HttpOnly", "; SameSite=Strict", "; Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Domain="), "{set}");
    let cookie = set.split(';').next().unwrap();
    let me = send(&a, "GET", "/api/v1/me", &[("cookie", cookie)], None).await;
    assert_eq!(
        (me.status, &me.body["email"]),
        (200, &json!(OWNER)),
        "{}",
        me.body
    );
}

#[tokio::test]
async fn owners_erase_a_sites_data_on_request_and_only_owners() {
    let (a, ch, _) = agg("accounts_erase").await;
    let owner = set_up_owner(&a).await;
    let insert = |site: &'static str| {
        let ch = ch.clone();
        async move {
            let q = veil_schemas::sql!(
                "INSERT INTO events (site, timestamp, name, pathname, visitor_id) \
                 SELECT {}, now(), 'pageview', '/', toFixedString(toString(number), 16) FROM numbers(50)",
                veil_schemas::sql::lit(site)
            );
            veil_aggregator::db::exec(&ch.client(), &q).await.unwrap();
        }
    };
    insert("a.com").await;
    insert("b.com").await;
    let count = |site: &'static str| {
        let ch = ch.clone();
        async move {
            let q = veil_schemas::sql!(
                "SELECT count() FROM events WHERE site = {}",
                veil_schemas::sql::lit(site)
            );
            let n: u64 = ch.client().sql(&q).fetch_one().await.unwrap();
            n
        }
    };
    // An admin of a.com may not erase it.
    let inv = owner
        .call(
            &a,
            "POST",
            "/api/v1/sites/a.com/people",
            Some(json!({"email": "ada@example.com", "role": "admin"})),
        )
        .await;
    let ada = join(&a, inv.body["url"].as_str().unwrap(), "ada's long password").await;
    let r = ada
        .call(
            &a,
            "POST",
            "/api/v1/sites/a.com/erase",
            Some(json!({"confirm": "a.com"})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // The owner must confirm with the domain.
    let r = owner
        .call(&a, "POST", "/api/v1/sites/a.com/erase", Some(json!({})))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["error"].as_str().unwrap().contains("confirm"),
        "{}",
        r.body
    );
    assert_eq!(count("a.com").await, 50);
    let r = owner
        .call(
            &a,
            "POST",
            "/api/v1/sites/a.com/erase",
            Some(json!({"confirm": "a.com"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["tables"]["events"], 50, "{}", r.body);
    assert_eq!(count("a.com").await, 0);
    assert_eq!(count("b.com").await, 50, "another site's data stays");
    // People and the audit log stay: Ada still administers a.com, and the erasure is logged.
    assert_eq!(
        ada.call(&a, "GET", "/api/v1/sites", None).await.body["sites"],
        json!(["a.com"])
    );
    let log = owner
        .call(&a, "GET", "/api/v1/audit?site=a.com", None)
        .await;
    let erased = log.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "site.erase")
        .unwrap_or_else(|| panic!("{}", log.body));
    assert_eq!(
        (&erased["actor"], &erased["detail"]["tables"]["events"]),
        (&json!(OWNER), &json!(50))
    );
    assert!(log.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "person.invite"));
}

/// The clock moved to `secs` past the start of the test (the ManualClock starts at the real
/// time: the rows are made then, so ClickHouse, which drops rows past their end by its own
/// clock when the registry reloads, keeps them and only the aggregator's clock decides).
fn move_to(clock: &ManualClock, start: chrono::DateTime<Utc>, secs: u32) {
    clock.set(start + chrono::Duration::seconds(i64::from(secs)));
}

#[tokio::test]
async fn a_session_past_its_lifetime_is_refused_and_the_person_logs_in_again() {
    let (a, _, clock) = agg("accounts_session_expiry").await;
    let start = a.now();
    let owner = set_up_owner(&a).await;
    // A minute before its end the session still reads.
    move_to(&clock, start, SESSION_SECS - 60);
    let me = owner.call(&a, "GET", "/api/v1/me", None).await;
    assert_eq!(
        (me.status, &me.body["email"]),
        (200, &json!(OWNER)),
        "{}",
        me.body
    );
    // Past its seven days: refused, on this aggregator and on one that loads it afresh.
    move_to(&clock, start, SESSION_SECS + 1);
    let b = Aggregator::new(config(), a.clickhouse().clone()).with_clock(clock.clone());
    b.registry().refresh().await.unwrap();
    for (name, agg) in [("a", &a), ("b", &b)] {
        for (m, p) in [("GET", "/api/v1/me"), ("GET", "/api/v1/sites")] {
            let r = owner.call(agg, m, p, None).await;
            assert_eq!(r.status, 401, "{name} {m} {p}: {}", r.body);
            assert!(
                r.body["error"].as_str().unwrap().contains("log in again"),
                "{name} {p}: {}",
                r.body
            );
        }
        // Nor can it change anything, CSRF token and Origin given.
        let r = owner
            .call(
                agg,
                "POST",
                "/api/v1/sites",
                Some(json!({"domain": "c.com"})),
            )
            .await;
        assert_eq!(r.status, 401, "{name}: {}", r.body);
    }
    // Logging in again gives a new session that works (and shows no site was made).
    let again = logged_in(&a, OWNER, OWNER_PW).await;
    assert_ne!(again.cookie, owner.cookie);
    let me = again.call(&a, "GET", "/api/v1/me", None).await;
    assert_eq!(
        (me.status, &me.body["email"]),
        (200, &json!(OWNER)),
        "{}",
        me.body
    );
    let sites = again.call(&b, "GET", "/api/v1/sites", None).await;
    assert_eq!(
        sites.body["sites"],
        json!(["a.com", "b.com"]),
        "{}",
        sites.body
    );
}

#[tokio::test]
async fn an_invitation_past_its_expiry_opens_nothing_and_says_so() {
    let (a, _, clock) = agg("accounts_invitation_expiry").await;
    let start = a.now();
    let owner = set_up_owner(&a).await;
    let inv = owner
        .call(
            &a,
            "POST",
            "/api/v1/sites/a.com/people",
            Some(json!({"email": "vic@example.com", "role": "viewer"})),
        )
        .await;
    assert_eq!(inv.status, 201, "{}", inv.body);
    let token = token_of(inv.body["url"].as_str().unwrap());
    let stranger = Browser::default();
    let info = |token: String| {
        let stranger = stranger.clone();
        let a = &a;
        async move {
            stranger
                .call(
                    a,
                    "POST",
                    "/api/v1/auth/invitation",
                    Some(json!({"token": token})),
                )
                .await
        }
    };
    // A minute before its end it still opens.
    move_to(&clock, start, INVITATION_SECS - 60);
    let r = info(token.clone()).await;
    assert_eq!(
        (r.status, &r.body["role"]),
        (200, &json!("viewer")),
        "{}",
        r.body
    );
    // Past its seven days: refused, saying it expired and what to do.
    move_to(&clock, start, INVITATION_SECS + 1);
    let r = info(token.clone()).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let msg = r.body["error"].as_str().unwrap();
    assert!(
        msg.contains("expired") && msg.contains("ask whoever invited you for a new one"),
        "{msg}"
    );
    let accept = stranger
        .call(
            &a,
            "POST",
            "/api/v1/auth/accept",
            Some(json!({"token": token, "password": "vic's long password"})),
        )
        .await;
    assert_eq!(accept.status, 401, "{}", accept.body);
    assert!(
        accept.body["error"].as_str().unwrap().contains("expired"),
        "{}",
        accept.body
    );
    // No account was made, and the owner's list no longer shows it.
    assert_eq!(
        login(&a, "vic@example.com", "vic's long password")
            .await
            .status,
        401
    );
    let owner = logged_in(&a, OWNER, OWNER_PW).await;
    let listed = owner
        .call(&a, "GET", "/api/v1/sites/a.com/people", None)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["invitations"], json!([]), "{}", listed.body);
}

#[tokio::test]
async fn the_setup_link_past_24_hours_is_refused_and_a_new_one_works() {
    let (a, _, clock) = agg("accounts_setup_expiry").await;
    let start = a.now();
    let stranger = Browser::default();
    let old = token_of(&a.setup_link().await.unwrap().expect("a setup link"));
    assert_eq!(SETUP_SECS, 24 * 3600);
    move_to(&clock, start, SETUP_SECS - 60);
    let r = stranger
        .call(
            &a,
            "POST",
            "/api/v1/auth/invitation",
            Some(json!({"token": old})),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["setup"]),
        (200, &json!(true)),
        "{}",
        r.body
    );
    // Past 24 hours: refused, saying it expired and how to get a new one; Veil still has no
    // owner and still answers only with the way to the setup.
    move_to(&clock, start, SETUP_SECS + 1);
    let r = stranger
        .call(
            &a,
            "POST",
            "/api/v1/auth/accept",
            Some(json!({"token": old, "email": OWNER, "password": OWNER_PW})),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let msg = r.body["error"].as_str().unwrap();
    assert!(
        msg.contains("setup link expired") && msg.contains("restart `veil up`"),
        "{msg}"
    );
    assert_eq!(login(&a, OWNER, OWNER_PW).await.status, 401);
    let status = stranger.call(&a, "GET", "/api/v1/auth/status", None).await;
    assert_eq!(status.body["setup_required"], true, "{}", status.body);
    // What a restart of `veil up` does: a new link, good for 24 hours from now, which works.
    let new = token_of(&a.setup_link().await.unwrap().expect("a new setup link"));
    assert_ne!(new, old);
    move_to(&clock, start, 2 * SETUP_SECS - 60);
    let mut owner = Browser::default();
    let r = owner
        .call(
            &a,
            "POST",
            "/api/v1/auth/accept",
            Some(json!({"token": new, "email": OWNER, "password": OWNER_PW})),
        )
        .await;
    owner.keep(&r);
    assert_eq!(r.body["roles"], json!([{"site": "*", "role": "owner"}]));
    // The expired link still opens nothing, and there is nothing to set up any more.
    let r = stranger
        .call(
            &a,
            "POST",
            "/api/v1/auth/accept",
            Some(json!({"token": old, "email": "eve@example.com", "password": OWNER_PW})),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(a.setup_link().await.unwrap(), None);
}

#[tokio::test]
async fn with_an_admin_token_no_setup_link_is_made() {
    let ch = veil_schemas::testing::fresh_database("accounts_admin_token").await;
    let a = Aggregator::new(
        AggregatorConfig {
            api_token: Some("0123456789abcdef-operator".into()),
            ..config()
        },
        ch,
    );
    a.registry().refresh().await.unwrap();
    // No owner exists, yet nothing offers the setup: the operator holds the token.
    assert_eq!(a.setup_link().await.unwrap(), None);
    assert!(!a.registry().snapshot().people.has_owner());
    let stranger = Browser::default();
    let status = stranger.call(&a, "GET", "/api/v1/auth/status", None).await;
    assert_eq!(
        status.body,
        json!({"accounts": true, "setup_required": false})
    );
    let r = stranger.call(&a, "GET", "/api/v1/sites", None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body.get("setup_required"), None, "{}", r.body);
    // The token is the credential.
    let r = send(
        &a,
        "GET",
        "/api/v1/sites",
        &[("authorization", "Bearer 0123456789abcdef-operator")],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn segments_personal_and_site_are_used_by_whom_they_belong_to_and_answer_as_their_filters() {
    let (a, ch, _) = agg("accounts_segments").await;
    let owner = set_up_owner(&a).await;
    let inv = owner
        .call(
            &a,
            "POST",
            "/api/v1/sites/a.com/people",
            Some(json!({"email": "vic@example.com", "role": "viewer"})),
        )
        .await;
    assert_eq!(inv.status, 201, "{}", inv.body);
    let viewer = join(&a, inv.body["url"].as_str().unwrap(), "vic's long password").await;
    // 6 Google visitors from DE and 6 direct ones from the US (k is 5 here).
    let mut evs = Vec::new();
    for i in 0..6 {
        evs.push(common::Ev {
            source: "Google",
            country: "DE",
            ..common::ev(format!("G{i}"), "2026-11-20 10:00:00", "pageview", "/")
        });
        evs.push(common::ev(
            format!("U{i}"),
            "2026-11-20 11:00:00",
            "pageview",
            "/",
        ));
    }
    common::insert(&ch, "a.com", &evs).await;
    let path = "/api/v1/sites/a.com/segments";
    let ask = |who: &Browser, filters: Value| {
        let who = who.clone();
        let a = a.clone();
        async move {
            who.call(
                &a,
                "POST",
                "/api/v2/query",
                Some(json!({"site_id": "a.com", "metrics": ["visitors"],
                            "date_range": ["2026-11-20", "2026-11-20"], "filters": filters})),
            )
            .await
        }
    };

    // A viewer makes a personal segment; a site one needs the admin role.
    let germans = viewer
        .call(
            &a,
            "POST",
            path,
            Some(json!({"name": "Germans", "filters": [["is", "visit:country", ["DE"]]]})),
        )
        .await;
    assert_eq!(germans.status, 201, "{}", germans.body);
    assert_eq!(germans.body["type"], "personal");
    let refused = viewer
        .call(&a, "POST", path, Some(json!({"name": "All", "filters": [["is", "visit:country", ["US"]]], "type": "site"})))
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let google = owner
        .call(&a, "POST", path, Some(json!({"name": "Google", "filters": [["is", "visit:source", ["Google"]]], "type": "site"})))
        .await;
    assert_eq!(google.status, 201, "{}", google.body);
    // Filters the Stats API would refuse are refused here, saying why.
    for bad in [json!([["is", "visit:nope", ["x"]]]), json!([]), json!("DE")] {
        let r = owner
            .call(
                &a,
                "POST",
                path,
                Some(json!({"name": "Bad", "filters": bad})),
            )
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(
            r.body["error"].as_str().unwrap().contains("filters"),
            "{}",
            r.body
        );
    }
    let dup = viewer
        .call(
            &a,
            "POST",
            path,
            Some(json!({"name": "Germans", "filters": [["is", "visit:country", ["FR"]]]})),
        )
        .await;
    assert_eq!(dup.status, 409, "{}", dup.body);

    // Each sees the site's segments and their own.
    let names = |r: &Answer| -> Vec<String> {
        r.body["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&viewer.call(&a, "GET", path, None).await),
        ["Germans", "Google"]
    );
    assert_eq!(names(&owner.call(&a, "GET", path, None).await), ["Google"]);

    // A question with a segment is answered as with its filters.
    let gid = germans.body["id"].as_str().unwrap().to_string();
    let sid = google.body["id"].as_str().unwrap().to_string();
    let with = ask(&viewer, json!([["is", "segment", [gid]]])).await;
    let written = ask(&viewer, json!([["is", "visit:country", ["DE"]]])).await;
    assert_eq!(with.status, 200, "{}", with.body);
    assert_eq!(with.body["results"], written.body["results"]);
    assert_eq!(with.body["results"][0]["metrics"][0], 6, "{}", with.body);
    assert_eq!(
        with.body["query"]["filters"],
        json!([["and", [["is", "visit:country", ["DE"]]]]])
    );
    // Two segments: either one. With another filter: both.
    let either = ask(&viewer, json!([["is", "segment", [gid, sid]]])).await;
    assert_eq!(
        either.body["results"][0]["metrics"][0], 6,
        "{}",
        either.body
    );
    let us = ask(
        &viewer,
        json!([["is", "segment", [sid]], ["is", "visit:country", ["US"]]]),
    )
    .await;
    assert_eq!(us.status, 200, "{}", us.body);
    let us_written = ask(
        &viewer,
        json!([
            ["is", "visit:source", ["Google"]],
            ["is", "visit:country", ["US"]]
        ]),
    )
    .await;
    assert_eq!(us.body["results"], us_written.body["results"]);
    assert_eq!(
        us.body["results"][0]["metrics"][0],
        Value::Null,
        "no Google visitor from the US: {}",
        us.body
    );
    // Someone else's personal segment, or an unknown id, is not usable.
    for id in [gid.clone(), "0000000000000000".to_string()] {
        let r = ask(&owner, json!([["is", "segment", [id]]])).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(
            r.body["error"]
                .as_str()
                .unwrap()
                .contains("not a segment of a.com you may use"),
            "{}",
            r.body
        );
    }

    // Removing: the site segment by an admin only; the personal one by its owner.
    assert_eq!(
        viewer
            .call(&a, "DELETE", &format!("{path}/{sid}"), None)
            .await
            .status,
        403
    );
    assert_eq!(
        owner
            .call(&a, "DELETE", &format!("{path}/{gid}"), None)
            .await
            .status,
        404
    );
    assert_eq!(
        owner
            .call(&a, "DELETE", &format!("{path}/{sid}"), None)
            .await
            .status,
        200
    );
    assert_eq!(
        viewer
            .call(&a, "DELETE", &format!("{path}/{gid}"), None)
            .await
            .status,
        200
    );
    assert!(names(&viewer.call(&a, "GET", path, None).await).is_empty());
    let gone = ask(&viewer, json!([["is", "segment", [sid]]])).await;
    assert_eq!(gone.status, 400, "{}", gone.body);
}
