//! The parse stage's helpers: what a sender wrote into typed facts.
//!
//! - Page URL → host, path (query string dropped: it often carries e-mail addresses, tokens or
//!   session ids; only the UTM tags are kept) and UTM tags.
//! - Referrer → scheme, host and path only, plus its source (host without `www.`); a referrer from
//!   the page's own host is a self-referral and is dropped.
//! - Custom properties: a JSON object of scalars → `(key, value)` strings, bounded in count and size.
//! - Timestamps: at most 7 days old and 5 minutes ahead of server time.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use url::Url;

use crate::config::Limits;
use crate::Error;

/// UTM tags from a page URL's query string.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Utm {
    /// `utm_source`, else `ref`, else `source`.
    pub source: String,
    /// `utm_medium`.
    pub medium: String,
    /// `utm_campaign`.
    pub campaign: String,
    /// `utm_content`.
    pub content: String,
    /// `utm_term`.
    pub term: String,
}

/// A parsed page URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Host, lower-case, without `www.`.
    pub hostname: String,
    /// Percent-decoded path, plus `#fragment` in hash mode.
    pub pathname: String,
    /// UTM tags.
    pub utm: Utm,
    /// The URL carried an ad click id (`gclid`, `fbclid`…): the visit is paid. The id itself is
    /// never kept.
    pub paid_click: bool,
}

const MAX_UTM_BYTES: usize = 500;

fn strip_www(host: &str) -> &str {
    host.strip_prefix("www.").unwrap_or(host)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Parses a page URL. Any absolute URL is accepted (`https://`, `app://` …); the message of the
/// error says what is wrong.
pub fn page(raw: &str, hash_mode: bool) -> Result<Page, Error> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(Error::BadRequest(
            "`url` is required (the page's full URL)".into(),
        ));
    }
    let url = Url::parse(raw)
        .map_err(|e| Error::BadRequest(format!("`url` is not an absolute URL: {e}")))?;
    let hostname = strip_www(&url.host_str().unwrap_or_default().to_ascii_lowercase()).to_string();
    let mut pathname = decode(url.path());
    if pathname.is_empty() {
        pathname.push('/');
    }
    if hash_mode {
        if let Some(f) = url.fragment() {
            pathname.push('#');
            pathname.push_str(&decode(f));
        }
    }
    let mut utm = Utm::default();
    let (mut r#ref, mut source) = (String::new(), String::new());
    let mut paid_click = false;
    for (k, v) in url.query_pairs() {
        let v = truncate(v.into_owned(), MAX_UTM_BYTES);
        match k.as_ref() {
            "utm_source" => utm.source = v,
            "utm_medium" => utm.medium = v,
            "utm_campaign" => utm.campaign = v,
            "utm_content" => utm.content = v,
            "utm_term" => utm.term = v,
            "ref" => r#ref = v,
            "source" => source = v,
            k if crate::pipeline::sources::CLICK_IDS.contains(&k) => paid_click = true,
            _ => {}
        }
    }
    if utm.source.is_empty() {
        utm.source = if r#ref.is_empty() { source } else { r#ref };
    }
    Ok(Page {
        hostname,
        pathname,
        utm,
        paid_click,
    })
}

/// The allow-listed query parameters of `raw` as `?k=v&…` (in allow-list order), or empty.
/// For sites that choose to keep, say, `page` or `q` (`--site-query-param`); still scrubbed.
pub fn kept_query(raw: &str, allowed: &[String]) -> String {
    let Ok(url) = Url::parse(raw.trim()) else {
        return String::new();
    };
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for name in allowed {
        for (k, v) in pairs.iter().filter(|(k, _)| k == name) {
            out.append_pair(k, &truncate(v.clone(), MAX_UTM_BYTES));
            any = true;
        }
    }
    if any {
        format!("?{}", out.finish())
    } else {
        String::new()
    }
}

/// Checks a revenue amount and currency: the amount (a number or a numeric string, up to
/// ±10¹² units) becomes millionths of the unit; the currency must be three letters (ISO 4217).
pub fn revenue(amount: &str, currency: &str) -> Result<(i64, String), Error> {
    let cur = currency.trim().to_ascii_uppercase();
    if cur.len() != 3 || !cur.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::BadRequest(
            "`$.currency` must be a three-letter ISO 4217 code".into(),
        ));
    }
    let a: f64 = amount
        .trim()
        .parse()
        .map_err(|_| Error::BadRequest("`$.amount` must be a number".into()))?;
    if !a.is_finite() || a.abs() > 1e12 {
        return Err(Error::BadRequest("`$.amount` is out of range".into()));
    }
    Ok(((a * 1_000_000.0).round() as i64, cur))
}

/// A cleaned referrer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Referrer {
    /// `scheme://host/path`, no query or fragment; empty when none or self-referral.
    pub url: String,
    /// Host without `www.`.
    pub source: String,
}

