//! People and their sessions: the first-run owner setup, login with e-mail and password (and
//! an optional TOTP second factor), server-side sessions in cookies, logout, invitations,
//! roles per site, and the audit log. Storage is [`veil_schemas::people`] (ClickHouse, shared
//! by every aggregator like the site registry).
//!
//! Wire format (JSON bodies; errors `{"error": "…"}`):
//!
//! Open to anyone (they are how one gets a session):
//! - `GET /api/v1/auth/status` → `{"accounts": bool, "setup_required": bool}`;
//! - `POST /api/v1/auth/login` `{"email", "password", "code"?}` → `{"email", "roles", "csrf"}`
//!   and `Set-Cookie` (below). Wrong e-mail or password: 401 (the same answer for both); an
//!   account with a second factor and no or a wrong `code`: 401 with `"second_factor": true`
//!   (`code`: the authenticator's 6 digits or one unused recovery code); after
//!   [`MAX_FAILURES`] failures within [`FAILURE_WINDOW_SECS`] the account is locked for
//!   [`LOCK_SECS`] (429 with `Retry-After`, shared by every aggregator through the account's
//!   `locked_until`); all logins together are also rate-limited (429);
//! - `POST /api/v1/auth/invitation` `{"token"}` → `{"email", "site", "role", "setup",
//!   "account_exists"}`: what an invitation (or the setup link) offers, for its page;
//! - `POST /api/v1/auth/accept` `{"token", "email"?, "password", "code"?}` → as login: the
//!   invitation's role is given (to a new account with that password, or to the existing
//!   account whose password it is) and the invitation is used up. The setup link is an
//!   invitation to own every site with no e-mail fixed; it works only while no owner exists.
//!
//! With a session (or the admin token, or a key/link for `me`):
//! - `GET /api/v1/me` → `{"kind": "user"|"operator"|"key"|"link", "email"?, "roles": [{"site",
//!   "role"}], "csrf"?, "second_factor"?, "can_create_sites"}`;
//! - `POST /api/v1/auth/logout` → ends this session; `POST /api/v1/auth/logout-everywhere` →
//!   ends every session of the account; both clear the cookie;
//! - `POST /api/v1/auth/password` `{"current", "new"}` → ends every other session;
//! - `POST /api/v1/auth/totp/setup` → `{"secret", "otpauth_uri"}` (nothing stored yet);
//!   `POST /api/v1/auth/totp/enable` `{"secret", "code"}` → `{"recovery_codes": [10 codes]}`
//!   (shown once); `POST /api/v1/auth/totp/disable` `{"password"}`;
//! - people of a site (role admin on it) — `GET /api/v1/sites/{domain}/people` →
//!   `{"people": [{"id", "email", "role"}], "invitations": [{"id", "email", "role",
//!   "expires_at", "invited_by"}]}`; `POST …/people` `{"email", "role"}` → 201 `{"invitation":
//!   {…}, "url": "/invite#token=TOKEN", "emailed": bool}` (shown once; one role at most the
//!   inviter's own; `emailed`: the link was also e-mailed to the invitee, [`crate::mail`]);
//!   `PUT …/people/{id}` `{"role"}`; `DELETE …/people/{id}` (their sessions end);
//!   `DELETE …/invitations/{id}`. The same under `/api/v1/people` for roles on every site
//!   (owners of every site only); there `DELETE` removes the account.
//! - `GET /api/v1/audit?site=D&limit=N` → `{"entries": [{"at", "actor", "site", "action",
//!   "detail"}]}`, newest first: the sites the asker owns (owners of every site: all).
//!
//! Sessions: the cookie `veil_session` (`__Host-veil_session` when `--public-url` is https,
//! with `Secure`) holds a random token, `HttpOnly; SameSite=Strict; Path=/`, for
//! [`SESSION_SECS`]. A request with it that changes anything (not GET/HEAD) must carry an
//! `Origin` header (the [`crate::guard`] checks it is this server's) and `X-Veil-CSRF` equal to
//! the session's CSRF token ([`csrf_token`], given by login and `me`): a page of another site
//! can make a browser send the cookie, never read the token.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use serde_json::{json, Map, Value};
use veil_schemas::people::{
    normalize_email, AuditEntry, InvitationRecord, Role, UserRecord, ALL_SITES,
};
use veil_schemas::registry::{normalize_domain, random_hex, secret_hash};

use crate::auth::{self, Access, Person};
use crate::http::{json_response, HttpResponse};
use crate::{Aggregator, Error};

/// The session cookie's name over plain HTTP.
pub const SESSION_COOKIE: &str = "veil_session";
/// The session cookie's name behind TLS (the `__Host-` prefix: Secure, Path=/, no Domain).
pub const SECURE_SESSION_COOKIE: &str = "__Host-veil_session";
/// The header carrying a session's CSRF token.
pub const CSRF_HEADER: &str = "x-veil-csrf";
/// How long a session lasts (7 days).
pub const SESSION_SECS: u32 = 7 * 86_400;
/// How long an invitation stays valid (7 days).
pub const INVITATION_SECS: u32 = 7 * 86_400;
/// How long the first-run setup link stays valid (24 hours).
pub const SETUP_SECS: u32 = 86_400;
/// Failed logins (wrong password or code) of one account that lock it …
pub const MAX_FAILURES: u32 = 5;
/// … within this many seconds …
pub const FAILURE_WINDOW_SECS: i64 = 15 * 60;
/// … for this many seconds.
pub const LOCK_SECS: u32 = 15 * 60;
/// Shortest password, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 10;
/// Longest password, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 256;
/// Recovery codes made when a second factor is enabled.
pub const RECOVERY_CODES: usize = 10;
/// Who made the setup link (its `invited_by`).
const SETUP: &str = "setup";

