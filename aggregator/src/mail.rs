//! Outgoing e-mail: invitations ([`crate::account`]), digests and traffic-spike alerts
//! ([`crate::digest`]), sent through a [`Mailer`] (the I/O edge; [`SmtpMailer`] in production,
//! configured by `--smtp-url`, `--smtp-from` and `--smtp-ca-file`).
//!
//! `--smtp-url` ([`check_smtp_url`]; the forms of lettre's `SmtpTransport::from_url`):
//! - `smtps://[USER:PASSWORD@]HOST[:PORT]`: implicit TLS, port 465 by default (what SES,
//!   Postmark, Mailgun and Gmail call "SMTPS" or "SSL");
//! - `smtp://[USER:PASSWORD@]HOST[:PORT]?tls=required`: STARTTLS, port 587 by default; a
//!   server that does not offer STARTTLS, or whose TLS fails, gets nothing (no fallback to
//!   plain text; `tls=opportunistic` is refused for that reason);
//! - `smtp://[USER:PASSWORD@]HOST[:PORT]`: plain SMTP, port 25 by default, meant for a relay on
//!   loopback or a private network (a local Postfix, a cloud relay's agent). As before TLS was
//!   built in, the host is not checked (a relay reached by name may well be private; a name
//!   says nothing): with a password to a host that is not loopback, a warning is logged at
//!   start ([`SmtpMailer::plain_warning`]).
//!
//! USER and PASSWORD are percent-encoded (`@` is `%40`). TLS is rustls with the `ring`
//! provider; the server's certificate is always verified, for HOST, against the system's
//! trusted roots (rustls-native-certs: Debian's `ca-certificates` bundle, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` in its place when set) plus the PEM certificates of `--smtp-ca-file PATH` (a
//! private relay's CA).
//! [`tls_parameters`] reads both when the config is validated, before any socket is bound: an
//! unreadable CA file, one without a certificate, or no root at all is an error at start.
//! The password never leaves this module: messages and logs name the relay as
//! `scheme://USER:…@HOST:PORT` ([`redact`]), and a failed send says only the reply code or the
//! TLS or network failure, never the server's text (which may repeat an address).
//! `--smtp-from`: the `From` mailbox (`Veil <veil@example.com>` or `veil@example.com`).
//!
//! Message format ([`Mail::to_message`]): `From`, `To`, `Subject` (UTF-8, RFC 2047 encoded
//! where needed), `Date`, a random `Message-ID`; for digests also `List-Unsubscribe: <URL>`
//! and `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058: a mail client's
//! "unsubscribe" button POSTs to the URL). The body is `multipart/alternative` with a
//! `text/plain; charset=utf-8` part first and a `text/html; charset=utf-8` part second, both
//! quoted-printable or base64 as lettre chooses. A mail with inline images ([`Mail::images`]:
//! a digest's chart, [`crate::chart`]) wraps the HTML part in `multipart/related` with one
//! `image/png` part per image after it (`Content-Disposition: inline`, base64, `Content-ID:
//! <ID>`, shown by the HTML's `<img src="cid:ID">`, RFC 2392), the way Gmail and Outlook show
//! images without fetching anything:
//!
//! ```text
//! multipart/alternative
//! ├── text/plain
//! └── multipart/related
//!     ├── text/html          <img src="cid:ID" …>
//!     └── image/png          Content-ID: <ID>
//! ```
//!
//! The addresses are account data (people of the deployment), never visitor data.

use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::Error;

/// How long one SMTP conversation may take.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// One e-mail to one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The recipient's address.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The text part.
    pub text: String,
    /// The HTML part (same content as the text).
    pub html: String,
    /// The `List-Unsubscribe` URL (digests).
    pub unsubscribe: Option<String>,
    /// Images the HTML part shows by `cid:` (a digest's chart); none for most e-mails.
    pub images: Vec<InlineImage>,
}

