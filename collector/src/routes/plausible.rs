//! `POST /api/event` — Plausible's Events API, so Plausible's trackers and server-side
//! integrations work by pointing them at Veil.
//!
//! Wire format: a JSON object, sent as `text/plain` (the browser tracker, to avoid a CORS
//! preflight) or `application/json`:
//!
//! ```json
//! {"n":"pageview","u":"https://example.com/a?utm_source=x","d":"example.com","r":"https://google.com/","p":{"plan":"pro"},"h":0}
//! ```
//!
//! Long names are accepted too (`name`, `url`, `domain`, `referrer`, `props`); `props` may be an
//! object or a JSON string of one (older trackers, also as `m`); `d` may list several
//! comma-separated domains (the event is recorded for each registered one). Engagement events
//! carry `e` (visible ms) and `sd` (scroll depth %); Veil's tracker adds `sc` (screen class:
//! mobile, tablet, laptop, desktop), `pc` (processor class: 1-2, 3-4, 5-8, 9-16, 17+ cores) and
//! `tp` (a touch screen: a "Mac" with one is an iPad). Revenue goals send
//! `"$": {"amount": "19.99", "currency": "EUR"}` (stored exactly, in millionths) and
//! non-interactive events `"i": false`.
//! The client IP comes
//! from the trusted headers or the peer, the user agent from `User-Agent`.
//! Answers `202 ok` — also for unregistered domains and bots, which are dropped and counted —
//! or 400 with `{"error": "..."}` naming the bad field.

use bytes::Bytes;
use http::{Request, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::ingest::{ingest, OnInvalid};
use crate::pipeline::privacy::Consent;
use crate::pipeline::{parse, AppFacts, Client, Incoming, TrackerFacts};
use crate::server::{text, HttpResponse};
use crate::{Collector, Error};

/// Endpoint label in metrics.
pub const ENDPOINT: &str = "plausible";

#[derive(Debug, Deserialize)]
struct Body {
    #[serde(alias = "n")]
    name: Option<String>,
    #[serde(alias = "u")]
    url: Option<String>,
    #[serde(alias = "d")]
    domain: Option<String>,
    #[serde(alias = "r")]
    referrer: Option<String>,
    #[serde(alias = "p", alias = "m", alias = "meta")]
    props: Option<Value>,
    #[serde(alias = "h")]
    hash_mode: Option<Value>,
    /// Engagement time in ms (engagement events).
    #[serde(alias = "e")]
    engagement_time: Option<u64>,
    /// Scroll depth percent.
    #[serde(alias = "sd")]
    scroll_depth: Option<u64>,
    /// Veil extension: screen class.
    #[serde(alias = "sc")]
    screen_class: Option<String>,
    /// Veil extension: processor class.
    #[serde(alias = "pc")]
    processor_class: Option<String>,
    /// Veil extension: a touch screen (iPadOS in desktop mode looks like a Mac otherwise).
    #[serde(alias = "tp")]
    touch: Option<Value>,
    /// Revenue: `{"amount": 19.99 | "19.99", "currency": "EUR"}`.
    #[serde(rename = "$", alias = "revenue")]
    revenue: Option<Value>,
    /// `false` for non-interactive events.
    #[serde(rename = "i", alias = "interactive")]
    interactive: Option<Value>,
}

fn truthy(v: &Option<Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0),
        Some(Value::String(s)) => matches!(s.as_str(), "1" | "true"),
        _ => false,
    }
}

fn parse_body(bytes: &[u8]) -> Result<Body, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::BadRequest(
            "empty body: expected a JSON object with `name`, `url` and `domain`".into(),
        ));
    }
    // Straight into `Body` (no `Value` tree first: one parse, no map of owned keys); on
    // failure, tell bad JSON, JSON that is not an object and a bad field apart.
    serde_json::from_slice::<Body>(bytes).map_err(|e| {
        use serde_json::error::Category;
        let syntax = matches!(e.classify(), Category::Syntax | Category::Eof);
        let object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if syntax {
            Error::BadRequest(format!("body is not valid JSON: {e}"))
        } else if !object {
            Error::BadRequest("body must be a JSON object".into())
        } else {
            Error::BadRequest(format!("invalid field: {e}"))
        }
    })
}

