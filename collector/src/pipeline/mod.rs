//! The ingestion pipeline, in data-flow order:
//!
//! 1. [`parse`] — page URL, referrer, UTM tags and custom properties from what a sender wrote;
//! 2. [`enrich`] — the user agent into browser, OS and device class (bots are dropped here);
//!    [`geo`] — the IP into country, region, city and ISP; [`sources`] — referrer → source, channel;
//! 3. [`privacy`] — IP + user agent into a keyed visitor hash and a session id, then both are
//!    dropped: nothing after this step ever sees them;
//! 4. [`batch`] — rows go through a bounded crossbeam channel to writer threads;
//! 5. [`sink`] — writer threads insert batches into ClickHouse.
//!
//! Routes build an [`Incoming`] per event and call [`Pipeline::process`], which returns the
//! [`EventRow`] to store or the reason it is dropped.

pub mod batch;
pub mod enrich;
pub mod geo;
pub mod parse;
pub mod privacy;
pub mod sink;
pub mod sources;
pub mod spool;

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Limits;
use crate::metrics::DropReason;
use crate::sites::SiteRegistry;
use crate::Error;

/// Who sent the event. These fields are personal data: they are only read by
/// [`privacy::VisitorHasher`], [`enrich::UaParser`] and [`geo::GeoDb`] and never logged —
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

