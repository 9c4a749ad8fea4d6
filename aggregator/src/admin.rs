//! The admin API: sites, their read-only keys and their shared links, stored in the registry
//! ([`veil_schemas::registry`]) so every collector and aggregator sees a change within seconds.
//!
//! Wire format (JSON bodies; errors `{"error": "…"}` naming the field):
//! - `GET /api/v1/sites` → `{"sites": ["a.com", …], "details": [SITE, …]}` — the sites the
//!   credential can read (a site key or link: its own site only);
//! - `POST /api/v1/sites` `{"domain": "a.com", SETTINGS…}` → 201 SITE; 409 if it exists;
//! - `GET /api/v1/sites/{domain}` → SITE (readers of the site too);
//! - `PUT /api/v1/sites/{domain}` `{SETTINGS…}` → SITE: replaces the settings (fields left out
//!   take the flag-seeded defaults); `DELETE` → `{"deleted": "a.com", "still_defined_by_flags": false}`
//!   unregisters the stored record and revokes its keys and links (data stays: `veil erase-site`
//!   erases it); a site defined only by flags answers 409;
//! - `GET /api/v1/sites/{domain}/install-check` → `{"site", "receiving": true|false}`: whether
//!   any event of the site is stored yet (onboarding's install check; readers of the site too;
//!   a yes or no, never a count or a time);
//! - `POST /api/v1/sites/{domain}/erase` `{"confirm": "{domain}"}` → `{"erased", "rows",
//!   "tables": {TABLE: ROWS}}`: deletes every event and report row of the site for good (what
//!   `veil erase-site` does; the site stays registered; people and the audit log stay), owners
//!   only; waits until ClickHouse has applied it;
//! - `POST /api/v1/sites/{domain}/keys` `{"name"?}` → 201 `{"id", "key", "site", "name", "created_at"}`
//!   (the key is shown only here); `GET …/keys` → `{"keys": [{"id", "name", "created_at", "revoked"}]}`;
//!   `DELETE …/keys/{id}` → `{"revoked": "ID"}`;
//! - `POST /api/v1/sites/{domain}/ingest-keys` `{"name"?}` → 201 `{"id", "key", "site", "name",
//!   "created_at"}`: a write-only **ingest key** (`vi_…`, shown only here, stored hashed) that a
//!   server forwarding its visitors' hits sends to `POST /v1/events` as `Authorization: Bearer
//!   KEY` to be allowed to set `ip`, `user_agent` and a back-dated `timestamp` (it reads
//!   nothing); `GET …/ingest-keys` → `{"ingest_keys": [{"id", "name", "created_at", "revoked"}]}`,
//!   `DELETE …/ingest-keys/{id}` → `{"revoked": "ID"}`;
//! - `POST /api/v1/sites/{domain}/shared-links` `{"name"?, "password"?, "expires_at"?,
//!   "embed_origins"?: ["https://blog.example", …]}` → 201 `{"id", "url":
//!   "/share/{domain}#auth=TOKEN", "embed_url"?: "/share/{domain}?embed={id}#auth=TOKEN",
//!   "token", "site", "name", "expires_at", "password", "embed_origins"}` (the embed page may be
//!   framed by those origins only: [`crate::guard::Guard::harden_embedded`])
//!   (`expires_at`: RFC 3339 or Unix seconds, in the future; `password`: 8–256 bytes, then
//!   required in `X-Veil-Link-Password`); `GET …/shared-links` lists them (never tokens);
//!   `DELETE …/shared-links/{id}` revokes one.
//! - `GET /api/v1/sites/{domain}/imports` → `{"imports": [{"id", "source", "file_name",
//!   "start_date", "end_date", "rows", "imported_at"}]}`: the site's imported history
//!   ([`crate::imports`]); `POST …/imports?source=plausible&file=NAME` with the export as the
//!   body (Plausible's zip, or one of its CSV files named by `file`; at most --max-body-bytes)
//!   → 201 `{"import", "already": false, "skipped"}` (200 and `"already": true` for a file
//!   imported before: nothing changes); `DELETE …/imports/{id}` → `{"deleted": IMPORT}`. The
//!   site's admin role; imports and deletions are audited (`import.create`, `import.delete`).
//!
//! SITE is `{"domain", "source": "stored"|"flags", "aliases", "timezone", "retention_days"?,
//! "child_directed", "honor_dnt", "keep_bots", "min_visitors", "goals", "funnels",
//! "epsilon_query"?, "epsilon_day"?, "revenue_bound"?}` (the site's own differential-privacy
//! parameters, [`crate::privacy::Settings::for_site`]: ε per release and per credential-day,
//! and the most revenue one visitor adds per day; PUT takes them too); SETTINGS
//! the same fields without `domain` and `source`. Goals and funnels have the shapes of
//! [`crate::site::Goal`] and [`crate::site::Funnel`].
//!
//! Who may change what (roles, [`veil_schemas::people::Role`]): creating a site needs the
//! owner role on every site (or the admin token); changing a site's settings, keys, ingest keys
//! and links its admin role; deleting it its owner role. A viewer, a site key or a link gets
//! 403 naming the role needed on an admin route of a site it can read, and 404 (as for an
//! unknown site) on any other site's. Every change is written to the audit log
//! ([`crate::account`]; settings as what changed, keys and links by id and name).

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use serde_json::{json, Map, Value};
use veil_schemas::people::{Role, ALL_SITES};
use veil_schemas::policy;
use veil_schemas::registry::{normalize_domain, KeyRecord, SiteSettings, MAX_NAME_BYTES};
use veil_schemas::sql;
use veil_schemas::sql::lit;

