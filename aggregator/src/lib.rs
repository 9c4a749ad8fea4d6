//! Veil's aggregator: turns stored events into reports that never describe fewer than `k`
//! visitors, behind a Stats API shaped like Plausible's v2, and the admin API that manages
//! sites, keys and shared links.
//!
//! Routes (all JSON; `Authorization: Bearer SECRET`, see [`auth`] for who may do what):
//! - `POST /api/v2/query` → `{"results": [{"dimensions": [...], "metrics": [...]}], "meta": {...}, "query": {...}}`
//!   (see [`query`] for the request); any credential that can read the site;
//! - `GET /api/v1/sites` → `{"sites": ["example.com", …], "details": [{"domain", "source", "settings"}]}`
//!   (the sites the credential can read);
//! - the admin API ([`admin`]): `POST /api/v1/sites`, `GET/PUT/DELETE /api/v1/sites/{domain}`,
//!   `GET/POST /api/v1/sites/{domain}/keys`, `DELETE /api/v1/sites/{domain}/keys/{id}`,
//!   `GET/POST /api/v1/sites/{domain}/ingest-keys`, `DELETE /api/v1/sites/{domain}/ingest-keys/{id}`,
//!   `GET/POST /api/v1/sites/{domain}/shared-links`, `DELETE /api/v1/sites/{domain}/shared-links/{id}`.
//!
//! Errors are `{"error": "…"}` with the status: 400 (the message names the field), 401 (no or
//! a wrong, revoked or expired credential), 403 (a site key on an admin route of its own
//! site; a browser request from another origin, [`guard`]), 404 (unknown site — also what a key for another site gets, with the same body, so
//! keys cannot probe which sites exist), 405, 409, 415 (an API write not declared
//! `application/json`, [`guard`]), 421 (a host not on the allow-list, [`guard`]), 429 (with `Retry-After`: the rate
//! limit, a spent privacy budget, or too many reports under way for the credential, [`cost`]), 500 (this side:
//! no randomness, writing a zip), 502 (ClickHouse failed: the body says so in general terms,
//! never with ClickHouse's text); a 5xx carries a `request_id` (body and `X-Request-Id`) that
//! its log line carries too; see [`http`]. A report too expensive for ClickHouse's bounds
//! is a 400 naming its filters, dimensions and period ([`Error::TooExpensive`]).
//!
//! Sites come from the registry ([`veil_schemas::registry`], shared through ClickHouse and
//! refreshed every ~2 s) and from flags (`--site`, `--child-site`, …). A stored record wins
//! over flags; flags seed the defaults of a site the admin API creates or replaces.
//!
//! k-anonymity (site setting `min_visitors`, default `--min-visitors` = 5, at least 2): a
//! breakdown row with fewer visitors than `k` is folded into one `(other)` row (shown only
//! when it reaches `k` itself; `meta.folded_rows` counts its rows only then); a time bucket or
//! a total under `k` has its metrics replaced by `null`, and a time-series row that also has
//! another dimension is dropped under `k`. Filters that select, or leave out, fewer than `k`
//! visitors get no numbers (`meta.too_few_visitors`; see [`stats`]). Child-directed sites
//! store no visitor hash: they report `pageviews` and `events` only, and the same rule applies
//! to their event counts instead of visitors.
//!
//! Report queries (sent with [`Aggregator::client`]) run under ClickHouse's
//! `max_execution_time` = [`MAX_EXECUTION_SECS`] and a memory budget
//! (`--query-memory-mb`, [`db::DEFAULT_QUERY_MEMORY_MB`]), spilling large `GROUP BY`s and
//! sorts to disk ([`db`]); past a bound ClickHouse gives up and the answer is the 400 of
//! [`Error::TooExpensive`].
//!
//! The time comes from the aggregator's [`Clock`] ([`Aggregator::with_clock`]; the system
//! clock by default): report ranges, shared-link expiry and rate limits read it.
//!
//! Modules, in the order a request meets them: [`guard`] (the browser-facing checks and
//! security headers the HTTP entry applies before any route), [`auth`] (who is asking),
//! [`cost`] (how many reports a credential may have under way), [`reports`] and
//! [`admin`] (the routes), [`site`] (a site as reports see it), [`query`] (parsing a Stats API
//! query and compiling it to SQL), [`stats`] (running it and shaping the answer), [`builds`]
//! (which rollup builds reports may read), [`snapshot`] (today's snapshots), [`db`] (the one
//! door to ClickHouse), [`http`] (responses). Background jobs: [`rollup`], [`retention`],
//! [`digest`] (weekly and monthly e-mail digests with a visitors-per-day [`chart`], sent
//! through [`mail`] with invitations).

pub mod account;
pub mod admin;
pub mod auth;
pub mod builds;
pub mod chart;
pub mod clock;
pub mod cost;
pub mod db;
pub mod digest;
pub mod guard;
pub mod http;
pub mod imports;
pub mod mail;
pub mod money;
pub mod privacy;
pub mod query;
pub mod reports;
pub mod retention;
pub mod rollup;
pub mod screen;
pub mod segments;
pub mod site;
pub mod snapshot;
pub mod stats;
pub mod v1;

pub use auth::Access;
pub use clock::{Clock, ManualClock, SystemClock};
pub use db::MAX_EXECUTION_SECS;
pub use http::HttpResponse;
pub use site::SiteView;

use std::sync::Arc;
use std::time::Duration;

use ::http::{Request, StatusCode};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use veil_schemas::registry::{normalize_domain, secret_hash, Registry, SiteSettings};
use veil_schemas::ClickHouseConfig;

