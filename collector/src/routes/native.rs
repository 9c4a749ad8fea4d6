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
//! server forwarding its visitors' hits), and are hashed and dropped like any other.
//!
//! **Overrides need a trusted sender.** An event that sets `ip` or `user_agent`, or a
//! `timestamp` more than [`MAX_UNKEYED_AGE`] before now, is accepted only
//! - with the site's **ingest key**: `Authorization: Bearer vi_…` (write-only, one site, made
//!   with `POST /api/v1/sites/{domain}/ingest-keys`, stored hashed in the registry); the key
//!   covers events of its own site (or an alias of it) only; or
//! - from a `--trusted-sender` network (default loopback): the client IP (after
//!   `--trusted-proxy` resolution) is in it and the request carries no `Origin` header (a
//!   browser always sends one with a POST, so a page in a browser on the same machine is no
//!   trusted sender).
//!
//! A request handed over in-process (no socket peer: embedding code, benches) is the program's
//! own and trusted. Keys are looked up in this process's registry snapshot (a key made on
//! another process works here within one refresh, ~2 s; never a ClickHouse read per request).
//! Otherwise the whole batch is `403 {"error": "…"}` naming the first such event and field,
//! and nothing is stored. An `Authorization` header that is not a valid ingest key (unknown,
//! revoked, a read key) is a 403 as well. Events without overrides need neither: browser
//! beacons and apps sending fresh events are unchanged.
//!
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

use std::net::IpAddr;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{header, Request, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::ingest::{ingest, OnInvalid};
use crate::pipeline::privacy::Consent;
use crate::pipeline::{parse, AppFacts, Client, Incoming, TrackerFacts};
use crate::server::{json, HttpResponse, PeerAddr};
use crate::{Collector, Error};

/// Endpoint label in metrics.
pub const ENDPOINT: &str = "native";

/// The oldest `timestamp` an event may carry without an ingest key or a trusted sender:
/// later than this before now is a fresh event (a sender's clock may be a little off), earlier
/// is back-dating.
pub const MAX_UNKEYED_AGE: chrono::Duration = chrono::Duration::seconds(60);

/// Who sent a batch, as far as overrides are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sender {
    /// A `--trusted-sender` client that is not a browser, or an in-process caller (no peer).
    Trusted,
    /// A valid ingest key of this site.
    Key(String),
    /// Anyone else: no overrides.
    Untrusted,
}

/// The sender of `req` (module docs); `Err` for an `Authorization` that is no valid ingest key.
fn sender(c: &Collector, req: &Request<Bytes>) -> Result<Sender, Error> {
    if let Some(auth) = req.headers().get(header::AUTHORIZATION) {
        let given = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        let refused = || {
            Error::Forbidden(
                "the Authorization header holds no valid ingest key (unknown, revoked, or not an \
                 ingest key: send `Authorization: Bearer vi_…` from POST /api/v1/sites/{domain}/ingest-keys)"
                    .into(),
            )
        };
        if !given.starts_with("vi_") {
            return Err(refused());
        }
        let hash = veil_schemas::registry::secret_hash(given);
        let key = c
            .sites()
            .store()
            .and_then(|r| r.snapshot().ingest_key_by_hash(&hash).cloned());
        return match key {
            Some(k) if !k.revoked => Ok(Sender::Key(k.site)),
            _ => Err(refused()),
        };
    }
    let peer = req.extensions().get::<PeerAddr>();
    if peer.is_none() {
        return Ok(Sender::Trusted);
    }
    let ip: Option<IpAddr> = super::request_ip(c, req);
    let trusted = ip.is_some_and(|ip| c.trusted_senders().iter().any(|n| n.contains(&ip)));
    let browser = req.headers().contains_key(header::ORIGIN);
    Ok(if trusted && !browser {
        Sender::Trusted
    } else {
        Sender::Untrusted
    })
}

/// The override an event makes that needs a trusted sender, if any: `ip`, `user_agent` or a
/// back-dated `timestamp`.
fn override_of(v: &Value, now: DateTime<Utc>) -> Option<&'static str> {
    let set = |k: &str| v.get(k).is_some_and(|x| !x.is_null());
    if set("ip") {
        return Some("ip");
    }
    if set("user_agent") {
        return Some("user_agent");
    }
    let ts = v.get("timestamp").unwrap_or(&Value::Null);
    back_dated(ts, now).then_some("timestamp")
}

/// Whether an event's `timestamp` lies more than [`MAX_UNKEYED_AGE`] before now (an
/// unparseable one does not: the event is rejected for it later).
fn back_dated(ts: &Value, now: DateTime<Utc>) -> bool {
    matches!(parse::timestamp_from_json(ts), Ok(Some(t)) if t < now - MAX_UNKEYED_AGE)
}

/// The override an event parsed into [`Event`] makes, as [`override_of`] reads it from JSON.
fn event_override(e: &Event, now: DateTime<Utc>) -> Option<&'static str> {
    if e.ip.is_some() {
        return Some("ip");
    }
    if e.user_agent.is_some() {
        return Some("user_agent");
    }
    back_dated(&e.timestamp, now).then_some("timestamp")
}

