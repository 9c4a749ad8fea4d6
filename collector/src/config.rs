//! The collector's settings, with defaults and validation. The `veil` binary fills this from
//! defaults, the TOML file, `VEIL_*` variables and flags, then calls [`CollectorConfig::validate`]
//! before any socket is bound.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::Error;

/// Everything the collector needs to run.
#[derive(Debug, Clone, Serialize)]
pub struct CollectorConfig {
    /// Domains accepted without an API call (lower-case, e.g. `example.com`).
    pub sites: Vec<String>,
    /// Child-directed sites (registered too): minimal collection, see [`crate::sites::SiteSettings`].
    pub child_sites: Vec<String>,
    /// Sites that decided not to honour `DNT: 1` (GPC is always honoured).
    pub ignore_dnt_sites: Vec<String>,
    /// `ALIAS=DOMAIN`: an Umami website id or an Aptabase app key that names a site.
    pub site_aliases: Vec<String>,
    /// Sites that keep bot hits, flagged, instead of dropping them.
    pub keep_bots_sites: Vec<String>,
    /// `DOMAIN=PARAM`: a query parameter a site keeps in stored paths (all others are dropped).
    pub site_query_params: Vec<String>,
    /// Headers that carry the client IP, first match wins, then the socket peer. Read only
    /// from a peer in [`Self::trusted_proxies`]; see [`crate::routes::client_ip`].
    pub trusted_ip_headers: Vec<String>,
    /// Networks whose peers (load balancers, reverse proxies) may set those headers; from any
    /// other peer the headers are ignored and the peer is the client. Default: loopback only
    /// (behind SNAT anyone's traffic arrives from a private address: such ranges must be
    /// listed on purpose).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Networks whose clients (the client IP after [`Self::trusted_proxies`]) may send
    /// `/v1/events` overrides (`ip`, `user_agent`, a back-dated `timestamp`) without an ingest
    /// key, when the request is not a browser's (no `Origin` header). Default: loopback.
    pub trusted_senders: Vec<ipnet::IpNet>,
    /// HTTP limits.
    pub limits: Limits,
    /// Batching towards ClickHouse.
    pub batch: BatchConfig,
    /// The durable spool.
    pub spool: SpoolSettings,
    /// Directory with the GeoIP databases (`city-ipv4.mmdb`, `city-ipv6.mmdb`, `asn.mmdb`; see
    /// docs/GEOIP.md); `None` or missing files: geo facts are left empty.
    pub geoip_dir: Option<std::path::PathBuf>,
    /// How often the GeoIP files are checked for a new version (`--geoip-reload`, 1 s to 1 h).
    #[serde(with = "secs")]
    pub geoip_reload: Duration,
    /// How long shutdown may take to drain connections and flush the last batch.
    #[serde(with = "secs")]
    pub shutdown_timeout: Duration,
    /// Where `/metrics` is served: its own listener, never the ingest one.
    pub metrics: MetricsSettings,
}

/// The default `--metrics-listen`: loopback, in Prometheus' conventional exporter port range.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// The metrics listener. `/metrics` is not answered on the ingest port: its counters move with
/// each event (accepted, opt-outs by reason…), so anyone who can reach them can watch one
/// visitor's event at a time. Beyond loopback the listener requires a bearer token.
#[derive(Clone, Serialize)]
pub struct MetricsSettings {
    /// Address of the metrics listener; `None`: no metrics listener (`--metrics-listen off`).
    pub listen: Option<SocketAddr>,
    /// `Authorization: Bearer` token the metrics listener requires (`--metrics-token`); needed
    /// for a non-loopback address. Never printed: serialised as whether it is set.
    #[serde(rename = "token_set", serialize_with = "token_set")]
    pub token: Option<String>,
}

impl std::fmt::Debug for MetricsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsSettings")
            .field("listen", &self.listen)
            .field("token_set", &self.token.is_some())
            .finish()
    }
}

fn token_set<S: serde::Serializer>(t: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(t.is_some())
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_METRICS_LISTEN.parse().ok(),
            token: None,
        }
    }
}

/// Shortest accepted `--metrics-token`.
pub const MIN_METRICS_TOKEN_CHARS: usize = 16;

