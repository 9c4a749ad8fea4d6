//! Who is asking: a person's session, the admin token, a site's read-only key, or a shared
//! link, and how often.
//!
//! Wire format: a browser of a logged-in person sends the session cookie (`veil_session`, or
//! `__Host-veil_session` behind TLS; see [`crate::account`]), plus `X-Veil-CSRF` on anything
//! but GET/HEAD; what it may do follows the person's roles ([`Person::role_on`]). Every other
//! API request carries `Authorization: Bearer SECRET`, where SECRET is
//! - the admin token (`--admin-token`, alias `--api-token`): reads and manages everything;
//! - a site key (`vk_` + 64 hex digits, from `POST /api/v1/sites/{domain}/keys`): reads that
//!   one site's stats;
//! - a shared-link token (`vl_` + 64 hex digits, the `auth` value in the fragment of a
//!   `/share/{domain}#auth=TOKEN` URL): reads that one site's stats; a link made with a
//!   password also needs `X-Veil-Link-Password: PASSWORD`.
//!
//! With accounts on (`veil up`, `veil aggregator`: always), a request with none of these is
//! 401 — and while the deployment has no owner and no admin token, every such request is
//! told the way to the first-run setup ([`crate::Error::SetupRequired`]). With accounts off
//! (the library's default, for in-process callers and tests) a request without a recognised
//! credential is the operator, as before accounts existed.
//!
//! Secrets are compared as blake3 hashes: the admin token with blake3's constant-time hash
//! equality, keys and links by looking their hash up (only hashes are stored). Link passwords
//! are Argon2id hashes (PHC strings), verified off the async runtime; a password already
//! verified for a link is remembered (as a keyed hash, for this process only) so a dashboard's
//! burst of requests costs one slow verification.
//!
//! Keys and links are rate-limited per credential with a token bucket (default 10 requests/s,
//! bursts of 30): over it, 429 with `Retry-After`. An export takes a token per report it runs
//! ([`RateLimiter::take`]); how many reports a credential may have under way at once is
//! [`crate::cost`]'s bound.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use bytes::Bytes;
use http::{header, Request};

use veil_schemas::people::{Role, ALL_SITES};

use crate::Error;

/// Header carrying a shared link's password.
pub const LINK_PASSWORD_HEADER: &str = "x-veil-link-password";

/// What a request may read and do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The admin token (the operator's credential for automation), or an in-process caller
    /// of an aggregator without accounts ([`crate::AggregatorConfig::accounts`] off): everything.
    Admin,
    /// A person logged in with a session cookie ([`crate::account`]): what their roles allow.
    User(Person),
    /// A site key or shared link: read-only stats of this one site.
    Site {
        /// The site.
        site: String,
        /// Which key or link (`key:ID`, `link:ID`): whose privacy budget a question spends.
        credential: String,
    },
}

/// A logged-in person, as one request sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Account id.
    pub id: String,
    /// E-mail address (what the audit log names).
    pub email: String,
    /// `(site or "*", role)` ([`veil_schemas::people::People::roles_of`]).
    pub roles: Vec<(String, Role)>,
    /// The session's id.
    pub session: String,
    /// `user:ID`: whose privacy budget and query allowance a question spends.
    pub credential: String,
}

impl Person {
    /// The person's role on `site`: the higher of the site's own and the every-site one.
    pub fn role_on(&self, site: &str) -> Option<Role> {
        self.roles
            .iter()
            .filter(|(s, _)| s == site || s == ALL_SITES)
            .map(|(_, r)| *r)
            .max()
    }
}

impl Access {
    /// True if this access may read `site`'s stats.
    pub fn can_read(&self, site: &str) -> bool {
        match self {
            Access::Admin => true,
            Access::User(p) => p.role_on(site).is_some(),
            Access::Site { site: s, .. } => s == site,
        }
    }

    /// True if this access has at least `role` on `site` (`*`: on every site). The admin
    /// token has every role; keys and links have none.
    pub fn has(&self, site: &str, role: Role) -> bool {
        match self {
            Access::Admin => true,
            Access::User(p) => p.role_on(site).is_some_and(|r| r >= role),
            Access::Site { .. } => false,
        }
    }

    /// Whose privacy budget a question spends: `admin`, `user:ID`, `key:ID` or `link:ID`.
    pub fn credential(&self) -> &str {
        match self {
            Access::Admin => "admin",
            Access::User(p) => &p.credential,
            Access::Site { credential, .. } => credential,
        }
    }

    /// Who the audit log says did something: the person's e-mail, `admin token`, or the
    /// key or link id.
    pub fn actor(&self) -> &str {
        match self {
            Access::Admin => "admin token",
            Access::User(p) => &p.email,
            Access::Site { credential, .. } => credential,
        }
    }

    /// True for the admin token (or an aggregator without accounts): the operator.
    pub fn is_admin(&self) -> bool {
        matches!(self, Access::Admin)
    }
}

