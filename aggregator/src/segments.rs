//! Segments: saved filter sets of a site ([`veil_schemas::segments`]), as Plausible's
//! dashboard and Stats API have them. A *site* segment is for every reader of the site and is
//! made or removed by its admins; a *personal* one belongs to the person who made it and is
//! seen and used by them alone.
//!
//! The Stats API (`/api/v2/query`, its CSV, `/api/v2/funnel`) takes a segment as a top-level
//! filter `["is", "segment", [ID, …]]` and answers
//! as if the segment's filters were written in its place (`["and", filters]`; several ids:
//! `["or", …]` of them) — [`expand`] rewrites the request before it is parsed, so every
//! number goes through the same parser, privacy module and budget as written-out filters, and
//! the query echo shows the filters answered. An id the asker may not use is a 400 naming it.
//!
//! Wire format (JSON; errors `{"error": "…"}`):
//! - `GET /api/v1/sites/{domain}/segments` → `{"segments": [{"id", "name", "type": "site" |
//!   "personal", "filters", "created_at"}]}`: the site's segments and the asker's own;
//! - `POST …/segments` `{"name", "filters", "type"?: "personal" (default) | "site"}` → 201 the
//!   segment: a personal one needs a logged-in person, a site one the admin role; the filters
//!   are checked by the Stats API's parser (a 400 says what is wrong); at most
//!   [`veil_schemas::segments::MAX_SEGMENTS`] per site, names unique per site and owner;
//! - `DELETE …/segments/{id}` → `{"deleted": ID}`: its owner, or an admin for a site segment.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use serde_json::{json, Map, Value};
use veil_schemas::people::Role;
use veil_schemas::segments::{SegmentRecord, MAX_SEGMENTS};

use crate::auth::Access;
use crate::http::{json_response, HttpResponse};
use crate::site::SiteView;
use crate::{query, Aggregator, Error};

fn bad(m: impl Into<String>) -> Error {
    Error::BadRequest(m.into())
}

/// The person a personal segment belongs to, for `access` (none: keys, links, the token).
fn owner_of(access: &Access) -> Option<&str> {
    match access {
        Access::User(p) => Some(&p.id),
        _ => None,
    }
}

/// Whether `access` may use (read, apply) `seg`.
fn usable(access: &Access, seg: &SegmentRecord) -> bool {
    seg.owner.is_empty() || owner_of(access) == Some(seg.owner.as_str())
}

fn segment_json(s: &SegmentRecord) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "type": if s.owner.is_empty() { "site" } else { "personal" },
        "filters": s.filters,
        "created_at": s.created_at,
    })
}

/// The request body with every top-level `["is", "segment", [ID, …]]` filter replaced by the
/// filters of those segments; the body as given when it names none.
pub async fn expand(
    agg: &Aggregator,
    access: &Access,
    site: &SiteView,
    body: &Bytes,
) -> Result<Bytes, Error> {
    // Cheap test first: most questions name no segment.
    if !body.windows(9).any(|w| w == b"\"segment\"") {
        return Ok(body.clone());
    }
    let Ok(mut doc) = serde_json::from_slice::<Value>(body) else {
        return Ok(body.clone()); // the parser says what is wrong with it
    };
    let Some(filters) = doc.get_mut("filters").and_then(Value::as_array_mut) else {
        return Ok(body.clone());
    };
    let is_segment =
        |f: &Value| f.get(0) == Some(&json!("is")) && f.get(1) == Some(&json!("segment"));
    if !filters.iter().any(is_segment) {
        return Ok(body.clone());
    }
    let all = agg.registry().segments(&site.domain).await?;
    for (i, f) in filters.iter_mut().enumerate() {
        if !is_segment(f) {
            continue;
        }
        let ids = f
            .get(2)
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                bad(format!(
                    "`filters[{i}]`: a segment filter is [\"is\", \"segment\", [SEGMENT_ID]]"
                ))
            })?;
        let mut groups = Vec::new();
        for id in ids {
            let id = match id {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let seg = all
                .iter()
                .find(|s| s.id == id && usable(access, s))
                .ok_or_else(|| {
                    bad(format!(
                        "`filters[{i}]`: {id:?} is not a segment of {} you may use",
                        site.domain
                    ))
                })?;
            groups.push(json!(["and", seg.filters]));
        }
        *f = if groups.len() == 1 {
            groups.remove(0)
        } else {
            json!(["or", groups])
        };
    }
    Ok(Bytes::from(doc.to_string()))
}