fn short(v: &Option<String>, max: usize) -> String {
    let s = v.as_deref().unwrap_or_default().trim();
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s[..cut].to_string()
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
    /// Marketing channel (see [`sources::channel`]).
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

/// What [`Pipeline::process`] decided.
#[derive(Debug)]
pub enum Outcome {
    /// Store this row.
    Store(Box<EventRow>),
    /// Do not store; count under this reason. The sender still gets 202.
    Drop(DropReason),
}

/// The per-request part of ingestion, shared by all routes.
#[derive(Debug)]
pub struct Pipeline {
    sites: Arc<SiteRegistry>,
    limits: Limits,
    ua: enrich::UaParser,
    salts: Arc<privacy::salts::Salts>,
    sessions: privacy::SessionTracker,
    geo: Arc<geo::GeoDb>,
}

/// Longest accepted event name.
pub const MAX_NAME_BYTES: usize = 120;

impl Pipeline {
    /// A pipeline over the given registry and salts.
    pub fn new(
        sites: Arc<SiteRegistry>,
        limits: Limits,
        salts: Arc<privacy::salts::Salts>,
    ) -> Self {
        Self {
            sites,
            limits,
            ua: enrich::UaParser::new(),
            salts,
            sessions: privacy::SessionTracker::new(),
            geo: Arc::new(geo::GeoDb::empty()),
        }
    }

    /// The same pipeline with GeoIP lookups from `geo`.
    pub fn with_geo(mut self, geo: Arc<geo::GeoDb>) -> Self {
        self.geo = geo;
        self
    }

    /// A pipeline with one fixed salt for every day (tests, benches).
    pub fn with_key(sites: Arc<SiteRegistry>, limits: Limits, key: [u8; 32]) -> Self {
        let salts = privacy::salts::Salts::fixed(key, Arc::new(crate::SystemClock));
        Self::new(sites, limits, Arc::new(salts))
    }

    /// The site registry.
    pub fn sites(&self) -> &Arc<SiteRegistry> {
        &self.sites
    }

    /// The GeoIP databases in use.
    pub fn geo(&self) -> &Arc<geo::GeoDb> {
        &self.geo
    }

    /// The user-agent parser (cache statistics).
    pub fn ua(&self) -> &enrich::UaParser {
        &self.ua
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The salts in force.
    pub fn salts(&self) -> &Arc<privacy::salts::Salts> {
        &self.salts
    }

    /// Validates, enriches and anonymises one event. `Err` means the event is invalid (the
    /// message says why) or cannot be hashed yet; `Ok(Drop)` means it is valid but not stored.
    pub fn process(&self, ev: Incoming, now: DateTime<Utc>) -> Result<Outcome, Error> {
        let name = ev.name.trim();
        if name.is_empty() {
            return Err(Error::BadRequest(
                "`name` is required (e.g. \"pageview\")".into(),
            ));
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(Error::BadRequest(format!(
                "`name` is longer than {MAX_NAME_BYTES} bytes"
            )));
        }
        if ev.url.len() > self.limits.max_url_bytes {
            return Err(Error::BadRequest(format!(
                "`url` is longer than {} bytes",
                self.limits.max_url_bytes
            )));
        }
        let page = parse::page(&ev.url, ev.hash_mode)?;
        let ev_url = ev.url.clone();
        let page_paid = page.paid_click;
        let props = parse::check_props(ev.props, &self.limits)?;
        let max_age =
            chrono::Duration::from_std(self.limits.max_event_age).unwrap_or(parse::MAX_PAST);
        let timestamp = parse::check_timestamp_within(ev.timestamp, now, max_age)?;
        let (engagement_ms, scroll_depth, screen_class, processor_class) = ev.tracker.check()?;
        if ev.domain.trim().is_empty() {
            return Err(Error::BadRequest("`domain` is required".into()));
        }
        let Some((site, settings)) = self.sites.resolve(&ev.domain) else {
            return Ok(Outcome::Drop(DropReason::UnknownSite));
        };
        if ev.consent.refuses(settings.honor_dnt) {
            return Ok(Outcome::Drop(DropReason::Consent));
        }
        let ua = self
            .ua
            .parse_with_hints(&ev.client.user_agent, &ev.client.hints);
        let mut bot_flag = String::new();
        if let Some(kind) = ua.bot {
            let reason = match kind {
                enrich::BotKind::Crawler => DropReason::BotCrawler,
                enrich::BotKind::Headless => DropReason::BotHeadless,
                enrich::BotKind::Monitoring => DropReason::BotMonitoring,
                enrich::BotKind::Library => DropReason::BotLibrary,
                enrich::BotKind::Datacenter => DropReason::BotDatacenter,
            };
            if !settings.keep_bots {
                return Ok(Outcome::Drop(reason));
            }
            bot_flag = reason.as_str().to_string();
        }
        let referrer = parse::referrer(ev.referrer.as_deref(), &page.hostname);
        let (visitor_id, session_id) = if settings.child_directed {
            ([0u8; 16], [0u8; 16])
        } else {
            let visitor_id = self.visitor_id(&site, &ev.client, now)?;
            (visitor_id, self.sessions.session_id(&visitor_id, timestamp))
        };
        let place = ev
            .client
            .ip
            .map(|ip| self.geo.lookup(ip))
            .unwrap_or_default();
        if ev.browser_hit
            && ua.device != "app"
            && bot_flag.is_empty()
            && enrich::DATACENTER_ASNS.contains(&place.asn)
        {
            if !settings.keep_bots {
                return Ok(Outcome::Drop(DropReason::BotDatacenter));
            }
            bot_flag = DropReason::BotDatacenter.as_str().to_string();
        }
        // From here on the raw IP and user agent are gone.
        drop(ev.client);
        let mut row = EventRow {
            site,
            timestamp: u32::try_from(timestamp.timestamp()).unwrap_or(0),
            name: name.to_string(),
            hostname: page.hostname,
            pathname: page.pathname,
            referrer_source: if referrer.source.is_empty() {
                page.utm.source.clone()
            } else {
                referrer.source
            },
            referrer: referrer.url,
            utm_source: page.utm.source,
            utm_medium: page.utm.medium,
            utm_campaign: page.utm.campaign,
            utm_content: page.utm.content,
            utm_term: page.utm.term,
            visitor_id,
            session_id,
            browser: ua.browser,
            browser_version: ua.browser_version,
            os: ua.os,
            os_version: ua.os_version,
            device: ua.device.to_string(),
            country_code: String::new(),
            prop_keys: Vec::new(),
            prop_values: Vec::new(),
            engagement_ms,
            scroll_depth,
            screen_class,
            processor_class,
            locale: ev
                .app
                .locale
                .as_deref()
                .map(clean_locale)
                .unwrap_or_default(),
            app_version: short(&ev.app.app_version, 64),
            app_build: short(&ev.app.app_build, 64),
            sdk_version: short(&ev.app.sdk_version, 64),
            engine: match (&ev.app.engine_name, &ev.app.engine_version) {
                (Some(n), Some(v)) => {
                    format!("{} {}", short(&Some(n.clone()), 32), enrich::major(v))
                }
                (Some(n), None) => short(&Some(n.clone()), 32),
                _ => String::new(),
            },
            is_debug: u8::from(ev.app.is_debug),
            spool_token: String::new(),
            source: String::new(),
            channel: String::new(),
            region: place.region,
            city: place.city,
            asn: place.asn,
            isp: place.isp,
            device_model: short(&ev.app.device_model, 64),
            install_source: short(&ev.app.install_source, 128),
            bot: bot_flag,
            revenue_micros: 0,
            revenue_currency: String::new(),
            interactive: u8::from(!ev.tracker.non_interactive),
        };
        if let Some((amount, currency)) = &ev.tracker.revenue {
            (row.revenue_micros, row.revenue_currency) = parse::revenue(amount, currency)?;
        }
        row.country_code = place.country_code;
        let referrer_host = row.referrer_source.clone();
        let referrer_host = if row.referrer.is_empty() {
            String::new()
        } else {
            referrer_host
        };
        row.source = sources::source(&referrer_host, &row.utm_source);
        row.channel = sources::channel(&referrer_host, &row.utm_source, &row.utm_medium, page_paid)
            .to_string();
        if let Some(os) = ev.app.os_name.as_deref().filter(|s| !s.trim().is_empty()) {
            row.os = short(&Some(os.to_string()), 32);
            row.os_version = enrich::major_minor(&short(&ev.app.os_version, 32));
        }
        if ev.app.is_app {
            row.device = "app".into();
        }
        if ev.tracker.touch && row.os == "Mac OSX" {
            // iPadOS Safari in desktop mode sends a Mac user agent.
            row.os = "iPadOS".into();
            row.device = "tablet".into();
        }
        if let (Some(app_session), false) = (ev.app.session.as_deref(), settings.child_directed) {
            // The app's session id is an identifier: keep only a salted hash of it.
            if let Some(salt) = self.salts.get(now.date_naive()) {
                row.session_id =
                    privacy::VisitorHasher::new(salt).visitor_id(&row.site, None, app_session);
            }
        }
        if !settings.child_directed {
            let keep = self.sites.allowed_query_params(&row.site);
            if !keep.is_empty() {
                row.pathname.push_str(&parse::kept_query(&ev_url, &keep));
            }
        }
        if settings.child_directed {
            row.minimise_for_children();
        } else {
            (row.prop_keys, row.prop_values) = props.into_iter().unzip();
        }
        row.scrub();
        Ok(Outcome::Store(Box::new(row)))
    }

    /// Today's visitor id, or — in the first 30 minutes after midnight — yesterday's when this
    /// visitor's visit is still running, so a visit that crosses midnight stays one visit.
    fn visitor_id(
        &self,
        site: &str,
        client: &Client,
        now: DateTime<Utc>,
    ) -> Result<[u8; 16], Error> {
        let today = now.date_naive();
        let salt = self.salts.get(today).ok_or(Error::NoSalt)?;
        let id = privacy::VisitorHasher::new(salt).visitor_id(site, client.ip, &client.user_agent);
        let since_midnight = now.timestamp()
            - today
                .and_hms_opt(0, 0, 0)
                .map(|m| m.and_utc().timestamp())
                .unwrap_or(0);
        if since_midnight <= privacy::SESSION_IDLE_SECS {
            if let Some(old) = today.pred_opt().and_then(|y| self.salts.get(y)) {
                let prev = privacy::VisitorHasher::new(old).visitor_id(
                    site,
                    client.ip,
                    &client.user_agent,
                );
                if self.sessions.active(&prev, now) {
                    return Ok(prev);
                }
            }
        }
        Ok(id)
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