/// A PNG sent inside an e-mail and shown by its HTML as `<img src="cid:{content_id}">`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineImage {
    /// The `Content-ID` without its angle brackets (`addr-spec` form, `…@…`).
    pub content_id: String,
    /// The PNG's bytes.
    pub png: Vec<u8>,
}

/// A boxed future of a send.
pub type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

/// Where e-mail goes (tests may count instead of sending).
pub trait Mailer: Send + Sync + std::fmt::Debug {
    /// Sends `mail`; an error says what failed (never the message).
    fn send(&self, mail: Mail) -> Sending<'_>;
}

/// How the connection to the relay is protected (`--smtp-url`'s scheme and `?tls=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `smtp://`: plain SMTP (port 25).
    Plain,
    /// `smtp://…?tls=required`: STARTTLS, required (port 587).
    Starttls,
    /// `smtps://`: TLS from the first byte (port 465).
    Tls,
}

/// `--smtp-url` taken apart.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    /// Plain, STARTTLS or implicit TLS.
    pub security: Security,
    /// The relay's host name or address (the name its certificate must carry).
    pub host: String,
    /// Its port (25, 587 or 465 by [`Security`] when not written).
    pub port: u16,
    /// `USER` and `PASSWORD` (percent-decoded), when given.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpUrl")
            .field("security", &self.security)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

/// Checks and parses `--smtp-url` (before anything is bound): `smtps://[USER:PASSWORD@]HOST[:PORT]`,
/// `smtp://[USER:PASSWORD@]HOST[:PORT]?tls=required` or `smtp://[USER:PASSWORD@]HOST[:PORT]`.
pub fn check_smtp_url(url: &str) -> Result<SmtpUrl, Error> {
    let bad = |why: &str| {
        Err(Error::Config(format!(
            "--smtp-url {:?} {why} (expected smtps://[USER:PASSWORD@]HOST[:PORT] for TLS, \
             smtp://[USER:PASSWORD@]HOST[:PORT]?tls=required for STARTTLS, or \
             smtp://[USER:PASSWORD@]HOST[:PORT] for plain SMTP to a local relay)",
            redact(url)
        )))
    };
    let (mut security, rest) = if let Some(r) = url.strip_prefix("smtps://") {
        (Security::Tls, r)
    } else if let Some(r) = url.strip_prefix("smtp://") {
        (Security::Plain, r)
    } else {
        return bad("is not an smtp:// or smtps:// URL");
    };
    // The user information first, up to the last '@': a password with a stray '?' or '/'
    // still ends up in the credentials, not in the host or the query.
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (hostport, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    let hostport = hostport.trim_end_matches('/');
    match (security, query) {
        (_, None) => {}
        (Security::Plain, Some("tls=required")) => security = Security::Starttls,
        (Security::Plain, Some("tls=opportunistic")) => {
            return bad(
                "asks for opportunistic STARTTLS, which anyone on the path can strip to read \
                 the password and the mail: use ?tls=required",
            )
        }
        (Security::Plain, Some(_)) => return bad("has a query other than ?tls=required"),
        (_, Some(_)) => return bad("has a query (smtps:// is TLS already and takes none)"),
    }
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return bad("has a malformed host"),
            },
            None => return bad("has a malformed host"),
        },
        None => match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    if host.is_empty() || host.contains(['/', '?', '#', ' ', '@']) {
        return bad("has no host");
    }
    let port = match port {
        None => match security {
            Security::Plain => 25,
            Security::Starttls => 587,
            Security::Tls => 465,
        },
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return bad("has a port that is not a number from 1 to 65535"),
        },
    };
    let credentials = match userinfo {
        None => None,
        Some(u) => {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            match (percent_decode(user), percent_decode(pass)) {
                (Some(user), Some(pass)) if !user.is_empty() => Some((user, pass)),
                _ => return bad("has a user name or password that is not percent-encoded UTF-8"),
            }
        }
    };
    Ok(SmtpUrl {
        security,
        host: host.to_string(),
        port,
        credentials,
    })
}

