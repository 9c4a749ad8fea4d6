//! `veil import` as an operator runs it: against a running `veil up` (its managed ClickHouse,
//! found under --data-dir as `veil key create` finds it), the fixture export of
//! `testing/plausible/make_export.py` imported, listed, imported again (nothing changes),
//! answered through `include.imports` over HTTP, deleted; a malformed file refused with
//! its file, line and column, nothing stored.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::process::{Command, Stdio};

use common::{free_port, http, start, stop};
use serde_json::Value;

/// `veil ARGS --data-dir DIR/var`: (success, stdout, stderr).
fn veil(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("var"))
        .env_remove("VEIL_CLICKHOUSE_URL")
        .env_remove("VEIL_ADMIN_TOKEN")
        .env_remove("VEIL_API_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn visitors(addr: std::net::SocketAddr) -> Value {
    let (s, b) = http(
        addr,
        "POST",
        "/api/v2/query",
        &[("Content-Type", "application/json")],
        r#"{"site_id": "example.com", "metrics": ["visitors", "pageviews"],
            "date_range": ["2026-11-18", "2026-11-20"], "include": {"imports": true}}"#,
    );
    assert_eq!(s, 200, "{b}");
    serde_json::from_str(&b).unwrap()
}

#[test]
fn veil_import_against_a_running_veil_up() {
    let dir = tempfile::tempdir().unwrap();
    let v = start(dir.path(), free_port(), &["--privacy", "exact"]);
    let export = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testing/plausible/export.zip"
    );

    let (ok, out, err) = veil(
        dir.path(),
        &["import", "plausible", export, "--site", "example.com"],
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.starts_with("imported export.zip as "), "{out}");
    let id = out
        .split_whitespace()
        .nth(3)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    assert_eq!(id.len(), 16, "{out}");

    let doc = visitors(v.addr);
    assert_eq!(
        doc["results"][0]["metrics"],
        serde_json::json!([230, 550]),
        "{doc}"
    );
    assert_eq!(doc["meta"]["imports_included"], true);

    let (ok, out, err) = veil(
        dir.path(),
        &["import", "plausible", export, "--site", "example.com"],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("imported already") && out.contains(&id),
        "{out}"
    );
    let (ok, out, _) = veil(dir.path(), &["import", "list", "--site", "example.com"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with(&id) && out.contains("2026-11-18 to 2026-11-20"),
        "{out}"
    );
    assert_eq!(
        visitors(v.addr)["results"][0]["metrics"],
        serde_json::json!([230, 550])
    );

    // A malformed CSV: refused naming the file, line and column.
    let bad = dir.path().join("imported_devices_20261101_20261101.csv");
    std::fs::write(
        &bad,
        "date,device,visitors,visits,visit_duration,bounces,pageviews\n2026-11-01,Desktop,1,1,x,0,1\n",
    )
    .unwrap();
    let (ok, _, err) = veil(
        dir.path(),
        &[
            "import",
            "plausible",
            bad.to_str().unwrap(),
            "--site",
            "example.com",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains(
            "imported_devices_20261101_20261101.csv line 2, column visit_duration: \"x\" is not a whole number"
        ),
        "{err}"
    );

    let (ok, out, err) = veil(
        dir.path(),
        &["import", "delete", &id, "--site", "example.com"],
    );
    assert!(ok, "{err}");
    assert!(out.starts_with(&format!("deleted import {id}")), "{out}");
    let doc = visitors(v.addr);
    assert_eq!(doc["meta"]["imports_included"], false, "{doc}");
    assert_eq!(doc["meta"]["imports_skip_reason"], "no_imported_data");
    let (_, out, _) = veil(dir.path(), &["import", "list", "--site", "example.com"]);
    assert_eq!(out, "");
    let (ok, _, err) = veil(
        dir.path(),
        &["import", "delete", &id, "--site", "example.com"],
    );
    assert!(!ok && err.contains("has no import"), "{err}");
    stop(v);
}
