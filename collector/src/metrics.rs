//! Prometheus metrics of the collector, registered on a registry passed in (never the global one).
//!
//! Names carry their unit; labels are low-cardinality (`endpoint`, `reason`, `route`, `status`,
//! `db`). The GeoIP ages are registered by the collector itself
//! (`pipeline::geo::AgeMetrics`, computed at each scrape).
//! Batch metrics are recorded per batch, not per event.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Why an event was not stored. Every drop increments `veil_events_dropped_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The domain is not a registered site.
    UnknownSite,
    /// A crawler.
    BotCrawler,
    /// A headless or automated browser.
    BotHeadless,
    /// An uptime or performance monitor.
    BotMonitoring,
    /// An HTTP library or command-line client.
    BotLibrary,
    /// A browser hit from a hosting provider's network.
    BotDatacenter,
    /// The visitor opted out (GPC, DNT, an app's flag).
    Consent,
    /// No salt for today was available (ClickHouse unreachable at start); sender got 503.
    NoSalt,
    /// The event itself was invalid (in a batch; the sender is told which and why).
    Invalid,
    /// The spool was full (`--spool-max-bytes`; sender got 503).
    SpoolFull,
    /// A spool record could not be decoded (disk damage).
    SpoolCorrupt,
    /// An Umami `identify` call: it carries user ids, so it is never stored.
    Identify,
    /// The collector was shutting down (sender got 503).
    ShuttingDown,
    /// The site's rate limit was hit (sender got 429).
    RateLimited,
    /// ClickHouse refused the batch after every retry (kept for sinks without a spool).
    ClickHouseError,
}

impl DropReason {
    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::UnknownSite => "unknown_site",
            DropReason::BotCrawler => "bot_crawler",
            DropReason::BotHeadless => "bot_headless",
            DropReason::BotMonitoring => "bot_monitoring",
            DropReason::BotLibrary => "bot_library",
            DropReason::BotDatacenter => "bot_datacenter",
            DropReason::Consent => "consent",
            DropReason::NoSalt => "no_salt",
            DropReason::Invalid => "invalid",
            DropReason::SpoolFull => "spool_full",
            DropReason::SpoolCorrupt => "spool_corrupt",
            DropReason::Identify => "identify",
            DropReason::ShuttingDown => "shutting_down",
            DropReason::RateLimited => "rate_limited",
            DropReason::ClickHouseError => "clickhouse_error",
        }
    }
}

/// Metric names, as constants so dashboards and tests can refer to them.
pub mod names {
    /// Events parsed from requests, by endpoint.
    pub const EVENTS_RECEIVED: &str = "veil_events_received_total";
    /// Events queued for storage, by endpoint.
    pub const EVENTS_ACCEPTED: &str = "veil_events_accepted_total";
    /// Events not stored, by reason.
    pub const EVENTS_DROPPED: &str = "veil_events_dropped_total";
    /// Events written to ClickHouse.
    pub const EVENTS_WRITTEN: &str = "veil_events_written_total";
    /// HTTP requests by route and status.
    pub const HTTP_REQUESTS: &str = "veil_http_requests_total";
    /// Requests refused before any event was parsed, by reason.
    pub const REQUESTS_REJECTED: &str = "veil_requests_rejected_total";
    /// Rows per flushed batch.
    pub const BATCH_SIZE: &str = "veil_batch_size_events";
    /// Time to insert one batch.
    pub const BATCH_FLUSH: &str = "veil_batch_flush_seconds";
    /// Events accepted (on disk in the spool) and not yet in ClickHouse.
    pub const QUEUE_DEPTH: &str = "veil_queue_depth_events";
    /// Bytes of spool segment files on disk.
    pub const SPOOL_BYTES: &str = "veil_spool_bytes";
    /// Spool segment files.
    pub const SPOOL_SEGMENTS: &str = "veil_spool_segments";
    /// Age of the oldest event not yet in ClickHouse.
    pub const SPOOL_OLDEST_AGE: &str = "veil_spool_oldest_event_age_seconds";
    /// User agents answered from the parser's cache.
    pub const UA_CACHE_HITS: &str = "veil_ua_cache_hits_total";
    /// User agents parsed because the cache did not have them.
    pub const UA_CACHE_MISSES: &str = "veil_ua_cache_misses_total";
    /// Seconds each spool commit took (a group's write and, with `--durability fsync`, its
    /// `fdatasync`): what every accepted request waited for the disk.
    pub const SPOOL_COMMIT: &str = "veil_spool_commit_seconds";
    /// Damaged spool regions found and skipped (at start or while reading).
    pub const SPOOL_CORRUPT: &str = "veil_spool_corrupt_regions_total";
    /// Failed ClickHouse inserts (each attempt).
    pub const CLICKHOUSE_ERRORS: &str = "veil_clickhouse_errors_total";
    /// Accept errors (EMFILE and friends) survived by the accept loop.
    pub const ACCEPT_ERRORS: &str = "veil_accept_errors_total";
    /// Seconds since each loaded GeoIP database was built, by `db` (file name).
    pub const GEOIP_AGE: &str = "veil_geoip_age_seconds";
    /// The age past which each GeoIP database's source wants it replaced, by `db`.
    pub const GEOIP_AGE_LIMIT: &str = "veil_geoip_age_limit_seconds";
}

