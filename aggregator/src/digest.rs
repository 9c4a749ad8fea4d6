//! A person's e-mails about a site: the weekly and the monthly digest, and traffic-spike
//! notifications. A person subscribes on the dashboard; a scheduler sends each subscriber the
//! last full week's numbers every Monday and the last calendar month's on the 1st, both at
//! [`SEND_HOUR`]:00 in the site's time zone, and a spike notification when the site's current
//! visitors reach the person's threshold (at most one per [`SPIKE_QUIET`]); a link in every
//! e-mail unsubscribes from all of them without logging in. Storage:
//! [`veil_schemas::digests`] (`021_digests.sql`, `022_digest_options.sql`); sending:
//! [`crate::mail`].
//!
//! Every number of an e-mail is the Stats API's own answer, through the privacy module like
//! `POST /api/v2/query`; no SQL of its own. A digest asks five questions ([`questions`]):
//! totals (`visitors`, `pageviews`, `bounce_rate` with `previous_period` comparison), the top
//! [`TOP`] pages (`event:page`), the top [`TOP`] sources (`visit:source`) and visitors per day
//! (`time:day`) over the week (Monday to Sunday) or the month, and visitors per day over as
//! many days before it ([`previous_range`], what the totals are compared with). Visitors per
//! day is drawn as a chart ([`crate::chart`]): a 560×160 PNG
//! (1120×320 pixels, palette-indexed: 4–7 KB; a whole digest with it about 8 KB) sent inside
//! the e-mail (`multipart/related`, `<img src="cid:…">` with `width`/`height` and an alt text
//! giving the trend in numbers: first and last day, the highest, the period before), with
//! the numbers as lines of the text part; a series with no published number above zero (no
//! visitors, or every day withheld) has no image, and the e-mail says why instead.
//!
//! A spike check is the dashboard's Realtime ([`crate::reports::realtime`]: visitors of the
//! last 5 minutes, top pages of the last 30), one check per site for all its subscribers,
//! every scheduler tick while someone's threshold may be met. In differential-privacy mode
//! digests are charged to the credential `digest:{user id}` (six releases of ε_query each,
//! 3.0 at the default 0.5: totals and their comparison, top pages, top sources, the two daily
//! series; the daily series, 1.0, are what the chart costs), spike checks to
//! `alerts:{site}` (Realtime's five-minute windows: a window is charged once however often
//! it is checked), budgets of their own apart from the person's dashboard; when one is
//! spent for the day, that e-mail waits for the next day.
//! Numbers withheld by k-anonymity show as "—"; a withheld current-visitors count is no spike.
//!
//! A child-directed site keeps no visitors, sources or visits (only pageviews and events), so
//! its digest asks four questions in pageviews instead ([`questions_for`]): totals
//! (`pageviews`, `events`), top pages and pageviews per day over the period and the period
//! before; the e-mail says "pageviews" wherever a site's says "visitors".
//!
//! Wire format (JSON; errors `{"error": "…"}`):
//! - `GET /api/v1/sites/{domain}/digest` → `{"site", "subscribed", "weekly", "monthly",
//!   "spike_threshold", "last_sent", "last_sent_month", "email_configured"}` for the logged-in
//!   person (`subscribed` = `weekly`; a site key, link or the admin token: 403, e-mails are
//!   people's);
//! - `PUT …/digest` with `{"weekly"?: bool, "monthly"?: bool, "spike_threshold"?: 0…10000000}`
//!   changes what is given (a digest switched on starts with the next one due; threshold 0 is
//!   off); a `PUT` without any of them (no body, `{}`) subscribes to the weekly digest;
//!   `DELETE …/digest` ends every e-mail; all answer as `GET`;
//! - `POST …/digest/send?period=week|month` (role admin on the site; default `week`) → sends
//!   the last full week's (month's) digest to its subscribers now and records it as sent (the
//!   scheduler then skips it): `{"period", "week"|"month": ["YYYY-MM-DD", "YYYY-MM-DD"],
//!   "sent": N, "failed": N}`; 409 without `--smtp-url`;
//! - `GET /unsubscribe?token=T` (no login) → an HTML page naming the site with one button
//!   that POSTs to the same URL; never unsubscribes by itself (mail scanners and link
//!   previews fetch GET links); `POST /unsubscribe?token=T` → ends every e-mail about that site
//!   (the RFC 8058 one-click POST of a mail client's "unsubscribe" button lands here too) and
//!   says so; a token that opens nothing (used, unknown, older than the newest
//!   [`veil_schemas::digests::KEPT_TOKENS`] e-mails) is a 404 page saying so.
//!
//! Sending once: an e-mail's unsubscribe token is stored before it is sent (its link works as
//! soon as the e-mail can be read), and the e-mail is recorded (`last_sent` = the week's
//! Monday, `last_sent_month` = the month's 1st, `last_spike` = the time) after the SMTP relay
//! took it; the scheduler sends
//! a week or month whose first day is after the recorded one, so a restart does not send one
//! twice (a crash between the relay's "OK" and the record would; several aggregators with
//! `--smtp-url` each run the scheduler and may race on the same minute).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use http::{header, HeaderValue, Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use veil_schemas::digests::{new_token, DigestRecord, Sent};
use veil_schemas::people::{Role, ALL_SITES};

use crate::auth::Access;
use crate::http::{bytes_response, json_response, HttpResponse};
use crate::mail::{absolute, html_text, InlineImage, Mail};
use crate::site::SiteView;
use crate::{chart, query, reports, stats, Aggregator, Error};

/// The path of the unsubscribe page (outside `/api/`: a plain HTML form posts to it).
pub const UNSUBSCRIBE_PATH: &str = "/unsubscribe";
/// The local hour digests go out (Mondays for weeks, the 1st for months).
pub const SEND_HOUR: u32 = 8;
/// Rows of the top pages and top sources.
pub const TOP: usize = 5;
/// The least time between two spike notifications to one person about one site (seconds).
pub const SPIKE_QUIET: i64 = 12 * 3600;
/// The highest spike threshold a person may set.
pub const MAX_SPIKE_THRESHOLD: u32 = 10_000_000;

/// What a digest covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Monday to Sunday.
    Week,
    /// A calendar month.
    Month,
}

impl Period {
    /// `week` or `month`, as the API names it.
    pub fn name(self) -> &'static str {
        match self {
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    fn adjective(self) -> &'static str {
        match self {
            Period::Week => "weekly",
            Period::Month => "monthly",
        }
    }

