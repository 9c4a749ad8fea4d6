//! Where "now" comes from. The aggregator reads the time through a [`Clock`] it is given
//! (default [`SystemClock`]): report date ranges ("today", "30d", realtime windows),
//! shared-link expiry, per-credential rate limits and today's snapshots all ask it, so tests
//! (and replays of a past day) move time with a [`ManualClock`] instead of sleeping.
//!
//! A clock has two readings: the wall-clock time ([`Clock::now`], UTC) for anything compared
//! with stored times, and a monotonic [`Instant`] ([`Clock::instant`]) for intervals (the rate
//! limiter's token buckets), which a wall-clock step must not refill.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// Where "now" comes from (tests inject a [`ManualClock`]).
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current wall-clock time.
    fn now(&self) -> DateTime<Utc>;

    /// The current monotonic time, for measuring intervals.
    fn instant(&self) -> Instant;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that stands still until [`ManualClock::advance`] or [`ManualClock::set`] moves it
/// (both readings move together).
#[derive(Debug)]
pub struct ManualClock {
    state: Mutex<(DateTime<Utc>, Instant)>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: DateTime<Utc>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new((start, Instant::now())),
        })
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        s.1 += by;
    }

    /// Sets the wall-clock reading to `t` (forward or back); the monotonic reading moves
    /// forward by as much, or stays when `t` is earlier.
    pub fn set(&self, t: DateTime<Utc>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(d) = (t - s.0).to_std() {
            s.1 += d;
        }
        s.0 = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    fn instant(&self) -> Instant {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap();
        let c = ManualClock::new(t0);
        let i0 = c.instant();
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_millis(2100));
        assert_eq!(c.now(), t0 + chrono::Duration::milliseconds(2100));
        assert_eq!(c.instant() - i0, Duration::from_millis(2100));
        c.set(t0);
        assert_eq!(c.now(), t0);
        assert_eq!(
            c.instant() - i0,
            Duration::from_millis(2100),
            "never backwards"
        );
    }
}
