-- 018_ingest_keys: write-only ingest keys, one site each (schemas/src/registry.rs). A server that
-- forwards its visitors' hits to POST /v1/events sends one (`Authorization: Bearer vi_…`) to be
-- allowed to set the events' `ip`, `user_agent` and a back-dated `timestamp`; without one only
-- --trusted-sender networks may (collector/src/routes/native.rs). A table of its own, apart from
-- site_keys, so an ingest key can never be taken for a read key (nor a read key for an ingest
-- key) by any version of the aggregator. Append-only and versioned like the other registry
-- tables: only blake3(key) is stored (hex); the key itself is shown once, when it is created.
CREATE TABLE IF NOT EXISTS ingest_keys
(
    id         String,
    key_hash   String,
    site       String,
    name       String,
    created_at DateTime,
    revoked    UInt8,
    version    UInt64
)
ENGINE = MergeTree
ORDER BY (id, version);
