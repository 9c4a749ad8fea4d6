//! Weekly digest subscriptions: which person wants which site's weekly e-mail, the hashes of
//! the unsubscribe tokens of the digests sent, and which week was sent last.
//!
//! Storage (migration `021_digests.sql`): `digests`, append-only and versioned like the people
//! tables ([`crate::people`]): a change inserts a whole row with a higher version; readers keep
//! the newest per `(user_id, site)`. Read on demand (a few rows per person; the scheduler reads
//! them once a minute), not cached in the registry's snapshot. Unsubscribe tokens (`vu_` + 64
//! hex digits) are random, one per e-mail, and stored only as blake3 hashes
//! ([`crate::registry::secret_hash`]); the newest [`KEPT_TOKENS`] stay valid.

use serde::{Deserialize, Serialize};

use crate::registry::{random_hex, secret_hash, Registry};
use crate::sql::{lit, Run as _, Sql};
use crate::{sql, Error};

/// How many of the newest e-mails' unsubscribe links keep working.
pub const KEPT_TOKENS: usize = 8;

/// One person's digest of one site.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DigestRecord {
    /// The person (`users.id`).
    pub user_id: String,
    /// The site's domain.
    pub site: String,
    /// False once unsubscribed.
    pub subscribed: bool,
    /// blake3 hashes of the unsubscribe tokens of the newest e-mails, newest first.
    pub token_hashes: Vec<String>,
    /// The first day (`YYYY-MM-DD`, the site's time zone) of the last week sent; '' none yet.
    pub last_sent: String,
    /// Row version.
    pub version: u64,
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct DigestRow {
    user_id: String,
    site: String,
    subscribed: u8,
    token_hashes: String,
    last_sent: String,
    version: u64,
}

impl From<DigestRow> for DigestRecord {
    fn from(r: DigestRow) -> Self {
        Self {
            user_id: r.user_id,
            site: r.site,
            subscribed: r.subscribed != 0,
            token_hashes: serde_json::from_str(&r.token_hashes).unwrap_or_default(),
            last_sent: r.last_sent,
            version: r.version,
        }
    }
}

/// Digest subscriptions (the writes and reads of `digests`).
impl Registry {
    /// Every person's newest digest row (subscribed or not), by site then person.
    pub async fn digests(&self) -> Result<Vec<DigestRecord>, Error> {
        self.digests_where(Sql::new("")).await
    }

    /// `user_id`'s digest of `site`, if they ever subscribed.
    pub async fn digest(&self, user_id: &str, site: &str) -> Result<Option<DigestRecord>, Error> {
        Ok(self
            .digests_where(sql!(
                "WHERE user_id = {} AND site = {}",
                lit(user_id),
                lit(site)
            ))
            .await?
            .into_iter()
            .next())
    }

    async fn digests_where(&self, filter: Sql) -> Result<Vec<DigestRecord>, Error> {
        let rows: Vec<DigestRow> = self
            .client()
            .sql(&sql!(
                "SELECT user_id, site, argMax(subscribed, version) AS s, \
                 argMax(token_hashes, version) AS t, argMax(last_sent, version) AS l, \
                 max(version) AS v FROM digests {} GROUP BY user_id, site \
                 ORDER BY site, user_id",
                filter
            ))
            .fetch_all()
            .await?;
        Ok(rows.into_iter().map(DigestRecord::from).collect())
    }

    /// The subscribed digest an unsubscribe token of one of its newest e-mails opens.
    pub async fn digest_by_token(&self, token: &str) -> Result<Option<DigestRecord>, Error> {
        let h = secret_hash(token);
        Ok(self
            .digests()
            .await?
            .into_iter()
            .find(|d| d.subscribed && d.token_hashes.contains(&h)))
    }

    /// Stores a new version of `rec` (subscribe, unsubscribe, a week sent).
    pub async fn put_digest(&self, mut rec: DigestRecord) -> Result<DigestRecord, Error> {
        rec.version = self.next_version();
        rec.token_hashes.truncate(KEPT_TOKENS);
        let row = DigestRow {
            user_id: rec.user_id.clone(),
            site: rec.site.clone(),
            subscribed: u8::from(rec.subscribed),
            token_hashes: serde_json::to_string(&rec.token_hashes).unwrap_or_else(|_| "[]".into()),
            last_sent: rec.last_sent.clone(),
            version: rec.version,
        };
        let mut ins = self.client().insert::<DigestRow>("digests").await?;
        ins.write(&row).await?;
        ins.end().await?;
        Ok(rec)
    }

    /// Records that the week starting `week` (`YYYY-MM-DD`) was sent to `rec`'s person in an
    /// e-mail whose unsubscribe token is `token` (only its hash is stored).
    pub async fn digest_sent(
        &self,
        mut rec: DigestRecord,
        week: &str,
        token: &str,
    ) -> Result<DigestRecord, Error> {
        rec.token_hashes.insert(0, secret_hash(token));
        rec.last_sent = week.to_string();
        self.put_digest(rec).await
    }
}

/// A new unsubscribe token (`vu_` + 64 hex digits).
pub fn new_token() -> Result<String, Error> {
    Ok(format!("vu_{}", random_hex(32)?))
}