/// The CSRF token of the session whose token is `session_token` (hex; derived, not stored).
pub fn csrf_token(session_token: &str) -> String {
    blake3::derive_key("veil 2026 session csrf", session_token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The session token of a request's cookie, if any.
pub fn session_cookie(req: &Request<Bytes>) -> Option<&str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE || *k == SECURE_SESSION_COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Failed logins per e-mail in this process: `(failures, first failure's Unix second)`.
#[derive(Debug, Default)]
pub struct Failures(Mutex<HashMap<String, (u32, i64)>>);

impl Failures {
    /// Counts one failure of `email` at `now`; true when it reaches [`MAX_FAILURES`].
    fn fail(&self, email: &str, now: i64) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 100_000 {
            m.retain(|_, (_, at)| now - *at < FAILURE_WINDOW_SECS);
        }
        let e = m.entry(email.to_string()).or_insert((0, now));
        if now - e.1 >= FAILURE_WINDOW_SECS {
            *e = (0, now);
        }
        e.0 += 1;
        e.0 >= MAX_FAILURES
    }

    fn clear(&self, email: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(email);
    }
}

/// A PHC string no password matches in practice: verified against when the e-mail has no
/// account, so a wrong e-mail costs as long as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let pw = random_hex(16).unwrap_or_else(|_| "veil-decoy-password".into());
        auth::hash_password(&pw).unwrap_or_default()
    })
}

fn bad(m: impl Into<String>) -> Error {
    Error::BadRequest(m.into())
}

fn body(req: &Request<Bytes>, allowed: &[&str]) -> Result<Map<String, Value>, Error> {
    let obj = match serde_json::from_slice::<Value>(req.body()) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(bad("the body must be a JSON object")),
        Err(_) if req.body().iter().all(u8::is_ascii_whitespace) => Map::new(),
        Err(e) => return Err(bad(format!("invalid JSON body: {e}"))),
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown field `{k}`; expected one of {}",
            allowed.join(", ")
        )));
    }
    Ok(obj)
}

fn text<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, Error> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(bad(format!("`{field}` must be a string"))),
    }
}

fn required<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str, Error> {
    text(obj, field)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad(format!("`{field}` is required")))
}

fn check_new_password(pw: &str, email: &str) -> Result<(), Error> {
    if pw.len() < MIN_PASSWORD_BYTES || pw.len() > MAX_PASSWORD_BYTES {
        return Err(bad(format!(
            "`password` must be {MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    if pw.eq_ignore_ascii_case(email) {
        return Err(bad("`password` must not be the e-mail address"));
    }
    Ok(())
}

fn rfc3339(secs: u32) -> Value {
    chrono::DateTime::from_timestamp(i64::from(secs), 0)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null)
}

fn roles_json(roles: &[(String, Role)]) -> Value {
    Value::Array(
        roles
            .iter()
            .map(|(s, r)| json!({"site": s, "role": r.name()}))
            .collect(),
    )
}

fn role_field(obj: &Map<String, Value>) -> Result<Role, Error> {
    let r = required(obj, "role")?;
    Role::parse(r).ok_or_else(|| {
        bad(format!(
            "`role` {r:?} is not a role; expected owner, admin or viewer"
        ))
    })
}

async fn hash_off_runtime(pw: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || auth::hash_password(&pw))
        .await
        .map_err(|e| Error::Internal(format!("password hashing task: {e}")))?
}

async fn verify_off_runtime(phc: String, pw: String) -> bool {
    tokio::task::spawn_blocking(move || auth::verify_password(&phc, &pw))
        .await
        .unwrap_or(false)
}

/// A TOTP checker for a base32 secret: SHA-1, 6 digits, 30 s steps, one step of skew (what
/// every authenticator app does by default).
fn totp(secret_b32: &str) -> Option<totp_rs::TOTP> {
    let bytes = totp_rs::Secret::Encoded(secret_b32.to_string())
        .to_bytes()
        .ok()?;
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes).ok()
}

/// A new random TOTP secret (20 bytes, base32 as authenticator apps take it).
fn new_totp_secret() -> Result<String, Error> {
    let mut raw = [0u8; 20];
    getrandom::fill(&mut raw).map_err(|e| Error::Internal(format!("random secret: {e}")))?;
    match totp_rs::Secret::Raw(raw.to_vec()).to_encoded() {
        totp_rs::Secret::Encoded(s) => Ok(s),
        totp_rs::Secret::Raw(_) => Err(Error::Internal("encoding a TOTP secret".into())),
    }
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The last TOTP time step each account logged in with, in this process: a code is accepted
/// once (RFC 6238 §5.2), so one seen over a shoulder or in a log cannot be replayed.
#[derive(Debug, Default)]
pub struct UsedSteps(Mutex<HashMap<String, u64>>);

/// The outcome of checking a second-factor `code` for `user` at `now`: `Ok(Some(rest))` when
/// a recovery code was used (the codes left), `Ok(None)` for a right TOTP code not used before
/// (its step is remembered in `used`).
fn second_factor(
    user: &UserRecord,
    code: Option<&str>,
    now: i64,
    used: &UsedSteps,
) -> Result<Option<Vec<String>>, Error> {
    let code = code.map(str::trim).filter(|c| !c.is_empty()).ok_or_else(|| {
        Error::SecondFactor(
            "this account has a second factor: enter the 6-digit code of your authenticator app (or a recovery code)".into(),
        )
    })?;
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
        // One step of skew either way, as TOTP::check allows, but knowing which step matched.
        let step = u64::try_from(now).unwrap_or(0) / 30;
        let matched = totp(&user.totp_secret).and_then(|t| {
            (step.saturating_sub(1)..=step + 1).find(|s| {
                let want = t.generate(s * 30);
                blake3::hash(want.as_bytes()) == blake3::hash(digits.as_bytes())
            })
        });
        let Some(matched) = matched else {
            return Err(Error::SecondFactor(
                "the second-factor code is wrong or too old".into(),
            ));
        };
        let mut last = used.0.lock().unwrap_or_else(|p| p.into_inner());
        if last.get(&user.id).is_some_and(|l| *l >= matched) {
            return Err(Error::SecondFactor(
                "this second-factor code was used already: wait for the next one".into(),
            ));
        }
        last.insert(user.id.clone(), matched);
        return Ok(None);
    }
    let h = secret_hash(&code.to_ascii_lowercase());
    if user.recovery.contains(&h) {
        return Ok(Some(
            user.recovery.iter().filter(|r| **r != h).cloned().collect(),
        ));
    }
    Err(Error::SecondFactor(
        "the second-factor code is wrong or too old".into(),
    ))
}

