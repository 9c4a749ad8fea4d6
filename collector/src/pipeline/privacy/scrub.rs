//! The scrubber: every string Veil stores from a sender (path, referrer, UTM values, event name,
//! props keys and values) passes through [`scrub`] before it is written. Whatever looks like a
//! personal identifier is replaced by a marker:
//!
//! | looks like | marker |
//! |---|---|
//! | e-mail address (also with `@` URL-encoded as `%40`) | `[email]` |
//! | JSON Web Token (`eyJ….….…`) | `[token]` |
//! | UUID | `[uuid]` |
//! | hex string of 24+ digits (API keys, session ids, hashes) | `[token]` |
//! | IPv4 or IPv6 address | `[ip]` |
//! | phone number (`+` international, or `555-123-4567`) | `[phone]` |
//! | card-like groups (`4111 1111 1111 1111`) or any run of 9+ digits | `[number]` |
//!
//! Dates (`2026-11-28`), versions (`1.2.3`) and short numbers (`/page/42`) are kept. The regex
//! engine runs in linear time on any input; strings with no digit, `@`, `%` or `eyJ` skip it,
//! and the rest are first asked whether anything matches at all (`is_match`: the regex crate's
//! lazy DFA, no capture groups) — most paths with a digit (`/page/42`, `124.0`) match nothing and
//! never pay for the capturing search that finds which marker a match takes.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::{Captures, Regex};

const PATTERN: &str = concat!(
    r"(?P<email>[A-Za-z0-9._%+\-]+(?:@|%40)[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,})",
    r"|(?P<jwt>eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]+)",
    r"|(?P<uuid>\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)",
    r"|(?P<ipv6>\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b|\b(?:[0-9a-fA-F]{1,4}:){1,6}:(?:[0-9a-fA-F]{1,4}:){0,5}[0-9a-fA-F]{1,4}\b)",
    r"|(?P<ipv4>\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b)",
    r"|(?P<hex>\b[0-9a-fA-F]{24,}\b)",
    r"|(?P<card>\b(?:\d{4}[ \-]){3}\d{4}\b)",
    r"|(?P<phone>\+\d{1,3}[ .\-]?\(?\d{1,4}\)?(?:[ .\-]?\d{2,4}){2,4}\b|\b\d{3}[ .\-]\d{3}[ .\-]\d{4}\b)",
    r"|(?P<digits>\d{9,})",
);

fn regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // The pattern is a constant checked by the tests below; building it cannot fail at run time.
    #[allow(clippy::expect_used)]
    RE.get_or_init(|| Regex::new(PATTERN).expect("scrub pattern compiles"))
}

fn marker(c: &Captures<'_>) -> &'static str {
    const GROUPS: [(&str, &str); 9] = [
        ("email", "[email]"),
        ("jwt", "[token]"),
        ("uuid", "[uuid]"),
        ("ipv6", "[ip]"),
        ("ipv4", "[ip]"),
        ("hex", "[token]"),
        ("card", "[number]"),
        ("phone", "[phone]"),
        ("digits", "[number]"),
    ];
    GROUPS
        .iter()
        .find(|(g, _)| c.name(g).is_some())
        .map(|(_, m)| *m)
        .unwrap_or("[redacted]")
}

/// Replaces identifiers in `s` by markers; borrows when nothing changes.
pub fn scrub(s: &str) -> Cow<'_, str> {
    // One pass over the bytes (a substring search for "eyJ" apart cost more than the rest).
    let b = s.as_bytes();
    let suspicious = b.iter().enumerate().any(|(i, c)| {
        c.is_ascii_digit()
            || *c == b'@'
            || *c == b'%'
            || (*c == b'e' && b.get(i + 1..i + 3) == Some(b"yJ".as_slice()))
    });
    if !suspicious {
        return Cow::Borrowed(s);
    }
    let re = regex();
    if !re.is_match(s) {
        return Cow::Borrowed(s);
    }
    re.replace_all(s, |c: &Captures<'_>| marker(c))
}

/// Scrubs a `String` in place (no allocation when nothing matches).
pub fn scrub_in_place(s: &mut String) {
    if let Cow::Owned(o) = scrub(s) {
        *s = o;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_become_markers() {
        let cases = [
            (
                "/users/jane.doe@example.org/settings",
                "/users/[email]/settings",
            ),
            ("/u/jane%40example.org", "/u/[email]"),
            (
                "/reset/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sflKxwRJSMeKKF2QT4fw",
                "/reset/[token]",
            ),
            ("/o/123e4567-e89b-12d3-a456-426614174000", "/o/[uuid]"),
            ("/s/5f2b8c9d0e1f2a3b4c5d6e7f8a9b", "/s/[token]"),
            ("from 203.0.113.9 ok", "from [ip] ok"),
            ("v6 2001:db8:85a3::8a2e:370:7334", "v6 [ip]"),
            ("call +44 20 7946 0958", "call [phone]"),
            ("call 555-123-4567", "call [phone]"),
            ("card 4111 1111 1111 1111", "card [number]"),
            ("/account/123456789012", "/account/[number]"),
        ];
        for (input, want) in cases {
            assert_eq!(scrub(input), want, "{input}");
        }
    }

    #[test]
    fn ordinary_values_are_kept() {
        for s in [
            "/blog/2026-11-28/hello",
            "/page/42",
            "/docs/v1.2.3",
            "Chrome",
            "/checkout",
            "pricing-plan-2",
            "/search/#top",
        ] {
            assert_eq!(scrub(s), s);
            assert!(matches!(scrub(s), Cow::Borrowed(_)));
        }
    }
}