/// Answers `…/sites/{domain}/segments[/{id}]`; `None` for other paths.
pub(crate) async fn route(
    agg: &Aggregator,
    access: &Access,
    req: &Request<Bytes>,
    path: &str,
) -> Option<Result<HttpResponse, Error>> {
    let (raw, sub) = crate::http::site_route(path)?;
    let id = match sub.strip_prefix("segments") {
        Some("") => None,
        Some(r) => Some(
            r.strip_prefix('/')
                .filter(|i| !i.is_empty() && !i.contains('/'))?,
        ),
        None => return None,
    };
    Some(segments_route(agg, access, req, raw, id).await)
}

async fn segments_route(
    agg: &Aggregator,
    access: &Access,
    req: &Request<Bytes>,
    raw: &str,
    id: Option<&str>,
) -> Result<HttpResponse, Error> {
    let (site, _, _) = agg.scoped(access, raw)?;
    let m = req.method().clone();
    match (m, id) {
        (Method::GET, None) => {
            let segs: Vec<Value> = agg
                .registry()
                .segments(&site)
                .await?
                .iter()
                .filter(|s| usable(access, s))
                .map(segment_json)
                .collect();
            Ok(json_response(StatusCode::OK, &json!({ "segments": segs })))
        }
        (Method::POST, None) => create(agg, access, req, &site).await,
        (Method::DELETE, Some(id)) => {
            let all = agg.registry().segments(&site).await?;
            let seg = all
                .into_iter()
                .find(|s| s.id == id && usable(access, s))
                .ok_or_else(|| Error::NotFound(format!("no segment {id:?} of {site}")))?;
            if seg.owner.is_empty() && !access.has(&site, Role::Admin) {
                return Err(Error::Forbidden(format!(
                    "removing a site segment of {site:?} needs the admin role on it"
                )));
            }
            let v = segment_json(&seg);
            agg.registry().delete_segment(seg).await?;
            agg.audit(access, &site, "segment.delete", v).await;
            Ok(json_response(StatusCode::OK, &json!({ "deleted": id })))
        }
        (_, None) => Err(Error::MethodNotAllowed("GET, POST")),
        (_, Some(_)) => Err(Error::MethodNotAllowed("DELETE")),
    }
}

async fn create(
    agg: &Aggregator,
    access: &Access,
    req: &Request<Bytes>,
    site: &str,
) -> Result<HttpResponse, Error> {
    let obj: Map<String, Value> = serde_json::from_slice(req.body()).map_err(|e| {
        bad(format!(
            "the body must be {{\"name\", \"filters\", \"type\"?}}: {e}"
        ))
    })?;
    if let Some(k) = obj
        .keys()
        .find(|k| !["name", "filters", "type"].contains(&k.as_str()))
    {
        return Err(bad(format!(
            "unknown field `{k}`; expected name, filters, type"
        )));
    }
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    veil_schemas::policy::check_text("name", &name, 100)?;
    let filters = obj
        .get("filters")
        .and_then(Value::as_array)
        .filter(|f| !f.is_empty())
        .cloned()
        .ok_or_else(|| bad("`filters` must be a non-empty list of Stats API filters"))?;
    let owner = match obj
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("personal")
    {
        "personal" => owner_of(access)
            .ok_or_else(|| {
                Error::Forbidden(
                    "a personal segment is a person's: log in, or make a site segment".into(),
                )
            })?
            .to_string(),
        "site" if access.has(site, Role::Admin) => String::new(),
        "site" => {
            return Err(Error::Forbidden(format!(
                "a site segment of {site:?} needs the admin role on it"
            )))
        }
        other => {
            return Err(bad(format!(
                "`type` must be \"personal\" or \"site\", not {other:?}"
            )))
        }
    };
    // The filters as the Stats API will read them: a question over them must parse.
    let view = agg
        .site(site)
        .ok_or_else(|| Error::UnknownSite(site.to_string()))?;
    let probe =
        json!({"site_id": site, "metrics": ["visitors"], "date_range": "7d", "filters": filters});
    query::parse(probe.to_string().as_bytes(), &view, agg.now())
        .map_err(|e| bad(format!("`filters`: {e}")))?;
    let existing = agg.registry().segments(site).await?;
    if existing.len() >= MAX_SEGMENTS {
        return Err(Error::Conflict(format!(
            "{site} has {MAX_SEGMENTS} segments already; remove one first"
        )));
    }
    if existing.iter().any(|s| s.owner == owner && s.name == name) {
        return Err(Error::Conflict(format!(
            "a segment named {name:?} exists already"
        )));
    }
    let rec = agg
        .registry()
        .create_segment(site, &owner, &name, filters)
        .await?;
    let v = segment_json(&rec);
    agg.audit(access, site, "segment.create", v.clone()).await;
    Ok(json_response(StatusCode::CREATED, &v))
}
