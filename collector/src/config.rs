//! The collector's settings, with defaults and validation. The `veil` binary fills this from
//! defaults, the TOML file, `VEIL_*` variables and flags, then calls [`CollectorConfig::validate`]
//! before any socket is bound.

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
    /// Headers that carry the client IP, first match wins, then the socket peer.
    /// The first (left-most) address of each header is used.
    pub trusted_ip_headers: Vec<String>,
    /// HTTP limits.
    pub limits: Limits,
    /// Batching towards ClickHouse.
    pub batch: BatchConfig,
    /// How long shutdown may take to drain connections and flush the last batch.
    #[serde(with = "secs")]
    pub shutdown_timeout: Duration,
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
}

/// When the writer flushes a batch into ClickHouse: whichever limit is reached first.
#[derive(Debug, Clone, Serialize)]
pub struct BatchConfig {
    /// Events waiting between the handlers and the writer before requests get 503.
    pub queue_capacity: usize,
    /// Flush when a batch holds this many rows.
    pub max_rows: usize,
    /// Flush when a batch holds about this many bytes of row data.
    pub max_bytes: usize,
    /// Flush when the oldest row in a batch has waited this long.
    #[serde(with = "secs")]
    pub max_age: Duration,
    /// Writer threads (each holds its own batch and ClickHouse connection).
    pub writers: usize,
    /// Attempts per batch before it is counted as dropped.
    pub max_attempts: u32,
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
        }
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        // Measured in benches/README.md: 50k-row inserts cost little more per row than 100k
        // ones on 18.16, while a 1 s age keeps events visible within about a second.
        Self {
            queue_capacity: 200_000,
            max_rows: 50_000,
            max_bytes: 32 * 1024 * 1024,
            max_age: Duration::from_secs(1),
            writers: 1,
            max_attempts: 5,
        }
    }
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            sites: Vec::new(),
            child_sites: Vec::new(),
            ignore_dnt_sites: Vec::new(),
            trusted_ip_headers: vec!["x-forwarded-for".into()],
            limits: Limits::default(),
            batch: BatchConfig::default(),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl CollectorConfig {
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
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err(Error::Config(format!(
                    "--trusted-ip-header {h:?} is not a valid header name"
                )));
            }
        }
        let l = &self.limits;
        let b = &self.batch;
        let checks: [(bool, &str); 8] = [
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
            (b.queue_capacity >= 1, "--queue-capacity must be at least 1"),
            (
                b.max_rows >= 1 && b.max_bytes >= 1024,
                "--batch-max-rows must be at least 1 and --batch-max-bytes at least 1024",
            ),
            (!b.max_age.is_zero(), "--batch-max-age must be above 0"),
            (
                (1..=64).contains(&b.writers) && b.max_attempts >= 1,
                "--writers must be 1..=64",
            ),
        ];
        for (ok, msg) in checks {
            if !ok {
                return Err(Error::Config(msg.into()));
            }
        }
        Ok(())
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
            };
            (s.clone(), settings)
        });
        crate::sites::SiteRegistry::with_settings(all)
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
        c.batch.writers = 0;
        assert!(c.validate().unwrap_err().to_string().contains("--writers"));
    }
}
