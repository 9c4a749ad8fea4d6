//! The anonymise stage (and the consent signals the parse stage reads): identity without
//! identifiers, consent, and scrubbing.
//!
//! - The visitor id is `blake3_keyed(salt_of_the_day, len(site) site ‖ len(ip) ip ‖ len(ua) ua)`
//!   cut to 128 bits ([`VisitorHasher`]), so the same person yields unrelated ids on two sites
//!   and on two days, and nobody without the day's salt can test a guessed IP/UA pair against
//!   stored ids. Salts: [`salts`] (random per UTC day, shared through ClickHouse, deleted after
//!   48 h). Pinned by `collector/tests/vectors/visitor_hash.json`.
//! - Sessions: a visit ends after 30 minutes without an event. [`SessionTracker`] keeps, in memory
//!   only, the last-seen time and session id per visitor hash (never an IP or user agent) and
//!   forgets idle entries; the session id is `blake3(visitor_id ‖ visit start)`. Because the
//!   stored `(visitor_id, timestamp)` pairs determine every visit, reports can re-derive visits
//!   from them whatever collector saw each hit (see docs/ARCHITECTURE.md).
//! - Consent: [`Consent`] carries `Sec-GPC`, `DNT` and an app's opt-out flag; events with any of
//!   them are not stored (a site may decide to ignore DNT, never GPC).
//! - [`scrub`]: identifiers in stored strings become markers.

pub mod salts;
pub mod scrub;

/// Opt-out signals a request carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Consent {
    /// `Sec-GPC: 1` (Global Privacy Control): always honoured.
    pub gpc: bool,
    /// `DNT: 1`: honoured unless the site switched it off.
    pub dnt: bool,
    /// An app SDK's or the tracker's explicit opt-out flag: always honoured.
    pub opt_out: bool,
}

impl Consent {
    /// Reads `Sec-GPC` and `DNT` from request headers.
    pub fn from_headers(h: &http::HeaderMap) -> Self {
        let on = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim() == "1")
        };
        Self {
            gpc: on("sec-gpc"),
            dnt: on("dnt"),
            opt_out: false,
        }
    }

    /// Whether the event must not be stored for a site that does (or not) honour DNT.
    pub fn refuses(&self, honor_dnt: bool) -> bool {
        self.gpc || self.opt_out || (self.dnt && honor_dnt)
    }
}

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// Computes visitor ids with a secret key.
pub struct VisitorHasher {
    key: [u8; 32],
}

impl std::fmt::Debug for VisitorHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VisitorHasher { key: <secret> }")
    }
}

fn put(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

impl VisitorHasher {
    /// A hasher with the given key.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The 128-bit visitor id for (site, ip, user agent).
    pub fn visitor_id(&self, site: &str, ip: Option<IpAddr>, user_agent: &str) -> [u8; 16] {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        put(&mut h, site.as_bytes());
        match ip {
            Some(IpAddr::V4(v4)) => put(&mut h, &v4.octets()),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => put(&mut h, &v4.octets()),
                None => put(&mut h, &v6.octets()),
            },
            None => put(&mut h, &[]),
        }
        put(&mut h, user_agent.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        out
    }
}

/// Idle time that ends a visit.
pub const SESSION_IDLE_SECS: i64 = 30 * 60;
const SHARDS: usize = 64;
const SWEEP_EVERY: u32 = 4096;

#[derive(Default)]
struct Shard {
    map: HashMap<[u8; 16], (i64, [u8; 16])>,
    ops: u32,
}

/// In-memory visit tracking keyed by visitor hash.
pub struct SessionTracker {
    shards: Vec<Mutex<Shard>>,
}

impl std::fmt::Debug for SessionTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionTracker {{ visitors: {} }}", self.len())
    }
}

impl Default for SessionTracker {
    fn default() -> Self {
        Self::new()
    }
}

