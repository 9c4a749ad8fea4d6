//! `POST /v1/events` — Veil's native batch API, for server-side senders and apps.
//!
//! Wire format: a JSON array of events, or NDJSON (one event per line; any body not starting
//! with `[` is read as NDJSON). Each event:
//!
//! ```json
//! {"site":"example.com","name":"signup","url":"https://example.com/join","referrer":"https://news.example/",
//!  "timestamp":"2026-11-28T10:00:00Z","props":{"plan":"pro"},"ip":"203.0.113.9","user_agent":"Mozilla/5.0 …"}
//! ```
//!
//! `referrer`, `timestamp` (RFC 3339 or Unix seconds; default now; at most 7 days old), `props`,
//! `ip`, `user_agent` and `opt_out` are optional; `ip`/`user_agent` override the request's own (a
//! server forwarding its visitors' hits), and are hashed and dropped like any other;
//! `"opt_out": true` (an app's opt-out switch) and the request's `Sec-GPC: 1` / `DNT: 1` headers
//! mean the event is not stored (counted as `ignored`). Apps add
//! `"app": {"version", "build", "os", "os_version", "locale", "sdk", "session_id",
//! "device_model", "install_source", "debug"}`
//! (device class `app`; the session id is stored only as a salted hash); performance data goes
//! in `props` as numbers under the names docs/ARCHITECTURE.md lists (`launch_ms`, `latency_ms`,
//! `frame_drops`, `crash`).
//!
//! Answer: `202 {"accepted": N, "ignored": M, "rejected": [{"index": i, "error": "..."}]}` where
//! `ignored` counts valid events not stored by policy (unregistered site, bot). When no event
//! could be accepted because all were invalid the status is 400 with the same body. A batch
//! larger than `--max-events-per-batch` is 413. The accepted events of a batch are appended to
//! the spool as one all-or-nothing append: 202 means all of them are on disk; when the spool is
//! full the answer is 503 with `Retry-After` and none is stored.

use bytes::Bytes;
use http::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::ingest::{ingest, OnInvalid};
use crate::pipeline::privacy::Consent;
use crate::pipeline::{parse, AppFacts, Client, Incoming, TrackerFacts};
use crate::server::{json, HttpResponse};
use crate::{Collector, Error};

/// Endpoint label in metrics.
pub const ENDPOINT: &str = "native";

#[derive(Debug, Deserialize)]
struct Event {
    site: Option<String>,
    name: Option<String>,
    url: Option<String>,
    referrer: Option<String>,
    #[serde(default)]
    timestamp: Value,
    #[serde(default)]
    props: Value,
    ip: Option<String>,
    user_agent: Option<String>,
    #[serde(default)]
    opt_out: bool,
    /// App facts, for apps sending through the native API.
    #[serde(default)]
    app: Option<NativeApp>,
    engagement_ms: Option<u64>,
    scroll_depth: Option<u64>,
    screen_class: Option<String>,
    processor_class: Option<String>,
}

/// The `app` object of a native event.
#[derive(Debug, Default, Deserialize)]
struct NativeApp {
    version: Option<String>,
    build: Option<String>,
    os: Option<String>,
    os_version: Option<String>,
    locale: Option<String>,
    sdk: Option<String>,
    session_id: Option<String>,
    device_model: Option<String>,
    install_source: Option<String>,
    #[serde(default)]
    debug: bool,
}

fn split_body(bytes: &[u8], max: usize) -> Result<Vec<Value>, Error> {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return Err(Error::BadRequest(
            "empty body: expected a JSON array of events or NDJSON".into(),
        ));
    };
    let items: Vec<Value> = if bytes[start] == b'[' {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::BadRequest(format!("body is not a valid JSON array: {e}")))?
    } else {
        let mut out = Vec::new();
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v = serde_json::from_slice(line).map_err(|e| {
                Error::BadRequest(format!("NDJSON line {} is not valid JSON: {e}", i + 1))
            })?;
            out.push(v);
            if out.len() > max {
                break;
            }
        }
        out
    };
    if items.is_empty() {
        return Err(Error::BadRequest("the batch holds no events".into()));
    }
    if items.len() > max {
        return Err(Error::TooManyEvents { limit: max });
    }
    Ok(items)
}

fn to_incoming(v: Value, fallback: &Client, consent: Consent) -> Result<Incoming, Error> {
    if !v.is_object() {
        return Err(Error::BadRequest("event must be a JSON object".into()));
    }
    let e: Event =
        serde_json::from_value(v).map_err(|e| Error::BadRequest(format!("invalid field: {e}")))?;
    let site = e
        .site
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| Error::BadRequest("`site` is required".into()))?;
    let ip = match e.ip.as_deref() {
        Some(s) => Some(
            s.trim()
                .parse()
                .map_err(|_| Error::BadRequest("`ip` is not an IP address".into()))?,
        ),
        None => fallback.ip,
    };
    Ok(Incoming {
        domain: site,
        name: e.name.unwrap_or_default(),
        url: e.url.unwrap_or_default(),
        referrer: e.referrer,
        props: parse::props_from_json(&e.props)?,
        timestamp: parse::timestamp_from_json(&e.timestamp)?,
        hash_mode: false,
        browser_hit: false,
        consent: Consent {
            opt_out: e.opt_out,
            ..consent
        },
        app: match e.app {
            None => AppFacts::default(),
            Some(a) => AppFacts {
                is_app: true,
                locale: a.locale,
                app_version: a.version,
                app_build: a.build,
                sdk_version: a.sdk,
                os_name: a.os,
                os_version: a.os_version,
                is_debug: a.debug,
                session: a.session_id,
                device_model: a.device_model,
                install_source: a.install_source,
                ..Default::default()
            },
        },
        tracker: TrackerFacts {
            engagement_ms: e.engagement_ms,
            scroll_depth: e.scroll_depth,
            screen_class: e.screen_class,
            processor_class: e.processor_class,
            touch: false,
            ..Default::default()
        },
        client: Client {
            ip,
            // A forwarded user agent comes without its browser's hints.
            hints: if e.user_agent.is_some() {
                Default::default()
            } else {
                fallback.hints.clone()
            },
            user_agent: e.user_agent.unwrap_or_else(|| fallback.user_agent.clone()),
        },
    })
}

/// Handles one batch (the answer is in the module docs).
pub async fn handle(c: &Collector, req: Request<Bytes>) -> HttpResponse {
    let max = c.limits().max_events_per_batch;
    let items = match split_body(req.body(), max) {
        Ok(v) => v,
        Err(e) => return c.reject(&e),
    };
    let fallback = super::client(c, &req);
    let consent = Consent::from_headers(req.headers());
    let events = items
        .into_iter()
        .map(|v| to_incoming(v, &fallback, consent));
    // The whole batch goes to the spool as one append: all on disk, or none (503, retry).
    let tally = match ingest(c, ENDPOINT, c.now(), events, OnInvalid::Report).await {
        Ok(tally) => tally,
        Err(refused) => return refused,
    };
    let status = if tally.accepted == 0 && tally.ignored == 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::ACCEPTED
    };
    let rejected: Vec<Value> = tally
        .rejected
        .iter()
        .map(|(index, e)| json!({ "index": index, "error": e.to_string() }))
        .collect();
    json(
        status,
        &json!({ "accepted": tally.accepted, "ignored": tally.ignored, "rejected": rejected }),
    )
}
