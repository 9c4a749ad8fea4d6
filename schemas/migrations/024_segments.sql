-- 024_segments: saved filter sets ("segments") of a site, as the dashboard and the Stats API
-- use them (schemas/src/segments.rs; served by aggregator/src/segments.rs). owner = '' is a
-- site segment every reader of the site may use; otherwise the users.id of the one person who
-- may. filters is the Stats API filters array, JSON, checked before it is stored. Account data:
-- names and filters people chose, never visitor data.
--
-- Append-only and versioned like the people tables: a change inserts a whole row with a higher
-- `version`; readers keep the newest row per id; deleted = 1 removes the segment.
CREATE TABLE IF NOT EXISTS segments
(
    id          String,
    site        String,
    owner       String,
    name        String,
    filters     String,
    created_at  UInt32,
    deleted     UInt8,
    version     UInt64
)
ENGINE = MergeTree
ORDER BY (site, id, version);
