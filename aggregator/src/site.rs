//! What the query engine needs to know about one site: its time zone, its k, whether it is
//! child-directed, its goals and funnels. [`view`] builds one from a site's settings (stored in
//! the registry, or seeded by flags); the Stats API reads nothing else.
//!
//! Wire format (inside a site's settings JSON, as the admin API takes and returns it):
//!
//! ```json
//! {"timezone":"Europe/Berlin","min_visitors":5,"child_directed":false,
//!  "goals":[{"name":"Signup","event_name":"Signup"},{"name":"Visit /blog*","page_path":"/blog*"}],
//!  "funnels":[{"name":"Checkout","steps":["Visit /cart","Signup"]}]}
//! ```

use serde::{Deserialize, Serialize};
use veil_schemas::registry::SiteSettings;

/// Goals, funnels and the floor of k are site policy, defined and checked in one place.
pub use veil_schemas::policy::{Funnel, Goal, MIN_K};

/// One site as the query engine sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteView {
    /// The site's domain (`site_id` in queries).
    pub domain: String,
    /// IANA time zone for days, weeks and months in reports (default `UTC`).
    pub timezone: String,
    /// k: no published number describes fewer visitors than this (at least [`MIN_K`]).
    pub min_visitors: u64,
    /// Child-directed: page views and event counts only.
    pub child_directed: bool,
    /// Goals.
    pub goals: Vec<Goal>,
    /// Funnels.
    pub funnels: Vec<Funnel>,
    /// The site's own ε per release, if set ([`crate::privacy::Settings::for_site`]).
    pub epsilon_query: Option<f64>,
    /// The site's own ε per credential and day, if set.
    pub epsilon_day: Option<f64>,
    /// The site's own bound on one visitor-day's revenue, if set
    /// ([`crate::privacy::Settings::for_site`]).
    pub revenue_bound: Option<u64>,
}

impl SiteView {
    /// A site with default settings: UTC, k = 5, no goals.
    pub fn new(domain: impl Into<String>) -> Self {
        Self {
            domain: domain.into(),
            timezone: "UTC".into(),
            min_visitors: 5,
            child_directed: false,
            goals: Vec::new(),
            funnels: Vec::new(),
            epsilon_query: None,
            epsilon_day: None,
            revenue_bound: None,
        }
    }
}

/// The query engine's view of `domain` with these settings (stored or flag-seeded). Goals and
/// funnels were checked when stored; any that no longer parse are left out (and logged).
pub fn view(domain: &str, s: &SiteSettings) -> SiteView {
    let mut v = SiteView::new(domain);
    v.timezone = s.timezone.clone();
    v.min_visitors = s.min_visitors.max(MIN_K);
    v.child_directed = s.child_directed;
    v.epsilon_query = s.epsilon_query;
    v.epsilon_day = s.epsilon_day;
    v.revenue_bound = s.revenue_bound;
    v.goals = s
        .goals
        .iter()
        .filter_map(|g| match serde_json::from_value::<Goal>(g.clone()) {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::warn!(site = domain, error = %e, "skipping a stored goal that does not parse");
                None
            }
        })
        .collect();
    v.funnels = s
        .funnels
        .iter()
        .filter_map(|f| serde_json::from_value::<Funnel>(f.clone()).ok())
        .collect();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn views_carry_the_settings() {
        let s = SiteSettings {
            timezone: "Europe/Berlin".into(),
            min_visitors: 1,
            child_directed: true,
            goals: vec![
                json!({"name": "A", "event_name": "a"}),
                json!({"bad": true}),
            ],
            funnels: vec![json!({"name": "F", "steps": ["A", "A"]})],
            ..Default::default()
        };
        let v = view("a.com", &s);
        assert_eq!(v.timezone, "Europe/Berlin");
        assert_eq!(v.min_visitors, MIN_K, "never below the floor");
        assert!(v.child_directed);
        assert_eq!(v.goals.len(), 1);
        assert_eq!(v.funnels.len(), 1);
    }
}
