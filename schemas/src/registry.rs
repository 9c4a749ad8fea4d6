//! The site registry shared through ClickHouse: which sites exist and their settings, the
//! read-only Stats API keys of each site, the write-only ingest keys of each site, the
//! shared links to a site's dashboard, and the people who read and manage them
//! ([`crate::people`]: accounts, roles, sessions, invitations; loaded and refreshed with the rest).
//!
//! Every collector and aggregator of a deployment reads the same four tables (migrations
//! `010_registry.sql`, `018_ingest_keys.sql`) and keeps an in-memory [`Snapshot`], refreshed in the background every
//! [`DEFAULT_REFRESH`] ([`Registry::spawn_refresh`]); tests call [`Registry::refresh`]. A change
//! made through one process is seen by all within one refresh; the writing process sees it at
//! once (write-through).
//!
//! Storage: the tables are append-only. Every change inserts a whole new row (typed RowBinary
//! inserts: no value is ever pasted into SQL) with a higher `version` (wall-clock nanoseconds,
//! kept above every version seen); readers keep the newest row per key with
//! `argMax(…, version) … GROUP BY key`, so nothing depends on background merges. Two processes
//! changing the same site at the same moment: the higher version wins (last writer wins).
//!
//! A site's settings are stored as JSON in `sites.settings`:
//!
//! ```json
//! {"aliases":["0b6d…-umami-id","A-EU-1234567890"],"timezone":"Europe/Berlin",
//!  "retention_days":90,"child_directed":false,"honor_dnt":true,"keep_bots":false,
//!  "min_visitors":5,"goals":[…],"funnels":[…],"annotations":[{"date":"2026-11-20","text":"…"}]}
//! ```
//!
//! Goals and funnels are kept as JSON values; their shape ([`crate::policy::Goal`],
//! [`crate::policy::Funnel`]) and every other rule a site's settings must follow are checked
//! in one place, [`crate::policy`] ([`SiteSettings::validate`]), before they are stored. What
//! they mean in reports belongs to the aggregator.
//!
//! Keys and link tokens are random and stored only as blake3 hashes (hex); a shared link's
//! optional password only as the PHC string the aggregator made with a slow KDF. Read keys are
//! `vk_…`, ingest keys `vi_…`, link tokens `vl_…` (each 64 hex digits after the prefix); read
//! and ingest keys live in separate tables, so one can never be taken for the other.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::people::{
    self, AuditEntry, InvitationRecord, InvitationRow, Membership, MembershipRow, People, Role,
    SessionRecord, SessionRow, UserRecord, UserRow,
};
use crate::sql::{lit, lit_list, Run as _, Sql};
use crate::{policy, sql, ClickHouseConfig, Error};

pub use crate::policy::{DEFAULT_MIN_VISITORS, MAX_ALIAS_BYTES};

/// How often [`Registry::spawn_refresh`] reloads the tables by default.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(2);

/// Longest key or link name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 200;

/// Lower-cases a domain and trims a trailing dot; returns `None` unless it looks like a host
/// name (letters, digits, `-`, `_`, `.`; at most 253 bytes, labels at most 63).
pub fn normalize_domain(s: &str) -> Option<String> {
    let d = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then_some(d)
}

/// One site's settings, as stored (JSON) and as the admin API takes and returns them.
/// Missing fields take their defaults; unknown fields in stored JSON are ignored (a newer
/// version may have written them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SiteSettings {
    /// Other names senders use for the site: Umami website ids, Aptabase app keys
    /// (case-sensitive, as senders send them).
    pub aliases: Vec<String>,
    /// IANA time zone of the site's reports.
    pub timezone: String,
    /// Days raw events are kept (`None`: the deployment's `--retention-days`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    /// Child-directed: minimal collection, page views only in reports.
    pub child_directed: bool,
    /// Honour `DNT: 1` (GPC is always honoured).
    pub honor_dnt: bool,
    /// Store bot hits flagged instead of dropping them.
    pub keep_bots: bool,
    /// k: no published number describes fewer visitors.
    pub min_visitors: u64,
    /// Goals (shape: [`crate::policy::Goal`]).
    pub goals: Vec<Value>,
    /// Funnels (shape: [`crate::policy::Funnel`]).
    pub funnels: Vec<Value>,
    /// Dated notes on the charts (shape: [`crate::policy::Annotation`]).
    pub annotations: Vec<Value>,
    /// Differential privacy: ε one release of this site's reports spends (`None`: the
    /// deployment's `--epsilon-query`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epsilon_query: Option<f64>,
    /// Differential privacy: ε a credential may spend on this site per UTC day (`None`: the
    /// deployment's `--epsilon-day`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epsilon_day: Option<f64>,
    /// Differential privacy: the most revenue, in currency units, one visitor adds to a report
    /// per day (`None`: the deployment's bound, 1000). The noise on revenue metrics scales
    /// with it: a shop whose largest order is 49 sets 49 and gets answers twenty times tighter;
    /// a visitor's revenue above it is clamped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revenue_bound: Option<u64>,
}

impl Default for SiteSettings {
    fn default() -> Self {
        Self {
            aliases: Vec::new(),
            timezone: "UTC".into(),
            retention_days: None,
            child_directed: false,
            honor_dnt: true,
            keep_bots: false,
            min_visitors: DEFAULT_MIN_VISITORS,
            goals: Vec::new(),
            funnels: Vec::new(),
            annotations: Vec::new(),
            epsilon_query: None,
            epsilon_day: None,
            revenue_bound: None,
        }
    }
}

fn invalid(msg: String) -> Error {
    Error::Invalid(msg)
}

fn field<T: serde::de::DeserializeOwned>(name: &str, v: &Value) -> Result<T, Error> {
    serde_json::from_value(v.clone()).map_err(|e| invalid(format!("`{name}`: {e}")))
}