    /// The last day of the period starting `first`.
    pub fn last_day(self, first: NaiveDate) -> NaiveDate {
        match self {
            Period::Week => first + chrono::Duration::days(6),
            Period::Month => first
                .checked_add_months(chrono::Months::new(1))
                .and_then(|d| d.pred_opt())
                .unwrap_or(first),
        }
    }

    /// The first day of the last full period whose digest is due at `now` in `tz`.
    pub fn due(self, now: DateTime<Utc>, tz: chrono_tz::Tz) -> NaiveDate {
        match self {
            Period::Week => due_week(now, tz),
            Period::Month => due_month(now, tz),
        }
    }
}

/// Whether `now` in `tz` is before [`SEND_HOUR`]:00 of its local day.
fn before_send_hour(local: chrono::NaiveDateTime) -> bool {
    local.time() < chrono::NaiveTime::MIN + chrono::Duration::hours(i64::from(SEND_HOUR))
}

/// The Monday of the last full week (Monday to Sunday) whose digest is due at `now` in `tz`:
/// from Monday [`SEND_HOUR`]:00 the week that ended the day before, until then the one
/// before it.
pub fn due_week(now: DateTime<Utc>, tz: chrono_tz::Tz) -> NaiveDate {
    let local = now.with_timezone(&tz).naive_local();
    let day = local.date();
    let monday = day - chrono::Duration::days(i64::from(day.weekday().num_days_from_monday()));
    let due_monday = if day == monday && before_send_hour(local) {
        monday - chrono::Duration::days(7)
    } else {
        monday
    };
    due_monday - chrono::Duration::days(7)
}

/// The 1st of the last full calendar month whose digest is due at `now` in `tz`: from the
/// 1st at [`SEND_HOUR`]:00 the month that ended the day before, until then the one before it.
pub fn due_month(now: DateTime<Utc>, tz: chrono_tz::Tz) -> NaiveDate {
    let local = now.with_timezone(&tz).naive_local();
    let day = local.date();
    let first = day.with_day(1).unwrap_or(day);
    let months = if day == first && before_send_hour(local) {
        2
    } else {
        1
    };
    first
        .checked_sub_months(chrono::Months::new(months))
        .unwrap_or(first)
}

/// The numbers of one digest, as the Stats API published them.
#[derive(Debug, Clone, PartialEq)]
pub struct Numbers {
    /// What the lists and the daily series count: `visitors`, or `pageviews` for a
    /// child-directed site (which keeps no visitors).
    pub unit: &'static str,
    /// `visitors`, `pageviews`, `bounce_rate` (null: withheld); a child-directed site's:
    /// `pageviews`, `events`, null.
    pub totals: [Value; 3],
    /// Their change against the period before (percent; points for the bounce rate).
    pub changes: [Value; 3],
    /// Top pages: `(page, visitors)`.
    pub pages: Vec<(String, Value)>,
    /// Top sources: `(source, visitors)`.
    pub sources: Vec<(String, Value)>,
    /// Visitors per day over the period, every day in order (empty: the answer had none).
    pub days: Vec<Day>,
    /// `meta.privacy.mode` of the answers (`exact` or `dp`), when given.
    pub mode: String,
}

/// One day of the visitors-per-day series, as the Stats API published it.
#[derive(Debug, Clone, PartialEq)]
pub struct Day {
    /// `YYYY-MM-DD` in the site's time zone.
    pub date: String,
    /// Its visitors (null: withheld).
    pub visitors: Value,
    /// The visitors of the day at the same place in the period before (null: none or
    /// withheld).
    pub previous: Value,
}

/// The days before the `period` starting `first` that it is compared with: as many days,
/// ending the day before (Plausible's `previous_period` of a range wholly past, what the
/// totals' comparison covers).
pub fn previous_range(period: Period, first: NaiveDate) -> (NaiveDate, NaiveDate) {
    let days = (period.last_day(first) - first).num_days() + 1;
    (
        first - chrono::Duration::days(days),
        first - chrono::Duration::days(1),
    )
}

/// The request bodies of a digest's five questions over the `period` starting `first`
/// (what the tests post to the API too): totals, top pages, top sources, visitors per day,
/// and visitors per day of the [`previous_range`].
pub fn questions(site: &str, period: Period, first: NaiveDate) -> [Value; 5] {
    let range = json!([first.to_string(), period.last_day(first).to_string()]);
    let (from, to) = previous_range(period, first);
    let top = |dim: &str| {
        json!({"site_id": site, "metrics": ["visitors"], "dimensions": [dim], "date_range": range,
               "order_by": [["visitors", "desc"]], "pagination": {"limit": TOP}})
    };
    let daily = |range: Value| {
        json!({"site_id": site, "metrics": ["visitors"], "dimensions": ["time:day"],
               "date_range": range, "include": {"time_labels": true}})
    };
    [
        json!({"site_id": site, "metrics": ["visitors", "pageviews", "bounce_rate"],
               "date_range": range, "include": {"comparisons": {"mode": "previous_period"}}}),
        top("event:page"),
        top("visit:source"),
        daily(range.clone()),
        daily(json!([from.to_string(), to.to_string()])),
    ]
}

/// The visitors of each day of a `time:day` answer, in order: one per label of
/// `meta.time_labels` (every day of the range). A day without a row had no visitors (exact
/// mode lists only days with some; dp mode lists every day); when the differencing guard
/// withheld the answer (`meta.too_few_visitors`), every day is withheld (null).
fn daily(doc: &Value) -> Vec<(String, Value)> {
    let withheld = doc["meta"]["too_few_visitors"].as_bool().unwrap_or(false);
    let rows = doc["results"].as_array().cloned().unwrap_or_default();
    let labels: Vec<String> = match doc["meta"]["time_labels"].as_array() {
        Some(ls) => ls.iter().map(label).collect(),
        None => rows.iter().map(|r| label(&r["dimensions"][0])).collect(),
    };
    labels
        .into_iter()
        .map(|date| {
            let row = rows.iter().find(|r| label(&r["dimensions"][0]) == date);
            let visitors = match row {
                Some(r) => r["metrics"].get(0).cloned().unwrap_or(Value::Null),
                None if withheld => Value::Null,
                None => json!(0),
            };
            (date, visitors)
        })
        .collect()
}

/// The visitors-per-day series of the digest's two `time:day` answers: the period's days
/// (`doc`), each with the day at the same place of the period before (`before`).
pub fn days_of(doc: &Value, before: &Value) -> Vec<Day> {
    let before = daily(before);
    daily(doc)
        .into_iter()
        .enumerate()
        .map(|(i, (date, visitors))| Day {
            date,
            visitors,
            previous: before.get(i).map(|(_, v)| v.clone()).unwrap_or(Value::Null),
        })
        .collect()
}

