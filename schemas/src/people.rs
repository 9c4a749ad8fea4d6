//! The people of a deployment, shared through ClickHouse with the site registry: accounts
//! (e-mail, Argon2id password hash, optional TOTP second factor and recovery codes), their
//! roles per site, server-side login sessions, one-time invitations (the owner's first-run
//! setup link is one), and the audit log of who changed what.
//!
//! Storage (migration `019_people.sql`): `users`, `memberships`, `sessions` and `invitations`
//! are append-only and versioned exactly like the registry's tables (a change inserts a whole
//! row with a higher version; readers keep the newest per key), loaded into the registry's
//! [`Snapshot`](crate::registry::Snapshot) with the sites and keys and refreshed with them, so
//! every aggregator behind a load balancer knows a session made on another one within one
//! refresh (the aggregator reloads at once, rate-limited, when a cookie it does not know
//! arrives). Expired or revoked sessions and used or expired invitations are not loaded.
//! `audit_log` is insert-only and read on demand (`Registry::audit_log`; the writes are
//! `Registry` methods in `registry.rs`).
//!
//! Secrets: session tokens (`vs_` + 64 hex digits) and invitation tokens (`vn_` + 64 hex
//! digits) are random and stored only as blake3 hashes; recovery codes likewise. The TOTP
//! secret has to be readable to check a code, so it is stored as is: whoever can read the
//! `users` table can also read every raw event, so it guards nothing more by being encrypted
//! with a key kept beside it.
//!
//! Roles ([`Role`]): `owner` (everything on the site, incl. deleting it and its people),
//! `admin` (settings, goals, keys, links, people below owner), `viewer` (dashboards, exports).
//! A membership on [`ALL_SITES`] (`*`) is that role on every site, present and future: the
//! deployment's owners (who may also create sites) have one.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::sql::{Run as _, Sql};
use crate::Error;

/// The `site` of a membership on every site.
pub const ALL_SITES: &str = "*";

/// What a person may do on a site; ordered: `Viewer < Admin < Owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads dashboards, exports, opens shared links.
    Viewer,
    /// Also changes settings, goals, keys, links and people (below owner).
    Admin,
    /// Everything, including deleting the site and making owners.
    Owner,
}

impl Role {
    /// Its stored and wire name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// Parses a stored or wire name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
}

/// One account (the newest version of its row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Public id.
    pub id: String,
    /// Lower-cased e-mail address (unique among live accounts).
    pub email: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Base32 TOTP secret of an enabled second factor; empty: none.
    pub totp_secret: String,
    /// blake3 hashes (hex) of the unused recovery codes.
    pub recovery: Vec<String>,
    /// Sessions made before this (Unix seconds) are void.
    pub sessions_after: u32,
    /// Logins are refused until this (Unix seconds); 0: not locked.
    pub locked_until: u32,
    /// Unix seconds.
    pub created_at: u32,
    /// Removed from the deployment.
    pub deleted: bool,
    /// Version of this row.
    pub version: u64,
}

/// One person's role on one site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The person.
    pub user_id: String,
    /// A site's domain, or [`ALL_SITES`].
    pub site: String,
    /// The role.
    pub role: Role,
    /// Removed.
    pub deleted: bool,
    /// Version of this row.
    pub version: u64,
}

/// One login session (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Public id.
    pub id: String,
    /// blake3 of the token, hex.
    pub token_hash: String,
    /// Whose.
    pub user_id: String,
    /// Unix seconds.
    pub created_at: u32,
    /// Unix seconds after which it opens nothing.
    pub expires_at: u32,
    /// Logged out.
    pub revoked: bool,
    /// Version of this row.
    pub version: u64,
}

/// One invitation (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationRecord {
    /// Public id.
    pub id: String,
    /// blake3 of the token, hex.
    pub token_hash: String,
    /// Who is invited (lower-cased); empty: whoever opens it says (the setup link).
    pub email: String,
    /// A site's domain, or [`ALL_SITES`].
    pub site: String,
    /// The role it grants.
    pub role: Role,
    /// Who made it (an e-mail, or `admin token`, or `setup`).
    pub invited_by: String,
    /// Unix seconds.
    pub created_at: u32,
    /// Unix seconds after which it opens nothing.
    pub expires_at: u32,
    /// Accepted or withdrawn.
    pub used: bool,
    /// Version of this row.
    pub version: u64,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, clickhouse::Row, Deserialize)]