/// Upper bounds of [`names::SPOOL_COMMIT`]'s buckets, seconds: a synced write of a few kB
/// takes ~0.1 ms on an idle disk and whole milliseconds when the disk or the CPU that takes its
/// interrupts is busy (benches/README, "the spool's commits").
pub const SPOOL_COMMIT_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// All collector metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// See [`names::EVENTS_RECEIVED`].
    pub events_received: IntCounterVec,
    /// See [`names::EVENTS_ACCEPTED`].
    pub events_accepted: IntCounterVec,
    /// See [`names::EVENTS_DROPPED`].
    pub events_dropped: IntCounterVec,
    /// See [`names::EVENTS_WRITTEN`].
    pub events_written: IntCounter,
    /// See [`names::HTTP_REQUESTS`].
    pub http_requests: IntCounterVec,
    /// See [`names::REQUESTS_REJECTED`].
    pub requests_rejected: IntCounterVec,
    /// See [`names::BATCH_SIZE`].
    pub batch_size: Histogram,
    /// See [`names::BATCH_FLUSH`].
    pub batch_flush: Histogram,
    /// See [`names::QUEUE_DEPTH`].
    pub queue_depth: IntGauge,
    /// See [`names::CLICKHOUSE_ERRORS`].
    pub clickhouse_errors: IntCounter,
    /// See [`names::SPOOL_BYTES`].
    pub spool_bytes: IntGauge,
    /// See [`names::SPOOL_SEGMENTS`].
    pub spool_segments: IntGauge,
    /// See [`names::SPOOL_OLDEST_AGE`].
    pub spool_oldest_age: prometheus::Gauge,
    /// See [`names::SPOOL_COMMIT`].
    pub spool_commit: Histogram,
    /// See [`names::SPOOL_CORRUPT`].
    pub spool_corrupt: IntCounter,
    /// See [`names::UA_CACHE_HITS`].
    pub ua_cache_hits: IntCounter,
    /// See [`names::UA_CACHE_MISSES`].
    pub ua_cache_misses: IntCounter,
    /// See [`names::ACCEPT_ERRORS`].
    pub accept_errors: IntCounter,
}