/// The privacy-module view of a question `credential` asks at `now`.
fn asked_as<'a>(agg: &'a Aggregator, credential: &'a str, now: DateTime<Utc>) -> stats::Shared<'a> {
    stats::Shared {
        asker: Some(stats::Asker {
            privacy: agg.privacy(),
            credential,
            now,
            share: 1.0,
        }),
        // Digests run one question at a time in the background: never refused as busy.
        heavy: None,
        ..agg.shared()
    }
}

/// A dimension value of an answer's row as text.
fn label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The questions of `site`'s digest over the `period` starting `first`: [`questions`], or
/// for a child-directed site its four in pageviews (totals of pageviews and events, top pages,
/// pageviews per day of the period and of the [`previous_range`]).
pub fn questions_for(site: &SiteView, period: Period, first: NaiveDate) -> Vec<Value> {
    if !site.child_directed {
        return questions(&site.domain, period, first).to_vec();
    }
    let domain = &site.domain;
    let range = json!([first.to_string(), period.last_day(first).to_string()]);
    let (from, to) = previous_range(period, first);
    let daily = |range: Value| {
        json!({"site_id": domain, "metrics": ["pageviews"], "dimensions": ["time:day"],
               "date_range": range, "include": {"time_labels": true}})
    };
    vec![
        json!({"site_id": domain, "metrics": ["pageviews", "events"], "date_range": range,
               "include": {"comparisons": {"mode": "previous_period"}}}),
        json!({"site_id": domain, "metrics": ["pageviews"], "dimensions": ["event:page"],
               "date_range": range, "order_by": [["pageviews", "desc"]],
               "pagination": {"limit": TOP}}),
        daily(range.clone()),
        daily(json!([from.to_string(), to.to_string()])),
    ]
}

