//! `GET /p.gif` — the no-JavaScript pixel, for `<noscript>` and pages that cannot run scripts:
//!
//! ```html
//! <img src="https://VEIL/p.gif?d=example.com&u=https%3A%2F%2Fexample.com%2Fdocs&r=&n=pageview" alt="" width="1" height="1">
//! ```
//!
//! Query: `d` domain (required), `u` page URL (required), `r` referrer, `n` event name
//! (default `pageview`). Answers a 1×1 transparent GIF with `Cache-Control: no-store` (every view
//! must reach Veil); a missing parameter answers 400 with the reason as text. Consent headers
//! are honoured as for every endpoint.

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::Full;

use crate::pipeline::privacy::Consent;
use crate::pipeline::{AppFacts, Incoming, TrackerFacts};
use crate::server::HttpResponse;
use crate::{Collector, Error};

/// Endpoint label in metrics.
pub const ENDPOINT: &str = "pixel";

/// The smallest transparent 1×1 GIF.
pub const GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

fn gif() -> HttpResponse {
    let mut r = http::Response::new(Full::new(Bytes::from_static(GIF)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, max-age=0"),
    );
    r
}

/// Handles one pixel request.
pub async fn handle(c: &Collector, req: Request<Bytes>) -> HttpResponse {
    let q = req.uri().query().unwrap_or_default();
    let (mut d, mut u, mut r, mut n) = (None, None, None, None);
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        match k.as_ref() {
            "d" => d = Some(v.into_owned()),
            "u" => u = Some(v.into_owned()),
            "r" => r = Some(v.into_owned()).filter(|s: &String| !s.is_empty()),
            "n" => n = Some(v.into_owned()).filter(|s: &String| !s.is_empty()),
            _ => {}
        }
    }
    let (Some(domain), Some(url)) = (d, u) else {
        return c.reject_events(
            &Error::BadRequest(
                "the pixel needs `d` (domain) and `u` (page URL) query parameters".into(),
            ),
            ENDPOINT,
            1,
        );
    };
    let ev = Incoming {
        domain,
        name: n.unwrap_or_else(|| "pageview".into()),
        url,
        referrer: r,
        props: Vec::new(),
        timestamp: None,
        hash_mode: false,
        browser_hit: true,
        consent: Consent::from_headers(req.headers()),
        tracker: TrackerFacts::default(),
        app: AppFacts::default(),
        client: super::client(c, &req),
    };
    if let Err(e) = c.ingest_one(ev, ENDPOINT).await {
        return c.reject(&e);
    }
    let mut resp = gif();
    *resp.status_mut() = StatusCode::OK;
    resp
}
