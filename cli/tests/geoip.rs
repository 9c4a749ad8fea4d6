//! GeoIP age and refresh through the real `veil` binary: `veil up` with the old fixture
//! databases warns at start (naming the file, its age, the limit and the command) and again
//! after a reload, and exports the ages on /metrics; `veil geoip status` fails on old data;
//! `scripts/geoip/update.sh dbip` installs databases from a local mirror (file://, standing in
//! for download.db-ip.com) through `veil geoip install`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn fixtures(set: &str) -> PathBuf {
    repo().join("collector/tests/fixtures").join(set)
}

fn copy_fixture(set: &str, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(fixtures(set)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Polls `path` until it contains every one of `needles` `times` times, or panics at the
/// deadline with the file's text.
fn wait_for_log(path: &Path, needles: &[&str], times: usize, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if needles.iter().all(|n| text.matches(n).count() >= times) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{needles:?} not seen {times} time(s) in {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn veil_up_warns_about_old_geoip_data_at_start_and_after_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let geoip = dir.path().join("geoip");
    copy_fixture("geoip", &geoip);
    let port = free_port();
    // Checked every second instead of every 30 s, so the reload below comes quickly.
    let v = start(
        dir.path(),
        port,
        &[
            "--geoip-dir",
            geoip.to_str().unwrap(),
            "--geoip-reload",
            "1s",
        ],
    );
    let stderr = dir.path().join(format!("stderr-{port}.log"));
    let warning = [
        "GeoIP database city-ipv4.mmdb in",
        "(MaxMind GeoLite2 data, built 2024-01-01)",
        "past its licence's limit of 30 days",
        "make geoip GEOIP_SOURCE=dbip",
    ];
    wait_for_log(&stderr, &warning, 1, Duration::from_secs(10));
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        log.contains("GeoIP database asn.mmdb in") && log.contains("past Veil's limit of 60 days"),
        "{log}"
    );
    // The status line `veil up` prints says it too.
    let out = std::fs::read_to_string(dir.path().join(format!("stdout-{port}.log"))).unwrap();
    assert!(
        out.contains("city-ipv4.mmdb is") && out.contains("past the 30 days its licence allows"),
        "{out}"
    );
    // Ages and limits for Prometheus.
    let (status, text) = http(v.metrics_addr, "GET", "/metrics", &[], "");
    assert_eq!(status, 200);
    assert!(
        text.contains("veil_geoip_age_limit_seconds{db=\"city-ipv4.mmdb\"} 2592000"),
        "{text}"
    );
    let age: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("veil_geoip_age_seconds{db=\"asn.mmdb\"} "))
        .unwrap_or_else(|| panic!("no asn.mmdb age in\n{text}"))
        .parse()
        .unwrap();
    assert!(age > 300.0 * 86_400.0, "{age}");

    // A replaced file (the v2 fixture, just as old) is reloaded at the next check: warned again.
    let tmp = geoip.join("swap.tmp");
    std::fs::copy(fixtures("geoip-v2").join("city-ipv4.mmdb"), &tmp).unwrap();
    std::fs::rename(&tmp, geoip.join("city-ipv4.mmdb")).unwrap();
    wait_for_log(
        &stderr,
        &["GeoIP database city-ipv4.mmdb in"],
        2,
        Duration::from_secs(45),
    );
    // Events are still taken.
    let (status, _) = http(
        v.addr,
        "POST",
        "/api/event",
        &[("Content-Type", "text/plain"), ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36")],
        r#"{"n":"pageview","u":"https://example.com/","d":"example.com","r":null}"#,
    );
    assert_eq!(status, 202);
    stop(v);
}

#[test]
fn geoip_status_fails_on_data_past_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture("geoip", dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["geoip", "status", "--geoip-dir"])
        .arg(dir.path())
        .env("VEIL_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    for part in [
        "city-ipv4.mmdb",
        "MaxMind GeoLite2",
        "built 2024-01-01",
        "limit 30 days (licence)  TOO OLD",
        "asn.mmdb",
        "limit 60 days (Veil)  TOO OLD",
        "make geoip GEOIP_SOURCE=maxmind",
    ] {
        assert!(stdout.contains(part), "{part:?} missing from\n{stdout}");
    }
    assert!(
        stderr.contains("3 GeoIP database(s) past their age limit"),
        "{stderr}"
    );

    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["geoip", "status", "--geoip-dir"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GeoIP databases missing"));
}

/// A stand-in for download.db-ip.com: the fixtures, gzipped, under DB-IP's file names.
fn dbip_mirror(month: &str) -> tempfile::TempDir {
    let mirror = tempfile::tempdir().unwrap();
    for (name, src) in [
        ("city", fixtures("geoip-maxmind").join("city.mmdb")),
        ("asn", fixtures("geoip-v2").join("asn.mmdb")),
    ] {
        let gz = mirror
            .path()
            .join(format!("dbip-{name}-lite-{month}.mmdb.gz"));
        let out = std::fs::File::create(&gz).unwrap();
        assert!(Command::new("gzip")
            .arg("-c")
            .arg(&src)
            .stdout(out)
            .status()
            .unwrap()
            .success());
    }
    mirror
}

fn update_sh(geoip: &Path, mirror: &Path, month: &str) -> std::process::Output {
    Command::new(repo().join("scripts/geoip/update.sh"))
        .arg("dbip")
        .arg(geoip)
        .env("VEIL", env!("CARGO_BIN_EXE_veil"))
        .env("DBIP_BASE_URL", format!("file://{}", mirror.display()))
        .env("DBIP_MONTH", month)
        .env("VEIL_LOG", "error")
        .output()
        .unwrap()
}

#[test]
fn update_script_installs_dbip_lite_from_a_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let geoip = dir.path().join("geoip");
    copy_fixture("geoip", &geoip);
    let mirror = dbip_mirror("2024-01");

    // A month the mirror does not have: fails, nothing changes.
    let out = update_sh(&geoip, mirror.path(), "2023-11");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no DB-IP Lite city database"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(geoip.join("city-ipv4.mmdb").exists());
    assert!(!geoip.join("city.mmdb").exists());

    let out = update_sh(&geoip, mirror.path(), "2024-01");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("as "), "{stdout}");
    assert!(geoip.join("city.mmdb").exists());
    assert!(
        !geoip.join("city-ipv4.mmdb").exists(),
        "split files retired"
    );
    assert!(!geoip.join("city-ipv6.mmdb").exists());
    let attribution = std::fs::read_to_string(geoip.join("ATTRIBUTION.txt")).unwrap();
    assert!(
        attribution.contains("IP Geolocation by DB-IP"),
        "{attribution}"
    );

    // What a collector now reads: the installed files, through `veil geoip status`.
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["geoip", "status", "--geoip-dir"])
        .arg(&geoip)
        .env("VEIL_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("city.mmdb") && stdout.contains("asn.mmdb"),
        "{stdout}"
    );
    assert!(!stdout.contains("city-ipv4.mmdb"), "{stdout}");
}
