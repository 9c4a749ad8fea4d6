//! The site registry: which domains Veil accepts events for, and each site's privacy settings.
//! Events for any other domain are dropped (counted as `dropped{reason="unknown_site"}`) while
//! the sender still gets 202, as Plausible does, so the answer tells nobody which sites exist.
//!
//! Two layers: sites named by flags (`--site`, `--child-site`, `--ignore-dnt-site`,
//! `--keep-bots-site`, `--site-alias`, `--site-query-param`), and the sites stored in
//! ClickHouse through the admin API ([`veil_schemas::registry`], attached with
//! [`SiteRegistry::attach_store`] and refreshed in the background every ~2 s). A stored record
//! wins over flags for the same domain (its settings, its aliases first); flag sites stay
//! registered whatever is stored. A site added through the admin API is accepted by every
//! collector within one refresh.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use serde::Serialize;
use veil_schemas::registry::Registry;

/// Lower-cases a domain and trims a trailing dot; returns `None` unless it looks like a host
/// name (letters, digits, `-`, `_`, `.`; at most 253 bytes).
pub fn normalize_domain(s: &str) -> Option<String> {
    veil_schemas::registry::normalize_domain(s)
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
    store: OnceLock<Arc<Registry>>,
}

impl From<&veil_schemas::registry::SiteSettings> for SiteSettings {
    fn from(s: &veil_schemas::registry::SiteSettings) -> Self {
        Self {
            child_directed: s.child_directed,
            honor_dnt: s.honor_dnt,
            keep_bots: s.keep_bots,
        }
    }
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
            store: OnceLock::new(),
        }
    }

    /// Consults `store` (the registry shared through ClickHouse) from now on, before the flag
    /// layer. Returns false if a store was attached already.
    pub fn attach_store(&self, store: Arc<Registry>) -> bool {
        self.store.set(store).is_ok()
    }

    /// The attached store, if any.
    pub fn store(&self) -> Option<&Arc<Registry>> {
        self.store.get()
    }

    /// The registered site and its settings for a domain (or an alias) as a sender wrote it.
    pub fn resolve(&self, domain: &str) -> Option<(String, SiteSettings)> {
        let snap = self.store.get().map(|s| s.snapshot());
        let trimmed = domain.trim();
        let aliased = snap
            .as_ref()
            .and_then(|s| s.alias(trimmed).map(str::to_string))
            .or_else(|| {
                self.aliases
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(trimmed)
                    .cloned()
            });
        let d = match aliased {
            Some(d) => d,
            None => normalize_domain(domain)?,
        };
        if let Some(rec) = snap.as_ref().and_then(|s| s.site(&d)) {
            return Some((d, SiteSettings::from(&rec.settings)));
        }
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

    /// All registered sites (flags and stored), sorted.
    pub fn list(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .sites
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        if let Some(store) = self.store.get() {
            v.extend(store.snapshot().sites().map(|s| s.domain.clone()));
        }
        v.sort();
        v.dedup();
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