use crate::auth::{self, Access};
use crate::http::{json_response, HttpResponse};
use crate::{Aggregator, Error, Source};

fn bad(msg: String) -> Error {
    Error::BadRequest(msg)
}

fn check_text(field: &str, s: &str, max: usize) -> Result<(), Error> {
    Ok(policy::check_text(field, s, max)?)
}

fn body_object(req: &Request<Bytes>) -> Result<Map<String, Value>, Error> {
    if req.body().iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(req.body()) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("the body must be a JSON object".into())),
        Err(e) => Err(bad(format!("invalid JSON body: {e}"))),
    }
}

fn only_fields(obj: &Map<String, Value>, allowed: &[&str]) -> Result<(), Error> {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(bad(format!(
                "unknown field `{k}`; expected one of {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

fn optional_string(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, Error> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(format!("`{field}` must be a string"))),
    }
}

fn rfc3339(secs: u32) -> Value {
    chrono::DateTime::from_timestamp(i64::from(secs), 0)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null)
}

fn site_json(domain: &str, source: Source, s: &SiteSettings) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut v {
        m.insert("domain".into(), json!(domain));
        m.insert("source".into(), json!(source.name()));
    }
    v
}

/// Passes when `access` has at least `role` on `site` (`*`: every site); anyone else who can
/// read the site gets 403 naming the role.
fn need(access: &Access, site: &str, role: Role) -> Result<(), Error> {
    if access.has(site, role) {
        return Ok(());
    }
    let on = if site == ALL_SITES {
        "every site".to_string()
    } else {
        format!("the site {site:?}")
    };
    Err(Error::Forbidden(match access {
        Access::Site { .. } => format!(
            "this route needs the {} role on {on}; site keys and shared links only read stats",
            role.name()
        ),
        _ => format!("this route needs the {} role on {on}", role.name()),
    }))
}

/// The settings that differ between two sites' JSON: `{"field": [old, new]}`.
fn changes(old: &Value, new: &Value) -> Value {
    let mut out = Map::new();
    if let (Value::Object(a), Value::Object(b)) = (old, new) {
        for k in a.keys().chain(b.keys()) {
            let (x, y) = (
                a.get(k).unwrap_or(&Value::Null),
                b.get(k).unwrap_or(&Value::Null),
            );
            if x != y && !out.contains_key(k) {
                out.insert(k.clone(), json!([x, y]));
            }
        }
    }
    Value::Object(out)
}

impl Aggregator {
    /// The site `alias` names as an alias (stored, or `--site-alias`), if any.
    fn alias_owner(&self, alias: &str) -> Option<String> {
        let flag_owner = self
            .cfg
            .site_aliases
            .iter()
            .filter_map(|x| x.split_once('='))
            .find(|(al, _)| al.trim() == alias)
            .map(|(_, d)| d.trim().to_ascii_lowercase());
        self.registry
            .snapshot()
            .alias(alias)
            .map(str::to_string)
            .or(flag_owner)
    }

