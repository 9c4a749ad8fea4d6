//! A ClickHouse server run by Veil as a child process: `veil up` and the test harness use it.
//!
//! [`ManagedClickHouse::start`] finds `clickhouse-server` on PATH, writes a private config under
//! its data dir (loopback only, free ports, its own data/log/tmp paths, no system paths
//! touched), starts the server, and waits until `GET /ping` answers `Ok.`.
//! [`ManagedClickHouse::stop`] (also run on drop) sends SIGTERM and waits, then SIGKILL.
//!
//! Access: the server's only user, `default`, needs a password. On first start Veil generates
//! one (32 random bytes, hex) into [`ManagedOptions::password_file`] (`DIR/password` unless
//! set), created with mode 0600 before a byte is written, and reuses it on every later start;
//! `users.xml` holds only its SHA-256 (`<password_sha256_hex>`), so a data dir made by an
//! older, passwordless Veil gets the password at its next start. The directory itself is made
//! 0700 (raw events and salts are in its data files). Clients send the password over HTTP as
//! the `X-ClickHouse-User`/`X-ClickHouse-Key` headers ([`ManagedClickHouse::config`] gives a
//! [`ClickHouseConfig`] that does); a request without it gets ClickHouse's 401 (`Code: 194,
//! Password required for user default`). Nothing logs the password.
//!
//! The child is started with `PR_SET_PDEATHSIG` so it dies with Veil even when Veil is killed.
//! Linux ties that signal to the *thread* that spawned the child: start it from a thread that
//! lives as long as the server should (the main thread, or a dedicated keeper thread).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest as _;

use crate::{ClickHouseConfig, Error};

/// The managed server's one user.
pub const USER: &str = "default";

/// How to start the managed server.
#[derive(Debug, Clone)]
pub struct ManagedOptions {
    /// Directory for config, data and logs (created if missing).
    pub dir: PathBuf,
    /// Signal the child gets when the spawning thread dies (SIGTERM for `veil up`, SIGKILL for tests).
    pub parent_death_signal: i32,
    /// How long to wait for `/ping`.
    pub start_timeout: Duration,
    /// Use this HTTP port instead of a free one (restarting a server where clients expect it).
    pub http_port: Option<u16>,
    /// Use this native TCP port instead of a free one (cluster nodes name each other's).
    pub tcp_port: Option<u16>,
    /// Use this interserver (replication) HTTP port instead of a free one.
    pub interserver_port: Option<u16>,
    /// Extra files written before start, as (path relative to the directory, text), e.g.
    /// `config.d/cluster.xml` (ZooKeeper, macros, remote_servers for [`crate::local_cluster`]).
    pub extra_files: Vec<(String, String)>,
    /// Run the server in its own process group, so a Ctrl-C at the terminal reaches only Veil,
    /// which then stops its clients before the server (`veil cluster`).
    pub own_process_group: bool,
    /// The file holding the password of the `default` user: read when it exists, else
    /// generated (mode 0600). `DIR/password` by default; the nodes of a
    /// [`crate::local_cluster`] share one.
    pub password_file: PathBuf,
}

impl ManagedOptions {
    /// Defaults for a data dir: SIGTERM on parent death, 60 s start timeout.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            password_file: dir.join("password"),
            dir,
            parent_death_signal: libc::SIGTERM,
            start_timeout: Duration::from_secs(60),
            http_port: None,
            tcp_port: None,
            interserver_port: None,
            extra_files: Vec::new(),
            own_process_group: false,
        }
    }
}

/// A running ClickHouse child process.
pub struct ManagedClickHouse {
    child: Option<Child>,
    http_port: u16,
    dir: PathBuf,
    password: String,
}

impl std::fmt::Debug for ManagedClickHouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedClickHouse")
            .field("pid", &self.pid())
            .field("http_port", &self.http_port)
            .field("dir", &self.dir)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Finds the server binary: `clickhouse-server`, else the all-in-one `clickhouse` (run as `clickhouse server`).