/// The TLS settings for a relay named `host`: its certificate verified for `host` against the
/// system's trusted roots plus those of `ca_file` (PEM; `--smtp-ca-file`). Reads both now, so
/// a CA file that cannot be read or holds no certificate, and a machine without any trusted
/// root, are errors before anything is bound.
pub fn tls_parameters(host: &str, ca_file: Option<&Path>) -> Result<TlsParameters, Error> {
    tls_parameters_with(host, ca_file, rustls_native_certs::load_native_certs())
}

/// [`tls_parameters`] with the system's store as read (`native`).
fn tls_parameters_with(
    host: &str,
    ca_file: Option<&Path>,
    native: rustls_native_certs::CertificateResult,
) -> Result<TlsParameters, Error> {
    // One certificate rustls cannot take as a root (a store has odd ones at times) is skipped
    // rather than failing the rest: lettre would refuse the whole list.
    let usable =
        |c: &CertificateDer<'static>| rustls::RootCertStore::empty().add(c.clone()).is_ok();
    let mut roots: Vec<CertificateDer<'static>> = native.certs.into_iter().filter(usable).collect();
    let unread = native
        .errors
        .first()
        .map(|e| format!(" ({} could not be read: {e})", native.errors.len()))
        .unwrap_or_default();
    let system = roots.len();
    if let Some(path) = ca_file {
        let bad = |why: String| {
            Error::Config(format!(
                "--smtp-ca-file {}: {why} (expected the PEM certificate, -----BEGIN CERTIFICATE-----, of the CA that signed the relay's certificate)",
                path.display()
            ))
        };
        let pem = std::fs::read(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
        let mut n = 0;
        for c in CertificateDer::pem_slice_iter(&pem) {
            let c = c.map_err(|e| bad(format!("is not valid PEM: {e}")))?;
            if !usable(&c) {
                return Err(bad(format!(
                    "its certificate number {} is not one TLS can trust",
                    n + 1
                )));
            }
            roots.push(c);
            n += 1;
        }
        if n == 0 {
            return Err(bad("holds no certificate".into()));
        }
    }
    if roots.is_empty() {
        return Err(Error::Config(format!(
            "--smtp-url asks for TLS, but this machine has no trusted root certificates{unread} \
             and no --smtp-ca-file was given: install ca-certificates, or point SSL_CERT_FILE \
             at a PEM bundle"
        )));
    }
    tracing::debug!(
        system,
        ca_file = roots.len() - system,
        unread = %unread,
        "trusted roots for the mail server's certificate"
    );
    let mut b = TlsParameters::builder(host.to_string()).certificate_store(CertificateStore::None);
    for c in roots {
        let c = Certificate::from_der(c.to_vec())
            .map_err(|e| Error::Config(format!("a trusted root certificate: {e}")))?;
        b = b.add_root_certificate(c);
    }
    b.build_rustls()
        .map_err(|e| Error::Config(format!("the TLS settings for --smtp-url: {e}")))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Checks `--smtp-from`: one mailbox.
pub fn check_from(from: &str) -> Result<(), Error> {
    from.parse::<Mailbox>().map(|_| ()).map_err(|e| {
        Error::Config(format!(
            "--smtp-from {from:?} is not a mailbox like `Veil <veil@example.com>`: {e}"
        ))
    })
}

/// `url` without its password, for messages and logs: everything between `://` and the
/// last `@` but the user name is replaced by `…` (a password with an unencoded `@`, `/` or
/// `?` is hidden all the same).
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((user, host)) => {
                let user = user.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:…@{host}")
            }
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[derive(Debug, Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_string()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), format!("<{}>", self.0))
    }
}

#[derive(Debug, Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_string())
    }
}

