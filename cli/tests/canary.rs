//! The privacy canary: identifiers sent through every endpoint, in every field a sender controls,
//! must appear in no row of any table, no file under the data dir, and no log line. The scanner
//! first proves it can fail: a planted canary in a table and in a file must be found.
//! Then `veil erase-site` removes the site entirely.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use veil_schemas::sql::{ident, lit, Sql};

const IPS: [&str; 3] = ["198.51.100.201", "2001:db8:c0de::77", "198.51.100.202"];
const UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) CanaryAgent/3.1 Chrome/121.0.0.0 Safari/537.36";
const CANARIES: [&str; 12] = [
    "198.51.100.201",
    "2001:db8:c0de::77",
    "198.51.100.202",
    "CanaryAgent",
    "canary.person@example.org",
    "canary.person%40example.org",
    "sk_live_canarytoken",
    "+44 20 7946 0123",
    "4111111111111234",
    "eyJhbGciOiJIUzI1NiJ9.eyJjYW5hcnkiOjF9.c2lnbmF0dXJlY2FuYXJ5",
    "203.0.113.199",
    "/gpc-canary",
];

/// Every table of the database as TSV text.
fn dump_tables(url: &ClickHouse, db: &str) -> String {
    let tables = clickhouse_query(
        url,
        &veil_schemas::sql!(
            "SELECT name FROM system.tables WHERE database = {} FORMAT TSV",
            lit(db)
        ),
    );
    let mut out = String::new();
    for t in tables.lines().filter(|t| !t.is_empty()) {
        out.push_str(&clickhouse_query(
            url,
            &veil_schemas::sql!(
                "SELECT * FROM {}.`{}` FORMAT TSV",
                ident(db).unwrap(),
                ident(t).unwrap()
            ),
        ));
    }
    assert!(tables.contains("events"), "{tables}");
    out
}

fn find(needle: &str, tables: &str, dir: &Path) -> Vec<String> {
    let mut hits = Vec::new();
    if tables.contains(needle) {
        hits.push("a ClickHouse table".into());
    }
    grep_tree(dir, needle.as_bytes(), &mut hits);
    hits
}

