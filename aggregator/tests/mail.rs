//! E-mail against a real SMTP server (aiosmtpd, started by the test: testing/smtp/server.py,
//! installed by `scripts/install-deps.sh --test` into var/smtp-venv) and a real ClickHouse:
//! an invitation arrives with its link and the link works; a weekly digest arrives on Monday
//! 08:00 by the (manual) clock, multipart text + HTML, with the Stats API's own numbers (exact
//! mode), its chart of visitors per day inline (`multipart/related`: the HTML's `cid:` is the
//! `image/png` part, which decodes to the stated size and shows the accent-coloured line; the
//! alt text and the text part say the API's own series; the whole message under 16 KB; a week
//! without visitors has no image and says so) and an unsubscribe link that a GET only asks about and a POST follows, after which
//! no digest comes; a week is sent once, also by a second aggregator (a restart); every
//! e-mail's unsubscribe link works the moment the relay has the e-mail; a monthly
//! digest arrives on the 1st with the month's numbers and its 30-day chart; in dp mode the
//! digest's numbers and chart are the published (noisy) answers to the same questions, charged
//! to the digest's own budget; a traffic spike (current visitors at
//! the person's threshold) is e-mailed once, with Realtime's numbers, and its link
//! unsubscribes.
//!
//! TLS (aiosmtpd with Python's ssl, a CA and server certificate made by the test with rcgen,
//! a login the server requires): an invitation goes over smtps:// and a digest over STARTTLS
//! (`?tls=required`, the server refusing MAIL before STARTTLS), both trusting the CA through
//! `--smtp-ca-file`, authenticated with a password the URL percent-encodes; a relay whose
//! certificate is signed by an unknown CA (smtps with another CA file, STARTTLS with the system
//! roots only) or names another host, and one without STARTTLS when it is required, gets
//! nothing, not even the password, and the log line says why; the password is in no log line
//! (every test's, down to DEBUG) and no answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use http::{HeaderMap, Request};
use serde_json::{json, Value};
use veil_aggregator::account::csrf_token;
use veil_aggregator::digest::{self, show, show_change, Period};
use veil_aggregator::{Aggregator, AggregatorConfig, ManualClock};
use veil_schemas::ClickHouseConfig;

const PUBLIC: &str = "http://127.0.0.1:8000";
const OWNER: &str = "owner@example.com";
const OWNER_PW: &str = "correct horse battery";

/// aiosmtpd on a free loopback port, writing each message to a directory as JSON.
struct Smtpd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    /// `--smtp-url` for it.
    url: String,
    /// `--smtp-ca-file` for it (a TLS server whose CA the aggregator is told of).
    ca_file: Option<PathBuf>,
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("VEIL_TEST_SMTPD_PYTHON") {
        return p.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = root.join("var/smtp-venv/bin/python");
    assert!(
        p.exists(),
        "no {} : run scripts/install-deps.sh --test (aiosmtpd for the e-mail tests)",
        p.display()
    );
    p
}

/// A CA made for one test, and a server certificate it signed for 127.0.0.1 and localhost
/// (rcgen; ECDSA P-256), as PEM files in a directory of their own.
struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    fn new(name: &str) -> Self {
        Self::for_names(name, &["127.0.0.1", "localhost"])
    }

    /// The same with a server certificate for `names` (IP addresses or DNS names).
    fn for_names(name: &str, names: &[&str]) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = p.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "relay of the test");
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        Self { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// The relay's login in the TLS tests: a password with characters a URL must encode.
const SMTP_USER: &str = "veil";
const SMTP_PASSWORD: &str = "p@ss/w0rd-9f2c7e41";
const SMTP_PASSWORD_IN_URL: &str = "p%40ss%2Fw0rd-9f2c7e41";

/// How a TLS test server speaks.
#[derive(Clone, Copy)]
enum Tls {
    /// smtps: TLS from the first byte.
    Implicit,
    /// STARTTLS, required before MAIL.
    Starttls,
}

impl Smtpd {
    fn start() -> Self {
        let mut s = Self::launch(&[]);
        s.url = format!("smtp://127.0.0.1:{}", s.port);
        s
    }

    /// A TLS server presenting `ca`'s server certificate and taking only SMTP_USER with
    /// SMTP_PASSWORD; the aggregator is given `trust` as --smtp-ca-file.
    fn start_tls(tls: Tls, ca: &TestCa, trust: Option<&TestCa>) -> Self {
        let d = ca.dir.path();
        let mode = match tls {
            Tls::Implicit => "implicit",
            Tls::Starttls => "starttls",
        };
        let mut s = Self::launch(&[
            "--tls".into(),
            mode.into(),
            "--cert".into(),
            d.join("server.pem").display().to_string(),
            "--key".into(),
            d.join("server.key").display().to_string(),
            "--login".into(),
            format!("{SMTP_USER}:{SMTP_PASSWORD}"),
        ]);
        s.url = match tls {
            Tls::Implicit => format!(
                "smtps://{SMTP_USER}:{SMTP_PASSWORD_IN_URL}@127.0.0.1:{}",
                s.port
            ),
            Tls::Starttls => format!(
                "smtp://{SMTP_USER}:{SMTP_PASSWORD_IN_URL}@127.0.0.1:{}?tls=required",
                s.port
            ),
        };
        s.ca_file = trust.map(TestCa::ca);
        s
    }

    fn launch(extra: &[String]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testing/smtp/server.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(port.to_string())
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting aiosmtpd");
        // "ready" once it answers (Controller.start connects to it before returning).
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "aiosmtpd did not start");
        Self {
            child,
            port,
            dir,
            url: String::new(),
            ca_file: None,
        }
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    /// The server's AUTH attempts ("USER ok" / "USER refused" lines).
    fn auth_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("auth.log")).unwrap_or_default()
    }

    /// The messages delivered so far, in order.
    fn messages(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// Waits (up to 30 s) until `n` messages were delivered; returns them.
    async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} e-mails arrived",
                m.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A message's decoded part of type `ty`, with CRLF as LF.
