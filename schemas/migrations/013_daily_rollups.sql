-- 013_daily_rollups: daily rollups, so a 30-day report merges 30 states per row instead of 720.
-- Merging uniq states is what a rollup query spends its time on; hours stay for the edges of
-- a range that does not start or end at UTC midnight, and for hourly charts.
--
-- events_daily: events_hourly per UTC day (`day` is the UTC midnight starting it), kept
-- current by a materialized view; the rollup health check repairs closed days. `sig` as in
-- events_hourly (011).
--
-- visits_daily: each closed UTC day aggregated per dimension, written by the rollup job under
-- the same build number as the day's visits. `dim` = '' for the day's totals; the name of a
-- visit column such as `source` or `country_code` for the day's visits by that column's value;
-- `event:pathname`, `event:name`, `event:hostname` for the day's raw events (bots excluded) by
-- page, event name and host (those rows have visits, bounces and duration 0). `uv` is the
-- exact number of distinct visitor hashes of the day and value: hashes rotate at UTC midnight,
-- so visitors over a range of days are the sum of the days' `uv`, with no state to merge.
-- `visitors` keeps the uniq state, read only for the current day's build (whose visitors
-- are merged with those after its cut).
--
-- Small granules (256 rows) and PREWHERE on the key in every query: a granule read for one
-- row deserializes every uniq state in it, and big states are what cost.
CREATE TABLE IF NOT EXISTS events_daily
(
    site      String,
    day       DateTime,
    name      String,
    pathname  String,
    hostname  String,
    visitors  AggregateFunction(uniq, FixedString(16)),
    hits      AggregateFunction(count),
    sig       AggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(day)
ORDER BY (site, day, name, pathname, hostname)
SETTINGS index_granularity = 256;
CREATE MATERIALIZED VIEW IF NOT EXISTS events_daily_mv TO events_daily AS
SELECT site, toStartOfDay(timestamp, 'UTC') AS day, name, pathname, hostname,
       uniqState(visitor_id) AS visitors, countState() AS hits,
       sumState(cityHash64(timestamp, visitor_id, name, pathname)) AS sig
FROM events
WHERE bot = ''
GROUP BY site, day, name, pathname, hostname;
CREATE TABLE IF NOT EXISTS visits_daily
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
SETTINGS index_granularity = 256;
