//! A realistic, reproducible traffic mix for the benchmarks.
//!
//! Every request is drawn from a seeded [`Rng`], so two runs with the same seed send the same
//! traffic. The mix, by weight:
//!
//! - user agents: 13 real browser strings (desktop Chrome, Safari, Firefox, Edge, Opera; iPhone,
//!   iPad and Android browsers) and 3 bots (Googlebot, bingbot, headless Chrome) at about 6 %;
//! - client IPs: random addresses in the documentation ranges (`192.0.2.0/24`,
//!   `198.51.100.0/24`, `203.0.113.0/24`, and `2001:db8::/32` for one in five);
//! - sites: three registered sites and, for 2 % of events, one that is not registered;
//! - pages: a dozen paths, some with UTM tags, digits (the scrubber's regex runs on those) or a
//!   fragment; referrers: none for 45 %, search engines, social sites, self-referrals;
//! - events: `pageview` for 90 %, custom events with props for the rest;
//! - opt-outs: 1 % carry `Sec-GPC: 1` (`/api/event`) or `"opt_out": true` (`/v1/events`).
//!
//! Each generated request says how many of its events the collector should store
//! ([`PlausibleHit::stored`], [`NativeBatch::stored`]): registered site, not a bot, no opt-out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{json, Map, Value};

/// A small, fast, seedable PRNG (SplitMix64). Not for anything secret.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// An item of `items` picked by weight (the first field).
    pub fn weighted<'a, T>(&mut self, items: &'a [(u32, T)]) -> &'a T {
        let total: u64 = items.iter().map(|(w, _)| u64::from(*w)).sum();
        let mut x = self.below(total);
        for (w, item) in items {
            let w = u64::from(*w);
            if x < w {
                return item;
            }
            x -= w;
        }
        // Unreachable for a non-empty list; the last item keeps this total.
        &items[items.len() - 1].1
    }
}

/// A user agent of the mix.
#[derive(Debug, Clone, Copy)]
pub struct Agent {
    /// The `User-Agent` string, as the browser or bot sends it.
    pub ua: &'static str,
    /// Whether the collector must treat it as a bot (and drop its events).
    pub bot: bool,
}

const fn browser(ua: &'static str) -> Agent {
    Agent { ua, bot: false }
}

const fn bot(ua: &'static str) -> Agent {
    Agent { ua, bot: true }
}

/// User agents with their weights (roughly the shares a general-audience site sees).
pub const AGENTS: &[(u32, Agent)] = &[
    (22, browser("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36")),
    (9, browser("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36")),
    (7, browser("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15")),
    (5, browser("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0")),
    (2, browser("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0")),
    (5, browser("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0")),
    (1, browser("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0")),
    (17, browser("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1")),
    (3, browser("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1")),
    (3, browser("Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1")),
    (13, browser("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36")),
    (4, browser("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36")),
    (1, browser("Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0")),
    (3, bot("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")),
    (2, bot("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)")),
    (1, bot("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36")),
];

/// Sites the collector is started with.
pub const REGISTERED_SITES: &[&str] = &["example.com", "shop.example.org", "docs.example.net"];

/// (weight, domain as sent, page host, registered).
const SITES: &[(u32, (&str, &str, bool))] = &[
    (60, ("example.com", "www.example.com", true)),
    (25, ("shop.example.org", "shop.example.org", true)),
    (13, ("docs.example.net", "docs.example.net", true)),
    (
        2,
        ("not-registered.example", "not-registered.example", false),
    ),
];

const PATHS: &[(u32, &str)] = &[
    (30, "/"),
    (8, "/pricing"),
    (6, "/about"),
    (6, "/blog/privacy-first-analytics"),
    (5, "/blog/2026/11/28/clickhouse-on-a-budget"),
    (
        5,
        "/docs/getting-started?utm_source=newsletter&utm_medium=email&utm_campaign=nov-2026",
    ),
    (4, "/docs/api/events#batching"),
    (4, "/products/4711?ref=producthunt"),
    (3, "/search?q=cookieless+analytics"),
    (3, "/signup"),
    (2, "/contact"),
    (2, "/careers/senior-rust-engineer"),
];