/// Asks the questions of the `period` starting `first` ([`questions_for`]) as
/// `digest:{user_id}`.
pub async fn numbers(
    agg: &Aggregator,
    site: &SiteView,
    period: Period,
    first: NaiveDate,
    user_id: &str,
) -> Result<Numbers, Error> {
    let credential = format!("digest:{user_id}");
    let now = agg.now();
    let mut docs = Vec::new();
    for q in questions_for(site, period, first) {
        let body = q.to_string();
        let shared = asked_as(agg, &credential, now);
        let (_, doc) = stats::run(agg.client(), site, body.as_bytes(), now, shared).await?;
        docs.push(doc);
    }
    let first_row = docs[0]["results"].get(0).cloned().unwrap_or(Value::Null);
    let cell = |v: &Value, i: usize| v.get(i).cloned().unwrap_or(Value::Null);
    let rows = |d: &Value| -> Vec<(String, Value)> {
        d["results"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .take(TOP)
                    .map(|r| (label(&r["dimensions"][0]), cell(&r["metrics"], 0)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mode = docs[0]["meta"]["privacy"]["mode"]
        .as_str()
        .unwrap_or("exact")
        .to_string();
    let empty = Value::Null;
    let doc = |i: usize| docs.get(i).unwrap_or(&empty);
    if site.child_directed {
        return Ok(Numbers {
            unit: "pageviews",
            totals: [0, 1, 9].map(|i| cell(&first_row["metrics"], i)),
            changes: [0, 1, 9].map(|i| cell(&first_row["comparison"]["change"], i)),
            pages: rows(doc(1)),
            sources: Vec::new(),
            days: days_of(doc(2), doc(3)),
            mode,
        });
    }
    Ok(Numbers {
        unit: "visitors",
        totals: [0, 1, 2].map(|i| cell(&first_row["metrics"], i)),
        changes: [0, 1, 2].map(|i| cell(&first_row["comparison"]["change"], i)),
        pages: rows(doc(1)),
        sources: rows(doc(2)),
        days: days_of(doc(3), doc(4)),
        mode,
    })
}

/// A published number as an e-mail shows it: integers plain, others with one decimal,
/// withheld ones "—".
pub fn show(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
        None => "—".into(),
    }
}

/// A change as the digest shows it (`points`: the bounce rate's difference; else percent).
pub fn show_change(v: &Value, points: bool, period: Period) -> String {
    match v.as_f64() {
        Some(x) => {
            let sign = if x > 0.0 { "+" } else { "" };
            let unit = if points { " points" } else { " %" };
            format!("{sign}{}{unit} on the {} before", show(v), period.name())
        }
        None => "no comparison".into(),
    }
}

/// The sentence on the numbers' privacy, by the answers' mode.
fn privacy_note(mode: &str) -> &'static str {
    if mode == "dp" {
        "Numbers carry differential-privacy noise, as the dashboard's do."
    } else {
        "Numbers are the dashboard's own."
    }
}

/// A titled list of `(name, count)` rows counting `unit` (visitors, pageviews), as text and
/// as HTML.
fn lists(title: &str, rows: &[(String, Value)], unit: &str) -> (String, String) {
    let e = html_text;
    let mut t = format!("\n{title}\n");
    let mut h = format!("<h2>{}</h2><table>", e(title));
    if rows.is_empty() {
        t += "  (none)\n";
        h += "<tr><td>(none)</td></tr>";
    }
    for (name, v) in rows {
        t += &format!("  {name}: {} {unit}\n", show(v));
        h += &format!(
            "<tr><td>{}</td><td>{} {unit}</td></tr>",
            e(name),
            e(&show(v))
        );
    }
    (t, h + "</table>")
}

/// How a series moves: the mean of its second half against its first (known days only).
fn trend(values: &[f64]) -> &'static str {
    if values.len() < 2 {
        return "one day";
    }
    let half = values.len() / 2;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (a, b) = (mean(&values[..half]), mean(&values[values.len() - half..]));
    if b > a * 1.1 && b - a >= 1.0 {
        "rising"
    } else if b < a * 0.9 && a - b >= 1.0 {
        "falling"
    } else {
        "about level"
    }
}

/// The chart's alt text: what a reader who cannot see it should learn from it — the days'
/// trend with the first, last and highest day, withheld days, and the period before.
pub fn chart_alt(days: &[Day], period: Period) -> String {
    chart_alt_of(days, period, "visitors")
}

/// [`chart_alt`] of a series counting `unit` (visitors, pageviews).
fn chart_alt_of(days: &[Day], period: Period, unit: &str) -> String {
    let title = per_day(unit);
    let known: Vec<(&Day, f64)> = days
        .iter()
        .filter_map(|d| d.visitors.as_f64().map(|v| (d, v)))
        .collect();
    let (Some(first), Some(last)) = (known.first(), known.last()) else {
        return format!("{title}: every day withheld");
    };
    let high = known
        .iter()
        .fold(first, |a, b| if b.1 > a.1 { b } else { a });
    let values: Vec<f64> = known.iter().map(|(_, v)| *v).collect();
    let mut alt = format!(
        "{title}, {}: {} on {}, {} on {}, highest {} on {}",
        trend(&values),
        show(&first.0.visitors),
        first.0.date,
        show(&last.0.visitors),
        last.0.date,
        show(&high.0.visitors),
        high.0.date
    );
    let withheld = days.len() - known.len();
    if withheld > 0 {
        let s = if withheld == 1 { "" } else { "s" };
        alt += &format!(" ({withheld} day{s} withheld)");
    }
    let before: Vec<f64> = days.iter().filter_map(|d| d.previous.as_f64()).collect();
    if !before.is_empty() {
        let top = before.iter().fold(f64::MIN, |a, b| a.max(*b));
        alt += &format!(
            ". Dashed grey line: the {} before, {}, highest {}",
            period.name(),
            trend(&before),
            show(&json!(top))
        );
    }
    alt + "."
}

/// "Visitors per day" (or another `unit`'s).
fn per_day(unit: &str) -> String {
    let mut cs = unit.chars();
    let cap: String = cs
        .next()
        .map(|c| c.to_ascii_uppercase())
        .into_iter()
        .chain(cs)
        .collect();
    format!("{cap} per day")
}

/// The per-day section (visitors, or the `unit` counted): the text line, the HTML (the
/// chart's `<img>` or why there is none) and the chart's PNG to attach, if any.
fn chart_section(
    site: &SiteView,
    period: Period,
    first: NaiveDate,
    days: &[Day],
    unit: &str,
) -> (String, String, Option<InlineImage>) {
    let title = per_day(unit);
    let current: Vec<Option<f64>> = days.iter().map(|d| d.visitors.as_f64()).collect();
    let previous: Vec<Option<f64>> = days.iter().map(|d| d.previous.as_f64()).collect();
    let compared = previous.iter().any(Option::is_some);
    let list = |vs: Vec<String>| vs.join(", ");
    let mut text = format!(
        "
{title}: {}
",
        if days.is_empty() {
            "none".to_string()
        } else {
            list(days.iter().map(|d| show(&d.visitors)).collect())
        }
    );
    if compared {
        text += &format!(
            "The {} before: {}
",
            period.name(),
            list(days.iter().map(|d| show(&d.previous)).collect())
        );
    }
    let png = chart::visitors_png(&current, if compared { &previous } else { &[] });
    let e = html_text;
    let Some(png) = png else {
        let why = if current.iter().all(Option::is_none) && !days.is_empty() {
            format!("no chart: every day's number is withheld (too few {unit})")
        } else {
            format!("no chart: no {unit}")
        };
        return (text, format!("<h2>{title}</h2><p>{why}.</p>"), None);
    };
    // Unique within the message is enough (RFC 2392); the domain is kept to cid-safe bytes.
    let host: String = site
        .domain
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let content_id = format!("{unit}-{}-{first}@{host}", period.name());
    let html = format!(
        "<h2>{title}</h2><p><img src=\"cid:{}\" width=\"{}\" height=\"{}\" \
         alt=\"{}\" style=\"display:block;max-width:100%;height:auto;border:0\"></p>",
        e(&content_id),
        chart::WIDTH,
        chart::HEIGHT,
        e(&chart_alt_of(days, period, unit))
    );
    (text, html, Some(InlineImage { content_id, png }))
}

/// The closing lines of every e-mail: privacy, the dashboard and the unsubscribe link
/// (`few`: what a withheld number describes too few of — visitors, or a child-directed
/// site's events).
fn footer(mode: &str, dashboard: &str, unsubscribe: &str, few: &str) -> (String, String) {
    let privacy = privacy_note(mode);
    let e = html_text;
    (
        format!(
            "\n{privacy} \"—\" is a number withheld because it describes too few {few}.\n\
             Dashboard: {dashboard}\nUnsubscribe from this site's e-mails: {unsubscribe}\n"
        ),
        format!(
            "<p>{privacy} &ldquo;—&rdquo; is a number withheld because it describes too few {few}.</p>\
             <p><a href=\"{}\">Open the dashboard</a> · <a href=\"{}\">Unsubscribe from this site's e-mails</a></p>\
             </body></html>",
            e(dashboard),
            e(unsubscribe)
        ),
    )
}

/// The digest e-mail of `numbers` for the `period` starting `first`.
pub fn compose(
    to: &str,
    site: &SiteView,
    period: Period,
    first: NaiveDate,
    n: &Numbers,
    dashboard: &str,
    unsubscribe: &str,
) -> Mail {
    let last = period.last_day(first);
    let labels: &[&str] = if n.unit == "pageviews" {
        &["Pageviews", "Events"]
    } else {
        &["Visitors", "Pageviews", "Bounce rate"]
    };
    let value = |i: usize| {
        let s = show(&n.totals[i]);
        if i == 2 && s != "—" {
            format!("{s} %")
        } else {
            s
        }
    };
    let adjective = period.adjective();
    let heading = match period {
        Period::Week => "Week",
        Period::Month => "Month",
    };
    let mut text = format!(
        "Veil {adjective} digest: {}\n{heading} {first} to {last} ({})\n\n",
        site.domain, site.timezone
    );
    for (i, l) in labels.iter().enumerate() {
        text += &format!(
            "{l}: {} ({})\n",
            value(i),
            show_change(&n.changes[i], i == 2, period)
        );
    }
    let e = html_text;
    let mut html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\">\
         <h1>Veil {adjective} digest: {}</h1><p>{heading} {first} to {last} ({})</p><table>",
        e(&site.domain),
        e(&site.timezone)
    );
    for (i, l) in labels.iter().enumerate() {
        html += &format!(
            "<tr><th align=\"left\">{l}</th><td>{}</td><td>{}</td></tr>",
            e(&value(i)),
            e(&show_change(&n.changes[i], i == 2, period))
        );
    }
    html += "</table>";
    let (t, h, image) = chart_section(site, period, first, &n.days, n.unit);
    text += &t;
    html += &h;
    let lists_of: &[(&str, &Vec<(String, Value)>)] = if n.unit == "pageviews" {
        &[("Top pages", &n.pages)]
    } else {
        &[("Top pages", &n.pages), ("Top sources", &n.sources)]
    };
    for (title, rows) in lists_of {
        let (t, h) = lists(title, rows, n.unit);
        text += &t;
        html += &h;
    }
    let few = if site.child_directed {
        "events"
    } else {
        "visitors"
    };
    let (t, h) = footer(&n.mode, dashboard, unsubscribe, few);
    text += &t;
    html += &h;
    let subject = match period {
        Period::Week => format!("{}: your week {first} to {last}", site.domain),
        Period::Month => format!("{}: your month of {}", site.domain, first.format("%B %Y")),
    };
    Mail {
        to: to.to_string(),
        subject,
        text,
        html,
        unsubscribe: Some(unsubscribe.to_string()),
        images: image.into_iter().collect(),
    }
}