impl SiteSettings {
    /// The settings' field names, as the admin API takes them.
    pub const FIELDS: &'static [&'static str] = &[
        "aliases",
        "timezone",
        "retention_days",
        "child_directed",
        "honor_dnt",
        "keep_bots",
        "min_visitors",
        "goals",
        "funnels",
        "annotations",
        "epsilon_query",
        "epsilon_day",
        "revenue_bound",
    ];

    /// Parses the settings fields of an admin API request object strictly onto `base` (the
    /// values of fields the request leaves out): an unknown field or a value of the wrong
    /// type is an error naming the field. Keys in `ignore` (such as `domain`) are skipped.
    pub fn from_request(
        base: Self,
        obj: &Map<String, Value>,
        ignore: &[&str],
    ) -> Result<Self, Error> {
        let mut s = base;
        for (k, v) in obj {
            match k.as_str() {
                k if ignore.contains(&k) => {}
                "aliases" => s.aliases = field(k, v)?,
                "timezone" => s.timezone = field(k, v)?,
                "retention_days" => s.retention_days = field(k, v)?,
                "child_directed" => s.child_directed = field(k, v)?,
                "honor_dnt" => s.honor_dnt = field(k, v)?,
                "keep_bots" => s.keep_bots = field(k, v)?,
                "min_visitors" => s.min_visitors = field(k, v)?,
                "goals" => s.goals = field(k, v)?,
                "funnels" => s.funnels = field(k, v)?,
                "annotations" => s.annotations = field(k, v)?,
                "epsilon_query" => s.epsilon_query = field(k, v)?,
                "epsilon_day" => s.epsilon_day = field(k, v)?,
                "revenue_bound" => s.revenue_bound = field(k, v)?,
                other => {
                    return Err(invalid(format!(
                        "unknown field `{other}`; expected one of {}",
                        Self::FIELDS.join(", ")
                    )))
                }
            }
        }
        s.aliases = s.aliases.iter().map(|a| a.trim().to_string()).collect();
        Ok(s)
    }

    /// Checks every setting against the site policy ([`crate::policy`]: aliases, the time
    /// zone's spelling, retention, k, goals and funnels) and returns the goals and funnels,
    /// parsed. Whether ClickHouse knows the time zone is [`Registry::check_timezone`].
    pub fn validate(&self) -> Result<(Vec<policy::Goal>, Vec<policy::Funnel>), Error> {
        policy::check_aliases(&self.aliases)?;
        policy::check_timezone_name(&self.timezone)?;
        if let Some(d) = self.retention_days {
            policy::check_retention_days(d)?;
        }
        policy::check_min_visitors(self.min_visitors)?;
        if let Some(e) = self.epsilon_query {
            if !(e.is_finite() && e > 0.0 && e <= 10.0) {
                return Err(invalid(format!(
                    "`epsilon_query` must be above 0 and at most 10 (got {e})"
                )));
            }
        }
        if let Some(e) = self.epsilon_day {
            let q = self.epsilon_query.unwrap_or(f64::MIN_POSITIVE);
            if !(e.is_finite() && e > 0.0 && e >= q) {
                return Err(invalid(format!(
                    "`epsilon_day` must be above 0 and at least `epsilon_query` (got {e})"
                )));
            }
        }
        if let Some(b) = self.revenue_bound {
            if !(1..=1_000_000_000).contains(&b) {
                return Err(invalid(format!(
                    "`revenue_bound` must be a whole number of currency units from 1 to 1000000000 (got {b})"
                )));
            }
        }
        policy::check_annotations(&self.annotations)?;
        policy::check_goals(&self.goals, &self.funnels)
    }
}

/// One site as stored (the newest version of its row).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteRecord {
    /// The domain (normalised).
    pub domain: String,
    /// Settings.
    pub settings: SiteSettings,
    /// Unregistered (a tombstone; never returned by [`Snapshot::site`]).
    #[serde(skip)]
    pub deleted: bool,
    /// Version of this row.
    pub version: u64,
    /// When it was written (Unix seconds).
    pub updated_at: u32,
}

/// One read-only Stats API key, or one write-only ingest key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRecord {
    /// Public id (used to list and revoke).
    pub id: String,
    /// blake3 of the key, hex.
    #[serde(skip)]
    pub key_hash: String,
    /// The one site it reads (a read key) or writes (an ingest key).
    pub site: String,
    /// Free-text label.
    pub name: String,
    /// Unix seconds.
    pub created_at: u32,
    /// Revoked keys authenticate nothing.
    pub revoked: bool,
    /// Version of this row.
    #[serde(skip)]
    pub version: u64,
}

/// One shared link (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkRecord {
    /// Public id (used to list and revoke).
    pub id: String,
    /// blake3 of the token, hex.
    #[serde(skip)]
    pub token_hash: String,
    /// The one site it reads.
    pub site: String,
    /// Free-text label.
    pub name: String,
    /// PHC string of the password's slow hash; empty: no password.
    #[serde(skip)]
    pub password_hash: String,
    /// Unix seconds after which the link is refused; 0: never.
    pub expires_at: u32,
    /// Unix seconds.
    pub created_at: u32,
    /// Origins (`https://host[:port]`) its page may be embedded in; empty: none.
    pub embed_origins: Vec<String>,
    /// Revoked links open nothing.
    pub revoked: bool,
    /// Version of this row.
    #[serde(skip)]
    pub version: u64,
}

