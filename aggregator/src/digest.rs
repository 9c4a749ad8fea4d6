//! Weekly e-mail digests: a person subscribes to a site's weekly digest, a scheduler sends
//! each subscriber the last full week's numbers every Monday at [`SEND_HOUR`]:00 in the site's
//! time zone, and a link in every digest unsubscribes without logging in. Storage:
//! [`veil_schemas::digests`] (`021_digests.sql`); sending: [`crate::mail`].
//!
//! Every number of a digest is the Stats API's own answer ([`stats::run`], through the
//! privacy module like `POST /api/v2/query`): three questions — totals (`visitors`,
//! `pageviews`, `bounce_rate` with `previous_period` comparison), the top [`TOP`] pages
//! (`event:page`) and the top [`TOP`] sources (`visit:source`) — over the week Monday to
//! Sunday. In differential-privacy mode they are charged to the credential
//! `digest:{user id}`, a budget of their own apart from the person's dashboard; numbers
//! withheld by k-anonymity show as "—". No SQL of its own.
//!
//! Wire format (JSON; errors `{"error": "…"}`):
//! - `GET /api/v1/sites/{domain}/digest` → `{"site", "subscribed", "last_sent", "email_configured"}`
//!   for the logged-in person (a site key, link or the admin token: 403, digests are people's);
//! - `PUT …/digest` → subscribes (the first digest is the next Monday's); `DELETE …/digest`
//!   → unsubscribes; both answer as `GET`;
//! - `POST …/digest/send` (role admin on the site) → sends the last full week's digest to every
//!   subscriber now and records it as sent (the scheduler then skips that week):
//!   `{"week": ["YYYY-MM-DD", "YYYY-MM-DD"], "sent": N, "failed": N}`; 409 without `--smtp-url`;
//! - `GET /unsubscribe?token=T` (no login) → an HTML page naming the site with one button
//!   that POSTs to the same URL; never unsubscribes by itself (mail scanners and link
//!   previews fetch GET links); `POST /unsubscribe?token=T` → unsubscribes (the RFC 8058
//!   one-click POST of a mail client's "unsubscribe" button lands here too) and says so; a
//!   token that opens nothing (used, unknown, older than the newest
//!   [`veil_schemas::digests::KEPT_TOKENS`] e-mails) is a 404 page saying so.
//!
//! Sending once: a digest is recorded (`last_sent` = the week's Monday) after the SMTP relay
//! took it; the scheduler sends a week whose Monday is after `last_sent`, so a restart does
//! not send a week twice (a crash between the relay's "OK" and the record would; several
//! aggregators with `--smtp-url` each run the scheduler and may race on the same minute).

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use http::{header, HeaderValue, Method, Request, StatusCode};
use serde_json::{json, Value};
use veil_schemas::digests::{new_token, DigestRecord};
use veil_schemas::people::{Role, ALL_SITES};

use crate::auth::Access;
use crate::http::{bytes_response, json_response, HttpResponse};
use crate::mail::{absolute, html_text, Mail};
use crate::site::SiteView;
use crate::{query, stats, Aggregator, Error};

/// The path of the unsubscribe page (outside `/api/`: a plain HTML form posts to it).
pub const UNSUBSCRIBE_PATH: &str = "/unsubscribe";
/// The local hour on Mondays digests go out.
pub const SEND_HOUR: u32 = 8;
/// Rows of the top pages and top sources.
pub const TOP: usize = 5;
/// How often the scheduler looks for digests due.
pub const DEFAULT_TICK: Duration = Duration::from_secs(60);

/// The Monday of the last full week (Monday to Sunday) whose digest is due at `now` in `tz`:
/// from Monday [`SEND_HOUR`]:00 the week that ended the day before, until then the one
/// before it.
pub fn due_week(now: DateTime<Utc>, tz: chrono_tz::Tz) -> NaiveDate {
    let local = now.with_timezone(&tz).naive_local();
    let day = local.date();
    let monday = day - chrono::Duration::days(i64::from(day.weekday().num_days_from_monday()));
    let due_monday = if day == monday
        && local.time() < chrono::NaiveTime::MIN + chrono::Duration::hours(i64::from(SEND_HOUR))
    {
        monday - chrono::Duration::days(7)
    } else {
        monday
    };
    due_monday - chrono::Duration::days(7)
}

