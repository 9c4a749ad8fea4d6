-- 019_people: the people who read and manage a deployment (schemas/src/people.rs): accounts,
-- their roles per site, their sessions, invitations, and the audit log of who changed what.
-- Shared by every aggregator of a deployment through ClickHouse like the site registry, so a
-- login on one aggregator behind a load balancer is a session on all of them.
--
-- users, memberships, sessions, invitations are append-only and versioned like the registry's
-- tables (010_registry.sql): a change inserts a whole new row with a higher `version`; readers
-- keep the newest row per key with argMax(…, version) … GROUP BY key.
--
-- users: one account per e-mail address (lower-cased). password_hash is an Argon2id PHC
-- string; totp_secret the base32 secret of an enabled second factor ('' = none); recovery is
-- a JSON array of blake3 hashes of the unused recovery codes; sessions made before
-- sessions_after are void ("log out everywhere", removal); locked_until ends a lock-out after
-- failed logins (Unix seconds, 0 = not locked).
CREATE TABLE IF NOT EXISTS users
(
    id             String,
    email          String,
    password_hash  String,
    totp_secret    String,
    recovery       String,
    sessions_after DateTime,
    locked_until   DateTime,
    created_at     DateTime,
    deleted        UInt8,
    version        UInt64
)
ENGINE = MergeTree
ORDER BY (id, version);
-- memberships: a person's role on one site (`site` = '*': every site, the deployment's owners).
-- role is owner, admin or viewer; deleted = 1 removes it.
CREATE TABLE IF NOT EXISTS memberships
(
    user_id  String,
    site     String,
    role     String,
    deleted  UInt8,
    version  UInt64
)
ENGINE = MergeTree
ORDER BY (user_id, site, version);
-- sessions: server-side login sessions. Only blake3(token) is stored; the token lives in the
-- browser's HttpOnly cookie. A session is void when revoked, expired, made before its user's
-- sessions_after, or its user is deleted.
CREATE TABLE IF NOT EXISTS sessions
(
    id          String,
    token_hash  String,
    user_id     String,
    created_at  DateTime,
    expires_at  DateTime,
    revoked     UInt8,
    version     UInt64
)
ENGINE = MergeTree
ORDER BY (id, version);
-- invitations: one-time expiring links to join a site with a role (the owner's first-run setup
-- link is one too: site '*', role owner, email ''). Only blake3(token) is stored; used = 1 once
-- accepted (or withdrawn).
CREATE TABLE IF NOT EXISTS invitations
(
    id          String,
    token_hash  String,
    email       String,
    site        String,
    role        String,
    invited_by  String,
    created_at  DateTime,
    expires_at  DateTime,
    used        UInt8,
    version     UInt64
)
ENGINE = MergeTree
ORDER BY (id, version);
-- audit_log: who changed what (settings, retention, DNT, keys, links, people, accounts), one
-- row per change, never visitor data: actor is a user's e-mail or 'admin token', detail a short
-- JSON description of the change (settings as set, ids and names of keys, roles).
CREATE TABLE IF NOT EXISTS audit_log
(
    at      DateTime,
    id      String,
    actor   String,
    site    String,
    action  String,
    detail  String
)
ENGINE = MergeTree
ORDER BY (site, at, id);