    /// The registered site named by a path segment that `access` can read; otherwise 404
    /// with the same body whether the site is unknown or belongs to someone else.
    pub(crate) fn scoped(
        &self,
        access: &Access,
        raw: &str,
    ) -> Result<(String, Source, SiteSettings), Error> {
        let d = normalize_domain(raw).ok_or_else(|| Error::UnknownSite(raw.to_string()))?;
        if !access.can_read(&d) {
            return Err(Error::UnknownSite(d));
        }
        let (src, s) = self
            .site_settings(&d)
            .ok_or_else(|| Error::UnknownSite(d.clone()))?;
        Ok((d, src, s))
    }

    /// Parses and checks a site's settings from a request object, starting from the
    /// flag-seeded defaults of `domain`.
    async fn settings_from(
        &self,
        domain: &str,
        obj: &Map<String, Value>,
    ) -> Result<SiteSettings, Error> {
        let s = SiteSettings::from_request(self.cfg.flag_settings(domain), obj, &["domain"])?;
        // Every setting, in one place (veil_schemas::policy): aliases, time zone,
        // retention, k, goals and funnels.
        s.validate()?;
        for (i, a) in s.aliases.iter().enumerate() {
            if let Some(o) = self.alias_owner(a).filter(|o| o != domain) {
                return Err(Error::Conflict(format!(
                    "`aliases[{i}]` {a:?} already names the site {o:?}"
                )));
            }
            if a != domain && self.site_settings(a).is_some() {
                return Err(Error::Conflict(format!(
                    "`aliases[{i}]` {a:?} is a registered site's domain"
                )));
            }
        }
        if s.timezone != "UTC" {
            self.registry.check_timezone(&s.timezone).await?;
        }
        Ok(s)
    }
}

/// Routes `/api/v1/sites…` for `access`.
/// `POST …/imports?source=plausible&file=NAME`: the body is the export (the zip, or one CSV
/// whose `file` name says its table); 201 when imported, 200 when this file was already.
async fn upload_import(
    agg: &Aggregator,
    access: &Access,
    req: &Request<Bytes>,
    d: &str,
) -> Result<HttpResponse, Error> {
    let mut file = "upload.zip".to_string();
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "file" => file = v.into_owned(),
            "source" if v == "plausible" => {}
            "source" => {
                return Err(bad(format!(
                    "`source` {v:?} is not supported; expected \"plausible\""
                )))
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter `{other}`; expected source, file"
                )))
            }
        }
    }
    check_text("file", &file, MAX_NAME_BYTES)?;
    let out = crate::imports::import_plausible(&agg.ch, d, &file, req.body()).await?;
    if !out.already {
        let i = &out.import;
        agg.audit(
            access,
            d,
            "import.create",
            json!({"id": i.id, "source": i.source, "file": i.file_name, "rows": i.rows}),
        )
        .await;
    }
    let status = if out.already {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json_response(
        status,
        &json!({"import": out.import, "already": out.already, "skipped": out.skipped}),
    ))
}

