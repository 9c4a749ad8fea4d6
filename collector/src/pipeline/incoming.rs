//! What a route hands the pipeline: one [`Incoming`] event as a sender described it, with the
//! [`Client`] that sent it (personal data: IP, user agent, client hints), the browser
//! tracker's [`TrackerFacts`] and an app SDK's [`AppFacts`]. Nothing here is validated yet;
//! [`Pipeline::process`](super::Pipeline::process) does that in its parse stage.

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::{enrich, privacy};
use crate::Error;

/// Who sent the event. These fields are personal data: they are only read by
/// [`privacy::VisitorHasher`], [`enrich::UaParser`] and [`geo::GeoDb`](super::geo::GeoDb) and never logged —
/// `Debug` redacts them.
#[derive(Clone, Default)]
pub struct Client {
    /// The client IP (from a trusted header, a server-side sender's field, or the socket peer).
    pub ip: Option<IpAddr>,
    /// The raw `User-Agent`.
    pub user_agent: String,
    /// User-Agent Client Hints, if sent.
    pub hints: enrich::ClientHints,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Client { ip: <redacted>, user_agent: <redacted>, hints: <redacted> }")
    }
}

/// One event as a sender described it, before validation.
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    /// The site's domain as sent.
    pub domain: String,
    /// Event name (`pageview` for page views).
    pub name: String,
    /// Full page URL.
    pub url: String,
    /// Referrer URL, if any.
    pub referrer: Option<String>,
    /// Custom properties, already flattened to strings.
    pub props: Vec<(String, String)>,
    /// When it happened (server time when `None`).
    pub timestamp: Option<DateTime<Utc>>,
    /// Include the URL fragment in the path (hash-based routing, Plausible's `h`).
    pub hash_mode: bool,
    /// Opt-out signals (GPC, DNT, an app's flag).
    pub consent: privacy::Consent,
    /// Tracker facts: engagement time, scroll depth, screen and processor class.
    pub tracker: TrackerFacts,
    /// App facts: locale, versions, OS from the SDK, the app's session id.
    pub app: AppFacts,
    /// Sent by a browser (Plausible, Umami, pixel, veil.js): browser hits from data-centre
    /// networks are bots. False for server-side and app senders.
    pub browser_hit: bool,
    /// Who sent it.
    pub client: Client,
}

/// Facts a browser tracker reports besides the page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackerFacts {
    /// Visible milliseconds on the page (engagement events).
    pub engagement_ms: Option<u64>,
    /// Scroll depth in percent.
    pub scroll_depth: Option<u64>,
    /// Viewport class as sent.
    pub screen_class: Option<String>,
    /// Processor class as sent.
    pub processor_class: Option<String>,
    /// The browser has a touch screen (veil.js `tp`).
    pub touch: bool,
    /// Revenue attached to the event (Plausible's `$`): amount as sent, currency.
    pub revenue: Option<(String, String)>,
    /// The sender marked the event non-interactive (Plausible's `i: false`).
    pub non_interactive: bool,
}

/// Facts an app SDK (or Umami's tracker) reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppFacts {
    /// The event comes from an app, not a browser page (device class `app`).
    pub is_app: bool,
    /// Locale as sent (only `ll` or `ll-RR` is kept).
    pub locale: Option<String>,
    /// App version.
    pub app_version: Option<String>,
    /// Build number.
    pub app_build: Option<String>,
    /// SDK name and version.
    pub sdk_version: Option<String>,
    /// OS name from the SDK (overrides the user agent's).
    pub os_name: Option<String>,
    /// OS version from the SDK.
    pub os_version: Option<String>,
    /// Engine name.
    pub engine_name: Option<String>,
    /// Engine version (major kept).
    pub engine_version: Option<String>,
    /// Debug build.
    pub is_debug: bool,
    /// The app's own session id: hashed with the day's salt, never stored as sent.
    pub session: Option<String>,
    /// Device model (e.g. `iPhone15,2`).
    pub device_model: Option<String>,
    /// Install source (store, campaign).
    pub install_source: Option<String>,
}

/// Keeps `ll` or `ll-RR` of a locale (`en_US.UTF-8` → `en-US`), else empty.
pub fn clean_locale(raw: &str) -> String {
    let base = raw
        .split(['.', '@'])
        .next()
        .unwrap_or_default()
        .replace('_', "-");
    let mut parts = base.split('-');
    let lang = parts.next().unwrap_or_default();
    if !(2..=3).contains(&lang.len()) || !lang.bytes().all(|b| b.is_ascii_alphabetic()) {
        return String::new();
    }
    let mut out = lang.to_ascii_lowercase();
    if let Some(region) = parts.next() {
        if region.len() == 2 && region.bytes().all(|b| b.is_ascii_alphabetic()) {
            out.push('-');
            out.push_str(&region.to_ascii_uppercase());
        }
    }
    out
}

/// Accepted screen classes.
pub const SCREEN_CLASSES: [&str; 4] = ["mobile", "tablet", "laptop", "desktop"];
/// Accepted processor classes (logical cores).
pub const PROCESSOR_CLASSES: [&str; 5] = ["1-2", "3-4", "5-8", "9-16", "17+"];

impl TrackerFacts {
    /// Checks the values: unknown classes are errors naming the field; time is capped at a day.
    pub fn check(&self) -> Result<(u32, u8, String, String), Error> {
        let class = |v: &Option<String>, allowed: &[&str], field: &str| -> Result<String, Error> {
            match v.as_deref() {
                None | Some("") => Ok(String::new()),
                Some(x) if allowed.contains(&x) => Ok(x.to_string()),
                Some(_) => Err(Error::BadRequest(format!(
                    "`{field}` must be one of {}",
                    allowed.join(", ")
                ))),
            }
        };
        let ms = self.engagement_ms.unwrap_or(0).min(86_400_000) as u32;
        let sd = self.scroll_depth.unwrap_or(0);
        if sd > 100 {
            return Err(Error::BadRequest(
                "`sd` (scroll depth) must be 0..=100".into(),
            ));
        }
        Ok((
            ms,
            sd as u8,
            class(&self.screen_class, &SCREEN_CLASSES, "sc")?,
            class(&self.processor_class, &PROCESSOR_CLASSES, "pc")?,
        ))
    }
}
