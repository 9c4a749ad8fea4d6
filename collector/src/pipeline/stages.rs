//! The three stages of one event's trip, each a type of its own, so the compiler shows where
//! personal data can still be:
//!
//! ```text
//! Incoming ─ Pipeline::parse ─▶ Parsed ─ Pipeline::enrich ─▶ Enriched ─ Pipeline::anonymise ─▶ EventRow
//!  (Client)                     (Client)                     (Client)                          (no Client)
//! ```
//!
//! - [`Pipeline::parse`] checks what the sender wrote (name, URL, props, timestamp, tracker
//!   facts), resolves the site and reads the consent signals. Invalid input is an error; an
//!   unknown site or a refusal stops the event ([`Stop::Drop`]).
//! - [`Pipeline::enrich`] reads the client while it still exists: user agent (bots dropped or
//!   flagged), GeoIP, the data-centre check for browser hits (on the user agent's own device
//!   class), then the referrer's source and channel, the app SDK's facts and the revenue (checked
//!   last, after every drop decision, so a dropped event is never refused for its revenue).
//! - [`Pipeline::anonymise`] takes the visitor hash and session id, drops the [`Client`], keeps
//!   only the allow-listed query parameters, minimises a child-directed site's row and scrubs
//!   every free-text field. [`EventRow`] has no field for an IP address or a user agent.
//!
//! [`Parsed`] and [`Enriched`] are the only stage types holding a [`Client`]; their fields are
//! private to this module, so the client cannot leak out of the pipeline by another path.

use chrono::{DateTime, Utc};

use super::enrich::{self, BotKind, UaFacts};
use super::geo::GeoFacts;
use super::parse::{self, Page};
use super::{
    clean_locale, privacy, sources, AppFacts, Client, EventRow, Incoming, Pipeline, MAX_NAME_BYTES,
};
use crate::metrics::DropReason;
use crate::sites::SiteSettings;
use crate::Error;

/// Why an event's trip ended before it became a row.
#[derive(Debug)]
pub enum Stop {
    /// The event is invalid (the message says why) or cannot be hashed yet.
    Invalid(Error),
    /// The event is valid but not stored; counted under this reason.
    Drop(DropReason),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Invalid(e)
    }
}

/// Stage 1: a checked event of a known site that did not refuse tracking. Still holds the
/// [`Client`].
#[derive(Debug)]
pub struct Parsed {
    site: String,
    settings: SiteSettings,
    name: String,
    /// The page URL as sent: its allow-listed query parameters are kept by the anonymise stage.
    url: String,
    page: Page,
    referrer: Option<String>,
    props: Vec<(String, String)>,
    timestamp: DateTime<Utc>,
    tracker: Tracker,
    app: AppFacts,
    browser_hit: bool,
    client: Client,
}

/// The tracker's facts, checked.
#[derive(Debug)]
struct Tracker {
    engagement_ms: u32,
    scroll_depth: u8,
    screen_class: String,
    processor_class: String,
    touch: bool,
    revenue: Option<(String, String)>,
    non_interactive: bool,
}

/// Stage 2: a parsed event with everything learnt from its client, its referrer and its app.
/// Still holds the [`Client`], for the hash.
#[derive(Debug)]
pub struct Enriched {
    parsed: Parsed,
    /// Browser and OS (the app SDK's OS when it sent one).
    ua: UaFacts,
    /// Device class after the app and touch corrections.
    device: &'static str,
    place: GeoFacts,
    /// Bot reason for sites that keep bots flagged; empty for people.
    bot: String,
    sources: Sources,
    app: AppRow,
    revenue: (i64, String),
}

/// The referrer and what it says about where the visit came from.
#[derive(Debug)]
struct Sources {
    referrer: String,
    referrer_source: String,
    source: String,
    channel: &'static str,
}

/// The app SDK's facts, cut to their stored form.
#[derive(Debug)]
struct AppRow {
    locale: String,
    app_version: String,
    app_build: String,
    sdk_version: String,
    engine: String,
    device_model: String,
    install_source: String,
}