/// The numbers of one digest, as the Stats API published them.
#[derive(Debug, Clone, PartialEq)]
pub struct Numbers {
    /// `visitors`, `pageviews`, `bounce_rate` (null: withheld).
    pub totals: [Value; 3],
    /// Their change against the week before (percent; points for the bounce rate).
    pub changes: [Value; 3],
    /// Top pages: `(page, visitors)`.
    pub pages: Vec<(String, Value)>,
    /// Top sources: `(source, visitors)`.
    pub sources: Vec<(String, Value)>,
    /// `meta.privacy.mode` of the answers (`exact` or `dp`), when given.
    pub mode: String,
}

/// The request bodies of a digest's three questions (what the tests post to the API too).
pub fn questions(site: &str, week: NaiveDate) -> [Value; 3] {
    let range = json!([
        week.to_string(),
        (week + chrono::Duration::days(6)).to_string()
    ]);
    let top = |dim: &str| {
        json!({"site_id": site, "metrics": ["visitors"], "dimensions": [dim], "date_range": range,
               "order_by": [["visitors", "desc"]], "pagination": {"limit": TOP}})
    };
    [
        json!({"site_id": site, "metrics": ["visitors", "pageviews", "bounce_rate"],
               "date_range": range, "include": {"comparisons": {"mode": "previous_period"}}}),
        top("event:page"),
        top("visit:source"),
    ]
}

