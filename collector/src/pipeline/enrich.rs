//! The enrich stage, user agent: turn the raw user agent (and User-Agent Client Hints, when the browser sends them)
//! into coarse facts — browser family and major version, OS and version, device class — and
//! recognise bots. The raw string is not kept.
//!
//! woothee does the parsing; Veil corrects what it misses:
//! - browsers woothee folds into Chrome or Safari: Edge, Opera, Samsung Internet, Yandex, Vivaldi,
//!   UC Browser, DuckDuckGo, Chrome and Firefox on iOS;
//! - in-app browsers (Facebook, Instagram, LINE, Snapchat, TikTok, LinkedIn, X);
//! - app HTTP clients (OkHttp, CFNetwork, Dart, Ktor, Alamofire, SDKs' own agents) → device `app`;
//! - Client Hints: `Sec-CH-UA` brands (Brave, Edge…), `Sec-CH-UA-Platform` and
//!   `-Platform-Version` (Windows 11 is platform version ≥ 13, which the frozen UA cannot say),
//!   `Sec-CH-UA-Mobile`, `Sec-CH-UA-Model` (a model on a non-mobile Android is a tablet).
//!
//! Device classes: `desktop`, `mobile`, `tablet`, `appliance` (consoles, TVs, readers), `app`,
//! `unknown`. Bots, by reason (`dropped{reason="bot_…"}`): `crawler` (woothee's crawlers and
//! `bot/`, `crawler`, `spider` agents), `headless` (headless and automation browsers),
//! `monitoring` (uptime checkers), `library` (HTTP libraries and command-line clients),
//! `datacenter` (a browser hit — Plausible, Umami, pixel, veil.js — from a hosting provider's
//! network, see [`DATACENTER_ASNS`]; server-side and app senders are exempt: their servers live
//! in data centres).
//! iPadOS Safari in desktop mode sends a Mac user agent; veil.js adds a touch flag (`tp`) that
//! turns such a "Mac" into an iPad (in `Pipeline::process`). Other senders cannot tell.
//!
//! Results are cached in an LRU keyed by a hash of the user agent and hints (hit rate in
//! `veil_ua_cache_{hits,misses}_total`).

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Why a user agent is a bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotKind {
    /// Search and other crawlers.
    Crawler,
    /// Headless or automated browsers.
    Headless,
    /// Uptime and performance monitors.
    Monitoring,
    /// HTTP libraries and command-line clients.
    Library,
    /// A browser hit from a hosting provider's network (scrapers, headless farms).
    Datacenter,
}

/// Autonomous systems of hosting and cloud providers: browser hits from them are bots
/// (scrapers, automation farms). Networks that also carry people (Microsoft's 8075, Google's
/// 15169, Cloudflare WARP's 13335) are deliberately not listed.
pub const DATACENTER_ASNS: &[u32] = &[
    16509, 14618, // Amazon AWS
    396982, 19527, // Google Cloud
    8068,  // Microsoft Azure (hosting range)
    14061, // DigitalOcean
    24940, // Hetzner
    16276, // OVH
    63949, // Akamai Linode
    20473, // Vultr (Choopa)
    45102, // Alibaba Cloud
    31898, // Oracle Cloud
    12876, // Scaleway
    51167, // Contabo
    60781, 28753,  // LeaseWeb
    36352,  // ColoCrossing
    132203, // Tencent Cloud
    9009,   // M247
];

/// Coarse facts from a user agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UaFacts {
    /// Browser family, e.g. `Chrome`; empty when unknown.
    pub browser: String,
    /// Major version only, e.g. `120`.
    pub browser_version: String,
    /// Operating system, e.g. `Mac OSX`, `Windows 11`, `Android`.
    pub os: String,
    /// At most `major.minor`.
    pub os_version: String,
    /// Device class.
    pub device: &'static str,
    /// Set when the agent is a bot.
    pub bot: Option<BotKind>,
}

