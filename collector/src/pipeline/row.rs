//! [`EventRow`]: one stored event, the anonymised end of the pipeline — exactly the columns of
//! `schemas/migrations/001_events.sql`, none of which holds an IP address, a user agent or an
//! app's own session id — with the two last steps of anonymisation that work on the row itself:
//! [`EventRow::minimise_for_children`] and [`EventRow::scrub`].

use serde::Serialize;

use super::privacy;

/// One stored event: exactly the columns of `schemas/migrations/001_events.sql`.
/// No field holds an IP address or a user agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, clickhouse::Row, Serialize, serde::Deserialize)]
pub struct EventRow {
    /// Registered site domain.
    pub site: String,
    /// Unix seconds, UTC.
    pub timestamp: u32,
    /// Event name.
    pub name: String,
    /// Page host.
    pub hostname: String,
    /// Page path (query string removed).
    pub pathname: String,
    /// Referrer without query string or fragment.
    pub referrer: String,
    /// Referrer host (without `www.`) or `utm_source`.
    pub referrer_source: String,
    /// `utm_source` (or `ref`/`source`).
    pub utm_source: String,
    /// `utm_medium`.
    pub utm_medium: String,
    /// `utm_campaign`.
    pub utm_campaign: String,
    /// `utm_content`.
    pub utm_content: String,
    /// `utm_term`.
    pub utm_term: String,
    /// Keyed blake3 hash of (site, IP, user agent), 128 bits.
    pub visitor_id: [u8; 16],
    /// Hash of the visitor and the visit's start.
    pub session_id: [u8; 16],
    /// Browser family.
    pub browser: String,
    /// Browser major version.
    pub browser_version: String,
    /// Operating system.
    pub os: String,
    /// OS version (major.minor at most).
    pub os_version: String,
    /// `desktop`, `mobile`, `tablet`, `appliance` or `unknown`.
    pub device: String,
    /// ISO country code; empty until GeoIP enrichment is configured.
    pub country_code: String,
    /// Custom property keys.
    pub prop_keys: Vec<String>,
    /// Custom property values, same order as keys.
    pub prop_values: Vec<String>,
    /// Visible time on the page (engagement events), ms.
    pub engagement_ms: u32,
    /// Deepest scroll position, percent.
    pub scroll_depth: u8,
    /// `mobile`, `tablet`, `laptop`, `desktop` or empty.
    pub screen_class: String,
    /// Logical core bucket (`1-2`, `3-4`, `5-8`, `9-16`, `17+`) or empty.
    pub processor_class: String,
    /// Language and region, e.g. `en-US`.
    pub locale: String,
    /// App version (apps).
    pub app_version: String,
    /// App build number (apps).
    pub app_build: String,
    /// Sender SDK and version.
    pub sdk_version: String,
    /// Runtime engine and major version.
    pub engine: String,
    /// 1 for events from debug builds.
    pub is_debug: u8,
    /// The spool batch that wrote the row (set by the writer; replay deduplication).
    pub spool_token: String,
    /// Friendly source name (Google, Hacker News…), else referrer host, else `utm_source`.
    pub source: String,
    /// Marketing channel (see [`sources::channel`](super::sources::channel)).
    pub channel: String,
    /// Subdivision (GeoIP).
    pub region: String,
    /// City (GeoIP).
    pub city: String,
    /// Autonomous system number (GeoIP).
    pub asn: u32,
    /// AS organisation, shown as ISP (GeoIP).
    pub isp: String,
    /// Device model an app reports.
    pub device_model: String,
    /// Where an app was installed from.
    pub install_source: String,
    /// Bot reason for sites that keep bots flagged (`--keep-bots-site`); empty for people.
    pub bot: String,
    /// Revenue in millionths of the currency unit.
    pub revenue_micros: i64,
    /// ISO 4217 currency of the revenue.
    pub revenue_currency: String,
    /// 0 when the sender marked the event non-interactive.
    pub interactive: u8,
}

impl EventRow {
    /// Approximate encoded size, for byte-based batch flushing.
    pub fn approx_bytes(&self) -> usize {
        let strings = [
            &self.site,
            &self.name,
            &self.hostname,
            &self.pathname,
            &self.referrer,
            &self.referrer_source,
            &self.utm_source,
            &self.utm_medium,
            &self.utm_campaign,
            &self.utm_content,
            &self.utm_term,
            &self.browser,
            &self.browser_version,
            &self.os,
            &self.os_version,
            &self.device,
            &self.country_code,
        ];
        let props: usize = self
            .prop_keys
            .iter()
            .chain(&self.prop_values)
            .map(|s| s.len() + 1)
            .sum();
        strings.iter().map(|s| s.len() + 1).sum::<usize>()
            + props
            + self.screen_class.len()
            + self.processor_class.len()
            + 4
            + 32
            + 2
            + 5
    }
}

impl EventRow {
    /// Keeps only what a child-directed site may store: page, event name, country and coarse
    /// device facts (device class, browser and OS families).
    pub fn minimise_for_children(&mut self) {
        self.visitor_id = [0; 16];
        self.session_id = [0; 16];
        for f in [
            &mut self.referrer,
            &mut self.referrer_source,
            &mut self.utm_source,
            &mut self.utm_medium,
            &mut self.utm_campaign,
            &mut self.utm_content,
            &mut self.utm_term,
            &mut self.browser_version,
            &mut self.os_version,
        ] {
            f.clear();
        }
        self.prop_keys.clear();
        self.prop_values.clear();
        self.engagement_ms = 0;
        self.scroll_depth = 0;
        self.asn = 0;
        for f in [
            &mut self.install_source,
            &mut self.region,
            &mut self.city,
            &mut self.isp,
            &mut self.source,
            &mut self.channel,
            &mut self.locale,
            &mut self.app_version,
            &mut self.app_build,
            &mut self.sdk_version,
            &mut self.engine,
        ] {
            f.clear();
        }
    }

    /// Runs the scrubber over every free-text field.
    pub fn scrub(&mut self) {
        use privacy::scrub::scrub_in_place;
        for f in [
            &mut self.name,
            &mut self.hostname,
            &mut self.pathname,
            &mut self.referrer,
            &mut self.referrer_source,
            &mut self.utm_source,
            &mut self.utm_medium,
            &mut self.utm_campaign,
            &mut self.utm_content,
            &mut self.utm_term,
            &mut self.app_version,
            &mut self.app_build,
            &mut self.sdk_version,
            &mut self.engine,
            &mut self.os,
            &mut self.source,
            &mut self.device_model,
            &mut self.install_source,
        ] {
            scrub_in_place(f);
        }
        self.prop_keys
            .iter_mut()
            .chain(self.prop_values.iter_mut())
            .for_each(scrub_in_place);
    }
}
