//! The `veil` command line and its configuration: every setting comes, in rising precedence,
//! from built-in defaults, the TOML file named by `--config`, a `VEIL_*` environment variable,
//! and a flag. Each setting is declared once, in [`Layer`]: clap reads the flags and variables
//! into one `Layer`, serde the file into another, and [`Settings::load`] lays the first over the
//! second, fills in the defaults and validates everything before any socket is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};
use veil_aggregator::retention::Retention;
use veil_aggregator::AggregatorConfig;
use veil_collector::CollectorConfig;
use veil_schemas::ClickHouseConfig;

/// Privacy-preserving web and app analytics.
#[derive(Debug, Parser)]
#[command(name = "veil", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
    /// Settings shared by all subcommands.
    #[command(flatten)]
    pub opts: Opts,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything on one machine: managed ClickHouse (unless --clickhouse-url), migrations,
    /// collector, aggregator and dashboard on one address.
    Up {
        /// Also serve a demo site (`demo.veil.local`) and a demo app (`demo-app.veil.local`)
        /// and, when they have no events yet, fill them with 30 days of generated traffic
        /// (about 200 000 and 130 000 events, a few seconds).
        #[arg(long)]
        demo: bool,
    },
    /// Write realistic generated events for one --site straight into ClickHouse (computed by
    /// ClickHouse itself; the managed server under --data-dir unless --clickhouse-url).
    Gen(GenArgs),
    /// Only the collector (ingest endpoints, /healthz, /readyz; /metrics on --metrics-listen),
    /// against --clickhouse-url.
    Collector,
    /// Only the aggregator (Stats API) and the dashboard, against --clickhouse-url.
    Aggregator,
    /// Apply the schema migrations to --clickhouse-url.
    Migrate,
    /// Validate the configuration and print the effective settings.
    CheckConfig,
    /// A local cluster for demos and tests: ZooKeeper, 2 shards × 2 replicas of ClickHouse,
    /// two collectors and one aggregator under DATA_DIR/cluster, until Ctrl-C.
    Cluster(ClusterArgs),
    /// Delete raw events older than each site's retention now (the aggregator also does this daily).
    Purge,
    /// Delete every row of one site from every table, and report what was removed.
    EraseSite {
        /// The site's domain.
        domain: String,
    },
    /// GeoIP data in --geoip-dir: each database's age against its licence, or put freshly
    /// downloaded databases in place (docs/GEOIP.md, "Keeping the data current").
    #[command(subcommand)]
    Geoip(GeoipCommand),
    /// People's accounts, for setups without a browser (the first owner, automation).
    #[command(subcommand)]
    User(UserCommand),
    /// Read-only Stats API keys of one site.
    #[command(subcommand)]
    Key(KeyCommand),
    /// History from another analytics tool for one --site: import, list, delete.
    #[command(subcommand)]
    Import(ImportCommand),
}

/// `veil import` subcommands (ClickHouse as for `veil user`). Each takes one --site.
#[derive(Debug, Subcommand, Clone)]
pub enum ImportCommand {
    /// Import Plausible's CSV export (the zip of its "Export data", or one of its CSV files):
    /// daily visitors, sources, pages, entry/exit pages, locations, devices, browsers, OS and
    /// custom events, merged by `include.imports: true`. Importing the same file again changes
    /// nothing.
    Plausible {
        /// The export: `Plausible export …zip` or `imported_*_YYYYMMDD_YYYYMMDD.csv`.
        file: std::path::PathBuf,
    },
    /// List the site's imports (id, source, file, days, rows, when).
    List,
    /// Delete one import of the site and its numbers.
    Delete {
        /// The import's id (from `veil import list`).
        id: String,
    },
}

/// `veil user` subcommands. Against --clickhouse-url, or the managed ClickHouse under
/// --data-dir (the running one of `veil up` when there is one).
#[derive(Debug, Subcommand, Clone)]
pub enum UserCommand {
    /// Give the account of --email a role on one --site (none: every site), making the account
    /// when there is none: its password is read from the first line of standard input (at
    /// least 10 bytes), e.g. `printf '%s\n' "$PW" | veil user create --email you@example.com
    /// --role owner`.
    Create {
        /// The person's e-mail address (their login).
        #[arg(long)]
        email: String,
        /// owner, admin or viewer.
        #[arg(long)]
        role: String,
    },
}

/// `veil key` subcommands (ClickHouse as for `veil user`).
#[derive(Debug, Subcommand, Clone)]
pub enum KeyCommand {
    /// Print a new read-only Stats API key of the one --site (shown once; stored hashed).
    Create {
        /// A label shown in the site's settings.
        #[arg(long, default_value = "")]
        name: String,
    },
}

/// `veil geoip` subcommands. Neither needs ClickHouse.
#[derive(Debug, Subcommand, Clone)]
pub enum GeoipCommand {
    /// Print each database's source, build date and age against its limit; exit with status 1
    /// when one is past it (for cron or a monitoring check).
    Status,
    /// Check MaxMind DB files (DB-IP Lite, MaxMind GeoLite2 or GeoIP2; City or ASN) and move
    /// them into --geoip-dir as `city.mmdb` / `asn.mmdb`, where a running collector picks them
    /// up within 30 s. Installing a city.mmdb removes city-ipv4.mmdb and city-ipv6.mmdb.
    Install {
        /// The `.mmdb` files (uncompressed).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Install even a file built before the one it replaces.
        #[arg(long)]
        force: bool,
    },
}

/// `veil cluster` flags.
#[derive(Debug, Args, Clone)]
pub struct ClusterArgs {
    /// Collector processes (on the ports after --listen's).
    #[arg(long, default_value_t = 2)]
    pub collectors: usize,
    /// ClickHouse shards.
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// Replicas per shard.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
}