/// Cleans a referrer; invalid, non-web and self-referrals become empty (never an error:
/// browsers send what they send).
pub fn referrer(raw: Option<&str>, page_host: &str) -> Referrer {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Referrer::default();
    };
    let Ok(url) = Url::parse(raw) else {
        return Referrer::default();
    };
    if !matches!(url.scheme(), "http" | "https" | "android-app") {
        return Referrer::default();
    }
    let Some(host) = url.host_str().map(|h| h.to_ascii_lowercase()) else {
        return Referrer::default();
    };
    let source = strip_www(&host).to_string();
    if source == page_host {
        return Referrer::default();
    }
    let url = truncate(
        format!("{}://{}{}", url.scheme(), host, decode(url.path())),
        2000,
    );
    Referrer { url, source }
}

/// Flattens a JSON props value (object of scalars, or a string holding one — older Plausible
/// trackers send that) into pairs. `null` values are skipped; nested objects and arrays are an
/// error naming the key.
pub fn props_from_json(v: &Value) -> Result<Vec<(String, String)>, Error> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.trim().is_empty() => Ok(Vec::new()),
        Value::String(s) => {
            let inner: Value = serde_json::from_str(s).map_err(|e| {
                Error::BadRequest(format!("`props` is a string but not a JSON object: {e}"))
            })?;
            match inner {
                Value::Object(_) => props_from_json(&inner),
                _ => Err(Error::BadRequest("`props` must be a JSON object".into())),
            }
        }
        Value::Object(map) => {
            let mut out = Vec::with_capacity(map.len());
            for (k, v) in map {
                let val = match v {
                    Value::Null => continue,
                    Value::String(s) => s.clone(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    Value::Array(_) | Value::Object(_) => {
                        return Err(Error::BadRequest(format!(
                        "`props.{k}` must be a string, number or boolean, not an array or object"
                    )))
                    }
                };
                out.push((k.clone(), val));
            }
            Ok(out)
        }
        _ => Err(Error::BadRequest("`props` must be a JSON object".into())),
    }
}

/// Enforces the props limits: count, key and value sizes, no empty keys.
pub fn check_props(
    props: Vec<(String, String)>,
    limits: &Limits,
) -> Result<Vec<(String, String)>, Error> {
    if props.len() > limits.max_props {
        return Err(Error::BadRequest(format!(
            "too many props: {} (limit {})",
            props.len(),
            limits.max_props
        )));
    }
    for (k, v) in &props {
        if k.trim().is_empty() {
            return Err(Error::BadRequest("a props key is empty".into()));
        }
        if k.len() > limits.max_prop_key_bytes {
            return Err(Error::BadRequest(format!(
                "props key longer than {} bytes",
                limits.max_prop_key_bytes
            )));
        }
        if v.len() > limits.max_prop_value_bytes {
            return Err(Error::BadRequest(format!(
                "`props.{k}` is longer than {} bytes",
                limits.max_prop_value_bytes
            )));
        }
    }
    Ok(props)
}

/// How far in the past a sender-supplied timestamp may be by default (`--max-event-age`).
pub const MAX_PAST: Duration = Duration::days(7);
/// How far in the future a sender-supplied timestamp may be (clock skew).
pub const MAX_FUTURE: Duration = Duration::minutes(5);