impl Aggregator {
    fn now_secs(&self) -> u32 {
        u32::try_from(self.now().timestamp().max(0)).unwrap_or(u32::MAX)
    }

    /// Makes sure the registry was reloaded after this request asked (a cookie, key, link or
    /// owner this process does not know yet may have been made a moment ago by another
    /// process: `veil key create`, another aggregator). Forced reloads run one at a time and
    /// at most one per second: a request that arrives while one runs, or less than a second
    /// after the last, waits for the next (at most about a second) rather than being refused —
    /// a key printed by `veil key create` works on the next request — and a flood of unknown
    /// credentials costs ClickHouse one registry load per second. Returns whether a reload
    /// started after the request asked has completed.
    pub(crate) async fn reload_for_unknown(&self) -> Result<bool, Error> {
        let asked = Instant::now();
        let mut last = self.reloaded.lock().await;
        if last.is_some_and(|started: Instant| started >= asked) {
            // Another request's reload began after this one asked and has finished.
            return Ok(true);
        }
        if let Some(started) = *last {
            let wait = Duration::from_secs(1).saturating_sub(started.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        // Counted as started even if it fails: a ClickHouse outage is not retried per request.
        *last = Some(Instant::now());
        self.registry.refresh().await?;
        Ok(true)
    }

    /// The error for a request that brings no credential: the way to the setup while the
    /// deployment has no owner and no admin token, else 401.
    pub(crate) async fn no_credential(&self) -> Error {
        if self.cfg.api_token.is_some() {
            return Error::Unauthorized;
        }
        let mut owned = self.registry.snapshot().people.has_owner();
        if !owned && self.reload_for_unknown().await.unwrap_or(false) {
            owned = self.registry.snapshot().people.has_owner();
        }
        if owned {
            Error::Unauthorized
        } else {
            Error::SetupRequired
        }
    }

    /// Who a session cookie's token is, with the CSRF rule for writes.
    pub(crate) async fn session_access(
        &self,
        req: &Request<Bytes>,
        token: &str,
    ) -> Result<Access, Error> {
        let hash = secret_hash(token);
        let mut session = self
            .registry
            .snapshot()
            .people
            .session_by_hash(&hash)
            .cloned();
        if session.is_none() && self.reload_for_unknown().await? {
            session = self
                .registry
                .snapshot()
                .people
                .session_by_hash(&hash)
                .cloned();
        }
        let ended = || Error::Denied("your session has ended; log in again".into());
        let s = session.ok_or_else(ended)?;
        let now = self.now_secs();
        if s.revoked || s.expires_at <= now {
            return Err(ended());
        }
        let snap = self.registry.snapshot();
        let user = snap.people.user(&s.user_id).ok_or_else(ended)?;
        if s.created_at < user.sessions_after {
            return Err(ended());
        }
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            if req.headers().get(header::ORIGIN).is_none() {
                return Err(Error::Forbidden(
                    "a change made with a session cookie needs the browser's Origin header".into(),
                ));
            }
            let given = req
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            // blake3::Hash equality is constant-time.
            if blake3::hash(given.as_bytes()) != blake3::hash(csrf_token(token).as_bytes()) {
                return Err(Error::Forbidden(
                    "a change made with a session cookie needs this session's X-Veil-CSRF header (the dashboard sends it; GET /api/v1/me gives it)".into(),
                ));
            }
        }
        Ok(Access::User(Person {
            id: user.id.clone(),
            email: user.email.clone(),
            roles: snap.people.roles_of(&user.id),
            session: s.id.clone(),
            credential: format!("user:{}", user.id),
        }))
    }

    /// The first-run setup link's path (`/setup#token=TOKEN`), made now, when accounts are
    /// on, no admin token is set and no owner exists; `None` otherwise. `veil up` prints it.
    pub async fn setup_link(&self) -> Result<Option<String>, Error> {
        if !self.cfg.accounts || self.cfg.api_token.is_some() {
            return Ok(None);
        }
        if self.registry.refresh().await?.people.has_owner() {
            return Ok(None);
        }
        let now = self.now_secs();
        let (_, token) = self
            .registry
            .create_invitation("", ALL_SITES, Role::Owner, SETUP, now, now + SETUP_SECS)
            .await?;
        Ok(Some(format!("/setup#token={token}")))
    }

    /// Appends to the audit log what `access` did; a failure is logged, not answered (the
    /// change itself is stored).
    pub(crate) async fn audit(&self, access: &Access, site: &str, action: &str, detail: Value) {
        self.audit_as(access.actor(), site, action, detail).await;
    }

    pub(crate) async fn audit_as(&self, actor: &str, site: &str, action: &str, detail: Value) {
        let entry = AuditEntry {
            at: self.now_secs(),
            id: random_hex(8).unwrap_or_default(),
            actor: actor.to_string(),
            site: site.to_string(),
            action: action.to_string(),
            detail: detail.to_string(),
        };
        if let Err(e) = self.registry.audit(&entry).await {
            tracing::error!(action, site, error = %e, "could not write the audit log");
        }
    }

    fn cookie_name(&self) -> &'static str {
        if self.secure_cookies() {
            SECURE_SESSION_COOKIE
        } else {
            SESSION_COOKIE
        }
    }

    fn secure_cookies(&self) -> bool {
        self.cfg
            .public_url
            .as_deref()
            .and_then(|u| crate::guard::PublicUrl::parse(u).ok())
            .is_some_and(|u| u.scheme == "https")
    }

    fn set_cookie(&self, r: &mut HttpResponse, token: &str, max_age: u32) {
        let secure = if self.secure_cookies() {
            "; Secure"
        } else {
            ""
        };
        let v = format!(
            "{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
            self.cookie_name()
        );
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }

