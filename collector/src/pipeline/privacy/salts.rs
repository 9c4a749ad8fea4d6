//! Daily salts: the keys of the visitor hash, one random 32-byte value per UTC day, shared by
//! every collector through the `salts` table (`schemas/migrations/002_salts.sql`).
//!
//! Agreement without a coordinator: for each day, any collector that finds no salt inserts a
//! random candidate with a random 64-bit nonce; every collector uses the candidate with the
//! lowest nonce. [`Salts::refresh`] (run at start and every minute) creates *tomorrow's* salt a
//! day ahead, so when a day begins all inserts for it finished hours ago and every collector
//! reads the same set. Only the very first start of a deployment creates salts on the spot;
//! whenever a refresh had to insert a candidate, a short settle delay passes before the winner is
//! read (so collectors starting together agree at once), and later refreshes re-read the winner.
//!
//! Lifetime: a day's salt is created the day before, used on its day, kept the next day (visits
//! that cross midnight continue under yesterday's visitor id), then dropped from memory and from
//! ClickHouse (partition dropped, parts removed within seconds): 48 hours after its day began,
//! no one can recompute a hash made with it.
//!
//! Threat model: someone with the database and the code but without a live salt sees only
//! 128-bit keyed hashes; testing a guessed (IP, user agent) needs the salt, which is deleted
//! after 48 h. While a salt is live, someone who can read the `salts` table (a database
//! administrator) could test guesses for the last two days; that window is the price of
//! collectors agreeing without a new service, and it closes by itself.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{Days, NaiveDate};
use veil_schemas::sql;
use veil_schemas::sql::{date, idents, Run, Sql};
use veil_schemas::ClickHouseConfig;

use crate::{Clock, Error};

/// A salt: 32 random bytes.
pub type Salt = [u8; 32];

/// A boxed future (the store is an I/O edge used from async code).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where salts are shared. The real one is ClickHouse; tests may use [`MemorySaltStore`].
pub trait SaltStore: Send + Sync + 'static {
    /// Every candidate for `day`, as (nonce, salt).
    fn candidates(&self, day: NaiveDate) -> BoxFuture<'_, Result<Vec<(u64, Salt)>, Error>>;
    /// Adds a candidate.
    fn insert(&self, day: NaiveDate, nonce: u64, salt: Salt) -> BoxFuture<'_, Result<(), Error>>;
    /// Deletes every salt of a day before `day`.
    fn delete_before(&self, day: NaiveDate) -> BoxFuture<'_, Result<(), Error>>;
}

/// Salts in the `salts` table of Veil's ClickHouse database.
#[derive(Clone)]
pub struct ClickHouseSaltStore {
    client: clickhouse::Client,
}

impl ClickHouseSaltStore {
    /// A store over `ch`.
    pub fn new(ch: &ClickHouseConfig) -> Self {
        Self {
            client: ch.client(),
        }
    }
}

#[derive(clickhouse::Row, serde::Deserialize, serde::Serialize)]
struct SaltRow {
    day: u16,
    salt: Salt,
    nonce: u64,
    created_at: u32,
}

fn day_number(day: NaiveDate) -> u16 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    u16::try_from((day - epoch).num_days()).unwrap_or(0)
}

fn ch_err(e: clickhouse::error::Error) -> Error {
    Error::Sink(format!("salt store: {e}"))
}

