//! GeoIP data age against its licence, on the fixture databases (built 2024-01-01) with an
//! injected clock: which files are past their limit and when, the once-per-load warnings, the
//! Prometheus gauges, and `install` (targets, retired split files, older and broken files
//! refused).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, TimeZone, Utc};
use veil_collector::pipeline::geo::{
    install, AgeMetrics, GeoDb, ASN_FILE, CITY_FILE, CITY_V4_FILE, CITY_V6_FILE,
};
use veil_collector::Clock;

fn fixtures(set: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(set)
}

fn copy_of(set: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures(set)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

/// A clock the test moves.
struct TestClock(Mutex<DateTime<Utc>>);

impl TestClock {
    fn at(days_after_build: i64) -> Arc<Self> {
        Arc::new(Self(Mutex::new(built() + Duration::days(days_after_build))))
    }
    fn set(&self, days_after_build: i64) {
        *self.0.lock().unwrap() = built() + Duration::days(days_after_build);
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// The fixtures' build time.
fn built() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
}

fn stale_files(db: &GeoDb) -> Vec<&'static str> {
    db.ages()
        .into_iter()
        .filter(|a| a.is_stale())
        .map(|a| a.file)
        .collect()
}

/// `bytes` of a fixture with its metadata's `build_epoch` (4 bytes in the fixtures) set to
/// `epoch`.
fn with_build_epoch(mut bytes: Vec<u8>, epoch: u32) -> Vec<u8> {
    let key = b"build_epoch";
    let at = bytes
        .windows(key.len())
        .rposition(|w| w == key)
        .expect("metadata key")
        + key.len();
    // Control bytes of a 4-byte uint64: size 4 in the first, type 9 - 7 in the second.
    assert_eq!(&bytes[at..at + 2], &[0x04, 0x02], "4-byte uint64 expected");
    bytes[at + 2..at + 6].copy_from_slice(&epoch.to_be_bytes());
    bytes
}

#[test]
fn each_file_is_judged_by_its_own_limit() {
    let clock = TestClock::at(20);
    let db = GeoDb::open_with_clock(fixtures("geoip"), clock.clone());
    let ages = db.ages();
    let files: Vec<_> = ages.iter().map(|a| a.file).collect();
    assert_eq!(files, [CITY_V4_FILE, CITY_V6_FILE, ASN_FILE]);
    assert_eq!(ages[0].days(), 20);
    assert_eq!(ages[0].built(), "2024-01-01");
    assert_eq!(ages[0].policy.limit_days, 30, "GeoLite2 City via npm");
    assert_eq!(
        ages[2].policy.limit_days, 60,
        "ip-location-db ASN, CC BY 4.0"
    );
    assert!(stale_files(&db).is_empty());
    assert!(!db.status().contains("days old"), "{}", db.status());
    // Fresh data says its age against the limit too (`veil up` prints this line).
    let status = db.status();
    assert!(
        status.contains(
            "city-ipv4.mmdb (built 2024-01-01, 20 days of the 30 days its licence allows)"
        ) && status.contains("asn.mmdb (built 2024-01-01, 20 days of the 60 days Veil allows)"),
        "{status}"
    );

    clock.set(45);
    assert_eq!(stale_files(&db), [CITY_V4_FILE, CITY_V6_FILE]);
    let status = db.status();
    assert!(
        status.contains("city-ipv4.mmdb is 45 days old, past the 30 days its licence allows"),
        "{status}"
    );
    assert!(!status.contains("asn.mmdb is"), "{status}");

    clock.set(61);
    assert_eq!(stale_files(&db), [CITY_V4_FILE, CITY_V6_FILE, ASN_FILE]);
    assert!(
        db.status()
            .contains("asn.mmdb is 61 days old, past the 60 days Veil allows"),
        "{}",
        db.status()
    );
}

#[test]
fn warnings_come_at_load_when_crossing_the_limit_and_after_each_reload() {
    let files = |v: Vec<veil_collector::pipeline::geo::FileAge>| -> Vec<&'static str> {
        v.into_iter().map(|a| a.file).collect()
    };
    let dir = copy_of("geoip");
    let clock = TestClock::at(10);
    let db = GeoDb::open_with_clock(dir.path(), clock.clone());
    // Fresh: nothing to say, however often the watcher looks.
    assert!(db.warn_if_stale().is_empty());
    assert!(!db.reload_if_changed());

    // Crossing 30 days: the city files are named once.
    clock.set(31);
    assert_eq!(files(db.warn_if_stale()), [CITY_V4_FILE, CITY_V6_FILE]);
    assert!(!db.reload_if_changed());
    assert!(db.warn_if_stale().is_empty(), "once per loaded file");

    // A replaced (still old) city file: read again, so named again; the others are not.
    let tmp = dir.path().join("swap.tmp");
    std::fs::copy(fixtures("geoip-v2").join(CITY_V4_FILE), &tmp).unwrap();
    std::fs::rename(&tmp, dir.path().join(CITY_V4_FILE)).unwrap();
    assert!(db.reload_if_changed());
    assert_eq!(files(db.warn_if_stale()), [CITY_V4_FILE]);

    // Stale at load: open itself warns, so nothing is left to warn about afterwards.
    let late = GeoDb::open_with_clock(dir.path(), TestClock::at(100));
    assert_eq!(
        stale_files(&late),
        [CITY_V4_FILE, CITY_V6_FILE, ASN_FILE],
        "all past their limits at day 100"
    );
    assert!(late.warn_if_stale().is_empty());
}

