//! Dates and time zones: the site's zone, local midnights and today, the named periods of
//! `date_range`, comparison periods and time-bucket labels.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use super::vocab::{Compare, Query, TimeBucket};
use crate::Error;

/// Parses the site's time zone (UTC when unknown to chrono-tz, which the registry prevents).
pub fn timezone(name: &str) -> Tz {
    name.parse().unwrap_or(chrono_tz::UTC)
}

/// The UTC instant of local midnight starting `d` in `tz`.
pub fn local_midnight(tz: Tz, d: NaiveDate) -> NaiveDateTime {
    let naive = d.and_hms_opt(0, 0, 0).unwrap_or_default();
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => t.naive_utc(),
        chrono::LocalResult::Ambiguous(a, _) => a.naive_utc(),
        // Midnight skipped by a DST change: the day starts an hour later.
        chrono::LocalResult::None => tz
            .from_local_datetime(&(naive + Duration::hours(1)))
            .earliest()
            .map(|t| t.naive_utc())
            .unwrap_or(naive),
    }
}

/// Today in `tz` at `now`.
pub fn local_today(tz: Tz, now: chrono::DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&tz).date_naive()
}

/// The start of the minute `t` falls in.
pub fn snap_to_minute(t: NaiveDateTime) -> NaiveDateTime {
    t.date().and_hms_opt(t.hour(), t.minute(), 0).unwrap_or(t)
}

/// First and last day a `date_range` may name (ClickHouse's `DateTime` starts in 1970; later
/// than 9999 is no date anyone means, and near chrono's limits day arithmetic would overflow).
fn date_bounds() -> (NaiveDate, NaiveDate) {
    (
        NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or(NaiveDate::MIN),
        NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or(NaiveDate::MAX),
    )
}

pub(super) fn date_range(v: &Value, today: NaiveDate) -> Result<(NaiveDate, NaiveDate), Error> {
    let months_back = |n: u32| {
        let first = today.with_day(1).unwrap_or(today);
        first
            .checked_sub_months(chrono::Months::new(n))
            .unwrap_or(first)
    };
    let r = match v {
        Value::String(s) => match s.as_str() {
            "day" => (today, today),
            "7d" => (today - Duration::days(6), today),
            "28d" => (today - Duration::days(27), today),
            "30d" => (today - Duration::days(29), today),
            "91d" => (today - Duration::days(90), today),
            "month" => (months_back(0), today),
            "6mo" => (months_back(5), today),
            "12mo" => (months_back(11), today),
            "year" => (NaiveDate::from_ymd_opt(today.year(), 1, 1).unwrap_or(today), today),
            "all" => (NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or(today), today),
            other => return Err(bad(format!("`date_range`: unknown period {other:?}; use day, 24h, 7d, 28d, 30d, 91d, month, 6mo, 12mo, year, all, realtime or [\"YYYY-MM-DD\",\"YYYY-MM-DD\"]"))),
        },
        Value::Array(a) if a.len() == 2 => {
            let day_at = |i: usize| -> Result<NaiveDate, Error> {
                let s = a[i].as_str().unwrap_or_default();
                NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .ok()
                    .or_else(|| chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.date_naive()))
                    .ok_or_else(|| bad(format!("`date_range[{i}]` must be a date \"YYYY-MM-DD\"")))
                    .and_then(|d| {
                        let (lo, hi) = date_bounds();
                        if (lo..=hi).contains(&d) {
                            Ok(d)
                        } else {
                            Err(bad(format!("`date_range[{i}]` must be a date from {lo} to {hi}")))
                        }
                    })
            };
            let (f, t) = (day_at(0)?, day_at(1)?);
            if f > t {
                return Err(bad("`date_range` starts after it ends"));
            }
            if (t - f).num_days() > 3660 {
                return Err(bad("`date_range` is longer than ten years"));
            }
            (f, t)
        }
        _ => return Err(bad("`date_range` must be a period name or [from, to]")),
    };
    Ok(r)
}

fn bad(msg: impl Into<String>) -> Error {
    Error::BadRequest(msg.into())
}

impl Query {
    /// The same query over the comparison period.
    pub fn comparison(&self, how: Compare, tz: Tz) -> Query {
        let (from, to) = match how {
            Compare::PreviousPeriod => {
                let len = (self.to - self.from).num_days() + 1;
                (
                    self.from - Duration::days(len),
                    self.from - Duration::days(1),
                )
            }
            Compare::YearOverYear => {
                let back =
                    |d: NaiveDate| d.checked_sub_months(chrono::Months::new(12)).unwrap_or(d);
                (back(self.from), back(self.to))
            }
        };
        let mut q = self.clone();
        q.from = from;
        q.to = to;
        q.start = local_midnight(tz, from);
        q.end = local_midnight(tz, to + Duration::days(1));
        q.compare = None;
        q
    }

    /// Every bucket label of the range, in order (for `include.time_labels`).
    pub fn time_labels(&self) -> Vec<String> {
        let Some(b) = self.time_bucket() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut d = self.from;
        while d <= self.to && out.len() < 100_000 {
            match b {
                TimeBucket::Hour => {
                    for h in 0..24 {
                        out.push(format!("{} {h:02}:00:00", d.format("%Y-%m-%d")));
                    }
                }
                TimeBucket::Day => out.push(d.format("%Y-%m-%d").to_string()),
                TimeBucket::Week => {
                    let monday = d - Duration::days(i64::from(d.weekday().num_days_from_monday()));
                    let l = monday.format("%Y-%m-%d").to_string();
                    if out.last() != Some(&l) {
                        out.push(l);
                    }
                }
                TimeBucket::Month => {
                    let l = d.with_day(1).unwrap_or(d).format("%Y-%m-%d").to_string();
                    if out.last() != Some(&l) {
                        out.push(l);
                    }
                }
            }
            d += Duration::days(1);
        }
        out
    }
}