/// `v` trimmed and cut to at most `max` bytes (on a character boundary); empty for `None`.
fn short(v: Option<&str>, max: usize) -> String {
    let s = v.unwrap_or_default().trim();
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s[..cut].to_string()
}

fn bot_reason(kind: BotKind) -> DropReason {
    match kind {
        BotKind::Crawler => DropReason::BotCrawler,
        BotKind::Headless => DropReason::BotHeadless,
        BotKind::Monitoring => DropReason::BotMonitoring,
        BotKind::Library => DropReason::BotLibrary,
        BotKind::Datacenter => DropReason::BotDatacenter,
    }
}

impl Pipeline {
    /// Stage 1: checks the event and resolves its site. `Err(Invalid)` for bad input (checked
    /// before the site, so a sender learns of its mistake whatever the domain), `Err(Drop)` for
    /// an unknown site or a consent refusal.
    pub fn parse(&self, ev: Incoming, now: DateTime<Utc>) -> Result<Parsed, Stop> {
        let trimmed = ev.name.trim();
        if trimmed.is_empty() {
            return Err(Error::BadRequest("`name` is required (e.g. \"pageview\")".into()).into());
        }
        if trimmed.len() > MAX_NAME_BYTES {
            return Err(
                Error::BadRequest(format!("`name` is longer than {MAX_NAME_BYTES} bytes")).into(),
            );
        }
        let name = if trimmed.len() == ev.name.len() {
            ev.name
        } else {
            trimmed.to_string()
        };
        if ev.url.len() > self.limits.max_url_bytes {
            return Err(Error::BadRequest(format!(
                "`url` is longer than {} bytes",
                self.limits.max_url_bytes
            ))
            .into());
        }
        let page = parse::page(&ev.url, ev.hash_mode)?;
        let props = parse::check_props(ev.props, &self.limits)?;
        let max_age =
            chrono::Duration::from_std(self.limits.max_event_age).unwrap_or(parse::MAX_PAST);
        let timestamp = parse::check_timestamp_within(ev.timestamp, now, max_age)?;
        let (engagement_ms, scroll_depth, screen_class, processor_class) = ev.tracker.check()?;
        if ev.domain.trim().is_empty() {
            return Err(Error::BadRequest("`domain` is required".into()).into());
        }
        let Some((site, settings)) = self.sites.resolve(&ev.domain) else {
            return Err(Stop::Drop(DropReason::UnknownSite));
        };
        if ev.consent.refuses(settings.honor_dnt) {
            return Err(Stop::Drop(DropReason::Consent));
        }
        Ok(Parsed {
            site,
            settings,
            name,
            url: ev.url,
            page,
            referrer: ev.referrer,
            props,
            timestamp,
            tracker: Tracker {
                engagement_ms,
                scroll_depth,
                screen_class,
                processor_class,
                touch: ev.tracker.touch,
                revenue: ev.tracker.revenue,
                non_interactive: ev.tracker.non_interactive,
            },
            app: ev.app,
            browser_hit: ev.browser_hit,
            client: ev.client,
        })
    }