pub(crate) async fn route(
    agg: &Aggregator,
    access: &Access,
    req: &Request<Bytes>,
    path: &str,
) -> Result<HttpResponse, Error> {
    let rest = path.strip_prefix("/api/v1/sites").unwrap_or_default();
    let parts: Vec<&str> = rest.split('/').skip(1).collect();
    let m = req.method();
    match parts.as_slice() {
        [] => match *m {
            Method::GET => Ok(list_sites(agg, access)),
            Method::POST => {
                need(access, ALL_SITES, Role::Owner)?;
                create_site(agg, access, req).await
            }
            _ => Err(Error::MethodNotAllowed("GET, POST")),
        },
        [raw] => {
            let (d, src, s) = agg.scoped(access, raw)?;
            match *m {
                Method::GET => Ok(json_response(StatusCode::OK, &site_json(&d, src, &s))),
                Method::PUT => {
                    need(access, &d, Role::Admin)?;
                    let obj = body_object(req)?;
                    if let Some(v) = obj.get("domain") {
                        if v.as_str().and_then(normalize_domain).as_deref() != Some(d.as_str()) {
                            return Err(bad(format!(
                                "`domain` must be {d:?} (the path's) or left out"
                            )));
                        }
                    }
                    let settings = agg.settings_from(&d, &obj).await?;
                    let rec = agg.registry.put_site(&d, settings).await?;
                    let changed = changes(
                        &site_json(&d, src, &s),
                        &site_json(&d, Source::Stored, &rec.settings),
                    );
                    agg.audit(access, &d, "site.update", changed).await;
                    Ok(json_response(
                        StatusCode::OK,
                        &site_json(&d, Source::Stored, &rec.settings),
                    ))
                }
                Method::DELETE => {
                    need(access, &d, Role::Owner)?;
                    let flags = agg.cfg.flag_site(&d);
                    if src == Source::Flags {
                        return Err(Error::Conflict(format!(
                            "site {d:?} is defined by flags (--site/--child-site); remove the flag to unregister it"
                        )));
                    }
                    agg.registry.delete_site(&d).await?;
                    agg.audit(access, &d, "site.delete", json!({})).await;
                    Ok(json_response(
                        StatusCode::OK,
                        &json!({ "deleted": d, "still_defined_by_flags": flags }),
                    ))
                }
                _ => Err(Error::MethodNotAllowed("GET, PUT, DELETE")),
            }
        }
        [raw, "install-check"] => {
            // Onboarding: whether any event of the site has been stored yet. A yes or no, never
            // a count or a time (neither describes an aggregate); any reader of the site.
            let (d, _, _) = agg.scoped(access, raw)?;
            if m != Method::GET {
                return Err(Error::MethodNotAllowed("GET"));
            }
            let q = sql!(
                "SELECT count() FROM (SELECT 1 FROM events WHERE site = {} LIMIT 1)",
                lit(&d)
            );
            let receiving = crate::db::count(agg.client(), &q).await? > 0;
            Ok(json_response(
                StatusCode::OK,
                &json!({"site": d, "receiving": receiving}),
            ))
        }
        [raw, "erase"] => {
            let (d, _, _) = agg.scoped(access, raw)?;
            need(access, &d, Role::Owner)?;
            if m != Method::POST {
                return Err(Error::MethodNotAllowed("POST"));
            }
            let obj = body_object(req)?;
            only_fields(&obj, &["confirm"])?;
            if optional_string(&obj, "confirm")?.as_deref() != Some(d.as_str()) {
                return Err(bad(format!(
                    "erasing deletes every event and report of {d:?} for good: send {{\"confirm\": {d:?}}}"
                )));
            }
            let report = crate::retention::erase_site(&agg.ch, &d).await?;
            let removed: u64 = report.tables.values().sum();
            agg.audit(
                access,
                &d,
                "site.erase",
                json!({"rows": removed, "tables": report.tables}),
            )
            .await;
            Ok(json_response(
                StatusCode::OK,
                &json!({"erased": d, "rows": removed, "tables": report.tables}),
            ))
        }
        [raw, "imports"] => {
            let (d, _, _) = agg.scoped(access, raw)?;
            need(access, &d, Role::Admin)?;
            match *m {
                Method::GET => {
                    let list = crate::imports::list(&agg.ch, &d).await?;
                    Ok(json_response(StatusCode::OK, &json!({ "imports": list })))
                }
                Method::POST => upload_import(agg, access, req, &d).await,
                _ => Err(Error::MethodNotAllowed("GET, POST")),
            }
        }
        [raw, "imports", id] => {
            let (d, _, _) = agg.scoped(access, raw)?;
            need(access, &d, Role::Admin)?;
            if m != Method::DELETE {
                return Err(Error::MethodNotAllowed("DELETE"));
            }
            let gone = crate::imports::delete(&agg.ch, &d, id).await?;
            agg.audit(
                access,
                &d,
                "import.delete",
                json!({"id": gone.id, "file": gone.file_name, "rows": gone.rows}),
            )
            .await;
            Ok(json_response(StatusCode::OK, &json!({ "deleted": gone })))
        }
        [raw, "keys"] => {
            let (d, _, _) = agg.scoped(access, raw)?;
            need(access, &d, Role::Admin)?;
            match *m {
                Method::GET => Ok(list_keys(agg, &d)),
                Method::POST => create_key(agg, access, req, &d).await,
                _ => Err(Error::MethodNotAllowed("GET, POST")),
            }
        }
        [raw, "keys", id] => {
            let (d, _, _) = agg.scoped(access, raw)?;
            need(access, &d, Role::Admin)?;
            if m != Method::DELETE {
                return Err(Error::MethodNotAllowed("DELETE"));
            }
            let site = agg
                .registry
                .fresh(|s| s.key(id).map(|k| k.site.clone()))
                .await?;
            if site.as_deref() != Some(d.as_str()) {
                return Err(Error::NotFound(format!("no key {id:?} for site {d:?}")));
            }
            agg.registry.revoke_key(id).await?;
            agg.audit(access, &d, "key.revoke", json!({"id": id})).await;
            Ok(json_response(StatusCode::OK, &json!({ "revoked": id })))
        }
        [raw, "ingest-keys"] => {
            let (d, _, _) = agg.scoped(access, raw)?;
            need(access, &d, Role::Admin)?;
            match *m {
                Method::GET => Ok(list_ingest_keys(agg, &d)),
                Method::POST => create_ingest_key(agg, access, req, &d).await,
                _ => Err(Error::MethodNotAllowed("GET, POST")),
            }
        }
        [raw, "ingest-keys", id] => {
            let (d, _, _) = agg.scoped(access, raw)?;
            need(access, &d, Role::Admin)?;
            if m != Method::DELETE {
                return Err(Error::MethodNotAllowed("DELETE"));
            }
            let site = agg
                .registry
                .fresh(|s| s.ingest_key(id).map(|k| k.site.clone()))
                .await?;
            if site.as_deref() != Some(d.as_str()) {
                return Err(Error::NotFound(format!(
                    "no ingest key {id:?} for site {d:?}"
                )));
            }
            agg.registry.revoke_ingest_key(id).await?;
            agg.audit(access, &d, "ingest_key.revoke", json!({"id": id}))
                .await;
            Ok(json_response(StatusCode::OK, &json!({ "revoked": id })))
        }
        [raw, "shared-links"] => {
            let (d, _, _) = agg.scoped(access, raw)?;
            need(access, &d, Role::Admin)?;
            match *m {
                Method::GET => Ok(list_links(agg, &d)),
                Method::POST => create_link(agg, access, req, &d).await,
                _ => Err(Error::MethodNotAllowed("GET, POST")),
            }
        }
        [raw, "shared-links", id] => {
            let (d, _, _) = agg.scoped(access, raw)?;
            need(access, &d, Role::Admin)?;
            if m != Method::DELETE {
                return Err(Error::MethodNotAllowed("DELETE"));
            }
            let site = agg
                .registry
                .fresh(|s| s.link(id).map(|l| l.site.clone()))
                .await?;
            if site.as_deref() != Some(d.as_str()) {
                return Err(Error::NotFound(format!(
                    "no shared link {id:?} for site {d:?}"
                )));
            }
            agg.registry.revoke_link(id).await?;
            agg.audit(access, &d, "shared_link.revoke", json!({"id": id}))
                .await;
            Ok(json_response(StatusCode::OK, &json!({ "revoked": id })))
        }
        [raw, ..] => {
            // Unknown sub-route: still no existence oracle for other sites.
            agg.scoped(access, raw)?;
            Err(Error::NotFound(format!("no route {} {path}", req.method())))
        }
    }
}