fn find_binary() -> Option<(PathBuf, Vec<&'static str>)> {
    let path = std::env::var_os("PATH")?;
    for dir in
        std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
    {
        let p = dir.join("clickhouse-server");
        if p.is_file() {
            return Some((p, vec![]));
        }
    }
    for dir in std::env::split_paths(&path) {
        let p = dir.join("clickhouse");
        if p.is_file() {
            return Some((p, vec!["server"]));
        }
    }
    None
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Chosen below the kernel's ephemeral range (`ip_local_port_range`), so that an outgoing
/// connection (a server's ZooKeeper session, a replica fetching parts) cannot be given the
/// port between the moment it is chosen and the moment a server binds it: a cluster names
/// every node's ports up front, and a node that finds one taken exits after it has already
/// answered a ping. Falls back to any free port when that range is too small.
pub fn free_port() -> Result<u16, Error> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOW: u16 = 10_000;
    if ephemeral_low > LOW + 1000 {
        let span = u32::from(ephemeral_low - LOW);
        for _ in 0..200 {
            let mut r = [0u8; 4];
            if getrandom::fill(&mut r).is_err() {
                break;
            }
            let offset = u32::from_le_bytes(r) % span;
            let Ok(port) = u16::try_from(u32::from(LOW) + offset) else {
                continue;
            };
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("finding a free port", e))?;
    let port = l
        .local_addr()
        .map_err(|e| Error::io("finding a free port", e))?
        .port();
    Ok(port)
}

/// Writes a generated file readable by its owner only (mode 0600 from the moment it exists;
/// an older file's mode is tightened too): config files can name ports, paths and, on a
/// cluster node, the password its Distributed tables use.
pub(crate) fn write(path: &Path, text: &str) -> Result<(), Error> {
    let err = |e| Error::io(format!("writing {}", path.display()), e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)
}

/// The password in `path`, generated there first when the file does not exist.
///
/// A new password is 32 random bytes, hex-encoded (64 characters), written to a temporary file
/// created with mode 0600 (never readable by anyone else, not even for a moment), then linked
/// to `path`, which never holds a partial password and is never overwritten: a process that
/// loses a race to create it reads the winner's. An existing file is tightened to 0600 when
/// its mode allows more. A file whose content is not a password (fewer than 32 printable
/// characters, or one that XML would need escaped) is an error naming it.
pub fn load_or_create_password(path: &Path) -> Result<String, Error> {
    let ctx = |what: &str| format!("{what} {}", path.display());
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path)
                .map_err(|e| Error::io(ctx("reading"), e))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                tracing::warn!(file = %path.display(), mode = format!("{:o}", mode & 0o777), "the ClickHouse password file was readable by others; setting it to 0600");
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| Error::io(ctx("restricting"), e))?;
            }
            let pw = text.trim();
            if pw.len() < 32
                || !pw
                    .chars()
                    .all(|c| c.is_ascii_graphic() && !"<>&'\"".contains(c))
            {
                return Err(Error::Config(format!(
                    "{} does not hold a ClickHouse password (at least 32 printable ASCII \
                     characters, none of < > & ' \" or spaces); delete it and Veil makes a new \
                     one at the next start",
                    path.display()
                )));
            }
            Ok(pw.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pw = crate::registry::random_hex(32)?;
            let tmp = path.with_file_name(format!(
                ".{}.{}.tmp",
                path.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default(),
                std::process::id()
            ));
            let _ = std::fs::remove_file(&tmp);
            let written = (|| {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(pw.as_bytes())?;
                f.write_all(b"\n")?;
                f.sync_all()?;
                std::fs::hard_link(&tmp, path)
            })();
            let _ = std::fs::remove_file(&tmp);
            match written {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "generated the managed ClickHouse's password");
                    Ok(pw)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    load_or_create_password(path)
                }
                Err(e) => Err(Error::io(ctx("creating"), e)),
            }
        }
        Err(e) => Err(Error::io(ctx("reading"), e)),
    }
}