    /// Stage 2: learns what the client, the referrer and the app tell, while the client's IP
    /// and user agent still exist. Bots are dropped here (or flagged, for sites that keep them).
    pub fn enrich(&self, p: Parsed) -> Result<Enriched, Stop> {
        let keep_bots = p.settings.keep_bots;
        // User agent: browser, OS, device class; bots by their agent.
        let mut ua = self
            .ua
            .parse_with_hints(&p.client.user_agent, &p.client.hints);
        let mut bot = String::new();
        if let Some(kind) = ua.bot {
            let reason = bot_reason(kind);
            if !keep_bots {
                return Err(Stop::Drop(reason));
            }
            bot = reason.as_str().to_string();
        }
        // GeoIP, then the data-centre check: a browser hit from a hosting network is a bot.
        let place = p
            .client
            .ip
            .map(|ip| self.geo.lookup(ip))
            .unwrap_or_default();
        if p.browser_hit
            && ua.device != "app"
            && bot.is_empty()
            && enrich::DATACENTER_ASNS.contains(&place.asn)
        {
            if !keep_bots {
                return Err(Stop::Drop(DropReason::BotDatacenter));
            }
            bot = DropReason::BotDatacenter.as_str().to_string();
        }
        // Sources: the referrer (a self-referral is none), its friendly name and the channel.
        let utm = &p.page.utm;
        let referrer = parse::referrer(p.referrer.as_deref(), &p.page.hostname);
        let referrer_source = if referrer.source.is_empty() {
            utm.source.clone()
        } else {
            referrer.source
        };
        let referrer_host = if referrer.url.is_empty() {
            ""
        } else {
            referrer_source.as_str()
        };
        let sources = Sources {
            source: sources::source(referrer_host, &utm.source),
            channel: sources::channel(referrer_host, &utm.source, &utm.medium, p.page.paid_click),
            referrer: referrer.url,
            referrer_source,
        };
        // App facts: the SDK's OS overrides the agent's; apps are their own device class.
        let app = &p.app;
        if let Some(os) = app.os_name.as_deref().filter(|s| !s.trim().is_empty()) {
            ua.os = short(Some(os), 32);
            ua.os_version = enrich::major_minor(&short(app.os_version.as_deref(), 32));
        }
        let mut device = ua.device;
        if app.is_app {
            device = "app";
        }
        if p.tracker.touch && ua.os == "Mac OSX" {
            // iPadOS Safari in desktop mode sends a Mac user agent.
            ua.os = "iPadOS".into();
            device = "tablet";
        }
        let app_row = AppRow {
            locale: app.locale.as_deref().map(clean_locale).unwrap_or_default(),
            app_version: short(app.app_version.as_deref(), 64),
            app_build: short(app.app_build.as_deref(), 64),
            sdk_version: short(app.sdk_version.as_deref(), 64),
            engine: match (&app.engine_name, &app.engine_version) {
                (Some(n), Some(v)) => format!("{} {}", short(Some(n), 32), enrich::major(v)),
                (Some(n), None) => short(Some(n), 32),
                _ => String::new(),
            },
            device_model: short(app.device_model.as_deref(), 64),
            install_source: short(app.install_source.as_deref(), 128),
        };
        // Revenue last: a dropped event is never refused for its revenue.
        let revenue = match &p.tracker.revenue {
            Some((amount, currency)) => parse::revenue(amount, currency)?,
            None => (0, String::new()),
        };
        Ok(Enriched {
            parsed: p,
            ua,
            device,
            place,
            bot,
            sources,
            app: app_row,
            revenue,
        })
    }

