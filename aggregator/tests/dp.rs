//! Differential privacy against a real ClickHouse, through the aggregator's HTTP handling
//! with a site key, as an attacker and as an honest reader would ask (issue 15):
//!
//! - the padding attack (two allowed questions whose difference is one visitor's pages),
//!   played for 8 planted visitors with 5 paddings each and a majority vote, recovers their
//!   page sets in exact mode (the control: the attack works) and not in dp mode;
//! - the same key, after the attack, reading a day of ~5 000 pageviews gets pageviews and
//!   visitors with 95 % intervals under 1 % and 3 % of the stored truth, each within 4 of its
//!   intervals of what the release counts, and that day's first screen (with its comparison)
//!   is answered;
//! - asking again gives the same numbers for free; a spent budget is a 429 with
//!   `Retry-After`; ordinary dashboard use fits in a day's budget;
//! - every report route publishes through the privacy module (`meta.privacy`);
//! - a time series lists every bucket;
//! - app launch-time percentiles come from a clamped noisy histogram: one visitor's 3 000
//!   two-minute launches move exact mode's p50 to two minutes (the control) and move nothing
//!   under dp, where p50 and p95 stay within a bucket of the honest users' (also by device).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use http::{HeaderMap, Request};
use serde_json::{json, Value};
use veil_aggregator::privacy::Settings;
use veil_aggregator::{db, reports, Aggregator, AggregatorConfig};
use veil_schemas::sql;
use veil_schemas::sql::{lit, Sql};
use veil_schemas::ClickHouseConfig;

const ADMIN: &str = "admin-token-for-dp-tests";
const SITE: &str = "dp.example";
const DAY: &str = "2026-11-25";
const PAGES: usize = 20;

/// A small deterministic generator (tests must not depend on the OS's randomness to decide).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() as f64 / (1u64 << 31) as f64) < p
    }
}

struct Visitor {
    id: String,
    country: &'static str,
    desktop: bool,
    source: &'static str,
    campaign: String,
    pages: Vec<usize>,
}

/// How likely a visitor views each of the first six pages (the rest: one random page at
/// most): a site of ~1 500 visitors and ~5 000 pageviews a day.
const POPULAR: [f64; 6] = [0.9, 0.6, 0.5, 0.45, 0.4, 0.35];

fn background(n: usize, rng: &mut Lcg) -> Vec<Visitor> {
    (0..n)
        .map(|i| {
            let country = match rng.below(20) {
                0..=7 => "US",
                8..=12 => "DE",
                13..=16 => "FR",
                _ => "GB",
            };
            let mut pages: Vec<usize> = (0..POPULAR.len())
                .filter(|p| rng.chance(POPULAR[*p]))
                .collect();
            if rng.chance(0.6) {
                pages.push(POPULAR.len() + rng.below((PAGES - POPULAR.len()) as u64) as usize);
            }
            if pages.is_empty() {
                pages.push(0);
            }
            Visitor {
                id: format!("bg{i:014}"),
                country,
                desktop: rng.chance(0.5),
                source: if rng.chance(0.4) { "Google" } else { "" },
                campaign: String::new(),
                pages,
            }
        })
        .collect()
}

/// 8 visitors only their campaign singles out (Iceland, phone, no source), each with 3 of
/// the popular pages.
fn planted(rng: &mut Lcg) -> Vec<Visitor> {
    (0..8)
        .map(|i| {
            let mut pages = BTreeSet::new();
            while pages.len() < 3 {
                pages.insert(rng.below(POPULAR.len() as u64) as usize);
            }
            Visitor {
                id: format!("pl{i:014}"),
                country: "IS",
                desktop: false,
                source: "",
                campaign: format!("her-campaign-{i}"),
                pages: pages.into_iter().collect(),
            }
        })
        .collect()
}

fn page(p: usize) -> String {
    format!("/p{p}")
}

async fn store(ch: &ClickHouseConfig, visitors: &[Visitor]) -> u64 {
    let mut rows = Vec::new();
    let mut pageviews = 0;
    for (i, v) in visitors.iter().enumerate() {
        // One visit per visitor, a minute between its pages, spread over the day.
        let start = (i as u64 * 37) % (20 * 3600);
        for (j, p) in v.pages.iter().enumerate() {
            let t = start + j as u64 * 60;
            let at = format!("{DAY} {:02}:{:02}:{:02}", t / 3600, (t / 60) % 60, t % 60);
            rows.push(sql!(
                "({}, toDateTime({}, 'UTC'), 'pageview', {}, {}, toFixedString({}, 16), {}, {}, {}, {}, {}, {})",
                lit(SITE),
                lit(&at),
                lit(&page(*p)),
                lit(SITE),
                lit(&v.id),
                lit(v.source),
                lit(if v.source.is_empty() { "Direct" } else { "Organic Search" }),
                lit(v.country),
                lit(if v.desktop { "Desktop" } else { "Mobile" }),
                lit(if v.desktop { "Chrome" } else { "Safari" }),
                lit(&v.campaign),
            ));
            pageviews += 1;
        }
    }
    for chunk in rows.chunks(2000) {
        let q = sql!(
            "INSERT INTO events (site, timestamp, name, pathname, hostname, visitor_id, source, channel, country_code, device, browser, utm_campaign) VALUES {}",
            Sql::join(chunk.iter(), ", ")
        );
        db::exec(&ch.client(), &q).await.unwrap();
    }
    pageviews
}