/// User-Agent Client Hints as sent by Chromium browsers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ClientHints {
    /// `Sec-CH-UA`: brand list, e.g. `"Chromium";v="124", "Brave";v="124"`.
    pub brands: Option<String>,
    /// `Sec-CH-UA-Platform`, e.g. `"Windows"`.
    pub platform: Option<String>,
    /// `Sec-CH-UA-Platform-Version`, e.g. `"15.0.0"`.
    pub platform_version: Option<String>,
    /// `Sec-CH-UA-Mobile`: `?1` or `?0`.
    pub mobile: Option<bool>,
    /// `Sec-CH-UA-Model`.
    pub model: Option<String>,
}

impl ClientHints {
    /// Reads the hints from request headers.
    pub fn from_headers(h: &http::HeaderMap) -> Self {
        use http::HeaderName;
        // Names made at compile time: a lookup by `&str` parses the name on every request.
        static BRANDS: HeaderName = HeaderName::from_static("sec-ch-ua");
        static PLATFORM: HeaderName = HeaderName::from_static("sec-ch-ua-platform");
        static PLATFORM_VERSION: HeaderName = HeaderName::from_static("sec-ch-ua-platform-version");
        static MOBILE: HeaderName = HeaderName::from_static("sec-ch-ua-mobile");
        static MODEL: HeaderName = HeaderName::from_static("sec-ch-ua-model");
        let get = |n: &HeaderName| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.trim().trim_matches('"').to_string())
                .filter(|s| !s.is_empty())
        };
        Self {
            brands: h
                .get(&BRANDS)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            platform: get(&PLATFORM),
            platform_version: get(&PLATFORM_VERSION),
            mobile: get(&MOBILE).map(|v| v == "?1"),
            model: get(&MODEL),
        }
    }
}

const HEADLESS: &[&str] = &[
    "headlesschrome",
    "phantomjs",
    "lighthouse",
    "puppeteer",
    "playwright",
    "selenium",
    "electron-prerender",
    "slimerjs",
    "chrome-lighthouse",
];
const MONITORING: &[&str] = &[
    "uptimerobot",
    "pingdom",
    "statuscake",
    "site24x7",
    "datadogsynthetics",
    "newrelicpinger",
    "betteruptime",
    "better uptime",
    "checkly",
    "freshping",
    "uptime-kuma",
    "gtmetrix",
    "hetrixtools",
];
const LIBRARIES: &[&str] = &[
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "curl/",
    "wget/",
    "go-http-client",
    "java/",
    "apache-httpclient",
    "libwww-perl",
    "httpie",
    "guzzlehttp",
    "node-fetch",
    "axios/",
    "undici",
    "postmanruntime",
    "insomnia",
    "scrapy",
    "http.rb",
    "faraday",
    "okhttp-test",
];
const CRAWLER_TOKENS: &[&str] = &[
    "bot/",
    "bot;",
    "bot)",
    "crawler",
    "spider",
    "slurp",
    "facebookexternalhit",
    "embedly",
    "preview",
];
/// App HTTP clients and SDK agents: (token, name).
const APP_CLIENTS: &[(&str, &str)] = &[
    ("okhttp/", "OkHttp"),
    ("cfnetwork/", "CFNetwork"),
    ("dart:io", "Dart"),
    ("dart/", "Dart"),
    ("ktor-client", "Ktor"),
    ("ktor client", "Ktor"),
    ("alamofire/", "Alamofire"),
    ("not-a-browser", "App"),
    ("umami/", "Umami SDK"),
];
/// Consoles, TVs and readers woothee misses: (token, OS name); device class `appliance`.
const APPLIANCES: &[(&str, &str)] = &[
    ("Nintendo Switch", "Nintendo Switch"),
    ("PlayStation 5", "PlayStation 5"),
    ("Xbox", "Xbox"),
    ("Kindle/", "Kindle"),
    ("SMART-TV", "Smart TV"),
    ("SmartTV", "Smart TV"),
    ("Tizen", "Tizen"),
    ("Web0S", "webOS"),
    ("AFTS", "Fire TV"),
];