/// Parses a Plausible request body into one [`Incoming`] per listed domain (the wire format in
/// the module docs). `Err` names the bad field. Public so benchmarks measure this exact code.
pub fn to_incomings(
    bytes: &[u8],
    client: &Client,
    consent: Consent,
) -> Result<Vec<Incoming>, Error> {
    let body = parse_body(bytes)?;
    let props = body
        .props
        .as_ref()
        .map(parse::props_from_json)
        .transpose()?
        .unwrap_or_default();
    let domains: Vec<String> = body
        .domain
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect();
    if domains.is_empty() {
        return Err(Error::BadRequest("`domain` is required".into()));
    }
    let revenue = match &body.revenue {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            let amount = match m.get("amount") {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) => s.clone(),
                _ => return Err(Error::BadRequest("`$.amount` is required".into())),
            };
            let currency = m
                .get("currency")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            Some((amount, currency))
        }
        Some(_) => {
            return Err(Error::BadRequest(
                "`$` must be an object with amount and currency".into(),
            ))
        }
    };
    let tracker = TrackerFacts {
        engagement_ms: body.engagement_time,
        scroll_depth: body.scroll_depth,
        screen_class: body.screen_class.clone(),
        processor_class: body.processor_class.clone(),
        touch: truthy(&body.touch),
        revenue,
        non_interactive: matches!(body.interactive, Some(Value::Bool(false))),
    };
    let hash_mode = truthy(&body.hash_mode);
    let event = Incoming {
        domain: String::new(),
        name: body.name.unwrap_or_default(),
        url: body.url.unwrap_or_default(),
        referrer: body.referrer,
        props,
        timestamp: None,
        hash_mode,
        browser_hit: true,
        consent,
        app: AppFacts::default(),
        tracker,
        client: client.clone(),
    };
    // One event per listed domain; the last takes the parsed event itself (one domain: no copy).
    let mut out = Vec::with_capacity(domains.len());
    let mut domains = domains.into_iter().peekable();
    while let Some(domain) = domains.next() {
        if domains.peek().is_some() {
            out.push(Incoming {
                domain,
                ..event.clone()
            });
        } else {
            out.push(Incoming { domain, ..event });
            break;
        }
    }
    Ok(out)
}

/// Handles one Plausible event request: `202 ok` once its rows are on disk.
pub async fn handle(c: &Collector, req: Request<Bytes>) -> HttpResponse {
    let client = super::client(c, &req);
    let events = match to_incomings(req.body(), &client, Consent::from_headers(req.headers())) {
        Ok(evs) => evs,
        Err(e) => return c.reject_events(&e, ENDPOINT, 1),
    };
    let refuse = |_, e| e;
    let events = events.into_iter().map(Ok);
    match ingest(c, ENDPOINT, c.now(), events, OnInvalid::Refuse(&refuse)).await {
        Ok(_) => text(StatusCode::ACCEPTED, "ok"),
        Err(refused) => refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(body: &str) -> String {
        match parse_body(body.as_bytes()) {
            Err(Error::BadRequest(m)) => m,
            other => panic!("{body}: expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn a_bad_body_is_told_apart_from_a_bad_field() {
        assert!(error_of("{not json").starts_with("body is not valid JSON"));
        assert!(error_of("{\"n\":\"pageview\"} x").starts_with("body is not valid JSON"));
        assert_eq!(error_of("[1, 2]"), "body must be a JSON object");
        assert_eq!(error_of(" \"pageview\""), "body must be a JSON object");
        let m = error_of("{\"n\":\"pageview\",\"e\":\"soon\"}");
        assert!(m.starts_with("invalid field: "), "{m}");
        assert!(error_of("  ").starts_with("empty body"));
    }

    #[test]
    fn short_and_long_names_parse_into_the_same_body() {
        let short = parse_body(
            br#"{"n":"pageview","u":"https://a.example/x","d":"a.example","r":"https://r.example/","p":{"k":"v"},"e":1200,"i":false}"#,
        )
        .unwrap();
        let long = parse_body(
            br#"{"name":"pageview","url":"https://a.example/x","domain":"a.example","referrer":"https://r.example/","props":{"k":"v"},"engagement_time":1200,"interactive":false}"#,
        )
        .unwrap();
        for b in [&short, &long] {
            assert_eq!(b.name.as_deref(), Some("pageview"));
            assert_eq!(b.url.as_deref(), Some("https://a.example/x"));
            assert_eq!(b.domain.as_deref(), Some("a.example"));
            assert_eq!(b.referrer.as_deref(), Some("https://r.example/"));
            assert_eq!(b.props, Some(serde_json::json!({"k": "v"})));
            assert_eq!(b.engagement_time, Some(1200));
            assert_eq!(b.interactive, Some(Value::Bool(false)));
        }
    }
}