use crate::http::{error_response, json_response};

/// The aggregator's one error type.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is invalid; the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong credential.
    #[error("missing or invalid credential: log in, or send `Authorization: Bearer TOKEN`")]
    Unauthorized,
    /// No credential, no admin token and no owner yet: the deployment waits for its first-run
    /// setup ([`account`]); 401 with `"setup_required": true`.
    #[error("Veil has no owner yet: open the setup link `veil up` printed (/setup#token=…), or run `veil user create --email YOU --role owner`")]
    SetupRequired,
    /// A right password of an account with a second factor, and no or a wrong code: 401 with
    /// `"second_factor": true`.
    #[error("{0}")]
    SecondFactor(String),
    /// Too many failed logins of this account: locked for this many seconds (429 with
    /// `Retry-After`).
    #[error("too many failed logins: this account is locked for {} more minute(s)", .0.div_ceil(60))]
    LockedOut(u64),
    /// A recognised credential that no longer opens anything (revoked, expired, wrong link
    /// password); the message says which.
    #[error("{0}")]
    Denied(String),
    /// A site key or shared link on an admin route of its own site; a browser request from
    /// another origin ([`guard`]).
    #[error("{0}")]
    Forbidden(String),
    /// A request for a host this server does not answer for ([`guard`], against DNS
    /// rebinding): 421.
    #[error("{0}")]
    Misdirected(String),
    /// A write to the API whose body is not declared JSON ([`guard`]): 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The site is not registered (or the credential cannot read it: the same answer).
    #[error("site {0:?} is not registered")]
    UnknownSite(String),
    /// Something else that does not exist (a key id, a link id, a route).
    #[error("{0}")]
    NotFound(String),
    /// Known route, wrong method.
    #[error("method not allowed; use {0}")]
    MethodNotAllowed(&'static str),
    /// It exists already.
    #[error("{0}")]
    Conflict(String),
    /// Too many requests for this credential.
    #[error("rate limit exceeded for this key; retry in {0} s")]
    RateLimited(u64),
    /// The credential already has its limit of report requests under way
    /// (`--max-concurrent-queries`, [`cost`]): a 429 with `Retry-After`.
    #[error(
        "this credential already has {limit} report requests under way (the most it may run at \
         once); wait for one to finish and retry in {retry_after} s"
    )]
    Busy {
        /// The bound per credential.
        limit: u32,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The aggregator already runs its limit of reports not answered from the per-day visit rollup
    /// (`--max-heavy-queries`, [`cost::Heavy`]) and none finished within the wait: a 429 with
    /// `Retry-After`.
    #[error(
        "ClickHouse is busy with {limit} expensive reports (ones the per-day rollup does not \
         answer: the most this aggregator runs at once); retry in {retry_after} s"
    )]
    ClickHouseBusy {
        /// The aggregator's bound.
        limit: u32,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The credential's privacy budget for the UTC day is spent ([`privacy::Privacy::charge`]):
    /// a 429 with `Retry-After` and the budget in the JSON body.
    #[error("{message}")]
    BudgetSpent {
        /// What the client reads.
        message: String,
        /// Seconds until the budget renews.
        retry_after: u64,
        /// `meta.privacy.budget`'s shape.
        budget: serde_json::Value,
    },
    /// ClickHouse failed (down, bad SQL, …); the text is ClickHouse's, for this side only
    /// (the client gets [`Error::public_message`]).
    #[error("query failed: {0}")]
    ClickHouse(String),
    /// ClickHouse stopped a report query at one of its bounds (memory, time, rows or bytes:
    /// the `code`, see [`db::too_expensive_code`]), or Veil refused it before asking because
    /// it would read more raw events than [`stats::MAX_RAW_EVENTS`] (no code); the message
    /// names the question and asks for a narrower one. A 400, not a 429: the same question costs as much a minute later
    /// (retrying cannot help, and the dashboard retries a 429 by itself); the request must
    /// change, and the message says how.
    #[error("{message}")]
    TooExpensive {
        /// ClickHouse's error code (logged; never sent); none for Veil's own refusal.
        code: Option<u32>,
        /// What the client reads.
        message: String,
    },
    /// Writing a response failed on this side (a zip archive, I/O).
    #[error("I/O failed: {0}")]
    Io(String),
    /// The settings are invalid ([`AggregatorConfig::validate`]); the message names the flag.
    #[error("{0}")]
    Config(String),
    /// Something on this side failed (no randomness, …).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) | Error::TooExpensive { .. } => StatusCode::BAD_REQUEST,
            Error::Unauthorized
            | Error::Denied(_)
            | Error::SetupRequired
            | Error::SecondFactor(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::UnknownSite(_) | Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::RateLimited(_)
            | Error::BudgetSpent { .. }
            | Error::LockedOut(_)
            | Error::Busy { .. }
            | Error::ClickHouseBusy { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::ClickHouse(_) => StatusCode::BAD_GATEWAY,
            Error::Io(_) | Error::Config(_) | Error::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// What the client is told: the error's text, except for [`Error::ClickHouse`], whose
    /// text (ClickHouse's own, which may quote SQL and the values in it) is replaced by
    /// [`CLICKHOUSE_FAILED`].
    pub fn public_message(&self) -> String {
        match self {
            Error::ClickHouse(_) => CLICKHOUSE_FAILED.into(),
            other => other.to_string(),
        }
    }
}

/// The body of every 502: the database failed, in general terms.
pub const CLICKHOUSE_FAILED: &str = "the analytics database failed to answer; try again";

impl From<veil_schemas::Error> for Error {
    fn from(e: veil_schemas::Error) -> Self {
        match e {
            veil_schemas::Error::Invalid(m) => Error::BadRequest(m),
            other => Error::ClickHouse(other.to_string()),
        }
    }
}

/// `--smtp-url` without its password ([`mail::redact`]), for `veil check-config`.
fn serialize_redacted_url<S: serde::Serializer>(
    url: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_some(&mail::redact(u)),
        None => s.serialize_none(),
    }
}

/// Aggregator settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AggregatorConfig {
    /// Sites named by `--site` (and `--child-site`), served besides the stored ones.
    pub sites: Vec<String>,
    /// Child-directed sites: only `pageviews` and `events` are reported, never visitors.
    pub child_sites: Vec<String>,
    /// `--ignore-dnt-site` (shown in the sites' settings).
    pub ignore_dnt_sites: Vec<String>,
    /// `--keep-bots-site` (shown in the sites' settings).
    pub keep_bots_sites: Vec<String>,
    /// `--site-alias ALIAS=DOMAIN` (shown in settings; stored aliases may not reuse them).
    pub site_aliases: Vec<String>,
    /// The address browsers reach the dashboard at (`--public-url`): its host is allowed by
    /// the [`guard`]'s Host allow-list, its origin by the cross-origin check.
    pub public_url: Option<String>,
    /// The admin token (`--admin-token`, alias `--api-token`): the operator's bearer
    /// credential for automation.
    #[serde(skip_serializing)]
    pub api_token: Option<String>,
    /// People log in ([`account`]): a request without a session, the admin token, a key or a
    /// link is refused (401; while no owner exists and no admin token is set, with the way to
    /// the first-run setup). The `veil` binary always turns it on. Off (the library's
    /// default, for in-process callers such as tests and embedding code, never an HTTP
    /// listener): a request without a recognised credential is the operator.
    pub accounts: bool,
    /// Default k: no published number describes fewer visitors than this.
    pub min_visitors: u64,
    /// How long raw events are kept.
    pub retention: retention::Retention,
    /// How often the registry is reloaded from ClickHouse.
    #[serde(with = "millis")]
    pub registry_refresh: Duration,
    /// Requests per second per site key or shared link (0: unlimited).
    pub key_rate_per_second: u32,
    /// Burst per site key or shared link.
    pub key_rate_burst: u32,
    /// Reports by day and dimension may read the current day from a snapshot at most this
    /// many seconds old that misses at most 0.1 % of the day's hits ([`snapshot`]); 0: the
    /// current day is always read live. The command line's default is 30; the library's is 0,
    /// so embedding code reads live unless it asks.
    pub today_snapshot_secs: u64,
    /// The memory one report query may use, in MiB (`--query-memory-mb`, default
    /// [`db::DEFAULT_QUERY_MEMORY_MB`]); large `GROUP BY`s and sorts spill to disk past a third
    /// of it ([`db::QueryBudget`]). Keep it under the ClickHouse user's own `max_memory_usage`.
    pub query_memory_mb: u64,
    /// Differential privacy or exact numbers, and the privacy parameters ([`privacy`]).
    pub privacy: privacy::Settings,
    /// Report requests one credential other than the admin may have under way at once
    /// (`--max-concurrent-queries`, default [`cost::DEFAULT_MAX_CONCURRENT_QUERIES`]; 0: no
    /// bound); past it, 429 ([`cost`]).
    pub max_concurrent_queries: u32,
    /// Reports not answered from the per-day visit rollup (visit rows, raw events, the event rollups) the aggregator runs at once, whoever asks
    /// (`--max-heavy-queries`, default [`cost::DEFAULT_MAX_HEAVY_QUERIES`]; 0: no bound): past
    /// it they wait for a place, then 429 ([`cost::Heavy`]). About ClickHouse's cores divided
    /// by the cores one query uses.
    pub max_heavy_queries: u32,
    /// How long, in milliseconds, the first of several reports asked at once over the same
    /// filtered visit rows waits for the others before one statement answers them all
    /// (`--gather-ms`, default [`screen::DEFAULT_GATHER_MS`]; 0: each report reads its rows
    /// itself; [`screen`]).
    pub gather_ms: u64,
    /// The most rows one report query may answer ([`db::MAX_RESULT_ROWS`] by default; 0: no
    /// bound): a library setting (tests lower it), no flag.
    pub max_result_rows: u64,
    /// The SMTP relay invitations, digests and alerts are sent through (`--smtp-url`,
    /// [`mail`]: `smtps://`, `smtp://…?tls=required` or plain `smtp://`); none: nothing is
    /// e-mailed (invitation links are only shown to the inviter, digests are not sent).
    /// Shown by `veil check-config` without its password.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub smtp_url: Option<String>,
    /// PEM certificates trusted for the relay's TLS besides the system's roots
    /// (`--smtp-ca-file`: a private relay's CA).
    pub smtp_ca_file: Option<std::path::PathBuf>,
    /// The `From` of those e-mails (`--smtp-from`; required with `--smtp-url`).
    pub smtp_from: Option<String>,
    /// How often the e-mail scheduler looks for digests due and checks for traffic spikes
    /// (`--mail-check-secs`, default 60; 1 to 3600).
    pub mail_check_secs: u32,
}

