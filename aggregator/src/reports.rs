//! The read routes over reports, after the caller's access is known:
//!
//! - `POST /api/v2/query` — JSON, or CSV when `Accept: text/csv` (see [`crate::stats`]);
//! - `POST /api/v2/query.csv` — always CSV;
//! - `POST /api/v2/funnel` — `{"site_id", "funnel": NAME | "steps": [goal…], "date_range",
//!   "filters"?}` → `{"steps": [{"goal", "visitors", "conversion_rate",
//!   "conversion_rate_step", "dropoff"}], "meta"}`: visits that completed the goals in order;
//!   filters go through the Stats API's differencing guard (`meta.too_few_visitors`);
//! - `GET /api/v1/sites/{domain}/realtime` → `{"visitors_5m", "pageviews_30m", "top_pages":
//!   [{"page", "visitors"}], "min_visitors", "privacy": [3]}` from raw events, in windows ending
//!   at the start of the current minute (under differential privacy: at the last five-minute
//!   mark, [`stats::realtime_step`]); `?only=visitors_5m` → `{"visitors_5m", "min_visitors",
//!   "privacy": [1], "window": [start, end]}`, the current visitors alone (the dashboard's
//!   "N current visitors", one question: a whole release's ε when it is a new one);
//! - `GET /api/v1/sites/{domain}/export?date_range=30d` → a zip of CSV reports (one per
//!   dashboard panel, like Plausible's export), run one after another; it counts as the
//!   reports it runs against the credential's rate limit;
//! - `GET /api/v1/sites/{domain}/filtered-traffic?date_range=7d` → `{"dropped": [{"reason",
//!   "events"}], "stored_bots": [{"reason", "events"}], "min_visitors"}`: events not counted in
//!   reports — dropped bots by kind, opt-outs (`consent`), the site's rate limit
//!   (`filtered_hourly`) and bots kept flagged for a `--keep-bots-site` (`events.bot`); a
//!   reason with fewer than k events is left out.
//!
//! Every number goes through the same k-anonymity rules as `/api/v2/query`. Every route holds
//! one place under its credential's bound on reports under way ([`crate::cost`]) while it
//! runs; over it, 429 with `Retry-After`.

use std::io::Write;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{header, Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use veil_schemas::sql;
use veil_schemas::sql::{lit, utc, Sql};

use crate::auth::Access;
use crate::builds::Builds;
use crate::db::fetch;
use crate::http::{bytes_response, json_response, HttpResponse};
use crate::query::{self, expr, rows};
use crate::site::{Goal, SiteView};
use crate::{privacy, segments, stats, Aggregator, Error};

fn bad(m: impl Into<String>) -> Error {
    Error::BadRequest(m.into())
}

fn wants_csv(req: &Request<Bytes>) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"))
}

/// Finds a readable site or answers 404 exactly like an unknown one.
fn readable(agg: &Aggregator, access: &Access, domain: &str) -> Result<SiteView, Error> {
    if !access.can_read(domain) {
        return Err(Error::UnknownSite(domain.to_string()));
    }
    agg.site(domain)
        .ok_or_else(|| Error::UnknownSite(domain.to_string()))
}

/// Every report route, `(method, path)` (`{domain}`: a site): each publishes its numbers
/// through [`crate::privacy`] (in dp mode: noisy, budgeted; `meta.privacy` says so).
/// [`route`] answers only these; `tests/dp.rs` asks each one.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v2/query"),
    ("POST", "/api/v2/query.csv"),
    ("POST", "/api/v2/funnel"),
    ("GET", "/api/v1/sites/{domain}/realtime"),
    ("GET", "/api/v1/sites/{domain}/filtered-traffic"),
    ("GET", "/api/v1/sites/{domain}/export"),
    ("GET", "/api/v1/stats/realtime/visitors"),
    ("GET", "/api/v1/stats/aggregate"),
    ("GET", "/api/v1/stats/timeseries"),
    ("GET", "/api/v1/stats/breakdown"),
];