/// Asks the three questions as `digest:{user_id}`.
pub async fn numbers(
    agg: &Aggregator,
    site: &SiteView,
    week: NaiveDate,
    user_id: &str,
) -> Result<Numbers, Error> {
    let credential = format!("digest:{user_id}");
    let now = agg.now();
    let mut docs = Vec::new();
    for q in questions(&site.domain, week) {
        let shared = stats::Shared {
            asker: Some(stats::Asker {
                privacy: agg.privacy(),
                credential: &credential,
                now,
                share: 1.0,
            }),
            ..agg.shared()
        };
        let body = q.to_string();
        let (_, doc) = stats::run(agg.client(), site, body.as_bytes(), now, shared).await?;
        docs.push(doc);
    }
    let first = docs[0]["results"].get(0).cloned().unwrap_or(Value::Null);
    let cell = |v: &Value, i: usize| v.get(i).cloned().unwrap_or(Value::Null);
    let rows = |d: &Value| -> Vec<(String, Value)> {
        d["results"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .take(TOP)
                    .map(|r| {
                        let name = match &r["dimensions"][0] {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (name, cell(&r["metrics"], 0))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mode = docs[0]["meta"]["privacy"]["mode"]
        .as_str()
        .unwrap_or("exact")
        .to_string();
    Ok(Numbers {
        totals: [0, 1, 2].map(|i| cell(&first["metrics"], i)),
        changes: [0, 1, 2].map(|i| cell(&first["comparison"]["change"], i)),
        pages: rows(&docs[1]),
        sources: rows(&docs[2]),
        mode,
    })
}

/// A published number as the digest shows it: integers plain, others with one decimal,
/// withheld ones "—".
pub fn show(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
        None => "—".into(),
    }
}

/// A change as the digest shows it (`points`: the bounce rate's difference; else percent).
pub fn show_change(v: &Value, points: bool) -> String {
    match v.as_f64() {
        Some(x) => {
            let sign = if x > 0.0 { "+" } else { "" };
            let unit = if points { " points" } else { " %" };
            format!("{sign}{}{unit} on the week before", show(v))
        }
        None => "no comparison".into(),
    }
}

/// The digest e-mail of `numbers`.
pub fn compose(
    to: &str,
    site: &SiteView,
    week: NaiveDate,
    n: &Numbers,
    dashboard: &str,
    unsubscribe: &str,
) -> Mail {
    let last = week + chrono::Duration::days(6);
    let labels = ["Visitors", "Pageviews", "Bounce rate"];
    let value = |i: usize| {
        let s = show(&n.totals[i]);
        if i == 2 && s != "—" {
            format!("{s} %")
        } else {
            s
        }
    };
    let privacy = if n.mode == "dp" {
        "Numbers carry differential-privacy noise, as the dashboard's do."
    } else {
        "Numbers are the dashboard's own."
    };
    let mut text = format!(
        "Veil weekly digest: {}\nWeek {week} to {last} ({})\n\n",
        site.domain, site.timezone
    );
    for (i, l) in labels.iter().enumerate() {
        text += &format!(
            "{l}: {} ({})\n",
            value(i),
            show_change(&n.changes[i], i == 2)
        );
    }
    let list = |title: &str, rows: &[(String, Value)]| {
        let mut t = format!("\n{title}\n");
        if rows.is_empty() {
            t += "  (none)\n";
        }
        for (name, v) in rows {
            t += &format!("  {name}: {} visitors\n", show(v));
        }
        t
    };
    text += &list("Top pages", &n.pages);
    text += &list("Top sources", &n.sources);
    text += &format!(
        "\n{privacy} \"—\" is a number withheld because it describes too few visitors.\n\
         Dashboard: {dashboard}\nUnsubscribe from this digest: {unsubscribe}\n"
    );
    let e = html_text;
    let mut html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\">\
         <h1>Veil weekly digest: {}</h1><p>Week {week} to {last} ({})</p><table>",
        e(&site.domain),
        e(&site.timezone)
    );
    for (i, l) in labels.iter().enumerate() {
        html += &format!(
            "<tr><th align=\"left\">{l}</th><td>{}</td><td>{}</td></tr>",
            e(&value(i)),
            e(&show_change(&n.changes[i], i == 2))
        );
    }
    html += "</table>";
    let hlist = |title: &str, rows: &[(String, Value)]| {
        let mut h = format!("<h2>{title}</h2><table>");
        if rows.is_empty() {
            h += "<tr><td>(none)</td></tr>";
        }
        for (name, v) in rows {
            h += &format!(
                "<tr><td>{}</td><td>{} visitors</td></tr>",
                e(name),
                e(&show(v))
            );
        }
        h + "</table>"
    };
    html += &hlist("Top pages", &n.pages);
    html += &hlist("Top sources", &n.sources);
    html += &format!(
        "<p>{privacy} &ldquo;—&rdquo; is a number withheld because it describes too few visitors.</p>\
         <p><a href=\"{}\">Open the dashboard</a> · <a href=\"{}\">Unsubscribe from this digest</a></p>\
         </body></html>",
        e(dashboard),
        e(unsubscribe)
    );
    Mail {
        to: to.to_string(),
        subject: format!("{}: your week {week} to {last}", site.domain),
        text,
        html,
        unsubscribe: Some(unsubscribe.to_string()),
    }
}

/// Whether `user_id` may still read `site` (a removed person gets no digest).
fn can_read(agg: &Aggregator, user_id: &str, site: &str) -> Option<String> {
    let snap = agg.registry().snapshot();
    let user = snap.people.user(user_id)?;
    snap.people
        .roles_of(user_id)
        .iter()
        .any(|(s, _)| s == site || s == ALL_SITES)
        .then(|| user.email.clone())
}

/// Sends `rec`'s person the digest of the week starting `week` and records it.
async fn send_one(agg: &Aggregator, rec: DigestRecord, week: NaiveDate) -> Result<bool, Error> {
    let Some(mailer) = agg.mailer() else {
        return Ok(false);
    };
    let Some(site) = agg.site(&rec.site) else {
        return Ok(false);
    };
    let Some(email) = can_read(agg, &rec.user_id, &rec.site) else {
        return Ok(false);
    };
    let n = numbers(agg, &site, week, &rec.user_id).await?;
    let token = new_token()?;
    let unsubscribe = absolute(agg, &format!("{UNSUBSCRIBE_PATH}?token={token}"));
    let dashboard = absolute(agg, &format!("/site/{}", site.domain));
    let mail = compose(&email, &site, week, &n, &dashboard, &unsubscribe);
    mailer.send(mail).await?;
    agg.registry()
        .digest_sent(rec, &week.to_string(), &token)
        .await?;
    Ok(true)
}

/// Sends every digest due at the aggregator's time that was not sent yet; the number sent.
/// Failures are logged and retried on the next call.
pub async fn send_due(agg: &Aggregator) -> Result<usize, Error> {
    if agg.mailer().is_none() {
        return Ok(0);
    }
    let now = agg.now();
    let mut sent = 0;
    for rec in agg.registry().digests().await? {
        if !rec.subscribed {
            continue;
        }
        let Some(site) = agg.site(&rec.site) else {
            continue;
        };
        let week = due_week(now, query::timezone(&site.timezone));
        if rec.last_sent.as_str() >= week.to_string().as_str() {
            continue;
        }
        let site_name = rec.site.clone();
        match send_one(agg, rec, week).await {
            Ok(true) => sent += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(site = %site_name, error = %e, "a weekly digest failed; retrying later")
            }
        }
    }
    Ok(sent)
}

/// Runs [`send_due`] every `every` until the task is dropped (only useful with a mailer).
pub fn spawn_scheduler(agg: Aggregator, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = send_due(&agg).await {
                tracing::warn!(error = %e, "could not read the digest subscriptions");
            }
            tokio::time::sleep(every).await;
        }
    })
}

