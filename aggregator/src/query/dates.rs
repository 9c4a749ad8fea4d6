//! Dates and time zones: the site's zone, local midnights and today, the periods of
//! `date_range` as Plausible's Stats API v2 resolves them today ([`date_range`]: `Nd` ends
//! yesterday, `Nmo` is whole months before the current one, `month`/`year` whole calendar
//! periods, dates whole local days, datetimes as given), the bucket of the `time` dimension
//! ([`time_bucket_for`]), comparison periods and time-bucket labels (weeks starting no earlier
//! than the range: [`week_label`]).

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

/// A `date_range` resolved: its local days and its UTC instants (`[start, end)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Resolved {
    /// First local day touched.
    pub from: NaiveDate,
    /// Last local day touched.
    pub to: NaiveDate,
    /// First instant (UTC, inclusive).
    pub start: NaiveDateTime,
    /// End (UTC, exclusive).
    pub end: NaiveDateTime,
}

impl Resolved {
    /// Whole local days `from..=to` in `tz`.
    fn days(tz: Tz, from: NaiveDate, to: NaiveDate) -> Resolved {
        Resolved {
            from,
            to,
            start: local_midnight(tz, from),
            end: local_midnight(tz, to + Duration::days(1)),
        }
    }
}

/// Longest range in days (ten years, about).
const MAX_DAYS: i64 = 3660;

/// Resolves a `date_range` (anything but `realtime` and `24h`, which [`super::parse`] handles)
/// the way Plausible's Stats API v2 does today (its `QueryPeriod`), with `today` the site's
/// local date:
///
/// - `"Nd"` (`7d`, `28d`, `30d`, `91d`, any N from 1): the N whole days before today,
///   `today − N ..= today − 1` (today excluded);
/// - `"Nmo"` (`6mo`, `12mo`, any N from 1 to 100): the N whole calendar months before the
///   current one, from the first day of the month N months back to the last day of the
///   previous month;
/// - `"month"`, `"year"`: the whole calendar month / year containing today;
/// - `"day"`: today, counted to its end (nothing is stored after now but clock skew; whole days
///   are what the daily rollups and today's snapshots answer);
/// - `"all"`: to today (its start is the site's first day with data, set by the caller);
/// - `["YYYY-MM-DD", "YYYY-MM-DD"]`: whole local days, both included;
/// - `[DATETIME, DATETIME]` (RFC 3339 with offsets): the instants as given, both included
///   (to the second).
pub(super) fn date_range(v: &Value, today: NaiveDate, tz: Tz) -> Result<Resolved, Error> {
    let (lo, hi) = date_bounds();
    let in_bounds = |d: NaiveDate| (lo..=hi).contains(&d);
    let r = match v {
        Value::String(s) => match s.as_str() {
            "day" => Resolved::days(tz, today, today),
            "month" => {
                let first = today.with_day(1).unwrap_or(today);
                let last = first
                    .checked_add_months(chrono::Months::new(1))
                    .map_or(today, |d| d - Duration::days(1));
                Resolved::days(tz, first, last)
            }
            "year" => Resolved::days(
                tz,
                NaiveDate::from_ymd_opt(today.year(), 1, 1).unwrap_or(today),
                NaiveDate::from_ymd_opt(today.year(), 12, 31).unwrap_or(today),
            ),
            "all" => Resolved::days(
                tz,
                NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or(today),
                today,
            ),
            other => {
                let unknown = || {
                    bad(format!("`date_range`: unknown period {other:?}; use day, 24h, 7d, 28d, 30d, 91d (any Nd), month, 6mo, 12mo (any Nmo), year, all, realtime, [\"YYYY-MM-DD\",\"YYYY-MM-DD\"] or two RFC 3339 datetimes"))
                };
                if let Some(n) = other.strip_suffix("mo") {
                    let n: u32 = n
                        .parse()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(unknown)?;
                    let this_month = today.with_day(1).unwrap_or(today);
                    let first = this_month
                        .checked_sub_months(chrono::Months::new(n))
                        .unwrap_or(this_month);
                    Resolved::days(tz, first, this_month - Duration::days(1))
                } else if let Some(n) = other.strip_suffix('d') {
                    let n: i64 = n.parse().ok().filter(|n| *n >= 1).ok_or_else(unknown)?;
                    if n > MAX_DAYS {
                        return Err(bad("`date_range` is longer than ten years"));
                    }
                    Resolved::days(tz, today - Duration::days(n), today - Duration::days(1))
                } else {
                    return Err(unknown());
                }
            }
        },
        Value::Array(a) if a.len() == 2 => {
            let text = |i: usize| a[i].as_str().unwrap_or_default();
            let dates = (
                NaiveDate::parse_from_str(text(0), "%Y-%m-%d"),
                NaiveDate::parse_from_str(text(1), "%Y-%m-%d"),
            );
            if let (Ok(f), Ok(t)) = dates {
                for (i, d) in [(0, f), (1, t)] {
                    if !in_bounds(d) {
                        return Err(bad(format!(
                            "`date_range[{i}]` must be a date from {lo} to {hi}"
                        )));
                    }
                }
                if f > t {
                    return Err(bad("`date_range` starts after it ends"));
                }
                if (t - f).num_days() > MAX_DAYS {
                    return Err(bad("`date_range` is longer than ten years"));
                }
                Resolved::days(tz, f, t)
            } else {
                let instant = |i: usize| -> Result<NaiveDateTime, Error> {
                    let t = chrono::DateTime::parse_from_rfc3339(text(i))
                        .map_err(|_| {
                            bad(format!(
                                "`date_range[{i}]` must be a date \"YYYY-MM-DD\" or an RFC 3339 datetime (both of the same kind)"
                            ))
                        })?
                        .naive_utc();
                    if !in_bounds(t.date()) {
                        return Err(bad(format!(
                            "`date_range[{i}]` must be a date from {lo} to {hi}"
                        )));
                    }
                    Ok(t)
                };
                let (start, last) = (instant(0)?, instant(1)?);
                if start > last {
                    return Err(bad("`date_range` starts after it ends"));
                }
                if (last - start).num_days() > MAX_DAYS {
                    return Err(bad("`date_range` is longer than ten years"));
                }
                let local = |t: NaiveDateTime| t.and_utc().with_timezone(&tz).date_naive();
                Resolved {
                    from: local(start),
                    to: local(last),
                    start,
                    end: last + Duration::seconds(1),
                }
            }
        }
        _ => return Err(bad("`date_range` must be a period name or [from, to]")),
    };
    Ok(r)
}