impl Mail {
    /// The message as sent, from `from`.
    pub fn to_message(&self, from: &Mailbox) -> Result<Message, Error> {
        // The address stays out of the error: errors are logged, and addresses are never.
        let to: Mailbox = self.to.parse().map_err(|_| {
            Error::BadRequest(
                "the recipient's e-mail address is not one a message can be sent to".into(),
            )
        })?;
        let mut b = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(self.subject.clone())
            .message_id(None);
        if let Some(u) = &self.unsubscribe {
            b = b
                .header(ListUnsubscribe(u.clone()))
                .header(ListUnsubscribePost);
        }
        let body = if self.images.is_empty() {
            MultiPart::alternative_plain_html(self.text.clone(), self.html.clone())
        } else {
            let png = ContentType::parse("image/png")
                .map_err(|e| Error::Internal(format!("the PNG content type: {e}")))?;
            let mut related = MultiPart::related().singlepart(SinglePart::html(self.html.clone()));
            for img in &self.images {
                related = related.singlepart(
                    Attachment::new_inline(img.content_id.clone())
                        .body(img.png.clone(), png.clone()),
                );
            }
            MultiPart::alternative()
                .singlepart(SinglePart::plain(self.text.clone()))
                .multipart(related)
        };
        b.multipart(body)
            .map_err(|e| Error::Internal(format!("building an e-mail: {e}")))
    }
}

/// Sends through an SMTP relay (`--smtp-url`).
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The relay as messages name it ([`redact`]).
    host: String,
    /// Why plain SMTP here is worth a warning ([`SmtpMailer::plain_warning`]).
    plain_warning: Option<String>,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// Whether `host` is this machine (`localhost` or a loopback address).
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl SmtpMailer {
    /// A mailer for `url` ([`check_smtp_url`]) sending as `from` ([`check_from`]), trusting
    /// the system's roots and those of `ca_file` for TLS ([`tls_parameters`]). Makes no
    /// connection: the first send does.
    pub fn new(url: &str, from: &str, ca_file: Option<&Path>) -> Result<Self, Error> {
        let u = check_smtp_url(url)?;
        check_from(from)?;
        let tls = match u.security {
            Security::Plain => {
                if let Some(p) = ca_file {
                    return Err(Error::Config(format!(
                        "--smtp-ca-file {} is for TLS, but --smtp-url {:?} is plain SMTP: \
                         use smtps://… or smtp://…?tls=required",
                        p.display(),
                        redact(url)
                    )));
                }
                Tls::None
            }
            Security::Starttls => Tls::Required(tls_parameters(&u.host, ca_file)?),
            Security::Tls => Tls::Wrapper(tls_parameters(&u.host, ca_file)?),
        };
        let plain_warning = match (&u.security, &u.credentials) {
            (Security::Plain, Some(_)) if !is_loopback(&u.host) => Some(format!(
                "--smtp-url {} is plain SMTP with a password to a host that is not loopback: \
                 the password and the mail cross the network unencrypted unless that network \
                 is private; smtps:// or ?tls=required encrypt them",
                redact(url)
            )),
            _ => None,
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(u.host.as_str())
            .port(u.port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT));
        if let Some((user, pass)) = u.credentials {
            b = b.credentials(Credentials::new(user, pass));
        }
        let transport = b.build();
        let from = from
            .parse()
            .map_err(|e| Error::Config(format!("--smtp-from: {e}")))?;
        Ok(Self {
            transport,
            from,
            host: redact(url),
            plain_warning,
        })
    }

    /// For plain SMTP carrying a password to a host that is not loopback: the warning to log
    /// at start (the relay may be on a private network, which Veil cannot tell from a name).
    pub fn plain_warning(&self) -> Option<&str> {
        self.plain_warning.as_deref()
    }
}