fn list_sites(agg: &Aggregator, access: &Access) -> HttpResponse {
    let mut names = Vec::new();
    let mut details = Vec::new();
    for d in agg.site_list() {
        if !access.can_read(&d) {
            continue;
        }
        if let Some((src, s)) = agg.site_settings(&d) {
            details.push(site_json(&d, src, &s));
            names.push(d);
        }
    }
    json_response(
        StatusCode::OK,
        &json!({ "sites": names, "details": details }),
    )
}

async fn create_site(
    agg: &Aggregator,
    access: &Access,
    req: &Request<Bytes>,
) -> Result<HttpResponse, Error> {
    let obj = body_object(req)?;
    let raw = match obj.get("domain") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("`domain` must be a string".into())),
        None => return Err(bad("`domain` is required".into())),
    };
    let d = normalize_domain(&raw).ok_or_else(|| {
        bad(format!(
            "`domain` {raw:?} is not a host name (letters, digits, `-`, `_` and dots)"
        ))
    })?;
    let settings = agg.settings_from(&d, &obj).await?;
    // Another process may have registered it since the last refresh.
    agg.registry.refresh().await?;
    if agg.site_settings(&d).is_some() {
        return Err(Error::Conflict(format!("site {d:?} is already registered")));
    }
    // A domain that already names another site (as its alias) would make events sent to that
    // name go to one site or the other depending on which rule a collector checks first.
    if let Some(owner) = agg.alias_owner(&d) {
        return Err(bad(format!(
            "`domain` {d:?} is an alias of the site {owner:?}; remove it from that site's              aliases first, or use another domain"
        )));
    }
    let rec = agg.registry.put_site(&d, settings).await?;
    let json = site_json(&d, Source::Stored, &rec.settings);
    agg.audit(access, &d, "site.create", json.clone()).await;
    Ok(json_response(
        StatusCode::CREATED,
        &site_json(&d, Source::Stored, &rec.settings),
    ))
}