/// The override one event of a batch makes and the site it names: from the parsed event, or,
/// for an event that did not parse, from its JSON.
fn item_override(item: &Item<'_>, now: DateTime<Utc>) -> Option<(&'static str, String)> {
    match item {
        (_, Ok(e)) => {
            event_override(e, now).map(|field| (field, e.site.clone().unwrap_or_default()))
        }
        (None, Err(_)) => None,
        (Some(raw), Err(_)) => {
            let v = serde_json::from_str::<Value>(raw.get()).ok()?;
            let field = override_of(&v, now)?;
            let site = v.get("site").and_then(Value::as_str).unwrap_or_default();
            Some((field, site.to_string()))
        }
    }
}

/// Refuses the batch when an event makes an override its sender may not make. An event that
/// did not parse (it is rejected later) is read as plain JSON for this, so that an override in
/// an otherwise invalid event still refuses the batch.
fn check_overrides(
    c: &Collector,
    sender: &Sender,
    items: &[Item<'_>],
    now: DateTime<Utc>,
) -> Result<(), Error> {
    if *sender == Sender::Trusted {
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        let Some((field, site)) = item_override(item, now) else {
            continue;
        };
        if let Sender::Key(key_site) = sender {
            let resolved = c.sites().resolve(&site).map(|(d, _)| d);
            if resolved.as_deref() == Some(key_site.as_str()) {
                continue;
            }
            return Err(Error::Forbidden(format!(
                "event {i} sets `{field}` for site {site:?}, but the ingest key belongs to {key_site:?}"
            )));
        }
        let what = if field == "timestamp" {
            format!(
                "a `timestamp` more than {} s in the past",
                MAX_UNKEYED_AGE.num_seconds()
            )
        } else {
            format!("`{field}`")
        };
        return Err(Error::Forbidden(format!(
            "event {i} sets {what}: overriding a visitor's ip, user agent or time needs the              site's ingest key (`Authorization: Bearer vi_…`, made with POST              /api/v1/sites/{{domain}}/ingest-keys) or a --trusted-sender address; nothing was stored"
        )));
    }
    Ok(())
}

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

/// One event of a batch: parsed, or why not; with its JSON text when it had to be read apart
/// (then an invalid event is still read for overrides, see [`item_override`]).
type Item<'a> = (Option<&'a RawValue>, Result<Event, Error>);

