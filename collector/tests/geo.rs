//! GeoIP enrichment against the fixture databases of `tests/fixtures/` (built by
//! `scripts/geoip/build_fixture.py`): IPv4, IPv6, IPv4-mapped, unknown addresses, missing and
//! broken files, both record schemas, and reload without reopening.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use veil_collector::pipeline::geo::{Availability, GeoDb, GeoFacts, ASN_FILE, CITY_V4_FILE};

fn fixtures(set: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(set)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The fixtures' places as stored (`code|name`, `id|name`: `veil_schemas::places`): the
/// ip-location-db-style files carry names, and Veil's table gives them codes and ids; the
/// MaxMind-style file carries its own.
const MUNICH: (&str, &str) = ("DE-BY|Bavaria", "2867714|Munich");
const SF: (&str, &str) = ("US-CA|California", "5391959|San Francisco");
const PARIS: (&str, &str) = ("FR-IDF|Ile-de-France", "2988507|Paris");
const VIENNA: (&str, &str) = ("AT-9|State of Vienna", "2761369|Vienna");

fn facts(country: &str, region: &str, city: &str, asn: u32, isp: &str) -> GeoFacts {
    GeoFacts {
        country_code: country.into(),
        region: region.into(),
        city: city.into(),
        asn,
        isp: isp.into(),
    }
}

/// A temporary copy of a fixture set, to change files under a live `GeoDb`.
fn copy_of(set: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures(set)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

/// Replaces `name` in `dir` the way `fetch.sh` does: write aside, then rename over it.
fn replace(dir: &Path, name: &str, from: &Path) {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[test]
fn ipv4_places_and_asn() {
    let db = GeoDb::open(fixtures("geoip"));
    assert_eq!(db.availability(), Availability::Full);
    assert_eq!(
        db.lookup(ip("203.0.113.7")),
        facts("DE", MUNICH.0, MUNICH.1, 64500, "Example Carrier")
    );
    assert_eq!(
        db.lookup(ip("198.51.100.255")),
        facts("US", SF.0, SF.1, 64501, "Example Cable, Inc.")
    );
    // A country-only place and no ASN record.
    assert_eq!(db.lookup(ip("192.0.2.1")), facts("JP", "", "", 0, ""));
}

#[test]
fn ipv6_places_and_asn() {
    let db = GeoDb::open(fixtures("geoip"));
    assert_eq!(
        db.lookup(ip("2001:db8:abcd::1")),
        facts("FR", PARIS.0, PARIS.1, 64502, "Exemple Fibre SAS")
    );
}

#[test]
fn ipv4_mapped_ipv6_is_looked_up_as_ipv4() {
    let db = GeoDb::open(fixtures("geoip"));
    assert_eq!(
        db.lookup(ip("::ffff:203.0.113.7")),
        db.lookup(ip("203.0.113.7"))
    );
    assert_eq!(db.lookup(ip("::ffff:203.0.113.7")).city, MUNICH.1);
}

#[test]
fn unknown_addresses_are_empty() {
    let db = GeoDb::open(fixtures("geoip"));
    for addr in [
        "10.0.0.1",
        "127.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "203.0.114.1",
        "::1",
        "::",
        "2001:db9::1",
        "::ffff:10.0.0.1",
    ] {
        let got = db.lookup(ip(addr));
        assert!(
            got.country_code.is_empty() && got.city.is_empty(),
            "{addr}: {got:?}"
        );
    }
    assert!(db.lookup(ip("10.0.0.1")).is_empty());
}

#[test]
fn missing_directory_is_empty_and_says_so() {
    let db = GeoDb::open("/nonexistent/veil/geoip");
    assert_eq!(db.availability(), Availability::Missing);
    assert!(db.lookup(ip("203.0.113.7")).is_empty());
    assert!(db.lookup(ip("2001:db8::1")).is_empty());
    let status = db.status();
    assert!(status.contains("GeoIP databases missing"), "{status}");
    assert!(status.contains("make geoip"), "{status}");
    assert!(status.contains("events are still accepted"), "{status}");
}

#[test]
fn status_names_loaded_files_and_partial_data() {
    let db = GeoDb::open(fixtures("geoip"));
    let status = db.status();
    for name in [
        "city-ipv4.mmdb",
        "city-ipv6.mmdb",
        "asn.mmdb",
        "built 2024-01-01",
    ] {
        assert!(status.contains(name), "{status}");
    }
    // The fixtures are built with an old epoch on purpose.
    assert!(status.contains("days old"), "{status}");

    let dir = copy_of("geoip");
    std::fs::remove_file(dir.path().join(ASN_FILE)).unwrap();
    let db = GeoDb::open(dir.path());
    assert_eq!(db.availability(), Availability::PlacesOnly);
    assert!(db.status().contains("asn.mmdb missing"), "{}", db.status());
    assert_eq!(
        db.lookup(ip("203.0.113.7")),
        facts("DE", MUNICH.0, MUNICH.1, 0, "")
    );
}

#[test]
fn maxmind_geoip2_city_schema() {
    let dir = copy_of("geoip-maxmind");
    std::fs::copy(fixtures("geoip").join(ASN_FILE), dir.path().join(ASN_FILE)).unwrap();
    let db = GeoDb::open(dir.path());
    assert_eq!(
        db.lookup(ip("203.0.113.7")),
        facts("DE", MUNICH.0, MUNICH.1, 64500, "Example Carrier")
    );
    // A subdivision without an ISO code is stored by its English name; the city's GeoNames
    // id is the record's.
    assert_eq!(
        db.lookup(ip("198.51.100.1")),
        facts("US", "California", SF.1, 64501, "Example Cable, Inc.")
    );
    assert_eq!(
        db.lookup(ip("2001:db8::1")),
        facts(
            "FR",
            "FR-IDF|Île-de-France",
            PARIS.1,
            64502,
            "Exemple Fibre SAS"
        )
    );
    assert_eq!(db.lookup(ip("::ffff:203.0.113.7")).region, MUNICH.0);
}

#[test]
fn city_mmdb_is_tried_before_the_split_files() {
    let dir = copy_of("geoip");
    std::fs::copy(
        fixtures("geoip-maxmind").join("city.mmdb"),
        dir.path().join("city.mmdb"),
    )
    .unwrap();
    let db = GeoDb::open(dir.path());
    assert_eq!(db.lookup(ip("203.0.113.7")).region, MUNICH.0);
    // Not in city.mmdb: the split files answer.
    assert_eq!(db.lookup(ip("192.0.2.1")).country_code, "JP");
}

#[test]
fn reload_picks_up_replaced_files_without_reopening() {
    let dir = copy_of("geoip");
    let db = GeoDb::open(dir.path());
    assert_eq!(db.lookup(ip("203.0.113.7")).city, MUNICH.1);
    assert!(!db.reload_if_changed(), "nothing changed yet");

    replace(
        dir.path(),
        CITY_V4_FILE,
        &fixtures("geoip-v2").join(CITY_V4_FILE),
    );
    replace(dir.path(), ASN_FILE, &fixtures("geoip-v2").join(ASN_FILE));
    assert!(db.reload_if_changed());
    assert_eq!(
        db.lookup(ip("203.0.113.7")),
        facts("AT", VIENNA.0, VIENNA.1, 64510, "Second Example Net")
    );
    // Untouched file still answers; the new city-ipv4 file has no 198.51.100.0/24.
    assert_eq!(db.lookup(ip("2001:db8::1")).city, PARIS.1);
    assert!(db.lookup(ip("198.51.100.1")).is_empty());
}

#[test]
fn unreadable_replacement_keeps_the_previous_version() {
    let dir = copy_of("geoip");
    let db = GeoDb::open(dir.path());
    std::fs::write(dir.path().join(ASN_FILE), b"not a maxmind db, half written").unwrap();
    assert!(db.reload_if_changed());
    assert_eq!(db.lookup(ip("203.0.113.7")).asn, 64500);
    let status = db.status();
    assert!(status.contains("asn.mmdb unreadable"), "{status}");
    assert!(status.contains("still used"), "{status}");
    // Not parsed again while the file stays the same.
    assert!(!db.reload_if_changed());
    // A good file later is picked up.
    replace(dir.path(), ASN_FILE, &fixtures("geoip-v2").join(ASN_FILE));
    assert!(db.reload_if_changed());
    assert_eq!(db.lookup(ip("203.0.113.7")).asn, 64510);
    assert!(!db.status().contains("unreadable"));
}

#[test]
fn files_appearing_and_disappearing() {
    let dir = tempfile::tempdir().unwrap();
    let db = GeoDb::open(dir.path());
    assert_eq!(db.availability(), Availability::Missing);
    for entry in std::fs::read_dir(fixtures("geoip")).unwrap() {
        let entry = entry.unwrap();
        replace(
            dir.path(),
            &entry.file_name().to_string_lossy(),
            &entry.path(),
        );
    }
    assert!(db.reload_if_changed());
    assert_eq!(db.availability(), Availability::Full);
    assert_eq!(db.lookup(ip("203.0.113.7")).country_code, "DE");

    std::fs::remove_file(dir.path().join(ASN_FILE)).unwrap();
    assert!(db.reload_if_changed());
    assert_eq!(db.availability(), Availability::PlacesOnly);
    assert_eq!(db.lookup(ip("203.0.113.7")).asn, 0);
}

#[test]
fn watcher_reloads_in_the_background() {
    let dir = copy_of("geoip");
    let db = Arc::new(GeoDb::open(dir.path()));
    let watcher = db.watch(Duration::from_millis(20)).unwrap();
    replace(
        dir.path(),
        CITY_V4_FILE,
        &fixtures("geoip-v2").join(CITY_V4_FILE),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.lookup(ip("203.0.113.7")).city != VIENNA.1 {
        assert!(Instant::now() < deadline, "no reload within 10 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The watcher ends once the database is dropped.
    drop(db);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !watcher.is_finished() {
        assert!(Instant::now() < deadline, "watcher still running");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn lookups_from_many_threads_during_reloads() {
    let dir = copy_of("geoip");
    let db = Arc::new(GeoDb::open(dir.path()));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                for _ in 0..2_000 {
                    let city = db.lookup(ip("203.0.113.7")).city;
                    assert!(city == MUNICH.1 || city == VIENNA.1, "{city}");
                }
            })
        })
        .collect();
    for i in 0..20 {
        let set = if i % 2 == 0 { "geoip-v2" } else { "geoip" };
        replace(dir.path(), CITY_V4_FILE, &fixtures(set).join(CITY_V4_FILE));
        db.reload_if_changed();
    }
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn fixtures_stay_small() {
    let mut total = 0;
    for set in ["geoip", "geoip-v2", "geoip-maxmind"] {
        for entry in std::fs::read_dir(fixtures(set)).unwrap() {
            total += entry.unwrap().metadata().unwrap().len();
        }
    }
    assert!(total < 100 * 1024, "{total} bytes");
}
