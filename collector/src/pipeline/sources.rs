//! The enrich stage, sources: referrer and campaign → a source name and a channel.
//!
//! The source is a friendly name for well-known referrers, matched on the registrable domain
//! (public-suffix list, the `psl` crate), so `www.google.co.uk` and `google.de` are both
//! "Google"; otherwise the referrer's host; otherwise `utm_source`. The channel follows the
//! usual marketing grouping: Paid Search, Paid Social, Paid (other), Email, Organic Search,
//! Organic Social, Organic Video, Referral, Direct. Click ids (`gclid`, `fbclid`, `msclkid`,
//! `ttclid`, `twclid`, `li_fat_id`, `wbraid`, `gbraid`) only mark a visit as paid; they are never
//! stored (the query string is dropped).

/// What a source is, for channel grouping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A search engine.
    Search,
    /// A social network.
    Social,
    /// A video site.
    Video,
    /// A webmail client.
    Email,
    /// Anything else.
    Other,
}

/// Registrable-domain label (or full domain) → name and kind.
const KNOWN: &[(&str, &str, Kind)] = &[
    ("google", "Google", Kind::Search),
    ("bing", "Bing", Kind::Search),
    ("duckduckgo", "DuckDuckGo", Kind::Search),
    ("yahoo", "Yahoo", Kind::Search),
    ("yandex", "Yandex", Kind::Search),
    ("baidu", "Baidu", Kind::Search),
    ("ecosia", "Ecosia", Kind::Search),
    ("qwant", "Qwant", Kind::Search),
    ("startpage", "Startpage", Kind::Search),
    ("brave.com", "Brave Search", Kind::Search),
    ("kagi.com", "Kagi", Kind::Search),
    ("naver", "Naver", Kind::Search),
    ("perplexity.ai", "Perplexity", Kind::Search),
    ("chatgpt.com", "ChatGPT", Kind::Other),
    ("facebook", "Facebook", Kind::Social),
    ("fb.me", "Facebook", Kind::Social),
    ("instagram", "Instagram", Kind::Social),
    ("t.co", "X (Twitter)", Kind::Social),
    ("twitter", "X (Twitter)", Kind::Social),
    ("x.com", "X (Twitter)", Kind::Social),
    ("linkedin", "LinkedIn", Kind::Social),
    ("lnkd.in", "LinkedIn", Kind::Social),
    ("reddit", "Reddit", Kind::Social),
    ("ycombinator.com", "Hacker News", Kind::Social),
    ("pinterest", "Pinterest", Kind::Social),
    ("tiktok", "TikTok", Kind::Social),
    ("mastodon.social", "Mastodon", Kind::Social),
    ("bsky.app", "Bluesky", Kind::Social),
    ("threads.net", "Threads", Kind::Social),
    ("vk.com", "VKontakte", Kind::Social),
    ("youtube", "YouTube", Kind::Video),
    ("youtu.be", "YouTube", Kind::Video),
    ("vimeo", "Vimeo", Kind::Video),
    ("twitch", "Twitch", Kind::Video),
    ("github", "GitHub", Kind::Other),
    ("mail.google.com", "Gmail", Kind::Email),
    ("outlook.live.com", "Outlook", Kind::Email),
    ("mail.yahoo.com", "Yahoo Mail", Kind::Email),
    ("proton.me", "Proton Mail", Kind::Email),
];

/// Query parameters that identify a paid click.
pub const CLICK_IDS: [&str; 8] = [
    "gclid",
    "gbraid",
    "wbraid",
    "fbclid",
    "msclkid",
    "ttclid",
    "twclid",
    "li_fat_id",
];

/// [`KNOWN`] split once into its dotted entries (matched as the host or a parent domain of it)
/// and its bare labels (matched against the registrable domain's first label), so a lookup
/// does not test every entry for a dot again (that `memchr` was 6.7 % of the collector's
/// instructions in issue 18's profile).
struct Table {
    dotted: Vec<(&'static str, &'static str, Kind)>,
    labels: Vec<(&'static str, &'static str, Kind)>,
}

static TABLE: std::sync::LazyLock<Table> = std::sync::LazyLock::new(|| {
    let (dotted, labels) = KNOWN.iter().partition(|(k, _, _)| k.contains('.'));
    Table { dotted, labels }
});

