//! Plausible's vocabularies for dimension values: what a stored value reads as in the Stats
//! API, and which stored value a filter value selects.
//!
//! The collector stores woothee's words, corrected by Veil (`collector/src/pipeline/enrich.rs`):
//! device classes `desktop`/`mobile`/`tablet`/`appliance`/`app`/`unknown`, OS names `Mac OSX`,
//! `Windows 10`, `Linux`, `iPhone`, browser names `Edge`, `Samsung Internet`, `Facebook`…
//! Plausible answers with its own (UAInspector's, mapped by Plausible's ingestion):
//!
//! | dimension | stored → answered |
//! | --- | --- |
//! | `visit:device` | `desktop` → `Desktop`, `mobile` → `Mobile`, `tablet` → `Tablet`, `appliance` (TVs, consoles) → `Desktop`, `app` → `App` (Veil's own: app SDK and HTTP-client traffic), `unknown`/empty → `(not set)` |
//! | `visit:os` | [`OSES`]: `Mac OSX` → `Mac`, `Windows 10`/`Windows 11`/… → `Windows`, `iPhone`/`iPod` → `iOS`, `iPad` → `iPadOS`, `Linux` → `GNU/Linux`, `ChromeOS` → `Chrome OS`; empty → `(not set)`; others as stored |
//! | `visit:os_version` | Windows: the release from the stored OS name (`Windows 10` → `10`, `Windows 11` → `11`, `Windows 7` → `7`); others the stored `major.minor` (`10.15`, `17.1`); empty → `(not set)` |
//! | `visit:browser` | [`BROWSERS`]: `Edge` → `Microsoft Edge`, `Samsung Internet` → `Samsung Browser`, `DuckDuckGo` → `DuckDuckGo Privacy Browser`, in-app browsers (Facebook, Instagram, LINE, Snapchat, TikTok, LinkedIn, X, woothee's `Webview`) → `Mobile App`; empty → `(not set)` |
//! | `visit:browser_version` | as stored (the major version; Plausible's is `major.minor`); empty → `(not set)` |
//! | `visit:source`, `visit:referrer` | empty → `Direct / None` |
//! | `visit:utm_*` | empty → `(not set)` |
//! | `visit:country_name` | the short English name of Debian's iso-codes ([`super::country_names`]: `United Kingdom`, `United States`, `South Korea`) |
//!
//! # Why at the API boundary, not in storage
//!
//! The mapping is SQL over the stored column ([`label_sql`]: one `transform(col, [from…],
//! [to…], col)`, which ClickHouse 18.16 and 26 both run), made by the dimension expression
//! ([`super::expr::dim_expr`]) that every source shares — raw events, visit rows, the joined
//! rows and the daily rollup's `value`. So:
//! - stored rows of every age answer with Plausible's words, with no migration and no rewrite
//!   of the rollups (a migration would have to rewrite `events`, `visits`, `visits_daily` and
//!   the filtered rows, and the in-flight spool, in one step);
//! - filters apply to the same expression as breakdowns, so `is`, `contains` and `matches`
//!   with Plausible's values (`["is","visit:os",["GNU/Linux"]]`) select the rows a breakdown
//!   labels so, and the old words no longer match (a filter means what the answer shows);
//! - the daily rollups answer the same as raw events: their rows keep stored values and the
//!   same mapping runs over them. A single-value filter answered by the rollup's **filtered
//!   rows** needs the one stored value it selects ([`stored_value`]); where Plausible's value
//!   stands for several stored ones (`Windows` for each release, `Desktop` for desktops and
//!   TVs) the query reads visit rows instead;
//! - the collector keeps storing what it parses, so the vocabulary can be refined later
//!   without touching data.
//!
//! # Places
//!
//! The collector stores a region as `code|name` (`DE-BY|Bavaria`) and a city as `id|name`
//! (`2867714|Munich`) — codes and ids from MaxMind records or, for ip-location-db's files
//! (the default), from Veil's table of their names (`veil_schemas::places`) — and the name
//! alone when it knows no code (rows stored before, names the table lacks). The dimension
//! expressions split the value ([`label_sql`], [`place_name_sql`]):
//!
//! | dimension | `DE-BY\|Bavaria` | `2867714\|Munich` | `Bavaria` (name only) |
//! | --- | --- | --- | --- |
//! | `visit:region` | `DE-BY` | | `Bavaria` |
//! | `visit:region_name` | `Bavaria` | | `Bavaria` |
//! | `visit:city` | | `2867714` | (the name) |
//! | `visit:city_name` | | `Munich` | (the name) |
//!
//! So Plausible's filters (`["is", "visit:region", ["DE-BY"]]`, `["is", "visit:city",
//! [2867714]]`, `["is", "visit:city_name", ["Munich"]]`) select the rows a breakdown labels
//! so, and rows stored by name before answer by name in both. Why one column and not two: the
//! module docs of `veil_schemas::places`. Filters on places are answered from visit rows, not
//! the daily rollup's filtered rows ([`stored_value`] names no single stored value).
//!
//! `visit:os_version` for Windows reads the stored OS name too (the stored version of Windows
//! is woothee's `NT 10.0`, or empty when Client Hints said Windows 11), so it is not answered
//! from the daily rollups (whose rows carry one column's value), only from visit rows and events.