const REFERRERS: &[(u32, Option<&str>)] = &[
    (45, None),
    (22, Some("https://www.google.com/")),
    (4, Some("https://duckduckgo.com/")),
    (3, Some("https://www.bing.com/search?q=veil+analytics")),
    (4, Some("https://news.ycombinator.com/item?id=42000000")),
    (
        3,
        Some("https://www.reddit.com/r/rust/comments/1abc23/veil/"),
    ),
    (3, Some("https://t.co/AbCdEf1234")),
    (2, Some("android-app://com.google.android.gm/")),
    (14, Some("SELF")),
];

/// Custom events and their props (`pageview` otherwise).
const CUSTOM: &[(u32, (&str, &str, &str))] = &[
    (4, ("Signup", "plan", "pro")),
    (
        3,
        (
            "Outbound Link: Click",
            "url",
            "https://github.com/veil-analytics/veil",
        ),
    ),
    (
        2,
        (
            "File Download",
            "url",
            "https://example.com/files/whitepaper.pdf",
        ),
    ),
    (1, ("404", "path", "/old-page")),
];

/// One visitor's page view or custom event, drawn from the mix.
#[derive(Debug, Clone)]
pub struct Event {
    /// Domain as the sender writes it.
    pub domain: &'static str,
    /// Event name.
    pub name: &'static str,
    /// Full page URL.
    pub url: String,
    /// Referrer, if any.
    pub referrer: Option<String>,
    /// One custom property, for custom events.
    pub prop: Option<(&'static str, &'static str)>,
    /// Who sent it.
    pub agent: Agent,
    /// The visitor's IP.
    pub ip: IpAddr,
    /// The visitor opted out (GPC or an app's flag).
    pub opt_out: bool,
    /// Whether the collector must store it.
    pub stored: bool,
}

/// A random address in a documentation range: IPv4 (`192.0.2.0/24`, `198.51.100.0/24`,
/// `203.0.113.0/24`) four times in five, else IPv6 (`2001:db8::/32`).
pub fn random_ip(rng: &mut Rng) -> IpAddr {
    if rng.percent(80) {
        let nets = [[192, 0, 2], [198, 51, 100], [203, 0, 113]];
        let [a, b, c] = nets[rng.below(3) as usize];
        IpAddr::V4(Ipv4Addr::new(a, b, c, (rng.below(254) + 1) as u8))
    } else {
        let low = rng.next_u64();
        let mid = rng.next_u64() as u32;
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0x0db8,
            (mid >> 16) as u16,
            mid as u16,
            (low >> 48) as u16,
            (low >> 32) as u16,
            (low >> 16) as u16,
            low as u16,
        ))
    }
}

impl Event {
    /// Draws one event.
    pub fn random(rng: &mut Rng) -> Self {
        let (domain, host, registered) = *rng.weighted(SITES);
        let path = *rng.weighted(PATHS);
        let url = format!("https://{host}{path}");
        let referrer = match *rng.weighted(REFERRERS) {
            None => None,
            Some("SELF") => Some(format!("https://{host}/")),
            Some(r) => Some(r.to_string()),
        };
        let (name, prop) = if rng.percent(90) {
            ("pageview", None)
        } else {
            let (n, k, v) = *rng.weighted(CUSTOM);
            (n, Some((k, v)))
        };
        let agent = *rng.weighted(AGENTS);
        let ip = random_ip(rng);
        let opt_out = rng.percent(1);
        Self {
            domain,
            name,
            url,
            referrer,
            prop,
            agent,
            ip,
            opt_out,
            stored: registered && !agent.bot && !opt_out,
        }
    }

    fn props(&self) -> Value {
        match self.prop {
            Some((k, v)) => json!({ k: v }),
            None => Value::Null,
        }
    }
}