/// Checks a sender-supplied timestamp with the default age limit; `None` means now.
pub fn check_timestamp(
    ts: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, Error> {
    check_timestamp_within(ts, now, MAX_PAST)
}

/// Checks a sender-supplied timestamp: at most `max_past` old (apps send late when offline);
/// more than 5 minutes ahead (a device clock running fast) is clamped to now; `None` means now.
pub fn check_timestamp_within(
    ts: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    max_past: Duration,
) -> Result<DateTime<Utc>, Error> {
    let Some(ts) = ts else { return Ok(now) };
    if ts < now - max_past {
        return Err(Error::BadRequest(format!(
            "`timestamp` is older than the accepted {} hours (--max-event-age)",
            max_past.num_hours()
        )));
    }
    // Clock skew: a device clock running ahead is clamped to now, never rejected.
    if ts > now + MAX_FUTURE {
        return Ok(now);
    }
    Ok(ts)
}

/// Parses a timestamp: RFC 3339 string or Unix seconds (integer or float).
pub fn timestamp_from_json(v: &Value) -> Result<Option<DateTime<Utc>>, Error> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| Error::BadRequest(format!("`timestamp` is not RFC 3339 ({e})"))),
        Value::Number(n) => {
            let secs = n.as_f64().unwrap_or(f64::NAN);
            if !secs.is_finite() || !(0.0..=4_000_000_000.0).contains(&secs) {
                return Err(Error::BadRequest("`timestamp` must be Unix seconds".into()));
            }
            Ok(DateTime::from_timestamp(secs as i64, 0))
        }
        _ => Err(Error::BadRequest(
            "`timestamp` must be an RFC 3339 string or Unix seconds".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn page_drops_query_but_keeps_utm() {
        let p = page("https://www.Example.com/blog/%C3%A9t%C3%A9?email=a@b.c&utm_source=news&utm_campaign=x#top", false).unwrap();
        assert_eq!(p.hostname, "example.com");
        assert_eq!(p.pathname, "/blog/été");
        assert_eq!(p.utm.source, "news");
        assert_eq!(p.utm.campaign, "x");
        let p = page("https://example.com/#/settings", true).unwrap();
        assert_eq!(p.pathname, "/#/settings");
        let p = page("https://example.com?ref=producthunt", false).unwrap();
        assert_eq!(p.pathname, "/");
        assert_eq!(p.utm.source, "producthunt");
    }

    #[test]
    fn only_allowed_query_params_are_kept() {
        let allowed = vec!["q".to_string(), "page".to_string()];
        assert_eq!(
            kept_query("https://a.com/s?session=x&page=2&q=red+shoes", &allowed),
            "?q=red+shoes&page=2"
        );
        assert_eq!(kept_query("https://a.com/s?session=x", &allowed), "");
    }

    #[test]
    fn revenue_is_exact_and_checked() {
        assert_eq!(
            revenue("19.99", "eur").unwrap(),
            (19_990_000, "EUR".to_string())
        );
        assert_eq!(revenue("0.1", "USD").unwrap().0, 100_000);
        assert!(revenue("x", "USD")
            .unwrap_err()
            .to_string()
            .contains("$.amount"));
        assert!(revenue("1", "dollars")
            .unwrap_err()
            .to_string()
            .contains("$.currency"));
    }

    #[test]
    fn page_errors_say_what_is_wrong() {
        assert!(page("", false)
            .unwrap_err()
            .to_string()
            .contains("required"));
        assert!(page("/relative", false)
            .unwrap_err()
            .to_string()
            .contains("absolute URL"));
    }

    #[test]
    fn referrer_cleaning() {
        let r = referrer(
            Some("https://www.google.com/search?q=secret"),
            "example.com",
        );
        assert_eq!(r.url, "https://www.google.com/search");
        assert_eq!(r.source, "google.com");
        assert_eq!(
            referrer(Some("https://example.com/other"), "example.com"),
            Referrer::default()
        );
        assert_eq!(
            referrer(Some("javascript:alert(1)"), "example.com"),
            Referrer::default()
        );
        assert_eq!(
            referrer(Some("not a url"), "example.com"),
            Referrer::default()
        );
        assert_eq!(referrer(None, "example.com"), Referrer::default());
    }

    #[test]
    fn props_flatten_and_reject_nesting() {
        let p = props_from_json(&json!({"plan": "pro", "seats": 3, "trial": false, "x": null}))
            .unwrap();
        assert_eq!(p.len(), 3);
        assert!(p.contains(&("seats".into(), "3".into())));
        let p = props_from_json(&json!("{\"a\":\"b\"}")).unwrap();
        assert_eq!(p, vec![("a".to_string(), "b".to_string())]);
        let e = props_from_json(&json!({"deep": {"x": 1}}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("props.deep"), "{e}");
        assert!(props_from_json(&json!([1, 2])).is_err());
    }

    #[test]
    fn props_limits() {
        let l = Limits {
            max_props: 2,
            ..Limits::default()
        };
        let many = vec![
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("c".into(), "3".into()),
        ];
        assert!(check_props(many, &l)
            .unwrap_err()
            .to_string()
            .contains("too many props"));
        let long = vec![("a".into(), "x".repeat(3000))];
        assert!(check_props(long, &Limits::default())
            .unwrap_err()
            .to_string()
            .contains("props.a"));
    }

    #[test]
    fn timestamps() {
        let now = Utc::now();
        assert_eq!(check_timestamp(None, now).unwrap(), now);
        assert!(check_timestamp(Some(now - Duration::days(8)), now).is_err());
        assert_eq!(
            check_timestamp(Some(now + Duration::minutes(10)), now).unwrap(),
            now,
            "the future is clamped"
        );
        let two_days = Some(now - Duration::days(2));
        assert!(check_timestamp_within(two_days, now, Duration::days(1))
            .unwrap_err()
            .to_string()
            .contains("--max-event-age"));
        assert!(check_timestamp_within(two_days, now, Duration::days(3)).is_ok());
        assert!(timestamp_from_json(&json!("2024-01-02T03:04:05Z"))
            .unwrap()
            .is_some());
        assert!(timestamp_from_json(&json!(1700000000)).unwrap().is_some());
        assert!(timestamp_from_json(&json!("yesterday")).is_err());
        assert!(timestamp_from_json(&json!(-5)).is_err());
    }
}
