//! What one credential may cost ClickHouse at once: a bound on the report requests it has
//! under way (`--max-concurrent-queries`, [`DEFAULT_MAX_CONCURRENT_QUERIES`]), on top of the
//! per-request rate limit of [`crate::auth`] and the per-query bounds of [`crate::db`]
//! (`max_execution_time` = [`crate::MAX_EXECUTION_SECS`], memory).
//!
//! Wire format: a report request ([`crate::reports::ROUTES`]) over its credential's limit
//! waits up to [`QUEUE_WAIT`] for a place (a dashboard page opens more panels than the bound,
//! and a browser's abandoned page leaves its queries running to their end), then is answered
//! `429 Too Many Requests` with `Retry-After: 1` and
//! `{"error": "this credential already has N report requests under way …"}` (the dashboard
//! waits and retries a 429 by itself). No query of a waiting request runs before it has its
//! place.
//!
//! The bound counts queries under way: a report request holds one permit from before its
//! first query until its answer is built, and runs its queries one after another under it.
//! An export (`GET /api/v1/sites/{domain}/export`) runs one report per CSV file, one after
//! another under its one permit, so it never has more than one query under way, and it cannot
//! start beside a full limit; it also counts as the reports it runs against the credential's
//! rate limit ([`crate::auth::RateLimiter::take`], see [`crate::reports::export`]), so
//! exports cannot multiply the request rate.
//!
//! Besides, the whole aggregator runs at most `--max-heavy-queries`
//! ([`DEFAULT_MAX_HEAVY_QUERIES`]) reports at once that do not read the per-day visit rollup
//! ([`heavy_source`]: visit rows, raw events, the event rollups' `uniq` states; a filter the
//! per-day rows do not answer) — the admin's too.
//! Each such report uses every core ClickHouse gives one query; six panels of a dashboard
//! under a page pattern at once shared two cores six ways, so each ran six times longer than
//! alone and the last passed `max_execution_time` (a 400 "too expensive" for a question that
//! takes 7 s alone). Past the bound a report waits for a place ([`HEAVY_WAIT`]; the wait is not
//! ClickHouse's time), then is answered `429` with `Retry-After`; reports read from the rollups
//! never wait.
//!
//! The admin token is not bounded here: it can already delete every site and read every
//! number, and a bound would only slow the operator's own scripts. ClickHouse's own
//! per-query bounds still apply to it. Site keys, shared links and any other credential are
//! bounded, each on its own (`Access::credential`: a person's sessions share `user:ID`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::Access;
use crate::Error;

/// Report requests one credential may have under way at once by default: six, the
/// connections a browser opens to one host over HTTP/1.1, so one dashboard tab loading its
/// panels rarely meets the bound, while a script firing requests in parallel does.
pub const DEFAULT_MAX_CONCURRENT_QUERIES: u32 = 6;

/// The largest `--max-concurrent-queries` (a typo guard).
pub const MAX_CONCURRENT_QUERIES: u32 = 1000;

/// Seconds a refused request is told to wait (`Retry-After`): reports take about that long.
pub const BUSY_RETRY_SECS: u64 = 1;

/// How long a request over its credential's bound waits for a place before its 429.
pub const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reports not read from the per-day visit rollup the aggregator runs at once by default
/// ([`Heavy`]): ClickHouse 18.16 gives one query as many threads as the server has cores, so
/// two at once keep two cores busy without dividing them further.
pub const DEFAULT_MAX_HEAVY_QUERIES: u32 = 2;

/// How long such a report waits for a place before its 429: five reports of about 6 s alone
/// (a filtered dashboard at 50M events on two cores) wait at most about 25 s.
pub const HEAVY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a report on `src`'s rows takes a place under [`Heavy`]: every source but the
/// per-day visit rollup (`visits_daily`, a few rows per day and value). Visit rows and raw
/// events are read per visit or per hit; the event rollups merge a `uniq` state per page and
/// hour (visitors by day under "page is not /pricing" at 50M events: 45 000 states, 4–8 s),
/// and under differential privacy they are not read at all — their questions read visit rows
/// or raw events per visitor id.
pub fn heavy_source(src: crate::query::Source) -> bool {
    src != crate::query::Source::VisitsDaily
}

