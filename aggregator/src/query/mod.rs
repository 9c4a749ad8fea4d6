//! The Stats API query: parsing a Plausible-v2 request, checking every field against an
//! allow-list, and turning it into ClickHouse SQL ([`assemble`]).
//!
//! Request (`POST /api/v2/query`, Plausible's Stats API v2 plus Veil's additions):
//!
//! ```json
//! {"site_id":"example.com","metrics":["visitors","bounce_rate"],"date_range":"7d",
//!  "dimensions":["visit:source"],"filters":[["is","visit:country",["DE","FR"]]],
//!  "order_by":[["visitors","desc"]],"include":{"comparisons":{"mode":"previous_period"}},
//!  "pagination":{"limit":10,"offset":0}}
//! ```
//!
//! Metrics, dimensions and filter operators are the names in [`Metric::ALL`], [`DIMENSIONS`] and
//! [`Op`]; dates are days in the site's time zone. Identifiers only ever come from these lists;
//! values are rendered by [`veil_schemas::sql::lit`]. A request naming anything else is a 400
//! whose message names the field.
//!
//! Limits on cost and range: at most [`MAX_CONDITIONS`] filter conditions and
//! [`MAX_REGEXES`] `matches*` regexes per query, each checked with RE2's syntax ([`re2`]: what
//! ClickHouse runs it with) and compiled here under a 64 KiB size limit;
//! explicit dates from 1970-01-01 to 9999-12-31; `realtime` (30 minutes) and `24h` end at the
//! start of the current minute.
//!
//! The compiler is pure (no ClickHouse client, no clock: `now` and the recorded builds are
//! passed in) and every statement it makes is a [`veil_schemas::sql::Sql`]. One idea per file:
//!
//! - [`vocab`] — metrics, dimensions, operators, filters, [`Query`];
//! - [`parse`](mod@parse) — the request parser; [`dates`] — time zones, periods, labels;
//!   [`re2`] — filter regexes checked as ClickHouse's RE2 reads them;
//! - [`source`](mod@source) — which rows answer a query; [`build`] — recorded builds and snapshots;
//!   [`passing`] — host conditions that keep every row, planned away;
//! - [`visits`] — visit derivation, shared with the rollup job;
//! - [`rows`] — the rows of each source; [`expr`] — dimension, filter, metric and goal
//!   expressions; [`labels`] — Plausible's words for stored dimension values;
//!   [`assemble`] — the whole statement and the k-anonymity fold.

pub mod assemble;
pub mod build;
pub mod country_names;
pub mod dates;
pub mod expr;
pub mod labels;
pub mod parse;
pub mod passing;
pub mod re2;
pub mod rows;
pub mod source;
pub mod visits;
pub mod vocab;

pub use build::{Build, Snap};
pub use dates::{local_midnight, local_today, snap_to_minute, timezone};
pub use parse::{check_child_query, parse, MAX_CONDITIONS, MAX_LIMIT, MAX_REGEXES};
pub use source::{source, Source};
pub use vocab::{
    glob_to_regex, Compare, Dim, DimKind, Filter, Level, Metric, Op, Query, TimeBucket, DIMENSIONS,
};

#[cfg(test)]
mod tests;