fn config(privacy: Settings) -> AggregatorConfig {
    AggregatorConfig {
        api_token: Some(ADMIN.into()),
        sites: vec![SITE.into()],
        privacy,
        // The budget, not the request rate, is what these tests spend: a day's questions asked
        // back to back and then an export (which takes a rate token per report) would meet the
        // per-key rate limit first (tests/admin.rs and tests/cost.rs prove that one).
        key_rate_per_second: 0,
        ..Default::default()
    }
}

async fn call(
    a: &Aggregator,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, HeaderMap, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default()))
        .unwrap();
    let r = a.handle(req).await.expect("an aggregator path");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let b = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, headers, b)
}

async fn ask(a: &Aggregator, token: &str, q: Value) -> (u16, Value) {
    let (s, _, b) = call(a, "POST", "/api/v2/query", token, Some(q)).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// A new site key for [`SITE`] (the attacker's or the reader's only credential).
async fn site_key(a: &Aggregator) -> String {
    let (s, _, b) = call(
        a,
        "POST",
        &format!("/api/v1/sites/{SITE}/keys"),
        ADMIN,
        Some(json!({"name": "reader"})),
    )
    .await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(s, 201, "{v}");
    v["key"].as_str().unwrap().to_string()
}

async fn fresh(
    label: &str,
    privacy: Settings,
) -> (Aggregator, ClickHouseConfig, Vec<Visitor>, u64) {
    let ch = veil_schemas::testing::fresh_database(label).await;
    let mut rng = Lcg(15);
    let mut all = background(1500, &mut rng);
    let planted = planted(&mut rng);
    all.extend(planted);
    let pageviews = store(&ch, &all).await;
    let a = Aggregator::new(config(privacy), ch.clone());
    a.registry().refresh().await.unwrap();
    (a, ch, all, pageviews)
}

/// Writes `site`'s noise key before anything asked about it: the lowest nonce, the key every
/// aggregator then uses (`Privacy::site_key`), so a test's noisy answers over fixed data and
/// explicit dates are one fixed draw — the same on every run.
async fn pin_noise_key(ch: &ClickHouseConfig, site: &str, secret: &[u8; 32]) {
    let hexed: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    db::exec(
        &ch.client(),
        &sql!(
            "INSERT INTO privacy_keys (site, secret, nonce, created_at) SELECT {}, unhex({}), 0, now()",
            lit(site),
            lit(&hexed)
        ),
    )
    .await
    .unwrap();
}

/// Pages → visitors of an `event:page` breakdown (rows left out are absent).
fn by_page(doc: &Value) -> HashMap<String, f64> {
    doc["results"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .filter_map(|r| {
            Some((
                r["dimensions"][0].as_str()?.to_string(),
                r["metrics"][0].as_f64()?,
            ))
        })
        .collect()
}

/// Plays the padding attack against each planted visitor: how many page sets it recovers
/// exactly, and over the rows shown in both answers of a pair, how often a difference of at
/// least 1 appears on her pages and on the others.
async fn attack(a: &Aggregator, key: &str, planted: &[&Visitor]) -> (usize, f64, f64) {
    let pads = [
        json!(["is", "visit:device", ["Desktop"]]),
        json!(["is", "visit:country", ["US"]]),
        json!(["is", "visit:country", ["DE"]]),
        json!(["is", "visit:country", ["FR"]]),
        json!(["is", "visit:source", ["Google"]]),
    ];
    let ask_pages = |pad: &Value, campaign: &str| {
        json!({"site_id": SITE, "metrics": ["visitors"], "dimensions": ["event:page"],
               "date_range": [DAY, DAY],
               "filters": [["or", [pad, ["is", "visit:utm_campaign", [campaign]]]]]})
    };
    let mut recovered = 0;
    let (mut hit_true, mut n_true, mut hit_false, mut n_false) = (0.0, 0.0_f64, 0.0, 0.0_f64);
    for v in planted {
        let mut votes: HashMap<String, usize> = HashMap::new();
        for pad in &pads {
            let (s, base) = ask(a, key, ask_pages(pad, "nothing")).await;
            assert_eq!(s, 200, "{base}");
            let (s, with) = ask(a, key, ask_pages(pad, &v.campaign)).await;
            assert_eq!(s, 200, "{with}");
            let (base, with) = (by_page(&base), by_page(&with));
            for p in 0..PAGES {
                let name = page(p);
                let (Some(x), Some(y)) = (base.get(&name), with.get(&name)) else {
                    continue;
                };
                let up = y - x >= 1.0;
                if up {
                    *votes.entry(name.clone()).or_default() += 1;
                }
                if v.pages.contains(&p) {
                    n_true += 1.0;
                    hit_true += f64::from(u8::from(up));
                } else {
                    n_false += 1.0;
                    hit_false += f64::from(u8::from(up));
                }
            }
        }
        let guessed: BTreeSet<String> = votes
            .into_iter()
            .filter(|(_, n)| *n * 2 > pads.len())
            .map(|(p, _)| p)
            .collect();
        let truth: BTreeSet<String> = v.pages.iter().map(|p| page(*p)).collect();
        if guessed == truth {
            recovered += 1;
        }
    }
    (
        recovered,
        hit_true / n_true.max(1.0),
        hit_false / n_false.max(1.0),
    )
}

#[tokio::test]
async fn the_padding_attack_recovers_nothing_and_honest_totals_stay_accurate() {
    // The control: with exact numbers the attack works, every page set comes back.
    let (a, _, all, _) = fresh("dp_attack_exact", Settings::exact()).await;
    let key = site_key(&a).await;
    let planted: Vec<&Visitor> = all.iter().filter(|v| !v.campaign.is_empty()).collect();
    let (exact, _, _) = attack(&a, &key, &planted).await;
    assert_eq!(
        exact,
        planted.len(),
        "the attack must work on exact numbers"
    );

    // Default settings: nothing beyond chance, and on the rows shown a +1 is as likely on
    // her pages as on the others. "Chance" is not small here: only the ~6 popular pages pass
    // the noisy threshold in these answers, so a vote that lands on a 3-page set of them by
    // luck is up to a 1-in-20 event per planted visitor (one of the 20 sets of 3 of 6 pages; the
    // five votes of a visitor are correlated: the paddings share most rows), not the 1 in
    // 1 140 of 3 pages out of 20.
    // Measured over 40 random noise keys: one set recovered with 9 keys, two never (about 3 %
    // a set, so 2 or more of the 8 in about 2 % of runs); the gap between the two rates 0.04
    // on average, at most 0.19.
    // So the noise key is pinned: this is one fixed draw of the default noise, the same on
    // every run, and the attack must learn nothing from it. It still fails if the feature
    // breaks: without noise (or with noise too small for its sensitivity) a +1 shows on all
    // of her pages and on none of the others, and every set comes back, as in the control.
    let (a, ch, all, pageviews) = fresh("dp_attack", Settings::default()).await;
    pin_noise_key(&ch, SITE, b"dp.rs: padding attack noise key1").await;
    let key = site_key(&a).await;
    let planted: Vec<&Visitor> = all.iter().filter(|v| !v.campaign.is_empty()).collect();
    let (dp, on_hers, on_others) = attack(&a, &key, &planted).await;
    eprintln!(
        "dp attack: {dp} sets recovered, a +1 on hers {on_hers:.3}, on others {on_others:.3}"
    );
    assert!(
        dp <= 1,
        "the attack recovered {dp} of {} page sets",
        planted.len()
    );
    assert!(
        (on_hers - on_others).abs() < 0.25,
        "a +1 shows on her pages {on_hers:.2} of the time, on others {on_others:.2}"
    );

    // The same key, reading honestly after the attack: that day's totals, asked one at a
    // time, then the dashboard's first screen of that day — never refused.
    let reader = key.clone();
    let truth_visitors = db::count(
        &ch.client(),
        &sql!(
            "SELECT uniqExact(visitor_id) FROM events WHERE site = {}",
            lit(SITE)
        ),
    )
    .await
    .unwrap() as f64;
    // What the release counts: each visitor-day's pageviews clamped to the bound (12 of the
    // 5 721 are cut here: visitors with 7 pages count 6).
    let clamped_pageviews = db::count(
        &ch.client(),
        &sql!(
            "SELECT sum(least(n, {})) FROM (SELECT visitor_id, count() AS n FROM events WHERE site = {} GROUP BY visitor_id)",
            Settings::default().bounds.pageviews,
            lit(SITE)
        ),
    )
    .await
    .unwrap() as f64;
    assert!(pageviews as f64 - clamped_pageviews < pageviews as f64 * 0.005);
    for (metric, truth, counted, tolerance) in [
        ("pageviews", pageviews as f64, clamped_pageviews, 0.01),
        ("visitors", truth_visitors, truth_visitors, 0.03),
    ] {
        let (s, d) = ask(
            &a,
            &reader,
            json!({"site_id": SITE, "metrics": [metric], "date_range": [DAY, DAY]}),
        )
        .await;
        assert_eq!(s, 200, "{d}");
        let got = d["results"][0]["metrics"][0].as_f64().unwrap();
        assert_eq!(d["meta"]["privacy"]["mode"], "dp", "{d}");
        // The published interval is narrow: 95 % of answers are within 1 % (pageviews) or
        // 3 % (visitors) of the truth…
        let interval = d["meta"]["privacy"]["interval95"][metric].as_f64().unwrap();
        assert!(interval > 0.0 && interval < truth * tolerance, "{d}");
        // …and every answer is within 4 intervals of what the release counts: Laplace tails
        // are geometric, so a draw beyond 4 × interval95 has a chance of 0.05⁴ ≈ 6e-6 (about
        // 150 pageviews, 2.6 % of the truth: losing or double counting a page's views, or
        // noise several times wider than the interval it publishes, is still outside).
        assert!(
            (got - counted).abs() <= 4.0 * interval,
            "{metric}: {got} against {counted} counted of the stored {truth} (±4 × {interval})"
        );
    }
    for panel in [
        json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"], "include": {"comparisons": {"mode": "previous_period"}}}),
        json!({"metrics": ["visitors"], "dimensions": ["time:hour"]}),
        json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"]}),
        json!({"metrics": ["visitors"], "dimensions": ["visit:source"]}),
        json!({"metrics": ["visitors"], "dimensions": ["visit:country"]}),
        json!({"metrics": ["visitors"], "dimensions": ["visit:device"]}),
    ] {
        let mut q = panel;
        q["site_id"] = json!(SITE);
        q["date_range"] = json!([DAY, DAY]);
        let (s, d) = ask(&a, &reader, q.clone()).await;
        assert_eq!(
            s, 200,
            "the first screen refused after the attack: {q}: {d}"
        );
        assert!(!d["results"].as_array().unwrap().is_empty(), "{q}: {d}");
    }
}

#[tokio::test]
async fn the_same_question_gets_the_same_answer_for_free_and_a_spent_budget_is_a_429() {
    let settings = Settings {
        epsilon_day: 1.0,
        ..Settings::default()
    };
    let (a, _, _, _) = fresh("dp_budget", settings).await;
    let q1 = json!({"site_id": SITE, "metrics": ["visitors", "pageviews"], "dimensions": ["visit:country"], "date_range": [DAY, DAY]});
    // The budget is the UTC day's: if midnight passes during the questions below, the new day
    // starts with a whole budget and the third question is answered. The questions are asked
    // again with a new key (a budget of its own) then: midnight passes once.
    let (key, first, again, d, (s, h, b)) = loop {
        let day = chrono::Utc::now().date_naive();
        let key = site_key(&a).await;
        let (s, first) = ask(&a, &key, q1.clone()).await;
        assert_eq!(s, 200, "{first}");
        let (s, again) = ask(&a, &key, q1.clone()).await;
        assert_eq!(s, 200, "{again}");
        let (s, d) = ask(
            &a,
            &key,
            json!({"site_id": SITE, "metrics": ["visitors"], "date_range": [DAY, DAY]}),
        )
        .await;
        assert_eq!(s, 200, "{d}");
        let third = call(
            &a,
            "POST",
            "/api/v2/query",
            &key,
            Some(json!({"site_id": SITE, "metrics": ["pageviews"], "date_range": [DAY, DAY]})),
        )
        .await;
        if chrono::Utc::now().date_naive() == day {
            break (key, first, again, d, third);
        }
    };
    assert_eq!(first["meta"]["privacy"]["epsilon"], 0.5, "{first}");
    assert_eq!(first["meta"]["privacy"]["repeated"], false);
    assert_eq!(first["meta"]["privacy"]["budget"]["left"], 0.5);
    // Noisy: the planted Icelanders (8, far under the threshold) are not a row.
    let countries: Vec<&str> = first["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["dimensions"][0].as_str().unwrap())
        .collect();
    assert!(!countries.contains(&"IS"), "{first}");
    assert!(countries.contains(&"US"), "{first}");
    // Again: the same numbers, nothing spent.
    assert_eq!(again["results"], first["results"]);
    assert_eq!(again["meta"]["privacy"]["epsilon"], 0.0);
    assert_eq!(again["meta"]["privacy"]["repeated"], true);
    // A second question spends the rest; a third is refused until midnight UTC.
    assert_eq!(d["meta"]["privacy"]["budget"]["left"], 0.0);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(s, 429, "{v}");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    assert!(
        v["error"].as_str().unwrap().contains("privacy budget"),
        "{v}"
    );
    assert_eq!(v["budget"]["left"], 0.0, "{v}");
    // What was asked stays answerable; another credential has its own budget.
    let (s, again) = ask(&a, &key, q1.clone()).await;
    assert_eq!(s, 200);
    assert_eq!(again["results"], first["results"]);
    let other = site_key(&a).await;
    let (s, d) = ask(&a, &other, q1).await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(
        d["results"], first["results"],
        "noise is the site's, not the reader's"
    );
}

#[tokio::test]
async fn every_report_route_publishes_through_the_privacy_module() {
    let (a, _, _, _) = fresh("dp_routes", Settings::default()).await;
    let key = site_key(&a).await;
    for (method, path) in reports::ROUTES {
        let path = path.replace("{domain}", SITE);
        let body = match path.as_str() {
            "/api/v2/query" | "/api/v2/query.csv" => Some(
                json!({"site_id": SITE, "metrics": ["visitors", "pageviews"], "dimensions": ["event:page"], "date_range": [DAY, DAY]}),
            ),
            "/api/v2/funnel" => Some(
                json!({"site_id": SITE, "steps": ["Home", "Pricing"], "date_range": [DAY, DAY]}),
            ),
            _ => None,
        };
        let path = if path.starts_with("/api/v1/stats/") {
            format!("{path}?site_id={SITE}&period=custom&date={DAY},{DAY}&property=event:page&metrics=visitors,pageviews")
        } else if method == &"GET" && !path.ends_with("realtime") {
            format!("{path}?date_range={DAY},{DAY}")
        } else {
            path
        };
        let (s, h, b) = call(&a, method, &path, &key, body).await;
        let ctype = h["content-type"].to_str().unwrap().to_string();
        if path.contains("funnel") {
            // A flag site has no goals: the funnel is refused before any number.
            assert_eq!(s, 400, "{path}: {}", String::from_utf8_lossy(&b));
            continue;
        }
        assert_eq!(s, 200, "{path}: {}", String::from_utf8_lossy(&b));
        if path.starts_with("/api/v1/stats/") {
            // Plausible's v1 shapes; the mode is in a header (realtime/visitors is a bare number).
            assert_eq!(h["x-veil-privacy"], "dp", "{path}");
        }
        if path.starts_with("/api/v1/stats/realtime/visitors") {
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert!(v.is_u64(), "{path}: {v}");
        } else if ctype.starts_with("application/json") {
            let v: Value = serde_json::from_slice(&b).unwrap();
            let p = if v["meta"]["privacy"].is_object() {
                v["meta"]["privacy"].clone()
            } else if v["privacy"].is_array() {
                v["privacy"][0].clone()
            } else {
                v["privacy"].clone()
            };
            assert_eq!(p["mode"], "dp", "{path}: {v}");
            assert!(p["budget"]["left"].is_number(), "{path}: {v}");
            if path.ends_with("realtime") {
                // Its three questions share one release's ε; polling again within the
                // five-minute window asks them again, for free.
                let spent: f64 = v["privacy"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["epsilon"].as_f64().unwrap())
                    .sum();
                assert!((spent - 0.5).abs() < 1e-9, "{v}");
                let window = || chrono::Utc::now().timestamp() / 300;
                let before = window();
                let (_, _, again) = call(&a, method, &path, &key, None).await;
                let again: Value = serde_json::from_slice(&again).unwrap();
                // (Unless a five-minute mark passed between the two calls: a new window.)
                if window() == before {
                    assert_eq!(again["privacy"][0]["repeated"], true, "{again}");
                    assert_eq!(again["visitors_5m"], v["visitors_5m"], "{again}");
                }
            }
        } else if ctype.starts_with("text/csv") {
            let text = String::from_utf8_lossy(&b);
            let header = text.lines().next().unwrap();
            assert!(header.contains("visitors_ci95"), "{path}: {header}");
        } else {
            assert!(ctype.starts_with("application/zip"), "{path}: {ctype}");
            let mut zip = zip::ZipArchive::new(std::io::Cursor::new(b.to_vec())).unwrap();
            let mut f = zip.by_name("pages.csv").unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut f, &mut text).unwrap();
            assert!(
                text.lines().next().unwrap().contains("visitors_ci95"),
                "{text}"
            );
        }
    }
}

#[tokio::test]
async fn a_time_series_lists_every_bucket_and_ordinary_use_fits_the_budget() {
    let (a, _, _, _) = fresh("dp_series", Settings::default()).await;
    let key = site_key(&a).await;
    // Seven days, one with data: seven numbers (noisy zeros are numbers too, not absent).
    let (s, d) = ask(
        &a,
        &key,
        json!({"site_id": SITE, "metrics": ["visitors"], "dimensions": ["time:day"], "date_range": ["2026-11-22", "2026-11-28"]}),
    )
    .await;
    assert_eq!(s, 200, "{d}");
    let days = d["results"].as_array().unwrap();
    assert_eq!(days.len(), 7, "{d}");
    assert!(days.iter().all(|r| r["metrics"][0].is_number()), "{d}");
    assert!(days[3]["metrics"][0].as_f64().unwrap() > 1000.0, "{d}");

    // A day of ordinary dashboard use with one key: the first screen over 30 days, then 7
    // days and one day, three filters on the 30-day screen, one export.
    let screen = |range: Value, filters: Value| {
        let base = json!({"site_id": SITE, "date_range": range, "filters": filters});
        let with = |extra: Value| {
            let mut q = base.clone();
            for (k, v) in extra.as_object().unwrap() {
                q[k] = v.clone();
            }
            q
        };
        vec![
            with(
                json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"]}),
            ),
            with(json!({"metrics": ["time_on_page"]})),
            with(json!({"metrics": ["visitors"], "dimensions": ["time:day"]})),
            with(json!({"metrics": ["visitors", "pageviews"], "dimensions": ["event:page"]})),
            with(json!({"metrics": ["visitors"], "dimensions": ["visit:source"]})),
            with(json!({"metrics": ["visitors"], "dimensions": ["visit:country"]})),
            with(json!({"metrics": ["visitors"], "dimensions": ["visit:device"]})),
            with(json!({"metrics": ["visitors"], "dimensions": ["visit:entry_page"]})),
            with(json!({"metrics": ["visitors", "events"], "dimensions": ["event:goal"]})),
        ]
    };
    let mut questions = Vec::new();
    let thirty = json!(["2026-10-30", "2026-11-28"]);
    questions.extend(screen(thirty.clone(), json!([])));
    questions.extend(screen(json!(["2026-11-22", "2026-11-28"]), json!([])));
    questions.extend(screen(json!([DAY, DAY]), json!([])));
    for f in [
        json!([["is", "event:page", ["/p1"]]]),
        json!([["is", "visit:source", ["Google"]]]),
        json!([["is", "visit:country", ["US"]]]),
    ] {
        questions.extend(screen(thirty.clone(), f));
    }
    let mut spent = 0.0;
    for q in &questions {
        let (s, d) = ask(&a, &key, q.clone()).await;
        assert_eq!(s, 200, "{q}: {d}");
        spent += d["meta"]["privacy"]["epsilon"].as_f64().unwrap();
    }
    let (s, _, _) = call(
        &a,
        "GET",
        &format!("/api/v1/sites/{SITE}/export?date_range=30d"),
        &key,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (_, d) = ask(&a, &key, questions[0].clone()).await;
    let used = d["meta"]["privacy"]["budget"]["spent"].as_f64().unwrap();
    let day = Settings::default().epsilon_day;
    eprintln!(
        "ordinary use: {} questions (ε {spent}) and an export: ε {used} of {day}",
        questions.len()
    );
    assert!(used <= day * 0.8, "ordinary use spent ε {used} of {day}");
}

#[tokio::test]
async fn child_directed_sites_get_noisy_counts_thresholded_on_events() {
    let ch = veil_schemas::testing::fresh_database("dp_child").await;
    // 3 000 pageviews of /games and 3 of /rare, no visitor hash (child-directed: rows are
    // thresholded on events, of which one person-day may add up to 5 to each of 5 pages).
    let rows: Vec<Sql> = (0..3003)
        .map(|i| {
            sql!(
                "('kids.example', toDateTime({}, 'UTC'), 'pageview', {}, 'kids.example', toFixedString('', 16))",
                lit(&format!("{DAY} 10:{:02}:00", i % 60)),
                lit(if i < 3000 { "/games" } else { "/rare" })
            )
        })
        .collect();
    db::exec(
        &ch.client(),
        &sql!(
            "INSERT INTO events (site, timestamp, name, pathname, hostname, visitor_id) VALUES {}",
            Sql::join(rows.iter(), ", ")
        ),
    )
    .await
    .unwrap();
    // A pinned noise key: /games (3 000) must pass a threshold of 1 774 on events, which
    // noise of this scale (±360) misses about once in 50 000 runs with a random key; with
    // this one the answer is one fixed draw.
    pin_noise_key(&ch, "kids.example", b"dp.rs: child-directed noise key1").await;
    let a = Aggregator::new(
        AggregatorConfig {
            api_token: Some(ADMIN.into()),
            child_sites: vec!["kids.example".into()],
            sites: vec!["kids.example".into()],
            ..Default::default()
        },
        ch.clone(),
    );
    let (s, d) = ask(
        &a,
        ADMIN,
        json!({"site_id": "kids.example", "metrics": ["pageviews"], "dimensions": ["event:page"], "date_range": [DAY, DAY]}),
    )
    .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["meta"]["privacy"]["mode"], "dp", "{d}");
    let pages = by_page(&d);
    assert_eq!(
        pages.len(),
        1,
        "/rare (3 events) is under the threshold: {d}"
    );
    let games = pages["/games"];
    let interval = d["meta"]["privacy"]["interval95"]["pageviews"]
        .as_f64()
        .unwrap();
    // Within 4 intervals: Laplace tails are geometric, so a draw beyond 4 × interval95 has a
    // chance of 0.05⁴ ≈ 6e-6 (2 × interval95 failed 1 run in 400). The interval (±360 here)
    // is under a quarter of the count, so counting /games' events twice is still outside.
    assert!(interval > 0.0 && interval < 3000.0 / 4.0, "{d}");
    assert!((games - 3000.0).abs() <= 4.0 * interval, "{d}");
}

#[tokio::test]
async fn a_sites_first_questions_asked_at_once_share_one_noise_key() {
    // A dashboard's first screen: its panels reach a site nobody asked about yet together.
    let (a, _, _, _) = fresh("dp_first_key", Settings::default()).await;
    let key = site_key(&a).await;
    let q = |dim: &str| json!({"site_id": SITE, "metrics": ["visitors"], "dimensions": [dim], "date_range": [DAY, DAY]});
    let (one, two, three, four) = tokio::join!(
        ask(&a, &key, q("visit:country")),
        ask(&a, &key, q("visit:device")),
        ask(&a, &key, q("visit:source")),
        ask(&a, &key, q("event:page")),
    );
    for (dim, first) in [
        ("visit:country", one),
        ("visit:device", two),
        ("visit:source", three),
        ("event:page", four),
    ] {
        assert_eq!(first.0, 200, "{}", first.1);
        let (_, again) = ask(&a, &key, q(dim)).await;
        assert_eq!(again["meta"]["privacy"]["repeated"], true, "{again}");
        assert_eq!(
            again["results"], first.1["results"],
            "{dim}: asked again, answered otherwise"
        );
    }
}

#[tokio::test]
async fn realtime_under_dp_ends_at_a_five_minute_mark_so_a_refresh_is_free_until_the_next() {
    let ch = veil_schemas::testing::fresh_database("dp_realtime_minutes").await;
    let a = Aggregator::new(config(Settings::default()), ch.clone());
    a.registry().refresh().await.unwrap();
    let key = site_key(&a).await;
    let by_minute = json!({"site_id": SITE, "metrics": ["visitors", "pageviews"], "date_range": "realtime",
        "dimensions": ["time:minute"], "include": {"time_labels": true}});
    let window = || chrono::Utc::now().timestamp() / 300;
    // (Asked again until both answers fall in one five-minute window.)
    for _ in 0..3 {
        let before = window();
        let (s, first) = ask(&a, &key, by_minute.clone()).await;
        assert_eq!(s, 200, "{first}");
        let (_, again) = ask(&a, &key, by_minute.clone()).await;
        let (s, _, cur) = call(
            &a,
            "GET",
            &format!("/api/v1/sites/{SITE}/realtime?only=visitors_5m"),
            &key,
            None,
        )
        .await;
        assert_eq!(s, 200);
        let cur: Value = serde_json::from_slice(&cur).unwrap();
        let (_, _, cur2) = call(
            &a,
            "GET",
            &format!("/api/v1/sites/{SITE}/realtime?only=visitors_5m"),
            &key,
            None,
        )
        .await;
        let cur2: Value = serde_json::from_slice(&cur2).unwrap();
        if window() != before {
            continue;
        }
        // Thirty minutes, every one a (noisy) number, the last ending at the mark.
        let labels = first["meta"]["time_labels"].as_array().unwrap();
        assert_eq!(labels.len(), 30, "{first}");
        let last = labels[29].as_str().unwrap();
        let minute: u32 = last[14..16].parse().unwrap();
        assert_eq!(minute % 5, 4, "{first}");
        assert_eq!(first["results"].as_array().unwrap().len(), 30, "{first}");
        assert_eq!(first["meta"]["privacy"]["epsilon"], 0.5, "{first}");
        assert_eq!(again["meta"]["privacy"]["repeated"], true, "{again}");
        assert_eq!(again["meta"]["privacy"]["epsilon"], 0.0, "{again}");
        assert_eq!(again["results"], first["results"]);
        // Current visitors: one whole release, then free until the next mark.
        assert_eq!(cur["privacy"][0]["mode"], "dp", "{cur}");
        assert_eq!(cur["privacy"][0]["epsilon"], 0.5, "{cur}");
        assert!(cur["visitors_5m"].is_number(), "{cur}");
        let end = chrono::DateTime::parse_from_rfc3339(cur["window"][1].as_str().unwrap()).unwrap();
        assert_eq!(end.timestamp() % 300, 0, "{cur}");
        assert_eq!(cur2["privacy"][0]["repeated"], true, "{cur2}");
        assert_eq!(cur2["visitors_5m"], cur["visitors_5m"], "{cur2}");
        // An unknown `only` is a 400 naming it.
        let (s, _, b) = call(
            &a,
            "GET",
            &format!("/api/v1/sites/{SITE}/realtime?only=pages"),
            &key,
            None,
        )
        .await;
        assert_eq!(s, 400);
        assert!(String::from_utf8_lossy(&b).contains("`only`"));
        return;
    }
    panic!("three tries each crossed a five-minute mark");
}

/// An app's launches on [`DAY`]: 2 000 users launching once (1 800 in 450–549 ms, 200 in
/// 2 400–2 499 ms; half of each on Desktop, half on Mobile) and one user launching 3 000
/// times at 120 s.
async fn store_launches(ch: &ClickHouseConfig) {
    let mut rows = Vec::new();
    let mut push = |id: String, ms: u64, desktop: bool, at: u64| {
        let t = format!(
            "{DAY} {:02}:{:02}:{:02}",
            at / 3600 % 24,
            (at / 60) % 60,
            at % 60
        );
        rows.push(sql!(
            "({}, toDateTime({}, 'UTC'), 'app_launch', {}, toFixedString({}, 16), {}, ['launch_ms'], [{}])",
            lit(SITE),
            lit(&t),
            lit(SITE),
            lit(&id),
            lit(if desktop { "Desktop" } else { "Mobile" }),
            lit(&ms.to_string()),
        ));
    };
    for i in 0..2000u64 {
        let ms = if i < 1800 {
            450 + i % 100
        } else {
            2400 + i % 100
        };
        push(format!("user{i:012}"), ms, i % 2 == 0, i * 37);
    }
    for j in 0..3000u64 {
        push("heavy-launcher00".to_string(), 120_000, true, 3600 + j);
    }
    for chunk in rows.chunks(2000) {
        let q = sql!(
            "INSERT INTO events (site, timestamp, name, hostname, visitor_id, device, prop_keys, prop_values) VALUES {}",
            Sql::join(chunk.iter(), ", ")
        );
        db::exec(&ch.client(), &q).await.unwrap();
    }
}

#[tokio::test]
async fn launch_time_percentiles_under_dp_come_from_a_clamped_noisy_histogram() {
    let ask_launch = |dims: Value| {
        json!({"site_id": SITE, "metrics": ["launch_time_p50", "launch_time_p95"],
               "dimensions": dims, "date_range": [DAY, DAY]})
    };
    // The control: exact percentiles of the raw samples, which one user's launches own.
    let ch = veil_schemas::testing::fresh_database("dp_launch_exact").await;
    store_launches(&ch).await;
    let a = Aggregator::new(config(Settings::exact()), ch.clone());
    a.registry().refresh().await.unwrap();
    let (s, exact) = ask(&a, ADMIN, ask_launch(json!([]))).await;
    assert_eq!(s, 200, "{exact}");
    let p50 = exact["results"][0]["metrics"][0].as_f64().unwrap();
    assert!(
        p50 >= 100_000.0,
        "exact p50 belongs to the heavy launcher: {exact}"
    );

    let ch = veil_schemas::testing::fresh_database("dp_launch").await;
    pin_noise_key(&ch, SITE, &[7; 32]).await;
    store_launches(&ch).await;
    let a = Aggregator::new(config(Settings::default()), ch.clone());
    a.registry().refresh().await.unwrap();
    let key = site_key(&a).await;
    let within = |got: &Value, want: f64, what: &str| {
        let v = got.as_f64().unwrap_or_else(|| panic!("{what}: {got}"));
        // A bucket is ±12 % wide around its middle; noise may move the answer a bucket.
        assert!(
            (v / want - 1.0).abs() <= 0.3,
            "{what}: {v} ms, the honest users' {want} ms"
        );
    };
    let (s, total) = ask(&a, &key, ask_launch(json!([]))).await;
    assert_eq!(s, 200, "{total}");
    let m = &total["results"][0]["metrics"];
    within(&m[0], 500.0, "p50");
    within(&m[1], 2450.0, "p95");
    let privacy = &total["meta"]["privacy"];
    assert_eq!(privacy["mode"], "dp", "{total}");
    assert!(privacy["epsilon"].as_f64().unwrap() > 0.0, "{total}");
    assert_eq!(privacy["withheld"], json!([]), "{total}");
    // Asked again: the same numbers, free.
    let (_, again) = ask(&a, &key, ask_launch(json!([]))).await;
    assert_eq!(again["results"], total["results"]);
    assert_eq!(again["meta"]["privacy"]["epsilon"], 0.0, "{again}");
    // By device: each row's own histogram, the heavy launcher clamped in its row too.
    let (s, by) = ask(&a, &key, ask_launch(json!(["visit:device"]))).await;
    assert_eq!(s, 200, "{by}");
    let rows = by["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{by}");
    for r in rows {
        let what = r["dimensions"][0].as_str().unwrap();
        within(&r["metrics"][0], 500.0, &format!("{what} p50"));
        within(&r["metrics"][1], 2450.0, &format!("{what} p95"));
    }
}

#[tokio::test]
async fn exit_rate_under_dp_divides_two_noisy_releases() {
    let (a, ch, _, _) = fresh("dp_exit", Settings::default()).await;
    // One fixed draw of the noise (the noise key before any question): the same every run.
    pin_noise_key(&ch, SITE, &[11; 32]).await;
    let key = site_key(&a).await;
    let body = json!({"site_id": SITE, "metrics": ["exit_rate", "visits"], "dimensions": ["visit:exit_page"],
                      "date_range": [DAY, DAY]});
    let (s, d) = ask(&a, &key, body).await;
    assert_eq!(s, 200, "{d}");
    // The exits and the pages' pageviews: two releases of ε_query.
    assert_eq!(d["meta"]["privacy"]["epsilon"], 1.0, "{d}");
    let rows = d["results"].as_array().unwrap();
    // Exits over the noisy threshold: the last pages of the site's visits.
    assert!(rows.len() >= 2, "the pages visits end on: {d}");
    for r in rows {
        let rate = r["metrics"][0].as_f64().unwrap_or_else(|| panic!("{d}"));
        assert!(rate > 0.0 && rate <= 100.0, "{d}");
    }
}