/// blake3 of a secret, hex: what the tables store for keys and link tokens.
pub fn secret_hash(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

/// Everything the registry holds, as of one load (plus this process's own writes since).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    sites: BTreeMap<String, SiteRecord>,
    keys: HashMap<String, KeyRecord>,
    links: HashMap<String, LinkRecord>,
    ingest_keys: HashMap<String, KeyRecord>,
    aliases: HashMap<String, String>,
    keys_by_hash: HashMap<String, String>,
    ingest_by_hash: HashMap<String, String>,
    links_by_hash: HashMap<String, String>,
    /// Accounts, roles, sessions and invitations ([`crate::people`]).
    pub people: People,
    /// Whether this came from a successful load (false: nothing loaded yet).
    pub loaded: bool,
}

impl Snapshot {
    fn index(&mut self) {
        self.people.index();
        self.aliases.clear();
        for s in self.sites.values().filter(|s| !s.deleted) {
            for a in &s.settings.aliases {
                self.aliases.insert(a.clone(), s.domain.clone());
            }
        }
        self.keys_by_hash = self
            .keys
            .values()
            .map(|k| (k.key_hash.clone(), k.id.clone()))
            .collect();
        self.links_by_hash = self
            .links
            .values()
            .map(|l| (l.token_hash.clone(), l.id.clone()))
            .collect();
        self.ingest_by_hash = self
            .ingest_keys
            .values()
            .map(|k| (k.key_hash.clone(), k.id.clone()))
            .collect();
    }

    /// A stored, registered site.
    pub fn site(&self, domain: &str) -> Option<&SiteRecord> {
        self.sites.get(domain).filter(|s| !s.deleted)
    }

    /// Every stored, registered site, sorted by domain.
    pub fn sites(&self) -> impl Iterator<Item = &SiteRecord> {
        self.sites.values().filter(|s| !s.deleted)
    }

    /// The stored site an alias names.
    pub fn alias(&self, alias: &str) -> Option<&str> {
        self.aliases.get(alias).map(String::as_str)
    }

    /// A key by id (revoked ones too).
    pub fn key(&self, id: &str) -> Option<&KeyRecord> {
        self.keys.get(id)
    }

    /// The key whose blake3 hash (hex) is `hash`.
    pub fn key_by_hash(&self, hash: &str) -> Option<&KeyRecord> {
        self.keys_by_hash.get(hash).and_then(|id| self.keys.get(id))
    }

    /// The keys of one site (revoked ones too), oldest first.
    pub fn keys_of(&self, site: &str) -> Vec<&KeyRecord> {
        let mut v: Vec<&KeyRecord> = self.keys.values().filter(|k| k.site == site).collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        v
    }

    /// An ingest key by id (revoked ones too).
    pub fn ingest_key(&self, id: &str) -> Option<&KeyRecord> {
        self.ingest_keys.get(id)
    }

    /// The ingest key whose blake3 hash (hex) is `hash`.
    pub fn ingest_key_by_hash(&self, hash: &str) -> Option<&KeyRecord> {
        self.ingest_by_hash
            .get(hash)
            .and_then(|id| self.ingest_keys.get(id))
    }

    /// The ingest keys of one site (revoked ones too), oldest first.
    pub fn ingest_keys_of(&self, site: &str) -> Vec<&KeyRecord> {
        let mut v: Vec<&KeyRecord> = self
            .ingest_keys
            .values()
            .filter(|k| k.site == site)
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        v
    }

    /// A shared link by id (revoked ones too).
    pub fn link(&self, id: &str) -> Option<&LinkRecord> {
        self.links.get(id)
    }

    /// The link whose token's blake3 hash (hex) is `hash`.
    pub fn link_by_hash(&self, hash: &str) -> Option<&LinkRecord> {
        self.links_by_hash
            .get(hash)
            .and_then(|id| self.links.get(id))
    }

    /// The shared links of one site (revoked ones too), oldest first.
    pub fn links_of(&self, site: &str) -> Vec<&LinkRecord> {
        let mut v: Vec<&LinkRecord> = self.links.values().filter(|l| l.site == site).collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        v
    }