/// The aggregator-wide bound on reports not answered from the per-day visit rollup at once (see the
/// module docs).
#[derive(Debug, Clone)]
pub struct Heavy {
    limit: u32,
    wait: std::time::Duration,
    sem: Arc<Semaphore>,
}

impl Heavy {
    /// At most `limit` such reports at once (0: no bound).
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            wait: HEAVY_WAIT,
            sem: Arc::new(Semaphore::new(limit as usize)),
        }
    }

    /// The same bound with a report over it waiting `wait` for a place.
    pub fn with_wait(mut self, wait: std::time::Duration) -> Self {
        self.wait = wait;
        self
    }

    /// A place for one report, waiting up to the bound's wait, or [`Error::ClickHouseBusy`].
    pub async fn enter(&self) -> Result<Permit, Error> {
        if self.limit == 0 {
            return Ok(Permit { _held: None });
        }
        match tokio::time::timeout(self.wait, Arc::clone(&self.sem).acquire_owned()).await {
            Ok(Ok(p)) => Ok(Permit { _held: Some(p) }),
            _ => Err(Error::ClickHouseBusy {
                limit: self.limit,
                retry_after: BUSY_RETRY_SECS,
            }),
        }
    }

    /// A place under `heavy` if there is a bound (none: nothing to wait for).
    pub async fn place(heavy: Option<&Self>) -> Result<Permit, Error> {
        match heavy {
            Some(h) => h.enter().await,
            None => Ok(Permit { _held: None }),
        }
    }

    /// How many such reports run now.
    pub fn under_way(&self) -> u32 {
        self.limit
            .saturating_sub(u32::try_from(self.sem.available_permits()).unwrap_or(u32::MAX))
    }
}

