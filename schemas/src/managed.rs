//! A ClickHouse server run by Veil as a child process: `veil up` and the test harness use it.
//!
//! [`ManagedClickHouse::start`] finds `clickhouse-server` on PATH, writes a private config under
//! its data dir (loopback only, free ports, its own data/log/tmp paths, no system paths
//! touched), starts the server, and waits until `GET /ping` answers `Ok.`.
//! [`ManagedClickHouse::stop`] (also run on drop) sends SIGTERM and waits, then SIGKILL.
//!
//! The child is started with `PR_SET_PDEATHSIG` so it dies with Veil even when Veil is killed.
//! Linux ties that signal to the *thread* that spawned the child: start it from a thread that
//! lives as long as the server should (the main thread, or a dedicated keeper thread).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

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
}

impl ManagedOptions {
    /// Defaults for a data dir: SIGTERM on parent death, 60 s start timeout.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
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
#[derive(Debug)]
pub struct ManagedClickHouse {
    child: Option<Child>,
    http_port: u16,
    dir: PathBuf,
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

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
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

const USERS_XML: &str = r#"<?xml version="1.0"?>
<!-- Generated by Veil: one passwordless user reachable from loopback only. -->
<yandex>
  <profiles>
    <default>
      <max_memory_usage>4000000000</max_memory_usage>
      <log_queries>0</log_queries>
    </default>
  </profiles>
  <users>
    <default>
      <password></password>
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
"#;

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
            write(&dir.join("users.xml"), USERS_XML)?;
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