    /// Keeps, for every key present in either, the newer version (used when a load raced
    /// with a write of this process).
    fn merge_newer(&mut self, other: &Snapshot) {
        for (k, v) in &other.sites {
            if self
                .sites
                .get(k)
                .is_none_or(|mine| mine.version < v.version)
            {
                self.sites.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in &other.keys {
            if self.keys.get(k).is_none_or(|mine| mine.version < v.version) {
                self.keys.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in &other.links {
            if self
                .links
                .get(k)
                .is_none_or(|mine| mine.version < v.version)
            {
                self.links.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in &other.ingest_keys {
            if self
                .ingest_keys
                .get(k)
                .is_none_or(|mine| mine.version < v.version)
            {
                self.ingest_keys.insert(k.clone(), v.clone());
            }
        }
        self.people.merge_newer(&other.people);
        self.index();
    }
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct SiteRow {
    domain: String,
    version: u64,
    deleted: u8,
    settings: String,
    updated_at: u32,
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct KeyRow {
    id: String,
    key_hash: String,
    site: String,
    name: String,
    created_at: u32,
    revoked: u8,
    version: u64,
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct LinkRow {
    id: String,
    token_hash: String,
    site: String,
    name: String,
    password_hash: String,
    expires_at: u32,
    created_at: u32,
    revoked: u8,
    version: u64,
    embed_origins: String,
}

impl From<&KeyRecord> for KeyRow {
    fn from(k: &KeyRecord) -> Self {
        Self {
            id: k.id.clone(),
            key_hash: k.key_hash.clone(),
            site: k.site.clone(),
            name: k.name.clone(),
            created_at: k.created_at,
            revoked: u8::from(k.revoked),
            version: k.version,
        }
    }
}

impl From<KeyRow> for KeyRecord {
    fn from(r: KeyRow) -> Self {
        Self {
            id: r.id,
            key_hash: r.key_hash,
            site: r.site,
            name: r.name,
            created_at: r.created_at,
            revoked: r.revoked != 0,
            version: r.version,
        }
    }
}

impl From<&LinkRecord> for LinkRow {
    fn from(l: &LinkRecord) -> Self {
        Self {
            id: l.id.clone(),
            token_hash: l.token_hash.clone(),
            site: l.site.clone(),
            name: l.name.clone(),
            password_hash: l.password_hash.clone(),
            expires_at: l.expires_at,
            created_at: l.created_at,
            revoked: u8::from(l.revoked),
            version: l.version,
            embed_origins: l.embed_origins.join(" "),
        }
    }
}

impl From<LinkRow> for LinkRecord {
    fn from(r: LinkRow) -> Self {
        Self {
            id: r.id,
            token_hash: r.token_hash,
            site: r.site,
            name: r.name,
            password_hash: r.password_hash,
            expires_at: r.expires_at,
            created_at: r.created_at,
            revoked: r.revoked != 0,
            embed_origins: r
                .embed_origins
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            version: r.version,
        }
    }
}

/// Unix seconds now, as ClickHouse `DateTime` stores them.
pub fn now_secs() -> u32 {
    u32::try_from(chrono_free_now().as_secs()).unwrap_or(u32::MAX)
}

fn chrono_free_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// `n` random bytes from the operating system, hex-encoded.
pub fn random_hex(n: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf)
        .map_err(|e| Error::io("reading random bytes", std::io::Error::other(e.to_string())))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The registry store and its in-memory cache. Share one per process (`Arc`).
pub struct Registry {
    client: clickhouse::Client,
    cache: RwLock<Arc<Snapshot>>,
    /// Highest version seen or written: new versions go above it.
    last_version: AtomicU64,
    /// Bumped by every write of this process (a load that raced with one merges).
    writes: AtomicU64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.snapshot();
        f.debug_struct("Registry")
            .field("sites", &s.sites.len())
            .field("keys", &s.keys.len())
            .field("links", &s.links.len())
            .field("ingest_keys", &s.ingest_keys.len())
            .field("loaded", &s.loaded)
            .finish()
    }
}

impl Registry {
    /// A registry over `ch`'s tables, with an empty cache until the first [`Self::refresh`].
    pub fn new(ch: &ClickHouseConfig) -> Arc<Self> {
        Arc::new(Self {
            client: ch.client(),
            cache: RwLock::new(Arc::new(Snapshot::default())),
            last_version: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        })
    }

    /// The cached state (cheap: one `Arc` clone).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.cache.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The ClickHouse client the registry writes with.
    pub(crate) fn client(&self) -> &clickhouse::Client {
        &self.client
    }

    pub(crate) fn next_version(&self) -> u64 {
        let now = u64::try_from(chrono_free_now().as_nanos()).unwrap_or(u64::MAX);
        let prev = self
            .last_version
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(now.max(last.saturating_add(1)))
            })
            .unwrap_or(0);
        now.max(prev.saturating_add(1))
    }

    fn saw_version(&self, v: u64) {
        self.last_version.fetch_max(v, Ordering::SeqCst);
    }

    /// Loads every current record from ClickHouse (one query per table).
    pub async fn load(&self) -> Result<Snapshot, Error> {
        let site_rows: Vec<SiteRow> = self
            .client
            .sql(&Sql::new(
                "SELECT domain, max(version) AS v, argMax(deleted, version) AS d, \
                 argMax(settings, version) AS s, argMax(updated_at, version) AS u \
                 FROM sites GROUP BY domain",
            ))
            .fetch_all()
            .await?;
        let key_rows: Vec<KeyRow> = self
            .client
            .sql(&Sql::new(
                "SELECT id, argMax(key_hash, version) AS h, argMax(site, version) AS st, \
                 argMax(name, version) AS n, argMax(created_at, version) AS c, \
                 argMax(revoked, version) AS r, max(version) AS v FROM site_keys GROUP BY id",
            ))
            .fetch_all()
            .await?;
        let link_rows: Vec<LinkRow> = self
            .client
            .sql(&Sql::new(
                "SELECT id, argMax(token_hash, version) AS h, argMax(site, version) AS st, \
                 argMax(name, version) AS n, argMax(password_hash, version) AS p, \
                 argMax(expires_at, version) AS e, argMax(created_at, version) AS c, \
                 argMax(revoked, version) AS r, max(version) AS v, \
                 argMax(embed_origins, version) AS eo FROM shared_links GROUP BY id",
            ))
            .fetch_all()
            .await?;
        let ingest_rows: Vec<KeyRow> = self
            .client
            .sql(&Sql::new(
                "SELECT id, argMax(key_hash, version) AS h, argMax(site, version) AS st, \
                 argMax(name, version) AS n, argMax(created_at, version) AS c, \
                 argMax(revoked, version) AS r, max(version) AS v FROM ingest_keys GROUP BY id",
            ))
            .fetch_all()
            .await?;
        let people = people::load(&self.client, |v| self.saw_version(v)).await?;
        let mut snap = Snapshot {
            loaded: true,
            people,
            ..Default::default()
        };
        for r in site_rows {
            let settings = match serde_json::from_str::<SiteSettings>(&r.settings) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(domain = %r.domain, error = %e, "ignoring a stored site whose settings do not parse");
                    continue;
                }
            };
            self.saw_version(r.version);
            snap.sites.insert(
                r.domain.clone(),
                SiteRecord {
                    domain: r.domain,
                    settings,
                    deleted: r.deleted != 0,
                    version: r.version,
                    updated_at: r.updated_at,
                },
            );
        }
        for r in key_rows {
            self.saw_version(r.version);
            snap.keys.insert(r.id.clone(), r.into());
        }
        for r in link_rows {
            self.saw_version(r.version);
            snap.links.insert(r.id.clone(), r.into());
        }
        for r in ingest_rows {
            self.saw_version(r.version);
            snap.ingest_keys.insert(r.id.clone(), r.into());
        }
        snap.index();
        Ok(snap)
    }

    /// Reloads the cache from ClickHouse now and returns the new snapshot.
    pub async fn refresh(&self) -> Result<Arc<Snapshot>, Error> {
        let writes_before = self.writes.load(Ordering::SeqCst);
        let mut snap = self.load().await?;
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if self.writes.load(Ordering::SeqCst) != writes_before {
            // A write of ours landed while we loaded: keep whichever version is newer.
            snap.merge_newer(&cache);
        }
        let snap = Arc::new(snap);
        *cache = snap.clone();
        Ok(snap)
    }

    /// Refreshes every `every` until the last `Arc` of the registry is dropped. Failures are
    /// logged and the previous snapshot kept. Needs a Tokio runtime.
    pub fn spawn_refresh(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                let Some(reg) = weak.upgrade() else {
                    return;
                };
                match reg.refresh().await {
                    Ok(_) if failing => {
                        tracing::info!("site registry loaded again");
                        failing = false;
                    }
                    Ok(_) => {}
                    Err(e) if !failing => {
                        tracing::warn!(error = %e, "could not load the site registry; keeping the last copy");
                        failing = true;
                    }
                    Err(_) => {}
                }
                drop(reg);
                tokio::time::sleep(every).await;
            }
        })
    }

    /// `find` on the cache, or, when it finds nothing, on a fresh load (another process may
    /// have written it since the last refresh).
    pub async fn fresh<T>(
        &self,
        find: impl Fn(&Snapshot) -> Option<T>,
    ) -> Result<Option<T>, Error> {
        if let Some(t) = find(&self.snapshot()) {
            return Ok(Some(t));
        }
        Ok(find(&*self.refresh().await?))
    }

    /// Inserts one row into `table` (typed RowBinary: no value is pasted into SQL).
    async fn insert_one<T>(&self, table: &str, row: &T) -> Result<(), Error>
    where
        T: clickhouse::RowWrite + for<'a> clickhouse::Row<Value<'a> = T>,
    {
        let mut ins = self.client.insert::<T>(table).await?;
        ins.write(row).await?;
        ins.end().await?;
        Ok(())
    }

    pub(crate) fn apply(&self, f: impl FnOnce(&mut Snapshot)) {
        self.writes.fetch_add(1, Ordering::SeqCst);
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        let mut s = Snapshot::clone(&cache);
        f(&mut s);
        s.index();
        *cache = Arc::new(s);
    }

    async fn insert_site(&self, row: &SiteRow) -> Result<(), Error> {
        self.insert_one("sites", row).await?;
        Ok(())
    }

    /// Stores `settings` for `domain` (creating or replacing the site's record).
    /// `domain` must already be normalised ([`normalize_domain`]).
    pub async fn put_site(
        &self,
        domain: &str,
        settings: SiteSettings,
    ) -> Result<SiteRecord, Error> {
        let rec = SiteRecord {
            domain: domain.to_string(),
            settings,
            deleted: false,
            version: self.next_version(),
            updated_at: now_secs(),
        };
        let json =
            serde_json::to_string(&rec.settings).map_err(|e| invalid(format!("settings: {e}")))?;
        self.insert_site(&SiteRow {
            domain: rec.domain.clone(),
            version: rec.version,
            deleted: 0,
            settings: json,
            updated_at: rec.updated_at,
        })
        .await?;
        let stored = rec.clone();
        self.apply(move |s| {
            s.sites.insert(stored.domain.clone(), stored);
        });
        Ok(rec)
    }

    /// Unregisters `domain`'s stored record and revokes its keys (read and ingest) and shared
    /// links.
    /// Returns false when there was no stored record.
    pub async fn delete_site(&self, domain: &str) -> Result<bool, Error> {
        // Reload first, so keys and links made by other processes are revoked too.
        let snap = self.refresh().await?;
        let Some(old) = snap.site(domain) else {
            return Ok(false);
        };
        let version = self.next_version();
        self.insert_site(&SiteRow {
            domain: domain.to_string(),
            version,
            deleted: 1,
            settings: serde_json::to_string(&old.settings).unwrap_or_default(),
            updated_at: now_secs(),
        })
        .await?;
        let mut tomb = old.clone();
        tomb.deleted = true;
        tomb.version = version;
        self.apply(move |s| {
            s.sites.insert(tomb.domain.clone(), tomb);
        });
        for k in snap.keys_of(domain).into_iter().filter(|k| !k.revoked) {
            self.revoke_key(&k.id).await?;
        }
        for l in snap.links_of(domain).into_iter().filter(|l| !l.revoked) {
            self.revoke_link(&l.id).await?;
        }
        for k in snap
            .ingest_keys_of(domain)
            .into_iter()
            .filter(|k| !k.revoked)
        {
            self.revoke_ingest_key(&k.id).await?;
        }
        Ok(true)
    }

    async fn insert_key(&self, rec: &KeyRecord) -> Result<(), Error> {
        self.insert_one("site_keys", &KeyRow::from(rec)).await?;
        let stored = rec.clone();
        self.apply(move |s| {
            s.keys.insert(stored.id.clone(), stored);
        });
        Ok(())
    }

    /// Makes a new key for `site`: returns its record and the key itself (the only time the
    /// key exists outside the caller: only its hash is stored). Keys are `vk_` and 64 hex
    /// digits (32 random bytes).
    pub async fn create_key(&self, site: &str, name: &str) -> Result<(KeyRecord, String), Error> {
        let key = format!("vk_{}", random_hex(32)?);
        let rec = KeyRecord {
            id: random_hex(8)?,
            key_hash: secret_hash(&key),
            site: site.to_string(),
            name: name.to_string(),
            created_at: now_secs(),
            revoked: false,
            version: self.next_version(),
        };
        self.insert_key(&rec).await?;
        Ok((rec, key))
    }

    /// Revokes a key. Returns false when no such key is known.
    pub async fn revoke_key(&self, id: &str) -> Result<bool, Error> {
        let Some(mut rec) = self.fresh(|s| s.key(id).cloned()).await? else {
            return Ok(false);
        };
        rec.revoked = true;
        rec.version = self.next_version();
        self.insert_key(&rec).await?;
        Ok(true)
    }

    async fn insert_ingest_key(&self, rec: &KeyRecord) -> Result<(), Error> {
        self.insert_one("ingest_keys", &KeyRow::from(rec)).await?;
        let stored = rec.clone();
        self.apply(move |s| {
            s.ingest_keys.insert(stored.id.clone(), stored);
        });
        Ok(())
    }

    /// Makes a new write-only ingest key for `site`: returns its record and the key itself
    /// (only its hash is stored). Ingest keys are `vi_` and 64 hex digits (32 random bytes).
    pub async fn create_ingest_key(
        &self,
        site: &str,
        name: &str,
    ) -> Result<(KeyRecord, String), Error> {
        let key = format!("vi_{}", random_hex(32)?);
        let rec = KeyRecord {
            id: random_hex(8)?,
            key_hash: secret_hash(&key),
            site: site.to_string(),
            name: name.to_string(),
            created_at: now_secs(),
            revoked: false,
            version: self.next_version(),
        };
        self.insert_ingest_key(&rec).await?;
        Ok((rec, key))
    }

    /// Revokes an ingest key. Returns false when no such key is known.
    pub async fn revoke_ingest_key(&self, id: &str) -> Result<bool, Error> {
        let Some(mut rec) = self.fresh(|s| s.ingest_key(id).cloned()).await? else {
            return Ok(false);
        };
        rec.revoked = true;
        rec.version = self.next_version();
        self.insert_ingest_key(&rec).await?;
        Ok(true)
    }

    async fn insert_link(&self, rec: &LinkRecord) -> Result<(), Error> {
        self.insert_one("shared_links", &LinkRow::from(rec)).await?;
        let stored = rec.clone();
        self.apply(move |s| {
            s.links.insert(stored.id.clone(), stored);
        });
        Ok(())
    }

    /// Makes a new shared link for `site`: returns its record and the token (`vl_` and 64
    /// hex digits; only its hash is stored). `password_hash` is a PHC string or empty;
    /// `expires_at` Unix seconds or 0 for never; `embed_origins` the origins its page may be
    /// embedded in (checked by the caller).
    pub async fn create_link(
        &self,
        site: &str,
        name: &str,
        password_hash: String,
        expires_at: u32,
        embed_origins: Vec<String>,
    ) -> Result<(LinkRecord, String), Error> {
        let token = format!("vl_{}", random_hex(32)?);
        let rec = LinkRecord {
            id: random_hex(8)?,
            token_hash: secret_hash(&token),
            site: site.to_string(),
            name: name.to_string(),
            password_hash,
            expires_at,
            created_at: now_secs(),
            revoked: false,
            embed_origins,
            version: self.next_version(),
        };
        self.insert_link(&rec).await?;
        Ok((rec, token))
    }

    /// Revokes a shared link. Returns false when no such link is known.
    pub async fn revoke_link(&self, id: &str) -> Result<bool, Error> {
        let Some(mut rec) = self.fresh(|s| s.link(id).cloned()).await? else {
            return Ok(false);
        };
        rec.revoked = true;
        rec.version = self.next_version();
        self.insert_link(&rec).await?;
        Ok(true)
    }

    /// Asks ClickHouse whether it knows the time zone `tz` (the reports run there, so its
    /// time zone database is the one that matters). Call after [`SiteSettings::validate`].
    pub async fn check_timezone(&self, tz: &str) -> Result<(), Error> {
        let q = sql!("SELECT toString(toTimeZone(toDateTime(0), {}))", lit(tz));
        match self.client.sql(&q).fetch_one::<String>().await {
            Ok(_) => Ok(()),
            Err(clickhouse::error::Error::BadResponse(_)) => Err(invalid(format!(
                "`timezone` {tz:?} is not a time zone ClickHouse knows"
            ))),
            Err(e) => Err(e.into()),
        }
    }
}

/// Writes of the people tables ([`crate::people`]).
impl Registry {
    async fn insert_user(&self, rec: &UserRecord) -> Result<(), Error> {
        self.insert_one("users", &UserRow::from(rec)).await?;
        let stored = rec.clone();
        self.apply(move |s| {
            s.people.users.insert(stored.id.clone(), stored);
        });
        Ok(())
    }

