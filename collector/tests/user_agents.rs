//! A table of real-world user agents — desktop, mobile, tablet, in-app, TV and console, app
//! clients, bots — and what Veil makes of each: browser, OS, device class, bot reason.
//! It pins woothee's known misses (Edge, Opera, Samsung Internet, Yandex, in-app browsers, app
//! HTTP clients, monitoring and HTTP-library bots) so a dependency update cannot undo them.

#![allow(clippy::unwrap_used, missing_docs)]

use veil_collector::pipeline::enrich::{BotKind, ClientHints, UaParser};

/// (user agent, browser, os, device, bot)
const TABLE: &[(&str, &str, &str, &str, Option<BotKind>)] = &[
    // Desktop
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", "Chrome", "Windows 10", "desktop", None),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0", "Firefox", "Windows 10", "desktop", None),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80", "Edge", "Windows 10", "desktop", None),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 OPR/110.0.0.0", "Opera", "Windows 10", "desktop", None),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 YaBrowser/24.4.0.0 Safari/537.36", "Yandex Browser", "Windows 10", "desktop", None),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Vivaldi/6.7.3329.21", "Vivaldi", "Windows 10", "desktop", None),
    ("Mozilla/5.0 (Windows NT 6.1; Win64; x64; Trident/7.0; rv:11.0) like Gecko", "Internet Explorer", "Windows 7", "desktop", None),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15", "Safari", "Mac OSX", "desktop", None),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", "Chrome", "Mac OSX", "desktop", None),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0", "Firefox", "Mac OSX", "desktop", None),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", "Chrome", "Linux", "desktop", None),
    ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", "Firefox", "Linux", "desktop", None),
    ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", "Chrome", "ChromeOS", "desktop", None),
    // Mobile
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1", "Safari", "iPhone", "mobile", None),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1", "Chrome", "iPhone", "mobile", None),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/125.0 Mobile/15E148 Safari/605.1.15", "Firefox", "iPhone", "mobile", None),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) EdgiOS/124.2478.71 Mobile/15E148 Safari/605.1.15", "Edge", "iPhone", "mobile", None),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36", "Chrome", "Android", "mobile", None),
    ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36", "Chrome", "Android", "mobile", None),
    ("Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36", "Samsung Internet", "Android", "mobile", None),
    ("Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0", "Firefox", "Android", "mobile", None),
    ("Mozilla/5.0 (Linux; Android 13; SM-A536B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 EdgA/124.0.2478.64", "Edge", "Android", "mobile", None),
    ("Mozilla/5.0 (Linux; Android 12; M2101K6G) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 OPR/82.0.4227.78740", "Opera", "Android", "mobile", None),
    ("Mozilla/5.0 (Linux; U; Android 10; en-US; RMX2020 Build/QP1A.190711.020) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/78.0.3904.108 UCBrowser/13.4.0.1306 Mobile Safari/537.36", "UC Browser", "Android", "mobile", None),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 DuckDuckGo/5", "DuckDuckGo", "Android", "mobile", None),
    // Tablets
    ("Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1", "Safari", "iPad", "tablet", None),
    ("Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", "Chrome", "Android", "tablet", None),
    ("Mozilla/5.0 (Linux; Android 11; Lenovo TB-J606F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36", "Chrome", "Android", "tablet", None),
    // In-app browsers
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/460.0.0.35.107;FBBV/585543117]", "Facebook", "iPhone", "mobile", None),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP1A.240405.002; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/462.0.0.43.112;]", "Facebook", "Android", "mobile", None),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 330.0.3.27.85 (iPhone15,2; iOS 17_4; en_US)", "Instagram", "iPhone", "mobile", None),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Line/14.6.0", "LINE", "iPhone", "mobile", None),
    ("Mozilla/5.0 (Linux; Android 13; SM-G991B Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36 musical_ly_2023401040 BytedanceWebview/d8a21c6", "TikTok", "Android", "mobile", None),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Snapchat/13.5.0.36 (like Safari/8617.1.17.10.9, panda)", "Snapchat", "iPhone", "mobile", None),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [LinkedInApp]/9.29.7", "LinkedIn", "iPhone", "mobile", None),
    // TV, console, e-reader
    ("Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0 Safari/605.1.15", "Safari", "PlayStation 5", "appliance", None),
    ("Mozilla/5.0 (Nintendo Switch; WifiWebAuthApplet) AppleWebKit/606.4 (KHTML, like Gecko) NF/6.0.1.15.4 NintendoBrowser/5.1.0.20393", "", "Nintendo Switch", "appliance", None),
    ("Mozilla/5.0 (SMART-TV; Linux; Tizen 6.5) AppleWebKit/537.36 (KHTML, like Gecko) 85.0.4183.93/6.5 TV Safari/537.36", "Safari", "Smart TV", "appliance", None),
    ("Mozilla/5.0 (PlayStation 4 3.11) AppleWebKit/537.73 (KHTML, like Gecko)", "PlayStation 4", "PlayStation 4", "appliance", None),
    ("Mozilla/5.0 (X11; U; Linux armv7l like Android; en-us) AppleWebKit/531.2+ (KHTML, like Gecko) Version/5.0 Safari/533.2+ Kindle/3.0+", "Safari", "Kindle", "appliance", None),
    // App clients and SDKs
    ("okhttp/4.12.0", "OkHttp", "Android", "app", None),
    ("MyApp/1.2 CFNetwork/1494.0.7 Darwin/23.4.0", "CFNetwork", "iOS", "app", None),
    ("Dart/3.3 (dart:io)", "Dart", "", "app", None),
    ("Mozilla/5.0 (Linux) Not-A-Browser", "App", "Linux", "app", None),
    ("Mozilla/5.0 Umami/v20.20.2", "Umami SDK", "", "app", None),
    ("Ktor client", "Ktor", "", "app", None),
    // Crawlers
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "", "", "", Some(BotKind::Crawler)),
    ("Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.78 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "", "", "", Some(BotKind::Crawler)),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "", "", "", Some(BotKind::Crawler)),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)", "", "", "", Some(BotKind::Crawler)),
    ("Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", "", "", "", Some(BotKind::Crawler)),
    ("DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)", "", "", "", Some(BotKind::Crawler)),
    ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "", "", "", Some(BotKind::Crawler)),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", "", "", "", Some(BotKind::Crawler)),
    ("Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)", "", "", "", Some(BotKind::Crawler)),
    ("Twitterbot/1.0", "", "", "", Some(BotKind::Crawler)),
    ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "", "", "", Some(BotKind::Crawler)),
    // Headless and automation
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36", "", "", "", Some(BotKind::Headless)),
    ("Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse", "", "", "", Some(BotKind::Headless)),
    ("Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1", "", "", "", Some(BotKind::Headless)),
    // Monitoring
    ("Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)", "", "", "", Some(BotKind::Monitoring)),
    ("Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)", "", "", "", Some(BotKind::Monitoring)),
    ("Mozilla/5.0 (compatible; StatusCake)", "", "", "", Some(BotKind::Monitoring)),
    // HTTP libraries
    ("curl/8.4.0", "", "", "", Some(BotKind::Library)),
    ("python-requests/2.31.0", "", "", "", Some(BotKind::Library)),
    ("Go-http-client/2.0", "", "", "", Some(BotKind::Library)),
    ("Wget/1.21.4", "", "", "", Some(BotKind::Library)),
    ("axios/1.6.8", "", "", "", Some(BotKind::Library)),
    ("PostmanRuntime/7.37.3", "", "", "", Some(BotKind::Library)),
    ("Java/17.0.10", "", "", "", Some(BotKind::Library)),
];