pub struct AuditEntry {
    /// Unix seconds.
    pub at: u32,
    /// Random id (orders entries of the same second).
    pub id: String,
    /// Who: a user's e-mail, `admin token`, or `veil CLI`.
    pub actor: String,
    /// The site concerned, or [`ALL_SITES`] for the deployment.
    pub site: String,
    /// What, e.g. `site.update`, `key.create`, `person.invite`.
    pub action: String,
    /// A short JSON description (settings as set, ids, names, roles): never visitor data.
    pub detail: String,
}

/// The people part of a registry snapshot.
#[derive(Debug, Clone, Default)]
pub struct People {
    pub(crate) users: HashMap<String, UserRecord>,
    pub(crate) memberships: HashMap<(String, String), Membership>,
    pub(crate) sessions: HashMap<String, SessionRecord>,
    pub(crate) invitations: HashMap<String, InvitationRecord>,
    users_by_email: HashMap<String, String>,
    sessions_by_hash: HashMap<String, String>,
    invitations_by_hash: HashMap<String, String>,
}

impl People {
    pub(crate) fn index(&mut self) {
        self.users_by_email = self
            .users
            .values()
            .filter(|u| !u.deleted)
            .map(|u| (u.email.clone(), u.id.clone()))
            .collect();
        self.sessions_by_hash = self
            .sessions
            .values()
            .map(|s| (s.token_hash.clone(), s.id.clone()))
            .collect();
        self.invitations_by_hash = self
            .invitations
            .values()
            .map(|i| (i.token_hash.clone(), i.id.clone()))
            .collect();
    }

    pub(crate) fn merge_newer(&mut self, other: &People) {
        fn merge<K: Clone + Eq + std::hash::Hash, V: Clone>(
            mine: &mut HashMap<K, V>,
            theirs: &HashMap<K, V>,
            version: impl Fn(&V) -> u64,
        ) {
            for (k, v) in theirs {
                if mine.get(k).is_none_or(|m| version(m) < version(v)) {
                    mine.insert(k.clone(), v.clone());
                }
            }
        }
        merge(&mut self.users, &other.users, |u| u.version);
        merge(&mut self.memberships, &other.memberships, |m| m.version);
        merge(&mut self.sessions, &other.sessions, |s| s.version);
        merge(&mut self.invitations, &other.invitations, |i| i.version);
        self.index();
    }

    /// A live account by id.
    pub fn user(&self, id: &str) -> Option<&UserRecord> {
        self.users.get(id).filter(|u| !u.deleted)
    }

    /// A live account by e-mail (any case).
    pub fn user_by_email(&self, email: &str) -> Option<&UserRecord> {
        self.users_by_email
            .get(&email.trim().to_ascii_lowercase())
            .and_then(|id| self.user(id))
    }

    /// True while no live account exists (the first-run setup is open).
    pub fn is_empty(&self) -> bool {
        !self.users.values().any(|u| !u.deleted)
    }

    /// True if some live account owns every site: the deployment has an owner.
    pub fn has_owner(&self) -> bool {
        self.memberships.values().any(|m| {
            !m.deleted
                && m.site == ALL_SITES
                && m.role == Role::Owner
                && self.user(&m.user_id).is_some()
        })
    }

    /// A person's roles: `(site or "*", role)`, sorted by site.
    pub fn roles_of(&self, user_id: &str) -> Vec<(String, Role)> {
        let mut v: Vec<(String, Role)> = self
            .memberships
            .values()
            .filter(|m| !m.deleted && m.user_id == user_id)
            .map(|m| (m.site.clone(), m.role))
            .collect();
        v.sort();
        v
    }

    /// The people with a role on `site` itself (not through `*`), sorted by e-mail.
    pub fn members_of(&self, site: &str) -> Vec<(&UserRecord, Role)> {
        let mut v: Vec<(&UserRecord, Role)> = self
            .memberships
            .values()
            .filter(|m| !m.deleted && m.site == site)
            .filter_map(|m| self.user(&m.user_id).map(|u| (u, m.role)))
            .collect();
        v.sort_by(|a, b| a.0.email.cmp(&b.0.email));
        v
    }

    /// A live membership.
    pub fn membership(&self, user_id: &str, site: &str) -> Option<&Membership> {
        self.memberships
            .get(&(user_id.to_string(), site.to_string()))
            .filter(|m| !m.deleted)
    }

    /// The session whose token's blake3 hash (hex) is `hash` (revoked or expired ones too,
    /// until the next load drops them: check them).
    pub fn session_by_hash(&self, hash: &str) -> Option<&SessionRecord> {
        self.sessions_by_hash
            .get(hash)
            .and_then(|id| self.sessions.get(id))
    }