/// The largest `--query-memory-mb`: 1 TiB, far above any machine Veil runs on (a typo guard).
pub const MAX_QUERY_MEMORY_MB: u64 = 1 << 20;

mod millis {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            sites: Vec::new(),
            child_sites: Vec::new(),
            ignore_dnt_sites: Vec::new(),
            keep_bots_sites: Vec::new(),
            site_aliases: Vec::new(),
            public_url: None,
            api_token: None,
            accounts: false,
            min_visitors: 5,
            retention: retention::Retention::default(),
            registry_refresh: veil_schemas::registry::DEFAULT_REFRESH,
            key_rate_per_second: 10,
            key_rate_burst: 30,
            today_snapshot_secs: 0,
            query_memory_mb: db::DEFAULT_QUERY_MEMORY_MB,
            privacy: privacy::Settings::default(),
            max_concurrent_queries: cost::DEFAULT_MAX_CONCURRENT_QUERIES,
            max_heavy_queries: cost::DEFAULT_MAX_HEAVY_QUERIES,
            gather_ms: screen::DEFAULT_GATHER_MS,
            max_result_rows: db::MAX_RESULT_ROWS,
            smtp_url: None,
            smtp_ca_file: None,
            smtp_from: None,
            mail_check_secs: 60,
        }
    }
}