impl MetricsSettings {
    /// Parses a `--metrics-listen` value: an address like `127.0.0.1:9464`, or `off`.
    pub fn parse_listen(v: &str) -> Result<Option<SocketAddr>, Error> {
        let v = v.trim();
        if v.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        v.parse().map(Some).map_err(|_| {
            Error::Config(format!(
                "--metrics-listen {v:?} is not an address like {DEFAULT_METRICS_LISTEN}, or off"
            ))
        })
    }

    /// Checks the token, and that `addr` (the configured or the bound address of the metrics
    /// listener) is loopback unless a token is set.
    pub fn check_address(&self, addr: SocketAddr) -> Result<(), Error> {
        if self.token.is_none() && !addr.ip().is_loopback() {
            return Err(Error::Config(format!(
                "--metrics-listen {addr} is reachable from other machines but no --metrics-token \
                 is set: anyone reaching it could read the per-event counters (events accepted, \
                 opt-outs by reason) one event at a time. Set --metrics-token (or \
                 VEIL_METRICS_TOKEN) or listen on loopback, e.g. {DEFAULT_METRICS_LISTEN}"
            )));
        }
        Ok(())
    }

    /// The whole metrics configuration: token length, address rule.
    pub fn validate(&self) -> Result<(), Error> {
        if self
            .token
            .as_ref()
            .is_some_and(|t| t.chars().count() < MIN_METRICS_TOKEN_CHARS)
        {
            return Err(Error::Config(format!(
                "--metrics-token must be at least {MIN_METRICS_TOKEN_CHARS} characters"
            )));
        }
        match self.listen {
            Some(addr) => self.check_address(addr),
            None => Ok(()),
        }
    }
}

/// Limits that protect the server from oversized or slow input.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Largest request body accepted (413 above it).
    pub max_body_bytes: usize,
    /// Largest number of events in one `/v1/events` batch.
    pub max_events_per_batch: usize,
    /// Time allowed to receive the request headers.
    #[serde(with = "secs")]
    pub header_read_timeout: Duration,
    /// Time allowed to receive the request body.
    #[serde(with = "secs")]
    pub body_read_timeout: Duration,
    /// Largest number of custom properties per event.
    pub max_props: usize,
    /// Longest property key, in bytes.
    pub max_prop_key_bytes: usize,
    /// Longest property value, in bytes.
    pub max_prop_value_bytes: usize,
    /// Longest accepted page URL, in bytes.
    pub max_url_bytes: usize,
    /// Requests per second per client IP on ingest routes (bursts of twice that); 0 = off.
    pub rate_limit_ip: u32,
    /// Events per second per site (bursts of twice that); 0 = off.
    pub rate_limit_site: u32,
    /// Open connections at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// Oldest sender-supplied event time accepted (apps that were offline send late).
    #[serde(with = "secs")]
    pub max_event_age: Duration,
    /// Requests served on one keep-alive connection before it is closed.
    pub max_requests_per_connection: u64,
}

/// When the writer flushes a batch from the spool into ClickHouse: whichever limit is reached first.
#[derive(Debug, Clone, Serialize)]
pub struct BatchConfig {
    /// Flush when a batch holds this many rows.
    pub max_rows: usize,
    /// Flush when a batch holds about this many bytes of row data.
    pub max_bytes: usize,
    /// Flush when the oldest row in a batch has waited this long.
    #[serde(with = "secs")]
    pub max_age: Duration,
}

/// The durable spool between handlers and the writer.
#[derive(Debug, Clone, Serialize)]
pub struct SpoolSettings {
    /// Directory of the spool's segment files (one collector process per directory).
    pub dir: std::path::PathBuf,
    /// Largest spool on disk; beyond it requests get 503 with `Retry-After`.
    pub max_bytes: u64,
    /// `fsync` (a 2xx means the event is on disk) or `none` (written, not synced).
    pub durability: crate::pipeline::spool::Durability,
    /// With `fsync`: zeros written ahead of the spool's data so that appends overwrite
    /// allocated blocks (0 = off; see the spool's "Preallocation").
    pub preallocate_bytes: u64,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        Self {
            dir: "./var/spool".into(),
            max_bytes: 1 << 30,
            durability: Default::default(),
            preallocate_bytes: crate::pipeline::spool::SpoolConfig::default().preallocate_bytes,
        }
    }
}

