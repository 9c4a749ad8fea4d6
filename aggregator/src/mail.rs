//! Outgoing e-mail: invitations ([`crate::account`]) and weekly digests ([`crate::digest`]),
//! sent through a [`Mailer`] (the I/O edge; [`SmtpMailer`] in production, configured by
//! `--smtp-url` and `--smtp-from`).
//!
//! `--smtp-url`: `smtp://[USER:PASSWORD@]HOST[:PORT]` (port 25 by default), plain SMTP to a
//! relay on loopback or a private network (a local Postfix, a cloud relay's agent). TLS
//! (`smtps://`, STARTTLS) is not built in and refused by [`check_smtp_url`] with that said.
//! `--smtp-from`: the `From` mailbox (`Veil <veil@example.com>` or `veil@example.com`).
//!
//! Message format ([`Mail::to_message`]): `From`, `To`, `Subject` (UTF-8, RFC 2047 encoded
//! where needed), `Date`, a random `Message-ID`; for digests also `List-Unsubscribe: <URL>`
//! and `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058: a mail client's
//! "unsubscribe" button POSTs to the URL). The body is `multipart/alternative` with a
//! `text/plain; charset=utf-8` part first and a `text/html; charset=utf-8` part second, both
//! quoted-printable or base64 as lettre chooses. The addresses are account data (people of the
//! deployment), never visitor data.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

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
}

/// A boxed future of a send.
pub type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

/// Where e-mail goes (tests may count instead of sending).
pub trait Mailer: Send + Sync + std::fmt::Debug {
    /// Sends `mail`; an error says what failed (never the message).
    fn send(&self, mail: Mail) -> Sending<'_>;
}

/// `--smtp-url` taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    /// The relay's host name or address.
    pub host: String,
    /// Its port (25 when not written).
    pub port: u16,
    /// `USER` and `PASSWORD` (percent-decoded), when given.
    pub credentials: Option<(String, String)>,
}

/// Checks and parses `--smtp-url` (before anything is bound): `smtp://[USER:PASSWORD@]HOST[:PORT]`.
pub fn check_smtp_url(url: &str) -> Result<SmtpUrl, Error> {
    let bad = |why: &str| {
        Err(Error::Config(format!(
            "--smtp-url {:?} {why} (expected smtp://[USER:PASSWORD@]HOST[:PORT], plain SMTP to a relay)",
            redact(url)
        )))
    };
    let Some(rest) = url.strip_prefix("smtp://") else {
        if url.starts_with("smtps://") {
            return bad(
                "asks for TLS, which this build does not include: relay through a local MTA",
            );
        }
        return bad("is not an smtp:// URL");
    };
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
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
    if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
        return bad("has no host");
    }
    let port = match port {
        None => 25,
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
        host: host.to_string(),
        port,
        credentials,
    })
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

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
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
        b.multipart(MultiPart::alternative_plain_html(
            self.text.clone(),
            self.html.clone(),
        ))
        .map_err(|e| Error::Internal(format!("building an e-mail: {e}")))
    }
}

/// Sends through an SMTP relay (`--smtp-url`).
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("host", &self.host)
            .finish()
    }
}

impl SmtpMailer {
    /// A mailer for `url` (checked by [`check_smtp_url`]) sending as `from` ([`check_from`]).
    pub fn new(url: &str, from: &str) -> Result<Self, Error> {
        let u = check_smtp_url(url)?;
        check_from(from)?;
        // Plain SMTP (no TLS in this build: check_smtp_url refuses smtps://).
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(u.host.as_str())
            .port(u.port)
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
        })
    }
}

impl Mailer for SmtpMailer {
    fn send(&self, mail: Mail) -> Sending<'_> {
        Box::pin(async move {
            let m = mail.to_message(&self.from)?;
            self.transport
                .send(m)
                .await
                .map(|_| ())
                // Only the reply code: a server's text often repeats the recipient's
                // address, and this error is logged.
                .map_err(|e| {
                    let what = match e.status() {
                        Some(code) => format!("the mail server answered {code}"),
                        None if e.is_timeout() => "the mail server did not answer in time".into(),
                        None => "no SMTP conversation with the mail server".into(),
                    };
                    Error::Io(format!("sending e-mail through {}: {what}", self.host))
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
            (u.host.as_str(), u.port, u.credentials),
            ("127.0.0.1", 2525, None)
        );
        let u = check_smtp_url("smtp://user:s%40cret@relay.internal").unwrap();
        assert_eq!(u.port, 25);
        assert_eq!(u.credentials, Some(("user".into(), "s@cret".into())));
        assert_eq!(check_smtp_url("smtp://[::1]:587").unwrap().host, "::1");
        for bad in [
            "http://x",
            "smtp://",
            "smtp://:25",
            "smtp://h:99999",
            "smtps://u:p@h",
            "smtp://u:%zz@h",
        ] {
            let e = check_smtp_url(bad).unwrap_err().to_string();
            assert!(e.contains("--smtp-url"), "{bad}: {e}");
            assert!(!e.contains("secret"));
        }
        assert!(check_smtp_url("smtps://u:secret@h")
            .unwrap_err()
            .to_string()
            .contains("TLS"));
        check_from("Veil <veil@example.com>").unwrap();
        assert!(check_from("not an address").is_err());
    }

    #[test]
    fn a_digest_message_is_multipart_with_the_unsubscribe_headers() {
        let m = Mail {
            to: "ann@example.com".into(),
            subject: "Weekly — a.com".into(),
            text: "plain".into(),
            html: "<p>html</p>".into(),
            unsubscribe: Some("https://veil.example/unsubscribe?token=vu_1".into()),
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