/// What a spike check found: the Realtime answer's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Spike {
    /// Current visitors (the last 5 minutes; events for a child-directed site).
    pub current: f64,
    /// Top pages of the last 30 minutes: `(page, visitors)`.
    pub pages: Vec<(String, Value)>,
    /// `exact` or `dp`.
    pub mode: String,
}

/// The spike notification e-mail for a person whose threshold is `threshold`.
pub fn compose_spike(
    to: &str,
    site: &SiteView,
    spike: &Spike,
    threshold: u32,
    dashboard: &str,
    unsubscribe: &str,
) -> Mail {
    let what = if site.child_directed {
        "events in the last 5 minutes"
    } else {
        "current visitors"
    };
    let n = show(&json!(spike.current));
    let e = html_text;
    let line = format!(
        "{} has {n} {what} (the last 5 minutes), at or above your alert of {threshold}.",
        site.domain
    );
    let mut text = format!("Veil traffic spike: {}\n\n{line}\n", site.domain);
    let mut html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\">\
         <h1>Traffic spike: {}</h1><p>{}</p>",
        e(&site.domain),
        e(&line)
    );
    let unit = if site.child_directed {
        "events"
    } else {
        "visitors"
    };
    let (t, h) = lists("Top pages (the last 30 minutes)", &spike.pages, unit);
    text += &t;
    html += &h;
    let (t, h) = footer(&spike.mode, dashboard, unsubscribe, unit);
    text += &t;
    html += &h;
    Mail {
        to: to.to_string(),
        subject: format!("Traffic spike on {}: {n} {what}", site.domain),
        text,
        html,
        unsubscribe: Some(unsubscribe.to_string()),
        images: Vec::new(),
    }
}

/// Whether `user_id` may still read `site` (a removed person gets no e-mail).
fn can_read(agg: &Aggregator, user_id: &str, site: &str) -> Option<String> {
    let snap = agg.registry().snapshot();
    let user = snap.people.user(user_id)?;
    snap.people
        .roles_of(user_id)
        .iter()
        .any(|(s, _)| s == site || s == ALL_SITES)
        .then(|| user.email.clone())
}

/// A new unsubscribe token and the links of an e-mail about `site` (`dashboard_path` after
/// the site's dashboard path).
fn links(agg: &Aggregator, site: &SiteView, dashboard_query: &str) -> Result<[String; 3], Error> {
    let token = new_token()?;
    let unsubscribe = absolute(agg, &format!("{UNSUBSCRIBE_PATH}?token={token}"));
    let dashboard = absolute(agg, &format!("/site/{}{dashboard_query}", site.domain));
    Ok([token, unsubscribe, dashboard])
}

/// Sends `rec`'s person the digest of the `period` starting `first` and records it.
async fn send_one(
    agg: &Aggregator,
    rec: DigestRecord,
    period: Period,
    first: NaiveDate,
) -> Result<bool, Error> {
    let Some(mailer) = agg.mailer() else {
        return Ok(false);
    };
    let Some(site) = agg.site(&rec.site) else {
        return Ok(false);
    };
    let Some(email) = can_read(agg, &rec.user_id, &rec.site) else {
        return Ok(false);
    };
    let n = numbers(agg, &site, period, first, &rec.user_id).await?;
    let [token, unsubscribe, dashboard] = links(agg, &site, "")?;
    let mail = compose(&email, &site, period, first, &n, &dashboard, &unsubscribe);
    // The link works before the e-mail exists (a reader may follow it at once).
    let rec = agg.registry().digest_token(rec, &token).await?;
    mailer.send(mail).await?;
    let sent = match period {
        Period::Week => Sent::Week(first.to_string()),
        Period::Month => Sent::Month(first.to_string()),
    };
    agg.registry().digest_sent(rec, sent).await?;
    Ok(true)
}

/// Whether `rec` asks for the `period`'s digest and has not had the one starting `first`.
fn digest_due(rec: &DigestRecord, period: Period, first: NaiveDate) -> bool {
    let (on, last) = match period {
        Period::Week => (rec.subscribed, &rec.last_sent),
        Period::Month => (rec.monthly, &rec.last_sent_month),
    };
    on && last.as_str() < first.to_string().as_str()
}

/// Sends every digest due at the aggregator's time that was not sent yet, then the spike
/// notifications due; the number of e-mails sent. Failures are logged and retried on the
/// next call.
pub async fn send_due(agg: &Aggregator) -> Result<usize, Error> {
    if agg.mailer().is_none() {
        return Ok(0);
    }
    let now = agg.now();
    let mut sent = 0;
    let recs = agg.registry().digests().await?;
    for rec in &recs {
        let Some(site) = agg.site(&rec.site) else {
            continue;
        };
        let tz = query::timezone(&site.timezone);
        for period in [Period::Week, Period::Month] {
            let first = period.due(now, tz);
            if !digest_due(rec, period, first) {
                continue;
            }
            // A week sent updates the row: the month reads the newest version.
            let current = match agg.registry().digest(&rec.user_id, &rec.site).await? {
                Some(r) if digest_due(&r, period, first) => r,
                _ => continue,
            };
            match send_one(agg, current, period, first).await {
                Ok(true) => sent += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    site = %rec.site, period = period.name(), error = %e,
                    "a digest failed; retrying later"
                ),
            }
        }
    }
    sent += send_spikes(agg, now).await?;
    Ok(sent)
}

/// Whether `rec` may get a spike notification at `now` (asked for, none in [`SPIKE_QUIET`]).
fn spike_may_send(rec: &DigestRecord, now: DateTime<Utc>) -> bool {
    rec.spike_threshold > 0 && now.timestamp() - i64::from(rec.last_spike) >= SPIKE_QUIET
}