    /// Makes an account for `email` (already normalised, [`normalize_email`]) with the
    /// PHC string `password_hash`, at `now` (Unix seconds). 409-worthy
    /// ([`Error::Invalid`]) when a live account has that e-mail.
    pub async fn create_user(
        &self,
        email: &str,
        password_hash: String,
        now: u32,
    ) -> Result<UserRecord, Error> {
        if self
            .fresh(|s| s.people.user_by_email(email).map(|u| u.id.clone()))
            .await?
            .is_some()
        {
            return Err(Error::Invalid(format!(
                "an account for {email:?} exists already"
            )));
        }
        let rec = UserRecord {
            id: random_hex(8)?,
            email: email.to_string(),
            password_hash,
            totp_secret: String::new(),
            recovery: Vec::new(),
            sessions_after: 0,
            locked_until: 0,
            created_at: now,
            deleted: false,
            version: self.next_version(),
        };
        self.insert_user(&rec).await?;
        Ok(rec)
    }

    /// Stores a changed account (a new version of `rec`).
    pub async fn put_user(&self, mut rec: UserRecord) -> Result<UserRecord, Error> {
        rec.version = self.next_version();
        self.insert_user(&rec).await?;
        Ok(rec)
    }

    /// Gives `user_id` `role` on `site` (a domain or [`ALL_SITES`]); `None` removes it.
    pub async fn set_membership(
        &self,
        user_id: &str,
        site: &str,
        role: Option<Role>,
    ) -> Result<(), Error> {
        let row = MembershipRow {
            user_id: user_id.to_string(),
            site: site.to_string(),
            role: role.unwrap_or(Role::Viewer).name().to_string(),
            deleted: u8::from(role.is_none()),
            version: self.next_version(),
        };
        self.insert_one("memberships", &row).await?;
        let m = Membership {
            user_id: row.user_id,
            site: row.site,
            role: role.unwrap_or(Role::Viewer),
            deleted: role.is_none(),
            version: row.version,
        };
        self.apply(move |s| {
            s.people
                .memberships
                .insert((m.user_id.clone(), m.site.clone()), m);
        });
        Ok(())
    }