fn part(m: &Value, ty: &str) -> String {
    m["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == ty)
        .unwrap_or_else(|| panic!("no {ty} part in {m}"))["body"]
        .as_str()
        .unwrap()
        .replace("\r\n", "\n")
}

/// Checks a delivered digest's chart against the API's own visitors-per-day answer
/// `series` and `before` (the digest's fourth and fifth questions): `multipart/related` with an inline `image/png`
/// whose Content-ID is the HTML's `cid:`, with the size and alt text the HTML states; the PNG
/// (decoded with tiny-skia) is that size and shows a line in the accent colour; the text part
/// lists the same numbers. Returns the message's size in bytes.
fn assert_chart(smtp: &Smtpd, mail: &Value, series: &Value, before: &Value, period: Period) -> u64 {
    use veil_aggregator::chart;
    assert_eq!(
        mail["structure"],
        json!([
            "multipart/alternative",
            "text/plain",
            "multipart/related",
            "text/html",
            "image/png"
        ]),
        "{mail}"
    );
    let img = mail["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "image/png")
        .unwrap();
    assert_eq!(img["disposition"], "inline", "{img}");
    let cid = img["content_id"].as_str().unwrap();
    let cid = cid
        .strip_prefix('<')
        .and_then(|c| c.strip_suffix('>'))
        .unwrap();
    let days = digest::days_of(series, before);
    let html = part(mail, "text/html");
    let tag = format!(
        "<img src=\"cid:{cid}\" width=\"{}\" height=\"{}\" alt=\"{}\"",
        chart::WIDTH,
        chart::HEIGHT,
        digest::chart_alt(&days, period)
    );
    assert!(html.contains(&tag), "{tag:?} not in {html}");
    let png = std::fs::read(smtp.dir.path().join(img["file"].as_str().unwrap())).unwrap();
    let p = tiny_skia::Pixmap::decode_png(&png).unwrap();
    assert_eq!(
        (p.width(), p.height()),
        (chart::WIDTH * chart::SCALE, chart::HEIGHT * chart::SCALE)
    );
    let px: Vec<_> = p.pixels().iter().map(|c| c.demultiply()).collect();
    let accent = px
        .iter()
        .filter(|c| [c.red(), c.green(), c.blue()] == chart::ACCENT)
        .count();
    let white = px
        .iter()
        .filter(|c| (c.red(), c.green(), c.blue()) == (255, 255, 255))
        .count();
    // A line across the width, 5 px thick: thousands of accent pixels; mostly background.
    assert!(accent > 2 * p.width() as usize, "{accent} accent pixels");
    assert!(white > px.len() / 2, "{white} white of {}", px.len());
    let values: Vec<String> = days.iter().map(|d| show(&d.visitors)).collect();
    let before: Vec<String> = days.iter().map(|d| show(&d.previous)).collect();
    let line = format!(
        "Visitors per day: {}\nThe {} before: {}\n",
        values.join(", "),
        period.name(),
        before.join(", ")
    );
    assert!(part(mail, "text/plain").contains(&line), "{line:?}");
    std::fs::metadata(smtp.dir.path().join(mail["eml"].as_str().unwrap()))
        .unwrap()
        .len()
}

fn config(smtp: &Smtpd) -> AggregatorConfig {
    AggregatorConfig {
        accounts: true,
        sites: vec![common::SITE.into()],
        privacy: veil_aggregator::privacy::Settings::exact(),
        public_url: Some(PUBLIC.into()),
        smtp_url: Some(smtp.url()),
        smtp_ca_file: smtp.ca_file.clone(),
        smtp_from: Some("Veil <veil@example.com>".into()),
        ..Default::default()
    }
}

async fn agg(
    label: &str,
    smtp: &Smtpd,
    start: DateTime<Utc>,
) -> (Aggregator, ClickHouseConfig, Arc<ManualClock>) {
    let ch = veil_schemas::testing::fresh_database(label).await;
    let clock = ManualClock::new(start);
    let cfg = config(smtp);
    cfg.validate().unwrap();
    let a = Aggregator::new(cfg, ch.clone()).with_clock(clock.clone());
    a.registry().refresh().await.unwrap();
    (a, ch, clock)
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
    text: String,
}

/// A browser: its session cookie and CSRF token once logged in.
#[derive(Default)]
struct Browser {
    cookie: Option<String>,
    csrf: Option<String>,
}

impl Browser {
    async fn call(&self, a: &Aggregator, method: &str, path: &str, body: Option<Value>) -> Answer {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(c) = &self.cookie {
            b = b.header("cookie", format!("veil_session={c}"));
        }
        if method != "GET" {
            b = b.header("origin", PUBLIC);
            if let Some(t) = &self.csrf {
                b = b.header("x-veil-csrf", t);
            }
        }
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let req = b
            .body(Bytes::from(body.map(|v| v.to_string()).unwrap_or_default()))
            .unwrap();
        let r = a.handle(req).await.expect("an aggregator path");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    fn keep(&mut self, r: &Answer) {
        assert_eq!(r.status, 200, "{}", r.text);
        let set = r.headers["set-cookie"].to_str().unwrap();
        let token = set
            .strip_prefix("veil_session=")
            .and_then(|s| s.split(';').next())
            .unwrap();
        assert_eq!(r.body["csrf"], csrf_token(token));
        self.cookie = Some(token.to_string());
        self.csrf = r.body["csrf"].as_str().map(str::to_string);
    }
}

fn token_of(url: &str) -> String {
    url.split_once("token=").unwrap().1.to_string()
}

async fn set_up_owner(a: &Aggregator) -> Browser {
    let link = a.setup_link().await.unwrap().expect("a setup link");
    let mut b = Browser::default();
    let r = b
        .call(
            a,
            "POST",
            "/api/v1/auth/accept",
            Some(json!({"token": token_of(&link), "email": OWNER, "password": OWNER_PW})),
        )
        .await;
    b.keep(&r);
    b
}

#[tokio::test]
async fn an_invitation_is_emailed_and_its_link_works() {
    let smtp = Smtpd::start();
    let (a, _ch, _) = agg("mail_invite", &smtp, Utc::now()).await;
    let owner = set_up_owner(&a).await;
    let r = owner
        .call(
            &a,
            "POST",
            &format!("/api/v1/sites/{}/people", common::SITE),
            Some(json!({"email": "ann@example.com", "role": "viewer"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["emailed"], true);
    let shown = r.body["url"].as_str().unwrap().to_string();

    let mail = smtp.wait_for(1).await.remove(0);
    assert_eq!(mail["rcpt_tos"], json!(["ann@example.com"]));
    assert_eq!(mail["mail_from"], "veil@example.com");
    assert_eq!(mail["content_type"], "multipart/alternative");
    assert!(mail["headers"]["Subject"]
        .as_str()
        .unwrap()
        .contains(common::SITE));
    let link = format!("{PUBLIC}{shown}");
    let text = part(&mail, "text/plain");
    assert!(text.contains(&link), "{text}");
    assert!(text.contains(OWNER) && text.contains("viewer"), "{text}");
    assert!(part(&mail, "text/html").contains(&format!("href=\"{link}\"")));

    // The e-mailed link is the way in.
    let mut ann = Browser::default();
    let r = ann
        .call(
            &a,
            "POST",
            "/api/v1/auth/accept",
            Some(json!({"token": token_of(&link), "password": "ann's long password"})),
        )
        .await;
    ann.keep(&r);
    let me = ann.call(&a, "GET", "/api/v1/me", None).await;
    assert_eq!(me.body["email"], "ann@example.com");
    assert_eq!(
        me.body["roles"],
        json!([{"site": common::SITE, "role": "viewer"}])
    );
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[tokio::test]
async fn a_weekly_digest_arrives_on_monday_with_the_apis_numbers_and_unsubscribes() {
    let smtp = Smtpd::start();
    // The seeded week (events on Thu 19 and Fri 20 Nov 2026) is Mon 16 – Sun 22 Nov; its
    // digest is due on Monday 23 Nov at 08:00 (the site's time zone is UTC).
    // The owner's session is made at the real time (ClickHouse drops sessions expired by its
    // own clock when the registry reloads), then the clock goes back to that Monday.
    let (a, ch, clock) = agg("mail_digest", &smtp, Utc::now()).await;
    common::seed(&ch).await;
    let owner = set_up_owner(&a).await;
    clock.set(at("2026-11-23T07:59:00Z"));
    let path = format!("/api/v1/sites/{}/digest", common::SITE);
    let r = owner.call(&a, "GET", &path, None).await;
    assert_eq!(
        (r.status, &r.body["subscribed"], &r.body["email_configured"]),
        (200, &json!(false), &json!(true)),
        "{}",
        r.text
    );
    let r = owner.call(&a, "PUT", &path, None).await;
    assert_eq!(r.body["subscribed"], true, "{}", r.text);

    // Before 08:00 nothing is due; the scheduler runs on its own from here.
    assert_eq!(digest::send_due(&a).await.unwrap(), 0);
    let scheduler = digest::spawn_scheduler(a.clone(), Duration::from_millis(100));
    clock.set(at("2026-11-23T08:00:01Z"));
    let mail = smtp.wait_for(1).await.remove(0);
    assert_eq!(mail["rcpt_tos"], json!([OWNER]));
    assert_eq!(mail["content_type"], "multipart/alternative");
    let types: Vec<&Value> = mail["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["type"])
        .collect();
    assert_eq!(
        types,
        [
            &json!("text/plain"),
            &json!("text/html"),
            &json!("image/png")
        ]
    );
    let text = part(&mail, "text/plain");
    let html = part(&mail, "text/html");
    assert!(text.contains("Week 2026-11-16 to 2026-11-22"), "{text}");

    // The numbers are the API's: ask it the digest's questions as the owner.
    let week = NaiveDate::from_ymd_opt(2026, 11, 16).unwrap();
    let [totals, pages, sources, series, before] =
        digest::questions(common::SITE, Period::Week, week);
    let ask = |q: Value| {
        let owner = &owner;
        let a = &a;
        async move {
            let r = owner.call(a, "POST", "/api/v2/query", Some(q)).await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.body
        }
    };
    let t = ask(totals).await;
    let m = &t["results"][0]["metrics"];
    assert_eq!(m[0], 23, "the seeded week's visitors: {t}");
    let c = &t["results"][0]["comparison"]["change"];
    assert!(c.is_array(), "{t}");
    for (i, label) in ["Visitors", "Pageviews", "Bounce rate"].iter().enumerate() {
        let unit = if i == 2 { " %" } else { "" };
        let line = format!(
            "{label}: {}{unit} ({})\n",
            show(&m[i]),
            show_change(&c[i], i == 2, Period::Week)
        );
        assert!(text.contains(&line), "{line:?} not in {text}");
    }
    for (q, title) in [(pages, "Top pages"), (sources, "Top sources")] {
        let rows = ask(q).await["results"].as_array().unwrap().clone();
        assert!(!rows.is_empty());
        let section = text.split(title).nth(1).unwrap();
        for r in rows.iter().take(digest::TOP) {
            let line = format!(
                "  {}: {} visitors",
                r["dimensions"][0].as_str().unwrap(),
                show(&r["metrics"][0])
            );
            assert!(section.contains(&line), "{line:?} not in {text}");
            assert!(html.contains(&format!(
                "<td>{}</td><td>{} visitors</td>",
                r["dimensions"][0].as_str().unwrap(),
                show(&r["metrics"][0])
            )));
        }
    }
    assert!(text.contains("/pricing: 6 visitors"), "{text}");
    assert!(text.contains("Google: 10 visitors"), "{text}");
    // The chart: the API's visitors per day (the seeded Thursday and Friday), inline.
    let s = ask(series).await;
    let b = ask(before).await;
    assert_eq!(
        b["meta"]["time_labels"][0], "2026-11-09",
        "the week before: {b}"
    );
    let days = digest::days_of(&s, &b);
    assert_eq!(days.len(), 7, "{s}");
    assert!(days[3].visitors.as_f64().unwrap() > 0.0, "{s}");
    let size = assert_chart(&smtp, &mail, &s, &b, Period::Week);
    eprintln!("the weekly digest with its chart: {size} bytes");
    assert!(size < 16_000, "{size} bytes");

    // Sent once: not again by this aggregator, nor by a new one (a restart).
    assert_eq!(digest::send_due(&a).await.unwrap(), 0);
    let restarted = Aggregator::new(config(&smtp), ch.clone()).with_clock(clock.clone());
    restarted.registry().refresh().await.unwrap();
    assert_eq!(digest::send_due(&restarted).await.unwrap(), 0);
    assert_eq!(smtp.messages().len(), 1);

    // The unsubscribe link: in the header (RFC 8058) and both parts.
    let header = mail["headers"]["List-Unsubscribe"].as_str().unwrap();
    let url = header.trim_matches(['<', '>']).to_string();
    assert!(
        url.starts_with(&format!("{PUBLIC}/unsubscribe?token=vu_")),
        "{url}"
    );
    assert_eq!(
        mail["headers"]["List-Unsubscribe-Post"],
        "List-Unsubscribe=One-Click"
    );
    assert!(text.contains(&url) && html.contains(&url));
    let link = url.strip_prefix(PUBLIC).unwrap();
    let stranger = Browser::default();
    // GET only asks (mail scanners fetch links): still subscribed.
    let page = stranger.call(&a, "GET", link, None).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("<form method=\"post\""), "{}", page.text);
    assert!(page.text.contains(common::SITE));
    assert_eq!(
        owner.call(&a, "GET", &path, None).await.body["subscribed"],
        true
    );
    // POST (the page's button, or a mail client's one-click) unsubscribes, without login.
    let done = stranger.call(&a, "POST", link, None).await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert!(done.text.contains("Unsubscribed"));
    assert_eq!(
        owner.call(&a, "GET", &path, None).await.body["subscribed"],
        false
    );
    assert_eq!(stranger.call(&a, "POST", link, None).await.status, 404);

    // The next Monday: no digest for the unsubscribed person.
    clock.set(at("2026-11-30T08:00:01Z"));
    assert_eq!(digest::send_due(&a).await.unwrap(), 0);
    scheduler.abort();
    assert_eq!(smtp.messages().len(), 1);

    // Subscribed again, the operator's trigger sends the week due now at once.
    owner.call(&a, "PUT", &path, None).await;
    let r = owner.call(&a, "POST", &format!("{path}/send"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["sent"], 1, "{}", r.text);
    assert_eq!(r.body["week"], json!(["2026-11-23", "2026-11-29"]));
    let second = smtp.wait_for(2).await.remove(1);
    assert!(part(&second, "text/plain").contains("Week 2026-11-23 to 2026-11-29"));
    // A week without visitors has no chart, and says so.
    assert_eq!(second["structure"][2], "text/html", "{second}");
    assert!(part(&second, "text/html").contains("no chart: no visitors"));
    assert!(part(&second, "text/plain").contains("Visitors per day: 0, 0, 0, 0, 0, 0, 0\n"));
}

#[tokio::test]
async fn in_dp_mode_a_digest_spends_a_budget_of_its_own_and_shows_the_published_numbers() {
    let smtp = Smtpd::start();
    let ch = veil_schemas::testing::fresh_database("mail_digest_dp").await;
    let clock = ManualClock::new(Utc::now());
    let cfg = AggregatorConfig {
        privacy: veil_aggregator::privacy::Settings::default(),
        ..config(&smtp)
    };
    assert_eq!(cfg.privacy.mode, veil_aggregator::privacy::Mode::Dp);
    let a = Aggregator::new(cfg, ch.clone()).with_clock(clock.clone());
    a.registry().refresh().await.unwrap();
    common::seed(&ch).await;
    let owner = set_up_owner(&a).await;
    clock.set(at("2026-11-23T09:00:00Z"));
    let path = format!("/api/v1/sites/{}/digest", common::SITE);
    assert_eq!(
        owner.call(&a, "PUT", &path, None).await.body["subscribed"],
        true
    );
    let r = owner.call(&a, "POST", &format!("{path}/send"), None).await;
    assert_eq!((r.status, &r.body["sent"]), (200, &json!(1)), "{}", r.text);
    let mail = smtp.wait_for(1).await.remove(0);
    let text = part(&mail, "text/plain");
    assert!(text.contains("differential-privacy noise"), "{text}");

    // The digest's questions were charged to digest:{user}, not to the person's own budget.
    let spent = |like: &'static str| {
        let ch = ch.clone();
        async move {
            common::count(
                &ch,
                veil_schemas::sql!(
                    "SELECT count() FROM privacy_spend WHERE credential LIKE {}",
                    veil_schemas::sql::lit(like)
                ),
            )
            .await
        }
    };
    // Five questions (the two daily series are the fourth and fifth), each charged once.
    assert!(spent("digest:% shop.example").await >= 5);
    assert_eq!(spent("user:%").await, 0);

    // The same question asked on the API publishes the same (noisy) visitors number.
    let week = NaiveDate::from_ymd_opt(2026, 11, 16).unwrap();
    let [totals, _, _, series, before] = digest::questions(common::SITE, Period::Week, week);
    // The chart and its text lines are the published (noisy) series, the same questions'.
    let s = owner.call(&a, "POST", "/api/v2/query", Some(series)).await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(s.body["meta"]["privacy"]["mode"], "dp", "{}", s.text);
    let b = owner.call(&a, "POST", "/api/v2/query", Some(before)).await;
    assert_eq!(b.status, 200, "{}", b.text);
    let days = digest::days_of(&s.body, &b.body);
    assert_eq!(days.len(), 7, "{}", s.text);
    if days
        .iter()
        .any(|d| d.visitors.as_f64().is_some_and(|v| v > 0.0))
    {
        assert_chart(&smtp, &mail, &s.body, &b.body, Period::Week);
    } else {
        // Noise took every day to zero (unlikely with the seeded days): no chart, said so.
        assert!(part(&mail, "text/html").contains("no chart: no visitors"));
    }
    let r = owner.call(&a, "POST", "/api/v2/query", Some(totals)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["meta"]["privacy"]["mode"], "dp", "{}", r.text);
    let visitors = show(&r.body["results"][0]["metrics"][0]);
    assert!(
        text.contains(&format!("Visitors: {visitors} (")),
        "{visitors} not in {text}"
    );
    assert!(spent("user:%").await >= 1);
}

#[tokio::test]
async fn a_monthly_digest_arrives_on_the_first_with_the_months_numbers() {
    let smtp = Smtpd::start();
    let (a, ch, clock) = agg("mail_monthly", &smtp, Utc::now()).await;
    common::seed(&ch).await;
    let owner = set_up_owner(&a).await;
    // November 2026 holds the seeded days; its digest is due on 1 December at 08:00 (UTC).
    clock.set(at("2026-12-01T07:59:00Z"));
    let path = format!("/api/v1/sites/{}/digest", common::SITE);
    let r = owner
        .call(&a, "PUT", &path, Some(json!({"monthly": true})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (&r.body["monthly"], &r.body["weekly"], &r.body["subscribed"]),
        (&json!(true), &json!(false), &json!(false)),
        "{}",
        r.text
    );
    assert_eq!(
        r.body["last_sent_month"], "2026-10-01",
        "October counts as sent"
    );
    assert_eq!(digest::send_due(&a).await.unwrap(), 0);

    clock.set(at("2026-12-01T08:00:01Z"));
    assert_eq!(digest::send_due(&a).await.unwrap(), 1);
    let mail = smtp.wait_for(1).await.remove(0);
    assert_eq!(mail["rcpt_tos"], json!([OWNER]));
    assert_eq!(
        mail["headers"]["Subject"],
        format!("{}: your month of November 2026", common::SITE)
    );
    let text = part(&mail, "text/plain");
    assert!(
        text.starts_with(&format!(
            "Veil monthly digest: {}\nMonth 2026-11-01 to 2026-11-30 (UTC)\n",
            common::SITE
        )),
        "{text}"
    );
    // The numbers are the API's answers to the month's questions.
    let month = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let [totals, pages, _, series, before] = digest::questions(common::SITE, Period::Month, month);
    let s = owner.call(&a, "POST", "/api/v2/query", Some(series)).await;
    assert_eq!(s.status, 200, "{}", s.text);
    let b = owner.call(&a, "POST", "/api/v2/query", Some(before)).await;
    let labels = b.body["meta"]["time_labels"].as_array().unwrap();
    assert_eq!(
        (labels.len(), &labels[0], &labels[29]),
        (30, &json!("2026-10-02"), &json!("2026-10-31")),
        "as many days before November: {}",
        b.text
    );
    assert_eq!(digest::days_of(&s.body, &b.body).len(), 30, "{}", s.text);
    let size = assert_chart(&smtp, &mail, &s.body, &b.body, Period::Month);
    eprintln!("the monthly digest with its chart: {size} bytes");
    assert!(size < 16_000, "{size} bytes");
    assert_eq!(totals["date_range"], json!(["2026-11-01", "2026-11-30"]));
    let t = owner.call(&a, "POST", "/api/v2/query", Some(totals)).await;
    assert_eq!(t.status, 200, "{}", t.text);
    let m = &t.body["results"][0]["metrics"];
    assert_eq!(m[0], 23, "November's visitors: {}", t.text);
    let c = &t.body["results"][0]["comparison"]["change"];
    let line = format!(
        "Visitors: {} ({})\n",
        show(&m[0]),
        show_change(&c[0], false, Period::Month)
    );
    assert!(text.contains(&line), "{line:?} not in {text}");
    let p = owner.call(&a, "POST", "/api/v2/query", Some(pages)).await;
    let top = &p.body["results"][0];
    assert!(
        text.contains(&format!(
            "  {}: {} visitors",
            top["dimensions"][0].as_str().unwrap(),
            show(&top["metrics"][0])
        )),
        "{text}"
    );

    // Once: not again this month; no weekly digest (not asked for).
    assert_eq!(digest::send_due(&a).await.unwrap(), 0);
    clock.set(at("2026-12-07T08:00:01Z"));
    assert_eq!(digest::send_due(&a).await.unwrap(), 0);
    assert_eq!(smtp.messages().len(), 1);

    // The operator's trigger, by period; an unknown period is a 400 saying what is allowed.
    let r = owner
        .call(&a, "POST", &format!("{path}/send?period=month"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (&r.body["period"], &r.body["month"], &r.body["sent"]),
        (
            &json!("month"),
            &json!(["2026-11-01", "2026-11-30"]),
            &json!(1)
        ),
        "{}",
        r.text
    );
    let r = owner
        .call(&a, "POST", &format!("{path}/send?period=year"), None)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.text.contains("\\\"week\\\" or \\\"month\\\""),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn a_traffic_spike_is_emailed_once_with_realtimes_numbers_and_its_link_unsubscribes() {
    let smtp = Smtpd::start();
    let (a, ch, clock) = agg("mail_spike", &smtp, Utc::now()).await;
    common::seed(&ch).await;
    let owner = set_up_owner(&a).await;
    // 10:02:30 on the seeded day: the last five minutes hold the 10 Google visitors.
    clock.set(at("2026-11-20T10:02:30Z"));
    let now = at("2026-11-20T10:02:30Z");
    let path = format!("/api/v1/sites/{}/digest", common::SITE);

    // Bad options are refused with what is wrong.
    for bad in [
        json!({"spike_threshold": 20_000_000}),
        json!({"spikes": 5}),
        json!({"monthly": "yes"}),
    ] {
        let r = owner.call(&a, "PUT", &path, Some(bad.clone())).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
    }
    let r = owner
        .call(&a, "PUT", &path, Some(json!({"spike_threshold": 11})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (&r.body["spike_threshold"], &r.body["weekly"]),
        (&json!(11), &json!(false))
    );
    // Realtime says 10: below 11, no e-mail.
    let rt = owner
        .call(
            &a,
            "GET",
            &format!("/api/v1/sites/{}/realtime", common::SITE),
            None,
        )
        .await;
    assert_eq!(rt.body["visitors_5m"], 10, "{}", rt.text);
    assert_eq!(digest::send_spikes(&a, now).await.unwrap(), 0);

    let r = owner
        .call(&a, "PUT", &path, Some(json!({"spike_threshold": 10})))
        .await;
    assert_eq!(r.body["spike_threshold"], 10, "{}", r.text);
    assert_eq!(digest::send_due(&a).await.unwrap(), 1);
    let mail = smtp.wait_for(1).await.remove(0);
    assert_eq!(mail["rcpt_tos"], json!([OWNER]));
    assert_eq!(
        mail["headers"]["Subject"],
        format!("Traffic spike on {}: 10 current visitors", common::SITE)
    );
    let text = part(&mail, "text/plain");
    assert!(text.contains("at or above your alert of 10"), "{text}");
    for row in rt.body["top_pages"].as_array().unwrap() {
        let line = format!(
            "  {}: {} visitors",
            row["page"].as_str().unwrap(),
            show(&row["visitors"])
        );
        assert!(text.contains(&line), "{line:?} not in {text}");
    }
    assert!(text.contains("  /pricing: 6 visitors"), "{text}");
    assert!(text.contains("/site/shop.example?view=realtime"), "{text}");

    // One spike, one e-mail: the next checks (the scheduler's minute) send nothing.
    assert_eq!(digest::send_due(&a).await.unwrap(), 0);
    clock.set(at("2026-11-20T10:04:00Z"));
    assert_eq!(digest::send_due(&a).await.unwrap(), 0);
    assert_eq!(smtp.messages().len(), 1);

    // Its link unsubscribes from the site's e-mails (POST; GET only asks).
    let url = mail["headers"]["List-Unsubscribe"]
        .as_str()
        .unwrap()
        .trim_matches(['<', '>'])
        .to_string();
    assert!(part(&mail, "text/html").contains(&url));
    let link = url.strip_prefix(PUBLIC).unwrap();
    let stranger = Browser::default();
    assert_eq!(stranger.call(&a, "GET", link, None).await.status, 200);
    assert_eq!(
        owner.call(&a, "GET", &path, None).await.body["spike_threshold"],
        10
    );
    let done = stranger.call(&a, "POST", link, None).await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert!(
        done.text.contains("no traffic-spike alerts"),
        "{}",
        done.text
    );
    assert_eq!(
        owner.call(&a, "GET", &path, None).await.body["spike_threshold"],
        0
    );
}

/// A mail relay that, as it takes each e-mail, follows the e-mail's unsubscribe link at once
/// (as a reader may: the relay can deliver before the sender has done anything more).
#[derive(Debug)]
struct FollowsAtOnce {
    registry: Arc<veil_schemas::registry::Registry>,
    found: std::sync::Mutex<Vec<(String, bool)>>,
}

impl veil_aggregator::mail::Mailer for FollowsAtOnce {
    fn send(&self, mail: veil_aggregator::mail::Mail) -> veil_aggregator::mail::Sending<'_> {
        Box::pin(async move {
            let token = token_of(mail.unsubscribe.as_deref().unwrap_or_default());
            let found = self.registry.digest_by_token(&token).await?.is_some();
            self.found
                .lock()
                .unwrap()
                .push((mail.subject.clone(), found));
            Ok(())
        })
    }
}

#[tokio::test]
async fn an_emails_unsubscribe_link_works_the_moment_the_email_exists() {
    let smtp = Smtpd::start();
    let (a, ch, clock) = agg("mail_link_at_once", &smtp, Utc::now()).await;
    common::seed(&ch).await;
    let relay = Arc::new(FollowsAtOnce {
        registry: a.registry().clone(),
        found: std::sync::Mutex::new(Vec::new()),
    });
    let a = a.with_mailer(relay.clone());
    let owner = set_up_owner(&a).await;
    let path = format!("/api/v1/sites/{}/digest", common::SITE);
    clock.set(at("2026-11-20T10:02:30Z"));
    let r = owner
        .call(
            &a,
            "PUT",
            &path,
            Some(json!({"weekly": true, "monthly": true, "spike_threshold": 10})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A spike now, the week's digest on Monday, the month's on 1 December.
    for t in [
        "2026-11-20T10:02:30Z",
        "2026-11-23T08:00:01Z",
        "2026-12-01T08:00:01Z",
    ] {
        clock.set(at(t));
        assert!(
            digest::send_due(&a).await.unwrap() >= 1,
            "nothing sent at {t}"
        );
    }
    let found = relay.found.lock().unwrap().clone();
    assert!(found.len() >= 3, "{found:?}");
    assert!(
        found.iter().all(|(_, ok)| *ok),
        "links that opened nothing: {found:?}"
    );
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Log(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Log;
    fn make_writer(&'a self) -> Log {
        self.clone()
    }
}

impl Log {
    /// Everything logged so far by this test process (every test's lines, down to DEBUG).
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits (up to 30 s) for a line holding every one of `words`; returns it.
    async fn line_with(&self, words: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self
                .text()
                .lines()
                .find(|l| words.iter().all(|w| l.contains(w)))
            {
                return l.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {words:?} in:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asserts that the relay's password appears nowhere in the log, in either form.
    fn assert_no_password(&self) {
        let t = self.text();
        for secret in [SMTP_PASSWORD, SMTP_PASSWORD_IN_URL, "9f2c7e41"] {
            assert!(!t.contains(secret), "the password is in the log:\n{t}");
        }
    }
}

/// The log of this test process: one global subscriber at DEBUG (a thread's own default
/// would miss events whose callsites other tests' threads registered first).
fn log() -> Log {
    static LOG: std::sync::OnceLock<Log> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Log::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        log
    })
    .clone()
}

/// Invites ann@example.com to the site as `owner`; the answer.
async fn invite_ann(a: &Aggregator, owner: &Browser) -> Answer {
    let r = owner
        .call(
            a,
            "POST",
            &format!("/api/v1/sites/{}/people", common::SITE),
            Some(json!({"email": "ann@example.com", "role": "viewer"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r
}

/// The relay's port as the aggregator's messages name it (`…@127.0.0.1:PORT`).
fn named(smtp: &Smtpd) -> String {
    format!("{SMTP_USER}:…@127.0.0.1:{}", smtp.port)
}

#[tokio::test]
async fn an_invitation_goes_over_smtps_to_a_relay_of_the_ca_file_with_the_password() {
    let log = log();
    let ca = TestCa::new("Veil test CA (smtps)");
    let smtp = Smtpd::start_tls(Tls::Implicit, &ca, Some(&ca));
    let (a, _ch, _) = agg("mail_smtps", &smtp, Utc::now()).await;
    let owner = set_up_owner(&a).await;
    let r = invite_ann(&a, &owner).await;
    assert_eq!(r.body["emailed"], true, "{}", r.text);

    let mail = smtp.wait_for(1).await.remove(0);
    assert_eq!(mail["rcpt_tos"], json!(["ann@example.com"]));
    assert_eq!(mail["tls"], true, "{mail}");
    // The relay took the login it was given (percent-decoded from the URL), over TLS.
    assert_eq!(mail["login"], SMTP_USER);
    assert_eq!(smtp.auth_log(), format!("{SMTP_USER} ok\n"));
    let link = format!("{PUBLIC}{}", r.body["url"].as_str().unwrap());
    assert!(part(&mail, "text/plain").contains(&link));
    assert!(!r.text.contains(SMTP_PASSWORD) && !r.text.contains(SMTP_PASSWORD_IN_URL));
    log.assert_no_password();
}

#[tokio::test]
async fn a_digest_goes_over_starttls_to_a_relay_of_the_ca_file() {
    let log = log();
    let ca = TestCa::new("Veil test CA (starttls)");
    let smtp = Smtpd::start_tls(Tls::Starttls, &ca, Some(&ca));
    let (a, _ch, _) = agg("mail_starttls", &smtp, Utc::now()).await;
    let owner = set_up_owner(&a).await;
    let path = format!("/api/v1/sites/{}/digest", common::SITE);
    let r = owner.call(&a, "PUT", &path, None).await;
    assert_eq!(r.body["subscribed"], true, "{}", r.text);
    let r = owner
        .call(&a, "POST", &format!("{path}/send?period=week"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (&r.body["sent"], &r.body["failed"]),
        (&json!(1), &json!(0)),
        "{}",
        r.text
    );

    let mail = smtp.wait_for(1).await.remove(0);
    assert_eq!(mail["rcpt_tos"], json!([OWNER]));
    // The server requires STARTTLS before MAIL and offers AUTH only after it: the message,
    // and the password before it, went encrypted.
    assert_eq!(mail["tls"], true, "{mail}");
    assert_eq!(mail["login"], SMTP_USER);
    assert_eq!(smtp.auth_log(), format!("{SMTP_USER} ok\n"));
    let week = r.body["week"][0].as_str().unwrap().to_string();
    assert!(
        part(&mail, "text/plain").contains(&format!("Week {week}")),
        "{mail}"
    );
    assert!(mail["headers"]["List-Unsubscribe"].as_str().is_some());
    log.assert_no_password();
}

#[tokio::test]
async fn a_relay_not_trusted_or_without_starttls_gets_nothing_and_the_log_says_why() {
    let log = log();
    let ours = TestCa::new("Veil test CA (ours)");
    let theirs = TestCa::new("Veil test CA (not trusted)");

    // smtps, told of another CA: the invitation is not e-mailed (the inviter still has the
    // link) and the log says the certificate was refused.
    let smtp = Smtpd::start_tls(Tls::Implicit, &theirs, Some(&ours));
    let (a, ch, _) = agg("mail_untrusted", &smtp, Utc::now()).await;
    let owner = set_up_owner(&a).await;
    let r = invite_ann(&a, &owner).await;
    assert_eq!(r.body["emailed"], false, "{}", r.text);
    assert!(r.body["url"]
        .as_str()
        .unwrap()
        .starts_with("/invite#token="));
    let line = log
        .line_with(&["could not e-mail an invitation", &named(&smtp)])
        .await;
    assert!(
        line.contains("refused the mail server's certificate")
            && line.contains("UnknownIssuer")
            && line.contains("--smtp-ca-file"),
        "{line}"
    );

    // STARTTLS, with the system's roots only (no --smtp-ca-file): the digest is not sent, and
    // counted as failed.
    let smtp2 = Smtpd::start_tls(Tls::Starttls, &theirs, None);
    let cfg = config(&smtp2);
    cfg.validate().unwrap();
    let a2 = Aggregator::with_registry(cfg, ch.clone(), Arc::clone(a.registry()));
    let path = format!("/api/v1/sites/{}/digest", common::SITE);
    let r = owner.call(&a2, "PUT", &path, None).await;
    assert_eq!(r.body["subscribed"], true, "{}", r.text);
    let r = owner
        .call(&a2, "POST", &format!("{path}/send?period=week"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (&r.body["sent"], &r.body["failed"]),
        (&json!(0), &json!(1)),
        "{}",
        r.text
    );
    let line = log.line_with(&[&named(&smtp2), "certificate"]).await;
    assert!(line.contains("UnknownIssuer"), "{line}");

    // smtps to a relay whose certificate the CA file's CA signed, but for another host.
    let elsewhere = TestCa::for_names("Veil test CA (another host)", &["relay.example"]);
    let smtp3 = Smtpd::start_tls(Tls::Implicit, &elsewhere, Some(&elsewhere));
    let a3 = Aggregator::with_registry(config(&smtp3), ch.clone(), Arc::clone(a.registry()));
    assert_eq!(invite_ann(&a3, &owner).await.body["emailed"], false);
    let line = log.line_with(&[&named(&smtp3), "certificate"]).await;
    assert!(line.contains("NotValidForName"), "{line}");

    // ?tls=required to a relay that offers no STARTTLS: no fallback to plain text.
    let mut smtp4 = Smtpd::start();
    smtp4.url = format!(
        "smtp://{SMTP_USER}:{SMTP_PASSWORD_IN_URL}@127.0.0.1:{}?tls=required",
        smtp4.port
    );
    let a4 = Aggregator::with_registry(config(&smtp4), ch.clone(), Arc::clone(a.registry()));
    assert_eq!(invite_ann(&a4, &owner).await.body["emailed"], false);
    let line = log.line_with(&[&named(&smtp4), "could not e-mail"]).await;
    assert!(line.contains("STARTTLS is not supported"), "{line}");

    // Nothing reached any of them (every send ended before its answer): no message, and no
    // password was offered.
    for s in [&smtp, &smtp2, &smtp3, &smtp4] {
        assert!(s.messages().is_empty());
        assert_eq!(s.auth_log(), "");
    }
    assert!(!r.text.contains(SMTP_PASSWORD) && !r.text.contains(SMTP_PASSWORD_IN_URL));
    log.assert_no_password();
}