    /// Starts a session for `user` and answers with its cookie. The session counts as made no
    /// earlier than `user.sessions_after` (which "log out everywhere", a password change or a
    /// removal sets to the next second): a session started in that same second, such as the
    /// new one a password change hands back, must not be void at once.
    async fn logged_in(
        &self,
        user: &UserRecord,
        status: StatusCode,
    ) -> Result<HttpResponse, Error> {
        let now = self.now_secs().max(user.sessions_after);
        let (_, token) = self
            .registry
            .create_session(&user.id, now, now.saturating_add(SESSION_SECS))
            .await?;
        let roles = self.registry.snapshot().people.roles_of(&user.id);
        let mut r = json_response(
            status,
            &json!({"email": user.email, "roles": roles_json(&roles), "csrf": csrf_token(&token)}),
        );
        self.set_cookie(&mut r, &token, SESSION_SECS);
        Ok(r)
    }

    fn logged_out(&self, v: &Value) -> HttpResponse {
        let mut r = json_response(StatusCode::OK, v);
        self.set_cookie(&mut r, "", 0);
        r
    }

    /// The account for `email`, from the cache or a fresh load.
    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, Error> {
        Ok(self
            .registry
            .fresh(|s| s.people.user_by_email(email).cloned())
            .await?)
    }

    /// Checks `password` (and the second factor) of `email`, with the lock-out rules.
    async fn check_login(
        &self,
        email: &str,
        password: &str,
        code: Option<&str>,
    ) -> Result<UserRecord, Error> {
        let now = self.now().timestamp();
        let user = self.user_by_email(email).await?;
        if let Some(u) = &user {
            if i64::from(u.locked_until) > now {
                return Err(Error::LockedOut(
                    u64::try_from(i64::from(u.locked_until) - now).unwrap_or(1),
                ));
            }
        }
        let phc = user
            .as_ref()
            .map_or_else(|| decoy_hash().to_string(), |u| u.password_hash.clone());
        let ok = verify_off_runtime(phc, password.to_string()).await && user.is_some();
        let checked = match (ok, user) {
            (true, Some(u)) if u.totp_secret.is_empty() => Ok((u, None)),
            (true, Some(u)) => match second_factor(&u, code, now, &self.used_steps) {
                Ok(rest) => Ok((u, rest)),
                // Asked for the code for the first time: not a failure.
                Err(e) if code.is_none_or(|c| c.trim().is_empty()) => return Err(e),
                Err(e) => Err((Some(u), e)),
            },
            (_, u) => Err((u, Error::Denied("wrong e-mail address or password".into()))),
        };
        match checked {
            Ok((mut u, rest)) => {
                self.failures.clear(email);
                if let Some(rest) = rest {
                    u.recovery = rest;
                    u = self.registry.put_user(u).await?;
                    self.audit_as(
                        &u.email,
                        ALL_SITES,
                        "account.recovery_code_used",
                        json!({"left": u.recovery.len()}),
                    )
                    .await;
                }
                Ok(u)
            }
            Err((u, e)) => {
                if self.failures.fail(email, now) {
                    self.failures.clear(email);
                    let until = u32::try_from(now)
                        .unwrap_or(u32::MAX)
                        .saturating_add(LOCK_SECS);
                    if let Some(mut u) = u {
                        u.locked_until = until;
                        let u = self.registry.put_user(u).await?;
                        self.audit_as(
                            &u.email,
                            ALL_SITES,
                            "account.locked",
                            json!({"after_failures": MAX_FAILURES, "seconds": LOCK_SECS}),
                        )
                        .await;
                    } else {
                        // No account: lock the name in this process alone, as a real one would be.
                        self.phantom_locks
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(email.to_string(), until);
                    }
                    return Err(Error::LockedOut(u64::from(LOCK_SECS)));
                }
                Err(e)
            }
        }
    }

    fn phantom_locked(&self, email: &str) -> Option<u64> {
        let now = self.now().timestamp();
        let locks = self.phantom_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks
            .get(email)
            .map(|until| i64::from(*until) - now)
            .filter(|left| *left > 0)
            .map(|left| u64::try_from(left).unwrap_or(1))
    }
}

/// Answers the routes anyone may call (status, login, invitation, accept); `None` for others.
pub(crate) async fn public(
    agg: &Aggregator,
    req: &Request<Bytes>,
    path: &str,
) -> Option<Result<HttpResponse, Error>> {
    let m = req.method();
    let post = |f: &'static str| {
        if m == Method::POST {
            Ok(())
        } else {
            Err(Error::MethodNotAllowed(f))
        }
    };
    Some(match path {
        "/api/v1/auth/status" => {
            if m != Method::GET {
                return Some(Err(Error::MethodNotAllowed("GET")));
            }
            let setup =
                agg.cfg.accounts && matches!(agg.no_credential().await, Error::SetupRequired);
            Ok(json_response(
                StatusCode::OK,
                &json!({"accounts": agg.cfg.accounts, "setup_required": setup}),
            ))
        }
        "/api/v1/auth/login" => match post("POST") {
            Ok(()) => login(agg, req).await,
            Err(e) => Err(e),
        },
        "/api/v1/auth/invitation" => match post("POST") {
            Ok(()) => invitation_info(agg, req).await,
            Err(e) => Err(e),
        },
        "/api/v1/auth/accept" => match post("POST") {
            Ok(()) => accept(agg, req).await,
            Err(e) => Err(e),
        },
        _ => return None,
    })
}

async fn login(agg: &Aggregator, req: &Request<Bytes>) -> Result<HttpResponse, Error> {
    if !agg.cfg.accounts {
        return Err(Error::NotFound("this aggregator has no accounts".into()));
    }
    let obj = body(req, &["email", "password", "code"])?;
    let email = normalize_email(required(&obj, "email")?)?;
    let password = required(&obj, "password")?;
    agg.limiter
        .check("login", agg.clock.instant())
        .map_err(Error::RateLimited)?;
    if let Some(left) = agg.phantom_locked(&email) {
        return Err(Error::LockedOut(left));
    }
    let user = agg
        .check_login(&email, password, text(&obj, "code")?)
        .await?;
    agg.logged_in(&user, StatusCode::OK).await
}