    async fn insert_session(&self, rec: &SessionRecord) -> Result<(), Error> {
        self.insert_one("sessions", &SessionRow::from(rec)).await?;
        let stored = rec.clone();
        self.apply(move |s| {
            s.people.sessions.insert(stored.id.clone(), stored);
        });
        Ok(())
    }

    /// Starts a session for `user_id` from `now` to `expires_at` (Unix seconds): returns its
    /// record and the token (`vs_` + 64 hex digits; only its hash is stored).
    pub async fn create_session(
        &self,
        user_id: &str,
        now: u32,
        expires_at: u32,
    ) -> Result<(SessionRecord, String), Error> {
        let token = format!("vs_{}", random_hex(32)?);
        let rec = SessionRecord {
            id: random_hex(8)?,
            token_hash: secret_hash(&token),
            user_id: user_id.to_string(),
            created_at: now,
            expires_at,
            revoked: false,
            version: self.next_version(),
        };
        self.insert_session(&rec).await?;
        Ok((rec, token))
    }

    /// Ends a session (logout).
    pub async fn revoke_session(&self, rec: &SessionRecord) -> Result<(), Error> {
        let mut rec = rec.clone();
        rec.revoked = true;
        rec.version = self.next_version();
        self.insert_session(&rec).await
    }