fn state(agg: &Aggregator, site: &str, rec: Option<&DigestRecord>) -> HttpResponse {
    json_response(
        StatusCode::OK,
        &json!({
            "site": site,
            "subscribed": rec.is_some_and(|r| r.subscribed),
            "last_sent": rec.map(|r| r.last_sent.clone()).filter(|s| !s.is_empty()),
            "email_configured": agg.mailer().is_some(),
        }),
    )
}

/// Answers `…/sites/{domain}/digest[/send]`; `None` for other paths.
pub(crate) async fn route(
    agg: &Aggregator,
    access: &Access,
    req: &Request<Bytes>,
    path: &str,
) -> Option<Result<HttpResponse, Error>> {
    let rest = path.strip_prefix("/api/v1/sites/")?;
    let (raw, sub) = rest.split_once('/')?;
    if sub != "digest" && sub != "digest/send" {
        return None;
    }
    Some(digest_route(agg, access, req, raw, sub).await)
}

async fn digest_route(
    agg: &Aggregator,
    access: &Access,
    req: &Request<Bytes>,
    raw: &str,
    sub: &str,
) -> Result<HttpResponse, Error> {
    let (site, _, _) = agg.scoped(access, raw)?;
    let m = req.method().clone();
    if sub == "digest/send" {
        if m != Method::POST {
            return Err(Error::MethodNotAllowed("POST"));
        }
        if !access.has(&site, Role::Admin) {
            return Err(Error::Forbidden(format!(
                "sending the digests of {site:?} now needs the admin role on it"
            )));
        }
        if agg.mailer().is_none() {
            return Err(Error::Conflict(
                "no e-mail is configured: start Veil with --smtp-url and --smtp-from".into(),
            ));
        }
        let view = agg
            .site(&site)
            .ok_or_else(|| Error::UnknownSite(site.clone()))?;
        let week = due_week(agg.now(), query::timezone(&view.timezone));
        let (mut sent, mut failed) = (0, 0);
        for rec in agg.registry().digests().await? {
            if rec.site != site || !rec.subscribed {
                continue;
            }
            match send_one(agg, rec, week).await {
                Ok(true) => sent += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(site = %site, error = %e, "a weekly digest failed");
                    failed += 1;
                }
            }
        }
        agg.audit(
            access,
            &site,
            "digest.send",
            json!({"week": week.to_string(), "sent": sent}),
        )
        .await;
        return Ok(json_response(
            StatusCode::OK,
            &json!({"week": [week.to_string(), (week + chrono::Duration::days(6)).to_string()],
                    "sent": sent, "failed": failed}),
        ));
    }
    let Access::User(p) = access else {
        return Err(Error::Forbidden(
            "weekly digests are a person's: log in to subscribe".into(),
        ));
    };
    let current = agg.registry().digest(&p.id, &site).await?;
    match m {
        Method::GET => Ok(state(agg, &site, current.as_ref())),
        Method::PUT => {
            let rec = match current {
                Some(r) if r.subscribed => r,
                other => {
                    let view = agg
                        .site(&site)
                        .ok_or_else(|| Error::UnknownSite(site.clone()))?;
                    // The week due now counts as sent: the first digest is the next Monday's.
                    let week = due_week(agg.now(), query::timezone(&view.timezone));
                    let r = DigestRecord {
                        user_id: p.id.clone(),
                        site: site.clone(),
                        subscribed: true,
                        token_hashes: other.map(|o| o.token_hashes).unwrap_or_default(),
                        last_sent: week.to_string(),
                        version: 0,
                    };
                    agg.registry().put_digest(r).await?
                }
            };
            Ok(state(agg, &site, Some(&rec)))
        }
        Method::DELETE => {
            let rec = match current {
                Some(r) if r.subscribed => {
                    let r = DigestRecord {
                        subscribed: false,
                        token_hashes: Vec::new(),
                        ..r
                    };
                    Some(agg.registry().put_digest(r).await?)
                }
                other => other,
            };
            Ok(state(agg, &site, rec.as_ref()))
        }
        _ => Err(Error::MethodNotAllowed("GET, PUT, DELETE")),
    }
}