/// `veil gen` flags (the site is the one `--site`).
#[derive(Debug, Args, Clone)]
pub struct GenArgs {
    /// Events to write (exactly).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Days of data, ending now (today UTC is the last day).
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Seed: the same seed, counts and --end write the same rows.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Newest possible event time as Unix seconds [default: now].
    #[arg(long)]
    pub end: Option<i64>,
    /// Inserts run at the same time [default: 2].
    #[arg(long, default_value_t = 2)]
    pub parallel: usize,
}

/// The site `veil up --demo` serves and fills.
pub const DEMO_SITE: &str = "demo.veil.local";
/// The demo app `veil up --demo` serves and fills (app events: the dashboard's App view).
pub const DEMO_APP_SITE: &str = "demo-app.veil.local";

/// Options shared by all subcommands: the file to read, and every setting.
#[derive(Debug, Args, Default)]
pub struct Opts {
    /// TOML file with settings (keys are the flag names with `_` for `-`).
    #[arg(long, env = "VEIL_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// The settings given by flags and `VEIL_*` variables.
    #[command(flatten)]
    pub given: Layer,
}

layered! {
    /// Every setting, declared once: a flag (which also reads a `VEIL_*` variable) and a key of
    /// the TOML file (the flag's name with `_` for `-`). Clap fills one value from the command
    /// line and environment, serde another from the file; [`Layer::over`] lays the first over
    /// the second, and [`Settings::load`] fills in the defaults.
    #[derive(Debug, Args, Default, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Layer {
        /// Address to serve HTTP on [default: 127.0.0.1:8080].
        #[arg(long, env = "VEIL_LISTEN", global = true)]
        pub listen: Option<String>,
        /// ClickHouse HTTP URL; `veil up` starts a managed server when absent.
        #[arg(long, env = "VEIL_CLICKHOUSE_URL", global = true)]
        pub clickhouse_url: Option<String>,
        /// ClickHouse database for Veil's tables [default: veil].
        #[arg(long, env = "VEIL_CLICKHOUSE_DATABASE", global = true)]
        pub clickhouse_database: Option<String>,
        /// ClickHouse user.
        #[arg(long, env = "VEIL_CLICKHOUSE_USER", global = true)]
        pub clickhouse_user: Option<String>,
        /// ClickHouse password.
        #[arg(
            long,
            env = "VEIL_CLICKHOUSE_PASSWORD",
            global = true,
            hide_env_values = true
        )]
        pub clickhouse_password: Option<String>,
        /// ClickHouse cluster (a `remote_servers` name) Veil's tables span: sharded, replicated
        /// tables plus Distributed tables (docs/DEPLOY.md) [default: none, one server].
        #[arg(long, env = "VEIL_CLICKHOUSE_CLUSTER", global = true)]
        pub clickhouse_cluster: Option<String>,
        /// Directory for Veil's own files (managed ClickHouse data) [default: ./var].
        #[arg(long, env = "VEIL_DATA_DIR", global = true)]
        pub data_dir: Option<PathBuf>,
        /// Directory with the GeoIP databases (`make geoip` fills it) [default: DATA_DIR/geoip].
        #[arg(long, env = "VEIL_GEOIP_DIR", global = true)]
        pub geoip_dir: Option<PathBuf>,
        /// How often the collector checks the GeoIP files for a new version (1s to 1h)
        /// [default: 30s].
        #[arg(
            long,
            env = "VEIL_GEOIP_RELOAD",
            global = true,
            value_parser = humantime::parse_duration
        )]
        #[serde(deserialize_with = "crate::layer::humantime_opt")]
        pub geoip_reload: Option<Duration>,
        /// A site (domain) accepted without an API call; repeatable, or comma-separated in
        /// VEIL_SITE.
        #[arg(long = "site", env = "VEIL_SITE", value_delimiter = ',', global = true)]
        #[serde(rename = "site")]
        pub sites: Vec<String>,
        /// A child-directed site (registered too): no visitor hash, session, referrer, campaign,
        /// versions or props are stored, reports show page views only; repeatable.
        #[arg(
            long = "child-site",
            env = "VEIL_CHILD_SITE",
            value_delimiter = ',',
            global = true
        )]
        #[serde(rename = "child_site")]
        pub child_sites: Vec<String>,
        /// A site that decided not to honour `DNT: 1` (GPC is always honoured); repeatable.
        #[arg(
            long = "ignore-dnt-site",
            env = "VEIL_IGNORE_DNT_SITE",
            value_delimiter = ',',
            global = true
        )]
        #[serde(rename = "ignore_dnt_site")]
        pub ignore_dnt_sites: Vec<String>,
        /// `DOMAIN=PARAM`: a query parameter the site keeps in stored paths (e.g.
        /// `example.com=page`); every other query parameter is dropped; repeatable.
        #[arg(
            long = "site-query-param",
            env = "VEIL_SITE_QUERY_PARAM",
            value_delimiter = ',',
            global = true
        )]
        #[serde(rename = "site_query_param")]
        pub site_query_params: Vec<String>,
        /// A site that keeps bot hits, flagged with their reason, instead of dropping them;
        /// repeatable.
        #[arg(
            long = "keep-bots-site",
            env = "VEIL_KEEP_BOTS_SITE",
            value_delimiter = ',',
            global = true
        )]
        #[serde(rename = "keep_bots_site")]
        pub keep_bots_sites: Vec<String>,
        /// `ALIAS=DOMAIN`: an Umami website id or Aptabase app key naming a site; repeatable.
        #[arg(
            long = "site-alias",
            env = "VEIL_SITE_ALIAS",
            value_delimiter = ',',
            global = true
        )]
        #[serde(rename = "site_alias")]
        pub site_aliases: Vec<String>,
        /// Days raw events are kept [default: 395].
        #[arg(long, env = "VEIL_RETENTION_DAYS", global = true)]
        pub retention_days: Option<u32>,
        /// Per-site retention, `DOMAIN=DAYS`; repeatable.
        #[arg(
            long = "site-retention",
            env = "VEIL_SITE_RETENTION",
            value_delimiter = ',',
            global = true
        )]
        pub site_retention: Vec<String>,
        /// Header holding the client IP, checked in order before the socket peer; repeatable
        /// [default: x-forwarded-for].
        #[arg(
            long = "trusted-ip-header",
            env = "VEIL_TRUSTED_IP_HEADER",
            value_delimiter = ',',
            global = true
        )]
        #[serde(rename = "trusted_ip_header")]
        pub trusted_ip_headers: Vec<String>,
        /// Network (CIDR) or address of a load balancer or proxy allowed to set those headers;
        /// repeatable. From any other peer they are ignored. `0.0.0.0/0,::/0` trusts every peer.
        /// Private ranges are not trusted unless listed: behind SNAT anyone arrives from one
        /// [default: loopback].
        #[arg(
            long = "trusted-proxy",
            env = "VEIL_TRUSTED_PROXY",
            value_delimiter = ',',
            global = true
        )]
        #[serde(rename = "trusted_proxy")]
        pub trusted_proxies: Vec<String>,
        /// Network (CIDR) or address of servers that may send /v1/events overrides (`ip`,
        /// `user_agent`, a back-dated `timestamp`) without an ingest key; repeatable
        /// [default: loopback].
        #[arg(
            long = "trusted-sender",
            env = "VEIL_TRUSTED_SENDER",
            value_delimiter = ',',
            global = true
        )]
        #[serde(rename = "trusted_sender")]
        pub trusted_senders: Vec<String>,
        /// Largest request body in bytes [default: 262144].
        #[arg(long, env = "VEIL_MAX_BODY_BYTES", global = true)]
        pub max_body_bytes: Option<usize>,
        /// Most events in one /v1/events batch [default: 1000].
        #[arg(long, env = "VEIL_MAX_EVENTS_PER_BATCH", global = true)]
        pub max_events_per_batch: Option<usize>,
        /// Time to receive request headers, e.g. `10s` [default: 10s].
        #[arg(
            long,
            env = "VEIL_HEADER_READ_TIMEOUT",
            global = true,
            value_parser = humantime::parse_duration
        )]
        #[serde(deserialize_with = "crate::layer::humantime_opt")]
        pub header_read_timeout: Option<Duration>,
        /// Time to receive a request body [default: 10s].
        #[arg(
            long,
            env = "VEIL_BODY_READ_TIMEOUT",
            global = true,
            value_parser = humantime::parse_duration
        )]
        #[serde(deserialize_with = "crate::layer::humantime_opt")]
        pub body_read_timeout: Option<Duration>,
        /// Largest spool on disk (events accepted, not yet in ClickHouse) before requests get 503
        /// [default: 1073741824].
        #[arg(long, env = "VEIL_SPOOL_MAX_BYTES", global = true)]
        pub spool_max_bytes: Option<u64>,
        /// `fsync`: a 2xx means the event is on disk; `none`: written but not synced (faster,
        /// survives a process crash but not a power cut) [default: fsync].
        #[arg(long, env = "VEIL_DURABILITY", global = true)]
        pub durability: Option<veil_collector::pipeline::spool::Durability>,
        /// With `fsync`: bytes of zeros the spool writes ahead of its data, so that each
        /// acknowledged write overwrites allocated blocks and its `fdatasync` journals no new
        /// file size; 0 = off (for copy-on-write filesystems, where it gains nothing)
        /// [default: 1048576].
        #[arg(long, env = "VEIL_SPOOL_PREALLOCATE_BYTES", global = true)]
        pub spool_preallocate_bytes: Option<u64>,
        /// Requests per second per client IP on ingest routes, bursts of twice that; 0 = off
        /// [default: 100].
        #[arg(long, env = "VEIL_RATE_LIMIT_IP", global = true)]
        pub rate_limit_ip: Option<u32>,
        /// Events per second per site, bursts of twice that; 0 = off [default: 0].
        #[arg(long, env = "VEIL_RATE_LIMIT_SITE", global = true)]
        pub rate_limit_site: Option<u32>,
        /// Oldest event time accepted from senders that supply one (apps offline), e.g. `3d`
        /// [default: 7d].
        #[arg(
            long,
            env = "VEIL_MAX_EVENT_AGE",
            global = true,
            value_parser = humantime::parse_duration
        )]
        #[serde(deserialize_with = "crate::layer::humantime_opt")]
        pub max_event_age: Option<Duration>,
        /// Open connections at most; more get 503 [default: 10000].
        #[arg(long, env = "VEIL_MAX_CONNECTIONS", global = true)]
        pub max_connections: Option<usize>,
        /// Flush a batch at this many rows [default: 50000].
        #[arg(long, env = "VEIL_BATCH_MAX_ROWS", global = true)]
        pub batch_max_rows: Option<usize>,
        /// Flush a batch at about this many bytes [default: 33554432].
        #[arg(long, env = "VEIL_BATCH_MAX_BYTES", global = true)]
        pub batch_max_bytes: Option<usize>,
        /// Flush a batch when its oldest row is this old [default: 1s].
        #[arg(
            long,
            env = "VEIL_BATCH_MAX_AGE",
            global = true,
            value_parser = humantime::parse_duration
        )]
        #[serde(deserialize_with = "crate::layer::humantime_opt")]
        pub batch_max_age: Option<Duration>,
        /// Time shutdown may take to drain and flush [default: 30s].
        #[arg(
            long,
            env = "VEIL_SHUTDOWN_TIMEOUT",
            global = true,
            value_parser = humantime::parse_duration
        )]
        #[serde(deserialize_with = "crate::layer::humantime_opt")]
        pub shutdown_timeout: Option<Duration>,
        /// Address of the metrics listener, the only one serving Prometheus' /metrics (never the
        /// ingest port: its per-event counters are a side channel); `off` disables it
        /// [default: 127.0.0.1:9464].
        #[arg(long, env = "VEIL_METRICS_LISTEN", global = true)]
        pub metrics_listen: Option<String>,
        /// Bearer token (at least 16 characters) the metrics listener then requires; needed
        /// when --metrics-listen is not a loopback address.
        #[arg(long, env = "VEIL_METRICS_TOKEN", global = true, hide_env_values = true)]
        pub metrics_token: Option<String>,
        /// The URL browsers reach the dashboard at, e.g. `https://veil.example` (behind a proxy):
        /// its host is the one the dashboard and Stats API answer for besides IP addresses (and
        /// `localhost` on a loopback --listen); any other Host gets 421 (DNS rebinding).
        #[arg(long, env = "VEIL_PUBLIC_URL", global = true)]
        pub public_url: Option<String>,
        /// SMTP relay for e-mailed invitations, digests and alerts:
        /// `smtps://USER:PASSWORD@HOST[:465]` (TLS), `smtp://USER:PASSWORD@HOST[:587]?tls=required`
        /// (STARTTLS), or `smtp://[USER:PASSWORD@]HOST[:25]` (plain SMTP, e.g. a local MTA on
        /// 127.0.0.1); needs --smtp-from and --public-url. Unset: nothing is e-mailed.
        #[arg(long, env = "VEIL_SMTP_URL", global = true, hide_env_values = true)]
        pub smtp_url: Option<String>,
        /// PEM file of CA certificates trusted for --smtp-url's TLS besides the system's roots
        /// (a private relay's CA).
        #[arg(long, env = "VEIL_SMTP_CA_FILE", global = true)]
        pub smtp_ca_file: Option<PathBuf>,
        /// The From of those e-mails, e.g. `Veil <veil@example.com>`.
        #[arg(long, env = "VEIL_SMTP_FROM", global = true)]
        pub smtp_from: Option<String>,
        /// How often (seconds, 1 to 3600) the e-mail scheduler looks for digests due and
        /// checks watched sites for traffic spikes [default: 60].
        #[arg(long, env = "VEIL_MAIL_CHECK_SECS", global = true)]
        pub mail_check_secs: Option<u32>,
        /// Admin token (at least 16 characters): reads every site's stats and manages sites, keys
        /// and shared links through /api/v1/sites (required when listening beyond loopback).
        #[arg(long, env = "VEIL_ADMIN_TOKEN", global = true, hide_env_values = true)]
        pub admin_token: Option<String>,
        /// Old name of --admin-token, still accepted (--admin-token wins when both are set).
        #[arg(long, env = "VEIL_API_TOKEN", global = true, hide_env_values = true)]
        pub api_token: Option<String>,
        /// k-anonymity: no report number describes fewer visitors than this [default: 5].
        #[arg(long, env = "VEIL_MIN_VISITORS", global = true)]
        pub min_visitors: Option<u64>,
        /// Dashboard reports may show the current day from a snapshot at most this many seconds
        /// old (at most 120) that misses at most 0.1 % of the day's hits; 0: always live
        /// [default: 30].
        #[arg(long, env = "VEIL_TODAY_SNAPSHOT_SECS", global = true)]
        pub today_snapshot_secs: Option<u64>,
        /// Memory one report query may use in ClickHouse, in MiB; large GROUP BYs and sorts
        /// spill to disk past a third of it, and a query past it is refused with a 400 naming
        /// its filters [default: 3072].
        #[arg(long, env = "VEIL_QUERY_MEMORY_MB", global = true)]
        pub query_memory_mb: Option<u64>,
        /// Report requests one site key, shared link or other non-admin credential may have
        /// under way at once (an export counts as one, running its reports one after
        /// another); past it, 429 with Retry-After. 0: no bound; the admin token is never
        /// bounded [default: 6].
        #[arg(long, env = "VEIL_MAX_CONCURRENT_QUERIES", global = true)]
        pub max_concurrent_queries: Option<u32>,
        /// Reports not answered from the per-day visit rollup (visit rows, raw events, the event
        /// rollups: filters the per-day rows do not answer) this
        /// aggregator runs at once, whoever asks; past it they wait up to a minute for a place,
        /// then 429 with Retry-After. About ClickHouse's cores divided by the cores one query
        /// uses (its `max_threads`); 0: no bound [default: 2].
        #[arg(long, env = "VEIL_MAX_HEAVY_QUERIES", global = true)]
        pub max_heavy_queries: Option<u32>,
        /// Milliseconds the first of several reports asked at once over the same filtered
        /// visit rows (a dashboard's panels under a page pattern, a property, `has_done`…)
        /// waits for the others, so that one statement reads those rows for all of them; 0:
        /// each reads them itself [default: 25].
        #[arg(long, env = "VEIL_GATHER_MS", global = true)]
        pub gather_ms: Option<u64>,
        /// How published numbers are protected: `dp` (differential privacy: calibrated noise,
        /// noisy thresholds, a budget per credential and day) or `exact` (exact numbers with
        /// k-anonymity only; warned at start-up and in the dashboard) [default: dp].
        #[arg(long, env = "VEIL_PRIVACY", global = true)]
        pub privacy: Option<String>,
        /// ε one release of one question spends (dp mode) [default: 0.5].
        #[arg(long, env = "VEIL_EPSILON_QUERY", global = true)]
        pub epsilon_query: Option<f64>,
        /// ε one credential (admin, site key, shared link) may spend per UTC day (dp mode)
        /// [default: 50].
        #[arg(long, env = "VEIL_EPSILON_DAY", global = true)]
        pub epsilon_day: Option<f64>,
        /// δ of one release's noisy row threshold (dp mode) [default: 1e-6].
        #[arg(long, env = "VEIL_DP_DELTA", global = true)]
        pub dp_delta: Option<f64>,
        /// Days one person counts as in one range (dp mode): a range of D days counts a person
        /// as min(D, this) visitor ids; 0: no cap (every day of the range) [default: 7].
        #[arg(long, env = "VEIL_DP_PERSON_DAYS", global = true)]
        pub dp_person_days: Option<u64>,
        /// Log filter (tracing-subscriber syntax) [default: info].
        #[arg(long, env = "VEIL_LOG", global = true)]
        pub log: Option<String>,
    }
}