    async fn insert_invitation(&self, rec: &InvitationRecord) -> Result<(), Error> {
        self.insert_one("invitations", &InvitationRow::from(rec))
            .await?;
        let stored = rec.clone();
        self.apply(move |s| {
            s.people.invitations.insert(stored.id.clone(), stored);
        });
        Ok(())
    }

    /// Makes a one-time invitation for `email` (normalised; empty for the setup link) to have
    /// `role` on `site`, valid from `now` to `expires_at`: returns its record and the token
    /// (`vn_` + 64 hex digits; only its hash is stored).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_invitation(
        &self,
        email: &str,
        site: &str,
        role: Role,
        invited_by: &str,
        now: u32,
        expires_at: u32,
    ) -> Result<(InvitationRecord, String), Error> {
        let token = format!("vn_{}", random_hex(32)?);
        let rec = InvitationRecord {
            id: random_hex(8)?,
            token_hash: secret_hash(&token),
            email: email.to_string(),
            site: site.to_string(),
            role,
            invited_by: invited_by.to_string(),
            created_at: now,
            expires_at,
            used: false,
            version: self.next_version(),
        };
        self.insert_invitation(&rec).await?;
        Ok((rec, token))
    }

    /// Marks an invitation used (accepted or withdrawn): it opens nothing any more.
    pub async fn use_invitation(&self, rec: &InvitationRecord) -> Result<(), Error> {
        let mut rec = rec.clone();
        rec.used = true;
        rec.version = self.next_version();
        self.insert_invitation(&rec).await
    }

    /// Appends one line to the audit log.
    pub async fn audit(&self, entry: &AuditEntry) -> Result<(), Error> {
        self.insert_one("audit_log", entry).await?;
        Ok(())
    }

