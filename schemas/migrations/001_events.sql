-- 001_events: one row per accepted event (pageview or custom event).
--
-- No raw IP address and no raw user agent is ever stored: the collector turns them into
-- `visitor_id` (a keyed blake3 hash, 128 bits) and coarse facts (browser family and major
-- version, OS, device class) and then drops them. See docs/PRIVACY.md for every column.
--
-- Partitioned by UTC day so retention drops whole partitions (ALTER TABLE ... DROP PARTITION),
-- ordered for per-site time-range scans with a visitor's events next to each other (sessions).
-- Works on ClickHouse 18.16 and on current releases: no TTL, no LowCardinality, no DateTime64.
CREATE TABLE IF NOT EXISTS events
(
    site            String,
    timestamp       DateTime,
    name            String,
    hostname        String,
    pathname        String,
    referrer        String,
    referrer_source String,
    utm_source      String,
    utm_medium      String,
    utm_campaign    String,
    utm_content     String,
    utm_term        String,
    visitor_id      FixedString(16),
    session_id      FixedString(16),
    browser         String,
    browser_version String,
    os              String,
    os_version      String,
    device          String,
    country_code    String,
    prop_keys       Array(String),
    prop_values     Array(String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(timestamp)
ORDER BY (site, toDate(timestamp), visitor_id, timestamp)
SETTINGS index_granularity = 8192;
