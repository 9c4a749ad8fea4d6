-- 011_rollups: the tables reports read instead of raw events for common questions.
--
-- events_hourly: per site x UTC hour x event name x path x host, a uniq state of visitor hashes
-- and a count, kept current by a materialized view on every insert into `events`. `sig` (a
-- sum of the rows' hashes) is read by nobody: in cluster mode the Replicated table drops an
-- inserted block identical to a recent one, and two different batches (the same visitor on
-- the same page twice in an hour) would otherwise give identical rollup blocks; a replayed
-- batch still gives the identical block, and is dropped once, as it should be. It answers
-- top pages, custom events, goals and "visitors over time" without scanning raw events.
-- Days stored before this migration are filled in by the aggregator's rollup health check
-- (it compares each closed day with the raw events and rebuilds a day that differs).
--
-- visits: one row per visit (the 30-minute rule over a visitor's hits of one UTC day; the
-- daily salt changes visitor hashes at midnight — a visit already under way keeps its hash
-- for up to 30 minutes more, and is cut at midnight here), built by
-- the aggregator for each closed UTC day. A day's rows carry the build that wrote them; a
-- build counts only once it is recorded in visit_builds, and readers use the latest recorded
-- build of each day, so a rebuild never shows half a day. Days without a build are derived
-- from raw events at query time with the same SQL. The current day is built too, up to a
-- `cut` (0 for a closed day's build): the visits over by then (last hit more than 30 minutes
-- before the cut). visit_open holds, per visitor whose visit was still open at the cut, the
-- start of that visit; readers derive from raw events that visit and every hit from the cut
-- on. Its rows belong to their build and go with it.
CREATE TABLE IF NOT EXISTS events_hourly
(
    site      String,
    hour      DateTime,
    name      String,
    pathname  String,
    hostname  String,
    visitors  AggregateFunction(uniq, FixedString(16)),
    hits      AggregateFunction(count),
    sig       AggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(hour)
ORDER BY (site, hour, name, pathname, hostname)
SETTINGS index_granularity = 256;
CREATE MATERIALIZED VIEW IF NOT EXISTS events_hourly_mv TO events_hourly AS
SELECT site, toStartOfHour(timestamp) AS hour, name, pathname, hostname,
       uniqState(visitor_id) AS visitors, countState() AS hits,
       sumState(cityHash64(timestamp, visitor_id, name, pathname)) AS sig
FROM events
WHERE bot = ''
GROUP BY site, hour, name, pathname, hostname;
CREATE TABLE IF NOT EXISTS visits
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
    device_model    String
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(day)
ORDER BY (site, day, build, start)
SETTINGS index_granularity = 8192;
CREATE TABLE IF NOT EXISTS visit_builds
(
    day      Date,
    build    UInt64,
    events   UInt64,
    built_at DateTime,
    cut      DateTime
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, build)
SETTINGS index_granularity = 8192;
CREATE TABLE IF NOT EXISTS visit_open
(
    site       String,
    day        Date,
    build      UInt64,
    visitor_id FixedString(16),
    since      DateTime
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(day)
ORDER BY (site, day, build, visitor_id)
SETTINGS index_granularity = 8192;
