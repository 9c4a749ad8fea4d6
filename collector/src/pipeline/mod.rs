//! The ingestion pipeline: what happens to one event between a route and the spool, in this
//! order, each stage a type of its own ([`stages`]):
//!
//! 1. **parse** — the route's [`Incoming`] is checked ([`parse`]: event name, page URL and its
//!    UTM tags, props, timestamp, tracker facts), its site resolved and its consent signals
//!    read; an unknown site or a refusal ends the trip here. The result still holds the
//!    [`Client`] (IP, user agent).
//! 2. **enrich** — while the client's IP and user agent still exist: the user agent into
//!    browser, OS and device class ([`enrich`]; bots are dropped or flagged here), the IP into
//!    country, region, city and network ([`geo`]), the data-centre check for browser hits, the
//!    referrer into source and channel ([`sources`]), then the app SDK's facts.
//! 3. **anonymise** — the keyed visitor hash and the session id ([`privacy`]) are taken, the
//!    [`Client`] is dropped, the page's query is cut to the site's allow-list, a child-directed
//!    site's row is minimised, and every free-text field is scrubbed. What comes out is an
//!    [`EventRow`]: no type after this stage can hold an IP address or a user agent.
//!
//! Routes build an [`Incoming`] per event and call [`Pipeline::process`], which runs the three
//! stages and returns the [`EventRow`] to store or the reason it is dropped. The rows of one
//! request then go to [`batch`]: encoded once in a binary row format ([`row_codec`]) and
//! appended to the durable [`spool`] (a committer thread writes and fsyncs them, so the answer
//! sent after it means "on disk"); one writer thread reads batches from the spool, decodes
//! them and hands them to the [`sink`] (ClickHouse).

pub mod batch;
pub mod enrich;
pub mod geo;
mod incoming;
pub mod parse;
pub mod privacy;
mod row;
pub mod row_codec;
pub mod sink;
pub mod sources;
pub mod spool;
pub mod stages;

use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use incoming::{
    clean_locale, AppFacts, Client, Incoming, TrackerFacts, PROCESSOR_CLASSES, SCREEN_CLASSES,
};
pub use row::EventRow;

use crate::config::Limits;
use crate::metrics::DropReason;
use crate::sites::SiteRegistry;
use crate::Error;

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

    /// Validates, enriches and anonymises one event (parse → enrich → anonymise, see
    /// [`stages`]). `Err` means the event is invalid (the message says why) or cannot be hashed
    /// yet; `Ok(Drop)` means it is valid but not stored.
    pub fn process(&self, ev: Incoming, now: DateTime<Utc>) -> Result<Outcome, Error> {
        let trip = || -> Result<EventRow, stages::Stop> {
            let parsed = self.parse(ev, now)?;
            let enriched = self.enrich(parsed)?;
            Ok(self.anonymise(enriched, now)?)
        };
        match trip() {
            Ok(row) => Ok(Outcome::Store(Box::new(row))),
            Err(stages::Stop::Drop(reason)) => Ok(Outcome::Drop(reason)),
            Err(stages::Stop::Invalid(e)) => Err(e),
        }
    }
}