impl AggregatorConfig {
    /// Checks the settings before anything is served: site names are domains, aliases are
    /// `ALIAS=DOMAIN`, k is at least [`site::MIN_K`], the admin token (when set) at least 16
    /// characters, snapshots at most [`snapshot::MAX_AGE_SECS`] old, retention at least a
    /// day, the registry refreshed at some interval, a query memory budget of at least 1 MiB
    /// and at most [`MAX_QUERY_MEMORY_MB`], at most [`cost::MAX_CONCURRENT_QUERIES`] reports
    /// under way per credential. The message names the flag.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Config(m));
        for (flag, list) in [("--site", &self.sites), ("--child-site", &self.child_sites)] {
            for s in list {
                if normalize_domain(s).is_none() {
                    return bad(format!(
                        "{flag} {s:?} is not a domain name (expected e.g. example.com)"
                    ));
                }
            }
        }
        for (flag, list) in [
            ("--ignore-dnt-site", &self.ignore_dnt_sites),
            ("--keep-bots-site", &self.keep_bots_sites),
        ] {
            for s in list {
                if normalize_domain(s).is_none() {
                    return bad(format!("{flag} {s:?} is not a domain name"));
                }
            }
        }
        for a in &self.site_aliases {
            let ok = a
                .split_once('=')
                .is_some_and(|(al, d)| !al.trim().is_empty() && !d.trim().is_empty());
            if !ok {
                return bad(format!("--site-alias {a:?} must be ALIAS=DOMAIN"));
            }
        }
        if let Some(u) = &self.public_url {
            guard::PublicUrl::parse(u)?;
        }
        if let Some(t) = &self.api_token {
            if t.len() < 16 {
                return bad("--admin-token (or --api-token) must be at least 16 characters".into());
            }
        }
        if self.min_visitors < site::MIN_K {
            return bad(format!(
                "--min-visitors must be at least {} (k-anonymity needs a crowd)",
                site::MIN_K
            ));
        }
        if self.today_snapshot_secs > snapshot::MAX_AGE_SECS {
            return bad(format!(
                "--today-snapshot-secs must be at most {} (0 turns snapshots off)",
                snapshot::MAX_AGE_SECS
            ));
        }
        if self.retention.default_days == 0 {
            return bad("--retention-days must be at least 1".into());
        }
        if let Some((d, _)) = self.retention.per_site.iter().find(|(_, days)| **days == 0) {
            return bad(format!(
                "--site-retention {d}: DAYS must be a positive number"
            ));
        }
        if !(1..=MAX_QUERY_MEMORY_MB).contains(&self.query_memory_mb) {
            return bad(format!(
                "--query-memory-mb must be between 1 and {MAX_QUERY_MEMORY_MB} (MiB of memory one report query may use)"
            ));
        }
        if self.max_concurrent_queries > cost::MAX_CONCURRENT_QUERIES {
            return bad(format!(
                "--max-concurrent-queries must be at most {} (report requests one credential may have under way; 0: no bound)",
                cost::MAX_CONCURRENT_QUERIES
            ));
        }
        if self.max_heavy_queries > cost::MAX_CONCURRENT_QUERIES {
            return bad(format!(
                "--max-heavy-queries must be at most {} (reports not answered from the per-day visit rollup run at once; 0: no bound)",
                cost::MAX_CONCURRENT_QUERIES
            ));
        }
        if self.gather_ms > screen::MAX_GATHER_MS {
            return bad(format!(
                "--gather-ms must be at most {} (how long reports asked at once wait for each other; 0: never)",
                screen::MAX_GATHER_MS
            ));
        }
        self.privacy.validate()?;
        if !(1..=3600).contains(&self.mail_check_secs) {
            return bad(format!(
                "--mail-check-secs must be 1 to 3600 (how often digests and spikes are checked), not {}",
                self.mail_check_secs
            ));
        }
        if let Some(u) = &self.smtp_url {
            let _ = mail::check_smtp_url(u)?;
            let Some(from) = &self.smtp_from else {
                return bad(
                    "--smtp-url needs --smtp-from (the From of invitations and digests)".into(),
                );
            };
            mail::check_from(from)?;
            if self.public_url.is_none() {
                return bad(
                    "--smtp-url needs --public-url (links in e-mails must be absolute)".into(),
                );
            }
            // The mailer as it will be made: reads the trusted roots and --smtp-ca-file now
            // (no connection is made).
            mail::SmtpMailer::new(u, from, self.smtp_ca_file.as_deref())?;
        } else if self.smtp_ca_file.is_some() {
            return bad(
                "--smtp-ca-file is for --smtp-url's TLS, and no --smtp-url is given".into(),
            );
        }
        if self.registry_refresh.is_zero() {
            return bad("the registry refresh interval must be above 0".into());
        }
        Ok(())
    }

    /// True if flags name `domain`.
    pub fn flag_site(&self, domain: &str) -> bool {
        self.sites
            .iter()
            .chain(&self.child_sites)
            .any(|s| s == domain)
    }

    /// The settings flags give `domain` (also the defaults the admin API starts from).
    pub fn flag_settings(&self, domain: &str) -> SiteSettings {
        SiteSettings {
            aliases: self
                .site_aliases
                .iter()
                .filter_map(|a| a.split_once('='))
                .filter(|(_, d)| d.trim().eq_ignore_ascii_case(domain))
                .map(|(a, _)| a.trim().to_string())
                .collect(),
            timezone: "UTC".into(),
            retention_days: self.retention.per_site.get(domain).copied(),
            child_directed: self.child_sites.iter().any(|s| s == domain),
            honor_dnt: !self.ignore_dnt_sites.iter().any(|s| s == domain),
            keep_bots: self.keep_bots_sites.iter().any(|s| s == domain),
            min_visitors: self.min_visitors.max(site::MIN_K),
            goals: Vec::new(),
            funnels: Vec::new(),
            annotations: Vec::new(),
            epsilon_query: None,
            epsilon_day: None,
            revenue_bound: None,
        }
    }
}