use veil_schemas::places;
use veil_schemas::sql;
use veil_schemas::sql::{lit, Sql};

use super::country_names::COUNTRY_NAMES;

/// Plausible's word for an empty UTM tag, device, OS or browser.
pub const NOT_SET: &str = "(not set)";
/// Plausible's word for a visit without a source or referrer.
pub const NO_REF: &str = "Direct / None";

/// Stored device class → Plausible's device.
pub const DEVICES: &[(&str, &str)] = &[
    ("desktop", "Desktop"),
    ("mobile", "Mobile"),
    ("tablet", "Tablet"),
    // Plausible counts TVs and consoles as desktops.
    ("appliance", "Desktop"),
    ("app", "App"),
    ("unknown", NOT_SET),
];

/// Stored OS name → Plausible's OS (names not listed are answered as stored).
pub const OSES: &[(&str, &str)] = &[
    ("Mac OSX", "Mac"),
    ("Windows 11", "Windows"),
    ("Windows 10", "Windows"),
    ("Windows 8.1", "Windows"),
    ("Windows 8", "Windows"),
    ("Windows 7", "Windows"),
    ("Windows Vista", "Windows"),
    ("Windows XP", "Windows"),
    ("Windows 2000", "Windows"),
    ("Windows Me", "Windows"),
    ("Windows 98", "Windows"),
    ("Windows 95", "Windows"),
    ("Windows NT 4.0", "Windows"),
    ("Windows UNKNOWN Ver", "Windows"),
    ("Windows Phone OS", "Windows Phone"),
    ("iPhone", "iOS"),
    ("iPod", "iOS"),
    ("iPad", "iPadOS"),
    ("Linux", "GNU/Linux"),
    ("ChromeOS", "Chrome OS"),
    ("BlackBerry", "BlackBerry OS"),
    ("BlackBerry 10", "BlackBerry OS"),
    ("SymbianOS", "Symbian OS"),
    ("Fire TV", "Fire OS"),
];

/// Stored Windows OS name → Plausible's `os_version` of it.
pub const WINDOWS_VERSIONS: &[(&str, &str)] = &[
    ("Windows 11", "11"),
    ("Windows 10", "10"),
    ("Windows 8.1", "8.1"),
    ("Windows 8", "8"),
    ("Windows 7", "7"),
    ("Windows Vista", "Vista"),
    ("Windows XP", "XP"),
    ("Windows 2000", "2000"),
    ("Windows Me", "ME"),
    ("Windows 98", "98"),
    ("Windows 95", "95"),
    ("Windows NT 4.0", "NT"),
    ("Windows UNKNOWN Ver", NOT_SET),
];

/// Stored browser name → Plausible's browser (names not listed are answered as stored).
pub const BROWSERS: &[(&str, &str)] = &[
    ("Edge", "Microsoft Edge"),
    ("Samsung Internet", "Samsung Browser"),
    ("SamsungBrowser", "Samsung Browser"),
    ("DuckDuckGo", "DuckDuckGo Privacy Browser"),
    // In-app browsers: Plausible names every mobile app's web view `Mobile App`.
    ("Facebook", "Mobile App"),
    ("Instagram", "Mobile App"),
    ("LINE", "Mobile App"),
    ("Snapchat", "Mobile App"),
    ("TikTok", "Mobile App"),
    ("LinkedIn", "Mobile App"),
    ("X (Twitter)", "Mobile App"),
    ("Webview", "Mobile App"),
];

/// The mapping of stored column `col` (empty when its values are answered as stored).
pub fn table(col: &str) -> &'static [(&'static str, &'static str)] {
    match col {
        "device" => DEVICES,
        "os" => OSES,
        "browser" => BROWSERS,
        _ => &[],
    }
}

