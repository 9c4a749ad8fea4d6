//! docs/DEPLOY.md's nginx example routes every path to the server that answers it: each
//! collector route to the collectors, each aggregator path (`/api/v1/…`, `/api/v2/…`) and each
//! dashboard page and file to the aggregator, with the browser's Host passed on (the
//! aggregator's Host allow-list checks it). The `location` blocks are matched as nginx does
//! (an exact `=` match first, else the longest prefix; the example has no regex locations).
//! Its production ClickHouse profile (the first ```sql block) leaves room for the settings
//! Veil sends per query, and the page names the settings and the ClickHouse 26 fixture. Its
//! systemd unit requires the token file (no `EnvironmentFile=-`) and refuses to start without
//! `VEIL_ADMIN_TOKEN` (its `ExecStartPre` check is run here without and with the token).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use veil_aggregator::Aggregator;

struct Location {
    exact: bool,
    path: String,
    upstream: String,
}

/// The `location` blocks of the first ```nginx block of docs/DEPLOY.md, and the block's text.
fn nginx_example() -> (Vec<Location>, String) {
    let doc = include_str!("../../docs/DEPLOY.md");
    let block = doc
        .split("```nginx\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("an nginx example in docs/DEPLOY.md");
    let mut out = Vec::new();
    for line in block.lines() {
        let Some(rest) = line.trim().strip_prefix("location ") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let (exact, path) = match words.as_slice() {
            ["=", p, ..] => (true, *p),
            ["^~", p, ..] => (false, *p),
            [p, ..] => (false, *p),
            [] => panic!("empty location: {line}"),
        };
        assert!(
            !path.starts_with('~'),
            "regex locations are not modelled: {line}"
        );
        let upstream = rest
            .split("proxy_pass http://")
            .nth(1)
            .and_then(|u| u.split(';').next())
            .unwrap_or_else(|| panic!("no proxy_pass in {line}"))
            .to_string();
        out.push(Location {
            exact,
            path: path.to_string(),
            upstream,
        });
    }
    (out, block.to_string())
}

/// Where nginx sends `path`.
fn upstream_of<'a>(locations: &'a [Location], path: &str) -> &'a str {
    if let Some(l) = locations.iter().find(|l| l.exact && l.path == path) {
        return &l.upstream;
    }
    locations
        .iter()
        .filter(|l| !l.exact && path.starts_with(&l.path))
        .max_by_key(|l| l.path.len())
        .map(|l| l.upstream.as_str())
        .unwrap_or_else(|| panic!("no location matches {path}"))
}

#[test]
fn the_nginx_example_routes_each_path_to_its_server() {
    let (locations, block) = nginx_example();
    assert!(
        block.contains("proxy_set_header Host $host;"),
        "the example must pass the browser's Host on"
    );
    for r in veil_collector::routes::ROUTES {
        // Health checks go to each server directly, not through the public proxy.
        if matches!(r.path, "/healthz" | "/readyz") {
            continue;
        }
        assert_eq!(
            upstream_of(&locations, r.path),
            "veil_collectors",
            "{}",
            r.path
        );
    }
    let aggregator_paths = [
        "/api/v2/query",
        "/api/v2/query.csv",
        "/api/v2/funnel",
        "/api/v1/sites",
        "/api/v1/sites/example.com",
        "/api/v1/sites/example.com/keys",
        "/api/v1/sites/example.com/ingest-keys",
        "/api/v1/sites/example.com/shared-links",
        "/api/v1/sites/example.com/realtime",
        "/api/v1/sites/example.com/export",
        "/api/v1/sites/example.com/filtered-traffic",
        "/api/v1/stats/aggregate",
        "/api/v1/stats/timeseries",
        "/api/v1/stats/breakdown",
        "/api/v1/stats/realtime/visitors",
    ];
    for p in aggregator_paths {
        assert!(
            Aggregator::is_aggregator_path(p),
            "{p} is not the aggregator's"
        );
        assert!(!veil_collector::routes::is_collector_path(p), "{p}");
        assert_eq!(upstream_of(&locations, p), "veil_aggregator", "{p}");
    }
    let pages = [
        "/",
        "/site/example.com",
        "/site/example.com/settings",
        "/share/example.com",
    ];
    for p in pages {
        assert!(veil_dashboards::is_page(p), "{p}");
        assert_eq!(upstream_of(&locations, p), "veil_aggregator", "{p}");
    }
    for a in veil_dashboards::ASSETS {
        assert_eq!(
            upstream_of(&locations, a.path),
            "veil_aggregator",
            "{}",
            a.path
        );
    }
}

/// The first ```sql block of docs/DEPLOY.md (the settings profile and user of section 2).
fn sql_example() -> &'static str {
    let doc = include_str!("../../docs/DEPLOY.md");
    doc.split("```sql\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sql example in docs/DEPLOY.md")
}

/// `name = N` in `text`, as a number.
fn setting(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let rest = l
                .trim()
                .strip_prefix(name)?
                .trim_start()
                .strip_prefix('=')?;
            rest.trim()
                .trim_end_matches(',')
                .split([',', ' ', ';'])
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no `{name} = N` in\n{text}"))
}