/// The bearer secret of a request, if any.
pub fn bearer(req: &Request<Bytes>) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Token-bucket rate limits per credential id.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_second` requests per second with bursts of `burst`; `per_second` 0 turns it off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `id`; `Err(seconds)` says when to retry.
    pub fn check(&self, id: &str, now: Instant) -> Result<(), u64> {
        self.take(id, 1, now)
    }

    /// Takes `n` tokens for `id` at once, or none (a request that runs `n` reports, such as
    /// an export); `n` above the burst takes the whole burst. `Err(seconds)` says when the
    /// bucket will hold them.
    pub fn take(&self, id: &str, n: u32, now: Instant) -> Result<(), u64> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() > 10_000 {
            // Forget buckets that have refilled: they would start full anyway.
            let (rate, burst) = (self.per_second, self.burst);
            b.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = b.entry(id.to_string()).or_insert((self.burst, now));
        let refilled =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        let need = f64::from(n.max(1)).min(self.burst);
        if refilled >= need {
            *tokens = refilled - need;
            Ok(())
        } else {
            *tokens = refilled;
            Err(((need - refilled) / self.per_second).ceil().max(1.0) as u64)
        }
    }
}

/// Hashes a shared link's password with Argon2id (default parameters: 19 MiB, 2 passes) and
/// a random salt; returns the PHC string to store.
pub fn hash_password(password: &str) -> Result<String, Error> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| Error::Internal(format!("random salt: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("hashing the password: {e}")))
}

/// True if `password` matches the PHC string `phc` (slow: run it off the async runtime).
pub fn verify_password(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Passwords already verified, as keyed hashes of (link id, link version, password).
#[derive(Debug)]
pub struct VerifiedPasswords {
    key: [u8; 32],
    /// False when no random key could be had: nothing is remembered then.
    enabled: bool,
    seen: Mutex<HashSet<[u8; 32]>>,
}

impl VerifiedPasswords {
    /// An empty cache with a random key.
    pub fn new() -> Self {
        let mut key = [0u8; 32];
        // Without randomness nothing is remembered (every request verifies).
        let enabled = getrandom::fill(&mut key).is_ok();
        Self {
            key,
            enabled,
            seen: Mutex::new(HashSet::new()),
        }
    }

    fn digest(&self, link_id: &str, version: u64, password: &str) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(link_id.as_bytes());
        h.update(&[0]);
        h.update(&version.to_le_bytes());
        h.update(password.as_bytes());
        *h.finalize().as_bytes()
    }

    /// True if this password was verified for this link version before.
    pub fn contains(&self, link_id: &str, version: u64, password: &str) -> bool {
        let d = self.digest(link_id, version, password);
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&d)
    }

    /// Remembers a verified password.
    pub fn insert(&self, link_id: &str, version: u64, password: &str) {
        if !self.enabled {
            return;
        }
        let d = self.digest(link_id, version, password);
        let mut s = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() >= 10_000 {
            s.clear();
        }
        s.insert(d);
    }
}

impl Default for VerifiedPasswords {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn access_scopes() {
        assert!(Access::Admin.can_read("a.com"));
        let a = Access::Site {
            site: "a.com".into(),
            credential: "key:1".into(),
        };
        assert!(a.can_read("a.com"));
        assert!(!a.can_read("b.com"));
        assert!(!a.is_admin());
        assert!(!a.has("a.com", Role::Viewer));
        let p = |roles: &[(&str, Role)]| {
            Access::User(Person {
                id: "u1".into(),
                email: "ana@example.com".into(),
                roles: roles.iter().map(|(s, r)| (s.to_string(), *r)).collect(),
                session: "s1".into(),
                credential: "user:u1".into(),
            })
        };
        let viewer = p(&[("a.com", Role::Viewer)]);
        assert!(viewer.can_read("a.com") && !viewer.can_read("b.com"));
        assert!(viewer.has("a.com", Role::Viewer) && !viewer.has("a.com", Role::Admin));
        assert_eq!(viewer.credential(), "user:u1");
        let owner = p(&[("a.com", Role::Viewer), (ALL_SITES, Role::Owner)]);
        assert!(owner.can_read("b.com") && owner.has("a.com", Role::Owner));
        assert!(owner.has(ALL_SITES, Role::Owner));
        assert!(!viewer.has(ALL_SITES, Role::Viewer));
    }

    #[test]
    fn token_bucket_limits_and_refills() {
        let r = RateLimiter::new(10, 30);
        let t0 = Instant::now();
        for _ in 0..30 {
            r.check("k", t0).unwrap();
        }
        let retry = r.check("k", t0).unwrap_err();
        assert_eq!(retry, 1);
        r.check("other", t0).unwrap();
        // 0.2 s later two tokens are back.
        let t1 = t0 + Duration::from_millis(200);
        r.check("k", t1).unwrap();
        r.check("k", t1).unwrap();
        assert!(r.check("k", t1).is_err());
        assert!(RateLimiter::new(0, 0).check("k", t0).is_ok());
        // Several at once, or none; more than the burst takes the whole burst.
        let r = RateLimiter::new(10, 30);
        r.take("x", 18, t0).unwrap();
        assert_eq!(r.take("x", 18, t0), Err(1));
        r.take("x", 12, t0).unwrap();
        assert_eq!(r.take("x", 1, t0), Err(1));
        r.take("y", 100, t0).unwrap();
        assert!(r.check("y", t0).is_err());
        assert_eq!(r.take("y", 100, t0), Err(3));
    }

    #[test]
    fn passwords_hash_slowly_and_verify() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains("correct horse"));
        assert!(verify_password(&phc, "correct horse"));
        assert!(!verify_password(&phc, "wrong"));
        assert!(!verify_password("not a phc", "x"));
        let v = VerifiedPasswords::new();
        assert!(!v.contains("id", 1, "pw"));
        v.insert("id", 1, "pw");
        assert!(v.contains("id", 1, "pw"));
        assert!(!v.contains("id", 2, "pw"));
        assert!(!v.contains("id", 1, "pw2"));
    }
}
