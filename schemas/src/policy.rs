//! Site policy: what a site's settings may be, checked in one place.
//!
//! One check per setting — aliases, the time zone's spelling, the retention, k
//! (`min_visitors`), goals and funnels (returned parsed) — on plain values, so this module
//! depends on no other; [`SiteSettings::validate`](crate::registry::SiteSettings::validate)
//! applies them all to a site's settings. The single checks serve settings
//! that come from flags rather than the admin API too ([`check_min_visitors`],
//! [`check_retention_days`], [`check_timezone_name`]). Whether ClickHouse knows the time zone
//! needs a server: [`Registry::check_timezone`](crate::registry::Registry::check_timezone).
//!
//! Every error is [`Error::Invalid`] with a message naming the field, as the admin API returns
//! it (400).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// Default k (smallest visitor count a published number may describe).
pub const DEFAULT_MIN_VISITORS: u64 = 5;
/// Smallest k any site may have: a "crowd" of one is a person.
pub const MIN_K: u64 = 2;
/// Largest k a site may choose.
pub const MAX_K: u64 = 1_000_000;
/// Most aliases per site.
pub const MAX_ALIASES: usize = 100;
/// Longest alias accepted, in bytes.
pub const MAX_ALIAS_BYTES: usize = 200;
/// Longest retention a site may choose, in days.
pub const MAX_RETENTION_DAYS: u32 = 36_500;
/// Most goals per site.
pub const MAX_GOALS: usize = 100;
/// Most funnels per site.
pub const MAX_FUNNELS: usize = 20;

/// A conversion goal: a custom event name or a page path pattern (`*` matches any run of
/// characters, everything else literally).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    /// Display name (unique per site); what `event:goal` returns.
    pub name: String,
    /// Completed by a custom event with this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_name: Option<String>,
    /// Completed by a pageview whose path matches this pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_path: Option<String>,
    /// A revenue goal's ISO 4217 currency (custom-event goals only): revenue metrics count
    /// the revenue its events carry in this currency and answer in Plausible's money shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// An ordered funnel of 2–8 goals, completed in order within one visit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Funnel {
    /// Display name (unique per site).
    pub name: String,
    /// Goal names, in order.
    pub steps: Vec<String>,
}

fn invalid(msg: String) -> Error {
    Error::Invalid(msg)
}

/// At most [`MAX_ALIASES`], each 1 to [`MAX_ALIAS_BYTES`] bytes without control characters,
/// none twice.
pub fn check_aliases(aliases: &[String]) -> Result<(), Error> {
    if aliases.len() > MAX_ALIASES {
        return Err(invalid(format!(
            "`aliases`: at most {MAX_ALIASES} aliases per site"
        )));
    }
    for (i, a) in aliases.iter().enumerate() {
        if a.is_empty() || a.len() > MAX_ALIAS_BYTES || a.chars().any(char::is_control) {
            return Err(invalid(format!(
                "`aliases[{i}]` must be 1 to {MAX_ALIAS_BYTES} bytes without control characters"
            )));
        }
        if aliases[..i].contains(a) {
            return Err(invalid(format!("`aliases[{i}]` {a:?} is listed twice")));
        }
    }
    Ok(())
}

/// Spelled like an IANA time zone name (`Europe/Berlin`): letters, digits, `/_+-`, not
/// starting with `/`, at most 64 bytes.
pub fn check_timezone_name(tz: &str) -> Result<(), Error> {
    let ok = !tz.is_empty()
        && tz.len() <= 64
        && !tz.starts_with('/')
        && tz
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "`timezone` {tz:?} is not an IANA time zone name such as \"Europe/Berlin\""
        )))
    }
}

/// A site's retention: 1 to [`MAX_RETENTION_DAYS`] days.
pub fn check_retention_days(days: u32) -> Result<(), Error> {
    if days == 0 || days > MAX_RETENTION_DAYS {
        return Err(invalid(format!(
            "`retention_days` must be between 1 and {MAX_RETENTION_DAYS}"
        )));
    }
    Ok(())
}

/// k: [`MIN_K`] to [`MAX_K`].
pub fn check_min_visitors(k: u64) -> Result<(), Error> {
    if !(MIN_K..=MAX_K).contains(&k) {
        return Err(invalid(format!(
            "`min_visitors` must be between {MIN_K} and {MAX_K}"
        )));
    }
    Ok(())
}

/// The most annotations one site keeps.
pub const MAX_ANNOTATIONS: usize = 500;

/// A dated note the site's admins write on its charts ("Launched the new pricing page").
/// Account data about the site, never about visitors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Annotation {
    /// The day it is about, `YYYY-MM-DD` (the site's time zone).
    pub date: String,
    /// The note, 1 to 200 bytes.
    pub text: String,
}

/// Checks annotations: at most [`MAX_ANNOTATIONS`], each a real date and a 1–200 byte note.
pub fn check_annotations(annotations: &[Value]) -> Result<Vec<Annotation>, Error> {
    if annotations.len() > MAX_ANNOTATIONS {
        return Err(invalid(format!(
            "`annotations`: at most {MAX_ANNOTATIONS} per site"
        )));
    }
    annotations
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let a: Annotation = serde_json::from_value(a.clone()).map_err(|e| {
                invalid(format!(
                    "`annotations[{i}]` must be {{\"date\": \"YYYY-MM-DD\", \"text\": \"…\"}}: {e}"
                ))
            })?;
            if chrono::NaiveDate::parse_from_str(&a.date, "%Y-%m-%d").is_err() || a.date.len() != 10
            {
                return Err(invalid(format!(
                    "`annotations[{i}].date` {:?} is not a date (YYYY-MM-DD)",
                    a.date
                )));
            }
            check_text(&format!("annotations[{i}].text"), &a.text, 200)?;
            Ok(a)
        })
        .collect()
}