/// Browsers woothee misses or folds into others: (token in the UA, name). First match wins.
const BROWSERS: &[(&str, &str)] = &[
    ("FBAN/", "Facebook"),
    ("FBAV/", "Facebook"),
    ("Instagram ", "Instagram"),
    ("Line/", "LINE"),
    ("Snapchat/", "Snapchat"),
    ("musical_ly", "TikTok"),
    ("BytedanceWebview", "TikTok"),
    ("LinkedInApp", "LinkedIn"),
    ("Twitter for", "X (Twitter)"),
    ("EdgA/", "Edge"),
    ("EdgiOS/", "Edge"),
    ("Edg/", "Edge"),
    ("Edge/", "Edge"),
    ("OPR/", "Opera"),
    ("OPiOS/", "Opera"),
    ("SamsungBrowser/", "Samsung Internet"),
    ("YaBrowser/", "Yandex Browser"),
    ("Vivaldi/", "Vivaldi"),
    ("UCBrowser/", "UC Browser"),
    ("DuckDuckGo/", "DuckDuckGo"),
    ("CriOS/", "Chrome"),
    ("FxiOS/", "Firefox"),
];

/// woothee with Veil's corrections and an LRU cache.
pub struct UaParser {
    inner: woothee::parser::Parser,
    /// Keys of the cache: a 64-bit SipHash of the agent and its hints under this process's
    /// random key (two agents sharing a key would share facts: about one chance in 2^64 per
    /// pair, and nobody outside knows the key to aim for one).
    keys: std::collections::hash_map::RandomState,
    cache: Vec<Mutex<lru::LruCache<u64, UaFacts>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for UaParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UaParser {{ hits: {}, misses: {} }}",
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed)
        )
    }
}

impl Default for UaParser {
    fn default() -> Self {
        Self::new()
    }
}

fn known(s: &str) -> String {
    if s == woothee::woothee::VALUE_UNKNOWN {
        String::new()
    } else {
        s.to_string()
    }
}

/// The major version: `120.0.1` → `120`.
pub fn major(v: &str) -> String {
    v.split('.').next().unwrap_or_default().to_string()
}

/// At most `major.minor`: `10.15.7` → `10.15`.
pub fn major_minor(v: &str) -> String {
    let mut parts = v.splitn(3, '.');
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => format!("{a}.{b}"),
        (Some(a), None) => a.to_string(),
        _ => String::new(),
    }
}

