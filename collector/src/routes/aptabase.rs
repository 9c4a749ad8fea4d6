//! `POST /api/v0/event` and `POST /api/v0/events` — Aptabase's ingestion API, so Aptabase's app
//! SDKs work by pointing their `host` at Veil (self-hosted app keys, `A-SH-…`).
//!
//! Wire format: the `App-Key` header (mapped to a site with `--site-alias KEY=DOMAIN`) and a
//! JSON object (`/event`) or array of up to `--max-events-per-batch` objects (`/events`):
//!
//! ```json
//! {"timestamp":"2026-11-28T10:00:00.000Z","sessionId":"170000000012345678","eventName":"app_started",
//!  "systemProps":{"locale":"en-US","osName":"iOS","osVersion":"17.1","appVersion":"1.2.0",
//!   "appBuildNumber":"42","sdkVersion":"aptabase-swift@0.3.0","engineName":"WebKit","engineVersion":"617.1",
//!   "isDebug":false},
//!  "props":{"screen":"settings","launch_ms":840}}
//! ```
//!
//! Events may be up to 7 days old (apps send late when offline); timestamps in the future are
//! clamped to now. The app's `sessionId` is stored only as a hash keyed with the day's salt. The
//! OS and version come from `systemProps` (the SDK's user agent is not a browser's).
//! Answers 200 (`{}`), or 400 with `{"error": ...}` naming the field (for `/events`: the index).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::ingest::{ingest, OnInvalid};
use crate::pipeline::privacy::Consent;
use crate::pipeline::{parse, AppFacts, Client, Incoming, TrackerFacts};
use crate::server::{json, HttpResponse};
use crate::{Collector, Error};

/// Endpoint label in metrics.
pub const ENDPOINT: &str = "aptabase";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    timestamp: Option<String>,
    session_id: Option<String>,
    event_name: Option<String>,
    #[serde(default)]
    system_props: SystemProps,
    #[serde(default)]
    props: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SystemProps {
    locale: Option<String>,
    os_name: Option<String>,
    os_version: Option<String>,
    app_version: Option<String>,
    app_build_number: Option<String>,
    sdk_version: Option<String>,
    engine_name: Option<String>,
    engine_version: Option<String>,
    #[serde(default)]
    is_debug: bool,
    device_model: Option<String>,
}

fn to_incoming(
    site_key: &str,
    v: Value,
    client: &Client,
    consent: Consent,
    now: DateTime<Utc>,
) -> Result<Incoming, Error> {
    let e: Event =
        serde_json::from_value(v).map_err(|e| Error::BadRequest(format!("invalid event: {e}")))?;
    let name = e
        .event_name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| Error::BadRequest("`eventName` is required".into()))?;
    let timestamp = match e.timestamp.as_deref() {
        None => None,
        Some(t) => {
            let t = DateTime::parse_from_rfc3339(t)
                .map_err(|err| Error::BadRequest(format!("`timestamp` is not RFC 3339 ({err})")))?
                .with_timezone(&Utc);
            Some(t.min(now)) // clamp the future
        }
    };
    let sp = e.system_props;
    Ok(Incoming {
        domain: site_key.to_string(),
        url: "app://app/".into(),
        name,
        referrer: None,
        props: parse::props_from_json(&e.props)?,
        timestamp,
        hash_mode: false,
        browser_hit: false,
        consent,
        tracker: TrackerFacts::default(),
        app: AppFacts {
            is_app: true,
            locale: sp.locale,
            app_version: sp.app_version,
            app_build: sp.app_build_number,
            sdk_version: sp.sdk_version,
            os_name: sp.os_name,
            os_version: sp.os_version,
            engine_name: sp.engine_name,
            engine_version: sp.engine_version,
            is_debug: sp.is_debug,
            session: e.session_id,
            device_model: sp.device_model,
            install_source: None,
        },
        client: client.clone(),
    })
}

/// Handles `/api/v0/event` (`batch` false) or `/api/v0/events` (`batch` true).
pub async fn handle(c: &Collector, req: Request<Bytes>, batch: bool) -> HttpResponse {
    let Some(key) = req
        .headers()
        .get("app-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return c.reject_events(
            &Error::BadRequest("the `App-Key` header is required".into()),
            ENDPOINT,
            1,
        );
    };
    let key = key.to_string();
    let body: Value = match serde_json::from_slice(req.body()) {
        Ok(v) => v,
        Err(e) => {
            return c.reject_events(
                &Error::BadRequest(format!("body is not valid JSON: {e}")),
                ENDPOINT,
                1,
            )
        }
    };
    let items = match (batch, body) {
        (true, Value::Array(a)) => a,
        (false, v @ Value::Object(_)) => vec![v],
        (true, _) => {
            return c.reject_events(
                &Error::BadRequest("/api/v0/events takes a JSON array".into()),
                ENDPOINT,
                1,
            )
        }
        (false, _) => {
            return c.reject_events(
                &Error::BadRequest("/api/v0/event takes a JSON object".into()),
                ENDPOINT,
                1,
            )
        }
    };
    if items.len() > c.limits().max_events_per_batch {
        return c.reject(&Error::TooManyEvents {
            limit: c.limits().max_events_per_batch,
        });
    }
    let client = super::client(c, &req);
    let consent = Consent::from_headers(req.headers());
    let now = c.now();
    // A bad event refuses the request; in a batch the message names its index.
    let refuse = |i: usize, e: Error| match e {
        Error::BadRequest(_) if batch => Error::BadRequest(format!("event {i}: {e}")),
        Error::BadRequest(_) => Error::BadRequest(e.to_string()),
        other => other,
    };
    let events = items
        .into_iter()
        .map(|v| to_incoming(&key, v, &client, consent, now));
    match ingest(c, ENDPOINT, now, events, OnInvalid::Refuse(&refuse)).await {
        Ok(_) => json(StatusCode::OK, &json!({})),
        Err(refused) => refused,
    }
}