/// What an empty stored value of `col` reads as, when Plausible names it.
pub fn empty_label(col: &str) -> Option<&'static str> {
    match col {
        "source" | "referrer" => Some(NO_REF),
        "utm_source" | "utm_medium" | "utm_campaign" | "utm_content" | "utm_term" | "device"
        | "os" | "os_version" | "browser" | "browser_version" => Some(NOT_SET),
        _ => None,
    }
}

/// Plausible's value of `stored` in column `col` — what [`label_sql`] computes, for tests and
/// for values known in Rust.
pub fn label(col: &str, stored: &str, os: &str) -> String {
    if PLACES.contains(&col) {
        return places::decode(stored).0.to_string();
    }
    if col == "os_version" {
        if let Some((_, v)) = WINDOWS_VERSIONS.iter().find(|(w, _)| *w == os) {
            return (*v).to_string();
        }
    }
    if stored.is_empty() {
        if let Some(e) = empty_label(col) {
            return e.to_string();
        }
    }
    match table(col).iter().find(|(from, _)| *from == stored) {
        Some((_, to)) => (*to).to_string(),
        None => stored.to_string(),
    }
}

/// `transform(e, [from…], [to…], e)`, or `e` itself when `pairs` is empty.
fn transform(e: &Sql, pairs: &[(&str, &str)]) -> Sql {
    if pairs.is_empty() {
        return e.clone();
    }
    sql!(
        "transform({0}, [{1}], [{2}], {0})",
        e.clone(),
        Sql::join(pairs.iter().map(|(f, _)| lit(f)), ", "),
        Sql::join(pairs.iter().map(|(_, t)| lit(t)), ", ")
    )
}

/// SQL for Plausible's value of stored column `col`, whose stored value is `e`. For
/// `os_version`, `os` is the stored OS name's expression (Windows' release is in it); `None`
/// answers the stored version alone.
pub fn label_sql(col: &str, e: Sql, os: Option<Sql>) -> Sql {
    if PLACES.contains(&col) {
        // The code (or id) before the `|` (`veil_schemas::places`).
        return sql!("replaceRegexpOne({}, '[|].*$', '')", e);
    }
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    if let Some(empty) = empty_label(col) {
        pairs.push(("", empty));
    }
    pairs.extend(table(col).iter().copied());
    let mapped = transform(&e, &pairs);
    match (col, os) {
        ("os_version", Some(os)) => sql!(
            "if({0} IN ({1}), {2}, {3})",
            os.clone(),
            Sql::join(WINDOWS_VERSIONS.iter().map(|(w, _)| lit(w)), ", "),
            transform(&os, WINDOWS_VERSIONS),
            mapped
        ),
        _ => mapped,
    }
}

/// The place columns stored as `code|name` ([`places`]).
pub const PLACES: &[&str] = &["region", "city"];

/// The name part of place value `e` ([`places`]): after the `|`, the whole value without one.
pub fn place_name_sql(e: Sql) -> Sql {
    sql!("replaceRegexpOne({}, '^[^|]*[|]', '')", e)
}

/// The code part of place value `e` ([`places`]): before the `|`, the whole value without one
/// (`DE-BY|Bavaria` and `DE-BY` are both `DE-BY`; a value stored by name alone stays it).
pub fn place_code_sql(e: Sql) -> Sql {
    sql!("splitByChar('|', {})[1]", e)
}

/// `country_code` → short English country name (the code itself when unknown).
pub fn country_name_sql(col: &'static str) -> Sql {
    let e = Sql::new(col);
    transform(&e, COUNTRY_NAMES)
}