fn page(status: StatusCode, title: &str, body: &str) -> HttpResponse {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{t}</title></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = html_text(title)
    );
    let mut r = bytes_response("text/html; charset=utf-8", None, html.into_bytes());
    *r.status_mut() = status;
    // A page with one form posting to itself: nothing else may load or run.
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; form-action 'self'; frame-ancestors 'none'"),
    );
    r
}

/// Answers [`UNSUBSCRIBE_PATH`] (no login: the token is the credential); `None` for others.
pub(crate) async fn public(
    agg: &Aggregator,
    req: &Request<Bytes>,
    path: &str,
) -> Option<Result<HttpResponse, Error>> {
    if path != UNSUBSCRIBE_PATH {
        return None;
    }
    let token = req
        .uri()
        .query()
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_default();
    Some(unsubscribe(agg, req.method(), &token).await)
}

async fn unsubscribe(agg: &Aggregator, m: &Method, token: &str) -> Result<HttpResponse, Error> {
    if m != Method::GET && m != Method::HEAD && m != Method::POST {
        return Err(Error::MethodNotAllowed("GET, POST"));
    }
    let rec = if token.is_empty() {
        None
    } else {
        agg.registry().digest_by_token(token).await?
    };
    let Some(rec) = rec else {
        return Ok(page(
            StatusCode::NOT_FOUND,
            "This link unsubscribes nothing",
            "<p>It was used already, or it comes from an old digest. Log in to Veil to manage \
             your digests.</p>",
        ));
    };
    let site = html_text(&rec.site);
    if m != Method::POST {
        let action = html_text(&format!("{UNSUBSCRIBE_PATH}?token={token}"));
        return Ok(page(
            StatusCode::OK,
            "Unsubscribe from the weekly digest?",
            &format!(
                "<p>You will get no more weekly digests of <b>{site}</b>.</p>\
                 <form method=\"post\" action=\"{action}\"><button type=\"submit\">Unsubscribe</button></form>"
            ),
        ));
    }
    let user = rec.user_id.clone();
    let site_name = rec.site.clone();
    agg.registry()
        .put_digest(DigestRecord {
            subscribed: false,
            token_hashes: Vec::new(),
            ..rec
        })
        .await?;
    let email = agg
        .registry()
        .snapshot()
        .people
        .user(&user)
        .map(|u| u.email.clone())
        .unwrap_or_default();
    agg.audit_as(
        &email,
        &site_name,
        "digest.unsubscribe",
        json!({"link": true}),
    )
    .await;
    Ok(page(
        StatusCode::OK,
        "Unsubscribed",
        &format!("<p>You will get no more weekly digests of <b>{site}</b>.</p>"),
    ))
}

