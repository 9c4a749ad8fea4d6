//! The generator's data tables: client profiles, places, traffic sources, the site's pages and
//! the model's percentages. Plain values; [`super`] turns them into SQL (every string through
//! [`lit`](crate::sql::lit)).

use super::Mix;

/// Client profiles: weight, device, browser, browser major version, OS, four OS versions.
pub(super) type Profile = (
    u32,
    &'static str,
    &'static str,
    u32,
    &'static str,
    [&'static str; 4],
);
pub(super) const PROFILES: &[Profile] = &[
    (22, "desktop", "Chrome", 131, "Windows 10", ["NT 10.0"; 4]),
    (8, "desktop", "Chrome", 131, "Mac OSX", ["10.15"; 4]),
    (9, "desktop", "Safari", 18, "Mac OSX", ["10.15"; 4]),
    (5, "desktop", "Firefox", 133, "Windows 10", ["NT 10.0"; 4]),
    (2, "desktop", "Firefox", 133, "Linux", [""; 4]),
    (5, "desktop", "Edge", 131, "Windows 10", ["NT 10.0"; 4]),
    (2, "desktop", "Chrome", 131, "Linux", [""; 4]),
    (1, "desktop", "Opera", 115, "Windows 10", ["NT 10.0"; 4]),
    (1, "desktop", "Chrome", 131, "ChromeOS", [""; 4]),
    (
        20,
        "mobile",
        "Safari",
        18,
        "iPhone",
        ["18.1", "18.0", "17.6", "17.5"],
    ),
    (
        3,
        "mobile",
        "Chrome",
        131,
        "iPhone",
        ["18.1", "18.0", "17.6", "17.5"],
    ),
    (
        13,
        "mobile",
        "Chrome",
        131,
        "Android",
        ["14", "14", "13", "15"],
    ),
    (
        4,
        "mobile",
        "Samsung Internet",
        27,
        "Android",
        ["14", "14", "13", "15"],
    ),
    (
        4,
        "tablet",
        "Safari",
        18,
        "iPad",
        ["18.1", "18.0", "17.6", "17.5"],
    ),
    (
        1,
        "tablet",
        "Chrome",
        131,
        "Android",
        ["14", "13", "13", "12"],
    ),
];

/// Places, most visitors first: country, region, city, ASN, ISP — region and city spelled as
/// ip-location-db spells them (`Ile-de-France`, `State of Berlin`), the keys of
/// [`crate::places`]' table, so each is stored with its code and GeoNames id.
pub(super) const PLACES: &[(&str, &str, &str, u32, &str)] = &[
    (
        "US",
        "California",
        "San Francisco",
        7922,
        "Comcast Cable Communications, LLC",
    ),
    ("DE", "Bavaria", "Munich", 3320, "Deutsche Telekom AG"),
    (
        "GB",
        "England",
        "London",
        2856,
        "British Telecommunications PLC",
    ),
    ("US", "New York", "New York", 701, "Verizon Business"),
    ("IN", "Karnataka", "Bengaluru", 24560, "Bharti Airtel Ltd."),
    ("FR", "Ile-de-France", "Paris", 3215, "Orange S.A."),
    (
        "CA",
        "Ontario",
        "Toronto",
        812,
        "Rogers Communications Canada Inc.",
    ),
    ("NL", "North Holland", "Amsterdam", 1136, "KPN B.V."),
    ("US", "Texas", "Austin", 7018, "AT&T Services, Inc."),
    (
        "BR",
        "Sao Paulo",
        "Sao Paulo",
        28573,
        "Claro NXT Telecomunicacoes Ltda",
    ),
    ("JP", "Tokyo", "Tokyo", 2516, "KDDI Corporation"),
    (
        "AU",
        "New South Wales",
        "Sydney",
        1221,
        "Telstra Corporation Ltd",
    ),
    (
        "SE",
        "Stockholm County",
        "Stockholm",
        3301,
        "Telia Company AB",
    ),
    ("ES", "Madrid", "Madrid", 3352, "Telefonica de Espana SAU"),
    (
        "PL",
        "Mazovia",
        "Warsaw",
        5617,
        "Orange Polska Spolka Akcyjna",
    ),
    (
        "US",
        "Washington",
        "Seattle",
        7922,
        "Comcast Cable Communications, LLC",
    ),
    ("DE", "State of Berlin", "Berlin", 3209, "Vodafone GmbH"),
    ("IT", "Lombardy", "Milan", 3269, "Telecom Italia S.p.A."),
    ("CH", "Zurich", "Zurich", 3303, "Swisscom (Schweiz) AG"),
    ("US", "Illinois", "Chicago", 7018, "AT&T Services, Inc."),
    ("IE", "Leinster", "Dublin", 5466, "Eircom Limited"),
    (
        "AT",
        "State of Vienna",
        "Vienna",
        8447,
        "A1 Telekom Austria AG",
    ),
    ("FI", "Uusimaa", "Helsinki", 719, "Elisa Oyj"),
    (
        "DK",
        "Capital Region",
        "Copenhagen",
        3292,
        "TDC Holding A/S",
    ),
    ("NO", "Oslo", "Oslo", 2119, "Telenor Norge AS"),
    ("SG", "", "Singapore", 4773, "M1 Limited"),
    ("KR", "Seoul", "Seoul", 4766, "Korea Telecom"),
    ("MX", "Mexico City", "Mexico City", 8151, "UNINET"),
    ("CZ", "Prague", "Prague", 5610, "O2 Czech Republic, a.s."),
    (
        "PT",
        "Lisbon",
        "Lisbon",
        3243,
        "MEO - Servicos de Comunicacoes e Multimedia S.A.",
    ),
    ("BE", "Brussels Capital", "Brussels", 5432, "Proximus NV"),
    ("NZ", "Auckland", "Auckland", 9500, "One New Zealand"),
];

/// Where visits come from: weight (per mille), referrer, referrer host, source, channel,
/// utm_source, utm_medium, utm_campaign — as the collector would store them.
pub(super) type Source = (
    u32,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);
pub(super) const SOURCES: &[Source] = &[
    (330, "", "", "", "Direct", "", "", ""),
    (
        270,
        "https://www.google.com/",
        "google.com",
        "Google",
        "Organic Search",
        "",
        "",
        "",
    ),
    (
        50,
        "https://duckduckgo.com/",
        "duckduckgo.com",
        "DuckDuckGo",
        "Organic Search",
        "",
        "",
        "",
    ),
    (
        40,
        "https://www.bing.com/",
        "bing.com",
        "Bing",
        "Organic Search",
        "",
        "",
        "",
    ),
    (
        70,
        "https://news.ycombinator.com/",
        "news.ycombinator.com",
        "Hacker News",
        "Organic Social",
        "",
        "",
        "",
    ),
    (
        40,
        "https://t.co/",
        "t.co",
        "X (Twitter)",
        "Organic Social",
        "",
        "",
        "",
    ),
    (
        35,
        "https://www.reddit.com/r/programming/",
        "reddit.com",
        "Reddit",
        "Organic Social",
        "",
        "",
        "",
    ),
    (
        20,
        "https://www.linkedin.com/",
        "linkedin.com",
        "LinkedIn",
        "Organic Social",
        "",
        "",
        "",
    ),
    (
        30,
        "https://github.com/",
        "github.com",
        "GitHub",
        "Referral",
        "",
        "",
        "",
    ),
    (
        15,
        "https://www.youtube.com/",
        "youtube.com",
        "YouTube",
        "Organic Video",
        "",
        "",
        "",
    ),
    (
        45,
        "",
        "",
        "newsletter",
        "Email",
        "newsletter",
        "email",
        "weekly-digest",
    ),
    (
        10,
        "",
        "",
        "newsletter",
        "Email",
        "newsletter",
        "email",
        "product-update",
    ),
    (
        20,
        "https://www.google.com/",
        "google.com",
        "Google",
        "Paid Search",
        "google",
        "cpc",
        "brand",
    ),
    (
        10,
        "https://lobste.rs/",
        "lobste.rs",
        "lobste.rs",
        "Referral",
        "",
        "",
        "",
    ),
    (
        8,
        "https://dev.to/",
        "dev.to",
        "dev.to",
        "Referral",
        "",
        "",
        "",
    ),
    (
        7,
        "https://blog.rust-lang.org/",
        "blog.rust-lang.org",
        "blog.rust-lang.org",
        "Referral",
        "",
        "",
        "",
    ),
];

pub(super) const FIXED_PAGES: &[&str] = &[
    "/",
    "/pricing",
    "/docs",
    "/blog",
    "/features",
    "/signup",
    "/login",
    "/about",
    "/changelog",
    "/contact",
    "/docs/getting-started",
    "/docs/installation",
    "/privacy",
    "/terms",
    "/careers",
    "/integrations",
    "/customers",
    "/security",
    "/status",
    "/compare/google-analytics",
];

pub(super) const DOC_TOPICS: &[&str] = &[
    "api",
    "tracker",
    "goals",
    "funnels",
    "filters",
    "dashboards",
    "exports",
    "retention",
    "self-hosting",
    "clickhouse",
    "proxy",
    "spa",
    "custom-events",
    "revenue",
    "apps",
    "sdks",
    "shared-links",
    "time-zones",
    "k-anonymity",
    "bots",
    "geoip",
    "upgrading",
    "backups",
    "cluster",
    "troubleshooting",
    "faq",
    "webhooks",
    "csv",
    "utm",
    "channels",
];

pub(super) const BLOG_A: &[&str] = &[
    "why",
    "how",
    "what",
    "when",
    "ten-ways",
    "the-case-for",
    "lessons-from",
    "a-guide-to",
];
pub(super) const BLOG_B: &[&str] = &[
    "privacy-first-analytics",
    "cookie-banners",
    "gdpr",
    "clickhouse-at-scale",
    "fast-dashboards",
    "bounce-rate",
    "utm-tags",
    "k-anonymity",
    "self-hosting",
    "rust-services",
    "web-vitals",
    "seo-basics",
    "product-metrics",
    "open-source-business",
    "event-tracking",
    "server-side-tracking",
    "ad-blockers",
    "data-retention",
    "referrer-policy",
    "growth-experiments",
    "pricing-pages",
    "landing-pages",
    "newsletters",
    "hacker-news-launch",
    "conversion-funnels",
    "mobile-traffic",
    "a-b-tests",
    "user-research",
    "attribution",
    "content-marketing",
];

/// The site's paths, most visited first: a fixed head, docs, then blog posts in a seeded order.
pub fn pages(seed: u64) -> Vec<String> {
    let mut out: Vec<String> = FIXED_PAGES.iter().map(|s| s.to_string()).collect();
    let mut rest: Vec<String> = DOC_TOPICS.iter().map(|t| format!("/docs/{t}")).collect();
    for (i, b) in BLOG_B.iter().enumerate() {
        for (j, a) in BLOG_A.iter().enumerate() {
            if (i * 3 + j) % 2 == 0 {
                rest.push(format!("/blog/{a}-{b}"));
            }
        }
    }
    let mut rng = Mix(seed ^ 0x7061_6765);
    for i in (1..rest.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        rest.swap(i, j);
    }
    out.extend(rest);
    out
}

/// Visits per visitor-day (1, 2, 3), percent.
pub(super) const VISITS_PCT: [u64; 3] = [80, 15, 5];
/// Pageviews per visit (1..=6), percent: 50 % bounce.
pub(super) const PAGEVIEWS_PCT: [u64; 6] = [50, 18, 12, 9, 6, 5];
/// Pageviews followed by an engagement event, percent.
pub(super) const ENGAGEMENT_PCT: u64 = 70;
/// Custom events on a visit's last page, per mille: Signup, Purchase, Outbound Link: Click.
pub(super) const CUSTOM_PERMILLE: [u64; 3] = [30, 8, 20];