/// The open invitation a token names.
async fn open_invitation(agg: &Aggregator, token: &str) -> Result<InvitationRecord, Error> {
    let hash = secret_hash(token);
    let inv = agg
        .registry
        .fresh(|s| s.people.invitation_by_hash(&hash).cloned())
        .await?;
    let now = agg.now_secs();
    match inv {
        Some(i) if !i.used && i.expires_at > now => Ok(i),
        // Past its time but not yet dropped by a registry reload: say so, and what to do.
        Some(i) if !i.used => {
            let at = rfc3339(i.expires_at);
            let at = at.as_str().unwrap_or("its end");
            Err(Error::Denied(if i.invited_by == SETUP {
                format!("this setup link expired at {at} (it lasts {} hours): restart `veil up` for a new one, or run `veil user create --email YOU --role owner`", SETUP_SECS / 3600)
            } else {
                format!("this invitation expired at {at} (it lasts {} days): ask whoever invited you for a new one", INVITATION_SECS / 86_400)
            }))
        }
        _ => Err(Error::Denied(
            "this invitation is not valid (used, withdrawn or expired): ask for a new one; a setup link lasts 24 hours, and `veil up` prints a new one at each start while Veil has no owner".into(),
        )),
    }
}

async fn invitation_info(agg: &Aggregator, req: &Request<Bytes>) -> Result<HttpResponse, Error> {
    let obj = body(req, &["token"])?;
    let inv = open_invitation(agg, required(&obj, "token")?).await?;
    let exists = !inv.email.is_empty() && agg.user_by_email(&inv.email).await?.is_some();
    Ok(json_response(
        StatusCode::OK,
        &json!({"email": inv.email, "site": inv.site, "role": inv.role.name(),
                "setup": inv.invited_by == SETUP, "account_exists": exists,
                "expires_at": rfc3339(inv.expires_at)}),
    ))
}

async fn accept(agg: &Aggregator, req: &Request<Bytes>) -> Result<HttpResponse, Error> {
    let obj = body(req, &["token", "email", "password", "code"])?;
    let inv = open_invitation(agg, required(&obj, "token")?).await?;
    let password = required(&obj, "password")?;
    let setup = inv.invited_by == SETUP;
    if setup && agg.registry.refresh().await?.people.has_owner() {
        agg.registry.use_invitation(&inv).await?;
        return Err(Error::Conflict(
            "Veil has an owner already: log in instead".into(),
        ));
    }
    let given = text(&obj, "email")?.map(normalize_email).transpose()?;
    let email = match (inv.email.as_str(), given) {
        ("", Some(e)) => e,
        ("", None) => return Err(bad("`email` is required")),
        (invited, Some(e)) if e != invited => {
            return Err(bad(format!(
                "this invitation is for {invited:?}; `email` must be that address or left out"
            )))
        }
        (invited, _) => invited.to_string(),
    };
    agg.limiter
        .check("login", agg.clock.instant())
        .map_err(Error::RateLimited)?;
    let user = match agg.user_by_email(&email).await? {
        Some(_) => {
            agg.check_login(&email, password, text(&obj, "code")?)
                .await?
        }
        None => {
            check_new_password(password, &email)?;
            let phc = hash_off_runtime(password.to_string()).await?;
            agg.registry
                .create_user(&email, phc, agg.now_secs())
                .await?
        }
    };
    let snap = agg.registry.snapshot();
    let current = snap.people.membership(&user.id, &inv.site).map(|m| m.role);
    if current.is_none_or(|r| r < inv.role) {
        agg.registry
            .set_membership(&user.id, &inv.site, Some(inv.role))
            .await?;
    }
    agg.registry.use_invitation(&inv).await?;
    agg.audit_as(
        &user.email,
        &inv.site,
        if setup { "owner.setup" } else { "person.join" },
        json!({"role": inv.role.name(), "invited_by": inv.invited_by, "invitation": inv.id}),
    )
    .await;
    agg.logged_in(&user, StatusCode::OK).await
}

/// Answers the routes that need a credential: `me`, logout, password, second factor, people,
/// audit; `None` for other paths.
pub(crate) async fn route(
    agg: &Aggregator,
    access: &Access,
    req: &Request<Bytes>,
    path: &str,
) -> Option<Result<HttpResponse, Error>> {
    let m = req.method().clone();
    let post = || {
        if m == Method::POST {
            Ok(())
        } else {
            Err(Error::MethodNotAllowed("POST"))
        }
    };
    let r = match path {
        "/api/v1/me" => {
            if m != Method::GET {
                return Some(Err(Error::MethodNotAllowed("GET")));
            }
            Ok(me(agg, access, req))
        }
        "/api/v1/auth/logout" => match post() {
            Ok(()) => logout(agg, access, false).await,
            Err(e) => Err(e),
        },
        "/api/v1/auth/logout-everywhere" => match post() {
            Ok(()) => logout(agg, access, true).await,
            Err(e) => Err(e),
        },
        "/api/v1/auth/password" => match post() {
            Ok(()) => change_password(agg, access, req).await,
            Err(e) => Err(e),
        },
        "/api/v1/auth/totp/setup" | "/api/v1/auth/totp/enable" | "/api/v1/auth/totp/disable" => {
            match post() {
                Ok(()) => second_factor_route(agg, access, req, path).await,
                Err(e) => Err(e),
            }
        }
        "/api/v1/audit" => audit_log(agg, access, req).await,
        _ => {
            if let Some(rest) = path.strip_prefix("/api/v1/people") {
                if rest.is_empty() || rest.starts_with('/') {
                    return Some(people(agg, access, req, ALL_SITES, rest).await);
                }
                return None;
            }
            let (raw, sub) = crate::http::site_route(path)?;
            if !(sub == "people" || sub.starts_with("people/") || sub.starts_with("invitations/")) {
                return None;
            }
            let site = match agg.scoped(access, raw) {
                Ok((d, _, _)) => d,
                Err(e) => return Some(Err(e)),
            };
            let sub = sub.strip_prefix("people").unwrap_or(sub);
            let sub = if sub.starts_with("invitations/") {
                format!("/{sub}")
            } else {
                sub.to_string()
            };
            people(agg, access, req, &site, &sub).await
        }
    };
    Some(r)
}