/// Checks every site someone watches for spikes (once per site) and notifies each person
/// whose threshold the current visitors reach; the number of e-mails sent.
pub async fn send_spikes(agg: &Aggregator, now: DateTime<Utc>) -> Result<usize, Error> {
    let Some(mailer) = agg.mailer() else {
        return Ok(0);
    };
    let mut by_site: BTreeMap<String, Vec<DigestRecord>> = BTreeMap::new();
    for rec in agg.registry().digests().await? {
        if spike_may_send(&rec, now) {
            by_site.entry(rec.site.clone()).or_default().push(rec);
        }
    }
    let mut sent = 0;
    for (domain, recs) in by_site {
        let Some(site) = agg.site(&domain) else {
            continue;
        };
        let spike = match check_spike(agg, &site, now).await {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(site = %domain, error = %e, "a spike check failed; retrying later");
                continue;
            }
        };
        for rec in recs {
            if spike.current < f64::from(rec.spike_threshold) {
                continue;
            }
            let Some(email) = can_read(agg, &rec.user_id, &domain) else {
                continue;
            };
            let [token, unsubscribe, dashboard] = links(agg, &site, "?view=realtime")?;
            let threshold = rec.spike_threshold;
            let mail = compose_spike(&email, &site, &spike, threshold, &dashboard, &unsubscribe);
            let rec = agg.registry().digest_token(rec, &token).await?;
            if let Err(e) = mailer.send(mail).await {
                tracing::warn!(site = %domain, error = %e, "a spike notification failed; retrying later");
                continue;
            }
            let at = u32::try_from(now.timestamp()).unwrap_or(u32::MAX);
            agg.registry().digest_sent(rec, Sent::Spike(at)).await?;
            sent += 1;
        }
    }
    Ok(sent)
}