/// The friendly name and kind of a referrer host (lower-case, no `www.`), if known.
pub fn known(host: &str) -> Option<(&'static str, Kind)> {
    let table = &*TABLE;
    // Dotted entries match the host or any subdomain of it (no allocation: this runs per event).
    let under = |k: &str| {
        host == k
            || (host.len() > k.len()
                && host.ends_with(k)
                && host.as_bytes()[host.len() - k.len() - 1] == b'.')
    };
    if let Some((_, name, kind)) = table.dotted.iter().find(|(k, _, _)| under(k)) {
        return Some((name, *kind));
    }
    let registrable = psl::domain_str(host).unwrap_or(host);
    let label = registrable.split('.').next().unwrap_or(registrable);
    table
        .labels
        .iter()
        .find(|(k, _, _)| *k == label)
        .map(|(_, n, kind)| (*n, *kind))
}

/// The channel of a visit.
pub fn channel(
    referrer_host: &str,
    utm_source: &str,
    utm_medium: &str,
    paid_click: bool,
) -> &'static str {
    let medium = utm_medium.to_ascii_lowercase();
    let kind = known(referrer_host)
        .or_else(|| known(&utm_source.to_ascii_lowercase()))
        .map(|(_, k)| k)
        .or_else(|| {
            let s = utm_source.to_ascii_lowercase();
            TABLE
                .labels
                .iter()
                .find(|(k, _, _)| s == *k)
                .map(|(_, _, k)| *k)
        });
    let paid = paid_click
        || [
            "cpc",
            "ppc",
            "paid",
            "paidsearch",
            "paid_search",
            "paid-social",
            "paid_social",
            "cpm",
            "display",
            "retargeting",
        ]
        .iter()
        .any(|m| medium == *m || medium.starts_with("paid"));
    if paid {
        return match kind {
            Some(Kind::Search) => "Paid Search",
            Some(Kind::Social) | Some(Kind::Video) => "Paid Social",
            _ => "Paid",
        };
    }
    if medium == "email" || medium == "newsletter" || matches!(kind, Some(Kind::Email)) {
        return "Email";
    }
    match kind {
        Some(Kind::Search) => "Organic Search",
        Some(Kind::Social) => "Organic Social",
        Some(Kind::Video) => "Organic Video",
        _ if !referrer_host.is_empty() || !utm_source.is_empty() => "Referral",
        _ => "Direct",
    }
}

/// The source to show: the known name of the referrer, else its host, else `utm_source`.
pub fn source(referrer_host: &str, utm_source: &str) -> String {
    if !referrer_host.is_empty() {
        return known(referrer_host)
            .map(|(n, _)| n.to_string())
            .unwrap_or_else(|| referrer_host.to_string());
    }
    if let Some((n, _)) = known(&utm_source.to_ascii_lowercase()) {
        return n.to_string();
    }
    utm_source.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_across_public_suffixes() {
        assert_eq!(source("google.co.uk", ""), "Google");
        assert_eq!(source("google.de", ""), "Google");
        assert_eq!(source("news.ycombinator.com", ""), "Hacker News");
        assert_eq!(source("l.facebook.com", ""), "Facebook");
        assert_eq!(source("t.co", ""), "X (Twitter)");
        assert_eq!(source("blog.example.org", ""), "blog.example.org");
        assert_eq!(source("", "newsletter"), "newsletter");
        assert_eq!(source("", "reddit"), "Reddit");
    }

    #[test]
    fn channels() {
        assert_eq!(channel("", "", "", false), "Direct");
        assert_eq!(channel("google.com", "", "", false), "Organic Search");
        assert_eq!(channel("google.com", "", "", true), "Paid Search");
        assert_eq!(channel("", "google", "cpc", false), "Paid Search");
        assert_eq!(channel("l.facebook.com", "", "", true), "Paid Social");
        assert_eq!(channel("reddit.com", "", "", false), "Organic Social");
        assert_eq!(channel("youtube.com", "", "", false), "Organic Video");
        assert_eq!(channel("", "newsletter", "email", false), "Email");
        assert_eq!(channel("mail.google.com", "", "", false), "Email");
        assert_eq!(channel("someblog.net", "", "", false), "Referral");
        assert_eq!(channel("", "partner", "", false), "Referral");
    }
}
