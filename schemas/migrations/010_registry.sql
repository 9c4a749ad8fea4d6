-- 010_registry: the site registry, per-site read-only API keys and shared links, shared by every
-- collector and aggregator of a deployment through ClickHouse (see schemas/src/registry.rs).
--
-- All three tables are append-only and versioned: a change (create, update, delete, revoke)
-- inserts a whole new row with a higher `version`; readers take the newest row per key with
-- argMax(…, version) … GROUP BY key. Nothing relies on background merges, and the tables stay
-- tiny (one row per change made through the admin API).
--
-- sites: one row per change of a site. `deleted` = 1 unregisters it. `settings` is the site's
-- settings as JSON (aliases, timezone, retention_days, child_directed, honor_dnt, keep_bots,
-- min_visitors, goals, funnels).
CREATE TABLE IF NOT EXISTS sites
(
    domain     String,
    version    UInt64,
    deleted    UInt8,
    settings   String,
    updated_at DateTime
)
ENGINE = MergeTree
ORDER BY (domain, version);
-- site_keys: read-only Stats API keys, one site each. Only blake3(key) is stored (hex); the key
-- itself is shown once, when it is created.
CREATE TABLE IF NOT EXISTS site_keys
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
-- shared_links: read-only links to one site's dashboard. Only blake3(token) is stored (hex); the
-- optional password only as an Argon2id PHC string; expires_at 0 = never.
CREATE TABLE IF NOT EXISTS shared_links
(
    id            String,
    token_hash    String,
    site          String,
    name          String,
    password_hash String,
    expires_at    DateTime,
    created_at    DateTime,
    revoked       UInt8,
    version       UInt64
)
ENGINE = MergeTree
ORDER BY (id, version);
