-- 002_salts: the daily random salts that key the visitor hash, shared by every collector of a
-- deployment without another service.
--
-- Each collector makes sure the salt of today and of tomorrow exist: when a day has none it
-- inserts a random 32-byte salt with a random 64-bit nonce. Every collector then uses the
-- candidate with the lowest nonce, so all agree. Tomorrow's salt is created a day ahead, so by
-- the time it is used every insert for it has long finished.
--
-- Salts older than yesterday are dropped (DROP PARTITION, one partition per day), and
-- old_parts_lifetime = 1 removes the dropped parts from disk within seconds: after 48 hours no
-- one, including the operators, can recompute a visitor hash.
CREATE TABLE IF NOT EXISTS salts
(
    day        Date,
    salt       FixedString(32),
    nonce      UInt64,
    created_at DateTime
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(day)
ORDER BY (day, nonce)
SETTINGS index_granularity = 8192, old_parts_lifetime = 1;