impl SaltStore for ClickHouseSaltStore {
    fn candidates(&self, day: NaiveDate) -> BoxFuture<'_, Result<Vec<(u64, Salt)>, Error>> {
        Box::pin(async move {
            let q = sql!(
                "SELECT {} FROM salts WHERE day = {} ORDER BY nonce",
                idents(<SaltRow as clickhouse::Row>::COLUMN_NAMES, ", "),
                date(day)
            );
            let rows: Vec<SaltRow> = self.client.sql(&q).fetch_all().await.map_err(ch_err)?;
            Ok(rows.into_iter().map(|r| (r.nonce, r.salt)).collect())
        })
    }

    fn insert(&self, day: NaiveDate, nonce: u64, salt: Salt) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let now = u32::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
            let mut ins = self
                .client
                .insert::<SaltRow>("salts")
                .await
                .map_err(ch_err)?;
            ins.write(&SaltRow {
                day: day_number(day),
                salt,
                nonce,
                created_at: now,
            })
            .await
            .map_err(ch_err)?;
            ins.end().await.map_err(ch_err)
        })
    }

    fn delete_before(&self, day: NaiveDate) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            #[derive(clickhouse::Row, serde::Deserialize)]
            struct Part {
                partition: String,
            }
            let parts_q = Sql::new(
                "SELECT DISTINCT partition FROM system.parts \
                 WHERE database = currentDatabase() AND table = 'salts' AND active",
            );
            let parts: Vec<Part> = self
                .client
                .sql(&parts_q)
                .fetch_all()
                .await
                .map_err(ch_err)?;
            let cutoff: u32 = day.format("%Y%m%d").to_string().parse().unwrap_or(0);
            for p in parts {
                let Ok(n) = p.partition.trim_matches('\'').parse::<u32>() else {
                    continue;
                };
                if n < cutoff {
                    // The partition id is a number we just parsed.
                    let drop = sql!("ALTER TABLE salts DROP PARTITION {}", n);
                    self.client.sql(&drop).execute().await.map_err(ch_err)?;
                }
            }
            Ok(())
        })
    }
}

/// An in-memory store (unit tests, and a single process that wants no shared state).
#[derive(Default)]
pub struct MemorySaltStore {
    rows: std::sync::Mutex<Vec<(NaiveDate, u64, Salt)>>,
}

impl SaltStore for MemorySaltStore {
    fn candidates(&self, day: NaiveDate) -> BoxFuture<'_, Result<Vec<(u64, Salt)>, Error>> {
        let mut v: Vec<(u64, Salt)> = self
            .rows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| r.0 == day)
            .map(|r| (r.1, r.2))
            .collect();
        v.sort();
        Box::pin(async move { Ok(v) })
    }
    fn insert(&self, day: NaiveDate, nonce: u64, salt: Salt) -> BoxFuture<'_, Result<(), Error>> {
        self.rows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((day, nonce, salt));
        Box::pin(async { Ok(()) })
    }
    fn delete_before(&self, day: NaiveDate) -> BoxFuture<'_, Result<(), Error>> {
        self.rows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|r| r.0 >= day);
        Box::pin(async { Ok(()) })
    }
}

fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Config(format!("no OS randomness: {e}")))?;
    Ok(b)
}

enum Source {
    Store(Arc<dyn SaltStore>),
    Fixed(Salt),
}

/// The salts in force, cached in memory for the request path.
pub struct Salts {
    source: Source,
    clock: Arc<dyn Clock>,
    cache: RwLock<BTreeMap<NaiveDate, Salt>>,
    settle: Duration,
}

impl std::fmt::Debug for Salts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let days: Vec<NaiveDate> = self
            .cache
            .read()
            .map(|c| c.keys().copied().collect())
            .unwrap_or_default();
        write!(f, "Salts {{ days: {days:?} }}")
    }
}