    /// The newest `limit` audit lines, of `sites` only (`None`: all), newest first.
    pub async fn audit_log(
        &self,
        sites: Option<&[String]>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, Error> {
        let filter = match sites {
            None => Sql::new(""),
            Some([]) => return Ok(Vec::new()),
            Some(list) => sql!("WHERE site IN {}", lit_list(list)),
        };
        let q = sql!(
            "SELECT at, id, actor, site, action, detail FROM audit_log {} \
             ORDER BY at DESC, id DESC LIMIT {}",
            filter,
            u64::from(limit)
        );
        Ok(self.client().sql(&q).fetch_all().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err_of<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn settings_are_checked_field_by_field() {
        let ok = SiteSettings::default();
        assert!(ok.validate().is_ok());
        let mut s = ok.clone();
        s.min_visitors = 1;
        assert!(err_of(s.validate()).contains("`min_visitors` must be between 2 and 1000000"));
        s.min_visitors = policy::MAX_K + 1;
        assert!(err_of(s.validate()).contains("`min_visitors`"));
        let mut s = ok.clone();
        s.retention_days = Some(0);
        assert!(err_of(s.validate()).contains("`retention_days` must be between 1 and 36500"));
        s.retention_days = Some(policy::MAX_RETENTION_DAYS);
        assert!(s.validate().is_ok());
        let mut s = ok.clone();
        s.timezone = "/etc/passwd".into();
        assert!(err_of(s.validate()).contains("`timezone`"));
        let mut s = ok.clone();
        s.aliases = vec!["a".into(), "a".into()];
        assert!(err_of(s.validate()).contains("`aliases[1]`"));
        let mut s = ok;
        s.goals = vec![json!({"name": "A", "event_name": "a"})];
        s.funnels = vec![json!({"name": "F", "steps": ["A", "B"]})];
        assert!(err_of(s.validate()).contains("`funnels[0].steps[1]`"));
        let mut s = SiteSettings {
            annotations: vec![json!({"date": "2026-11-20", "text": "Launched v2"})],
            ..SiteSettings::default()
        };
        assert!(s.validate().is_ok());
        for (bad, says) in [
            (
                json!({"date": "2026-02-30", "text": "x"}),
                "`annotations[0].date`",
            ),
            (
                json!({"date": "20-11-2026", "text": "x"}),
                "`annotations[0].date`",
            ),
            (
                json!({"date": "2026-11-20", "text": ""}),
                "`annotations[0].text`",
            ),
            (
                json!({"date": "2026-11-20", "text": "a\u{7}b"}),
                "`annotations[0].text`",
            ),
            (json!({"date": "2026-11-20"}), "`annotations[0]`"),
            (
                json!({"date": "2026-11-20", "text": "x", "by": "me"}),
                "`annotations[0]`",
            ),
        ] {
            s.annotations = vec![bad.clone()];
            assert!(err_of(s.validate()).contains(says), "{bad}");
        }
    }

    fn req(v: Value) -> Result<SiteSettings, Error> {
        let Value::Object(m) = v else {
            return Err(invalid("not an object".into()));
        };
        let s = SiteSettings::from_request(SiteSettings::default(), &m, &["domain"])?;
        s.validate()?;
        Ok(s)
    }

    #[test]
    fn request_parsing_names_the_field() {
        let e = |v: Value| req(v).unwrap_err().to_string();
        assert!(e(json!({"timezone": 5})).contains("`timezone`"));
        assert!(e(json!({"retention_days": "x"})).contains("`retention_days`"));
        assert!(e(json!({"retention_days": 0})).contains("`retention_days`"));
        assert!(e(json!({"colour": "red"})).contains("unknown field `colour`"));
        // The site's own differential-privacy parameters.
        let ok =
            req(json!({"epsilon_query": 2.0, "epsilon_day": 20.0, "revenue_bound": 49})).unwrap();
        assert_eq!(
            (ok.epsilon_query, ok.epsilon_day, ok.revenue_bound),
            (Some(2.0), Some(20.0), Some(49))
        );
        assert!(e(json!({"revenue_bound": "x"})).contains("`revenue_bound`"));
        assert!(e(json!({"revenue_bound": 0})).contains("`revenue_bound`"));
        assert!(e(json!({"epsilon_query": 50.0})).contains("`epsilon_query`"));
        assert!(e(json!({"epsilon_query": 2.0, "epsilon_day": 1.0})).contains("`epsilon_day`"));
        assert!(e(json!({"aliases": ["a", "a"]})).contains("`aliases[1]`"));
        assert!(e(json!({"aliases": ["ok", ""]})).contains("`aliases[1]`"));
        assert!(e(json!({"aliases": ["a\nb"]})).contains("`aliases[0]`"));
        assert!(e(json!({"timezone": "Europe/Berlin'; DROP"})).contains("`timezone`"));
        assert!(e(json!({"min_visitors": -1})).contains("`min_visitors`"));
        let s = req(json!({"domain": "x", "aliases": [" x'); DROP TABLE sites; -- "], "timezone": "America/Argentina/Buenos_Aires", "honor_dnt": false})).unwrap();
        assert_eq!(s.aliases, vec!["x'); DROP TABLE sites; --"]);
        assert!(!s.honor_dnt);
        assert_eq!(s.min_visitors, DEFAULT_MIN_VISITORS);
        assert_eq!(req(json!({})).unwrap(), SiteSettings::default());
    }

    #[test]
    fn stored_json_is_lenient_and_round_trips() {
        let s: SiteSettings =
            serde_json::from_str(r#"{"timezone":"Asia/Tokyo","future_field":1}"#).unwrap();
        assert_eq!(s.timezone, "Asia/Tokyo");
        assert!(s.honor_dnt);
        let again: SiteSettings =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn domains_normalise() {
        assert_eq!(
            normalize_domain(" Example.COM. ").as_deref(),
            Some("example.com")
        );
        assert_eq!(normalize_domain("a.com'; DROP TABLE sites"), None);
        assert_eq!(normalize_domain(""), None);
        assert_eq!(normalize_domain("a..b"), None);
    }

    #[test]
    fn versions_increase_and_stay_above_what_was_seen() {
        let r = Registry::new(&ClickHouseConfig::new("http://127.0.0.1:1", "veil"));
        let a = r.next_version();
        let b = r.next_version();
        assert!(b > a);
        r.saw_version(u64::MAX - 10);
        assert_eq!(r.next_version(), u64::MAX - 9);
    }

    #[test]
    fn secrets_are_random_and_hashed() {
        let a = random_hex(32).unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_hex(32).unwrap());
        assert_eq!(secret_hash("x"), blake3::hash(b"x").to_hex().to_string());
    }

    #[test]
    fn merge_keeps_the_newer_version() {
        let mut loaded = Snapshot::default();
        let mut cached = Snapshot::default();
        let rec = |v: u64, deleted: bool| SiteRecord {
            domain: "a.com".into(),
            settings: SiteSettings::default(),
            deleted,
            version: v,
            updated_at: 0,
        };
        loaded.sites.insert("a.com".into(), rec(1, false));
        cached.sites.insert("a.com".into(), rec(2, true));
        loaded.merge_newer(&cached);
        assert!(loaded.site("a.com").is_none(), "the newer tombstone wins");
    }
}
