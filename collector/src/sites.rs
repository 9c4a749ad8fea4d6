//! The site registry: which domains Veil accepts events for. Events for any other domain are
//! dropped (counted as `dropped{reason="unknown_site"}`) while the sender still gets 202, as
//! Plausible does, so a misconfigured site cannot probe which domains exist.
//!
//! Today the registry is the `--site` list; later the admin API adds sites at run time behind
//! this same type.

use std::collections::HashSet;
use std::sync::RwLock;

/// Lower-cases a domain, trims a trailing dot and `www.`-free comparison is left to callers;
/// returns `None` unless it looks like a host name (letters, digits, `-`, `.`; at most 253 bytes).
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

/// The set of registered sites.
#[derive(Debug, Default)]
pub struct SiteRegistry {
    sites: RwLock<HashSet<String>>,
}

impl SiteRegistry {
    /// A registry holding `sites` (already normalised by config validation).
    pub fn new(sites: impl IntoIterator<Item = String>) -> Self {
        Self {
            sites: RwLock::new(sites.into_iter().collect()),
        }
    }

    /// The registered site for a domain as a sender wrote it, if any.
    pub fn resolve(&self, domain: &str) -> Option<String> {
        let d = normalize_domain(domain)?;
        let sites = self.sites.read().unwrap_or_else(|p| p.into_inner());
        sites.contains(&d).then_some(d)
    }

    /// Adds a site (idempotent).
    pub fn add(&self, domain: &str) -> Option<String> {
        let d = normalize_domain(domain)?;
        self.sites
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(d.clone());
        Some(d)
    }

    /// All registered sites, sorted.
    pub fn list(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .sites
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
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
        assert_eq!(r.resolve("Example.com").as_deref(), Some("example.com"));
        assert_eq!(r.resolve("example.com.").as_deref(), Some("example.com"));
        assert_eq!(r.resolve("other.com"), None);
        assert_eq!(r.resolve("exa mple.com"), None);
    }
}
