-- 015_today_snapshots: the current day's per-dimension rows of one site as they stood a few
-- seconds ago, finished (plain numbers, no `uniq` state), so the reports of a dashboard read
-- today as cheaply as a closed day. Without them each report of the day merges today's build
-- (visits_daily_partial, 014) with the hits after its cut on its own, and that merge is most
-- of a report's time.
--
-- today_daily: columns of visits_daily (013) without the state, plus `snap`, the moment the
-- snapshot stands at, and `id`, a random number naming it (two processes may take one in the
-- same second). `uv` is the day's distinct visitors of the value: the build's visitors
-- before the cut merged with those after it, up to `snap`. A snapshot is written from a build
-- (day, build) the aggregator trusts, in one INSERT, then recorded in today_snaps; readers
-- use only recorded snapshots, only for the build they were made from, only while they are
-- fresh (the aggregator's `--today-snapshot-secs`) and miss at most a thousandth of the
-- day's hits (else they read the day live, exactly). Older snapshots of the site and day
-- are deleted a while after a newer one is recorded.
CREATE TABLE IF NOT EXISTS today_daily
(
    site      String,
    day       Date,
    build     UInt64,
    snap      DateTime,
    id        UInt64,
    dim       String,
    value     String,
    uv        UInt64,
    visits    UInt64,
    pageviews UInt64,
    events    UInt64,
    bounces   UInt64,
    duration  UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(day)
ORDER BY (site, dim, day, build, snap, id, value)
SETTINGS index_granularity = 256;
-- today_snaps: one row per complete snapshot (site, day, build, snap, id), with the site's rows
-- in events_recent from the build's cut on (`tail`) and its hits of the day (`hits`), both
-- counted before the snapshot was computed: a reader compares `tail` with the count now to
-- know how many hits the snapshot may miss.
CREATE TABLE IF NOT EXISTS today_snaps
(
    site  String,
    day   Date,
    build UInt64,
    snap  DateTime,
    id    UInt64,
    tail  UInt64,
    hits  UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(day)
ORDER BY (site, day, build, snap);