/// A name or label: 1 to `max` bytes, not only blanks, without control characters.
pub fn check_text(field: &str, s: &str, max: usize) -> Result<(), Error> {
    if s.trim().is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(invalid(format!(
            "`{field}` must be 1 to {max} bytes without control characters"
        )));
    }
    Ok(())
}

/// Checks goals and funnels: each goal has a unique name and exactly one of `event_name` /
/// `page_path` (a path starting with `/`); each funnel has a unique name and 2–8 steps naming
/// existing goals. Returns them parsed.
pub fn check_goals(goals: &[Value], funnels: &[Value]) -> Result<(Vec<Goal>, Vec<Funnel>), Error> {
    if goals.len() > MAX_GOALS {
        return Err(invalid(format!(
            "`goals`: at most {MAX_GOALS} goals per site"
        )));
    }
    if funnels.len() > MAX_FUNNELS {
        return Err(invalid(format!(
            "`funnels`: at most {MAX_FUNNELS} funnels per site"
        )));
    }
    let mut gs: Vec<Goal> = Vec::new();
    for (i, g) in goals.iter().enumerate() {
        let g: Goal =
            serde_json::from_value(g.clone()).map_err(|e| invalid(format!("`goals[{i}]`: {e}")))?;
        check_text(&format!("goals[{i}].name"), &g.name, 200)?;
        if gs.iter().any(|o| o.name == g.name) {
            return Err(invalid(format!(
                "`goals[{i}].name` {:?} is used twice",
                g.name
            )));
        }
        if let Some(c) = &g.currency {
            if g.event_name.is_none() {
                return Err(invalid(format!(
                    "`goals[{i}].currency`: only a custom-event goal (`event_name`) carries revenue"
                )));
            }
            if iso_currency::Currency::from_code(c).is_none() {
                return Err(invalid(format!(
                    "`goals[{i}].currency` {c:?} is not an ISO 4217 currency code (e.g. EUR, USD)"
                )));
            }
        }
        match (&g.event_name, &g.page_path) {
            (Some(e), None) => check_text(&format!("goals[{i}].event_name"), e, 500)?,
            (None, Some(p)) => {
                check_text(&format!("goals[{i}].page_path"), p, 2000)?;
                if !p.starts_with('/') {
                    return Err(invalid(format!(
                        "`goals[{i}].page_path` must start with `/`"
                    )));
                }
            }
            _ => {
                return Err(invalid(format!(
                    "`goals[{i}]` needs exactly one of `event_name` and `page_path`"
                )))
            }
        }
        gs.push(g);
    }
    let mut fs: Vec<Funnel> = Vec::new();
    for (i, f) in funnels.iter().enumerate() {
        let f: Funnel = serde_json::from_value(f.clone())
            .map_err(|e| invalid(format!("`funnels[{i}]`: {e}")))?;
        check_text(&format!("funnels[{i}].name"), &f.name, 200)?;
        if fs.iter().any(|o| o.name == f.name) {
            return Err(invalid(format!(
                "`funnels[{i}].name` {:?} is used twice",
                f.name
            )));
        }
        if !(2..=8).contains(&f.steps.len()) {
            return Err(invalid(format!(
                "`funnels[{i}].steps` must have 2 to 8 steps"
            )));
        }
        for (j, step) in f.steps.iter().enumerate() {
            if !gs.iter().any(|g| &g.name == step) {
                return Err(invalid(format!(
                    "`funnels[{i}].steps[{j}]` {step:?} is not one of the site's goals"
                )));
            }
        }
        fs.push(f);
    }
    Ok((gs, fs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn goals_and_funnels_are_checked() {
        let g = |v: Value| check_goals(v.as_array().unwrap(), &[]).map(|_| ());
        assert!(g(json!([{"name": "X", "event_name": "a"}])).is_ok());
        assert!(err(g(json!([{"name": "X"}]))).contains("`goals[0]` needs exactly one"));
        assert!(
            err(g(json!([{"name": "X", "page_path": "blog"}]))).contains("`goals[0].page_path`")
        );
        assert!(
            err(g(json!([{"name": "X", "event_name": "a", "colour": 1}]))).contains("`goals[0]`")
        );
        assert!(err(g(json!([{"name": "", "event_name": "a"}]))).contains("`goals[0].name`"));
        // A revenue goal: a custom event with an ISO 4217 currency.
        assert!(g(json!([{"name": "X", "event_name": "a", "currency": "EUR"}])).is_ok());
        assert!(err(g(
            json!([{"name": "X", "event_name": "a", "currency": "EURO"}])
        ))
        .contains("`goals[0].currency` \"EURO\" is not an ISO 4217"));
        assert!(err(g(
            json!([{"name": "X", "page_path": "/a", "currency": "EUR"}])
        ))
        .contains("only a custom-event goal"));
        let goals = json!([{"name": "A", "event_name": "a"}, {"name": "B", "page_path": "/b"}]);
        let goals = goals.as_array().unwrap();
        let f = |v: Value| check_goals(goals, v.as_array().unwrap()).map(|_| ());
        assert!(f(json!([{"name": "F", "steps": ["A", "B"]}])).is_ok());
        assert!(err(f(json!([{"name": "F", "steps": ["A"]}]))).contains("2 to 8 steps"));
        assert!(err(f(json!([{"name": "F", "steps": "A"}]))).contains("`funnels[0]`"));
    }
}