/// The bucket Plausible's `time` dimension takes for a range of UTC instants `[start, end)`
/// (its `QueryOptimizer`, over the inclusive last second): up to 48 hours by hour, up to 40
/// days by day, up to 52 weeks by week, longer by month. The differences are truncated
/// (a 41-day range is 40 days and 23:59:59: by day; 42 days: by week; 371 days: by week).
pub fn time_bucket_for(start: NaiveDateTime, end: NaiveDateTime) -> TimeBucket {
    let span = (end - Duration::seconds(1)) - start;
    if span.num_hours() <= 48 {
        TimeBucket::Hour
    } else if span.num_days() <= 40 {
        TimeBucket::Day
    } else if span.num_weeks() <= 52 {
        TimeBucket::Week
    } else {
        TimeBucket::Month
    }
}

/// The label of the week bucket `d` falls in: its Monday, or `from` when the range starts
/// later in that week (Plausible: week buckets start no earlier than the range).
pub fn week_label(d: NaiveDate, from: NaiveDate) -> NaiveDate {
    let monday = d - Duration::days(i64::from(d.weekday().num_days_from_monday()));
    monday.max(from)
}

fn bad(msg: impl Into<String>) -> Error {
    Error::BadRequest(msg.into())
}

/// A comparison range moved to start on the weekday of `source_first`, as Plausible's
/// `match_day_of_week` moves it: unchanged when it already does; else to the next day of that
/// weekday after its start, or the one before when the next is `source_first` itself; the last
/// day moves by as many days.
pub fn weekday_matched(
    (from, to): (NaiveDate, NaiveDate),
    source_first: NaiveDate,
) -> (NaiveDate, NaiveDate) {
    let want = source_first.weekday().num_days_from_monday();
    let have = from.weekday().num_days_from_monday();
    if want == have {
        return (from, to);
    }
    let ahead = i64::from((want + 7 - have) % 7);
    let next = from + Duration::days(ahead);
    let shift = if next == source_first {
        ahead - 7
    } else {
        ahead
    };
    (from + Duration::days(shift), to + Duration::days(shift))
}