impl Metrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            events_received: IntCounterVec::new(
                Opts::new(names::EVENTS_RECEIVED, "Events parsed from requests"),
                &["endpoint"],
            )?,
            events_accepted: IntCounterVec::new(
                Opts::new(names::EVENTS_ACCEPTED, "Events queued for storage"),
                &["endpoint"],
            )?,
            events_dropped: IntCounterVec::new(
                Opts::new(names::EVENTS_DROPPED, "Events not stored, by reason"),
                &["reason"],
            )?,
            events_written: IntCounter::new(names::EVENTS_WRITTEN, "Events written to ClickHouse")?,
            http_requests: IntCounterVec::new(
                Opts::new(names::HTTP_REQUESTS, "HTTP requests by route and status"),
                &["route", "status"],
            )?,
            requests_rejected: IntCounterVec::new(
                Opts::new(
                    names::REQUESTS_REJECTED,
                    "Requests refused before parsing events, by reason",
                ),
                &["reason"],
            )?,
            batch_size: Histogram::with_opts(
                HistogramOpts::new(names::BATCH_SIZE, "Rows per batch written to ClickHouse")
                    .buckets(vec![
                        1.0, 10.0, 100.0, 1_000.0, 5_000.0, 10_000.0, 50_000.0, 100_000.0,
                    ]),
            )?,
            batch_flush: Histogram::with_opts(
                HistogramOpts::new(
                    names::BATCH_FLUSH,
                    "Seconds to insert one batch into ClickHouse",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            )?,
            queue_depth: IntGauge::new(
                names::QUEUE_DEPTH,
                "Events waiting for the ClickHouse writer",
            )?,
            clickhouse_errors: IntCounter::new(
                names::CLICKHOUSE_ERRORS,
                "Failed ClickHouse insert attempts",
            )?,
            spool_bytes: IntGauge::new(names::SPOOL_BYTES, "Bytes of spool segment files on disk")?,
            spool_segments: IntGauge::new(names::SPOOL_SEGMENTS, "Spool segment files")?,
            spool_oldest_age: prometheus::Gauge::new(
                names::SPOOL_OLDEST_AGE,
                "Seconds since the oldest event not yet in ClickHouse was accepted",
            )?,
            spool_commit: Histogram::with_opts(
                HistogramOpts::new(
                    names::SPOOL_COMMIT,
                    "Seconds each spool commit took: a group's write and, with fsync, its fdatasync",
                )
                .buckets(SPOOL_COMMIT_BUCKETS.to_vec()),
            )?,
            spool_corrupt: IntCounter::new(
                names::SPOOL_CORRUPT,
                "Damaged spool regions found and skipped",
            )?,
            ua_cache_hits: IntCounter::new(
                names::UA_CACHE_HITS,
                "User agents answered from the cache",
            )?,
            ua_cache_misses: IntCounter::new(
                names::UA_CACHE_MISSES,
                "User agents parsed (cache misses)",
            )?,
            accept_errors: IntCounter::new(
                names::ACCEPT_ERRORS,
                "Errors from accept() survived by the accept loop",
            )?,
        };
        registry.register(Box::new(m.events_received.clone()))?;
        registry.register(Box::new(m.events_accepted.clone()))?;
        registry.register(Box::new(m.events_dropped.clone()))?;
        registry.register(Box::new(m.events_written.clone()))?;
        registry.register(Box::new(m.http_requests.clone()))?;
        registry.register(Box::new(m.requests_rejected.clone()))?;
        registry.register(Box::new(m.batch_size.clone()))?;
        registry.register(Box::new(m.batch_flush.clone()))?;
        registry.register(Box::new(m.queue_depth.clone()))?;
        registry.register(Box::new(m.clickhouse_errors.clone()))?;
        registry.register(Box::new(m.spool_bytes.clone()))?;
        registry.register(Box::new(m.spool_segments.clone()))?;
        registry.register(Box::new(m.spool_oldest_age.clone()))?;
        registry.register(Box::new(m.spool_commit.clone()))?;
        registry.register(Box::new(m.spool_corrupt.clone()))?;
        registry.register(Box::new(m.ua_cache_hits.clone()))?;
        registry.register(Box::new(m.ua_cache_misses.clone()))?;
        registry.register(Box::new(m.accept_errors.clone()))?;
        // process_resident_memory_bytes, process_cpu_seconds_total, open fds (Linux /proc).
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        // Pre-create every drop reason so dashboards see zeros, not gaps.
        for r in [
            DropReason::UnknownSite,
            DropReason::BotCrawler,
            DropReason::BotHeadless,
            DropReason::BotMonitoring,
            DropReason::BotLibrary,
            DropReason::BotDatacenter,
            DropReason::Consent,
            DropReason::NoSalt,
            DropReason::Invalid,
            DropReason::SpoolFull,
            DropReason::SpoolCorrupt,
            DropReason::Identify,
            DropReason::ShuttingDown,
            DropReason::RateLimited,
            DropReason::ClickHouseError,
        ] {
            m.events_dropped.with_label_values(&[r.as_str()]);
        }
        Ok(m)
    }

    /// Counts `n` dropped events.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        self.events_dropped
            .with_label_values(&[reason.as_str()])
            .inc_by(n);
    }
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let enc = prometheus::TextEncoder::new();
    if let Err(e) = enc.encode(&registry.gather(), &mut buf) {
        tracing::warn!(error = %e, "encoding metrics");
    }
    String::from_utf8_lossy(&buf).into_owned()
}
