-- 021_digests: weekly e-mail digests a person asked for, one row per (person, site)
-- (schemas/src/digests.rs; sent by aggregator/src/digest.rs). Account data, never visitor
-- data: who wants which site's published weekly numbers, and what was sent.
--
-- Append-only and versioned like the people tables (019_people.sql): a change inserts a whole
-- new row with a higher `version`; readers keep the newest row per (user_id, site).
-- subscribed = 0 ends the subscription. token_hashes is a JSON array of blake3 hashes of the
-- unsubscribe tokens of the last digests sent (newest first, at most 8): each e-mail carries
-- its own token and only its hash is stored. last_sent is the first day (YYYY-MM-DD, the
-- site's time zone) of the week the last digest reported, '' before the first: the scheduler
-- sends a week once, across restarts and aggregators that reload it.
CREATE TABLE IF NOT EXISTS digests
(
    user_id      String,
    site         String,
    subscribed   UInt8,
    token_hashes String,
    last_sent    String,
    version      UInt64
)
ENGINE = MergeTree
ORDER BY (user_id, site, version);
