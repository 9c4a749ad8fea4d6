//! The workspace's one SQL rule, checked over the source tree: SQL is sent only through
//! `veil_schemas::sql` (an `Sql` value run with `query_raw`), values reach SQL only through its
//! escaper, and no crate builds statements as plain strings.
//!
//! One test per crate, so a failure names the crate; each lists every offending line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};

use regex::Regex;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("schemas/ lives in the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == "target" || name == "node_modules" {
            continue;
        }
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The one file allowed to call `query_raw` and to define an escaper.
const SQL_MODULE: &str = "schemas/src/sql.rs";

/// Sending SQL: `.query(…)` with an argument (the crate's `?` binding), `.bind(`, `query_raw(`
/// — all only inside the sql module.
fn send_pattern() -> Regex {
    Regex::new(r"\.query\(\s*[^)\s]|\.bind\(|query_raw\(").unwrap()
}

fn offences(krate: &str) -> Vec<String> {
    let root = workspace();
    let mut files = Vec::new();
    rust_files(&root.join(krate), &mut files);
    assert!(!files.is_empty(), "no Rust files under {krate}/");
    let send = send_pattern();
    // A second escaper.
    let escaper = Regex::new(r"fn\s+(lit|quote|escape|sql_str|sql_string)\w*\s*[<(]").unwrap();
    // SQL text built as a plain string.
    let string_sql = Regex::new(
        r#"(?s)format!\(\s*"\s*(SELECT|INSERT|ALTER|CREATE|DROP|OPTIMIZE|SYSTEM|WITH|RENAME|TRUNCATE|DELETE|SHOW|EXISTS|DESCRIBE)\b"#,
    )
    .unwrap();
    let mut out = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel == SQL_MODULE || rel == "schemas/tests/sql_rule.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if send.is_match(line) {
                out.push(format!(
                    "{rel}:{}: SQL sent outside veil_schemas::sql: {}",
                    i + 1,
                    code
                ));
            }
            if escaper.is_match(line) {
                out.push(format!("{rel}:{}: a second escaper: {}", i + 1, code));
            }
        }
        for m in string_sql.find_iter(&text) {
            let line = text[..m.start()].lines().count().max(1);
            out.push(format!(
                "{rel}:{line}: SQL built with format! (use sql! and lit)"
            ));
        }
    }
    out
}

fn check(krate: &str) {
    let found = offences(krate);
    assert!(
        found.is_empty(),
        "{} place(s) in {krate}/ break the SQL rule:\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn schemas_sends_sql_only_through_the_sql_module() {
    check("schemas");
}

#[test]
fn collector_sends_sql_only_through_the_sql_module() {
    check("collector");
}

#[test]
fn aggregator_sends_sql_only_through_the_sql_module() {
    check("aggregator");
}

#[test]
fn cli_sends_sql_only_through_the_sql_module() {
    check("cli");
}

#[test]
fn benches_send_sql_only_through_the_sql_module() {
    check("benches");
}

#[test]
fn the_rule_catches_what_it_forbids() {
    // The pattern, tried on lines that break the rule and on lines that do not.
    let send = send_pattern();
    assert!(send.is_match(r#"client.query("SELECT ?").bind(x)"#));
    assert!(send.is_match("c.query_raw(&s)"));
    assert!(!send.is_match("let q = uri.query();"));
    assert!(!send.is_match("client.sql(&q).execute()"));
}
