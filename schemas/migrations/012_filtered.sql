-- 012_filtered: how many events of each site Veil chose not to store, by reason and UTC hour
-- (bots by kind, opt-outs through GPC/DNT/an app's switch, the site's rate limit), for the
-- dashboard's "filtered traffic" panel. Counts only: no visitor hash, no page, no time finer
-- than the hour. Each collector adds its counts every few seconds; SummingMergeTree adds rows
-- of the same key together, and readers use sum() so unmerged rows count right too. `flush` is
-- a random number per flush, read by nobody: in cluster mode the Replicated table drops an
-- inserted block identical to a recent one, and two flushes with the same counts are not
-- the same counts.
CREATE TABLE IF NOT EXISTS filtered_hourly
(
    site   String,
    hour   DateTime,
    reason String,
    events UInt64,
    flush  UInt64
)
ENGINE = SummingMergeTree(events)
PARTITION BY toYYYYMMDD(hour)
ORDER BY (site, hour, reason)
SETTINGS index_granularity = 8192;
