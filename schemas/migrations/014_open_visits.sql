-- 014_open_visits: the visits still open at the cut of the current day's build, each as the
-- visit row it makes up to the cut, so a report adds only the hits after the cut instead of
-- reading every hit of every open visit again (the per-query cost that 011's visit_open left).
--
-- Columns as in `visits`, plus `last` (the time of the visit's last hit before the cut) and
-- `inter` (its interactive custom events: with pageviews, what decides a bounce). A reader
-- sessionizes the hits after the cut; a visitor's first visit there continues the open one
-- when it starts at most 30 minutes after `last`, and the two merge: visit properties from the
-- earlier part, exit page from the last part with a pageview, sums of the counts. Rows belong
-- to their build and go with it, like `visits` rows.
--
-- visit_open (011) is no longer written or read from this version on; it stays (migrations
-- are append-only, and the migration runner rewrites no DROP for cluster mode) and the
-- retention job still clears it.
CREATE TABLE IF NOT EXISTS open_visits
(
    site            String,
    day             Date,
    build           UInt64,
    visitor_id      FixedString(16),
    start           DateTime,
    duration        UInt32,
    pageviews       UInt32,
    events          UInt32,
    bounce          UInt8,
    entry_page      String,
    exit_page       String,
    hostname        String,
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
    device_model    String,
    last            DateTime,
    inter           UInt32
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(day)
ORDER BY (site, day, build, visitor_id)
SETTINGS index_granularity = 8192;
-- visits_daily_partial: the current day's build's per-dimension rows (the columns of
-- visits_daily, 013), apart from the closed days' rows because only these are read with
-- their uniq states (visitors before the cut, merged with those after it): a granule read for
-- one row deserializes every state in it, and a day's states are large (up to ~256 KB each).
-- One row per granule, so a report reads only the states of its own dimension. From this
-- version on, closed days' rows in visits_daily carry an empty state (their `uv` is what is
-- read).
CREATE TABLE IF NOT EXISTS visits_daily_partial
(
    site      String,
    day       Date,
    build     UInt64,
    dim       String,
    value     String,
    visitors  AggregateFunction(uniq, FixedString(16)),
    uv        UInt64,
    visits    UInt64,
    pageviews UInt64,
    events    UInt64,
    bounces   UInt64,
    duration  UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(day)
ORDER BY (site, dim, day, build, value)
SETTINGS index_granularity = 1;
-- events_recent: the last two UTC days' events ordered by time, for the hits after today's
-- cut. `events` is ordered by visitor within a day, so a report reading "the hits since
-- 16:57" scanned the whole day's columns, several times per report. Only the columns a visit
-- is made of. Fed by a materialized view on every insert into `events`; the rollup job drops
-- partitions older than yesterday. A server that dies between the two writes of one insert
-- leaves those hits out of the current day's tail only until the next build, which reads
-- `events`.
CREATE TABLE IF NOT EXISTS events_recent
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
ORDER BY (site, timestamp)
SETTINGS index_granularity = 1024;
CREATE MATERIALIZED VIEW IF NOT EXISTS events_recent_mv TO events_recent AS
SELECT site, timestamp, visitor_id, bot, name, pathname, hostname, interactive, referrer,
       source, channel, utm_source, utm_medium, utm_campaign, utm_content, utm_term,
       country_code, region, city, isp, browser, browser_version, os, os_version, device,
       screen_class, processor_class, locale, app_version, install_source, device_model
FROM events;