/// SHA-256 of `password`, lowercase hex (what `<password_sha256_hex>` holds).
pub fn password_sha256_hex(password: &str) -> String {
    sha2::Sha256::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn config_xml(dir: &Path, http: u16, tcp: u16, inter: u16) -> String {
    let d = dir.display();
    format!(
        r#"<?xml version="1.0"?>
<!-- Generated by Veil for a managed, loopback-only ClickHouse. Rewritten at every start. -->
<yandex>
  <logger>
    <level>warning</level>
    <log>{d}/log/clickhouse-server.log</log>
    <errorlog>{d}/log/clickhouse-server.err.log</errorlog>
    <size>50M</size>
    <count>3</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <interserver_http_port>{inter}</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>200</max_concurrent_queries>
</yandex>
"#
    )
}

/// `users.xml`: one user, `default`, reachable from loopback only, with the password whose
/// SHA-256 is `password_sha256`.
fn users_xml(password_sha256: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<!-- Generated by Veil: one user, loopback only, password in Veil's password file (only its
     SHA-256 here). Rewritten at every start. -->
<yandex>
  <profiles>
    <default>
      <max_memory_usage>4000000000</max_memory_usage>
      <log_queries>0</log_queries>
    </default>
  </profiles>
  <users>
    <default>
      <password_sha256_hex>{password_sha256}</password_sha256_hex>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas>
    <default>
      <interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval>
    </default>
  </quotas>
</yandex>
"#
    )
}

/// Where the running server's pid is kept, inside its directory.
const PID_FILE: &str = "server.pid";

/// A server from an earlier run on this directory may still be shutting down (Veil was killed
/// and its child got SIGTERM): wait for it, up to 30 s, then stop it, so the new one can take
/// the directory's lock.
fn wait_for_previous(dir: &Path) {
    let Ok(pid) = std::fs::read_to_string(dir.join(PID_FILE)) else {
        return;
    };
    let Ok(pid) = pid.trim().parse::<u32>() else {
        return;
    };
    let alive = || {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&dir.display().to_string()))
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive() {
        tracing::warn!(
            pid,
            "a previous ClickHouse on this directory is still running; stopping it"
        );
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if alive() {
            signal(pid, libc::SIGKILL);
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Blocking `GET /ping`; true when the server answers `Ok.`.
pub fn ping_blocking(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.") && buf.contains(" 200 ") && buf.ends_with("Ok.\n")
}

impl ManagedClickHouse {
    /// Writes the config and starts the server; returns once it answers `/ping`.
    pub fn start(opts: &ManagedOptions) -> Result<Self, Error> {
        let (bin, args) = find_binary().ok_or(Error::ServerNotFound)?;
        let dir = opts.dir.clone();
        for sub in ["data", "log", "tmp", "user_files", "format_schemas"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p)
                .map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
        }
        let dir = dir
            .canonicalize()
            .map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?;
        // Raw events and the live salts are in the data files: the owner's only.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("restricting {}", dir.display()), e))?;
        let password = load_or_create_password(&opts.password_file)?;
        let users = users_xml(&password_sha256_hex(&password));
        wait_for_previous(&dir);
        // Ports are picked free just before start; if another process takes one in between the
        // server exits at once and we try again with new ports.
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let http = match opts.http_port {
                Some(p) => p,
                None => free_port()?,
            };
            let tcp = match opts.tcp_port {
                Some(p) => p,
                None => free_port()?,
            };
            let inter = match opts.interserver_port {
                Some(p) => p,
                None => free_port()?,
            };
            if http == tcp || tcp == inter || http == inter {
                continue;
            }
            write(&dir.join("config.xml"), &config_xml(&dir, http, tcp, inter))?;
            write(&dir.join("users.xml"), &users)?;
            for (rel, text) in &opts.extra_files {
                let p = dir.join(rel);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
                }
                write(&p, text)?;
            }
            let out_path = dir.join("log/stdout.log");
            let out = std::fs::File::create(&out_path)
                .map_err(|e| Error::io(format!("creating {}", out_path.display()), e))?;
            let err = out
                .try_clone()
                .map_err(|e| Error::io("cloning log handle", e))?;
            let mut cmd = Command::new(&bin);
            cmd.args(&args)
                .arg(format!(
                    "--config-file={}",
                    dir.join("config.xml").display()
                ))
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            set_parent_death_signal(&mut cmd, opts.parent_death_signal);
            if opts.own_process_group {
                use std::os::unix::process::CommandExt;
                cmd.process_group(0);
            }
            let child = cmd
                .spawn()
                .map_err(|e| Error::io(format!("starting {}", bin.display()), e))?;
            let _ = std::fs::write(dir.join(PID_FILE), child.id().to_string());
            let mut me = ManagedClickHouse {
                child: Some(child),
                http_port: http,
                dir: dir.clone(),
                password: password.clone(),
            };
            let deadline = Instant::now() + opts.start_timeout;
            loop {
                if ping_blocking(http) {
                    tracing::info!(url = %me.url(), dir = %dir.display(), "managed ClickHouse is up");
                    return Ok(me);
                }
                if let Some(c) = me.child.as_mut() {
                    if let Ok(Some(status)) = c.try_wait() {
                        last_err =
                            format!("{} exited with {status}: {}", bin.display(), me.log_tail());
                        me.child = None;
                        break;
                    }
                }
                if Instant::now() > deadline {
                    last_err = format!(
                        "no answer on port {http} within {:?}: {}",
                        opts.start_timeout,
                        me.log_tail()
                    );
                    me.stop();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Err(Error::Start(last_err))
    }

    /// The HTTP URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The password of its `default` user (the content of the password file). Never log it.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A config for `database` on this server, with its user and password.
    pub fn config(&self, database: impl Into<String>) -> ClickHouseConfig {
        let mut c = ClickHouseConfig::new(self.url(), database);
        c.user = Some(USER.into());
        c.password = Some(self.password.clone());
        c
    }

    /// The HTTP port.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The directory holding config, data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The child's process id, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        for f in ["log/clickhouse-server.err.log", "log/stdout.log"] {
            if let Ok(t) = std::fs::read_to_string(self.dir.join(f)) {
                // The last errors first (a stack trace's frames alone do not say what failed).
                let errors: Vec<&str> = t
                    .lines()
                    .filter(|l| l.contains("<Error>") || l.contains("Exception"))
                    .collect();
                for l in errors.iter().rev().take(3).rev() {
                    text.push_str(l);
                    text.push('\n');
                }
                let lines: Vec<&str> = t.lines().rev().take(5).collect();
                for l in lines.into_iter().rev() {
                    text.push_str(l);
                    text.push('\n');
                }
            }
        }
        if text.is_empty() {
            "(no log output)".into()
        } else {
            text
        }
    }

    /// SIGKILL at once (a crash, for outage tests).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(self.dir.join(PID_FILE));
        }
    }

    /// SIGTERM, wait up to 20 s, then SIGKILL. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = std::fs::remove_file(self.dir.join(PID_FILE));
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                tracing::info!("managed ClickHouse stopped");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!("managed ClickHouse did not stop within 20 s; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ManagedClickHouse {
    fn drop(&mut self) {
        self.stop();
    }
}

