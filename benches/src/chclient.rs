//! The `/v1/events` denominator: Debian's `clickhouse-client` (native TCP protocol) inserting
//! rows read from a file on its standard input, timed.
//!
//! `veil-load --clickhouse-client` exports the rows the collectors stored (`SELECT * FROM events
//! … FORMAT RowBinary`, so the same columns, values and row count), then times `INSERT INTO …
//! FORMAT RowBinary` of that file into a copy of the table — one `clickhouse-client` process,
//! one INSERT, the client splitting it into blocks as it does by default. That is the rate
//! ClickHouse itself takes the same rows at on this machine, with nothing of Veil in the way.
//!
//! The client gets the user and password from a configuration file (mode 0600, in a temp
//! directory) passed as `--config-file`, never on its command line, where `ps` would show it.
//! With `--time` it prints the query's own duration (from sending it to the server's end of
//! stream, without the client's start-up) on its standard error as the last line, which
//! [`parse_time`] reads.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tempfile::TempDir;
use veil_schemas::sql::Sql;

/// How to reach a server with `clickhouse-client`.
pub struct Client {
    bin: PathBuf,
    port: u16,
    /// Holds `client.xml` (user and password) when there is a login.
    dir: TempDir,
    has_config: bool,
}

/// One timed run of the client.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    /// From starting the process to its exit.
    pub wall: Duration,
    /// What `--time` printed: the query alone.
    pub query: Option<Duration>,
}

impl Timed {
    /// The query's own time when the client printed it, else the process's.
    pub fn best(&self) -> Duration {
        self.query.unwrap_or(self.wall)
    }
}

impl Client {
    /// A client for the server on `127.0.0.1:port`, logging in as `user` with `password` when
    /// given.
    pub fn new(
        bin: &Path,
        port: u16,
        user: Option<&str>,
        password: Option<&str>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("veil-load-chclient-")
            .tempdir()
            .context("creating a temp dir for clickhouse-client")?;
        let has_config = user.is_some() || password.is_some();
        if has_config {
            let path = dir.path().join("client.xml");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.write_all(client_config_xml(user, password).as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(Self {
            bin: bin.to_path_buf(),
            port,
            dir,
            has_config,
        })
    }

    /// A scratch directory that lives as long as the client (for the exported rows).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `query` in `database`, its standard input from `input`, its standard output to
    /// `output` (else discarded); fails when the client exits with an error.
    pub fn run(
        &self,
        database: &str,
        query: &Sql,
        input: Option<&Path>,
        output: Option<&Path>,
    ) -> anyhow::Result<Timed> {
        let mut cmd = Command::new(&self.bin);
        if self.has_config {
            cmd.arg("--config-file")
                .arg(self.dir.path().join("client.xml"));
        }
        cmd.args(["--host", "127.0.0.1"])
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--database")
            .arg(database)
            .arg("--time")
            .arg("--query")
            .arg(query.as_str());
        cmd.stdin(match input {
            Some(p) => Stdio::from(
                std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?,
            ),
            None => Stdio::null(),
        });
        cmd.stdout(match output {
            Some(p) => Stdio::from(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            ),
            None => Stdio::null(),
        });
        cmd.stderr(Stdio::piped());
        let started = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        let wall = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}",
                self.bin.display(),
                out.status,
                stderr.trim()
            );
        }
        Ok(Timed {
            wall,
            query: parse_time(&stderr),
        })
    }
}

/// A `clickhouse-client` configuration file holding the login (XML-escaped).
pub fn client_config_xml(user: Option<&str>, password: Option<&str>) -> String {
    let mut xml = String::from("<config>\n");
    if let Some(u) = user {
        xml.push_str(&format!("  <user>{}</user>\n", xml_escape(u)));
    }
    if let Some(p) = password {
        xml.push_str(&format!("  <password>{}</password>\n", xml_escape(p)));
    }
    xml.push_str("</config>\n");
    xml
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The query time `clickhouse-client --time` printed: the last line of its standard error that
/// is a number of seconds.
pub fn parse_time(stderr: &str) -> Option<Duration> {
    stderr
        .lines()
        .rev()
        .find_map(|l| l.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// The native protocol port (`<tcp_port>`) of a ClickHouse `config.xml`.
pub fn tcp_port_from_config(xml: &str) -> Option<u16> {
    let start = xml.find("<tcp_port>")? + "<tcp_port>".len();
    let end = start + xml[start..].find("</tcp_port>")?;
    xml[start..end].trim().parse().ok()
}

/// The median of some durations (the lower middle one for an even count); zero when empty.
pub fn median(mut d: Vec<Duration>) -> Duration {
    d.sort_unstable();
    match d.len() {
        0 => Duration::ZERO,
        n => d[(n - 1) / 2],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_query_time_from_the_last_number_line() {
        assert_eq!(parse_time("0.532\n"), Some(Duration::from_millis(532)));
        assert_eq!(
            parse_time("some warning\n1.250\n"),
            Some(Duration::from_millis(1250))
        );
        assert_eq!(parse_time("Code: 62. DB::Exception: Syntax error\n"), None);
        assert_eq!(parse_time(""), None);
        assert_eq!(parse_time("-1\n"), None);
    }

    #[test]
    fn finds_the_native_port_in_a_server_config() {
        let xml =
            "<yandex>\n  <http_port>41000</http_port>\n  <tcp_port>41001</tcp_port>\n</yandex>";
        assert_eq!(tcp_port_from_config(xml), Some(41001));
        assert_eq!(tcp_port_from_config("<yandex></yandex>"), None);
        assert_eq!(tcp_port_from_config("<tcp_port>x</tcp_port>"), None);
    }

    #[test]
    fn the_login_file_escapes_what_xml_would_misread() {
        let xml = client_config_xml(Some("default"), Some("a<b&c"));
        assert!(xml.contains("<user>default</user>"));
        assert!(xml.contains("<password>a&lt;b&amp;c</password>"));
        assert_eq!(client_config_xml(None, None), "<config>\n</config>\n");
    }

    #[test]
    fn median_of_runs() {
        let ms = Duration::from_millis;
        assert_eq!(median(vec![ms(3), ms(1), ms(2)]), ms(2));
        assert_eq!(median(vec![ms(4), ms(1), ms(2), ms(3)]), ms(2));
        assert_eq!(median(vec![]), Duration::ZERO);
    }
}