/// The permits of every credential with a report under way.
#[derive(Debug)]
pub struct Gate {
    limit: u32,
    wait: std::time::Duration,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A credential's place under its bound, held while its report runs; dropping it frees it.
/// The admin's (and every credential's with the bound off) holds nothing.
#[derive(Debug)]
#[must_use = "the place is freed when the permit is dropped"]
pub struct Permit {
    _held: Option<OwnedSemaphorePermit>,
}

impl Gate {
    /// A gate allowing `limit` report requests under way per credential (0: no bound).
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            wait: QUEUE_WAIT,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The same gate with requests over the bound waiting `wait` for a place (zero: refused
    /// at once).
    pub fn with_wait(mut self, wait: std::time::Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The bound per credential (0: none).
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Takes a place for one report request of `access`, waiting up to the gate's wait for
    /// one, or [`Error::Busy`] when its credential still has the limit under way then.
    pub async fn admit(&self, access: &Access) -> Result<Permit, Error> {
        if self.limit == 0 || access.is_admin() {
            return Ok(Permit { _held: None });
        }
        let credential = access.credential();
        let sem = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            if slots.len() > 10_000 {
                // Forget idle credentials (every permit back, nobody holding the semaphore).
                let full = self.limit as usize;
                slots.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < full);
            }
            Arc::clone(
                slots
                    .entry(credential.to_string())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.limit as usize))),
            )
        };
        if let Ok(p) = Arc::clone(&sem).try_acquire_owned() {
            return Ok(Permit { _held: Some(p) });
        }
        match tokio::time::timeout(self.wait, sem.acquire_owned()).await {
            Ok(Ok(p)) => Ok(Permit { _held: Some(p) }),
            _ => Err(Error::Busy {
                limit: self.limit,
                retry_after: BUSY_RETRY_SECS,
            }),
        }
    }

    /// How many report requests `credential` has under way now.
    pub fn under_way(&self, credential: &str) -> u32 {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.get(credential).map_or(0, |s| {
            self.limit
                .saturating_sub(u32::try_from(s.available_permits()).unwrap_or(u32::MAX))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn heavy_reports_wait_for_a_place_then_are_refused() {
        let wait = std::time::Duration::from_millis(100);
        let h = Arc::new(Heavy::new(2).with_wait(std::time::Duration::from_secs(60)));
        let (a, b) = (h.enter().await.unwrap(), h.enter().await.unwrap());
        assert_eq!(h.under_way(), 2);
        let waiting = {
            let h = Arc::clone(&h);
            tokio::spawn(async move { h.enter().await.map(|_| ()) })
        };
        tokio::time::sleep(wait).await;
        assert!(!waiting.is_finished(), "a third waits while two run");
        drop(a);
        waiting.await.unwrap().unwrap();
        let short = Heavy::new(1).with_wait(wait);
        let held = short.enter().await.unwrap();
        let t0 = std::time::Instant::now();
        match short.enter().await {
            Err(Error::ClickHouseBusy { limit, retry_after }) => {
                assert_eq!((limit, retry_after), (1, BUSY_RETRY_SECS))
            }
            other => panic!("{other:?}"),
        }
        assert!(t0.elapsed() >= wait);
        drop((held, b));
        let off = Heavy::new(0);
        let mut many = Vec::new();
        for _ in 0..10 {
            many.push(off.enter().await.unwrap());
        }
        assert_eq!(off.under_way(), 0);
    }

    fn key(id: &str) -> Access {
        Access::Site {
            site: "a.com".into(),
            credential: format!("key:{id}"),
        }
    }

    #[tokio::test]
    async fn each_credential_has_its_own_bound_and_admin_none() {
        let wait = std::time::Duration::from_millis(100);
        let g = Arc::new(Gate::new(2).with_wait(wait));
        let held = (
            g.admit(&key("a")).await.unwrap(),
            g.admit(&key("a")).await.unwrap(),
        );
        assert_eq!(g.under_way("key:a"), 2);
        // A third waits its wait, then is refused.
        let t0 = std::time::Instant::now();
        match g.admit(&key("a")).await {
            Err(Error::Busy { limit, retry_after }) => {
                assert_eq!((limit, retry_after), (2, BUSY_RETRY_SECS))
            }
            other => panic!("{other:?}"),
        }
        assert!(t0.elapsed() >= wait);
        let b = g.admit(&key("b")).await.unwrap();
        let mut admins = Vec::new();
        for _ in 0..10 {
            admins.push(g.admit(&Access::Admin).await.unwrap());
        }
        drop(held);
        // A waiting request takes the place given back within its wait (a minute: however
        // slow the machine, the place is given back first).
        let g = Arc::new(Gate::new(2).with_wait(std::time::Duration::from_secs(60)));
        let (a1, a2) = (
            g.admit(&key("a")).await.unwrap(),
            g.admit(&key("a")).await.unwrap(),
        );
        let waiting = {
            let g = Arc::clone(&g);
            tokio::spawn(async move { g.admit(&key("a")).await.map(|_| ()) })
        };
        tokio::time::sleep(wait).await;
        assert!(
            !waiting.is_finished(),
            "the third waits while two are under way"
        );
        drop(a1);
        waiting.await.unwrap().unwrap();
        assert_eq!(g.under_way("key:a"), 1);
        let a3 = g.admit(&key("a")).await.unwrap();
        drop((a2, a3, b, admins));
        assert_eq!(g.under_way("key:a"), 0);
        let off = Gate::new(0);
        let mut many = Vec::new();
        for _ in 0..10 {
            many.push(off.admit(&key("a")).await.unwrap());
        }
        assert_eq!(many.len(), 10);
    }
}