#[allow(unsafe_code)]
pub(crate) fn signal(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

#[allow(unsafe_code)]
pub(crate) fn set_parent_death_signal(cmd: &mut Command, sig: i32) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_standard_vector() {
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            password_sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_password_is_made_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        let a = load_or_create_password(&path).unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create_password(&path).unwrap(), a);
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("password")]);
        // Another directory, another password.
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            load_or_create_password(&other.path().join("password")).unwrap(),
            a
        );
    }

    #[test]
    fn a_readable_password_file_is_tightened_and_a_bad_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, format!("{}\n", "a1".repeat(20))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_create_password(&path).unwrap(), "a1".repeat(20));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        for bad in ["", "short", &format!("{}<x>", "a".repeat(40))] {
            std::fs::write(&path, bad).unwrap();
            let e = load_or_create_password(&path).unwrap_err().to_string();
            assert!(
                e.contains(&path.display().to_string()) && e.contains("delete it"),
                "{e}"
            );
        }
    }

    #[test]
    fn users_xml_holds_the_hash_only() {
        let x = users_xml(&password_sha256_hex("s3cret"));
        assert!(x.contains(&format!(
            "<password_sha256_hex>{}</password_sha256_hex>",
            password_sha256_hex("s3cret")
        )));
        assert!(!x.contains("s3cret") && !x.contains("<password>"));
    }
}
