//! Step 2: turn the raw user agent into coarse facts (browser family and major version, OS and
//! version, device class) with woothee, and recognise bots. The raw string is not kept.
//!
//! Device classes: `desktop`, `mobile`, `tablet` (iPad, Android without `Mobile`), `appliance`
//! (consoles, TVs, readers), `unknown`. Bots are woothee's crawlers plus headless and automation
//! browsers; they are dropped as `dropped{reason="bot"}`.

/// Coarse facts from a user agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UaFacts {
    /// Browser family, e.g. `Chrome`; empty when unknown.
    pub browser: String,
    /// Major version only, e.g. `120`.
    pub browser_version: String,
    /// Operating system, e.g. `Mac OSX`, `Windows 10`, `Android`.
    pub os: String,
    /// At most `major.minor`.
    pub os_version: String,
    /// Device class.
    pub device: &'static str,
    /// A crawler, headless browser or automation tool.
    pub bot: bool,
}

/// Substrings (lower-case) of automation tools woothee does not call crawlers.
const AUTOMATION: &[&str] = &[
    "headlesschrome",
    "phantomjs",
    "lighthouse",
    "puppeteer",
    "playwright",
    "selenium",
    "electron-prerender",
];

/// woothee with Veil's mapping on top.
#[derive(Default)]
pub struct UaParser {
    inner: woothee::parser::Parser,
}

impl std::fmt::Debug for UaParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UaParser")
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

impl UaParser {
    /// A parser.
    pub fn new() -> Self {
        Self {
            inner: woothee::parser::Parser::new(),
        }
    }

    /// Parses a user agent. Never fails: unknown agents give empty facts and `unknown` device.
    pub fn parse(&self, ua: &str) -> UaFacts {
        let lower = ua.to_ascii_lowercase();
        let automation = AUTOMATION.iter().any(|a| lower.contains(a));
        let Some(r) = self.inner.parse(ua) else {
            return UaFacts {
                browser: String::new(),
                browser_version: String::new(),
                os: String::new(),
                os_version: String::new(),
                device: "unknown",
                bot: automation,
            };
        };
        let os = known(r.os);
        let device = match r.category {
            "pc" => "desktop",
            "smartphone" if os == "iPad" || (os == "Android" && !lower.contains("mobile")) => {
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
            bot: r.category == "crawler" || automation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36";
    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";
    const IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    const HEADLESS: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36";
    const WIN_FIREFOX: &str =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0";

    #[test]
    fn desktop_chrome() {
        let f = UaParser::new().parse(CHROME_MAC);
        assert_eq!(f.browser, "Chrome");
        assert_eq!(f.browser_version, "120");
        assert_eq!(f.os, "Mac OSX");
        assert_eq!(f.os_version, "10.15");
        assert_eq!(f.device, "desktop");
        assert!(!f.bot);
    }

    #[test]
    fn phones_and_tablets() {
        let p = UaParser::new();
        assert_eq!(p.parse(IPHONE).device, "mobile");
        assert_eq!(p.parse(IPAD).device, "tablet");
        let w = p.parse(WIN_FIREFOX);
        assert_eq!((w.browser.as_str(), w.device), ("Firefox", "desktop"));
    }

    #[test]
    fn bots() {
        let p = UaParser::new();
        assert!(p.parse(GOOGLEBOT).bot);
        assert!(p.parse(HEADLESS).bot);
        assert!(!p.parse("").bot);
        assert_eq!(p.parse("").device, "unknown");
    }
}