    /// A person's sessions that are neither revoked nor past `now` (Unix seconds).
    pub fn sessions_of(&self, user_id: &str, now: u32) -> Vec<&SessionRecord> {
        self.sessions
            .values()
            .filter(|s| s.user_id == user_id && !s.revoked && s.expires_at > now)
            .collect()
    }

    /// The invitation whose token's blake3 hash (hex) is `hash`.
    pub fn invitation_by_hash(&self, hash: &str) -> Option<&InvitationRecord> {
        self.invitations_by_hash
            .get(hash)
            .and_then(|id| self.invitations.get(id))
    }

    /// An invitation by id.
    pub fn invitation(&self, id: &str) -> Option<&InvitationRecord> {
        self.invitations.get(id)
    }

    /// The open invitations to `site` (not used, not past `now`), oldest first.
    pub fn invitations_of(&self, site: &str, now: u32) -> Vec<&InvitationRecord> {
        let mut v: Vec<&InvitationRecord> = self
            .invitations
            .values()
            .filter(|i| i.site == site && !i.used && i.expires_at > now)
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        v
    }
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
pub(crate) struct UserRow {
    pub(crate) id: String,
    pub(crate) email: String,
    pub(crate) password_hash: String,
    pub(crate) totp_secret: String,
    pub(crate) recovery: String,
    pub(crate) sessions_after: u32,
    pub(crate) locked_until: u32,
    pub(crate) created_at: u32,
    pub(crate) deleted: u8,
    pub(crate) version: u64,
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
pub(crate) struct MembershipRow {
    pub(crate) user_id: String,
    pub(crate) site: String,
    pub(crate) role: String,
    pub(crate) deleted: u8,
    pub(crate) version: u64,
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
pub(crate) struct SessionRow {
    pub(crate) id: String,
    pub(crate) token_hash: String,
    pub(crate) user_id: String,
    pub(crate) created_at: u32,
    pub(crate) expires_at: u32,
    pub(crate) revoked: u8,
    pub(crate) version: u64,
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
pub(crate) struct InvitationRow {
    pub(crate) id: String,
    pub(crate) token_hash: String,
    pub(crate) email: String,
    pub(crate) site: String,
    pub(crate) role: String,
    pub(crate) invited_by: String,
    pub(crate) created_at: u32,
    pub(crate) expires_at: u32,
    pub(crate) used: u8,
    pub(crate) version: u64,
}

impl From<&UserRecord> for UserRow {
    fn from(u: &UserRecord) -> Self {
        Self {
            id: u.id.clone(),
            email: u.email.clone(),
            password_hash: u.password_hash.clone(),
            totp_secret: u.totp_secret.clone(),
            recovery: serde_json::to_string(&u.recovery).unwrap_or_else(|_| "[]".into()),
            sessions_after: u.sessions_after,
            locked_until: u.locked_until,
            created_at: u.created_at,
            deleted: u8::from(u.deleted),
            version: u.version,
        }
    }
}

impl From<UserRow> for UserRecord {
    fn from(r: UserRow) -> Self {
        Self {
            id: r.id,
            email: r.email,
            password_hash: r.password_hash,
            totp_secret: r.totp_secret,
            recovery: serde_json::from_str(&r.recovery).unwrap_or_default(),
            sessions_after: r.sessions_after,
            locked_until: r.locked_until,
            created_at: r.created_at,
            deleted: r.deleted != 0,
            version: r.version,
        }
    }
}

impl From<&SessionRecord> for SessionRow {
    fn from(s: &SessionRecord) -> Self {
        Self {
            id: s.id.clone(),
            token_hash: s.token_hash.clone(),
            user_id: s.user_id.clone(),
            created_at: s.created_at,
            expires_at: s.expires_at,
            revoked: u8::from(s.revoked),
            version: s.version,
        }
    }
}

impl From<&InvitationRecord> for InvitationRow {
    fn from(i: &InvitationRecord) -> Self {
        Self {
            id: i.id.clone(),
            token_hash: i.token_hash.clone(),
            email: i.email.clone(),
            site: i.site.clone(),
            role: i.role.name().to_string(),
            invited_by: i.invited_by.clone(),
            created_at: i.created_at,
            expires_at: i.expires_at,
            used: u8::from(i.used),
            version: i.version,
        }
    }
}

/// Loads the current people (one query per table); `saw` is told every version read.
pub(crate) async fn load(client: &clickhouse::Client, saw: impl Fn(u64)) -> Result<People, Error> {
    let users: Vec<UserRow> = client
        .sql(&Sql::new(
            "SELECT id, argMax(email, version) AS e, argMax(password_hash, version) AS p, \
             argMax(totp_secret, version) AS t, argMax(recovery, version) AS r, \
             argMax(sessions_after, version) AS sa, argMax(locked_until, version) AS l, \
             argMax(created_at, version) AS c, argMax(deleted, version) AS d, \
             max(version) AS v FROM users GROUP BY id",
        ))
        .fetch_all()
        .await?;
    let memberships: Vec<MembershipRow> = client
        .sql(&Sql::new(
            "SELECT user_id, site, argMax(role, version) AS r, argMax(deleted, version) AS d, \
             max(version) AS v FROM memberships GROUP BY user_id, site",
        ))
        .fetch_all()
        .await?;
    let sessions: Vec<SessionRow> = client
        .sql(&Sql::new(
            "SELECT id, argMax(token_hash, version) AS h, argMax(user_id, version) AS u, \
             argMax(created_at, version) AS c, argMax(expires_at, version) AS e, \
             argMax(revoked, version) AS r, max(version) AS v FROM sessions GROUP BY id \
             HAVING e > now() AND r = 0",
        ))
        .fetch_all()
        .await?;
    let invitations: Vec<InvitationRow> = client
        .sql(&Sql::new(
            "SELECT id, argMax(token_hash, version) AS h, argMax(email, version) AS em, \
             argMax(site, version) AS st, argMax(role, version) AS r, \
             argMax(invited_by, version) AS b, argMax(created_at, version) AS c, \
             argMax(expires_at, version) AS e, argMax(used, version) AS u, \
             max(version) AS v FROM invitations GROUP BY id HAVING e > now() AND u = 0",
        ))
        .fetch_all()
        .await?;
    let mut p = People::default();
    for r in users {
        saw(r.version);
        p.users.insert(r.id.clone(), r.into());
    }
    for r in memberships {
        saw(r.version);
        let Some(role) = Role::parse(&r.role) else {
            tracing::warn!(role = %r.role, "ignoring a membership with an unknown role");
            continue;
        };
        p.memberships.insert(
            (r.user_id.clone(), r.site.clone()),
            Membership {
                user_id: r.user_id,
                site: r.site,
                role,
                deleted: r.deleted != 0,
                version: r.version,
            },
        );
    }
    for r in sessions {
        saw(r.version);
        p.sessions.insert(
            r.id.clone(),
            SessionRecord {
                id: r.id,
                token_hash: r.token_hash,
                user_id: r.user_id,
                created_at: r.created_at,
                expires_at: r.expires_at,
                revoked: r.revoked != 0,
                version: r.version,
            },
        );
    }
    for r in invitations {
        saw(r.version);
        let Some(role) = Role::parse(&r.role) else {
            continue;
        };
        p.invitations.insert(
            r.id.clone(),
            InvitationRecord {
                id: r.id,
                token_hash: r.token_hash,
                email: r.email,
                site: r.site,
                role,
                invited_by: r.invited_by,
                created_at: r.created_at,
                expires_at: r.expires_at,
                used: r.used != 0,
                version: r.version,
            },
        );
    }
    p.index();
    Ok(p)
}

/// A checked e-mail address, lower-cased: something@host, at most 254 bytes, no spaces or
/// control characters. The error names the field.
pub fn normalize_email(s: &str) -> Result<String, Error> {
    let e = s.trim().to_ascii_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, host)| {
            !local.is_empty()
                && host.contains('.')
                && !host.starts_with('.')
                && !host.ends_with('.')
        })
        && e.matches('@').count() == 1
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(e)
    } else {
        Err(Error::Invalid(format!(
            "`email` {s:?} is not an e-mail address (expected name@example.com)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_and_parse() {
        assert!(Role::Viewer < Role::Admin && Role::Admin < Role::Owner);
        for r in [Role::Viewer, Role::Admin, Role::Owner] {
            assert_eq!(Role::parse(r.name()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn emails_are_checked_and_lower_cased() {
        assert_eq!(
            normalize_email(" Ana@Example.COM ").unwrap(),
            "ana@example.com"
        );
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "a b@example.com",
            "a@b@c.com",
            "ana@localhost",
        ] {
            let e = normalize_email(bad).unwrap_err().to_string();
            assert!(e.contains("`email`"), "{bad}: {e}");
        }
    }
}