fn session_hash(visitor: &[u8; 16], start: i64) -> [u8; 16] {
    let mut h = blake3::Hasher::new();
    h.update(b"veil-session-v1");
    h.update(visitor);
    h.update(&start.to_le_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

impl SessionTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    /// The session id for a visitor's event at `at`: the current visit's when the visitor was
    /// seen within 30 minutes, else a new one.
    pub fn session_id(&self, visitor: &[u8; 16], at: DateTime<Utc>) -> [u8; 16] {
        let t = at.timestamp();
        let idx = visitor[0] as usize % SHARDS;
        let mut shard = self.shards[idx].lock().unwrap_or_else(|p| p.into_inner());
        shard.ops = shard.ops.wrapping_add(1);
        if shard.ops % SWEEP_EVERY == 0 {
            shard
                .map
                .retain(|_, (last, _)| t - *last <= SESSION_IDLE_SECS);
        }
        let id = match shard.map.get_mut(visitor) {
            Some((last, id)) if (t - *last).abs() <= SESSION_IDLE_SECS => {
                *last = (*last).max(t);
                *id
            }
            _ => {
                let id = session_hash(visitor, t);
                shard.map.insert(*visitor, (t, id));
                id
            }
        };
        id
    }

    /// Whether `visitor` had an event within the last 30 minutes before `at` (does not record one).
    pub fn active(&self, visitor: &[u8; 16], at: DateTime<Utc>) -> bool {
        let idx = visitor[0] as usize % SHARDS;
        let shard = self.shards[idx].lock().unwrap_or_else(|p| p.into_inner());
        shard
            .map
            .get(visitor)
            .is_some_and(|(last, _)| (at.timestamp() - *last).abs() <= SESSION_IDLE_SECS)
    }

    /// Visitors currently tracked.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.map.len()).unwrap_or(0))
            .sum()
    }

    /// True when no visitor is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn visitor_id_depends_on_every_input_and_the_key() {
        let h = VisitorHasher::new([7; 32]);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let a = h.visitor_id("a.com", Some(ip), "UA");
        assert_eq!(a, h.visitor_id("a.com", Some(ip), "UA"));
        assert_ne!(a, h.visitor_id("b.com", Some(ip), "UA"));
        assert_ne!(
            a,
            h.visitor_id("a.com", Some("203.0.113.10".parse().unwrap()), "UA")
        );
        assert_ne!(a, h.visitor_id("a.com", Some(ip), "UA2"));
        assert_ne!(
            a,
            VisitorHasher::new([8; 32]).visitor_id("a.com", Some(ip), "UA")
        );
        // IPv4-mapped IPv6 is the same client as plain IPv4.
        assert_eq!(
            a,
            h.visitor_id("a.com", Some("::ffff:203.0.113.9".parse().unwrap()), "UA")
        );
    }

    #[test]
    fn pinned_vector() {
        // Guards against accidental changes of the hash layout (which would split every visitor).
        let h = VisitorHasher::new([0x42; 32]);
        let id = h.visitor_id(
            "example.com",
            Some("198.51.100.7".parse().unwrap()),
            "Mozilla/5.0",
        );
        let mut expect = blake3::Hasher::new_keyed(&[0x42; 32]);
        for part in [&b"example.com"[..], &[198, 51, 100, 7], b"Mozilla/5.0"] {
            expect.update(&(part.len() as u64).to_le_bytes());
            expect.update(part);
        }
        assert_eq!(&id[..], &expect.finalize().as_bytes()[..16]);
    }

    #[test]
    fn sessions_end_after_30_idle_minutes() {
        let s = SessionTracker::new();
        let v = [1u8; 16];
        let t0 = Utc::now();
        let a = s.session_id(&v, t0);
        assert_eq!(a, s.session_id(&v, t0 + Duration::minutes(29)));
        assert_eq!(
            a,
            s.session_id(&v, t0 + Duration::minutes(58)),
            "idle is measured from the last event"
        );
        let b = s.session_id(&v, t0 + Duration::minutes(89));
        assert_ne!(a, b);
        assert_ne!(s.session_id(&[2u8; 16], t0), a);
    }
}