impl Salts {
    /// Salts shared through `store`; call [`Self::refresh`] before use and then every minute.
    pub fn shared(store: Arc<dyn SaltStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            source: Source::Store(store),
            clock,
            cache: RwLock::new(BTreeMap::new()),
            settle: Duration::from_secs(1),
        }
    }

    /// One fixed salt for every day (benchmarks and unit tests only).
    pub fn fixed(salt: Salt, clock: Arc<dyn Clock>) -> Self {
        Self {
            source: Source::Fixed(salt),
            clock,
            cache: RwLock::new(BTreeMap::new()),
            settle: Duration::ZERO,
        }
    }

    /// Sets the wait between creating a salt on the spot and reading the winner (tests).
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// The salt of `day`, if loaded.
    pub fn get(&self, day: NaiveDate) -> Option<Salt> {
        match &self.source {
            Source::Fixed(s) => Some(*s),
            Source::Store(_) => self
                .cache
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&day)
                .copied(),
        }
    }

    /// Days whose salt is in memory.
    pub fn days(&self) -> Vec<NaiveDate> {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Makes sure today's and tomorrow's salts exist, loads yesterday's, today's and tomorrow's
    /// winners, and forgets and deletes anything older than yesterday.
    pub async fn refresh(&self) -> Result<(), Error> {
        let Source::Store(store) = &self.source else {
            return Ok(());
        };
        let today = self.clock.now().date_naive();
        let yesterday = today.checked_sub_days(Days::new(1)).unwrap_or(today);
        let tomorrow = today.checked_add_days(Days::new(1)).unwrap_or(today);
        let mut loaded = BTreeMap::new();
        for day in [today, tomorrow] {
            let mut c = store.candidates(day).await?;
            if c.is_empty() {
                store
                    .insert(day, u64::from_le_bytes(random()?), random()?)
                    .await?;
                if !self.settle.is_zero() {
                    tokio::time::sleep(self.settle).await;
                }
                c = store.candidates(day).await?;
            }
            if let Some((_, s)) = c.iter().min_by_key(|(n, _)| *n) {
                loaded.insert(day, *s);
            }
        }
        if let Some((_, s)) = store
            .candidates(yesterday)
            .await?
            .iter()
            .min_by_key(|(n, _)| *n)
        {
            loaded.insert(yesterday, *s);
        }
        store.delete_before(yesterday).await?;
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(())
    }

    /// Refreshes every `every` until `stop` resolves; failures are logged and retried.
    pub async fn keep_fresh(self: Arc<Self>, every: Duration, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            // Retry every second while today's salt is missing (ClickHouse was down).
            let today = self.clock.now().date_naive();
            let wait = if self.get(today).is_some() {
                every
            } else {
                Duration::from_secs(1)
            };
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(wait) => {
                    if let Err(e) = self.refresh().await {
                        tracing::warn!(error = %e, "refreshing salts failed; will retry");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};
    use std::sync::Mutex;

    struct TestClock(Mutex<DateTime<Utc>>);
    impl Clock for TestClock {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }

    #[tokio::test]
    async fn two_collectors_agree_and_salts_rotate_at_midnight() {
        let store: Arc<dyn SaltStore> = Arc::new(MemorySaltStore::default());
        let clock = Arc::new(TestClock(Mutex::new(
            Utc.with_ymd_and_hms(2026, 3, 1, 23, 59, 0).unwrap(),
        )));
        let a = Salts::shared(store.clone(), clock.clone()).with_settle(Duration::ZERO);
        let b = Salts::shared(store.clone(), clock.clone()).with_settle(Duration::ZERO);
        a.refresh().await.unwrap();
        b.refresh().await.unwrap();
        let d1 = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let d2 = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
        assert_eq!(a.get(d1), b.get(d1));
        assert_eq!(
            a.get(d2),
            b.get(d2),
            "tomorrow is made a day ahead and agreed"
        );
        assert_ne!(a.get(d1), a.get(d2));
        *clock.0.lock().unwrap() = Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 1).unwrap();
        a.refresh().await.unwrap();
        assert!(
            a.get(d1).is_some(),
            "yesterday's salt is kept for visits crossing midnight"
        );
        *clock.0.lock().unwrap() = Utc.with_ymd_and_hms(2026, 3, 3, 0, 0, 1).unwrap();
        a.refresh().await.unwrap();
        assert_eq!(a.get(d1), None, "gone from memory after 48 h");
        assert!(
            store.candidates(d1).await.unwrap().is_empty(),
            "gone from the store after 48 h"
        );
        assert!(a.get(d2).is_some());
    }

    #[tokio::test]
    async fn lowest_nonce_wins() {
        let store = Arc::new(MemorySaltStore::default());
        let clock = Arc::new(TestClock(Mutex::new(
            Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap(),
        )));
        let d = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        store.insert(d, 50, [5; 32]).await.unwrap();
        store.insert(d, 7, [7; 32]).await.unwrap();
        let s = Salts::shared(store, clock).with_settle(Duration::ZERO);
        s.refresh().await.unwrap();
        assert_eq!(s.get(d), Some([7; 32]));
    }
}
