//! A person's e-mails about a site: the weekly and the monthly digest and traffic-spike
//! notifications — which person wants which, the hashes of the unsubscribe tokens of the
//! e-mails sent, and which week and month were sent last and when the last spike was.
//!
//! Storage (migrations `021_digests.sql`, `022_digest_options.sql`): `digests`, append-only and versioned like the people
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
    /// The weekly digest (false once unsubscribed).
    pub subscribed: bool,
    /// The monthly digest.
    pub monthly: bool,
    /// Spike notifications from this many current visitors on; 0 none.
    pub spike_threshold: u32,
    /// blake3 hashes of the unsubscribe tokens of the newest e-mails, newest first.
    pub token_hashes: Vec<String>,
    /// The first day (`YYYY-MM-DD`, the site's time zone) of the last week sent; '' none yet.
    pub last_sent: String,
    /// The first day of the last month sent; '' none yet.
    pub last_sent_month: String,
    /// When the last spike notification was sent (Unix seconds); 0 never.
    pub last_spike: u32,
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
    monthly: u8,
    last_sent_month: String,
    spike_threshold: u32,
    last_spike: u32,
}

impl From<DigestRow> for DigestRecord {
    fn from(r: DigestRow) -> Self {
        Self {
            user_id: r.user_id,
            site: r.site,
            subscribed: r.subscribed != 0,
            monthly: r.monthly != 0,
            spike_threshold: r.spike_threshold,
            token_hashes: serde_json::from_str(&r.token_hashes).unwrap_or_default(),
            last_sent: r.last_sent,
            last_sent_month: r.last_sent_month,
            last_spike: r.last_spike,
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
                 max(version) AS v, argMax(monthly, version) AS m, \
                 argMax(last_sent_month, version) AS lm, argMax(spike_threshold, version) AS st, \
                 argMax(last_spike, version) AS ls FROM digests {} GROUP BY user_id, site \
                 ORDER BY site, user_id",
                filter
            ))
            .fetch_all()
            .await?;
        Ok(rows.into_iter().map(DigestRecord::from).collect())
    }

    /// The subscription (any e-mail still asked for) an unsubscribe token of one of its
    /// newest e-mails opens.
    pub async fn digest_by_token(&self, token: &str) -> Result<Option<DigestRecord>, Error> {
        let h = secret_hash(token);
        Ok(self
            .digests()
            .await?
            .into_iter()
            .find(|d| d.wants_mail() && d.token_hashes.contains(&h)))
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
            monthly: u8::from(rec.monthly),
            last_sent_month: rec.last_sent_month.clone(),
            spike_threshold: rec.spike_threshold,
            last_spike: rec.last_spike,
        };
        let mut ins = self.client().insert::<DigestRow>("digests").await?;
        ins.write(&row).await?;
        ins.end().await?;
        Ok(rec)
    }

    /// Makes `token` (only its hash is stored) an unsubscribe token of `rec`, before the
    /// e-mail that carries it is sent: its link works from the moment the e-mail exists.
    pub async fn digest_token(
        &self,
        mut rec: DigestRecord,
        token: &str,
    ) -> Result<DigestRecord, Error> {
        rec.token_hashes.insert(0, secret_hash(token));
        self.put_digest(rec).await
    }

    /// Records that `what` was sent to `rec`'s person (after the relay took the e-mail).
    pub async fn digest_sent(
        &self,
        mut rec: DigestRecord,
        what: Sent,
    ) -> Result<DigestRecord, Error> {
        match what {
            Sent::Week(first) => rec.last_sent = first,
            Sent::Month(first) => rec.last_sent_month = first,
            Sent::Spike(at) => rec.last_spike = at,
        }
        self.put_digest(rec).await
    }
}

/// What an e-mail reported, as [`Registry::digest_sent`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The weekly digest of the week starting that day (`YYYY-MM-DD`).
    Week(String),
    /// The monthly digest of the month starting that day.
    Month(String),
    /// A spike notification, sent at that time (Unix seconds).
    Spike(u32),
}

impl DigestRecord {
    /// Whether the person still asks for any e-mail about the site.
    pub fn wants_mail(&self) -> bool {
        self.subscribed || self.monthly || self.spike_threshold > 0
    }
}

/// A new unsubscribe token (`vu_` + 64 hex digits).
pub fn new_token() -> Result<String, Error> {
    Ok(format!("vu_{}", random_hex(32)?))
}