/// The [`ROUTES`] entry `path` matches, and the domain in it.
fn listed(path: &str) -> Option<(&'static str, Option<&str>)> {
    ROUTES
        .iter()
        .find_map(|(_, pattern)| match pattern.split_once("{domain}") {
            None => (*pattern == path).then_some((*pattern, None)),
            Some((pre, post)) => {
                let domain = path.strip_prefix(pre)?.strip_suffix(post)?;
                (!domain.is_empty() && !domain.contains('/')).then_some((*pattern, Some(domain)))
            }
        })
}

/// Answers the report routes; `None` for other paths.
pub async fn route(
    agg: &Aggregator,
    access: &Access,
    req: &Request<Bytes>,
    path: &str,
) -> Option<Result<HttpResponse, Error>> {
    let post_only = |m: &Method| {
        if m == Method::POST {
            Ok(())
        } else {
            Err(Error::MethodNotAllowed("POST"))
        }
    };
    let (pattern, domain) = listed(path)?;
    let domain = domain.unwrap_or_default();
    // One place under the credential's bound ([`crate::cost`]) for the whole request: every
    // query it runs, an export's included, runs while it is held.
    let _permit = match agg.cost().admit(access).await {
        Ok(p) => p,
        Err(e) => return Some(Err(e)),
    };
    match pattern {
        "/api/v2/query" | "/api/v2/query.csv" => Some(
            async {
                post_only(req.method())?;
                let site = readable(agg, access, &stats::site_id(req.body())?)?;
                let now = agg.now();
                let body = segments::expand(agg, access, &site, req.body()).await?;
                let (q, doc) =
                    stats::run(agg.client(), &site, &body, now, agg.shared_for(access, now))
                        .await?;
                if path.ends_with(".csv") || wants_csv(req) {
                    Ok(bytes_response(
                        "text/csv; charset=utf-8",
                        Some(format!(
                            "attachment; filename=\"{}.csv\"",
                            safe_name(&q.site)
                        )),
                        stats::to_csv(&q, &doc).into_bytes(),
                    ))
                } else {
                    Ok(json_response(StatusCode::OK, &doc))
                }
            }
            .await,
        ),
        "/api/v2/funnel" => Some(
            async {
                post_only(req.method())?;
                let site = readable(agg, access, &stats::site_id(req.body())?)?;
                let now = agg.now();
                let body = segments::expand(agg, access, &site, req.body()).await?;
                let doc =
                    funnel(agg.client(), &site, &body, now, agg.shared_for(access, now)).await?;
                Ok(json_response(StatusCode::OK, &doc))
            }
            .await,
        ),
        v1 if v1.starts_with("/api/v1/stats/") => Some(
            async {
                if req.method() != Method::GET {
                    return Err(Error::MethodNotAllowed("GET"));
                }
                let params = crate::v1::params(req.uri().query());
                let site = readable(agg, access, &crate::v1::site_id(&params)?)?;
                let now = agg.now();
                let what = v1.trim_start_matches("/api/v1/stats/");
                let doc = crate::v1::answer(
                    agg.client(),
                    &site,
                    what,
                    &params,
                    now,
                    agg.shared_for(access, now),
                )
                .await?;
                let mut r = json_response(StatusCode::OK, &doc);
                let mode = if agg.privacy().dp() { "dp" } else { "exact" };
                r.headers_mut()
                    .insert("x-veil-privacy", http::HeaderValue::from_static(mode));
                Ok(r)
            }
            .await,
        ),
        _ => {
            let what = pattern.rsplit('/').next().unwrap_or_default();
            match what {
                "realtime" => Some(
                    async {
                        if req.method() != Method::GET {
                            return Err(Error::MethodNotAllowed("GET"));
                        }
                        let site = readable(agg, access, domain)?;
                        let now = agg.now();
                        let params = crate::v1::params(req.uri().query());
                        let shared = agg.shared_for(access, now);
                        let doc = match params
                            .iter()
                            .find(|(k, _)| k == "only")
                            .map(|(_, v)| v.as_str())
                        {
                            None => realtime(agg.client(), &site, now, shared).await?,
                            Some("visitors_5m") => {
                                current_visitors(agg.client(), &site, now, shared).await?
                            }
                            Some(other) => {
                                return Err(bad(format!(
                                    "`only`: {other:?} is not visitors_5m (leave it out for the whole realtime report)"
                                )))
                            }
                        };
                        Ok(json_response(StatusCode::OK, &doc))
                    }
                    .await,
                ),
                "filtered-traffic" => Some(
                    async {
                        if req.method() != Method::GET {
                            return Err(Error::MethodNotAllowed("GET"));
                        }
                        let site = readable(agg, access, domain)?;
                        let now = agg.now();
                        let doc = filtered_traffic(
                            agg.client(),
                            &site,
                            &range_param(req),
                            now,
                            agg.shared_for(access, now),
                        )
                        .await?;
                        Ok(json_response(StatusCode::OK, &doc))
                    }
                    .await,
                ),
                "export" => Some(
                    async {
                        if req.method() != Method::GET {
                            return Err(Error::MethodNotAllowed("GET"));
                        }
                        let site = readable(agg, access, domain)?;
                        // The export counts as the reports it runs against the credential's
                        // rate limit (the request itself took one token already).
                        if !access.is_admin() {
                            let n = export_reports(&site).count();
                            agg.rate_limit(
                                access.credential(),
                                u32::try_from(n.saturating_sub(1)).unwrap_or(u32::MAX),
                            )?;
                        }
                        let range = range_param(req);
                        let now = agg.now();
                        let zip = export(
                            agg.client(),
                            &site,
                            &range,
                            now,
                            agg.shared_for(access, now),
                        )
                        .await?;
                        Ok(bytes_response(
                            "application/zip",
                            Some(format!(
                                "attachment; filename=\"veil-{}-{}.zip\"",
                                safe_name(&site.domain),
                                safe_name(&range)
                            )),
                            zip,
                        ))
                    }
                    .await,
                ),
                _ => None,
            }
        }
    }
}

