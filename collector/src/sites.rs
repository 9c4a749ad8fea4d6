//! The site registry: which domains Veil accepts events for, and each site's privacy settings.
//! Events for any other domain are dropped (counted as `dropped{reason="unknown_site"}`) while
//! the sender still gets 202, as Plausible does, so the answer tells nobody which sites exist.
//!
//! Today the registry is filled from `--site`, `--child-site` and `--ignore-dnt-site`; later the
//! admin API adds sites at run time behind this same type.

use std::collections::HashMap;
use std::sync::RwLock;

use serde::Serialize;

/// Lower-cases a domain and trims a trailing dot; returns `None` unless it looks like a host
/// name (letters, digits, `-`, `_`, `.`; at most 253 bytes).
pub fn normalize_domain(s: &str) -> Option<String> {
    let d = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then_some(d)
}

/// Per-site privacy settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SiteSettings {
    /// Child-directed: no visitor hash, session, referrer, campaign, versions or props are
    /// stored; reports show page views only.
    pub child_directed: bool,
    /// Honour `DNT: 1` (default true; a site may switch it off as its own legal decision).
    pub honor_dnt: bool,
    /// Store bot hits flagged with their reason instead of dropping them (reports exclude them).
    pub keep_bots: bool,
}

impl Default for SiteSettings {
    fn default() -> Self {
        Self {
            child_directed: false,
            honor_dnt: true,
            keep_bots: false,
        }
    }
}

/// The set of registered sites, and aliases (an Umami website id, an Aptabase app key) that
/// name one of them.
#[derive(Debug, Default)]
pub struct SiteRegistry {
    sites: RwLock<HashMap<String, SiteSettings>>,
    aliases: RwLock<HashMap<String, String>>,
    query_params: RwLock<HashMap<String, Vec<String>>>,
}

impl SiteRegistry {
    /// A registry holding `sites` with default settings.
    pub fn new(sites: impl IntoIterator<Item = String>) -> Self {
        Self::with_settings(sites.into_iter().map(|s| (s, SiteSettings::default())))
    }

    /// A registry with explicit settings.
    pub fn with_settings(sites: impl IntoIterator<Item = (String, SiteSettings)>) -> Self {
        Self {
            sites: RwLock::new(sites.into_iter().collect()),
            aliases: RwLock::default(),
            query_params: RwLock::default(),
        }
    }

    /// The registered site and its settings for a domain (or an alias) as a sender wrote it.
    pub fn resolve(&self, domain: &str) -> Option<(String, SiteSettings)> {
        let aliased = self
            .aliases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(domain.trim())
            .cloned();
        let d = match aliased {
            Some(d) => d,
            None => normalize_domain(domain)?,
        };
        let sites = self.sites.read().unwrap_or_else(|p| p.into_inner());
        sites.get(&d).map(|s| (d, *s))
    }

    /// Lets `site` keep the query parameter `name` in stored paths (all others are dropped).
    pub fn allow_query_param(&self, site: &str, name: &str) {
        if let Some(d) = normalize_domain(site) {
            self.query_params
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(d)
                .or_default()
                .push(name.to_string());
        }
    }

    /// The query parameters `site` keeps in stored paths (usually none).
    pub fn allowed_query_params(&self, site: &str) -> Vec<String> {
        self.query_params
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(site)
            .cloned()
            .unwrap_or_default()
    }

    /// Makes `alias` (case-sensitive, as senders send it) name `domain`.
    pub fn alias(&self, alias: &str, domain: &str) -> Option<String> {
        let d = normalize_domain(domain)?;
        self.aliases
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(alias.trim().to_string(), d.clone());
        Some(d)
    }

    /// Adds or updates a site.
    pub fn set(&self, domain: &str, settings: SiteSettings) -> Option<String> {
        let d = normalize_domain(domain)?;
        self.sites
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(d.clone(), settings);
        Some(d)
    }

    /// All registered sites, sorted.
    pub fn list(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .sites
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_case_insensitively() {
        let r = SiteRegistry::new(["example.com".to_string()]);
        assert_eq!(
            r.resolve("Example.com").map(|x| x.0).as_deref(),
            Some("example.com")
        );
        assert_eq!(
            r.resolve("example.com.").map(|x| x.0).as_deref(),
            Some("example.com")
        );
        assert_eq!(r.resolve("other.com"), None);
        assert_eq!(r.resolve("exa mple.com"), None);
        r.set(
            "kids.example",
            SiteSettings {
                child_directed: true,
                honor_dnt: true,
                keep_bots: false,
            },
        );
        assert!(r.resolve("kids.example").unwrap().1.child_directed);
    }
}