fn keys_json(field: &str, keys: Vec<&KeyRecord>) -> Value {
    let keys: Vec<Value> = keys
        .into_iter()
        .map(|k| {
            json!({"id": k.id, "name": k.name, "created_at": rfc3339(k.created_at), "revoked": k.revoked})
        })
        .collect();
    let mut out = Map::new();
    out.insert(field.into(), Value::Array(keys));
    Value::Object(out)
}

fn list_keys(agg: &Aggregator, site: &str) -> HttpResponse {
    let snap = agg.registry.snapshot();
    json_response(StatusCode::OK, &keys_json("keys", snap.keys_of(site)))
}

fn list_ingest_keys(agg: &Aggregator, site: &str) -> HttpResponse {
    let snap = agg.registry.snapshot();
    json_response(
        StatusCode::OK,
        &keys_json("ingest_keys", snap.ingest_keys_of(site)),
    )
}

/// The `name` of a new key's request body (the only field).
fn key_name(req: &Request<Bytes>) -> Result<String, Error> {
    let obj = body_object(req)?;
    only_fields(&obj, &["name"])?;
    let name = optional_string(&obj, "name")?.unwrap_or_default();
    if !name.is_empty() {
        check_text("name", &name, MAX_NAME_BYTES)?;
    }
    Ok(name)
}

fn new_key_json(rec: &KeyRecord, key: &str) -> HttpResponse {
    json_response(
        StatusCode::CREATED,
        &json!({"id": rec.id, "key": key, "site": rec.site, "name": rec.name, "created_at": rfc3339(rec.created_at)}),
    )
}

async fn create_key(
    agg: &Aggregator,
    access: &Access,
    req: &Request<Bytes>,
    site: &str,
) -> Result<HttpResponse, Error> {
    let (rec, key) = agg.registry.create_key(site, &key_name(req)?).await?;
    agg.audit(
        access,
        site,
        "key.create",
        json!({"id": rec.id, "name": rec.name}),
    )
    .await;
    Ok(new_key_json(&rec, &key))
}

async fn create_ingest_key(
    agg: &Aggregator,
    access: &Access,
    req: &Request<Bytes>,
    site: &str,
) -> Result<HttpResponse, Error> {
    let (rec, key) = agg
        .registry
        .create_ingest_key(site, &key_name(req)?)
        .await?;
    agg.audit(
        access,
        site,
        "ingest_key.create",
        json!({"id": rec.id, "name": rec.name}),
    )
    .await;
    Ok(new_key_json(&rec, &key))
}

fn link_json(l: &veil_schemas::registry::LinkRecord) -> Value {
    json!({
        "id": l.id,
        "site": l.site,
        "name": l.name,
        "created_at": rfc3339(l.created_at),
        "expires_at": if l.expires_at == 0 { Value::Null } else { rfc3339(l.expires_at) },
        "password": !l.password_hash.is_empty(),
        "revoked": l.revoked,
        "embed_origins": l.embed_origins,
    })
}

fn list_links(agg: &Aggregator, site: &str) -> HttpResponse {
    let snap = agg.registry.snapshot();
    let links: Vec<Value> = snap.links_of(site).into_iter().map(link_json).collect();
    json_response(StatusCode::OK, &json!({ "shared_links": links }))
}