fn me(agg: &Aggregator, access: &Access, req: &Request<Bytes>) -> HttpResponse {
    let v = match access {
        Access::Admin => json!({
            "kind": "operator", "roles": [{"site": ALL_SITES, "role": "owner"}],
            "can_create_sites": true, "accounts": agg.cfg.accounts,
        }),
        Access::User(p) => {
            let snap = agg.registry.snapshot();
            let user = snap.people.user(&p.id);
            json!({
                "kind": "user", "email": p.email, "roles": roles_json(&p.roles),
                "csrf": session_cookie(req).map(csrf_token),
                "second_factor": user.is_some_and(|u| !u.totp_secret.is_empty()),
                "recovery_codes_left": user.map_or(0, |u| u.recovery.len()),
                "can_create_sites": access.has(ALL_SITES, Role::Owner), "accounts": true,
            })
        }
        Access::Site { site, credential } => json!({
            "kind": if credential.starts_with("link:") { "link" } else { "key" },
            "roles": [{"site": site, "role": "viewer"}], "can_create_sites": false,
            "accounts": agg.cfg.accounts,
        }),
    };
    json_response(StatusCode::OK, &v)
}

fn person(access: &Access) -> Result<&Person, Error> {
    match access {
        Access::User(p) => Ok(p),
        _ => Err(bad(
            "this needs a person's session (log in with e-mail and password); tokens and keys have no account",
        )),
    }
}

async fn logout(
    agg: &Aggregator,
    access: &Access,
    everywhere: bool,
) -> Result<HttpResponse, Error> {
    let p = person(access)?;
    if everywhere {
        let user = own_account(agg, p)?;
        end_sessions(agg, user).await?;
        agg.audit(access, ALL_SITES, "account.logout_everywhere", json!({}))
            .await;
    } else if let Some(s) = agg
        .registry
        .snapshot()
        .people
        .sessions_of(&p.id, 0)
        .into_iter()
        .find(|s| s.id == p.session)
        .cloned()
    {
        agg.registry.revoke_session(&s).await?;
    }
    Ok(agg
        .logged_out(&json!({"logged_out": if everywhere { "everywhere" } else { "this session" }})))
}

/// The account of the person asking, as stored now.
fn own_account(agg: &Aggregator, p: &Person) -> Result<UserRecord, Error> {
    agg.registry
        .snapshot()
        .people
        .user(&p.id)
        .cloned()
        .ok_or_else(|| Error::Denied("your account no longer exists".into()))
}

/// Voids every session of `user` made up to now. The cut moves forward every time (even twice
/// in one second), so a session started after one cut ([`Aggregator::logged_in`] dates it
/// at the cut) falls to the next.
async fn end_sessions(agg: &Aggregator, mut user: UserRecord) -> Result<UserRecord, Error> {
    user.sessions_after = agg
        .now_secs()
        .saturating_add(1)
        .max(user.sessions_after.saturating_add(1));
    Ok(agg.registry.put_user(user).await?)
}

async fn change_password(
    agg: &Aggregator,
    access: &Access,
    req: &Request<Bytes>,
) -> Result<HttpResponse, Error> {
    let p = person(access)?;
    let obj = body(req, &["current", "new"])?;
    let current = required(&obj, "current")?;
    let new = required(&obj, "new")?;
    let user = own_account(agg, p)?;
    if !verify_off_runtime(user.password_hash.clone(), current.to_string()).await {
        return Err(Error::Forbidden("`current` is not your password".into()));
    }
    check_new_password(new, &user.email)?;
    let mut user = user;
    user.password_hash = hash_off_runtime(new.to_string()).await?;
    let user = end_sessions(agg, user).await?;
    agg.audit(access, ALL_SITES, "account.password_change", json!({}))
        .await;
    // Every older session (this one too) has ended; this browser gets a new one.
    let mut r = agg.logged_in(&user, StatusCode::OK).await?;
    *r.status_mut() = StatusCode::OK;
    Ok(r)
}

async fn second_factor_route(
    agg: &Aggregator,
    access: &Access,
    req: &Request<Bytes>,
    path: &str,
) -> Result<HttpResponse, Error> {
    let p = person(access)?;
    let mut user = own_account(agg, p)?;
    match path {
        "/api/v1/auth/totp/setup" => {
            body(req, &[])?;
            let secret = new_totp_secret()?;
            let uri = format!(
                "otpauth://totp/Veil:{}?secret={secret}&issuer=Veil&algorithm=SHA1&digits=6&period=30",
                percent(&user.email)
            );
            Ok(json_response(
                StatusCode::OK,
                &json!({"secret": secret, "otpauth_uri": uri}),
            ))
        }
        "/api/v1/auth/totp/enable" => {
            let obj = body(req, &["secret", "code"])?;
            let secret = required(&obj, "secret")?.trim().to_ascii_uppercase();
            let code = required(&obj, "code")?.trim();
            let t = totp(&secret).ok_or_else(|| {
                bad("`secret` is not a base32 TOTP secret of at least 16 bytes (use the one /api/v1/auth/totp/setup gave)")
            })?;
            let now = u64::try_from(agg.now().timestamp()).unwrap_or(0);
            if !t.check(code, now) {
                return Err(bad(
                    "`code` does not match: check the authenticator app's clock and enter the current code",
                ));
            }
            let mut codes = Vec::with_capacity(RECOVERY_CODES);
            for _ in 0..RECOVERY_CODES {
                let h = random_hex(6)?;
                codes.push(format!("{}-{}-{}", &h[0..4], &h[4..8], &h[8..12]));
            }
            user.totp_secret = secret;
            user.recovery = codes.iter().map(|c| secret_hash(c)).collect();
            agg.registry.put_user(user).await?;
            agg.audit(access, ALL_SITES, "account.second_factor_on", json!({}))
                .await;
            Ok(json_response(
                StatusCode::OK,
                &json!({"second_factor": true, "recovery_codes": codes}),
            ))
        }
        _ => {
            let obj = body(req, &["password"])?;
            let pw = required(&obj, "password")?;
            if !verify_off_runtime(user.password_hash.clone(), pw.to_string()).await {
                return Err(Error::Forbidden("`password` is not your password".into()));
            }
            user.totp_secret.clear();
            user.recovery.clear();
            agg.registry.put_user(user).await?;
            agg.audit(access, ALL_SITES, "account.second_factor_off", json!({}))
                .await;
            Ok(json_response(
                StatusCode::OK,
                &json!({"second_factor": false}),
            ))
        }
    }
}