    /// Stage 3: hashes the client into the visitor and session ids and drops it, keeps only
    /// the allow-listed query parameters, minimises a child-directed site's row and scrubs it.
    /// `Err` only when there is no salt for today yet.
    pub fn anonymise(&self, e: Enriched, now: DateTime<Utc>) -> Result<EventRow, Error> {
        let Enriched {
            parsed: p,
            ua,
            device,
            place,
            bot,
            sources,
            app,
            revenue,
        } = e;
        let Parsed {
            site,
            settings,
            name,
            url,
            page,
            referrer: _,
            props,
            timestamp,
            tracker,
            app: app_facts,
            browser_hit: _,
            client,
        } = p;
        let (visitor_id, mut session_id) = if settings.child_directed {
            ([0u8; 16], [0u8; 16])
        } else {
            let visitor_id = self.visitor_id(&site, &client, now)?;
            (visitor_id, self.sessions.session_id(&visitor_id, timestamp))
        };
        // From here on the raw IP and user agent are gone.
        drop(client);
        if let (Some(app_session), false) = (app_facts.session.as_deref(), settings.child_directed)
        {
            // The app's session id is an identifier: keep only a salted hash of it.
            if let Some(salt) = self.salts.get(now.date_naive()) {
                session_id = privacy::VisitorHasher::new(salt).visitor_id(&site, None, app_session);
            }
        }
        let mut pathname = page.pathname;
        if !settings.child_directed {
            let keep = self.sites.allowed_query_params(&site);
            if !keep.is_empty() {
                pathname.push_str(&parse::kept_query(&url, &keep));
            }
        }
        let utm = page.utm;
        let mut row = EventRow {
            site,
            timestamp: u32::try_from(timestamp.timestamp()).unwrap_or(0),
            name,
            hostname: page.hostname,
            pathname,
            referrer: sources.referrer,
            referrer_source: sources.referrer_source,
            utm_source: utm.source,
            utm_medium: utm.medium,
            utm_campaign: utm.campaign,
            utm_content: utm.content,
            utm_term: utm.term,
            visitor_id,
            session_id,
            browser: ua.browser,
            browser_version: ua.browser_version,
            os: ua.os,
            os_version: ua.os_version,
            device: device.to_string(),
            country_code: place.country_code,
            prop_keys: Vec::new(),
            prop_values: Vec::new(),
            engagement_ms: tracker.engagement_ms,
            scroll_depth: tracker.scroll_depth,
            screen_class: tracker.screen_class,
            processor_class: tracker.processor_class,
            locale: app.locale,
            app_version: app.app_version,
            app_build: app.app_build,
            sdk_version: app.sdk_version,
            engine: app.engine,
            is_debug: u8::from(app_facts.is_debug),
            spool_token: String::new(),
            source: sources.source,
            channel: sources.channel.to_string(),
            region: place.region,
            city: place.city,
            asn: place.asn,
            isp: place.isp,
            device_model: app.device_model,
            install_source: app.install_source,
            bot,
            revenue_micros: revenue.0,
            revenue_currency: revenue.1,
            interactive: u8::from(!tracker.non_interactive),
        };
        if settings.child_directed {
            row.minimise_for_children();
        } else {
            (row.prop_keys, row.prop_values) = props.into_iter().unzip();
        }
        row.scrub();
        Ok(row)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Limits;
    use crate::sites::SiteRegistry;

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

    fn pipeline() -> Pipeline {
        let sites = Arc::new(SiteRegistry::new(["example.com".to_string()]));
        Pipeline::with_key(sites, Limits::default(), [7; 32])
    }

    fn event(domain: &str, user_agent: &str) -> Incoming {
        Incoming {
            domain: domain.into(),
            name: "pageview".into(),
            url: "https://example.com/a".into(),
            client: Client {
                ip: Some([203, 0, 113, 9].into()),
                user_agent: user_agent.into(),
                ..Client::default()
            },
            ..Incoming::default()
        }
    }

    fn with_bad_revenue(mut ev: Incoming) -> Incoming {
        ev.tracker.revenue = Some(("lots".into(), "EUR".into()));
        ev
    }

    #[test]
    fn a_dropped_event_is_never_refused_for_its_revenue() {
        let p = pipeline();
        let now = Utc::now();
        let unknown = with_bad_revenue(event("other.example", CHROME));
        assert!(matches!(
            p.process(unknown, now),
            Ok(crate::pipeline::Outcome::Drop(DropReason::UnknownSite))
        ));
        let bot = with_bad_revenue(event("example.com", GOOGLEBOT));
        assert!(matches!(
            p.process(bot, now),
            Ok(crate::pipeline::Outcome::Drop(DropReason::BotCrawler))
        ));
        let person = with_bad_revenue(event("example.com", CHROME));
        assert!(matches!(
            p.process(person, now),
            Err(Error::BadRequest(m)) if m.contains("amount")
        ));
    }

    #[test]
    fn only_kept_events_are_hashed_into_a_session() {
        let p = pipeline();
        let now = Utc::now();
        let bot = p.enrich(p.parse(event("example.com", GOOGLEBOT), now).unwrap());
        assert!(matches!(bot, Err(Stop::Drop(DropReason::BotCrawler))));
        assert!(p.sessions.is_empty(), "a dropped bot left a session");
        let kept = p.parse(event("example.com", CHROME), now).unwrap();
        let row = p.anonymise(p.enrich(kept).unwrap(), now).unwrap();
        assert_eq!(p.sessions.len(), 1);
        assert_ne!(row.visitor_id, [0; 16]);
        assert_eq!(
            (row.browser.as_str(), row.pathname.as_str()),
            ("Chrome", "/a")
        );
    }
}