/// `?date_range=` of a GET report (default `30d`; `FROM,TO` for dates).
fn range_param(req: &Request<Bytes>) -> String {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("date_range="))
        .unwrap_or("30d")
        .to_string()
}

fn range_json(range: &str) -> Value {
    match range.split_once(',') {
        Some((a, b)) => json!([a, b]),
        None => json!(range),
    }
}

/// Events of `site` left out of reports in `range` (as of `now`), by reason; reasons with
/// fewer than k events are left out (their name next to a `null` would still say that a few
/// happened).
pub async fn filtered_traffic(
    client: &clickhouse::Client,
    site: &SiteView,
    range: &str,
    now: DateTime<Utc>,
    shared: stats::Shared<'_>,
) -> Result<Value, Error> {
    let body =
        json!({"site_id": site.domain, "metrics": ["events"], "date_range": range_json(range)});
    let q = query::parse(body.to_string().as_bytes(), site, now)?;
    let (start, end) = (utc(q.start), utc(q.end));
    let site_lit = lit(&site.domain);
    let stmt = sql!(
        "SELECT reason, sum(events) AS n FROM filtered_hourly WHERE site = {} \
             AND hour >= {} AND hour < {} GROUP BY reason ORDER BY n DESC, reason ASC",
        site_lit,
        start,
        end
    );
    let dropped = fetch(client, &stmt).await?;
    let stmt = sql!(
        "SELECT bot, count() AS n FROM events WHERE site = {} AND timestamp >= {} \
             AND timestamp < {} AND bot != '' GROUP BY bot ORDER BY n DESC, bot ASC",
        site_lit,
        start,
        end
    );
    let bots = fetch(client, &stmt).await?;
    if let Some(a) = shared.asker.filter(|a| a.privacy.dp()) {
        return dp_filtered_traffic(client, site, &q, &dropped, &bots, a).await;
    }
    let k = site.min_visitors as f64;
    let shape = |rows: &[Value]| -> Vec<Value> {
        rows.iter()
            .filter_map(|r| {
                let reason = r.get(0)?.as_str()?.to_string();
                let n: f64 = r
                    .get(1)
                    .and_then(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_f64()))?;
                (n >= k).then(|| json!({"reason": reason, "events": n as u64}))
            })
            .collect()
    };
    Ok(json!({
        "dropped": shape(&dropped),
        "stored_bots": shape(&bots),
        "min_visitors": site.min_visitors,
        "date_range": [q.from.to_string(), q.to.to_string()],
        "privacy": {"mode": "exact", "min_visitors": site.min_visitors},
    }))
}