/// The role `access` has on `scope`, for comparing with the roles it hands out.
fn own_role(access: &Access, scope: &str) -> Option<Role> {
    match access {
        Access::Admin => Some(Role::Owner),
        Access::User(p) => p.role_on(scope),
        Access::Site { .. } => None,
    }
}

fn forbidden_role(scope: &str, need: Role) -> Error {
    let on = if scope == ALL_SITES {
        "every site".to_string()
    } else {
        format!("the site {scope:?}")
    };
    Error::Forbidden(format!("this needs the {} role on {on}", need.name()))
}

async fn people(
    agg: &Aggregator,
    access: &Access,
    req: &Request<Bytes>,
    scope: &str,
    rest: &str,
) -> Result<HttpResponse, Error> {
    // Roles on every site are the owners' business; a site's people its admins'.
    let need = if scope == ALL_SITES {
        Role::Owner
    } else {
        Role::Admin
    };
    if !access.has(scope, need) {
        return Err(forbidden_role(scope, need));
    }
    let mine = own_role(access, scope).unwrap_or(Role::Viewer);
    let m = req.method().clone();
    let now = agg.now_secs();
    match rest.trim_end_matches('/') {
        "" => match m {
            Method::GET => {
                let snap = agg.registry.snapshot();
                let people: Vec<Value> = snap
                    .people
                    .members_of(scope)
                    .into_iter()
                    .map(|(u, r)| json!({"id": u.id, "email": u.email, "role": r.name()}))
                    .collect();
                let invitations: Vec<Value> = snap
                    .people
                    .invitations_of(scope, now)
                    .into_iter()
                    .filter(|i| i.invited_by != SETUP)
                    .map(|i| json!({"id": i.id, "email": i.email, "role": i.role.name(),
                                    "expires_at": rfc3339(i.expires_at), "invited_by": i.invited_by}))
                    .collect();
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"site": scope, "people": people, "invitations": invitations}),
                ))
            }
            Method::POST => {
                let obj = body(req, &["email", "role"])?;
                let email = normalize_email(required(&obj, "email")?)?;
                let role = role_field(&obj)?;
                if role > mine {
                    return Err(forbidden_role(scope, role));
                }
                let (inv, token) = agg
                    .registry
                    .create_invitation(
                        &email,
                        scope,
                        role,
                        access.actor(),
                        now,
                        now.saturating_add(INVITATION_SECS),
                    )
                    .await?;
                agg.audit(
                    access,
                    scope,
                    "person.invite",
                    json!({"email": email, "role": role.name(), "invitation": inv.id}),
                )
                .await;
                let url = format!("/invite#token={token}");
                let emailed = crate::mail::send_invitation(agg, access, &inv, &url).await;
                Ok(json_response(
                    StatusCode::CREATED,
                    &json!({
                        "invitation": {"id": inv.id, "email": inv.email, "site": inv.site,
                                       "role": role.name(), "expires_at": rfc3339(inv.expires_at)},
                        "url": url,
                        "emailed": emailed,
                    }),
                ))
            }
            _ => Err(Error::MethodNotAllowed("GET, POST")),
        },
        r if r.starts_with("/invitations/") => {
            if m != Method::DELETE {
                return Err(Error::MethodNotAllowed("DELETE"));
            }
            let id = r.trim_start_matches("/invitations/");
            let inv = agg
                .registry
                .fresh(|s| s.people.invitation(id).cloned())
                .await?
                .filter(|i| i.site == scope && !i.used && i.invited_by != SETUP)
                .ok_or_else(|| Error::NotFound(format!("no open invitation {id:?} here")))?;
            agg.registry.use_invitation(&inv).await?;
            agg.audit(
                access,
                scope,
                "person.invitation_withdraw",
                json!({"email": inv.email, "invitation": inv.id}),
            )
            .await;
            Ok(json_response(StatusCode::OK, &json!({"withdrawn": id})))
        }
        r => {
            let id = r.trim_start_matches('/');
            if id.is_empty() || id.contains('/') {
                return Err(Error::NotFound(format!("no route {m} {rest}")));
            }
            let snap = agg.registry.snapshot();
            let user = snap
                .people
                .user(id)
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("no person {id:?}")))?;
            let theirs = snap.people.membership(id, scope).map(|x| x.role);
            let last_owner = scope == ALL_SITES
                && theirs == Some(Role::Owner)
                && snap
                    .people
                    .members_of(ALL_SITES)
                    .iter()
                    .filter(|(_, r)| *r == Role::Owner)
                    .count()
                    <= 1;
            drop(snap);
            match m {
                Method::PUT => {
                    let obj = body(req, &["role"])?;
                    let role = role_field(&obj)?;
                    let theirs = theirs.ok_or_else(|| {
                        Error::NotFound(format!("{} has no role here", user.email))
                    })?;
                    if role.max(theirs) > mine {
                        return Err(forbidden_role(scope, role.max(theirs)));
                    }
                    if last_owner && role < Role::Owner {
                        return Err(Error::Conflict(
                            "this is the last owner of every site; make another owner first".into(),
                        ));
                    }
                    agg.registry.set_membership(id, scope, Some(role)).await?;
                    agg.audit(
                        access,
                        scope,
                        "person.role",
                        json!({"email": user.email, "from": theirs.name(), "to": role.name()}),
                    )
                    .await;
                    Ok(json_response(
                        StatusCode::OK,
                        &json!({"id": id, "email": user.email, "role": role.name()}),
                    ))
                }
                Method::DELETE => {
                    if theirs.is_none() && scope != ALL_SITES {
                        return Err(Error::NotFound(format!("{} has no role here", user.email)));
                    }
                    if let Some(t) = theirs {
                        if t > mine {
                            return Err(forbidden_role(scope, t));
                        }
                    }
                    if last_owner {
                        return Err(Error::Conflict(
                            "this is the last owner of every site; make another owner first".into(),
                        ));
                    }
                    let email = user.email.clone();
                    if scope == ALL_SITES {
                        // Out of the deployment: every role and the account go.
                        for (site, _) in agg.registry.snapshot().people.roles_of(id) {
                            agg.registry.set_membership(id, &site, None).await?;
                        }
                        let mut u = user;
                        u.deleted = true;
                        end_sessions(agg, u).await?;
                    } else {
                        agg.registry.set_membership(id, scope, None).await?;
                        end_sessions(agg, user).await?;
                    }
                    agg.audit(access, scope, "person.remove", json!({"email": email}))
                        .await;
                    Ok(json_response(
                        StatusCode::OK,
                        &json!({"removed": id, "email": email}),
                    ))
                }
                _ => Err(Error::MethodNotAllowed("PUT, DELETE")),
            }
        }
    }
}