/// The scheduler, for the binary: started when e-mail is configured.
pub fn start(agg: &Aggregator) -> Option<tokio::task::JoinHandle<()>> {
    agg.mailer()?;
    Some(spawn_scheduler(agg.clone(), DEFAULT_TICK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_week_due_turns_on_monday_at_eight_local() {
        let utc = chrono_tz::UTC;
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        // Monday 2026-11-30 07:59 UTC: still the week of 16–22 Nov; at 08:00, 23–29 Nov.
        assert_eq!(due_week(at("2026-11-30T07:59:59Z"), utc), d("2026-11-16"));
        assert_eq!(due_week(at("2026-11-30T08:00:00Z"), utc), d("2026-11-23"));
        assert_eq!(due_week(at("2026-12-06T23:00:00Z"), utc), d("2026-11-23"));
        // Berlin is UTC+1: 07:30 UTC is 08:30 there.
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            due_week(at("2026-11-30T07:30:00Z"), berlin),
            d("2026-11-23")
        );
        assert_eq!(
            due_week(at("2026-11-30T06:30:00Z"), berlin),
            d("2026-11-16")
        );
    }

    #[test]
    fn tracked_strings_are_text_in_the_html_part() {
        // Paths and sources are chosen by whoever sends events: never markup in the e-mail.
        let site = crate::site::view("a.com", &veil_schemas::registry::SiteSettings::default());
        let n = Numbers {
            totals: [json!(7), json!(9), Value::Null],
            changes: [json!(40), Value::Null, Value::Null],
            pages: vec![("/<script>alert(1)</script>".into(), json!(5))],
            sources: vec![("\"><img src=x onerror=alert(1)>".into(), json!(5))],
            mode: "exact".into(),
        };
        let week = NaiveDate::from_ymd_opt(2026, 11, 16).unwrap();
        let m = compose(
            "p@a.com",
            &site,
            week,
            &n,
            "https://v/site/a.com",
            "https://v/unsubscribe?token=vu_1",
        );
        assert!(
            !m.html.contains("<script>") && !m.html.contains("<img"),
            "{}",
            m.html
        );
        assert!(m.html.contains("&lt;script&gt;"));
        assert!(m.text.contains("/<script>alert(1)</script>: 5 visitors"));
        assert!(m.text.contains("Visitors: 7 (+40 % on the week before)"));
        assert!(
            m.text.contains("Bounce rate: — (no comparison)"),
            "{}",
            m.text
        );
        assert_eq!(m.subject, "a.com: your week 2026-11-16 to 2026-11-22");
        assert_eq!(
            m.unsubscribe.as_deref(),
            Some("https://v/unsubscribe?token=vu_1")
        );
    }

    #[test]
    fn numbers_show_plainly_and_withheld_ones_as_a_dash() {
        assert_eq!(show(&json!(12)), "12");
        assert_eq!(show(&json!(12.0)), "12");
        assert_eq!(show(&json!(41.25)), "41.2");
        assert_eq!(show(&Value::Null), "—");
        assert_eq!(
            show_change(&json!(-3), true),
            "-3 points on the week before"
        );
        assert_eq!(show_change(&json!(50), false), "+50 % on the week before");
    }
}