/// Filtered traffic with differential privacy: each reason's events noisy (one person-day
/// adds at most the events bound to one reason), a reason shown only over the noisy
/// threshold (reason names such as a bot's kind are data too).
async fn dp_filtered_traffic(
    client: &clickhouse::Client,
    site: &SiteView,
    q: &query::Query,
    dropped: &[Value],
    bots: &[Value],
    a: stats::Asker<'_>,
) -> Result<Value, Error> {
    let p = a.privacy;
    let settings = &p.settings().for_site(site);
    let canonical = privacy::route_text(
        "filtered-traffic",
        &[&site.domain, &q.start.to_string(), &q.end.to_string()],
        q.end,
        a.now,
    );
    let spend = p
        .charge(
            client,
            a.credential,
            &site.domain,
            *blake3::hash(canonical.as_bytes()).as_bytes(),
            settings.epsilon_query,
            settings.epsilon_day,
            a.now,
        )
        .await?;
    let days = settings.bounds.person_days(q.start, q.end);
    let linf = days * settings.bounds.events;
    let counts = privacy::Counts::new(
        p.site_key(client, &site.domain).await?,
        &canonical,
        linf,
        linf * 2,
        settings.epsilon_query,
        Some(settings.delta),
        site.min_visitors,
    )?;
    let shape = |kind: &str, rows: &[Value]| -> Vec<Value> {
        let mut out: Vec<(String, f64)> = rows
            .iter()
            .filter_map(|r| {
                let reason = r.get(0)?.as_str()?.to_string();
                let n = crate::db::number(r.get(1)?)?;
                let v = counts.noisy(&format!("{kind}\u{1f}{reason}"), n)?;
                Some((reason, v))
            })
            .collect();
        out.sort_by(|x, y| y.1.total_cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
        out.into_iter()
            .map(|(reason, v)| json!({"reason": reason, "events": v as u64}))
            .collect()
    };
    Ok(json!({
        "dropped": shape("dropped", dropped),
        "stored_bots": shape("bots", bots),
        "min_visitors": site.min_visitors,
        "date_range": [q.from.to_string(), q.to.to_string()],
        "privacy": spend.meta(
            settings,
            settings.delta,
            counts.threshold(),
            json!({"events": counts.interval95()}),
            &[],
        ),
    }))
}

fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect()
}

/// Current visitors: the visitors (events, for a child-directed site) of the 5 minutes before
/// the start of `now`'s minute (under differential privacy: before the last five-minute mark,
/// [`stats::realtime_step`]), as Plausible's "current visitors". One question, a whole
/// release's ε when it is a new one.
pub async fn current_visitors(
    client: &clickhouse::Client,
    site: &SiteView,
    now: DateTime<Utc>,
    shared: stats::Shared<'_>,
) -> Result<Value, Error> {
    let metric = if site.child_directed {
        "events"
    } else {
        "visitors"
    };
    let body = json!({"site_id": site.domain, "metrics": [metric], "date_range": "realtime"});
    let mut q = query::parse(body.to_string().as_bytes(), site, now)?;
    q.start = q.end - chrono::Duration::minutes(5);
    stats::realtime_step(&mut q, shared);
    let doc = stats::run_query(client, site, &q, shared).await?;
    Ok(json!({
        "visitors_5m": doc["results"][0]["metrics"][0],
        "min_visitors": site.min_visitors,
        "privacy": [doc["meta"]["privacy"]],
        "window": [utc_text(q.start), utc_text(q.end)],
    }))
}