/// What went wrong with a send, for a log line: the reply code, or the TLS or network failure
/// — never the server's text (it often repeats the recipient's address) nor the credentials
/// (lettre's errors do not carry them; this says nothing of them either).
fn failure(e: &lettre::transport::smtp::Error) -> String {
    if let Some(code) = e.status() {
        let hint = if code.to_string() == "535" {
            ": the relay refused the user name or password of --smtp-url"
        } else {
            ""
        };
        return format!("the mail server answered {code}{hint}");
    }
    if e.is_timeout() {
        return "the mail server did not answer in time".into();
    }
    // The cause: a TLS error of rustls, else an I/O error's kind (lettre wraps both in
    // std::io::Error at times).
    let mut tls = None;
    let mut io = None;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        let inner = c
            .downcast_ref::<std::io::Error>()
            .and_then(|i| {
                io = io.or(Some(i.kind()));
                i.get_ref()
            })
            .map(|i| i as &(dyn std::error::Error + 'static));
        for c in [Some(c), inner].into_iter().flatten() {
            if let Some(t) = c.downcast_ref::<rustls::Error>() {
                tls = tls.or(Some(t.clone()));
            }
        }
        cause = c.source();
    }
    match tls {
        Some(rustls::Error::InvalidCertificate(why)) => format!(
            "the TLS handshake refused the mail server's certificate ({why:?}): it must be \
             valid for the host of --smtp-url and signed by a CA the system trusts or one in \
             --smtp-ca-file"
        ),
        Some(t) => format!("the TLS handshake with the mail server failed: {t}"),
        None if e.is_client() => format!("the SMTP conversation failed: {e}"),
        None => match io {
            Some(kind) => format!("no SMTP conversation with the mail server ({kind})"),
            None => "no SMTP conversation with the mail server".into(),
        },
    }
}

impl Mailer for SmtpMailer {
    fn send(&self, mail: Mail) -> Sending<'_> {
        Box::pin(async move {
            let m = mail.to_message(&self.from)?;
            self.transport.send(m).await.map(|_| ()).map_err(|e| {
                Error::Io(format!(
                    "sending e-mail through {}: {}",
                    self.host,
                    failure(&e)
                ))
            })
        })
    }
}