#[test]
fn the_table_holds() {
    assert!(TABLE.len() >= 60, "{} user agents", TABLE.len());
    let p = UaParser::new();
    let mut wrong = Vec::new();
    for (ua, browser, os, device, bot) in TABLE {
        let f = p.parse(ua);
        let ok = f.bot == *bot
            && (bot.is_some() || (f.browser == *browser && f.os == *os && f.device == *device));
        if !ok {
            wrong.push(format!(
                "{ua}\n  got {:?} {:?} {:?} {:?}\n  want {browser:?} {os:?} {device:?} {bot:?}",
                f.browser, f.os, f.device, f.bot
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} wrong:\n{}",
        wrong.len(),
        TABLE.len(),
        wrong.join("\n")
    );
}

#[test]
fn client_hints_correct_the_frozen_user_agent() {
    let p = UaParser::new();
    let ua = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    let tablet = ClientHints {
        platform: Some("Android".into()),
        platform_version: Some("14.0.0".into()),
        mobile: Some(false),
        model: Some("SM-X710".into()),
        ..Default::default()
    };
    let f = p.parse_with_hints(ua, &tablet);
    assert_eq!(
        (f.os.as_str(), f.os_version.as_str(), f.device),
        ("Android", "14.0", "tablet")
    );
    let edge = ClientHints {
        brands: Some(
            r#""Microsoft Edge";v="124", "Chromium";v="124", "Not-A.Brand";v="99""#.into(),
        ),
        ..Default::default()
    };
    assert_eq!(p.parse_with_hints(ua, &edge).browser, "Edge");
}