impl Layer {
    /// The file's settings, or none without `--config`.
    fn read(config: Option<&Path>) -> Result<Layer> {
        let Some(p) = config else {
            return Ok(Layer::default());
        };
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("reading --config {}", p.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing --config {}", p.display()))
    }

    /// `--api-token` is the old name of `--admin-token`: within one layer the new name wins, and
    /// a layer that gives either name overrides both names of the layers below it.
    fn with_old_names_folded(mut self) -> Layer {
        if self.admin_token.is_none() {
            self.admin_token = self.api_token.take();
        }
        self
    }
}

/// The effective, validated settings.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// HTTP address.
    pub listen: SocketAddr,
    /// ClickHouse URL given by the user (none: `veil up` manages one).
    pub clickhouse_url: Option<String>,
    /// Database, user, password (password never printed).
    pub clickhouse: ClickHouseConfig,
    /// Veil's data directory.
    pub data_dir: PathBuf,
    /// Collector settings.
    pub collector: CollectorConfig,
    /// Aggregator settings.
    pub aggregator: AggregatorConfig,
    /// Whether an API token is set (the token itself is never printed).
    pub api_token_set: bool,
    /// Log filter.
    pub log: String,
}

impl Settings {
    /// Merges defaults, file, environment and flags, then validates for `command`.
    pub fn load(opts: Opts, command: &Command) -> Result<Self> {
        let file = Layer::read(opts.config.as_deref())?;
        let given = opts
            .given
            .with_old_names_folded()
            .over(file.with_old_names_folded());
        let listen_s = given.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_s.parse().with_context(|| {
            format!("--listen {listen_s:?} is not an address like 127.0.0.1:8080")
        })?;
        let clickhouse_url = given.clickhouse_url;
        let mut clickhouse = ClickHouseConfig::new(
            clickhouse_url
                .clone()
                .unwrap_or_else(|| "http://127.0.0.1:8123".into()),
            given.clickhouse_database.unwrap_or_else(|| "veil".into()),
        );
        clickhouse.user = given.clickhouse_user;
        clickhouse.password = given.clickhouse_password;
        clickhouse.cluster = given.clickhouse_cluster;
        clickhouse.validate()?;
        if clickhouse.cluster.is_some()
            && clickhouse_url.is_none()
            && matches!(command, Command::Up { .. } | Command::Gen(_))
        {
            bail!("--clickhouse-cluster needs --clickhouse-url (a node of the cluster): the managed ClickHouse of `veil up` is a single server");
        }
        let mut sites = given.sites;
        if let Command::Gen(_) = command {
            if sites.len() != 1 {
                bail!(
                    "veil gen needs exactly one --site (the site to fill), got {}",
                    sites.len()
                );
            }
        }
        if matches!(command, Command::Up { demo: true }) {
            for demo in [DEMO_SITE, DEMO_APP_SITE] {
                if !sites.iter().any(|s| s == demo) {
                    sites.push(demo.to_string());
                }
            }
        }
        let mut collector = CollectorConfig {
            sites,
            child_sites: given.child_sites,
            ignore_dnt_sites: given.ignore_dnt_sites,
            site_aliases: given.site_aliases,
            keep_bots_sites: given.keep_bots_sites,
            site_query_params: given.site_query_params,
            ..CollectorConfig::default()
        };
        if !given.trusted_ip_headers.is_empty() {
            collector.trusted_ip_headers = given.trusted_ip_headers;
        }
        if !given.trusted_proxies.is_empty() {
            collector.trusted_proxies =
                veil_collector::config::parse_trusted_proxies(&given.trusted_proxies)?;
        }
        if !given.trusted_senders.is_empty() {
            collector.trusted_senders =
                veil_collector::config::parse_trusted_senders(&given.trusted_senders)?;
        }
        let l = &mut collector.limits;
        l.max_body_bytes = given.max_body_bytes.unwrap_or(l.max_body_bytes);
        l.max_events_per_batch = given.max_events_per_batch.unwrap_or(l.max_events_per_batch);
        l.header_read_timeout = given.header_read_timeout.unwrap_or(l.header_read_timeout);
        l.body_read_timeout = given.body_read_timeout.unwrap_or(l.body_read_timeout);
        l.rate_limit_ip = given.rate_limit_ip.unwrap_or(l.rate_limit_ip);
        l.rate_limit_site = given.rate_limit_site.unwrap_or(l.rate_limit_site);
        l.max_connections = given.max_connections.unwrap_or(l.max_connections);
        l.max_event_age = given.max_event_age.unwrap_or(l.max_event_age);
        let b = &mut collector.batch;
        b.max_rows = given.batch_max_rows.unwrap_or(b.max_rows);
        b.max_bytes = given.batch_max_bytes.unwrap_or(b.max_bytes);
        b.max_age = given.batch_max_age.unwrap_or(b.max_age);
        collector.shutdown_timeout = given.shutdown_timeout.unwrap_or(collector.shutdown_timeout);
        let data_dir = given.data_dir.unwrap_or_else(|| PathBuf::from("./var"));
        collector.spool.dir = data_dir.join("spool");
        collector.geoip_dir = Some(given.geoip_dir.unwrap_or_else(|| data_dir.join("geoip")));
        collector.geoip_reload = given.geoip_reload.unwrap_or(collector.geoip_reload);
        collector.spool.max_bytes = given.spool_max_bytes.unwrap_or(collector.spool.max_bytes);
        collector.spool.durability = given.durability.unwrap_or_default();
        collector.spool.preallocate_bytes = given
            .spool_preallocate_bytes
            .unwrap_or(collector.spool.preallocate_bytes);
        if let Some(v) = &given.metrics_listen {
            collector.metrics.listen = veil_collector::config::MetricsSettings::parse_listen(v)?;
        }
        collector.metrics.token = given.metrics_token.filter(|t| !t.is_empty());
        collector.validate()?;
        let api_token = given.admin_token.filter(|t| !t.is_empty());
        let serves_stats = matches!(command, Command::Up { .. } | Command::Aggregator);
        if serves_stats && api_token.is_none() && !listen.ip().is_loopback() {
            bail!(
                "--listen {listen} is reachable from other machines but no --admin-token \
                 (old name --api-token) is set: the Stats API, admin API and dashboard would be open \
                 to anyone. Set --admin-token (or VEIL_ADMIN_TOKEN) or listen on 127.0.0.1"
            );
        }
        let min_visitors = given.min_visitors.unwrap_or(5);
        let today_snapshot_secs = given.today_snapshot_secs.unwrap_or(30);
        if matches!(
            command,
            Command::Collector
                | Command::Aggregator
                | Command::Migrate
                | Command::Purge
                | Command::EraseSite { .. }
        ) && clickhouse_url.is_none()
        {
            bail!("--clickhouse-url is required for this subcommand (only `veil up` manages its own ClickHouse)");
        }
        let retention = Retention::parse(given.retention_days, &given.site_retention)?;
        let aggregator = AggregatorConfig {
            sites: collector
                .sites
                .iter()
                .chain(&collector.child_sites)
                .cloned()
                .collect(),
            child_sites: collector.child_sites.clone(),
            ignore_dnt_sites: collector.ignore_dnt_sites.clone(),
            keep_bots_sites: collector.keep_bots_sites.clone(),
            site_aliases: collector.site_aliases.clone(),
            public_url: given.public_url.filter(|u| !u.is_empty()),
            smtp_url: given.smtp_url.filter(|u| !u.is_empty()),
            smtp_ca_file: given.smtp_ca_file.filter(|p| !p.as_os_str().is_empty()),
            smtp_from: given.smtp_from.filter(|u| !u.is_empty()),
            mail_check_secs: given.mail_check_secs.unwrap_or(60),
            api_token: api_token.clone(),
            // People log in; nothing is open to whoever reaches the port.
            accounts: true,
            min_visitors,
            retention,
            today_snapshot_secs,
            query_memory_mb: given
                .query_memory_mb
                .unwrap_or(veil_aggregator::db::DEFAULT_QUERY_MEMORY_MB),
            max_concurrent_queries: given
                .max_concurrent_queries
                .unwrap_or(veil_aggregator::cost::DEFAULT_MAX_CONCURRENT_QUERIES),
            max_heavy_queries: given
                .max_heavy_queries
                .unwrap_or(veil_aggregator::cost::DEFAULT_MAX_HEAVY_QUERIES),
            gather_ms: given
                .gather_ms
                .unwrap_or(veil_aggregator::screen::DEFAULT_GATHER_MS),
            privacy: {
                let d = veil_aggregator::privacy::Settings::default();
                veil_aggregator::privacy::Settings {
                    mode: match &given.privacy {
                        Some(m) => m.parse().map_err(|e: String| anyhow::anyhow!(e))?,
                        None => d.mode,
                    },
                    epsilon_query: given.epsilon_query.unwrap_or(d.epsilon_query),
                    epsilon_day: given.epsilon_day.unwrap_or(d.epsilon_day),
                    delta: given.dp_delta.unwrap_or(d.delta),
                    bounds: veil_aggregator::privacy::Bounds {
                        person_days: given.dp_person_days.unwrap_or(d.bounds.person_days),
                        ..d.bounds
                    },
                }
            },
            ..AggregatorConfig::default()
        };
        // The aggregator's own rules (token length, k, snapshot age, site names and aliases,
        // retention), as for the collector above.
        aggregator.validate()?;
        Ok(Settings {
            listen,
            clickhouse_url,
            clickhouse,
            data_dir,
            collector,
            aggregator,
            api_token_set: api_token.is_some(),
            log: given.log.unwrap_or_else(|| "info".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings> {
        let cli = Cli::try_parse_from(std::iter::once("veil").chain(args.iter().copied()))?;
        Settings::load(cli.opts, &cli.command)
    }

    #[test]
    fn defaults() {
        let s = parse(&["up"]).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.clickhouse.database, "veil");
        assert_eq!(s.data_dir, PathBuf::from("./var"));
        assert_eq!(s.aggregator.min_visitors, 5);
        assert_eq!(s.aggregator.today_snapshot_secs, 30);
    }

    #[test]
    fn smtp_flags_are_checked_before_serving() {
        assert_eq!(parse(&["up"]).unwrap().aggregator.smtp_url, None);
        let ok = [
            "up",
            "--smtp-url",
            "smtp://127.0.0.1:2525",
            "--smtp-from",
            "Veil <veil@example.com>",
            "--public-url",
            "https://veil.example",
        ];
        let s = parse(&ok).unwrap();
        assert_eq!(
            s.aggregator.smtp_url.as_deref(),
            Some("smtp://127.0.0.1:2525")
        );
        // `veil check-config` shows the URL without its password.
        let mut with_password = ok.to_vec();
        with_password[2] = "smtp://veil:s3cret@127.0.0.1:2525";
        let shown = serde_json::to_string(&parse(&with_password).unwrap()).unwrap();
        assert!(
            shown.contains("\"smtp_url\":\"smtp://veil:…@127.0.0.1:2525\"")
                && !shown.contains("s3cret"),
            "{shown}"
        );
        for (bad, names) in [
            (vec!["up", "--smtp-url", "http://x"], "--smtp-url"),
            (vec!["up", "--smtp-url", "smtp://h"], "--smtp-from"),
            (
                vec!["up", "--smtp-url", "smtp://h", "--smtp-from", "nobody"],
                "--smtp-from",
            ),
            (
                vec!["up", "--smtp-url", "smtp://h", "--smtp-from", "a@b.c"],
                "--public-url",
            ),
            (
                vec![
                    "up",
                    "--smtp-url",
                    "smtps://u:secret@h",
                    "--smtp-from",
                    "a@b.c",
                    "--public-url",
                    "https://veil.example",
                    "--smtp-ca-file",
                    "/nonexistent/ca.pem",
                ],
                "--smtp-ca-file /nonexistent/ca.pem: cannot be read",
            ),
            (
                vec!["up", "--smtp-ca-file", "/nonexistent/ca.pem"],
                "no --smtp-url",
            ),
        ] {
            let e = parse(&bad).unwrap_err().to_string();
            assert!(e.contains(names), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_query_memory_budget_is_a_flag_checked_before_serving() {
        let s = parse(&["up"]).unwrap();
        assert_eq!(
            s.aggregator.query_memory_mb,
            veil_aggregator::db::DEFAULT_QUERY_MEMORY_MB
        );
        let s = parse(&["up", "--query-memory-mb", "512"]).unwrap();
        assert_eq!(s.aggregator.query_memory_mb, 512);
        let e = parse(&["up", "--query-memory-mb", "0"]).unwrap_err();
        assert!(e.to_string().contains("--query-memory-mb"), "{e}");
        let s = parse(&["up"]).unwrap();
        assert_eq!(
            s.aggregator.max_concurrent_queries,
            veil_aggregator::cost::DEFAULT_MAX_CONCURRENT_QUERIES
        );
        let s = parse(&["up", "--max-concurrent-queries", "2"]).unwrap();
        assert_eq!(s.aggregator.max_concurrent_queries, 2);
        let e = parse(&["up", "--max-concurrent-queries", "100000"]).unwrap_err();
        assert!(e.to_string().contains("--max-concurrent-queries"), "{e}");
        let s = parse(&["up", "--max-heavy-queries", "8"]).unwrap();
        assert_eq!(s.aggregator.max_heavy_queries, 8);
        assert_eq!(
            parse(&["up"]).unwrap().aggregator.max_heavy_queries,
            veil_aggregator::cost::DEFAULT_MAX_HEAVY_QUERIES
        );
        let e = parse(&["up", "--max-heavy-queries", "100000"]).unwrap_err();
        assert!(e.to_string().contains("--max-heavy-queries"), "{e}");
        assert_eq!(
            parse(&["up", "--gather-ms", "0"])
                .unwrap()
                .aggregator
                .gather_ms,
            0
        );
        assert_eq!(
            parse(&["up"]).unwrap().aggregator.gather_ms,
            veil_aggregator::screen::DEFAULT_GATHER_MS
        );
        let e = parse(&["up", "--gather-ms", "5000"]).unwrap_err();
        assert!(e.to_string().contains("--gather-ms"), "{e}");
        let s = parse(&["up"]).unwrap();
        assert_eq!(
            s.aggregator.privacy.mode,
            veil_aggregator::privacy::Mode::Dp
        );
        let s = parse(&["up", "--privacy", "exact", "--epsilon-day", "20"]).unwrap();
        assert_eq!(
            s.aggregator.privacy.mode,
            veil_aggregator::privacy::Mode::Exact
        );
        assert_eq!(s.aggregator.privacy.epsilon_day, 20.0);
        let e = parse(&["up", "--privacy", "none"]).unwrap_err();
        assert!(e.to_string().contains("--privacy"), "{e}");
        let e = parse(&["up", "--epsilon-query", "0"]).unwrap_err();
        assert!(e.to_string().contains("--epsilon-query"), "{e}");
    }

    #[test]
    fn today_snapshots_are_bounded_and_can_be_off() {
        let s = parse(&["up", "--today-snapshot-secs", "0"]).unwrap();
        assert_eq!(s.aggregator.today_snapshot_secs, 0);
        let e = parse(&["up", "--today-snapshot-secs", "121"]).unwrap_err();
        assert!(e.to_string().contains("--today-snapshot-secs"), "{e}");
    }

    #[test]
    fn trusted_proxies_and_senders_default_to_loopback_and_are_checked() {
        let s = parse(&["up"]).unwrap();
        for nets in [&s.collector.trusted_proxies, &s.collector.trusted_senders] {
            let nets: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
            assert_eq!(nets, vec!["127.0.0.0/8", "::1/128"]);
        }
        let s = parse(&["up", "--trusted-sender", "10.0.0.0/8"]).unwrap();
        assert_eq!(s.collector.trusted_senders[0].to_string(), "10.0.0.0/8");
        let e = parse(&["up", "--trusted-sender", "app-servers"]).unwrap_err();
        assert!(e.to_string().contains("--trusted-sender"), "{e}");
        let s = parse(&["up", "--public-url", "https://veil.example"]).unwrap();
        assert_eq!(
            s.aggregator.public_url.as_deref(),
            Some("https://veil.example")
        );
        let e = format!(
            "{:#}",
            parse(&["up", "--public-url", "veil.example"]).unwrap_err()
        );
        assert!(e.contains("--public-url"), "{e}");
        let s = parse(&["up", "--trusted-proxy", "203.0.113.0/24,2001:db8::7"]).unwrap();
        let nets: Vec<String> = s
            .collector
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, vec!["203.0.113.0/24", "2001:db8::7/128"]);
        let e = parse(&["up", "--trusted-proxy", "lb.internal"]).unwrap_err();
        assert!(e.to_string().contains("--trusted-proxy"), "{e}");
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("veil.toml");
        std::fs::write(&p, "site = [\"a.com\"]\nclickhouse_database = \"fromfile\"\nbatch_max_age = \"250ms\"\nlisten = \"127.0.0.1:9000\"\n").unwrap();
        let s = parse(&[
            "up",
            "--config",
            p.to_str().unwrap(),
            "--listen",
            "127.0.0.1:9100",
        ])
        .unwrap();
        assert_eq!(s.collector.sites, vec!["a.com"]);
        assert_eq!(s.clickhouse.database, "fromfile");
        assert_eq!(s.collector.batch.max_age, Duration::from_millis(250));
        assert_eq!(s.listen.port(), 9100, "a flag beats the file");
    }

    #[test]
    fn a_flag_list_replaces_the_file_list_and_the_old_token_name_is_one_setting() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("veil.toml");
        std::fs::write(
            &p,
            "site = [\"a.com\", \"b.com\"]\ntrusted_ip_header = [\"x-real-ip\"]\n\
             admin_token = \"file-0123456789abcdef\"\nheader_read_timeout = \"3s\"\n",
        )
        .unwrap();
        let config = p.to_str().unwrap();
        let s = parse(&["up", "--config", config, "--site", "c.com"]).unwrap();
        assert_eq!(s.collector.sites, vec!["c.com"], "replaced, not extended");
        assert_eq!(s.collector.trusted_ip_headers, vec!["x-real-ip"]);
        assert_eq!(
            s.collector.limits.header_read_timeout,
            Duration::from_secs(3)
        );
        assert_eq!(
            s.aggregator.api_token.as_deref(),
            Some("file-0123456789abcdef")
        );
        // A flag under the old name still beats the file's new name.
        let flag = "flag-0123456789abcdef";
        let s = parse(&["up", "--config", config, "--api-token", flag]).unwrap();
        assert_eq!(s.aggregator.api_token.as_deref(), Some(flag));
        let e = format!(
            "{:#}",
            parse(&["up", "--config", config, "--header-read-timeout", "soon"]).unwrap_err()
        );
        assert!(e.contains("soon"), "{e}");
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("veil.toml");
        std::fs::write(&p, "sitez = [\"a.com\"]\n").unwrap();
        let e = format!(
            "{:#}",
            parse(&["up", "--config", p.to_str().unwrap()]).unwrap_err()
        );
        assert!(e.contains("sitez"), "{e}");
    }

    #[test]
    fn gen_and_demo() {
        let s = parse(&[
            "gen",
            "--site",
            "demo.example",
            "--events",
            "500",
            "--days",
            "3",
        ])
        .unwrap();
        assert_eq!(s.collector.sites, vec!["demo.example"]);
        let cli = Cli::try_parse_from(["veil", "gen", "--site", "a.com", "--seed", "7"]).unwrap();
        let Command::Gen(g) = cli.command else {
            panic!("not gen")
        };
        assert_eq!((g.events, g.days, g.seed), (1_000_000, 30, 7));
        let e = format!("{:#}", parse(&["gen"]).unwrap_err());
        assert!(e.contains("--site"), "{e}");
        let s = parse(&["up", "--demo", "--site", "a.com"]).unwrap();
        assert_eq!(s.collector.sites, vec!["a.com", DEMO_SITE, DEMO_APP_SITE]);
        assert!(s.aggregator.sites.contains(&DEMO_SITE.to_string()));
        assert!(s.aggregator.sites.contains(&DEMO_APP_SITE.to_string()));
        let s = parse(&["up"]).unwrap();
        assert!(s.collector.sites.is_empty());
    }

    #[test]
    fn admin_token_and_its_old_name() {
        let tok = |a: &[&str]| parse(a).unwrap().aggregator.api_token;
        let good = "0123456789abcdef";
        let other = "fedcba9876543210";
        assert_eq!(tok(&["up", "--admin-token", good]).as_deref(), Some(good));
        assert_eq!(tok(&["up", "--api-token", good]).as_deref(), Some(good));
        assert_eq!(
            tok(&["up", "--api-token", other, "--admin-token", good]).as_deref(),
            Some(good)
        );
        let e = format!(
            "{:#}",
            parse(&["up", "--admin-token", "short"]).unwrap_err()
        );
        assert!(e.contains("--admin-token"), "{e}");
        assert!(parse(&["up", "--listen", "0.0.0.0:8080", "--admin-token", good]).is_ok());
    }

    #[test]
    fn metrics_listen_is_loopback_unless_a_token_is_set() {
        let s = parse(&["up"]).unwrap();
        assert_eq!(
            s.collector.metrics.listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        let s = parse(&["up", "--metrics-listen", "off"]).unwrap();
        assert_eq!(s.collector.metrics.listen, None);
        let e = format!(
            "{:#}",
            parse(&["up", "--metrics-listen", "0.0.0.0:9464"]).unwrap_err()
        );
        assert!(e.contains("--metrics-token"), "{e}");
        let tok = "0123456789abcdef";
        let s = parse(&[
            "up",
            "--metrics-listen",
            "0.0.0.0:9464",
            "--metrics-token",
            tok,
        ])
        .unwrap();
        assert_eq!(s.collector.metrics.token.as_deref(), Some(tok));
        assert!(!serde_json::to_string(&s).unwrap().contains(tok));
    }

    #[test]
    fn validation_names_the_problem() {
        let e = |a: &[&str]| format!("{:#}", parse(a).unwrap_err());
        assert!(e(&["up", "--listen", "nope"]).contains("--listen"));
        assert!(e(&["up", "--listen", "0.0.0.0:8080"]).contains("--api-token"));
        assert!(e(&["collector"]).contains("--clickhouse-url"));
        assert!(e(&["up", "--site", "bad domain"]).contains("--site"));
        assert!(e(&["up", "--clickhouse-database", "x-y"]).contains("--clickhouse-database"));
        assert!(parse(&[
            "up",
            "--listen",
            "0.0.0.0:8080",
            "--api-token",
            "0123456789abcdef"
        ])
        .is_ok());
    }
}