/// The site's current visitors and top pages, as its Realtime publishes them to
/// `alerts:{site}`; `None` when the count is withheld.
pub async fn check_spike(
    agg: &Aggregator,
    site: &SiteView,
    now: DateTime<Utc>,
) -> Result<Option<Spike>, Error> {
    let credential = format!("alerts:{}", site.domain);
    let rt = reports::realtime(agg.client(), site, now, asked_as(agg, &credential, now)).await?;
    let Some(current) = rt["visitors_5m"].as_f64() else {
        return Ok(None);
    };
    let pages = rt["top_pages"]
        .as_array()
        .into_iter()
        .flatten()
        .take(TOP)
        .map(|r| (label(&r["page"]), r["visitors"].clone()))
        .collect();
    let mode = rt["privacy"][0]["mode"]
        .as_str()
        .unwrap_or("exact")
        .to_string();
    Ok(Some(Spike {
        current,
        pages,
        mode,
    }))
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
    let weekly = rec.is_some_and(|r| r.subscribed);
    json_response(
        StatusCode::OK,
        &json!({
            "site": site,
            "subscribed": weekly,
            "weekly": weekly,
            "monthly": rec.is_some_and(|r| r.monthly),
            "spike_threshold": rec.map_or(0, |r| r.spike_threshold),
            "last_sent": rec.map(|r| r.last_sent.clone()).filter(|s| !s.is_empty()),
            "last_sent_month": rec.map(|r| r.last_sent_month.clone()).filter(|s| !s.is_empty()),
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
    let (raw, sub) = crate::http::site_route(path)?;
    if sub != "digest" && sub != "digest/send" {
        return None;
    }
    Some(digest_route(agg, access, req, raw, sub).await)
}

/// The body of `PUT …/digest`: what to change.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    weekly: Option<bool>,
    monthly: Option<bool>,
    spike_threshold: Option<u32>,
}

impl Options {
    fn parse(body: &[u8]) -> Result<Self, Error> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let o: Self = serde_json::from_slice(body).map_err(|e| {
            Error::BadRequest(format!(
                "the body must be {{\"weekly\"?: true|false, \"monthly\"?: true|false, \
                 \"spike_threshold\"?: N}}: {e}"
            ))
        })?;
        if o.spike_threshold.is_some_and(|t| t > MAX_SPIKE_THRESHOLD) {
            return Err(Error::BadRequest(format!(
                "spike_threshold must be 0 (no spike e-mails) or a number of current visitors \
                 up to {MAX_SPIKE_THRESHOLD}"
            )));
        }
        Ok(o)
    }
}

/// The period `?period=` of a send request names (default the week).
fn period_param(req: &Request<Bytes>) -> Result<Period, Error> {
    let given = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "period")
            .map(|(_, v)| v.into_owned())
    });
    match given.as_deref() {
        None | Some("week") => Ok(Period::Week),
        Some("month") => Ok(Period::Month),
        Some(other) => Err(Error::BadRequest(format!(
            "period must be \"week\" or \"month\", not {other:?}"
        ))),
    }
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
        let period = period_param(req)?;
        if agg.mailer().is_none() {
            return Err(Error::Conflict(
                "no e-mail is configured: start Veil with --smtp-url and --smtp-from".into(),
            ));
        }
        let view = agg
            .site(&site)
            .ok_or_else(|| Error::UnknownSite(site.clone()))?;
        let first = period.due(agg.now(), query::timezone(&view.timezone));
        let (mut sent, mut failed) = (0, 0);
        for rec in agg.registry().digests().await? {
            let on = match period {
                Period::Week => rec.subscribed,
                Period::Month => rec.monthly,
            };
            if rec.site != site || !on {
                continue;
            }
            match send_one(agg, rec, period, first).await {
                Ok(true) => sent += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(site = %site, period = period.name(), error = %e, "a digest failed");
                    failed += 1;
                }
            }
        }
        agg.audit(
            access,
            &site,
            "digest.send",
            json!({ "period": period.name(), period.name(): first.to_string(), "sent": sent }),
        )
        .await;
        return Ok(json_response(
            StatusCode::OK,
            &json!({"period": period.name(),
                    period.name(): [first.to_string(), period.last_day(first).to_string()],
                    "sent": sent, "failed": failed}),
        ));
    }
    let Access::User(p) = access else {
        return Err(Error::Forbidden(
            "e-mail digests and alerts are a person's: log in to subscribe".into(),
        ));
    };
    let current = agg.registry().digest(&p.id, &site).await?;
    match m {
        Method::GET => Ok(state(agg, &site, current.as_ref())),
        Method::PUT => {
            let mut o = Options::parse(req.body())?;
            if o.weekly.is_none() && o.monthly.is_none() && o.spike_threshold.is_none() {
                o.weekly = Some(true);
            }
            let view = agg
                .site(&site)
                .ok_or_else(|| Error::UnknownSite(site.clone()))?;
            let tz = query::timezone(&view.timezone);
            let mut rec = current.unwrap_or_else(|| DigestRecord {
                user_id: p.id.clone(),
                site: site.clone(),
                ..Default::default()
            });
            let before = rec.clone();
            // A digest switched on starts with the next one due: the one due now counts as sent.
            if let Some(w) = o.weekly {
                if w && !rec.subscribed {
                    rec.last_sent = due_week(agg.now(), tz).to_string();
                }
                rec.subscribed = w;
            }
            if let Some(mo) = o.monthly {
                if mo && !rec.monthly {
                    rec.last_sent_month = due_month(agg.now(), tz).to_string();
                }
                rec.monthly = mo;
            }
            if let Some(t) = o.spike_threshold {
                rec.spike_threshold = t;
            }
            if !rec.wants_mail() {
                rec.token_hashes.clear();
            }
            let rec = if rec == before {
                rec
            } else {
                agg.registry().put_digest(rec).await?
            };
            Ok(state(agg, &site, Some(&rec)))
        }
        Method::DELETE => {
            let rec = match current {
                Some(r) if r.wants_mail() => {
                    let r = DigestRecord {
                        subscribed: false,
                        monthly: false,
                        spike_threshold: 0,
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
            "Unsubscribe from this site's e-mails?",
            &format!(
                "<p>You will get no more e-mails about <b>{site}</b>: no weekly or monthly \
                 digests, no traffic-spike alerts.</p>\
                 <form method=\"post\" action=\"{action}\"><button type=\"submit\">Unsubscribe</button></form>"
            ),
        ));
    }
    let user = rec.user_id.clone();
    let site_name = rec.site.clone();
    agg.registry()
        .put_digest(DigestRecord {
            subscribed: false,
            monthly: false,
            spike_threshold: 0,
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
        &format!(
            "<p>You will get no more e-mails about <b>{site}</b>: no weekly or monthly \
             digests, no traffic-spike alerts.</p>"
        ),
    ))
}

/// The scheduler, for the binary: started when e-mail is configured.
pub fn start(agg: &Aggregator) -> Option<tokio::task::JoinHandle<()>> {
    agg.mailer()?;
    let every = Duration::from_secs(u64::from(agg.config().mail_check_secs.max(1)));
    Some(spawn_scheduler(agg.clone(), every))
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
    fn the_month_due_turns_on_the_first_at_eight_local() {
        let utc = chrono_tz::UTC;
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        // 1 Dec 2026 07:59 UTC: still October; at 08:00, November; all of December too.
        assert_eq!(due_month(at("2026-12-01T07:59:59Z"), utc), d("2026-10-01"));
        assert_eq!(due_month(at("2026-12-01T08:00:00Z"), utc), d("2026-11-01"));
        assert_eq!(due_month(at("2026-12-31T23:59:00Z"), utc), d("2026-11-01"));
        // Across a year, and in a time zone already in January.
        assert_eq!(due_month(at("2027-01-01T08:00:00Z"), utc), d("2026-12-01"));
        let tokyo: chrono_tz::Tz = "Asia/Tokyo".parse().unwrap();
        // 23:30 UTC on 31 Dec is 08:30 on 1 Jan in Tokyo: December is due there.
        assert_eq!(
            due_month(at("2026-12-31T23:30:00Z"), tokyo),
            d("2026-12-01")
        );
        assert_eq!(
            due_month(at("2026-12-31T22:30:00Z"), tokyo),
            d("2026-11-01")
        );
        assert_eq!(Period::Month.last_day(d("2026-02-01")), d("2026-02-28"));
        assert_eq!(Period::Month.last_day(d("2026-12-01")), d("2026-12-31"));
        assert_eq!(Period::Week.last_day(d("2026-11-16")), d("2026-11-22"));
    }

    #[test]
    fn a_spike_email_says_the_count_the_threshold_and_the_pages_as_text() {
        let site = crate::site::view("a.com", &veil_schemas::registry::SiteSettings::default());
        let spike = Spike {
            current: 42.0,
            pages: vec![("/<b>launch</b>".into(), json!(30))],
            mode: "exact".into(),
        };
        let m = compose_spike(
            "p@a.com",
            &site,
            &spike,
            40,
            "https://v/site/a.com?view=realtime",
            "https://v/unsubscribe?token=vu_2",
        );
        assert_eq!(m.subject, "Traffic spike on a.com: 42 current visitors");
        assert!(
            m.text.contains(
                "a.com has 42 current visitors (the last 5 minutes), at or above your alert of 40."
            ),
            "{}",
            m.text
        );
        assert!(
            m.text.contains("  /<b>launch</b>: 30 visitors"),
            "{}",
            m.text
        );
        assert!(
            m.html.contains("&lt;b&gt;launch") && !m.html.contains("<b>launch"),
            "{}",
            m.html
        );
        assert!(m.text.contains("https://v/unsubscribe?token=vu_2"));
    }

    #[test]
    fn tracked_strings_are_text_in_the_html_part() {
        // Paths and sources are chosen by whoever sends events: never markup in the e-mail.
        let site = crate::site::view("a.com", &veil_schemas::registry::SiteSettings::default());
        let n = Numbers {
            unit: "visitors",
            totals: [json!(7), json!(9), Value::Null],
            changes: [json!(40), Value::Null, Value::Null],
            pages: vec![("/<script>alert(1)</script>".into(), json!(5))],
            sources: vec![("\"><img src=x onerror=alert(1)>".into(), json!(5))],
            days: Vec::new(),
            mode: "exact".into(),
        };
        let week = NaiveDate::from_ymd_opt(2026, 11, 16).unwrap();
        let m = compose(
            "p@a.com",
            &site,
            Period::Week,
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
    fn a_child_directed_sites_digest_speaks_of_pageviews() {
        let mut site =
            crate::site::view("kids.com", &veil_schemas::registry::SiteSettings::default());
        site.child_directed = true;
        let n = Numbers {
            unit: "pageviews",
            totals: [json!(90), json!(95), Value::Null],
            changes: [json!(12), json!(10), Value::Null],
            pages: vec![("/games".into(), json!(60))],
            sources: Vec::new(),
            days: week_of(&vec![json!(10); 7], &vec![json!(8); 7]),
            mode: "exact".into(),
        };
        let week = NaiveDate::from_ymd_opt(2026, 11, 16).unwrap();
        let m = compose(
            "p@kids.com",
            &site,
            Period::Week,
            week,
            &n,
            "https://v/site/kids.com",
            "https://v/unsubscribe?token=vu_3",
        );
        for part in [&m.text, &m.html] {
            assert!(!part.contains("isitor"), "{part}");
            assert!(
                !part.contains("Top sources") && !part.contains("Bounce rate"),
                "{part}"
            );
            assert!(part.contains("Pageviews per day"), "{part}");
        }
        assert!(
            m.text.contains("Pageviews: 90 (+12 % on the week before)"),
            "{}",
            m.text
        );
        assert!(
            m.text.contains("Events: 95 (+10 % on the week before)"),
            "{}",
            m.text
        );
        assert!(m.text.contains("/games: 60 pageviews"), "{}", m.text);
        assert!(m.text.contains("too few events"), "{}", m.text);
        assert_eq!(m.images.len(), 1, "the chart of pageviews per day");
    }

    fn week_of(visitors: &[Value], previous: &[Value]) -> Vec<Day> {
        (0..7)
            .map(|i| Day {
                date: format!("2026-11-{}", 16 + i),
                visitors: visitors[i].clone(),
                previous: previous.get(i).cloned().unwrap_or(Value::Null),
            })
            .collect()
    }

    fn digest_of(days: Vec<Day>) -> Mail {
        let site = crate::site::view("a.com", &veil_schemas::registry::SiteSettings::default());
        let n = Numbers {
            unit: "visitors",
            totals: [json!(70), json!(90), json!(40)],
            changes: [json!(25), json!(10), json!(-2)],
            pages: Vec::new(),
            sources: Vec::new(),
            days,
            mode: "dp".into(),
        };
        let week = NaiveDate::from_ymd_opt(2026, 11, 16).unwrap();
        compose(
            "p@a.com",
            &site,
            Period::Week,
            week,
            &n,
            "https://v/s",
            "https://v/u",
        )
    }

    #[test]
    fn a_digest_shows_visitors_per_day_as_an_inline_chart_with_the_trend_in_words() {
        let now = [3, 5, 8, 9, 12, 15, 20].map(|v| json!(v));
        let before = [4, 4, 5, 4, 6, 5, 4].map(|v| json!(v));
        let m = digest_of(week_of(&now, &before));
        assert_eq!(m.images.len(), 1);
        let img = &m.images[0];
        assert_eq!(img.content_id, "visitors-week-2026-11-16@a.com");
        assert!(img.png.starts_with(b"\x89PNG\r\n\x1a\n"));
        let tag = format!(
            "<img src=\"cid:{}\" width=\"560\" height=\"160\" alt=\"",
            img.content_id
        );
        assert!(m.html.contains(&tag), "{}", m.html);
        assert!(
            m.html.contains(
                "alt=\"Visitors per day, rising: 3 on 2026-11-16, 20 on 2026-11-22, highest 20 on \
                 2026-11-22. Dashed grey line: the week before, about level, highest 6.\""
            ),
            "{}",
            m.html
        );
        assert!(
            m.text.contains(
                "Visitors per day: 3, 5, 8, 9, 12, 15, 20\nThe week before: 4, 4, 5, 4, 6, 5, 4\n"
            ),
            "{}",
            m.text
        );
    }

    #[test]
    fn a_withheld_or_empty_series_has_no_chart_and_the_email_says_why() {
        let m = digest_of(week_of(&vec![Value::Null; 7], &[]));
        assert!(m.images.is_empty());
        assert!(!m.html.contains("<img"), "{}", m.html);
        assert!(
            m.html
                .contains("no chart: every day's number is withheld (too few visitors)"),
            "{}",
            m.html
        );
        assert!(
            m.text.contains("Visitors per day: —, —, —, —, —, —, —\n"),
            "{}",
            m.text
        );
        let m = digest_of(week_of(&vec![json!(0); 7], &[]));
        assert!(m.images.is_empty());
        assert!(m.html.contains("no chart: no visitors"), "{}", m.html);
        // A withheld day is a gap, said in the alt text; no comparison, no grey line.
        let mut some = [5, 6, 7, 0, 8, 9, 9].map(|v| json!(v));
        some[3] = Value::Null;
        let m = digest_of(week_of(&some, &[]));
        assert_eq!(m.images.len(), 1);
        assert!(m.html.contains("(1 day withheld)."), "{}", m.html);
        assert!(!m.text.contains("The week before"), "{}", m.text);
    }

    #[test]
    fn the_daily_series_lists_every_day_of_the_answer() {
        // Exact mode lists only days with visitors: the others had none.
        let doc = json!({"results": [{"dimensions": ["2026-11-17"], "metrics": [4]}],
            "meta": {"time_labels": ["2026-11-16", "2026-11-17"], "too_few_visitors": false}});
        let before = json!({"results": [{"dimensions": ["2026-11-09"], "metrics": [2]}],
            "meta": {"time_labels": ["2026-11-09", "2026-11-10"], "too_few_visitors": false}});
        let days = days_of(&doc, &before);
        assert_eq!(days.len(), 2);
        assert_eq!(
            (days[0].visitors.clone(), days[0].previous.clone()),
            (json!(0), json!(2))
        );
        assert_eq!(
            (days[1].visitors.clone(), days[1].previous.clone()),
            (json!(4), json!(0))
        );
        // The differencing guard withheld an answer: every day of it withheld.
        let withheld = json!({"results": [], "meta": {"time_labels": ["2026-11-09", "2026-11-10"], "too_few_visitors": true}});
        let days = days_of(&doc, &withheld);
        assert_eq!(
            (days[1].visitors.clone(), days[1].previous.clone()),
            (json!(4), Value::Null)
        );
        assert_eq!(days_of(&withheld, &doc)[0].visitors, Value::Null);
        // The period before is as many days, ending the day before.
        let nov = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let d = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
        assert_eq!(previous_range(Period::Month, nov), (d(10, 2), d(10, 31)));
        assert_eq!(
            previous_range(Period::Week, d(11, 16)),
            (d(11, 9), d(11, 15))
        );
    }

    #[test]
    fn numbers_show_plainly_and_withheld_ones_as_a_dash() {
        assert_eq!(show(&json!(12)), "12");
        assert_eq!(show(&json!(12.0)), "12");
        assert_eq!(show(&json!(41.25)), "41.2");
        assert_eq!(show(&Value::Null), "—");
        assert_eq!(
            show_change(&json!(-3), true, Period::Week),
            "-3 points on the week before"
        );
        assert_eq!(
            show_change(&json!(50), false, Period::Month),
            "+50 % on the month before"
        );
    }
}