#[test]
fn no_identifier_survives_anywhere_and_erase_site_removes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let v = start(dir.path(), free_port(), &["--child-site", "kids.example"]);
    let url = managed_clickhouse(&dir.path().join("var"));

    // Plausible endpoint: canaries in the URL path and query, referrer, props, headers.
    let plausible = json!({
        "n": "pageview", "d": "example.com",
        "u": "https://example.com/account/canary.person@example.org/reset?token=sk_live_canarytoken&utm_source=mail",
        "r": "https://mail.example/inbox?to=canary.person%40example.org",
        "p": {"phone": "+44 20 7946 0123", "card": "4111111111111234", "email": "canary.person@example.org"}
    });
    let (s, _) = http(
        v.addr,
        "POST",
        "/api/event",
        &[("User-Agent", UA), ("X-Forwarded-For", IPS[0])],
        &plausible.to_string(),
    );
    assert_eq!(s, 202);
    // URL-encoded e-mail in the path, JWT and IP in the path.
    let encoded = json!({"n": "pageview", "d": "example.com",
        "u": "https://example.com/u/canary.person%40example.org/s/eyJhbGciOiJIUzI1NiJ9.eyJjYW5hcnkiOjF9.c2lnbmF0dXJlY2FuYXJ5/from/203.0.113.199"});
    assert_eq!(
        http(
            v.addr,
            "POST",
            "/api/event",
            &[("User-Agent", UA), ("X-Forwarded-For", IPS[1])],
            &encoded.to_string()
        )
        .0,
        202
    );
    // Opted out: nothing of it may be stored.
    let gpc = json!({"n": "pageview", "d": "example.com", "u": "https://example.com/gpc-canary"});
    assert_eq!(
        http(
            v.addr,
            "POST",
            "/api/event",
            &[("User-Agent", UA), ("Sec-GPC", "1")],
            &gpc.to_string()
        )
        .0,
        202
    );
    // Native batch (JSON array) with server-side ip/user_agent fields, and NDJSON.
    let native = json!([
        {"site": "example.com", "name": "signup", "url": "https://example.com/welcome?email=canary.person@example.org",
         "ip": IPS[2], "user_agent": UA, "props": {"contact": "canary.person@example.org"}},
        {"site": "kids.example", "name": "pageview", "url": "https://kids.example/play", "ip": IPS[2], "user_agent": UA,
         "props": {"name": "canary.person@example.org"}}
    ]);
    let (s, body) = http(v.addr, "POST", "/v1/events", &[], &native.to_string());
    assert_eq!(s, 202, "{body}");
    let nd = format!(
        "{}\n",
        json!({"site": "example.com", "name": "pageview", "url": "https://example.com/n", "ip": IPS[0], "user_agent": UA})
    );
    assert_eq!(
        http(
            v.addr,
            "POST",
            "/v1/events",
            &[("Content-Type", "application/x-ndjson")],
            &nd
        )
        .0,
        202
    );

    // Wait until the five stored events are in ClickHouse.
    let deadline = Instant::now() + Duration::from_secs(15);
    while clickhouse_query(&url, &Sql::new("SELECT count() FROM veil.events")).trim() != "5" {
        assert!(
            Instant::now() < deadline,
            "events not stored: {}",
            clickhouse_query(
                &url,
                &Sql::new("SELECT site, pathname FROM veil.events FORMAT TSV")
            )
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let tables = dump_tables(&url, "veil");
    assert!(
        tables.contains("[email]") && tables.contains("/account/[email]/reset"),
        "scrubbed rows are there: {tables}"
    );

    // The scanner can fail: planted canaries are found in a table and in a file.
    clickhouse_query(&url, &Sql::new("INSERT INTO veil.events (site, pathname) VALUES ('planted.example', '/PLANTED-CANARY-7f3a')"));
    std::fs::write(
        dir.path().join("var/planted.txt"),
        "PLANTED-FILE-CANARY-19c2",
    )
    .unwrap();
    let with_plant = dump_tables(&url, "veil");
    assert!(
        !find("PLANTED-CANARY-7f3a", &with_plant, dir.path()).is_empty(),
        "scanner must find a planted table canary"
    );
    assert!(
        !find("PLANTED-FILE-CANARY-19c2", &with_plant, dir.path()).is_empty(),
        "scanner must find a planted file canary"
    );
    std::fs::remove_file(dir.path().join("var/planted.txt")).unwrap();

    stop(v);
    // After a clean stop, logs are complete: scan tables (through a fresh veil), files and logs.
    let v = start(dir.path(), free_port(), &["--child-site", "kids.example"]);
    let url = managed_clickhouse(&dir.path().join("var"));
    let tables = dump_tables(&url, "veil");
    for canary in CANARIES {
        let hits = find(canary, &tables, dir.path());
        assert!(hits.is_empty(), "{canary:?} found in {hits:?}");
    }
    // Child rows carry no visitor hash.
    let child = clickhouse_query(&url, &Sql::new("SELECT hex(visitor_id), length(prop_keys) FROM veil.events WHERE site = 'kids.example' FORMAT TSV"));
    assert_eq!(child.trim(), "00000000000000000000000000000000\t0");

    // erase-site through the binary: every row of the site is gone, and it says how many.
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["erase-site", "example.com", "--clickhouse-url", &url.url])
        .envs(url.env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tables"]["events"], 4, "{report}");
    assert_eq!(
        clickhouse_query(
            &url,
            &Sql::new("SELECT count() FROM veil.events WHERE site = 'example.com'")
        )
        .trim(),
        "0"
    );
    assert_eq!(
        clickhouse_query(
            &url,
            &Sql::new("SELECT count() FROM veil.events WHERE site = 'kids.example'")
        )
        .trim(),
        "1"
    );
    stop(v);
}