impl SpoolSettings {
    /// The spool engine's configuration for these settings.
    pub fn engine_config(&self) -> crate::pipeline::spool::SpoolConfig {
        let segment_bytes = (self.max_bytes / 4).clamp(64 * 1024, 64 * 1024 * 1024);
        crate::pipeline::spool::SpoolConfig {
            max_bytes: self.max_bytes,
            segment_bytes,
            max_pending_bytes: segment_bytes,
            durability: self.durability,
            preallocate_bytes: self.preallocate_bytes,
            ..Default::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            max_events_per_batch: 1000,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_props: 30,
            max_prop_key_bytes: 300,
            max_prop_value_bytes: 2000,
            max_url_bytes: 4096,
            rate_limit_ip: 100,
            rate_limit_site: 0,
            max_connections: 10_000,
            max_event_age: Duration::from_secs(7 * 24 * 3600),
            max_requests_per_connection: 10_000,
        }
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        // ClickHouse wants few, large inserts; a 1 s age keeps events visible within about a
        // second; 50 000 rows (~20 MB) bounds a batch. See docs/ARCHITECTURE.md.
        Self {
            max_rows: 50_000,
            max_bytes: 32 * 1024 * 1024,
            max_age: Duration::from_secs(1),
        }
    }
}

/// Loopback only: a proxy on the same machine. Private ranges are not trusted by default:
/// behind SNAT (a cloud NAT gateway, a container bridge) anyone's traffic arrives from a
/// private address and could then claim any client IP in `X-Forwarded-For`; list a load
/// balancer's network with `--trusted-proxy`.
pub fn default_trusted_proxies() -> Vec<ipnet::IpNet> {
    loopback()
}

/// Loopback (`127.0.0.0/8`, `::1`): the default `--trusted-sender`.
pub fn default_trusted_senders() -> Vec<ipnet::IpNet> {
    loopback()
}

fn loopback() -> Vec<ipnet::IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Parses `--trusted-proxy` values: networks (`10.0.0.0/8`) or single addresses.
pub fn parse_trusted_proxies(values: &[String]) -> Result<Vec<ipnet::IpNet>, Error> {
    parse_networks("--trusted-proxy", values)
}

/// Parses `--trusted-sender` values: networks or single addresses.
pub fn parse_trusted_senders(values: &[String]) -> Result<Vec<ipnet::IpNet>, Error> {
    parse_networks("--trusted-sender", values)
}

fn parse_networks(flag: &str, values: &[String]) -> Result<Vec<ipnet::IpNet>, Error> {
    values
        .iter()
        .map(|v| {
            let v = v.trim();
            v.parse::<ipnet::IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    Error::Config(format!(
                        "{flag} {v:?} is not a network (e.g. 10.0.0.0/8) or an address"
                    ))
                })
        })
        .collect()
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            sites: Vec::new(),
            child_sites: Vec::new(),
            ignore_dnt_sites: Vec::new(),
            site_aliases: Vec::new(),
            keep_bots_sites: Vec::new(),
            site_query_params: Vec::new(),
            trusted_ip_headers: vec!["x-forwarded-for".into()],
            trusted_proxies: default_trusted_proxies(),
            trusted_senders: default_trusted_senders(),
            limits: Limits::default(),
            batch: BatchConfig::default(),
            spool: SpoolSettings::default(),
            geoip_dir: None,
            geoip_reload: crate::pipeline::geo::DEFAULT_RELOAD_INTERVAL,
            shutdown_timeout: Duration::from_secs(30),
            metrics: MetricsSettings::default(),
        }
    }
}

impl CollectorConfig {
    /// [`Self::trusted_ip_headers`] as header names (what validation checks, and what the
    /// collector looks requests up by).
    pub fn trusted_ip_header_names(&self) -> Result<Vec<http::HeaderName>, Error> {
        self.trusted_ip_headers
            .iter()
            .map(|h| {
                http::HeaderName::from_bytes(h.trim().to_ascii_lowercase().as_bytes()).map_err(
                    |_| {
                        Error::Config(format!(
                            "--trusted-ip-header {h:?} is not a valid header name"
                        ))
                    },
                )
            })
            .collect()
    }