/// Digits right after `token` in `ua` (the version that follows a product token).
fn version_after(ua: &str, token: &str) -> String {
    ua.find(token)
        .map(|i| {
            ua[i + token.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect()
        })
        .unwrap_or_default()
}

const SHARDS: usize = 8;
const CACHE_PER_SHARD: usize = 2048;

impl UaParser {
    /// A parser with an empty cache.
    pub fn new() -> Self {
        let cap = NonZeroUsize::new(CACHE_PER_SHARD).unwrap_or(NonZeroUsize::MIN);
        Self {
            inner: woothee::parser::Parser::new(),
            keys: std::collections::hash_map::RandomState::new(),
            cache: (0..SHARDS)
                .map(|_| Mutex::new(lru::LruCache::new(cap)))
                .collect(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// (hits, misses) of the cache so far.
    pub fn cache_stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Parses a user agent without hints.
    pub fn parse(&self, ua: &str) -> UaFacts {
        self.parse_with_hints(ua, &ClientHints::default())
    }

    /// Parses a user agent and Client Hints. Never fails: unknown agents give empty facts.
    pub fn parse_with_hints(&self, ua: &str, hints: &ClientHints) -> UaFacts {
        use std::hash::BuildHasher;
        let key = self.keys.hash_one((ua, hints));
        let shard = &self.cache[(key as usize) % SHARDS];
        if let Some(f) = shard.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return f.clone();
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let facts = self.parse_uncached(ua, hints);
        shard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(key, facts.clone());
        facts
    }

    fn parse_uncached(&self, ua: &str, hints: &ClientHints) -> UaFacts {
        let lower = ua.to_ascii_lowercase();
        let bot = if HEADLESS.iter().any(|t| lower.contains(t)) {
            Some(BotKind::Headless)
        } else if MONITORING.iter().any(|t| lower.contains(t)) {
            Some(BotKind::Monitoring)
        } else if LIBRARIES.iter().any(|t| lower.contains(t))
            || lower.starts_with("curl")
            || lower.starts_with("wget")
        {
            Some(BotKind::Library)
        } else {
            None
        };
        let r = self.inner.parse(ua);
        let crawler = r.as_ref().is_some_and(|r| r.category == "crawler")
            || CRAWLER_TOKENS.iter().any(|t| lower.contains(t));
        let mut f = match &r {
            Some(r) => {
                let os = known(r.os);
                let device = match r.category {
                    "pc" => "desktop",
                    "smartphone"
                        if os == "iPad" || (os == "Android" && !lower.contains("mobile")) =>
                    {
                        "tablet"
                    }
                    "smartphone" | "mobilephone" => "mobile",
                    "appliance" => "appliance",
                    _ => "unknown",
                };
                UaFacts {
                    browser: known(r.name),
                    browser_version: major(&known(r.version)),
                    os,
                    os_version: major_minor(&known(&r.os_version)),
                    device,
                    bot: None,
                }
            }
            None => UaFacts {
                browser: String::new(),
                browser_version: String::new(),
                os: String::new(),
                os_version: String::new(),
                device: "unknown",
                bot: None,
            },
        };
        f.bot = bot.or(crawler.then_some(BotKind::Crawler));
        if f.bot.is_some() {
            return f;
        }
        if let Some((token, name)) = BROWSERS.iter().find(|(t, _)| ua.contains(t)) {
            f.browser = (*name).to_string();
            f.browser_version = version_after(ua, token);
        }
        if let Some((_, os)) = APPLIANCES.iter().find(|(t, _)| ua.contains(t)) {
            f.os = (*os).to_string();
            f.os_version = String::new();
            f.device = "appliance";
        }
        if let Some((token, name)) = APP_CLIENTS.iter().find(|(t, _)| lower.contains(t)) {
            f.browser = (*name).to_string();
            f.browser_version = version_after(&lower, token);
            f.device = "app";
            if lower.contains("darwin/") && f.os.is_empty() {
                f.os = "iOS".into();
            }
            if *token == "okhttp/" && f.os.is_empty() {
                f.os = "Android".into();
            }
        }
        self.apply_hints(&mut f, hints);
        f
    }

    fn apply_hints(&self, f: &mut UaFacts, hints: &ClientHints) {
        if let Some(brands) = &hints.brands {
            let names: Vec<(String, String)> = brands
                .split(',')
                .filter_map(|b| {
                    let mut parts = b.split(";v=");
                    let name = parts.next()?.trim().trim_matches('"').to_string();
                    let ver = parts
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .trim_matches('"')
                        .to_string();
                    Some((name, ver))
                })
                .filter(|(n, _)| {
                    !n.is_empty() && n != "Chromium" && !n.to_ascii_lowercase().contains("not")
                })
                .collect();
            if let Some((name, ver)) = names.first() {
                f.browser = match name.as_str() {
                    "Google Chrome" => "Chrome".into(),
                    "Microsoft Edge" => "Edge".into(),
                    "Brave" => "Brave".into(),
                    "Opera" => "Opera".into(),
                    other => other.to_string(),
                };
                f.browser_version = major(ver);
            }
        }
        if let Some(p) = hints.platform.as_deref() {
            let major_v: u32 = hints
                .platform_version
                .as_deref()
                .map(major)
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            match p {
                "Windows" if major_v >= 13 => {
                    (f.os, f.os_version) = ("Windows 11".into(), String::new())
                }
                "Windows" if major_v > 0 => {
                    (f.os, f.os_version) = ("Windows 10".into(), String::new())
                }
                "macOS" => {
                    f.os = "Mac OSX".into();
                    if let Some(v) = &hints.platform_version {
                        f.os_version = major_minor(v);
                    }
                }
                "Android" | "Chrome OS" | "ChromeOS" | "Linux" => {
                    f.os = if p == "ChromeOS" {
                        "Chrome OS".into()
                    } else {
                        p.into()
                    };
                    if let Some(v) = &hints.platform_version {
                        f.os_version = major_minor(v);
                    }
                }
                _ => {}
            }
        }
        match (hints.mobile, hints.model.as_deref()) {
            (Some(true), _) => f.device = "mobile",
            (Some(false), Some(m)) if !m.is_empty() && f.os == "Android" => f.device = "tablet",
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36";
    const CHROME_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

    #[test]
    fn desktop_chrome() {
        let f = UaParser::new().parse(CHROME_MAC);
        assert_eq!(
            (f.browser.as_str(), f.browser_version.as_str()),
            ("Chrome", "120")
        );
        assert_eq!(
            (f.os.as_str(), f.os_version.as_str(), f.device),
            ("Mac OSX", "10.15", "desktop")
        );
        assert_eq!(f.bot, None);
    }

    #[test]
    fn client_hints_say_windows_11_and_brave() {
        let p = UaParser::new();
        let hints = ClientHints {
            brands: Some(r#""Brave";v="124", "Chromium";v="124", "Not-A.Brand";v="99""#.into()),
            platform: Some("Windows".into()),
            platform_version: Some("15.0.0".into()),
            mobile: Some(false),
            model: None,
        };
        let f = p.parse_with_hints(CHROME_WIN, &hints);
        assert_eq!(
            (
                f.browser.as_str(),
                f.browser_version.as_str(),
                f.os.as_str()
            ),
            ("Brave", "124", "Windows 11")
        );
        let f = p.parse_with_hints(
            CHROME_WIN,
            &ClientHints {
                platform_version: Some("10.0.0".into()),
                ..hints
            },
        );
        assert_eq!(f.os, "Windows 10");
    }

    #[test]
    fn cache_hits() {
        let p = UaParser::new();
        for _ in 0..10 {
            p.parse(CHROME_MAC);
        }
        assert_eq!(p.cache_stats(), (9, 1));
        // The hints are part of the key: the same agent with and without them is two entries,
        // each answering for its own.
        let hints = ClientHints {
            platform: Some("Windows".into()),
            platform_version: Some("15.0.0".into()),
            ..ClientHints::default()
        };
        for _ in 0..3 {
            assert_eq!(p.parse_with_hints(CHROME_WIN, &hints).os, "Windows 11");
        }
        assert_eq!(p.parse(CHROME_WIN).os, "Windows 10");
        assert_eq!(p.parse_with_hints(CHROME_WIN, &hints).os, "Windows 11");
        assert_eq!(p.cache_stats(), (12, 3));
    }

    #[test]
    fn bots_by_reason() {
        let p = UaParser::new();
        assert_eq!(
            p.parse("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
                .bot,
            Some(BotKind::Crawler)
        );
        assert_eq!(
            p.parse("Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/120.0.0.0 Safari/537.36")
                .bot,
            Some(BotKind::Headless)
        );
        assert_eq!(
            p.parse("Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)")
                .bot,
            Some(BotKind::Monitoring)
        );
        assert_eq!(p.parse("curl/8.4.0").bot, Some(BotKind::Library));
        assert_eq!(
            p.parse("python-requests/2.31.0").bot,
            Some(BotKind::Library)
        );
        assert_eq!(p.parse("").bot, None);
        assert_eq!(p.parse("").device, "unknown");
    }
}