impl Query {
    /// The same query over the comparison period, the range's days up to the day it was
    /// asked ([`Self::comparison_at`] with `today` = [`Query::today`]).
    pub fn comparison(&self, how: Compare, tz: Tz) -> Query {
        self.comparison_at(how, tz, self.today)
    }

    /// The same query over the comparison period as Plausible chooses it (its `Comparisons`):
    /// the range's last day is first clamped to `today` (a whole month or year compares its
    /// days so far); `previous_period` is as many days just before, `year_over_year` the same
    /// days 365 days earlier; with `match_day_of_week` that period moves to start on the
    /// source's weekday ([`weekday_matched`]); `custom` is its own range.
    pub fn comparison_at(&self, how: Compare, tz: Tz, today: NaiveDate) -> Query {
        let last = self.to.min(today).max(self.from);
        let previous = || {
            let len = Duration::days((last - self.from).num_days() + 1);
            (self.from - len, last - len)
        };
        let year = Duration::days(365);
        let (from, to) = match how {
            Compare::PreviousPeriod => previous(),
            Compare::YearOverYear => (self.from - year, last - year),
            Compare::PreviousPeriodMatchingWeekday => weekday_matched(previous(), self.from),
            Compare::YearOverYearMatchingWeekday => {
                weekday_matched((self.from - year, last - year), self.from)
            }
            Compare::Custom(from, to) => (from, to),
        };
        let mut q = self.clone();
        q.from = from;
        q.to = to;
        q.start = local_midnight(tz, from);
        q.end = local_midnight(tz, to + Duration::days(1));
        q.compare = None;
        q
    }

    /// Every bucket label of the range, in order (for `include.time_labels`): the local hours
    /// from the range's first instant to its end, or its days, weeks (the first starting on
    /// the range's first day when that is not a Monday) or months.
    pub fn time_labels(&self) -> Vec<String> {
        const MOST: usize = 100_000;
        let Some(b) = self.time_bucket() else {
            return Vec::new();
        };
        let mut out: Vec<String> = Vec::new();
        let push = |out: &mut Vec<String>, l: String| {
            if out.last() != Some(&l) {
                out.push(l);
            }
        };
        if b == TimeBucket::Minute {
            // Realtime's window starts and ends on whole UTC minutes: one label a minute.
            let tz = timezone(&self.tz);
            let mut t = self.start;
            while t < self.end && out.len() < MOST {
                let local = t.and_utc().with_timezone(&tz);
                push(&mut out, local.format("%Y-%m-%d %H:%M:00").to_string());
                t += Duration::minutes(1);
            }
            return out;
        }
        if b == TimeBucket::Hour {
            let tz = timezone(&self.tz);
            let mut t = self.start;
            while t < self.end && out.len() < MOST {
                let local = t.and_utc().with_timezone(&tz);
                push(&mut out, local.format("%Y-%m-%d %H:00:00").to_string());
                // The next local hour (zones with half-hour offsets included).
                t = t + Duration::hours(1)
                    - Duration::minutes(i64::from(local.minute()))
                    - Duration::seconds(i64::from(local.second()));
            }
            return out;
        }
        let mut d = self.from;
        while d <= self.to && out.len() < MOST {
            let l = match b {
                TimeBucket::Week => week_label(d, self.from),
                TimeBucket::Month => d.with_day(1).unwrap_or(d),
                _ => d,
            };
            push(&mut out, l.format("%Y-%m-%d").to_string());
            d += Duration::days(1);
        }
        out
    }
}