/// The one stored value of `col` that reads as `value`, for the daily rollup's filtered rows;
/// `None` when no stored value or several do (the query then reads visit rows). A stored word
/// Plausible answers differently (`Linux`, `desktop`) selects nothing under its own name.
pub fn stored_value(col: &str, value: &str) -> Option<String> {
    // A code is stored with its name (`DE-BY|Bavaria`), and rows of other ages by name alone.
    if PLACES.contains(&col) {
        return None;
    }
    let mut from: Vec<&str> = Vec::new();
    if empty_label(col) == Some(value) {
        from.push("");
    }
    if col == "os_version" && WINDOWS_VERSIONS.iter().any(|(_, v)| *v == value) {
        return None;
    }
    let t = table(col);
    from.extend(t.iter().filter(|(_, to)| *to == value).map(|(f, _)| *f));
    // A stored word answered as something else selects nothing under its own name.
    if (value.is_empty() && empty_label(col).is_some())
        || t.iter().any(|(f, to)| *f == value && *to != value)
    {
        return None;
    }
    match from.as_slice() {
        [] => Some(value.to_string()),
        [one] => Some((*one).to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn woothee_words_read_as_plausibles() {
        assert_eq!(label("device", "desktop", ""), "Desktop");
        assert_eq!(label("device", "mobile", ""), "Mobile");
        assert_eq!(label("device", "tablet", ""), "Tablet");
        assert_eq!(label("device", "unknown", ""), "(not set)");
        assert_eq!(label("os", "Mac OSX", ""), "Mac");
        assert_eq!(label("os", "Windows 11", ""), "Windows");
        assert_eq!(label("os", "Linux", ""), "GNU/Linux");
        assert_eq!(label("os", "iPhone", ""), "iOS");
        assert_eq!(label("os", "Android", ""), "Android");
        assert_eq!(label("os", "Chrome OS", ""), "Chrome OS");
        assert_eq!(label("os", "ChromeOS", ""), "Chrome OS");
        assert_eq!(label("os_version", "NT 10.0", "Windows 10"), "10");
        assert_eq!(label("os_version", "", "Windows 11"), "11");
        assert_eq!(label("os_version", "10.15", "Mac OSX"), "10.15");
        assert_eq!(label("os_version", "", "Android"), "(not set)");
        assert_eq!(label("browser", "Edge", ""), "Microsoft Edge");
        assert_eq!(label("browser", "Samsung Internet", ""), "Samsung Browser");
        assert_eq!(label("browser", "Instagram", ""), "Mobile App");
        assert_eq!(label("browser", "Chrome", ""), "Chrome");
        assert_eq!(label("browser", "", ""), "(not set)");
        assert_eq!(label("utm_source", "", ""), "(not set)");
        assert_eq!(label("referrer", "", ""), "Direct / None");
        assert_eq!(label("source", "", ""), "Direct / None");
        assert_eq!(label("entry_page", "", ""), "");
        assert_eq!(label("region", "Bavaria", ""), "Bavaria");
    }

    #[test]
    fn every_mapping_is_a_function() {
        for col in ["device", "os", "browser"] {
            let t = table(col);
            for (i, (f, _)) in t.iter().enumerate() {
                assert!(!f.is_empty(), "{col}: the empty value is empty_label's");
                assert!(
                    t.iter().skip(i + 1).all(|(g, _)| g != f),
                    "{col}: {f} mapped twice"
                );
            }
        }
    }

    #[test]
    fn filter_values_select_one_stored_value_or_read_visits() {
        assert_eq!(stored_value("device", "Mobile").as_deref(), Some("mobile"));
        assert_eq!(
            stored_value("device", "Desktop"),
            None,
            "desktop and appliance"
        );
        assert_eq!(
            stored_value("device", "desktop"),
            None,
            "answered as Desktop"
        );
        assert_eq!(stored_value("device", "(not set)"), None, "'' and unknown");
        assert_eq!(stored_value("os", "Mac").as_deref(), Some("Mac OSX"));
        assert_eq!(stored_value("os", "GNU/Linux").as_deref(), Some("Linux"));
        assert_eq!(stored_value("os", "Linux"), None);
        assert_eq!(stored_value("os", "Windows"), None);
        assert_eq!(stored_value("os", "Android").as_deref(), Some("Android"));
        assert_eq!(stored_value("os", "(not set)").as_deref(), Some(""));
        assert_eq!(
            stored_value("browser", "Microsoft Edge").as_deref(),
            Some("Edge")
        );
        assert_eq!(stored_value("browser", "Mobile App"), None);
        assert_eq!(stored_value("browser", "Chrome").as_deref(), Some("Chrome"));
        assert_eq!(stored_value("utm_source", "(not set)").as_deref(), Some(""));
        assert_eq!(stored_value("utm_source", ""), None);
        assert_eq!(stored_value("source", "Direct / None").as_deref(), Some(""));
        assert_eq!(stored_value("country_code", "DE").as_deref(), Some("DE"));
    }

    #[test]
    fn country_names_are_the_short_ones() {
        let name = |c: &str| COUNTRY_NAMES.iter().find(|(k, _)| *k == c).map(|(_, n)| *n);
        assert_eq!(name("GB"), Some("United Kingdom"));
        assert_eq!(name("US"), Some("United States"));
        assert_eq!(name("KR"), Some("South Korea"));
        assert_eq!(name("DE"), Some("Germany"));
        assert_eq!(name("XK"), Some("Kosovo"));
    }

    #[test]
    fn label_sql_is_one_transform() {
        let s = label_sql("device", Sql::new("device"), None);
        assert!(
            s.as_str().starts_with("transform(device, ['', 'desktop'"),
            "{s}"
        );
        assert_eq!(
            label_sql("entry_page", Sql::new("entry_page"), None).as_str(),
            "entry_page"
        );
    }
}
