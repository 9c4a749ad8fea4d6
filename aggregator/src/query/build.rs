//! The recorded visit builds a query reads: [`Build`] (the latest build of one UTC day, and
//! for the current day where it stops) and [`Snap`] (a recorded snapshot of the current day).
//! The caller fetches them from ClickHouse; the compiler only reads them.

use chrono::{NaiveDate, NaiveDateTime};

/// The latest recorded visit build of one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Build {
    /// The UTC day.
    pub day: NaiveDate,
    /// Its latest recorded build number.
    pub build: u64,
    /// `None` for a closed day's build (the whole day); for the current day, the moment its
    /// build stops at (see [`super::visits::open_visit_rows`]).
    pub cut: Option<NaiveDateTime>,
    /// For the current day: a recorded snapshot of the site's day made from this build, fresh
    /// enough to be read instead of the build and what follows its cut ([`super::visits::snapshot_rows`]).
    pub snap: Option<Snap>,
    /// Whether its visit rows carry their hits ([`super::visits::VISIT_HITS`]; builds made
    /// before `016_visit_hits.sql` do not, until the rollup job builds their day again).
    pub hits: bool,
    /// Whether a closed day's build carries differential privacy's bounded rows in
    /// `visits_daily` ([`super::visits::BOUNDED_LAYOUT`]; older builds do not, until the
    /// rollup job builds their day again).
    pub bounded: bool,
    /// Whether a closed day's build carries the filtered rows in `visits_daily`
    /// ([`super::visits::FILTERED_LAYOUT`]; older builds do not, until the rollup job builds
    /// their day again).
    pub filtered: bool,
    /// Whether its filtered rows key a region or city by code ([`super::visits::CODES_LAYOUT`];
    /// older builds key the stored value, until the rollup job builds their day again).
    pub codes: bool,
}

/// One recorded snapshot of a site's current day (`today_snaps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snap {
    /// The moment it stands for.
    pub at: NaiveDateTime,
    /// Its random name (two processes may take one in the same second).
    pub id: u64,
}

impl Build {
    /// A whole day's build.
    pub fn whole(day: NaiveDate, build: u64) -> Build {
        Build {
            day,
            build,
            cut: None,
            snap: None,
            hits: true,
            bounded: true,
            filtered: true,
            codes: true,
        }
    }
}