#[test]
fn warn_if_stale_returns_each_stale_file_once_per_version() {
    let dir = copy_of("geoip");
    let clock = TestClock::at(0);
    let db = GeoDb::open_with_clock(dir.path(), clock.clone());
    clock.set(31);
    let first: Vec<_> = db.warn_if_stale().into_iter().map(|a| a.file).collect();
    assert_eq!(first, [CITY_V4_FILE, CITY_V6_FILE]);
    assert!(db.warn_if_stale().is_empty());
    clock.set(61);
    let asn: Vec<_> = db.warn_if_stale().into_iter().map(|a| a.file).collect();
    assert_eq!(asn, [ASN_FILE]);
    let w = db.ages()[2].warning();
    assert!(w.contains("asn.mmdb") && w.contains("61 days old"), "{w}");
    assert!(w.contains("make geoip GEOIP_SOURCE=dbip"), "{w}");
}

#[test]
fn age_gauges_per_file() {
    let db = Arc::new(GeoDb::open_with_clock(fixtures("geoip"), TestClock::at(45)));
    let registry = prometheus::Registry::new();
    registry
        .register(Box::new(AgeMetrics::new(&db).unwrap()))
        .unwrap();
    let text = veil_collector::metrics::render(&registry);
    let secs = 45 * 86_400;
    for line in [
        format!("veil_geoip_age_seconds{{db=\"city-ipv4.mmdb\"}} {secs}"),
        format!("veil_geoip_age_seconds{{db=\"asn.mmdb\"}} {secs}"),
        "veil_geoip_age_limit_seconds{db=\"city-ipv6.mmdb\"} 2592000".to_string(),
        "veil_geoip_age_limit_seconds{db=\"asn.mmdb\"} 5184000".to_string(),
    ] {
        assert!(text.contains(&line), "{line} missing from\n{text}");
    }
    assert!(
        !text.contains("city.mmdb"),
        "no series for a file not loaded"
    );
    // Gone with the database.
    drop(db);
    let text = veil_collector::metrics::render(&registry);
    assert!(!text.contains("veil_geoip_age_seconds{"), "{text}");
}

#[test]
fn install_puts_files_in_place_and_retires_the_split_city_files() {
    let dir = copy_of("geoip");
    let city = install(
        dir.path(),
        &fixtures("geoip-maxmind").join(CITY_FILE),
        false,
    )
    .unwrap();
    assert_eq!(city.file, CITY_FILE);
    assert_eq!(city.database_type, "GeoLite2-City");
    assert_eq!(city.built, "2024-01-01");
    assert_eq!(city.retired, [CITY_V4_FILE, CITY_V6_FILE]);
    assert!(!dir.path().join(CITY_V4_FILE).exists());
    assert!(!dir.path().join(".city.mmdb.new").exists());
    let asn = install(dir.path(), &fixtures("geoip-v2").join(ASN_FILE), false).unwrap();
    assert_eq!((asn.file, asn.retired.len()), (ASN_FILE, 0));

    let db = GeoDb::open(dir.path());
    let facts = db.lookup("203.0.113.7".parse().unwrap());
    assert_eq!(
        facts.region, "DE-BY|Bavaria",
        "MaxMind layout from city.mmdb"
    );
    assert_eq!(facts.asn, 64510, "the v2 ASN file");
    assert_eq!(
        db.ages().iter().map(|a| a.file).collect::<Vec<_>>(),
        [CITY_FILE, ASN_FILE]
    );
}

#[test]
fn install_refuses_older_and_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    install(
        dir.path(),
        &fixtures("geoip-maxmind").join(CITY_FILE),
        false,
    )
    .unwrap();

    // Built two days before the installed one.
    let older = src.path().join("older.mmdb");
    let bytes = std::fs::read(fixtures("geoip-maxmind").join(CITY_FILE)).unwrap();
    std::fs::write(&older, with_build_epoch(bytes.clone(), 1_703_894_400)).unwrap();
    let err = install(dir.path(), &older, false).unwrap_err().to_string();
    assert!(err.contains("older than the installed city.mmdb"), "{err}");
    assert!(err.contains("built 2023-12-30"), "{err}");
    install(dir.path(), &older, true).unwrap();
    let db = GeoDb::open(dir.path());
    assert_eq!(db.ages()[0].built(), "2023-12-30");

    // A newer one goes in without --force.
    let newer = src.path().join("newer.mmdb");
    std::fs::write(&newer, with_build_epoch(bytes, 1_704_153_600)).unwrap();
    install(dir.path(), &newer, false).unwrap();

    // Not a MaxMind DB (an HTML error page saved by a download).
    let html = src.path().join("page.mmdb");
    std::fs::write(&html, "<html>404</html>").unwrap();
    let err = install(dir.path(), &html, false).unwrap_err().to_string();
    assert!(err.contains("is not a MaxMind DB file"), "{err}");
    // The installed file is untouched by the failures.
    assert_eq!(GeoDb::open(dir.path()).ages()[0].built(), "2024-01-02");
}