/// Every named window on a fixed clock, in UTC and in a zone east of it, with the bounds
/// Plausible's own `QueryPeriod` examples give (its doctests use the same dates).
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::super::{parse, DimKind, Query, TimeBucket};
    use crate::site::SiteView;

    fn at(tz: &str, now: (i32, u32, u32, u32), range: serde_json::Value) -> Query {
        let mut s = SiteView::new("a.com");
        s.timezone = tz.into();
        let now = Utc
            .with_ymd_and_hms(now.0, now.1, now.2, now.3, 0, 0)
            .unwrap();
        let body = json!({"site_id": "a.com", "metrics": ["visitors"], "date_range": range,
            "dimensions": ["time"]});
        parse(body.to_string().as_bytes(), &s, now).unwrap()
    }

    /// `(first day, last day, first UTC instant, last UTC instant)` as Plausible prints them.
    fn bounds(q: &Query) -> (String, String, String, String) {
        (
            q.from.to_string(),
            q.to.to_string(),
            q.start.to_string(),
            (q.end - chrono::Duration::seconds(1)).to_string(),
        )
    }

    fn b(from: &str, to: &str, start: &str, last: &str) -> (String, String, String, String) {
        (from.into(), to.into(), start.into(), last.into())
    }

    fn bucket(q: &Query) -> TimeBucket {
        match q.dimensions[0].kind {
            DimKind::Time(t) => t,
            _ => panic!("not a time dimension"),
        }
    }

    const UTC: &str = "UTC";
    const TALLINN: &str = "Europe/Tallinn";

    #[test]
    fn last_n_days_end_yesterday() {
        // Plausible: 7 days with today 2026-05-08 are 05-01 ..= 05-07.
        let q = at(UTC, (2026, 5, 8, 12), json!("7d"));
        assert_eq!(
            bounds(&q),
            b(
                "2026-05-01",
                "2026-05-07",
                "2026-05-01 00:00:00",
                "2026-05-07 23:59:59"
            )
        );
        // In Tallinn (UTC+3 in May): 2026-04-30 21:00 to 2026-05-07 20:59:59 UTC.
        let q = at(TALLINN, (2026, 5, 8, 12), json!("7d"));
        assert_eq!(
            bounds(&q),
            b(
                "2026-05-01",
                "2026-05-07",
                "2026-04-30 21:00:00",
                "2026-05-07 20:59:59"
            )
        );
        // Tallinn's today starts before UTC's: at 22:00 UTC on the 7th it is already the 8th.
        let q = at(TALLINN, (2026, 5, 7, 22), json!("7d"));
        assert_eq!(
            (q.from.to_string(), q.to.to_string()),
            ("2026-05-01".into(), "2026-05-07".into())
        );
        for (range, from) in [
            ("28d", "2026-04-10"),
            ("30d", "2026-04-08"),
            ("90d", "2026-02-07"),
            ("91d", "2026-02-06"),
            ("1d", "2026-05-07"),
        ] {
            let q = at(UTC, (2026, 5, 8, 12), json!(range));
            assert_eq!(
                (q.from.to_string(), q.to.to_string()),
                (from.to_string(), "2026-05-07".to_string()),
                "{range}"
            );
        }
    }

    #[test]
    fn last_n_months_are_whole_months_before_this_one() {
        // Plausible: 3 months with today 2026-05-15 are 02-01 ..= 04-30.
        let q = at(UTC, (2026, 5, 15, 12), json!("3mo"));
        assert_eq!(
            bounds(&q),
            b(
                "2026-02-01",
                "2026-04-30",
                "2026-02-01 00:00:00",
                "2026-04-30 23:59:59"
            )
        );
        // Tallinn: 2026-01-31 22:00 (UTC+2) to 2026-04-30 20:59:59 (UTC+3) UTC.
        let q = at(TALLINN, (2026, 5, 15, 12), json!("3mo"));
        assert_eq!(
            bounds(&q),
            b(
                "2026-02-01",
                "2026-04-30",
                "2026-01-31 22:00:00",
                "2026-04-30 20:59:59"
            )
        );
        let q = at(UTC, (2026, 5, 15, 12), json!("6mo"));
        assert_eq!(
            (q.from.to_string(), q.to.to_string()),
            ("2025-11-01".into(), "2026-04-30".into())
        );
        let q = at(UTC, (2026, 1, 1, 0), json!("12mo"));
        assert_eq!(
            (q.from.to_string(), q.to.to_string()),
            ("2025-01-01".into(), "2025-12-31".into())
        );
        let q = at(UTC, (2024, 3, 31, 12), json!("1mo"));
        assert_eq!(
            (q.from.to_string(), q.to.to_string()),
            ("2024-02-01".into(), "2024-02-29".into())
        );
    }

    #[test]
    fn month_and_year_are_whole_calendar_periods() {
        let q = at(UTC, (2026, 5, 15, 12), json!("month"));
        assert_eq!(
            bounds(&q),
            b(
                "2026-05-01",
                "2026-05-31",
                "2026-05-01 00:00:00",
                "2026-05-31 23:59:59"
            )
        );
        // Plausible: month of 2026-01-15 in Tallinn is 2025-12-31 22:00 to 2026-01-31 21:59:59.
        let q = at(TALLINN, (2026, 1, 15, 12), json!("month"));
        assert_eq!(
            bounds(&q),
            b(
                "2026-01-01",
                "2026-01-31",
                "2025-12-31 22:00:00",
                "2026-01-31 21:59:59"
            )
        );
        let q = at(UTC, (2026, 5, 15, 12), json!("year"));
        assert_eq!(
            bounds(&q),
            b(
                "2026-01-01",
                "2026-12-31",
                "2026-01-01 00:00:00",
                "2026-12-31 23:59:59"
            )
        );
        let q = at(TALLINN, (2026, 5, 15, 12), json!("year"));
        assert_eq!(
            bounds(&q),
            b(
                "2026-01-01",
                "2026-12-31",
                "2025-12-31 22:00:00",
                "2026-12-31 21:59:59"
            )
        );
    }

    #[test]
    fn day_dates_and_datetimes() {
        let q = at(TALLINN, (2026, 1, 15, 12), json!("day"));
        assert_eq!(
            bounds(&q),
            b(
                "2026-01-15",
                "2026-01-15",
                "2026-01-14 22:00:00",
                "2026-01-15 21:59:59"
            )
        );
        // Plausible: 2026-05-01 ..= 2026-05-10 in Tallinn.
        let q = at(
            TALLINN,
            (2026, 6, 1, 0),
            json!(["2026-05-01", "2026-05-10"]),
        );
        assert_eq!(
            bounds(&q),
            b(
                "2026-05-01",
                "2026-05-10",
                "2026-04-30 21:00:00",
                "2026-05-10 20:59:59"
            )
        );
        // Datetimes as given (any offset), both ends included.
        let q = at(
            UTC,
            (2026, 6, 1, 0),
            json!(["2026-05-01T06:00:00Z", "2026-05-01T18:00:00Z"]),
        );
        assert_eq!(
            bounds(&q),
            b(
                "2026-05-01",
                "2026-05-01",
                "2026-05-01 06:00:00",
                "2026-05-01 18:00:00"
            )
        );
        let q = at(
            TALLINN,
            (2026, 6, 1, 0),
            json!(["2024-01-01T00:00:00+03:00", "2024-01-02T12:00:00+03:00"]),
        );
        assert_eq!(
            bounds(&q),
            b(
                "2023-12-31",
                "2024-01-02",
                "2023-12-31 21:00:00",
                "2024-01-02 09:00:00"
            )
        );
        // `all` ends today (its start is the site's first day, set when it runs).
        let q = at(UTC, (2026, 5, 15, 12), json!("all"));
        assert_eq!(q.to.to_string(), "2026-05-15");
    }

    #[test]
    fn bad_windows_are_refused() {
        let mut s = SiteView::new("a.com");
        s.timezone = UTC.into();
        let now = Utc.with_ymd_and_hms(2026, 5, 15, 12, 0, 0).unwrap();
        let err = |range: serde_json::Value| {
            let body = json!({"site_id": "a.com", "metrics": ["visitors"], "date_range": range});
            parse(body.to_string().as_bytes(), &s, now)
                .unwrap_err()
                .to_string()
        };
        for r in [
            json!("0d"),
            json!("-3d"),
            json!("0mo"),
            json!("101mo"),
            json!("7days"),
            json!("d"),
            json!("5000d"),
        ] {
            assert!(err(r.clone()).contains("date_range"), "{r}");
        }
        assert!(err(json!(["2026-05-01", "2026-05-01T00:00:00Z"])).contains("same kind"));
        assert!(
            err(json!(["2026-05-02T00:00:00Z", "2026-05-01T00:00:00Z"])).contains("starts after")
        );
    }

    /// Plausible's `time`: up to 48 hours by hour, up to 40 days by day, up to 52 weeks by
    /// week, longer by month.
    #[test]
    fn time_takes_plausibles_bucket() {
        let t = |range: serde_json::Value| bucket(&at(UTC, (2026, 5, 15, 12), range));
        assert_eq!(t(json!("day")), TimeBucket::Hour);
        assert_eq!(t(json!(["2026-05-01", "2026-05-02"])), TimeBucket::Hour);
        assert_eq!(t(json!(["2026-05-01", "2026-05-03"])), TimeBucket::Day);
        assert_eq!(t(json!("7d")), TimeBucket::Day);
        assert_eq!(t(json!("30d")), TimeBucket::Day);
        assert_eq!(t(json!("month")), TimeBucket::Day);
        assert_eq!(t(json!("41d")), TimeBucket::Day);
        assert_eq!(t(json!("42d")), TimeBucket::Week);
        assert_eq!(t(json!("91d")), TimeBucket::Week);
        assert_eq!(t(json!("6mo")), TimeBucket::Week);
        assert_eq!(t(json!("12mo")), TimeBucket::Week);
        assert_eq!(t(json!("year")), TimeBucket::Week);
        assert_eq!(t(json!("371d")), TimeBucket::Week);
        assert_eq!(t(json!("372d")), TimeBucket::Month);
        assert_eq!(t(json!("24mo")), TimeBucket::Month);
        assert_eq!(t(json!("realtime")), TimeBucket::Hour);
    }

    /// Week buckets start no earlier than the range: the first is the range's first day.
    #[test]
    fn week_labels_start_with_the_range() {
        let mut q = at(UTC, (2026, 5, 8, 12), json!("30d"));
        q.dimensions[0].kind = DimKind::Time(TimeBucket::Week);
        // 2026-04-08 is a Wednesday.
        assert_eq!(
            q.time_labels(),
            vec![
                "2026-04-08",
                "2026-04-13",
                "2026-04-20",
                "2026-04-27",
                "2026-05-04"
            ]
        );
        let q = at(UTC, (2026, 5, 15, 12), json!("day"));
        assert_eq!(q.time_labels().len(), 24);
        assert_eq!(q.time_labels()[23], "2026-05-15 23:00:00");
        let q = at(
            TALLINN,
            (2026, 6, 1, 0),
            json!(["2026-05-01T06:30:00Z", "2026-05-01T08:00:00Z"]),
        );
        assert_eq!(
            q.time_labels(),
            vec![
                "2026-05-01 09:00:00",
                "2026-05-01 10:00:00",
                "2026-05-01 11:00:00"
            ]
        );
    }

    /// Plausible's comparison periods: the range clamped to today, then as many days before
    /// (previous period) or 365 days earlier (year over year).
    #[test]
    fn comparisons_are_plausibles() {
        use super::super::Compare;
        let tz = chrono_tz::UTC;
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        let days = |q: &Query| (q.from.to_string(), q.to.to_string());
        let month = at(UTC, (2026, 11, 28, 12), json!("month"));
        let p = month.comparison_at(Compare::PreviousPeriod, tz, today);
        assert_eq!(days(&p), ("2026-10-04".into(), "2026-10-31".into()));
        assert_eq!(p.start.to_string(), "2026-10-04 00:00:00");
        assert_eq!(p.end.to_string(), "2026-11-01 00:00:00");
        let y = month.comparison_at(Compare::YearOverYear, tz, today);
        assert_eq!(days(&y), ("2025-11-01".into(), "2025-11-28".into()));
        // 7d (11-21 ..= 11-27) is not clamped: the 7 days before it.
        let week = at(UTC, (2026, 11, 28, 12), json!("7d"));
        let p = week.comparison_at(Compare::PreviousPeriod, tz, today);
        assert_eq!(days(&p), ("2026-11-14".into(), "2026-11-20".into()));
        // 365 days, not a calendar year: across 2024-02-29 the dates move by one.
        let leap = at(UTC, (2024, 6, 1, 0), json!(["2024-03-01", "2024-03-02"]));
        let y = leap.comparison(Compare::YearOverYear, tz);
        assert_eq!(days(&y), ("2023-03-02".into(), "2023-03-03".into()));
        // match_day_of_week, Plausible's documented example: a range starting Sunday
        // 2023-01-01 compared year over year starts Sunday 2022-01-02, not Saturday 01-01.
        let jan = at(UTC, (2023, 2, 1, 0), json!(["2023-01-01", "2023-01-07"]));
        let y = jan.comparison(Compare::YearOverYearMatchingWeekday, tz);
        assert_eq!(days(&y), ("2022-01-02".into(), "2022-01-08".into()));
        assert_eq!(y.start.to_string(), "2022-01-02 00:00:00");
        // The previous period of a Monday-to-Wednesday range is Friday to Sunday; matched, it
        // is the Monday after that Friday — the source's own first day — so the one before.
        let mon = at(UTC, (2026, 12, 1, 0), json!(["2026-11-23", "2026-11-25"]));
        assert_eq!(
            days(&mon.comparison(Compare::PreviousPeriod, tz)),
            ("2026-11-20".into(), "2026-11-22".into())
        );
        assert_eq!(
            days(&mon.comparison(Compare::PreviousPeriodMatchingWeekday, tz)),
            ("2026-11-16".into(), "2026-11-18".into())
        );
        // 7 days already start on the same weekday: unchanged.
        assert_eq!(
            days(&week.comparison_at(Compare::PreviousPeriodMatchingWeekday, tz, today)),
            ("2026-11-14".into(), "2026-11-20".into())
        );
        // custom: its own range, whatever the source.
        let c = chrono::NaiveDate::from_ymd_opt;
        let custom = Compare::Custom(c(2026, 1, 1).unwrap(), c(2026, 1, 31).unwrap());
        assert_eq!(
            days(&week.comparison_at(custom, tz, today)),
            ("2026-01-01".into(), "2026-01-31".into())
        );
    }

    /// Plausible's default order: time ascending, then the first metric descending (Veil
    /// then breaks ties by the other dimensions).
    #[test]
    fn default_order_is_time_then_first_metric() {
        let mut s = SiteView::new("a.com");
        s.timezone = UTC.into();
        let now = Utc.with_ymd_and_hms(2026, 5, 15, 12, 0, 0).unwrap();
        let body = json!({"site_id": "a.com", "metrics": ["visitors", "pageviews"], "date_range": "7d",
            "dimensions": ["event:page", "time:day"]});
        let q = parse(body.to_string().as_bytes(), &s, now).unwrap();
        assert_eq!(q.order_by, vec![(1, false), (2, true), (0, false)]);
        let body = json!({"site_id": "a.com", "metrics": ["pageviews"], "date_range": "7d",
            "dimensions": ["event:page"]});
        let q = parse(body.to_string().as_bytes(), &s, now).unwrap();
        assert_eq!(q.order_by, vec![(1, true), (0, false)]);
    }
}