/// One `POST /api/event` request (Plausible's wire format, short keys as the tracker sends).
#[derive(Debug, Clone)]
pub struct PlausibleHit {
    /// The JSON body.
    pub body: Bytes,
    /// The `User-Agent` header.
    pub user_agent: &'static str,
    /// The `X-Forwarded-For` header.
    pub forwarded_for: String,
    /// Send `Sec-GPC: 1`.
    pub gpc: bool,
    /// Whether the collector must store the event once it answered 202.
    pub stored: bool,
}

impl PlausibleHit {
    /// Draws one request.
    pub fn random(rng: &mut Rng) -> Self {
        let ev = Event::random(rng);
        let mut body = Map::new();
        body.insert("n".into(), ev.name.into());
        body.insert("u".into(), ev.url.clone().into());
        body.insert("d".into(), ev.domain.into());
        body.insert(
            "r".into(),
            ev.referrer.clone().map_or(Value::Null, Value::from),
        );
        if ev.prop.is_some() {
            body.insert("p".into(), ev.props());
        }
        if ev.url.contains('#') {
            body.insert("h".into(), 1.into());
        }
        Self {
            body: Bytes::from(Value::Object(body).to_string()),
            user_agent: ev.agent.ua,
            forwarded_for: ev.ip.to_string(),
            gpc: ev.opt_out,
            stored: ev.stored,
        }
    }
}

/// One `POST /v1/events` request: a JSON array of events, each with the visitor's own `ip` and
/// `user_agent` (a server forwarding its visitors' hits), half with an explicit timestamp.
#[derive(Debug, Clone)]
pub struct NativeBatch {
    /// The JSON body.
    pub body: Bytes,
    /// Events in the batch.
    pub events: u64,
    /// How many the collector must store once it answered 202.
    pub stored: u64,
}

impl NativeBatch {
    /// Draws a batch of `n` events.
    pub fn random(rng: &mut Rng, n: usize) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut stored = 0;
        let events: Vec<Value> = (0..n)
            .map(|_| {
                let ev = Event::random(rng);
                stored += u64::from(ev.stored);
                let mut o = Map::new();
                o.insert("site".into(), ev.domain.into());
                o.insert("name".into(), ev.name.into());
                o.insert("url".into(), ev.url.clone().into());
                if let Some(r) = &ev.referrer {
                    o.insert("referrer".into(), r.clone().into());
                }
                if rng.percent(50) {
                    o.insert("timestamp".into(), now.saturating_sub(rng.below(60)).into());
                }
                if ev.prop.is_some() {
                    o.insert("props".into(), ev.props());
                }
                o.insert("ip".into(), ev.ip.to_string().into());
                o.insert("user_agent".into(), ev.agent.ua.into());
                if ev.opt_out {
                    o.insert("opt_out".into(), true.into());
                }
                Value::Object(o)
            })
            .collect();
        Self {
            body: Bytes::from(Value::Array(events).to_string()),
            events: n as u64,
            stored,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_reproducible_and_plausible() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(
                PlausibleHit::random(&mut a).body,
                PlausibleHit::random(&mut b).body
            );
        }
        let mut rng = Rng::new(1);
        let n = 20_000;
        let stored = (0..n).filter(|_| Event::random(&mut rng).stored).count();
        // About 98 % registered × 94 % browsers × 99 % consenting ≈ 91 %.
        assert!(
            (0.85..0.95).contains(&(stored as f64 / n as f64)),
            "{stored}"
        );
    }

    #[test]
    fn ips_are_documentation_addresses() {
        let mut rng = Rng::new(3);
        for _ in 0..1000 {
            match random_ip(&mut rng) {
                IpAddr::V4(v4) => assert!(v4.is_documentation(), "{v4}"),
                IpAddr::V6(v6) => assert_eq!(v6.segments()[..2], [0x2001, 0x0db8]),
            }
        }
    }

    #[test]
    fn native_batch_is_a_json_array() {
        let b = NativeBatch::random(&mut Rng::new(9), 50);
        let v: Vec<Value> = serde_json::from_slice(&b.body).unwrap_or_default();
        assert_eq!(v.len(), 50);
        assert!(b.stored <= 50);
    }
}
