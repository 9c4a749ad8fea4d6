-- 025_events_tail: the hits after today's cut, in a table whose order a collector's insert
-- already has. Replaces events_recent (014), which was ordered by site and time.
--
-- The collector sorts each batch by events' key (site, UTC day, visitor_id, timestamp) before
-- the insert (collector/src/pipeline/sink/mod.rs), so ClickHouse finds the block sorted and
-- skips its sort and the permutation of every column. events_recent, ordered by time, then had
-- to sort every block; events_tail is ordered by site, hour, visitor and time, so a batch whose
-- rows of a site fall in one hour is in its order too and neither insert sorts
-- (benches/README, "Measured 2026-12-07"). A reader of the hits since a cut adds
-- `toStartOfHour(timestamp) >= toStartOfHour(<cut>)` to its condition (ClickHouse 18.16 uses
-- the key only for a condition on the key's own expression) and reads from the cut's hour on.
--
-- Same columns as events_recent, fed by a materialized view on every insert into events; the
-- rollup job drops partitions older than yesterday. It starts empty: until the rollup job's
-- next build of today (at most its interval), the current build's tail is missing here, which
-- the readers detect (aggregator/src/builds.rs: this table holds fewer hits after the cut than
-- events) and read the day from raw events meanwhile. Old rows are not copied: a migration
-- statement must be idempotent, and an INSERT … SELECT run twice would store rows twice.
CREATE TABLE IF NOT EXISTS events_tail
(
    site            String,
    timestamp       DateTime,
    visitor_id      FixedString(16),
    bot             String,
    name            String,
    pathname        String,
    hostname        String,
    interactive     UInt8,
    referrer        String,
    source          String,
    channel         String,
    utm_source      String,
    utm_medium      String,
    utm_campaign    String,
    utm_content     String,
    utm_term        String,
    country_code    String,
    region          String,
    city            String,
    isp             String,
    browser         String,
    browser_version String,
    os              String,
    os_version      String,
    device          String,
    screen_class    String,
    processor_class String,
    locale          String,
    app_version     String,
    install_source  String,
    device_model    String
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(timestamp)
ORDER BY (site, toStartOfHour(timestamp), visitor_id, timestamp)
SETTINGS index_granularity = 1024;
CREATE MATERIALIZED VIEW IF NOT EXISTS events_tail_mv TO events_tail AS
SELECT site, timestamp, visitor_id, bot, name, pathname, hostname, interactive, referrer,
       source, channel, utm_source, utm_medium, utm_campaign, utm_content, utm_term,
       country_code, region, city, isp, browser, browser_version, os, os_version, device,
       screen_class, processor_class, locale, app_version, install_source, device_model
FROM events;
-- The old view first (inserts stop feeding the old table), then the table.
DROP TABLE IF EXISTS events_recent_mv;
DROP TABLE IF EXISTS events_recent;