/// `expires_at` of a new link, in Unix seconds (0: never); it must be after `now` (Unix
/// seconds).
fn expiry(v: Option<&Value>, now: i64) -> Result<u32, Error> {
    let secs: i64 = match v {
        None | Some(Value::Null) => return Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| bad("`expires_at` must be whole Unix seconds".into()))?,
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| bad(format!("`expires_at` {s:?} is not an RFC 3339 time: {e}")))?
            .timestamp(),
        Some(_) => {
            return Err(bad(
                "`expires_at` must be an RFC 3339 time or Unix seconds".into()
            ))
        }
    };
    if secs <= now {
        return Err(bad("`expires_at` must be in the future".into()));
    }
    u32::try_from(secs).map_err(|_| bad("`expires_at` is too far in the future".into()))
}

async fn create_link(
    agg: &Aggregator,
    access: &Access,
    req: &Request<Bytes>,
    site: &str,
) -> Result<HttpResponse, Error> {
    let obj = body_object(req)?;
    only_fields(&obj, &["name", "password", "expires_at", "embed_origins"])?;
    let embed_origins = match obj.get("embed_origins") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.len() <= crate::guard::MAX_EMBED_ORIGINS => {
            let mut out = Vec::new();
            for v in a {
                let s = v.as_str().ok_or_else(|| {
                    bad(
                        "`embed_origins` must be a list of origins like \"https://blog.example\""
                            .into(),
                    )
                })?;
                let o = crate::guard::embed_origin(s).map_err(bad)?;
                if !out.contains(&o) {
                    out.push(o);
                }
            }
            out
        }
        Some(_) => {
            return Err(bad(format!(
            "`embed_origins` must be a list of at most {} origins like \"https://blog.example\"",
            crate::guard::MAX_EMBED_ORIGINS
        )))
        }
    };
    let name = optional_string(&obj, "name")?.unwrap_or_default();
    if !name.is_empty() {
        check_text("name", &name, MAX_NAME_BYTES)?;
    }
    let expires_at = expiry(obj.get("expires_at"), agg.now().timestamp())?;
    let password = optional_string(&obj, "password")?.unwrap_or_default();
    let password_hash = if password.is_empty() {
        String::new()
    } else {
        if password.len() < 8 || password.len() > 256 {
            return Err(bad("`password` must be 8 to 256 bytes".into()));
        }
        tokio::task::spawn_blocking(move || auth::hash_password(&password))
            .await
            .map_err(|e| Error::Internal(format!("password hashing task: {e}")))??
    };
    let (rec, token) = agg
        .registry
        .create_link(site, &name, password_hash, expires_at, embed_origins)
        .await?;
    let mut v = link_json(&rec);
    agg.audit(access, site, "shared_link.create", v.clone())
        .await;
    if let Value::Object(m) = &mut v {
        m.insert("token".into(), json!(token));
        // In the fragment: browsers never send it to a server (nor in a Referer).
        m.insert("url".into(), json!(format!("/share/{site}#auth={token}")));
        if !rec.embed_origins.is_empty() {
            // The page those origins may put in an <iframe> (the link's id, not secret, in
            // the query: the server must know which link's origins to allow).
            m.insert(
                "embed_url".into(),
                json!(format!("/share/{site}?embed={}#auth={token}", rec.id)),
            );
        }
    }
    Ok(json_response(StatusCode::CREATED, &v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_accepts_rfc3339_and_seconds_in_the_future() {
        let now = i64::from(veil_schemas::registry::now_secs());
        let expiry = |v: Option<&Value>| expiry(v, now);
        assert_eq!(expiry(None).unwrap(), 0);
        assert_eq!(
            expiry(Some(&json!("2100-01-01T00:00:00Z"))).unwrap(),
            4_102_444_800
        );
        assert!(expiry(Some(&json!("2999-01-01T00:00:00Z")))
            .unwrap_err()
            .to_string()
            .contains("too far"));
        let soon = veil_schemas::registry::now_secs() + 60;
        assert_eq!(expiry(Some(&json!(soon))).unwrap(), soon);
        assert!(expiry(Some(&json!(1)))
            .unwrap_err()
            .to_string()
            .contains("future"));
        assert!(expiry(Some(&json!("tomorrow")))
            .unwrap_err()
            .to_string()
            .contains("`expires_at`"));
        assert!(expiry(Some(&json!(true))).is_err());
    }
}
