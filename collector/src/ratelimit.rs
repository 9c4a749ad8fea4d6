//! Token-bucket rate limits, in memory only.
//!
//! - Per client IP: keyed by a 64-bit blake3 hash of the IP under a random per-process key, so
//!   the table never holds an address (and the key never leaves memory). `--rate-limit-ip`
//!   requests per second per client, bursts of twice that.
//! - Per site: `--rate-limit-site` events per second per site, bursts of twice that.
//!
//! Over the limit → 429 with `Retry-After`, counted. `0` switches a limit off. Idle buckets are
//! swept, so memory follows the number of clients active in the last minute.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

const SHARDS: usize = 32;
const SWEEP_EVERY: u32 = 8192;

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A sharded table of token buckets.
pub struct Limiter<K> {
    per_sec: f64,
    burst: f64,
    shards: Vec<Mutex<(HashMap<K, Bucket>, u32)>>,
}

impl<K> std::fmt::Debug for Limiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Limiter {{ per_sec: {} }}", self.per_sec)
    }
}

impl<K: Hash + Eq + Copy> Limiter<K> {
    /// `per_sec` tokens per second, bursts of `2 * per_sec`; `0` allows everything.
    pub fn new(per_sec: u32) -> Self {
        Self {
            per_sec: f64::from(per_sec),
            burst: f64::from(per_sec) * 2.0,
            shards: (0..SHARDS)
                .map(|_| Mutex::new((HashMap::new(), 0)))
                .collect(),
        }
    }

    /// Takes `n` tokens for `key`; false when the bucket is empty.
    pub fn allow(&self, key: K, shard: usize, n: f64, now: Instant) -> bool {
        if self.per_sec <= 0.0 {
            return true;
        }
        let mut guard = self.shards[shard % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (map, ops) = &mut *guard;
        *ops = ops.wrapping_add(1);
        if *ops % SWEEP_EVERY == 0 {
            let full_after = self.burst / self.per_sec;
            map.retain(|_, b| now.duration_since(b.at).as_secs_f64() < full_after);
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * self.per_sec;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= n {
            b.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// The collector's limits.
#[derive(Debug)]
pub struct RateLimits {
    key: [u8; 32],
    ip: Limiter<u64>,
    site: Limiter<u64>,
}

impl RateLimits {
    /// Limits of `per_ip` requests/s and `per_site` events/s (0 = off).
    pub fn new(per_ip: u32, per_site: u32) -> Self {
        let mut key = [0u8; 32];
        let _ = getrandom::fill(&mut key);
        Self {
            key,
            ip: Limiter::new(per_ip),
            site: Limiter::new(per_site),
        }
    }

    fn hash(&self, bytes: &[u8]) -> u64 {
        let h = blake3::keyed_hash(&self.key, bytes);
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        u64::from_le_bytes(b)
    }

    /// One request from `ip`.
    pub fn allow_ip(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip else { return true };
        let k = match ip {
            IpAddr::V4(v) => self.hash(&v.octets()),
            IpAddr::V6(v) => self.hash(&v.octets()),
        };
        self.ip
            .allow(k, (k % SHARDS as u64) as usize, 1.0, Instant::now())
    }

    /// `n` events for `site`.
    pub fn allow_site(&self, site: &str, n: usize) -> bool {
        let k = self.hash(site.as_bytes());
        self.site
            .allow(k, (k % SHARDS as u64) as usize, n as f64, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills() {
        let l: Limiter<u64> = Limiter::new(10);
        let t0 = Instant::now();
        let allowed = (0..50).filter(|_| l.allow(1, 0, 1.0, t0)).count();
        assert_eq!(allowed, 20, "burst of twice the rate");
        assert!(!l.allow(1, 0, 1.0, t0));
        assert!(
            l.allow(1, 0, 1.0, t0 + Duration::from_millis(150)),
            "refilled"
        );
        assert!(l.allow(2, 0, 1.0, t0), "other keys have their own bucket");
    }

    #[test]
    fn zero_is_off() {
        let r = RateLimits::new(0, 0);
        assert!((0..10_000).all(|_| r.allow_ip(Some("203.0.113.1".parse().unwrap()))));
        assert!(r.allow_site("a.com", 1_000_000));
    }
}
