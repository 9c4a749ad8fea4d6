//! The managed ClickHouse's access control, on the real server: its `default` user needs the
//! password Veil generated (kept 0600 in the server's directory, only its SHA-256 in
//! `users.xml`); a client without it, with an empty or a wrong one gets ClickHouse's 401;
//! Veil's clients send it; a directory left by an older, passwordless Veil gets one at the
//! next start; a restart keeps it; no log the server writes shows it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use veil_schemas::managed::{password_sha256_hex, ManagedClickHouse, ManagedOptions};
use veil_schemas::ClickHouseConfig;

/// `SELECT 1` over raw HTTP/1.0, logging in with `auth` (`X-ClickHouse-User`/`-Key`); the
/// status and the body.
fn select_one(port: u16, auth: Option<(&str, &str)>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = auth
        .map(|(u, k)| format!("X-ClickHouse-User: {u}\r\nX-ClickHouse-Key: {k}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST / HTTP/1.0\r\nHost: x\r\n{auth}Content-Length: 8\r\n\r\nSELECT 1"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw.split_once("\r\n\r\n").unwrap().1.to_string())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir` whose content holds `needle`.
fn files_holding(dir: &Path, needle: &str, hits: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_holding(&p, needle, hits);
        } else if let Ok(bytes) = std::fs::read(&p) {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                hits.push(p.display().to_string());
            }
        }
    }
}

/// What an older Veil wrote: one passwordless user.
const OLD_USERS_XML: &str = r#"<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
"#;

async fn ping(cfg: &ClickHouseConfig) -> Result<(), veil_schemas::Error> {
    cfg.ping(Duration::from_secs(20)).await
}

#[test]
fn the_managed_server_refuses_clients_without_its_generated_password() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("clickhouse");
    // A directory as an older Veil left it: passwordless users.xml, readable by all.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("users.xml"), OLD_USERS_XML).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut opts = ManagedOptions::new(&dir);
    opts.parent_death_signal = libc::SIGKILL;
    let mut server = ManagedClickHouse::start(&opts).unwrap();
    let port = server.http_port();

    let file = dir.join("password");
    let password = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_eq!(password, server.password());
    assert_eq!(password.len(), 64, "32 random bytes, hex");
    assert!(password.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(mode(&file), 0o600, "the password file is the owner's only");
    assert_eq!(mode(&dir), 0o700, "the data files are the owner's only");
    let users = std::fs::read_to_string(dir.join("users.xml")).unwrap();
    assert!(!users.contains(&password), "users.xml holds the password");
    assert!(
        users.contains(&format!(
            "<password_sha256_hex>{}</password_sha256_hex>",
            password_sha256_hex(&password)
        )),
        "{users}"
    );

    // Raw HTTP: no credentials, `default` with an empty or a wrong password: 401.
    for auth in [
        None,
        Some(("default", "")),
        Some((
            "default",
            "0000000000000000000000000000000000000000000000000000000000000000",
        )),
    ] {
        let (status, body) = select_one(port, auth);
        assert_eq!(status, 401, "{auth:?} got in: {body}");
        assert!(
            body.contains("Password required for user default")
                || body.contains("Wrong password for user default"),
            "{auth:?}: {body}"
        );
    }
    let (status, body) = select_one(port, Some(("default", &password)));
    assert_eq!((status, body.as_str()), (200, "1\n"));

    // Veil's client: with the server's config it gets in; with the password alone (no user
    // named) too; without the password it does not.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(ping(&server.config("default"))).unwrap();
    let mut only_password = ClickHouseConfig::new(server.url(), "default");
    only_password.password = Some(password.clone());
    rt.block_on(ping(&only_password)).unwrap();
    let err = rt
        .block_on(ping(&ClickHouseConfig::new(server.url(), "default")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("Password required"), "{err}");

    // A restart keeps the password, and the server still wants it.
    server.stop();
    let server = ManagedClickHouse::start(&opts).unwrap();
    assert_eq!(server.password(), password);
    assert_eq!(select_one(server.http_port(), None).0, 401);
    assert_eq!(
        select_one(server.http_port(), Some(("default", &password))).0,
        200
    );
    drop(server);

    // Nothing but the password file holds it: no log, no config.
    let mut hits = Vec::new();
    files_holding(tmp.path(), &password, &mut hits);
    assert_eq!(hits, vec![file.display().to_string()]);
}