/// Where a site's settings come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Flags only.
    Flags,
    /// A stored record (it wins over flags).
    Stored,
}

impl Source {
    /// How the admin API names it (`"flags"`, `"stored"`).
    pub fn name(self) -> &'static str {
        match self {
            Source::Flags => "flags",
            Source::Stored => "stored",
        }
    }
}

/// The Stats API and admin API over one ClickHouse database.
#[derive(Debug, Clone)]
pub struct Aggregator {
    cfg: Arc<AggregatorConfig>,
    ch: ClickHouseConfig,
    client: clickhouse::Client,
    registry: Arc<Registry>,
    limiter: Arc<auth::RateLimiter>,
    gate: Arc<cost::Gate>,
    /// The bound on reports not answered from the per-day visit rollup at once.
    heavy: Arc<cost::Heavy>,
    verified: Arc<auth::VerifiedPasswords>,
    snapshots: Option<Arc<snapshot::Snapshots>>,
    inflight: db::Inflight,
    /// Reports asked at once over the same filtered visit rows ([`screen`]).
    screens: screen::Screens,
    privacy: Arc<privacy::Privacy>,
    clock: Arc<dyn Clock>,
    /// Failed logins per e-mail ([`account`]).
    failures: Arc<account::Failures>,
    /// TOTP steps already used per account ([`account`]).
    used_steps: Arc<account::UsedSteps>,
    /// Lock-outs of e-mails without an account (this process only), until Unix seconds.
    phantom_locks: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
    /// When the last forced reload of the registry (for an unknown credential or owner)
    /// started; held while one runs ([`Self::reload_for_unknown`]).
    reloaded: Arc<tokio::sync::Mutex<Option<std::time::Instant>>>,
    /// Where e-mail goes ([`mail`]); none without `--smtp-url`.
    mailer: Option<Arc<dyn mail::Mailer>>,
}

impl Aggregator {
    /// An aggregator reading from `ch`, with its own registry cache (refreshed in the
    /// background when a Tokio runtime is running).
    pub fn new(cfg: AggregatorConfig, ch: ClickHouseConfig) -> Self {
        let registry = Registry::new(&ch);
        if tokio::runtime::Handle::try_current().is_ok() {
            registry.spawn_refresh(cfg.registry_refresh);
        }
        Self::with_registry(cfg, ch, registry)
    }

    /// An aggregator sharing `registry` (kept fresh by whoever made it), e.g. with the
    /// collector of the same process.
    pub fn with_registry(
        cfg: AggregatorConfig,
        ch: ClickHouseConfig,
        registry: Arc<Registry>,
    ) -> Self {
        let client = db::report_client(
            &ch,
            db::QueryBudget::mib(cfg.query_memory_mb).with_result_rows(cfg.max_result_rows),
        );
        let limiter = Arc::new(auth::RateLimiter::new(
            cfg.key_rate_per_second,
            cfg.key_rate_burst,
        ));
        let snapshots = snapshot::Snapshots::new(ch.clone(), cfg.today_snapshot_secs);
        let gate = Arc::new(cost::Gate::new(cfg.max_concurrent_queries));
        let heavy = Arc::new(cost::Heavy::new(cfg.max_heavy_queries));
        let screens = screen::Screens::with_window(std::time::Duration::from_millis(cfg.gather_ms));
        let cfg_privacy = cfg.privacy.clone();
        // validate() checked both flags; a mailer that still cannot be made sends nothing.
        let mailer = cfg.smtp_url.as_deref().and_then(|u| {
            let from = cfg.smtp_from.as_deref().unwrap_or_default();
            match mail::SmtpMailer::new(u, from, cfg.smtp_ca_file.as_deref()) {
                Ok(m) => {
                    if let Some(w) = m.plain_warning() {
                        tracing::warn!("{w}");
                    }
                    Some(Arc::new(m) as Arc<dyn mail::Mailer>)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no e-mail: the SMTP settings do not work");
                    None
                }
            }
        });
        if cfg_privacy.mode == privacy::Mode::Exact {
            tracing::warn!(
                "--privacy exact: reports publish exact numbers protected by k-anonymity only; \
                 a reader who combines questions can single out a visitor (docs/PRIVACY.md)"
            );
        }
        Self {
            cfg: Arc::new(cfg),
            ch,
            client,
            registry,
            limiter,
            gate,
            heavy,
            verified: Arc::new(auth::VerifiedPasswords::new()),
            snapshots,
            inflight: db::Inflight::default(),
            screens,
            privacy: Arc::new(privacy::Privacy::new(cfg_privacy)),
            clock: Arc::new(SystemClock),
            failures: Arc::default(),
            used_steps: Arc::default(),
            phantom_locks: Arc::default(),
            reloaded: Arc::default(),
            mailer,
        }
    }