/// An instant as RFC 3339 in UTC (`2026-12-04T23:05:00Z`).
fn utc_text(t: chrono::NaiveDateTime) -> String {
    t.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Realtime: visitors in the last 5 minutes before `now`, pageviews and top pages of the last
/// 30.
pub async fn realtime(
    client: &clickhouse::Client,
    site: &SiteView,
    now: DateTime<Utc>,
    shared: stats::Shared<'_>,
) -> Result<Value, Error> {
    // With differential privacy the windows end at a five-minute mark: a dashboard polling
    // within five minutes asks the same questions again (same noise, no budget spent); the
    // three questions share one release's ε (a third each), so a refresh costs ε_query.
    let dp = shared.asker.is_some_and(|a| a.privacy.dp());
    let shared = stats::Shared {
        asker: shared.asker.map(|a| stats::Asker {
            share: 1.0 / 3.0,
            ..a
        }),
        ..shared
    };
    let now = if dp {
        let secs = now.timestamp();
        DateTime::from_timestamp(secs - secs.rem_euclid(300), 0).unwrap_or(now)
    } else {
        now
    };
    let metric = if site.child_directed {
        "events"
    } else {
        "visitors"
    };
    let body = |dims: &str, metrics: &str| {
        format!(
            r#"{{"site_id":{},"metrics":{metrics},"date_range":"realtime","dimensions":{dims},"pagination":{{"limit":10}}}}"#,
            Value::String(site.domain.clone())
        )
    };
    let mut five = query::parse(body("[]", &format!("[\"{metric}\"]")).as_bytes(), site, now)?;
    // The same minute-snapped end as the 30-minute window (see `query::parse`).
    five.start = five.end - chrono::Duration::minutes(5);
    let five = stats::run_query(client, site, &five, shared).await?;
    let (_, thirty) = stats::run(
        client,
        site,
        body("[]", "[\"pageviews\"]").as_bytes(),
        now,
        shared,
    )
    .await?;
    let (_, pages) = stats::run(
        client,
        site,
        body("[\"event:page\"]", &format!("[\"{metric}\"]")).as_bytes(),
        now,
        shared,
    )
    .await?;
    let top: Vec<Value> = pages["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| json!({ "page": r["dimensions"][0], "visitors": r["metrics"][0] }))
        .collect();
    let privacy_of: Vec<Value> = [&five, &thirty, &pages]
        .iter()
        .map(|d| d["meta"]["privacy"].clone())
        .collect();
    Ok(json!({
        "visitors_5m": five["results"][0]["metrics"][0],
        "pageviews_30m": thirty["results"][0]["metrics"][0],
        "top_pages": top,
        "min_visitors": site.min_visitors,
        "privacy": privacy_of,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FunnelRequest {
    #[allow(dead_code)]
    site_id: String,
    funnel: Option<String>,
    steps: Option<Vec<String>>,
    date_range: Value,
    #[serde(default)]
    filters: Vec<Value>,
}

/// Ordered funnel over visits: for each step, the visitors whose visit completed the goals
/// up to it in order (ClickHouse `windowFunnel` over one visit's hits); relative date ranges
/// end at `now`.
pub async fn funnel(
    client: &clickhouse::Client,
    site: &SiteView,
    body: &[u8],
    now: DateTime<Utc>,
    shared: stats::Shared<'_>,
) -> Result<Value, Error> {
    if site.child_directed {
        return Err(bad("funnels need visits; a child-directed site has none"));
    }
    let req: FunnelRequest =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid funnel request: {e}")))?;
    let steps: Vec<String> = match (&req.funnel, &req.steps) {
        (Some(name), None) => site
            .funnels
            .iter()
            .find(|f| &f.name == name)
            .map(|f| f.steps.clone())
            .ok_or_else(|| bad(format!("`funnel`: {name:?} is not a funnel of this site")))?,
        (None, Some(s)) => s.clone(),
        _ => return Err(bad("give either `funnel` (a name) or `steps` (goal names)")),
    };
    if !(2..=8).contains(&steps.len()) {
        return Err(bad("`steps`: a funnel has 2 to 8 steps"));
    }
    let goals: Vec<&Goal> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            site.goals
                .iter()
                .find(|g| &g.name == s)
                .ok_or_else(|| bad(format!("`steps[{i}]`: {s:?} is not a goal of this site")))
        })
        .collect::<Result<_, _>>()?;
    // Reuse the query parser for the range and filters.
    let qbody = json!({"site_id": site.domain, "metrics": ["visitors"], "date_range": req.date_range, "filters": req.filters});
    let q = query::parse(qbody.to_string().as_bytes(), site, now)?;
    // The differencing guard of `/api/v2/query`: filters that select, or leave out, a group
    // under k get no numbers.
    // Funnels read raw events joined to their visits: the same ceiling as `joined` reports.
    stats::preflight(client, &q, stats::MAX_RAW_EVENTS)
        .await
        .map_err(stats::too_expensive(&q, site))?;
    let dp = shared.asker.filter(|a| a.privacy.dp());
    // With differential privacy the noise, not the guard, protects small groups.
    let too_few = match dp {
        Some(_) => false,
        None => stats::too_few(client, site, &q, &mut Builds::default())
            .await
            .map_err(stats::too_expensive(&q, site))?,
    };
    // The funnel's noisy counts, charged before anything is read.
    let noisy = match dp {
        Some(a) => {
            let p = a.privacy;
            let canonical = privacy::route_text(
                "funnel",
                &[
                    &site.domain,
                    &steps.join("\u{1e}"),
                    &format!("{:?}", q.filter),
                    &q.start.to_string(),
                    &q.end.to_string(),
                ],
                q.end,
                a.now,
            );
            let settings = p.settings().for_site(site);
            let spend = p
                .charge(
                    client,
                    a.credential,
                    &site.domain,
                    *blake3::hash(canonical.as_bytes()).as_bytes(),
                    settings.epsilon_query,
                    settings.epsilon_day,
                    a.now,
                )
                .await?;
            // A visitor-day counts once in each step: L1 = days × steps.
            let days = settings.bounds.person_days(q.start, q.end);
            let counts = privacy::Counts::new(
                p.site_key(client, &site.domain).await?,
                &canonical,
                days,
                days * steps.len() as u64,
                settings.epsilon_query,
                None,
                0,
            )?;
            Some((counts, spend))
        }
        None => None,
    };
    let mut meta = json!({
        "min_visitors": site.min_visitors,
        "too_few_visitors": too_few,
        "date_range": [q.from.to_string(), q.to.to_string()],
    });
    if too_few {
        let steps: Vec<Value> = steps
            .iter()
            .map(|g| json!({"goal": g, "visitors": null, "conversion_rate": null, "conversion_rate_step": null, "dropoff": null}))
            .collect();
        return Ok(json!({"steps": steps, "meta": meta}));
    }
    let conds = Sql::join(goals.iter().map(|g| expr::goal_cond(g)), ", ");
    let filter = match &q.filter {
        Some(f) => expr::joined_filter(f, &q, site),
        None => Sql::new("1"),
    };
    let levels = Sql::join(
        (1..=steps.len()).map(|i| sql!("uniqIf(visitor_id, level >= {})", i)),
        ", ",
    );
    let from = rows::raw_joined_rows(&q);
    let sql = sql!(
        "SELECT {} FROM (SELECT visitor_id, visit, windowFunnel(86400)(timestamp, {}) AS level FROM {} WHERE {} GROUP BY visitor_id, visit)",
        levels,
        conds,
        from,
        filter
    );
    let rows = fetch(client, &sql)
        .await
        .map_err(stats::too_expensive(&q, site))?;
    let counts: Vec<f64> = rows
        .first()
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .map(|v| {
                    v.as_str()
                        .and_then(|s| s.parse().ok())
                        .or(v.as_f64())
                        .unwrap_or(0.0)
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some((noise, spend)) = &noisy {
        return Ok(dp_funnel(&steps, &counts, noise, spend, meta, shared));
    }
    let k = site.min_visitors as f64;
    let first = counts.first().copied().unwrap_or(0.0);
    let mut out = Vec::new();
    let mut prev: Option<f64> = None;
    for (i, g) in steps.iter().enumerate() {
        let n = counts.get(i).copied().unwrap_or(0.0);
        // A step under k is not shown, and neither is anything after it (each later step is
        // a subset, and the difference would reveal the small one).
        let shown = n >= k && prev.is_none_or(|p| p >= k);
        let pct = |a: f64, b: f64| {
            if b > 0.0 {
                json!((a * 1000.0 / b).round() / 10.0)
            } else {
                json!(0)
            }
        };
        // A dropoff of a few visitors is a group under k: `null` (0 and k or more are shown).
        let dropoff = prev.map(|p| p - n).unwrap_or(0.0);
        let dropoff = if dropoff > 0.0 && dropoff < k {
            Value::Null
        } else {
            json!(dropoff)
        };
        out.push(if shown {
            json!({
                "goal": g,
                "visitors": n,
                "conversion_rate": pct(n, first),
                "conversion_rate_step": pct(n, prev.unwrap_or(n)),
                "dropoff": dropoff,
            })
        } else {
            json!({"goal": g, "visitors": null, "conversion_rate": null, "conversion_rate_step": null, "dropoff": null})
        });
        prev = Some(if shown { n } else { 0.0 });
    }
    meta["privacy"] = json!({"mode": "exact", "min_visitors": site.min_visitors});
    Ok(json!({"steps": out, "meta": meta}))
}

/// A funnel's steps from noisy counts: each step at most the one before (a later step is a
/// subset; post-processing costs no privacy), rates and dropoffs from the noisy numbers.
fn dp_funnel(
    steps: &[String],
    counts: &[f64],
    noise: &privacy::Counts,
    spend: &privacy::Spend,
    mut meta: Value,
    shared: stats::Shared<'_>,
) -> Value {
    let mut out = Vec::new();
    let mut prev: Option<f64> = None;
    let mut first = 0.0;
    for (i, g) in steps.iter().enumerate() {
        let truth = counts.get(i).copied().unwrap_or(0.0);
        let mut n = noise.noisy(&i.to_string(), truth).unwrap_or(0.0);
        if let Some(p) = prev {
            n = n.min(p);
        } else {
            first = n;
        }
        let pct = |a: f64, b: f64| {
            if b > 0.0 {
                json!((a * 1000.0 / b).round() / 10.0)
            } else {
                json!(0)
            }
        };
        out.push(json!({
            "goal": g,
            "visitors": n,
            "conversion_rate": pct(n, first),
            "conversion_rate_step": pct(n, prev.unwrap_or(n)),
            "dropoff": prev.map(|p| p - n).unwrap_or(0.0),
        }));
        prev = Some(n);
    }
    let settings = shared
        .asker
        .map(|a| a.privacy.settings().clone())
        .unwrap_or_default();
    meta["privacy"] = spend.meta(
        &settings,
        0.0,
        0,
        json!({"visitors": noise.interval95()}),
        &[],
    );
    json!({"steps": out, "meta": meta})
}

/// The reports of a site export: file name, dimension (none for the time series) and metrics.
const EXPORTS: &[(&str, &str, &str)] = &[
    (
        "visitors.csv",
        "time:day",
        r#"["visitors","visits","pageviews","bounce_rate","visit_duration"]"#,
    ),
    ("pages.csv", "event:page", r#"["visitors","pageviews"]"#),
    (
        "entry_pages.csv",
        "visit:entry_page",
        r#"["visitors","visits","bounce_rate","visit_duration"]"#,
    ),
    (
        "exit_pages.csv",
        "visit:exit_page",
        r#"["visitors","visits"]"#,
    ),
    (
        "sources.csv",
        "visit:source",
        r#"["visitors","visits","bounce_rate","visit_duration"]"#,
    ),
    (
        "channels.csv",
        "visit:channel",
        r#"["visitors","visits","bounce_rate","visit_duration"]"#,
    ),
    (
        "utm_mediums.csv",
        "visit:utm_medium",
        r#"["visitors","visits","bounce_rate","visit_duration"]"#,
    ),
    (
        "utm_sources.csv",
        "visit:utm_source",
        r#"["visitors","visits","bounce_rate","visit_duration"]"#,
    ),
    (
        "utm_campaigns.csv",
        "visit:utm_campaign",
        r#"["visitors","visits","bounce_rate","visit_duration"]"#,
    ),
    (
        "utm_contents.csv",
        "visit:utm_content",
        r#"["visitors","visits","bounce_rate","visit_duration"]"#,
    ),
    (
        "utm_terms.csv",
        "visit:utm_term",
        r#"["visitors","visits","bounce_rate","visit_duration"]"#,
    ),
    ("countries.csv", "visit:country", r#"["visitors"]"#),
    ("regions.csv", "visit:region", r#"["visitors"]"#),
    ("cities.csv", "visit:city", r#"["visitors"]"#),
    ("browsers.csv", "visit:browser", r#"["visitors"]"#),
    ("operating_systems.csv", "visit:os", r#"["visitors"]"#),
    ("devices.csv", "visit:device", r#"["visitors"]"#),
    (
        "custom_events.csv",
        "event:name",
        r#"["visitors","events"]"#,
    ),
];

/// The reports an export of `site` runs, one after another: file name, dimension and metrics
/// (the `EXPORTS` table; a child-directed site's visitor-free subset).
pub fn export_reports(
    site: &SiteView,
) -> impl Iterator<Item = (&'static str, &'static str, &'static str)> + '_ {
    EXPORTS.iter().filter_map(|&(name, dim, metrics)| {
        if !site.child_directed {
            return Some((name, dim, metrics));
        }
        [
            "event:page",
            "time:day",
            "visit:country",
            "visit:browser",
            "visit:os",
            "visit:device",
            "event:name",
        ]
        .contains(&dim)
        .then_some((name, dim, r#"["pageviews","events"]"#))
    })
}

/// A zip with one CSV per report for `range` (a period name or `FROM,TO`, relative to `now`).
/// The reports ([`export_reports`]) run one after another, never side by side: an export has
/// one query under way at a time ([`crate::cost`]); the HTTP route also charges the
/// credential's rate limit for each of them.
pub async fn export(
    client: &clickhouse::Client,
    site: &SiteView,
    range: &str,
    now: DateTime<Utc>,
    shared: stats::Shared<'_>,
) -> Result<Vec<u8>, Error> {
    let range_json = range_json(range);
    let mut files = Vec::new();
    for (name, dim, metrics) in export_reports(site) {
        let body = format!(
            r#"{{"site_id":{},"metrics":{metrics},"date_range":{range_json},"dimensions":[{}]}}"#,
            json_string(&site.domain),
            json_string(dim)
        );
        let (q, doc) = stats::run(client, site, body.as_bytes(), now, shared).await?;
        files.push((name.to_string(), stats::to_csv(&q, &doc)));
    }
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zw = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, csv) in files {
            zw.start_file(name, opts)
                .map_err(|e| Error::Io(format!("zip: {e}")))?;
            zw.write_all(csv.as_bytes())
                .map_err(|e| Error::Io(format!("zip: {e}")))?;
        }
        zw.finish().map_err(|e| Error::Io(format!("zip: {e}")))?;
    }
    Ok(buf.into_inner())
}

/// `s` as a JSON string (quoted and escaped).
fn json_string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}