/// `s` with `&`, `<`, `>`, `"` and `'` escaped for HTML text and attributes.
pub fn html_text(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The invitation e-mail: who invites to which site with which role, and the link.
pub fn invitation(to: &str, inviter: &str, site: &str, role: &str, link: &str) -> Mail {
    let what = if site == veil_schemas::people::ALL_SITES {
        "every site".to_string()
    } else {
        site.to_string()
    };
    let text = format!(
        "{inviter} invites you to {what} on Veil as {role}.\n\n\
         Accept (the link works once, for 7 days):\n{link}\n\n\
         If you did not expect this, ignore this e-mail.\n"
    );
    let html = format!(
        "<!doctype html><html><body><p>{} invites you to <b>{}</b> on Veil as {}.</p>\
         <p><a href=\"{}\">Accept the invitation</a> (the link works once, for 7 days).</p>\
         <p>If you did not expect this, ignore this e-mail.</p></body></html>",
        html_text(inviter),
        html_text(&what),
        html_text(role),
        html_text(link)
    );
    Mail {
        to: to.to_string(),
        subject: format!("Invitation to {what} on Veil"),
        text,
        html,
        unsubscribe: None,
        images: Vec::new(),
    }
}

/// `path` under `--public-url` (links in e-mails are absolute).
pub fn absolute(agg: &crate::Aggregator, path: &str) -> String {
    let base = agg.config().public_url.as_deref().unwrap_or_default();
    format!("{}{path}", base.trim_end_matches('/'))
}

/// E-mails an invitation's link (`url`: `/invite#token=…`) to its invitee when e-mail is
/// configured; whether the relay took it (a failure is logged, the inviter still has the link).
pub(crate) async fn send_invitation(
    agg: &crate::Aggregator,
    access: &crate::Access,
    inv: &veil_schemas::people::InvitationRecord,
    url: &str,
) -> bool {
    let Some(mailer) = agg.mailer() else {
        return false;
    };
    let link = absolute(agg, url);
    let inviter = match access {
        crate::Access::User(p) => p.email.as_str(),
        _ => "The operator of this Veil",
    };
    let mail = invitation(&inv.email, inviter, &inv.site, inv.role.name(), &link);
    match mailer.send(mail).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(invitation = %inv.id, error = %e, "could not e-mail an invitation");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_are_checked_with_the_flag_named() {
        let u = check_smtp_url("smtp://127.0.0.1:2525").unwrap();
        assert_eq!(
            (u.security, u.host.as_str(), u.port, u.credentials),
            (Security::Plain, "127.0.0.1", 2525, None)
        );
        let u = check_smtp_url("smtp://user:s%40cret@relay.internal").unwrap();
        assert_eq!((u.security, u.port), (Security::Plain, 25));
        assert_eq!(u.credentials, Some(("user".into(), "s@cret".into())));
        assert_eq!(check_smtp_url("smtp://[::1]:587").unwrap().host, "::1");
        // TLS: lettre's forms and default ports.
        let u = check_smtp_url("smtps://apikey:s%2Fcret@smtp.example.com").unwrap();
        assert_eq!(
            (u.security, u.host.as_str(), u.port),
            (Security::Tls, "smtp.example.com", 465)
        );
        assert_eq!(u.credentials, Some(("apikey".into(), "s/cret".into())));
        let u = check_smtp_url("smtp://u:p@smtp.example.com?tls=required").unwrap();
        assert_eq!((u.security, u.port), (Security::Starttls, 587));
        let u = check_smtp_url("smtp://u:p@[::1]:2587/?tls=required").unwrap();
        assert_eq!(
            (u.security, u.host.as_str(), u.port),
            (Security::Starttls, "::1", 2587)
        );
        assert_eq!(check_smtp_url("smtps://h:2465").unwrap().port, 2465);
        // A password with an unencoded '?' or '/' stays a password.
        let u = check_smtp_url("smtps://u:a?b/c@h").unwrap();
        assert_eq!(u.credentials, Some(("u".into(), "a?b/c".into())));
        for (bad, why) in [
            ("http://u:secret@x", "not an smtp"),
            ("smtp://u:secret@", "no host"),
            ("smtp://u:secret@:25", "no host"),
            ("smtp://u:secret@h:99999", "port"),
            ("smtp://u:secret@h:0", "port"),
            ("smtp://u:%zzsecret@h", "percent-encoded"),
            ("smtp://u:secret@h?tls=opportunistic", "tls=required"),
            ("smtp://u:secret@h?tls=yes", "other than ?tls=required"),
            ("smtps://u:secret@h?tls=required", "takes none"),
        ] {
            let e = check_smtp_url(bad).unwrap_err().to_string();
            assert!(e.contains("--smtp-url") && e.contains(why), "{bad}: {e}");
            assert!(!e.contains("secret"), "{bad}: {e}");
            assert!(e.contains("u:…@"), "{bad}: {e}");
        }
        assert!(!format!("{:?}", check_smtp_url("smtps://u:secret@h").unwrap()).contains("secret"));
        check_from("Veil <veil@example.com>").unwrap();
        assert!(check_from("not an address").is_err());
    }

    #[test]
    fn the_password_is_redacted_whatever_it_holds() {
        assert_eq!(redact("smtps://u:p%40ss@h:465"), "smtps://u:…@h:465");
        assert_eq!(
            redact("smtp://u:a@b@h?tls=required"),
            "smtp://u:…@h?tls=required"
        );
        assert_eq!(redact("smtp://h:25"), "smtp://h:25");
        assert_eq!(redact("smtps://u:a/b?c@h"), "smtps://u:…@h");
    }

    #[test]
    fn the_ca_file_is_read_when_the_config_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let from = "veil@example.com";
        let e = SmtpMailer::new("smtps://u:secret@h", from, Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--smtp-ca-file")
                && e.contains("missing.pem")
                && e.contains("cannot be read"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = SmtpMailer::new("smtp://u:secret@h?tls=required", from, Some(&empty))
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = SmtpMailer::new("smtps://h", from, Some(&broken))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not one TLS can trust"), "{e}");
        // A CA file with plain SMTP is a mistake worth saying.
        let e = SmtpMailer::new("smtp://u:secret@h", from, Some(&empty))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is for TLS") && !e.contains("secret"), "{e}");
        // Plain SMTP with a password off this machine is allowed, with a warning.
        let m = SmtpMailer::new("smtp://u:secret@relay.internal", from, None).unwrap();
        let w = m.plain_warning().unwrap();
        assert!(w.contains("unencrypted") && !w.contains("secret"), "{w}");
        for quiet in [
            "smtp://u:secret@127.0.0.1:25",
            "smtp://u:secret@localhost",
            "smtp://relay.internal",
        ] {
            assert_eq!(
                SmtpMailer::new(quiet, from, None).unwrap().plain_warning(),
                None
            );
        }
        assert!(!format!("{m:?}").contains("secret"));
    }

    #[test]
    fn without_any_trusted_root_tls_is_a_config_error_unless_a_ca_file_gives_one() {
        let none = rustls_native_certs::CertificateResult::default;
        let Err(e) = tls_parameters_with("h", None, none()) else {
            panic!("TLS without a root")
        };
        let e = e.to_string();
        assert!(
            e.contains("no trusted root certificates") && e.contains("ca-certificates"),
            "{e}"
        );
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = p.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.pem()).unwrap();
        assert!(tls_parameters_with("h", Some(&path), none()).is_ok());
    }

    #[test]
    fn a_digest_message_is_multipart_with_the_unsubscribe_headers() {
        let m = Mail {
            to: "ann@example.com".into(),
            subject: "Weekly — a.com".into(),
            text: "plain".into(),
            html: "<p>html</p>".into(),
            unsubscribe: Some("https://veil.example/unsubscribe?token=vu_1".into()),
            images: Vec::new(),
        };
        let raw = String::from_utf8(
            m.to_message(&"Veil <veil@example.com>".parse().unwrap())
                .unwrap()
                .formatted(),
        )
        .unwrap();
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("text/plain; charset=utf-8"));
        assert!(raw.contains("text/html; charset=utf-8"));
        assert!(raw.contains("List-Unsubscribe: <https://veil.example/unsubscribe?token=vu_1>"));
        assert!(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
        assert!(
            raw.contains("Subject: Weekly =?utf-8?b?4oCU?= a.com"),
            "{raw}"
        );
        assert!(raw.contains("Message-ID: <"), "{raw}");
        assert!(!raw.contains("multipart/related"), "{raw}");
    }

    #[test]
    fn inline_images_go_in_multipart_related_after_the_html() {
        let m = Mail {
            to: "ann@example.com".into(),
            subject: "Weekly".into(),
            text: "plain".into(),
            html: "<img src=\"cid:visitors@veil\">".into(),
            unsubscribe: None,
            images: vec![InlineImage {
                content_id: "visitors@veil".into(),
                png: vec![0x89, b'P', b'N', b'G'],
            }],
        };
        let raw = String::from_utf8(
            m.to_message(&"veil@example.com".parse().unwrap())
                .unwrap()
                .formatted(),
        )
        .unwrap();
        let at = |s: &str| raw.find(s).unwrap_or_else(|| panic!("no {s} in {raw}"));
        assert!(at("multipart/alternative") < at("text/plain"));
        assert!(at("text/plain") < at("multipart/related"));
        assert!(at("multipart/related") < at("text/html"));
        assert!(at("text/html") < at("Content-Type: image/png"));
        assert!(raw.contains("Content-ID: <visitors@veil>"), "{raw}");
        assert!(raw.contains("Content-Disposition: inline"), "{raw}");
        assert!(raw.contains("iVBORw=="), "the PNG in base64: {raw}");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_text("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let m = invitation(
            "b@x.com",
            "a<b>@x.com",
            "x.com",
            "viewer",
            "https://v/invite#token=t",
        );
        assert!(m.html.contains("a&lt;b&gt;@x.com"));
        assert!(m.text.contains("https://v/invite#token=t"));
    }
}