/// The events of a body (a JSON array, or NDJSON). The common case, every event valid, is one
/// parse straight into [`Event`]s. Otherwise each event is taken as its own JSON text (stepped
/// over without building a tree or recursing) and parsed alone by [`parse_event`], so that one
/// invalid event is reported alone.
fn split_body(bytes: &[u8], max: usize) -> Result<Vec<Item<'_>>, Error> {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return Err(Error::BadRequest(
            "empty body: expected a JSON array of events or NDJSON".into(),
        ));
    };
    let items: Vec<Item<'_>> = if bytes[start] == b'[' {
        match serde_json::from_slice::<Vec<Event>>(bytes) {
            Ok(events) => events.into_iter().map(|e| (None, Ok(e))).collect(),
            Err(_) => serde_json::from_slice::<Vec<&RawValue>>(bytes)
                .map_err(|e| Error::BadRequest(format!("body is not a valid JSON array: {e}")))?
                .into_iter()
                .map(|raw| (Some(raw), parse_event(raw)))
                .collect(),
        }
    } else {
        let mut out = Vec::new();
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let item = match serde_json::from_slice::<Event>(line) {
                Ok(e) => (None, Ok(e)),
                Err(_) => {
                    let raw: &RawValue = serde_json::from_slice(line).map_err(|e| {
                        Error::BadRequest(format!("NDJSON line {} is not valid JSON: {e}", i + 1))
                    })?;
                    (Some(raw), parse_event(raw))
                }
            };
            out.push(item);
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

/// One event of a batch, from its JSON text.
fn parse_event(raw: &RawValue) -> Result<Event, Error> {
    if !raw.get().starts_with('{') {
        return Err(Error::BadRequest("event must be a JSON object".into()));
    }
    serde_json::from_str(raw.get()).map_err(|e| Error::BadRequest(format!("invalid field: {e}")))
}

fn to_incoming(e: Event, fallback: &Client, consent: Consent) -> Result<Incoming, Error> {
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
    let now = c.now();
    let checked = sender(c, &req).and_then(|s| check_overrides(c, &s, &items, now));
    if let Err(e) = checked {
        return c.reject(&e);
    }
    // Owned from here on: nothing borrows the body across the spool's await.
    let parsed: Vec<Result<Event, Error>> = items.into_iter().map(|(_, p)| p).collect();
    let fallback = super::client(c, &req);
    let consent = Consent::from_headers(req.headers());
    let events = parsed.into_iter().map(|p| match p {
        Ok(e) => to_incoming(e, &fallback, consent),
        Err(e) => Err(e),
    });
    // The whole batch goes to the spool as one append: all on disk, or none (503, retry).
    let tally = match ingest(c, ENDPOINT, now, events, OnInvalid::Report).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_are_ip_user_agent_and_back_dated_timestamps() {
        let now = Utc::now();
        let ago = |secs: i64| now - chrono::Duration::seconds(secs);
        assert_eq!(
            override_of(&json!({"site": "a.com", "url": "/"}), now),
            None
        );
        assert_eq!(override_of(&json!({"ip": "203.0.113.9"}), now), Some("ip"));
        assert_eq!(override_of(&json!({"ip": null}), now), None);
        assert_eq!(
            override_of(&json!({"user_agent": "Mozilla/5.0"}), now),
            Some("user_agent")
        );
        // A sender's clock a little off is no back-dating; a minute and more is.
        assert_eq!(
            override_of(&json!({"timestamp": ago(30).to_rfc3339()}), now),
            None
        );
        assert_eq!(
            override_of(&json!({"timestamp": ago(61).to_rfc3339()}), now),
            Some("timestamp")
        );
        assert_eq!(
            override_of(&json!({"timestamp": ago(86_400).timestamp()}), now),
            Some("timestamp")
        );
        assert_eq!(
            override_of(&json!({"timestamp": ago(-30).to_rfc3339()}), now),
            None
        );
        // An unparseable time is not an override: the event is rejected for it later.
        assert_eq!(override_of(&json!({"timestamp": "yesterday"}), now), None);
    }

    #[test]
    fn each_event_parses_alone_and_an_invalid_one_is_still_read_for_overrides() {
        let now = Utc::now();
        let old = (now - chrono::Duration::hours(2)).to_rfc3339();
        let body = format!(
            r#"[{{"site":"a.com","name":"x","url":"/"}}, 5, {{"site":"a.com","name":7}},
               {{"site":"b.com","ip":"203.0.113.9","name":[]}},
               {{"site":"a.com","user_agent":"Mozilla/5.0"}},
               {{"site":"a.com","timestamp":"{old}"}}, {{"site":"a.com","ip":null}}]"#
        );
        let items = split_body(body.as_bytes(), 10).unwrap();
        assert_eq!(items.len(), 7);
        // One event is invalid: every event was read apart, with its JSON text.
        assert!(items.iter().all(|(raw, _)| raw.is_some()));
        let error = |i: usize| match &items[i].1 {
            Err(Error::BadRequest(m)) => m.clone(),
            other => panic!("event {i}: {other:?}"),
        };
        assert_eq!(items[0].1.as_ref().unwrap().name.as_deref(), Some("x"));
        assert_eq!(error(1), "event must be a JSON object");
        assert!(error(2).starts_with("invalid field: "), "{}", error(2));
        assert!(error(3).starts_with("invalid field: "), "{}", error(3));
        let over: Vec<_> = items.iter().map(|item| item_override(item, now)).collect();
        assert_eq!(over[0], None);
        assert_eq!(over[1], None);
        assert_eq!(over[2], None);
        // Invalid (`name` is no string) but it sets `ip`: still an override, of its own site.
        assert_eq!(over[3], Some(("ip", "b.com".to_string())));
        assert_eq!(over[4], Some(("user_agent", "a.com".to_string())));
        assert_eq!(over[5], Some(("timestamp", "a.com".to_string())));
        assert_eq!(over[6], None);
        // All valid: one parse, no JSON text kept; the overrides read from the events.
        let valid = r#"[{"site":"a.com","name":"x"}, {"site":"c.com","ip":"203.0.113.9"}]"#;
        let items = split_body(valid.as_bytes(), 10).unwrap();
        assert!(items.iter().all(|(raw, e)| raw.is_none() && e.is_ok()));
        assert_eq!(
            item_override(&items[1], now),
            Some(("ip", "c.com".to_string()))
        );
        // NDJSON: one event per line, the same rules.
        let nd = split_body(
            b"{\"site\":\"a.com\"}\n\n  \n[1]\n{\"site\":\"a.com\",\"user_agent\":\"x\",\"url\":5}",
            10,
        )
        .unwrap();
        assert_eq!(nd.len(), 3);
        assert!(nd[0].0.is_none() && nd[0].1.is_ok());
        assert!(nd[1].0.is_some() && nd[1].1.is_err());
        assert_eq!(
            item_override(&nd[2], now),
            Some(("user_agent", "a.com".to_string()))
        );
        assert!(matches!(
            split_body(b"{\"site\":\"a.com\"}\n{nope", 10),
            Err(Error::BadRequest(m)) if m.starts_with("NDJSON line 2 is not valid JSON")
        ));
        assert!(matches!(
            split_body(b"[{\"site\":\"a.com\"}, nope]", 10),
            Err(Error::BadRequest(m)) if m.starts_with("body is not a valid JSON array")
        ));
        assert!(matches!(
            split_body(b"[{}, {}, {}]", 2),
            Err(Error::TooManyEvents { limit: 2 })
        ));
    }
}