    /// Normalises site names and header names and checks every value; the message names the flag.
    pub fn validate(&mut self) -> Result<(), Error> {
        for s in &mut self.sites {
            let norm = crate::sites::normalize_domain(s).ok_or_else(|| {
                Error::Config(format!(
                    "--site {s:?} is not a domain name (expected e.g. example.com)"
                ))
            })?;
            *s = norm;
        }
        for h in &mut self.trusted_ip_headers {
            *h = h.trim().to_ascii_lowercase();
        }
        self.trusted_ip_header_names()?;
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.geoip_reload) {
            return Err(Error::Config(
                "--geoip-reload must be between 1s and 1h (how often GeoIP files are checked for a new version)"
                    .into(),
            ));
        }
        let l = &self.limits;
        let b = &self.batch;
        let checks: [(bool, &str); 7] = [
            (
                l.max_body_bytes >= 1024,
                "--max-body-bytes must be at least 1024",
            ),
            (
                l.max_events_per_batch >= 1,
                "--max-events-per-batch must be at least 1",
            ),
            (
                !l.header_read_timeout.is_zero(),
                "--header-read-timeout must be above 0",
            ),
            (
                !l.body_read_timeout.is_zero(),
                "--body-read-timeout must be above 0",
            ),
            (
                b.max_rows >= 1 && b.max_bytes >= 1024,
                "--batch-max-rows must be at least 1 and --batch-max-bytes at least 1024",
            ),
            (!b.max_age.is_zero(), "--batch-max-age must be above 0"),
            (
                self.spool.max_bytes >= 1024 * 1024,
                "--spool-max-bytes must be at least 1 MiB",
            ),
        ];
        for (ok, msg) in checks {
            if !ok {
                return Err(Error::Config(msg.into()));
            }
        }
        self.metrics.validate()
    }
}

impl CollectorConfig {
    /// The site registry these settings describe.
    pub fn registry(&self) -> crate::sites::SiteRegistry {
        use crate::sites::SiteSettings;
        let all = self.sites.iter().chain(&self.child_sites).map(|s| {
            let settings = SiteSettings {
                child_directed: self.child_sites.contains(s),
                honor_dnt: !self.ignore_dnt_sites.contains(s),
                keep_bots: self.keep_bots_sites.contains(s),
            };
            (s.clone(), settings)
        });
        let registry = crate::sites::SiteRegistry::with_settings(all);
        for a in &self.site_aliases {
            if let Some((alias, domain)) = a.split_once('=') {
                registry.alias(alias, domain);
            }
        }
        for q in &self.site_query_params {
            if let Some((domain, param)) = q.split_once('=') {
                registry.allow_query_param(domain, param.trim());
            }
        }
        registry
    }
}

mod secs {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        CollectorConfig::default().validate().unwrap();
    }

    #[test]
    fn sites_are_normalised_and_checked() {
        let mut c = CollectorConfig {
            sites: vec!["Example.COM".into()],
            ..Default::default()
        };
        c.validate().unwrap();
        assert_eq!(c.sites, vec!["example.com"]);
        let mut c = CollectorConfig {
            sites: vec!["not a domain".into()],
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("--site"));
    }

    #[test]
    fn bad_limits_name_the_flag() {
        let mut c = CollectorConfig::default();
        c.spool.max_bytes = 10;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--spool-max-bytes"));
    }

    #[test]
    fn a_public_metrics_address_needs_a_token() {
        let token = "0123456789abcdef".to_string();
        let with = |listen: &str, token: Option<&String>| {
            let mut c = CollectorConfig::default();
            c.metrics.listen = MetricsSettings::parse_listen(listen).unwrap();
            c.metrics.token = token.cloned();
            c.validate().map_err(|e| e.to_string())
        };
        assert_eq!(
            CollectorConfig::default().metrics.listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        with("127.0.0.1:9464", None).unwrap();
        with("[::1]:9464", None).unwrap();
        with("off", None).unwrap();
        for public in ["0.0.0.0:9464", "192.168.1.5:9464", "[::]:9464"] {
            let e = with(public, None).unwrap_err();
            assert!(e.contains("--metrics-token"), "{public}: {e}");
            with(public, Some(&token)).unwrap();
        }
        let e = with("0.0.0.0:9464", Some(&"short".to_string())).unwrap_err();
        assert!(e.contains("at least 16"), "{e}");
        let e = MetricsSettings::parse_listen("nope")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--metrics-listen"), "{e}");
        // The token is never printed.
        let mut c = CollectorConfig::default();
        c.metrics.token = Some(token.clone());
        assert!(!format!("{c:?}").contains(&token));
        assert!(!serde_json::to_string(&c).unwrap().contains(&token));
    }
}