    /// The same aggregator sending e-mail through `mailer` ([`mail`]).
    pub fn with_mailer(mut self, mailer: Arc<dyn mail::Mailer>) -> Self {
        self.mailer = Some(mailer);
        self
    }

    /// Where e-mail goes, when it is configured.
    pub fn mailer(&self) -> Option<&Arc<dyn mail::Mailer>> {
        self.mailer.as_ref()
    }

    /// The same aggregator reading the time from `clock` (reports, link expiry, rate limits,
    /// today's snapshots); tests move a [`ManualClock`] instead of sleeping.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.snapshots = snapshot::Snapshots::with_clock(
            self.ch.clone(),
            self.cfg.today_snapshot_secs,
            Arc::clone(&clock),
        );
        self.clock = clock;
        self
    }

    /// The time now, by the aggregator's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The ClickHouse it reads.
    pub fn clickhouse(&self) -> &ClickHouseConfig {
        &self.ch
    }

    /// The site registry it reads (tests call `refresh` on it).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Its settings.
    pub fn config(&self) -> &AggregatorConfig {
        &self.cfg
    }

    /// The [`guard::Guard`] of an HTTP server listening on `listen` (the Host allow-list,
    /// the cross-origin and JSON checks, the security headers): `--public-url` and the
    /// listener decide what it allows.
    pub fn guard(&self, listen: std::net::SocketAddr) -> guard::Guard {
        // validate() checked the URL; one that still fails to parse allows no extra host.
        let public = self
            .cfg
            .public_url
            .as_deref()
            .and_then(|u| guard::PublicUrl::parse(u).ok());
        guard::Guard::new(public, listen)
    }

    /// True for the paths this app answers.
    pub fn is_aggregator_path(path: &str) -> bool {
        path == "/api/v2/query"
            || path == "/api/v2/query.csv"
            || path == "/api/v2/funnel"
            || path == "/api/v1/sites"
            || path.starts_with("/api/v1/sites/")
            || path.starts_with("/api/v1/stats/")
            || path == "/api/v1/me"
            || path == "/api/v1/audit"
            || path == "/api/v1/people"
            || path.starts_with("/api/v1/people/")
            || path.starts_with("/api/v1/auth/")
            || path == digest::UNSUBSCRIBE_PATH
    }

    /// Who is asking (see [`auth`]): a person with a session, the admin, or a reader of one
    /// site. Site keys and shared links are rate-limited here.
    pub async fn access(&self, req: &Request<Bytes>) -> Result<Access, Error> {
        let admin = self.cfg.api_token.as_deref();
        let Some(given) = auth::bearer(req) else {
            if self.cfg.accounts {
                if let Some(token) = account::session_cookie(req) {
                    return self.session_access(req, token).await;
                }
                return Err(self.no_credential().await);
            }
            return match admin {
                None => Ok(Access::Admin),
                Some(_) => Err(Error::Unauthorized),
            };
        };
        if let Some(token) = admin {
            // blake3::Hash equality is constant-time.
            if blake3::hash(given.as_bytes()) == blake3::hash(token.as_bytes()) {
                return Ok(Access::Admin);
            }
        }
        let hash = secret_hash(given);
        let mut snap = self.registry.snapshot();
        let known = |s: &veil_schemas::registry::Snapshot| {
            s.key_by_hash(&hash).is_some() || s.link_by_hash(&hash).is_some()
        };
        // A key or link made a moment ago by another process (`veil key create`, another
        // aggregator): a reload that started after this request asked (at most one per second).
        if !known(&snap) && self.reload_for_unknown().await? {
            snap = self.registry.snapshot();
        }
        if let Some(k) = snap.key_by_hash(&hash) {
            if k.revoked {
                return Err(Error::Denied("this API key has been revoked".into()));
            }
            self.limiter
                .check(&format!("key:{}", k.id), self.clock.instant())
                .map_err(Error::RateLimited)?;
            return Ok(Access::Site {
                site: k.site.clone(),
                credential: format!("key:{}", k.id),
            });
        }
        if let Some(l) = snap.link_by_hash(&hash) {
            if l.revoked {
                return Err(Error::Denied("this shared link has been revoked".into()));
            }
            if l.expires_at != 0 && self.now().timestamp() >= i64::from(l.expires_at) {
                return Err(Error::Denied("this shared link has expired".into()));
            }
            self.limiter
                .check(&format!("link:{}", l.id), self.clock.instant())
                .map_err(Error::RateLimited)?;
            if !l.password_hash.is_empty() {
                let password = req
                    .headers()
                    .get(auth::LINK_PASSWORD_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                if !self.verified.contains(&l.id, l.version, &password) {
                    let phc = l.password_hash.clone();
                    let pw = password.clone();
                    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&phc, &pw))
                        .await
                        .unwrap_or(false);
                    if !ok {
                        return Err(Error::Denied(
                            "this shared link needs its password in the X-Veil-Link-Password header"
                                .into(),
                        ));
                    }
                    self.verified.insert(&l.id, l.version, &password);
                }
            }
            return Ok(Access::Site {
                site: l.site.clone(),
                credential: format!("link:{}", l.id),
            });
        }
        match admin {
            None if !self.cfg.accounts => Ok(Access::Admin),
            None => Err(self.no_credential().await),
            Some(_) => Err(Error::Unauthorized),
        }
    }

    /// Answers a request if its path is the aggregator's.
    pub async fn handle(&self, req: Request<Bytes>) -> Option<HttpResponse> {
        if !Self::is_aggregator_path(req.uri().path()) {
            return None;
        }
        let r = self.route(req).await;
        Some(r.unwrap_or_else(|e| {
            if !e.status().is_server_error() {
                return error_response(&e);
            }
            // A failure on this side or ClickHouse's: the answer says so in general terms with
            // an id, and the log line carries the same id for the operator.
            let id = http::request_id();
            match &e {
                // ClickHouse's text can quote SQL and the values in it: only its code is logged.
                Error::ClickHouse(m) => tracing::warn!(
                    request_id = %id,
                    code = ?db::error_code(m),
                    "ClickHouse request failed"
                ),
                other => tracing::warn!(request_id = %id, error = %other, "request failed"),
            }
            http::error_response_with_id(&e, &id)
        }))
    }

    async fn route(&self, req: Request<Bytes>) -> Result<HttpResponse, Error> {
        let path = req.uri().path().to_string();
        if let Some(r) = account::public(self, &req, &path).await {
            return r;
        }
        if let Some(r) = digest::public(self, &req, &path).await {
            return r;
        }
        let access = self.access(&req).await?;
        if let Some(r) = account::route(self, &access, &req, &path).await {
            return r;
        }
        if let Some(r) = digest::route(self, &access, &req, &path).await {
            return r;
        }
        if let Some(r) = segments::route(self, &access, &req, &path).await {
            return r;
        }
        if let Some(r) = reports::route(self, &access, &req, &path).await {
            return r;
        }
        admin::route(self, &access, &req, &path).await
    }

    /// Where `domain`'s settings come from and what they are, if it is registered.
    pub fn site_settings(&self, domain: &str) -> Option<(Source, SiteSettings)> {
        if let Some(rec) = self.registry.snapshot().site(domain) {
            return Some((Source::Stored, rec.settings.clone()));
        }
        self.cfg
            .flag_site(domain)
            .then(|| (Source::Flags, self.cfg.flag_settings(domain)))
    }

    /// Every registered site (flags ∪ stored), sorted.
    pub fn site_list(&self) -> Vec<String> {
        let snap = self.registry.snapshot();
        let mut v: Vec<String> = snap
            .sites()
            .map(|s| s.domain.clone())
            .chain(self.cfg.sites.iter().cloned())
            .chain(self.cfg.child_sites.iter().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The site as the query engine sees it, if registered.
    pub fn site(&self, domain: &str) -> Option<SiteView> {
        let (_, s) = self.site_settings(domain)?;
        Some(site::view(domain, &s))
    }

    /// Runs a Stats API query given as JSON bytes (no access check: callers do it) with exact
    /// numbers, as embedding code and benches that compare against the stored truth need.
    pub async fn query(&self, body: &[u8], now: DateTime<Utc>) -> Result<HttpResponse, Error> {
        let site_id = stats::site_id(body)?;
        let site = self.site(&site_id).ok_or(Error::UnknownSite(site_id))?;
        let (_, result) = stats::run(&self.client, &site, body, now, self.shared()).await?;
        Ok(json_response(StatusCode::OK, &result))
    }

    /// [`Aggregator::query`] asked by `access`: through the configured privacy mode (dp:
    /// noisy numbers, `access`'s budget spent), as `POST /api/v2/query` answers.
    pub async fn query_as(
        &self,
        access: &auth::Access,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<HttpResponse, Error> {
        let site_id = stats::site_id(body)?;
        let site = self.site(&site_id).ok_or(Error::UnknownSite(site_id))?;
        let (_, result) =
            stats::run(&self.client, &site, body, now, self.shared_for(access, now)).await?;
        Ok(json_response(StatusCode::OK, &result))
    }

    /// Today's snapshots, when `today_snapshot_secs` is not 0.
    pub fn snapshots(&self) -> Option<&Arc<snapshot::Snapshots>> {
        self.snapshots.as_ref()
    }

    /// What a request's reports share with this aggregator: today's snapshots and the
    /// identical reads under way ([`db::Inflight`]).
    pub fn shared(&self) -> stats::Shared<'_> {
        stats::Shared {
            snapshots: self.snapshots.as_ref(),
            inflight: Some(&self.inflight),
            screens: Some(&self.screens),
            heavy: Some(&self.heavy),
            asker: None,
        }
    }

    /// [`Aggregator::shared`] for a question `access` asks at `now`: published numbers go
    /// through differential privacy (in dp mode), spending that credential's budget.
    pub fn shared_for<'a>(
        &'a self,
        access: &'a auth::Access,
        now: DateTime<Utc>,
    ) -> stats::Shared<'a> {
        stats::Shared {
            asker: Some(stats::Asker {
                privacy: &self.privacy,
                credential: access.credential(),
                now,
                share: 1.0,
            }),
            ..self.shared()
        }
    }

    /// The origins that may embed the page `req` asks for: a shared link's dashboard
    /// `/share/{domain}?embed={link id}` whose link is of that site, live (not revoked, not
    /// expired) and made with `embed_origins`; `None` for every other request (the page is
    /// then served unframeable). See [`guard::Guard::harden_embedded`].
    pub fn embed_origins<B>(&self, req: &Request<B>) -> Option<Vec<String>> {
        let domain = req.uri().path().strip_prefix("/share/")?;
        if domain.is_empty() || domain.contains('/') {
            return None;
        }
        let id = form_urlencoded::parse(req.uri().query()?.as_bytes())
            .find(|(k, _)| k == "embed")
            .map(|(_, v)| v.into_owned())?;
        let snap = self.registry.snapshot();
        let link = snap.link(&id)?;
        let live = !link.revoked
            && (link.expires_at == 0 || self.now().timestamp() < i64::from(link.expires_at));
        (live && link.site.eq_ignore_ascii_case(domain) && !link.embed_origins.is_empty())
            .then(|| link.embed_origins.clone())
    }

    /// Its privacy state (settings, noise keys, budget charges).
    pub fn privacy(&self) -> &Arc<privacy::Privacy> {
        &self.privacy
    }

    /// The ClickHouse client reports read with.
    pub fn client(&self) -> &clickhouse::Client {
        &self.client
    }

    /// The bound on report requests under way per credential ([`cost`]); tests hold its
    /// permits to fill a credential's limit without timing.
    pub fn cost(&self) -> &cost::Gate {
        &self.gate
    }

    /// The bound on reports not answered from the per-day visit rollup at once ([`cost::Heavy`]).
    pub fn heavy(&self) -> &cost::Heavy {
        &self.heavy
    }

    /// The per-credential request rate limit ([`auth::RateLimiter`]) and the time it reads.
    pub(crate) fn rate_limit(&self, credential: &str, n: u32) -> Result<(), Error> {
        self.limiter
            .take(credential, n, self.clock.instant())
            .map_err(Error::RateLimited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(k: u64) -> Aggregator {
        Aggregator::new(
            AggregatorConfig {
                sites: vec!["a.com".into()],
                api_token: Some("s3cret".into()),
                min_visitors: k,
                ..Default::default()
            },
            ClickHouseConfig::new("http://127.0.0.1:1", "veil"),
        )
    }

    #[test]
    fn config_is_checked_with_the_flag_named() {
        let ok = AggregatorConfig {
            sites: vec!["a.com".into()],
            child_sites: vec!["kids.a.com".into()],
            site_aliases: vec!["www.a.com=a.com".into()],
            api_token: Some("0123456789abcdef".into()),
            today_snapshot_secs: 30,
            ..Default::default()
        };
        ok.validate().unwrap();
        AggregatorConfig::default().validate().unwrap();
        let err = |c: AggregatorConfig| c.validate().unwrap_err().to_string();
        assert!(err(AggregatorConfig {
            sites: vec!["not a domain".into()],
            ..ok.clone()
        })
        .contains("--site"));
        assert!(err(AggregatorConfig {
            site_aliases: vec!["www.a.com".into()],
            ..ok.clone()
        })
        .contains("--site-alias"));
        assert!(err(AggregatorConfig {
            api_token: Some("short".into()),
            ..ok.clone()
        })
        .contains("--admin-token"));
        assert!(err(AggregatorConfig {
            min_visitors: 1,
            ..ok.clone()
        })
        .contains("--min-visitors"));
        assert!(err(AggregatorConfig {
            today_snapshot_secs: snapshot::MAX_AGE_SECS + 1,
            ..ok.clone()
        })
        .contains("--today-snapshot-secs"));
        let mut r = ok.clone();
        r.retention.default_days = 0;
        assert!(err(r).contains("--retention-days"));
        let mut r = ok.clone();
        r.retention.per_site.insert("a.com".into(), 0);
        assert!(err(r).contains("--site-retention"));
        for mb in [0, MAX_QUERY_MEMORY_MB + 1] {
            assert!(err(AggregatorConfig {
                query_memory_mb: mb,
                ..ok.clone()
            })
            .contains("--query-memory-mb"));
        }
        assert!(err(AggregatorConfig {
            max_concurrent_queries: cost::MAX_CONCURRENT_QUERIES + 1,
            ..ok.clone()
        })
        .contains("--max-concurrent-queries"));
        assert!(err(AggregatorConfig {
            max_heavy_queries: cost::MAX_CONCURRENT_QUERIES + 1,
            ..ok.clone()
        })
        .contains("--max-heavy-queries"));
        assert_eq!(
            Error::Config("x".into()).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[tokio::test]
    async fn token_is_required_when_set() {
        let a = agg(1);
        let req = Request::builder()
            .method("GET")
            .uri("/api/v1/sites")
            .body(Bytes::new())
            .unwrap();
        assert_eq!(
            a.handle(req).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
        let req = Request::builder()
            .method("GET")
            .uri("/api/v1/sites")
            .header("authorization", "Bearer s3cret")
            .body(Bytes::new())
            .unwrap();
        assert_eq!(a.handle(req).await.unwrap().status(), StatusCode::OK);
        let req = Request::builder()
            .method("GET")
            .uri("/elsewhere")
            .body(Bytes::new())
            .unwrap();
        assert!(a.handle(req).await.is_none());
    }
}
