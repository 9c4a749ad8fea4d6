//! Per-site counts of the events Veil chose not to store — bots by kind, opt-outs (GPC, DNT,
//! an app's switch) and the site's rate limit — for the dashboard's "filtered traffic" panel.
//!
//! Counts are kept in memory per (site, reason, UTC hour) and added to ClickHouse's
//! `filtered_hourly` table (`012_filtered.sql`, SummingMergeTree) every few seconds and at
//! shutdown, as RowBinary rows `{site, hour, reason, events, flush}`. Nothing else about the event is
//! kept. Events for unregistered domains are never counted per site (that would record which
//! domains people send). A flush that fails puts its counts back for the next one; counts
//! not yet flushed when the process dies are lost — they are statistics, not events.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Timelike, Utc};

use crate::metrics::DropReason;

/// One row of `filtered_hourly`.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, serde::Serialize)]
pub struct FilteredRow {
    /// The registered site.
    pub site: String,
    /// Start of the UTC hour, Unix seconds.
    pub hour: u32,
    /// [`DropReason::as_str`].
    pub reason: String,
    /// Events.
    pub events: u64,
    /// Random per flush: two flushes with equal counts are different blocks (a Replicated
    /// table drops a block identical to a recent one).
    pub flush: u64,
}

/// Whether a drop reason is counted per site.
pub fn per_site(reason: DropReason) -> bool {
    matches!(
        reason,
        DropReason::BotCrawler
            | DropReason::BotHeadless
            | DropReason::BotMonitoring
            | DropReason::BotLibrary
            | DropReason::BotDatacenter
            | DropReason::Consent
            | DropReason::RateLimited
    )
}

/// The counts not yet written.
#[derive(Debug, Default)]
pub struct FilteredCounts {
    counts: Mutex<HashMap<(String, u32, &'static str), u64>>,
}

impl FilteredCounts {
    /// Counts one event of `site` dropped for `reason` at `at` (ignored for reasons that are
    /// not per site).
    pub fn add(&self, site: &str, reason: DropReason, at: DateTime<Utc>) {
        if !per_site(reason) {
            return;
        }
        let hour = at
            .with_minute(0)
            .and_then(|t| t.with_second(0))
            .map(|t| t.timestamp())
            .unwrap_or(0);
        let hour = u32::try_from(hour).unwrap_or(0);
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((site.to_string(), hour, reason.as_str()))
            .or_default() += 1;
    }

    /// Takes every pending count, tagged with one random flush number.
    pub fn take(&self) -> Vec<FilteredRow> {
        let mut b = [0u8; 8];
        // Without OS randomness the tag falls back to the clock: it only has to differ
        // between flushes.
        if getrandom::fill(&mut b).is_err() {
            b = (Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64).to_le_bytes();
        }
        let flush = u64::from_le_bytes(b);
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<FilteredRow> = m
            .drain()
            .map(|((site, hour, reason), events)| FilteredRow {
                site,
                hour,
                reason: reason.to_string(),
                events,
                flush,
            })
            .collect();
        rows.sort_by(|a, b| (&a.site, a.hour, &a.reason).cmp(&(&b.site, b.hour, &b.reason)));
        rows
    }

    fn put_back(&self, rows: Vec<FilteredRow>) {
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for r in rows {
            let reason = REASONS
                .iter()
                .find(|x| **x == r.reason)
                .copied()
                .unwrap_or("other");
            *m.entry((r.site, r.hour, reason)).or_default() += r.events;
        }
    }

    /// Writes the pending counts to `filtered_hourly`; on failure they stay pending.
    pub async fn flush(
        &self,
        client: &clickhouse::Client,
    ) -> Result<usize, clickhouse::error::Error> {
        let rows = self.take();
        if rows.is_empty() {
            return Ok(0);
        }
        let n = rows.len();
        let result = async {
            let mut ins = client.insert::<FilteredRow>("filtered_hourly").await?;
            for r in &rows {
                ins.write(r).await?;
            }
            ins.end().await
        }
        .await;
        match result {
            Ok(()) => Ok(n),
            Err(e) => {
                self.put_back(rows);
                Err(e)
            }
        }
    }
}

const REASONS: [&str; 7] = [
    "bot_crawler",
    "bot_headless",
    "bot_monitoring",
    "bot_library",
    "bot_datacenter",
    "consent",
    "rate_limited",
];

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn counts_per_site_reason_and_hour() {
        let c = FilteredCounts::default();
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 10, 42, 7).unwrap();
        c.add("a.com", DropReason::Consent, t);
        c.add("a.com", DropReason::Consent, t);
        c.add("a.com", DropReason::BotCrawler, t);
        c.add("a.com", DropReason::Invalid, t); // not per site
        let rows = c.take();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].reason, "consent");
        assert_eq!(rows[1].events, 2);
        assert_eq!(
            i64::from(rows[0].hour),
            Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0)
                .unwrap()
                .timestamp()
        );
        assert!(c.take().is_empty());
        let first = rows[0].flush;
        assert!(rows.iter().all(|r| r.flush == first), "one tag per flush");
        c.put_back(rows);
        let again = c.take();
        assert_eq!(again.len(), 2);
        assert_ne!(again[0].flush, first, "each flush is its own block");
    }
}