#[test]
fn the_production_profile_leaves_room_for_what_veil_sets_per_query() {
    let sql = sql_example();
    // The profile's memory limit must be above the default per-query budget, or every report
    // query would hit the profile's limit (a 502) before its own (a 400 naming the report).
    let budget = veil_aggregator::db::QueryBudget::default().memory_bytes;
    assert!(
        setting(sql, "max_memory_usage") > budget,
        "profile max_memory_usage must exceed {budget}"
    );
    // Veil writes and changes settings per query: the user may not be read-only.
    assert_eq!(setting(sql, "readonly"), 0);
    // Background jobs run without a per-query limit: the profile must not impose one.
    assert_eq!(setting(sql, "max_execution_time"), 0);
    assert!(sql.contains("SETTINGS PROFILE 'veil'"), "{sql}");
    // The table of per-query settings states the values the code sends.
    let doc = include_str!("../../docs/DEPLOY.md");
    let row = format!(
        "| `max_execution_time` | {} (`veil_aggregator::db::MAX_EXECUTION_SECS`)",
        veil_aggregator::db::MAX_EXECUTION_SECS
    );
    assert!(doc.contains(&row), "missing: {row}");
    // So does the replay setting collectors send in cluster mode.
    let row = format!("| `{}` | 1, where", veil_schemas::sql::MV_DEDUP_SETTING);
    assert!(doc.contains(&row), "missing: {row}");
    for name in [
        "max_bytes_before_external_group_by",
        "max_bytes_before_external_sort",
        "output_format_json_quote_64bit_integers",
        "insert_distributed_sync",
        "distributed_foreground_insert",
        "VEIL_TEST_CLICKHOUSE=chdb26",
        "make test-ch26",
        "testing/chdb/serve.py",
    ] {
        assert!(doc.contains(name), "docs/DEPLOY.md does not name {name}");
    }
}

/// The first ```ini block of docs/DEPLOY.md (the systemd unit of section 1).
fn systemd_unit() -> &'static str {
    let doc = include_str!("../../docs/DEPLOY.md");
    doc.split("```ini\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a systemd unit in docs/DEPLOY.md")
}

/// Runs the unit's `ExecStartPre=/bin/sh -c '…'` as systemd would (`$$` is a literal `$`),
/// with only `env` in the environment; whether it succeeded.
fn exec_start_pre_passes(script: &str, env: &[(&str, &str)]) -> bool {
    std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(script.replace("$$", "$"))
        .env_clear()
        .envs(env.iter().copied())
        .status()
        .expect("/bin/sh runs")
        .success()
}

#[test]
fn the_systemd_unit_will_not_start_without_the_admin_token() {
    let unit = systemd_unit();
    let doc = include_str!("../../docs/DEPLOY.md");
    // A "-" before the path makes a missing file silently fine: Veil would start without its
    // token, open on loopback, and the TLS proxy in front would publish the admin API.
    assert!(
        !doc.contains("EnvironmentFile=-"),
        "docs/DEPLOY.md makes the token file optional again"
    );
    let service: Vec<&str> = unit
        .split("[Service]")
        .nth(1)
        .and_then(|s| s.split("\n[").next())
        .expect("a [Service] section")
        .lines()
        .map(str::trim)
        .collect();
    let value = |key: &str| -> Vec<&str> {
        service
            .iter()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    };
    // The file the unit requires is the one the page tells to write, and it holds the token.
    let files = value("EnvironmentFile");
    assert_eq!(files, ["/etc/veil/secrets.env"], "{unit}");
    let secrets = doc
        .split("# /etc/veil/secrets.env")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the secrets file's example in docs/DEPLOY.md");
    assert!(
        secrets
            .lines()
            .skip(1)
            .any(|l| l.starts_with("VEIL_ADMIN_TOKEN=")),
        "{secrets}"
    );
    // A file that is there but lacks the token stops the start too: the check fails, and it
    // is not marked "-" (which would let systemd ignore its failure).
    let checks = value("ExecStartPre");
    assert_eq!(checks.len(), 1, "one ExecStartPre check: {unit}");
    assert!(
        !checks[0].starts_with('-'),
        "ExecStartPre=- lets systemd ignore the check's failure: {}",
        checks[0]
    );
    let script = checks[0]
        .strip_prefix("/bin/sh -c '")
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or_else(|| panic!("ExecStartPre is not `/bin/sh -c '…'`: {}", checks[0]));
    // `$$`: systemd would otherwise paste the token into a command line others can read.
    assert!(
        !script.replace("$$", "").contains('$'),
        "a single `$` in ExecStartPre is expanded by systemd into the command line: {script}"
    );
    assert!(!exec_start_pre_passes(script, &[]), "no token: {script}");
    assert!(
        !exec_start_pre_passes(script, &[("VEIL_ADMIN_TOKEN", "")]),
        "an empty token: {script}"
    );
    assert!(
        exec_start_pre_passes(script, &[("VEIL_ADMIN_TOKEN", "0123456789abcdef0123")]),
        "the token set: {script}"
    );
    assert!(
        value("ExecStart")
            .first()
            .is_some_and(|s| s.starts_with("/usr/local/bin/veil up")),
        "{unit}"
    );
}
