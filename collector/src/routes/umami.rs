//! `POST /api/send` — Umami's collect API, so Umami's tracker script and `@umami/node` work by
//! pointing them at Veil.
//!
//! Wire format: `{"type": "event" | "identify", "payload": {...}}` as JSON. An event's payload:
//! `website` (the Umami website id, mapped to a site with `--site-alias ID=DOMAIN`, or the domain
//! itself), `hostname`, `url` (a path like `/pricing?x=1`, or a full URL), `referrer`, `title`,
//! `screen` (`1920x1080`), `language`, `name` (a custom event; none = a pageview) and `data`
//! (props). Veil keeps the path without its query (UTM tags aside), a screen *class* (never the
//! size) and the language; it ignores `title` and any visitor id (`id`) — page titles and
//! distinct ids can name people.
//!
//! `identify` calls exist to attach user ids and traits to a visitor: Veil never stores them (by
//! design; counted as `dropped{reason="identify"}`) and answers 200 as Umami would.
//! Answers `200 {}` (Umami's tracker reads JSON), or 400 with `{"error": ...}`.

use bytes::Bytes;
use http::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::metrics::DropReason;
use crate::pipeline::privacy::Consent;
use crate::pipeline::{parse, AppFacts, Incoming, TrackerFacts};
use crate::server::{json, HttpResponse};
use crate::{Collector, Error};

/// Endpoint label in metrics.
pub const ENDPOINT: &str = "umami";

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: Option<String>,
    payload: Option<Payload>,
}

#[derive(Debug, Deserialize)]
struct Payload {
    website: Option<String>,
    hostname: Option<String>,
    url: Option<String>,
    referrer: Option<String>,
    screen: Option<String>,
    language: Option<String>,
    name: Option<String>,
    #[serde(default)]
    data: Value,
}

/// The screen class of Umami's `screen` (`WIDTHxHEIGHT`), by width as veil.js does.
pub fn screen_class(screen: &str) -> Option<String> {
    let w: u32 = screen.split('x').next()?.trim().parse().ok()?;
    Some(
        match w {
            0..=575 => "mobile",
            576..=991 => "tablet",
            992..=1439 => "laptop",
            _ => "desktop",
        }
        .to_string(),
    )
}

/// Handles one Umami request.
pub async fn handle(c: &Collector, req: Request<Bytes>) -> HttpResponse {
    let env: Envelope = match serde_json::from_slice(req.body()) {
        Ok(e) => e,
        Err(e) => {
            return c.reject_events(
                &Error::BadRequest(format!("body is not an Umami payload: {e}")),
                ENDPOINT,
                1,
            )
        }
    };
    let Some(p) = env.payload else {
        return c.reject_events(
            &Error::BadRequest("`payload` is required".into()),
            ENDPOINT,
            1,
        );
    };
    match env.kind.as_deref() {
        Some("event") | None => {}
        Some("identify") => {
            c.metrics()
                .events_received
                .with_label_values(&[ENDPOINT])
                .inc();
            c.metrics().dropped(DropReason::Identify, 1);
            return json(StatusCode::OK, &json!({}));
        }
        Some(other) => {
            return c.reject_events(
                &Error::BadRequest(format!("`type` {other:?} is not \"event\" or \"identify\"")),
                ENDPOINT,
                1,
            )
        }
    }
    let Some(website) = p.website.filter(|w| !w.trim().is_empty()) else {
        return c.reject_events(
            &Error::BadRequest("`payload.website` is required".into()),
            ENDPOINT,
            1,
        );
    };
    let props = match parse::props_from_json(&p.data) {
        Ok(v) => v,
        Err(e) => return c.reject_events(&e, ENDPOINT, 1),
    };
    let path = p.url.unwrap_or_else(|| "/".into());
    let url = if path.contains("://") {
        path
    } else {
        let host = p
            .hostname
            .filter(|h| !h.is_empty())
            .or_else(|| c.sites().resolve(&website).map(|s| s.0))
            .unwrap_or_default();
        format!(
            "https://{host}{}{path}",
            if path.starts_with('/') { "" } else { "/" }
        )
    };
    let ev = Incoming {
        domain: website,
        name: p
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "pageview".into()),
        url,
        referrer: p.referrer.filter(|r| !r.is_empty()),
        props,
        timestamp: None,
        hash_mode: false,
        browser_hit: true,
        consent: Consent::from_headers(req.headers()),
        tracker: TrackerFacts {
            screen_class: p.screen.as_deref().and_then(screen_class),
            ..Default::default()
        },
        app: AppFacts {
            locale: p.language,
            ..Default::default()
        },
        client: super::client(c, &req),
    };
    if let Err(e) = c.ingest_one(ev, ENDPOINT).await {
        return c.reject(&e);
    }
    json(StatusCode::OK, &json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screen_classes() {
        assert_eq!(screen_class("390x844").as_deref(), Some("mobile"));
        assert_eq!(screen_class("1920x1080").as_deref(), Some("desktop"));
        assert_eq!(screen_class("1280x800").as_deref(), Some("laptop"));
        assert_eq!(screen_class("big"), None);
    }
}