async fn audit_log(
    agg: &Aggregator,
    access: &Access,
    req: &Request<Bytes>,
) -> Result<HttpResponse, Error> {
    if req.method() != Method::GET {
        return Err(Error::MethodNotAllowed("GET"));
    }
    let mut site = None;
    let mut limit = 200u32;
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "site" => site = Some(v.into_owned()),
            "limit" => {
                limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| {
                        bad(format!("`limit` {v:?} must be a number from 1 to 10000"))
                    })?;
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter `{other}`; expected site, limit"
                )))
            }
        }
    }
    let sites: Option<Vec<String>> = match (&site, access) {
        (Some(s), _) => {
            let d = if s == ALL_SITES {
                s.clone()
            } else {
                normalize_domain(s).ok_or_else(|| Error::UnknownSite(s.clone()))?
            };
            if !access.has(&d, Role::Owner) {
                return Err(forbidden_role(&d, Role::Owner));
            }
            Some(vec![d])
        }
        (None, a) if a.has(ALL_SITES, Role::Owner) => None,
        (None, Access::User(p)) => {
            let owned: Vec<String> = p
                .roles
                .iter()
                .filter(|(_, r)| *r == Role::Owner)
                .map(|(s, _)| s.clone())
                .collect();
            if owned.is_empty() {
                return Err(Error::Forbidden(
                    "the audit log is readable by owners only".into(),
                ));
            }
            Some(owned)
        }
        (None, _) => {
            return Err(Error::Forbidden(
                "the audit log is readable by owners only".into(),
            ))
        }
    };
    let entries = agg.registry.audit_log(sites.as_deref(), limit).await?;
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            json!({"at": rfc3339(e.at), "actor": e.actor, "site": e.site, "action": e.action,
                   "detail": serde_json::from_str::<Value>(&e.detail).unwrap_or(Value::String(e.detail))})
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"entries": entries})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req_with_cookie(c: &str) -> Request<Bytes> {
        Request::builder()
            .uri("/api/v1/me")
            .header(header::COOKIE, c)
            .body(Bytes::new())
            .unwrap()
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        assert_eq!(
            session_cookie(&req_with_cookie("a=1; veil_session=vs_abc; b=2")),
            Some("vs_abc")
        );
        assert_eq!(
            session_cookie(&req_with_cookie("__Host-veil_session=vs_x")),
            Some("vs_x")
        );
        assert_eq!(session_cookie(&req_with_cookie("veil_sessionx=1")), None);
        assert_eq!(session_cookie(&req_with_cookie("veil_session=")), None);
    }

    #[test]
    fn csrf_tokens_are_per_session_and_not_the_session() {
        let a = csrf_token("vs_a");
        assert_eq!(a, csrf_token("vs_a"));
        assert_ne!(a, csrf_token("vs_b"));
        assert!(!a.contains("vs_a") && a.len() == 64);
    }

    #[test]
    fn failures_lock_after_five_within_the_window() {
        let f = Failures::default();
        for _ in 0..MAX_FAILURES - 1 {
            assert!(!f.fail("a@x.com", 100));
        }
        assert!(f.fail("a@x.com", 100));
        // Spread beyond the window: the count starts again.
        let g = Failures::default();
        for i in 0..10 {
            assert!(!g.fail("a@x.com", i * FAILURE_WINDOW_SECS));
        }
    }

    #[test]
    fn second_factor_takes_totp_codes_and_recovery_codes_once() {
        let secret = new_totp_secret().unwrap();
        let now = 1_700_000_000i64;
        let code = totp(&secret).unwrap().generate(now as u64);
        let mut u = UserRecord {
            id: "u".into(),
            email: "a@x.com".into(),
            password_hash: String::new(),
            totp_secret: secret,
            recovery: vec![secret_hash("abcd-ef01-2345")],
            sessions_after: 0,
            locked_until: 0,
            created_at: 0,
            deleted: false,
            version: 1,
        };
        let used = UsedSteps::default();
        assert_eq!(second_factor(&u, Some(&code), now, &used).unwrap(), None);
        // The same code again (a replay) is refused, even within its 30 s.
        let replay = second_factor(&u, Some(&code), now + 5, &used).unwrap_err();
        assert!(replay.to_string().contains("used already"), "{replay}");
        // The next step's code works.
        let next = totp(&u.totp_secret).unwrap().generate(now as u64 + 30);
        assert_eq!(
            second_factor(&u, Some(&next), now + 30, &used).unwrap(),
            None
        );
        assert!(matches!(
            second_factor(&u, Some(&code), now + 300, &UsedSteps::default()),
            Err(Error::SecondFactor(_))
        ));
        assert!(matches!(
            second_factor(&u, None, now, &used),
            Err(Error::SecondFactor(_))
        ));
        let rest = second_factor(&u, Some("ABCD-EF01-2345"), now, &used)
            .unwrap()
            .unwrap();
        assert!(rest.is_empty());
        u.recovery = rest;
        assert!(second_factor(&u, Some("abcd-ef01-2345"), now, &used).is_err());
    }
}
