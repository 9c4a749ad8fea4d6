//! Unit tests of the query compiler: request parsing and its errors, dates and time zones,
//! source choice, the SQL it writes (escaping, rollup and raw paths), the visit columns.

use chrono::{NaiveDate, TimeZone, Utc};

use super::visits::{DAILY_DIMS, EV_FIELDS, OPEN_VISIT_COLS, VISIT_COLS, VISIT_FIRST, VISIT_HITS};
use super::*;
use crate::site::{Goal, SiteView};

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
}

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn site() -> SiteView {
    let mut s = SiteView::new("a.com");
    s.goals = vec![
        Goal {
            name: "Signup".into(),
            event_name: Some("Signup".into()),
            page_path: None,
            currency: None,
        },
        Goal {
            name: "Blog".into(),
            event_name: None,
            page_path: Some("/blog/*".into()),
            currency: None,
        },
    ];
    s
}

fn parse_ok(body: &str) -> Query {
    parse(body.as_bytes(), &site(), now()).unwrap()
}

fn err(body: &str) -> String {
    parse(body.as_bytes(), &site(), now())
        .unwrap_err()
        .to_string()
}

#[test]
fn parses_a_plausible_query() {
    let q = parse_ok(
        r#"{"site_id":"a.com","metrics":["visitors","pageviews"],"date_range":"7d","dimensions":["event:page"]}"#,
    );
    assert_eq!(q.metrics, vec![Metric::Visitors, Metric::Pageviews]);
    assert_eq!(q.dimensions[0].name, "event:page");
    // Plausible's 7d: the 7 whole days before today (2026-11-28 excluded).
    assert_eq!((q.from, q.to), (d("2026-11-21"), d("2026-11-27")));
    // Top pages by visitors and pageviews: the per-day rows of visits_daily.
    assert_eq!(source(&q, false), Source::VisitsDaily);
    let s = assemble::sql(&q, &site(), &[], None).to_string();
    assert!(s.contains("GROUP BY d0 ORDER BY m0 DESC, d0 ASC"), "{s}");
    // Goals come from the hourly rollup; whole UTC days from its daily form — only days the
    // rollup job has checked against raw events (closed, whole build); the others (here the
    // 27th, not checked yet) from raw events.
    let q = parse_ok(
        r#"{"site_id":"a.com","metrics":["visitors","events"],"date_range":"7d","dimensions":["event:goal"]}"#,
    );
    assert_eq!(source(&q, false), Source::Hourly);
    let checked: Vec<Build> = (21..27)
        .map(|n| Build::whole(d(&format!("2026-11-{n}")), 1))
        .collect();
    let s = assemble::sql(&q, &site(), &checked, None).to_string();
    assert!(s.contains("FROM events_daily"), "{s}");
    assert!(!s.contains("FROM events_hourly"), "{s}");
    assert!(
        s.contains("timestamp >= toDateTime('2026-11-27 00:00:00', 'UTC') AND timestamp < toDateTime('2026-11-28 00:00:00', 'UTC')"),
        "the unchecked day from raw events: {s}"
    );
    let unchecked = assemble::sql(&q, &site(), &[], None).to_string();
    assert!(!unchecked.contains("FROM events_daily"), "{unchecked}");
}

#[test]
fn errors_name_the_field() {
    assert!(err(r#"{"metrics":["visitors"],"date_range":"day"}"#).contains("site_id"));
    assert!(err(r#"{"site_id":"a","metrics":["nope"],"date_range":"day"}"#).contains("metrics[0]"));
    assert!(err(
        r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","dimensions":["x; DROP"]}"#
    )
    .contains("dimensions[0]"));
    assert!(
        err(r#"{"site_id":"a","metrics":["visitors"],"date_range":"fortnight"}"#)
            .contains("date_range")
    );
    assert!(err(
        r#"{"site_id":"a","metrics":["visitors"],"date_range":["2026-02-01","2026-01-01"]}"#
    )
    .contains("date_range"));
    assert!(
        err(r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","bogus":1}"#)
            .contains("bogus")
    );
    assert!(err(r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","filters":[["like","event:page",["/"]]]}"#).contains("filters[0][0]"));
    assert!(err(r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","filters":[["is","event:nope",["/"]]]}"#).contains("filters[0][1]"));
    assert!(err(r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","filters":[["is","event:page","/"]]}"#).contains("filters[0][2]"));
    assert!(err(r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","filters":[["matches","event:page",["(unclosed"]]]}"#).contains("regular expression"));
    assert!(err(r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","order_by":[["pageviews","desc"]]}"#).contains("order_by[0]"));
    assert!(
        err(r#"{"site_id":"a","metrics":["conversion_rate"],"date_range":"day"}"#)
            .contains("event:goal")
    );
    assert!(err(r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","filters":[["is","event:goal",["Nope"]]]}"#).contains("not a goal"));
    assert!(err(r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","include":{"comparisons":{"mode":"last_week"}}}"#).contains("include.comparisons.mode"));
}

/// Plausible's query rules (its parser, query builder and table decider), one assertion each:
/// the 400's message names the field at fault.
#[test]
fn plausible_refusals_are_400s_naming_the_field() {
    let q = |rest: &str| format!(r#"{{"site_id":"a.com","date_range":"7d",{rest}}}"#);
    let refused = |rest: &str, field: &str| {
        let e = err(&q(rest));
        assert!(e.contains(field), "{rest}: {e}");
    };
    // Visit metrics by event dimensions other than event:page alone.
    refused(
        r#""metrics":["bounce_rate"],"dimensions":["event:name"]"#,
        "`dimensions[0]`",
    );
    refused(
        r#""metrics":["visitors","visit_duration"],"dimensions":["visit:source","event:goal"]"#,
        "`dimensions[1]`",
    );
    refused(
        r#""metrics":["bounce_rate"],"dimensions":["event:props:plan"]"#,
        "`dimensions[0]`",
    );
    refused(
        r#""metrics":["bounce_rate"],"dimensions":["event:page","event:hostname"]"#,
        "`dimensions[1]`",
    );
    // Event metrics by the visit's entry or exit page.
    refused(
        r#""metrics":["time_on_page"],"dimensions":["visit:entry_page"],"filters":[["is","event:page",["/a"]]]"#,
        "`dimensions[0]`",
    );
    // views_per_visit: no dimensions, no page filter (at any depth).
    refused(
        r#""metrics":["views_per_visit"],"dimensions":["visit:source"]"#,
        "`metrics[0]`",
    );
    refused(
        r#""metrics":["visits","views_per_visit"],"filters":[["not",["is","event:page",["/a"]]]]"#,
        "`metrics[1]`",
    );
    // scroll_depth: a page dimension or a top-level page filter.
    refused(r#""metrics":["scroll_depth"]"#, "`metrics[0]`");
    refused(
        r#""metrics":["scroll_depth"],"filters":[["or",[["is","event:page",["/a"]],["is","event:page",["/b"]]]]]"#,
        "`metrics[0]`",
    );
    // Goal and hostname filters only at the top level.
    refused(
        r#""metrics":["visitors"],"filters":[["or",[["is","event:goal",["Signup"]],["is","event:page",["/a"]]]]]"#,
        "filters[0][1][0][1]",
    );
    refused(
        r#""metrics":["visitors"],"filters":[["not",["is","event:hostname",["a.com"]]]]"#,
        "filters[0][1][1]",
    );
    // conversion_rate: a goal outside has_done; props filters at the top level.
    refused(
        r#""metrics":["conversion_rate"],"filters":[["has_done",["is","event:goal",["Signup"]]]]"#,
        "`metrics[0]`",
    );
    refused(
        r#""metrics":["conversion_rate"],"dimensions":["event:goal"],"filters":[["not",["is","event:props:plan",["pro"]]]]"#,
        "filters[0][1][1]",
    );
    // Values: strings (numbers for visit:city only); two-letter country codes.
    refused(
        r#""metrics":["visitors"],"filters":[["is","event:page",[5]]]"#,
        "filters[0][2][0]",
    );
    refused(
        r#""metrics":["visitors"],"filters":[["is","visit:city",[1.5]]]"#,
        "filters[0][2][0]",
    );
    refused(
        r#""metrics":["visitors"],"filters":[["is","visit:country",["Germany"]]]"#,
        "filters[0][2][0]",
    );
    // Repeats, order_by, include, pagination, dates.
    refused(r#""metrics":["visitors","visitors"]"#, "`metrics[1]`");
    refused(
        r#""metrics":["visitors"],"dimensions":["event:page","event:page"]"#,
        "`dimensions[1]`",
    );
    refused(
        r#""metrics":["visitors"],"order_by":[["visit:source","desc"]]"#,
        "`order_by[0]`",
    );
    refused(
        r#""metrics":["visitors"],"include":{"time_labels":true}"#,
        "`include.time_labels`",
    );
    refused(
        r#""metrics":["visitors"],"dimensions":["event:page"],"pagination":{"limit":0}"#,
        "`pagination.limit`",
    );
    refused(
        r#""metrics":["visitors"],"dimensions":["event:page"],"pagination":{"limit":10001}"#,
        "`pagination.limit`",
    );
    refused(
        r#""metrics":["visitors"],"dimensions":["event:page"],"pagination":{"offset":-1}"#,
        "`pagination.offset`",
    );
    refused(
        r#""metrics":["visitors"],"dimensions":["event:page"],"pagination":{"page":2}"#,
        "`pagination.page`",
    );
    let e =
        err(r#"{"site_id":"a","metrics":["visitors"],"date_range":["2026-02-01","2026-01-01"]}"#);
    assert!(e.contains("date_range"), "{e}");

    // What Plausible allows, and Veil's deliberate extensions, still parse.
    for ok in [
        r#""metrics":["bounce_rate","visit_duration"],"dimensions":["event:page"]"#,
        r#""metrics":["bounce_rate"],"dimensions":["visit:entry_page","time:day"]"#,
        r#""metrics":["views_per_visit","bounce_rate"],"filters":[["is","visit:source",["Google"]]]"#,
        r#""metrics":["scroll_depth","time_on_page"],"dimensions":["event:page"]"#,
        r#""metrics":["scroll_depth"],"filters":[["is","event:page",["/a"]]]"#,
        r#""metrics":["visitors","conversion_rate"],"filters":[["is","event:goal",["Signup"]],["is","event:props:plan",["pro"]]]"#,
        r#""metrics":["visitors"],"filters":[["has_done",["or",[["is","event:goal",["Signup"]],["is","event:page",["/a"]]]]]]"#,
        r#""metrics":["visitors"],"filters":[["is","visit:city",[2643743]]]"#,
        r#""metrics":["visitors"],"dimensions":["event:page"],"pagination":{"limit":10000,"offset":20}"#,
        // Veil: time on page of the pages selected (the dashboard's top stats and chart).
        r#""metrics":["time_on_page"]"#,
        r#""metrics":["time_on_page"],"dimensions":["time:day"],"include":{"time_labels":true}"#,
        // Veil: views per visit by time (Plausible's v1 timeseries).
        r#""metrics":["views_per_visit"],"dimensions":["time:day"]"#,
        // Veil: pageviews of the visits that entered on a page.
        r#""metrics":["visitors","pageviews"],"dimensions":["visit:entry_page"]"#,
    ] {
        parse_ok(&q(ok));
    }
}

#[test]
fn ranges_follow_the_site_time_zone() {
    let mut s = site();
    s.timezone = "America/New_York".into();
    // 2026-11-28 02:00 UTC is still the 27th in New York.
    let early = Utc.with_ymd_and_hms(2026, 11, 28, 2, 0, 0).unwrap();
    let q = parse(
        br#"{"site_id":"a.com","metrics":["visitors"],"date_range":"day"}"#,
        &s,
        early,
    )
    .unwrap();
    assert_eq!(q.from, d("2026-11-27"));
    assert_eq!(q.start.to_string(), "2026-11-27 05:00:00");
    assert_eq!(q.end.to_string(), "2026-11-28 05:00:00");
    let q = parse_ok(r#"{"site_id":"a","metrics":["events"],"date_range":"6mo"}"#);
    assert_eq!((q.from, q.to), (d("2026-05-01"), d("2026-10-31")));
    let q = parse_ok(r#"{"site_id":"a","metrics":["events"],"date_range":"month"}"#);
    assert_eq!((q.from, q.to), (d("2026-11-01"), d("2026-11-30")));
    // Half-hour offsets cannot use the hourly rollup.
    s.timezone = "Asia/Kolkata".into();
    let q = parse(
        br#"{"site_id":"a.com","metrics":["visitors"],"date_range":"7d","dimensions":["event:goal"]}"#,
        &s,
        now(),
    )
    .unwrap();
    assert_eq!(source(&q, false), Source::Events);
}

#[test]
fn summer_time_keeps_day_buckets_off_rows_kept_per_utc_day() {
    let mut s = site();
    s.timezone = "Europe/London".into();
    let ask = |range: &str| {
        parse(
            format!(r#"{{"site_id":"a.com","metrics":["visitors"],"date_range":{range},"dimensions":["time:month"]}}"#).as_bytes(),
            &s,
            now(),
        )
        .unwrap()
    };
    // In winter London's days are UTC days: the daily rollup buckets them.
    let winter = ask(r#"["2026-11-01", "2026-11-27"]"#);
    assert_eq!(source(&winter, false), Source::VisitsDaily);
    // Over a year the range starts and ends at UTC midnight, but a summer day starts at 23:00
    // UTC: the hits of that hour belong to the next local day (and month), which per-UTC-day
    // rows cannot tell.
    let year = ask(r#"["2025-12-01", "2026-11-27"]"#);
    assert_eq!(
        (year.start.time(), year.end.time()),
        (chrono::NaiveTime::MIN, chrono::NaiveTime::MIN)
    );
    assert_ne!(source(&year, false), Source::VisitsDaily);
    let s = assemble::sql(&year, &s, &[], None).to_string();
    assert!(!s.contains("events_daily"), "{s}");
}

#[test]
fn sources_follow_what_the_query_needs() {
    let src = |b: &str| source(&parse_ok(b), false);
    assert_eq!(
        src(
            r#"{"site_id":"a","metrics":["visitors","bounce_rate"],"date_range":"7d","dimensions":["visit:source"]}"#
        ),
        Source::VisitsDaily
    );
    assert_eq!(
        src(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":"7d","dimensions":["visit:city"],"filters":[["is","visit:device",["Mobile"]]]}"#
        ),
        Source::Visits
    );
    // One filter value by a breakdown the filtered rows are written for: visits_daily; two
    // values, `contains`, a page goal, or views per visit under a page: not.
    let daily = |b: &str| {
        src(&format!(
            r#"{{"site_id":"a","metrics":["visitors","visits"],"date_range":"7d",{b}}}"#
        ))
    };
    assert_eq!(
        daily(r#""dimensions":["visit:country"],"filters":[["is","visit:device",["Mobile"]]]"#),
        Source::VisitsDaily
    );
    assert_eq!(
        daily(r#""dimensions":["visit:device"],"filters":[["is","event:hostname",["a.com"]]]"#),
        Source::VisitsDaily
    );
    assert_eq!(
        daily(r#""dimensions":["visit:source"],"filters":[["is","event:goal",["Signup"]]]"#),
        Source::VisitsDaily
    );
    assert_eq!(
        daily(r#""dimensions":["visit:source"],"filters":[["is","event:page",["/a"]]]"#),
        Source::VisitsDaily
    );
    assert_eq!(
        daily(r#""dimensions":["time:day"],"filters":[["is","visit:source",["Direct / None"]]]"#),
        Source::VisitsDaily
    );
    assert_eq!(
        daily(r#""dimensions":["visit:source"],"filters":[["is","event:goal",["Blog"]]]"#),
        Source::VisitHits
    );
    assert_eq!(
        daily(r#""dimensions":["visit:source"],"filters":[["is","event:page",["/a","/b"]]]"#),
        Source::VisitHits
    );
    assert_eq!(
        daily(r#""dimensions":["visit:source"],"filters":[["contains","event:page",["/a"]]]"#),
        Source::VisitHits
    );
    assert_eq!(
        daily(
            r#""dimensions":["visit:source"],"filters":[["is","event:page",["/a"],{"case_sensitive":false}]]"#
        ),
        Source::VisitHits
    );
    assert_eq!(
        daily(
            r#""dimensions":["visit:source"],"filters":[["is","event:page",["/a"]],["is","visit:device",["Mobile"]]]"#
        ),
        Source::VisitHits
    );
    assert_eq!(
        daily(r#""dimensions":["visit:city"],"filters":[["is","event:page",["/a"]]]"#),
        Source::VisitHits
    );
    // A filter on the breakdown's own dimension: the unfiltered rows of the values that pass
    // (`dimension_filter`), whatever its operator or values.
    assert_eq!(
        daily(r#""dimensions":["visit:source"],"filters":[["is","visit:source",[""]]]"#),
        Source::VisitsDaily
    );
    let pages = |b: &str| {
        src(&format!(
            r#"{{"site_id":"a","date_range":"7d","dimensions":["event:page"],{b}}}"#
        ))
    };
    assert_eq!(
        pages(
            r#""metrics":["visitors","pageviews"],"filters":[["contains","event:page",["blog"]]]"#
        ),
        Source::VisitsDaily
    );
    assert_eq!(
        pages(
            r#""metrics":["visitors"],"filters":[["contains","event:page",["blog"]],["is","visit:source",["Google"]]]"#
        ),
        Source::VisitHits
    );
    // The chart under a page pattern: visit rows, one per visit, by day (the event rollups
    // would merge the states of every page that contains it); so is differential privacy's.
    // Under pages named (one page: its filtered daily rows), or by hour, the rollups.
    let chart = |filter: &str, bucket: &str| {
        parse_ok(&format!(
            r#"{{"site_id":"a","metrics":["visitors"],"date_range":"7d","dimensions":["time:{bucket}"],"filters":[{filter}]}}"#
        ))
    };
    let mut by_day = chart(r#"["contains","event:page",["blog"]]"#, "day");
    assert_eq!(source(&by_day, false), Source::VisitHits);
    by_day.bounded = true;
    assert_eq!(source(&by_day, false), Source::VisitHits);
    // Two pages' states merged per hour cost more than the visits with either page.
    for filter in [
        r#"["is","event:page",["/blog","/docs"]]"#,
        r#"["or",[["is","event:page",["/blog"]],["is","event:name",["Signup"]]]]"#,
    ] {
        assert_eq!(
            source(&chart(filter, "day"), false),
            Source::VisitHits,
            "{filter}"
        );
    }
    for (filter, bucket) in [
        (r#"["is","event:page",["/blog","/docs"]]"#, "hour"),
        (r#"["contains","event:page",["blog"]]"#, "hour"),
    ] {
        assert_eq!(
            source(&chart(filter, bucket), false),
            Source::Hourly,
            "{filter} {bucket}"
        );
    }
    for filter in [
        r#"["is_not","event:page",["/blog"]]"#,
        r#"["not",["is","event:page",["/blog"]]]"#,
        r#"["matches","event:page",["^/b"]]"#,
        r#"["is","event:page",["/BLOG"],{"case_sensitive":false}]"#,
    ] {
        assert_eq!(
            source(&chart(filter, "day"), false),
            Source::VisitHits,
            "{filter}"
        );
    }
    // A share's denominator is the filtered total.
    assert_eq!(
        pages(
            r#""metrics":["visitors","percentage"],"filters":[["contains","event:page",["blog"]]]"#
        ),
        Source::Hourly
    );
    assert_eq!(
        src(
            r#"{"site_id":"a","metrics":["visits","bounce_rate"],"date_range":"7d","filters":[["is","event:page",["/a"],{"case_sensitive":false}]]}"#
        ),
        Source::VisitHits
    );
    assert_eq!(
        src(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":"7d","dimensions":["event:props:plan"]}"#
        ),
        Source::Events
    );
    assert_eq!(
        src(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":"7d","dimensions":["visit:source"],"filters":[["is","event:goal",["Blog"]]]}"#
        ),
        Source::VisitHits
    );
    assert_eq!(
        src(
            r#"{"site_id":"a","metrics":["visitors","total_revenue"],"date_range":"7d","dimensions":["visit:source"],"filters":[["is","event:goal",["Signup"]]]}"#
        ),
        Source::Joined,
        "revenue is not carried by visit rows"
    );
    assert_eq!(
        src(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":"7d","dimensions":["visit:source"],"filters":[["is","event:goal",["Signup"]]],"include":{"rollups":false}}"#
        ),
        Source::Joined
    );
    assert_eq!(
        src(
            r#"{"site_id":"a","metrics":["visitors"],"date_range":"7d","dimensions":["event:page"],"include":{"rollups":false}}"#
        ),
        Source::Events
    );
    assert_eq!(
        src(
            r#"{"site_id":"a","metrics":["pageviews"],"date_range":"realtime","dimensions":["event:page"]}"#
        ),
        Source::Events
    );
}

#[test]
fn filter_values_never_reach_sql_unescaped() {
    let evil = r#"x') OR 1=1 -- \' ?"#;
    let body = json_body(evil);
    let q = parse_ok(&body);
    let today = Build {
        day: d("2026-11-28"),
        build: 3,
        cut: d("2026-11-28").and_hms_opt(9, 30, 0),
        snap: None,
        hits: true,
        bounded: true,
        filtered: true,
        codes: true,
    };
    let builds = [Build::whole(d("2026-11-27"), 7), today];
    for built in [&[][..], &builds[..1], &builds[..]] {
        let s = assemble::sql(&q, &site(), built, Some(5)).to_string();
        assert!(s.contains(r"'x\') OR 1=1 -- \\\' ?'"), "{s}");
        assert!(!s.contains("x') OR"), "{s}");
    }
}

fn json_body(v: &str) -> String {
    serde_json::json!({
        "site_id": "a.com", "metrics": ["visitors", "bounce_rate"], "date_range": "7d",
        "dimensions": ["visit:source"],
        "filters": [["or", [["is", "visit:utm_campaign", [v]], ["contains", "visit:referrer", [v], {"case_sensitive": false}]]]]
    })
    .to_string()
}

#[test]
fn order_by_and_defaults() {
    let q = parse_ok(
        r#"{"site_id":"a","metrics":["visitors","pageviews"],"date_range":"7d","dimensions":["event:page"],"order_by":[["pageviews","asc"]]}"#,
    );
    assert_eq!(q.order_by, vec![(2, false)]);
    let q = parse_ok(
        r#"{"site_id":"a","metrics":["visitors"],"date_range":"7d","dimensions":["time:day"]}"#,
    );
    // Plausible's default: time ascending, then the first metric descending.
    assert_eq!(q.order_by, vec![(0, false), (1, true)]);
    assert_eq!(q.time_labels().len(), 7);
    let q = parse_ok(
        r#"{"site_id":"a","metrics":["visitors"],"date_range":"day","dimensions":["time"]}"#,
    );
    assert_eq!(q.time_bucket(), Some(TimeBucket::Hour));
    assert_eq!(q.time_labels().len(), 24);
}

#[test]
fn comparisons_shift_the_range() {
    let q = parse_ok(r#"{"site_id":"a","metrics":["visitors"],"date_range":"7d"}"#);
    let p = q.comparison(Compare::PreviousPeriod, chrono_tz::UTC);
    assert_eq!((p.from, p.to), (d("2026-11-14"), d("2026-11-20")));
    let y = q.comparison(Compare::YearOverYear, chrono_tz::UTC);
    assert_eq!((y.from, y.to), (d("2025-11-21"), d("2025-11-27")));
}

#[test]
fn child_sites_get_counts_only() {
    let mut s = site();
    s.child_directed = true;
    let e = parse(
        br#"{"site_id":"a.com","metrics":["visitors"],"date_range":"day"}"#,
        &s,
        now(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("child-directed"), "{e}");
    let e = parse(
        br#"{"site_id":"a.com","metrics":["pageviews"],"date_range":"day","filters":[["is","visit:source",["x"]]]}"#,
        &s,
        now(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("child-directed"), "{e}");
}

#[test]
fn dates_outside_1970_to_9999_are_refused_not_a_panic() {
    for range in [
        r#"["+262142-12-31","+262142-12-31"]"#,
        r#"["-262143-01-01","-262143-01-01"]"#,
        r#"["-0001-01-01","2026-01-01"]"#,
        r#"["1969-12-31","1970-01-01"]"#,
        r#"["9999-12-31","+10000-01-01"]"#,
    ] {
        let e = err(&format!(
            r#"{{"site_id":"a","metrics":["visitors"],"date_range":{range}}}"#
        ));
        assert!(e.contains("date_range"), "{range}: {e}");
    }
    let q = parse_ok(
        r#"{"site_id":"a","metrics":["visitors"],"date_range":["1970-01-01","1970-01-02"]}"#,
    );
    assert_eq!(q.start.to_string(), "1970-01-01 00:00:00");
    let q = parse_ok(
        r#"{"site_id":"a","metrics":["visitors"],"date_range":["9999-12-31","9999-12-31"],"dimensions":["time"],"include":{"comparisons":{"mode":"previous_period"}}}"#,
    );
    assert_eq!(q.to, d("9999-12-31"));
    assert_eq!(q.time_labels().len(), 24);
}

#[test]
fn filters_are_capped_in_conditions_and_regexes() {
    let body = |filters: serde_json::Value| {
        serde_json::json!({"site_id": "a.com", "metrics": ["visitors"], "date_range": "day", "filters": filters})
            .to_string()
    };
    let conds = |n: usize| -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| serde_json::json!(["is", "event:page", [format!("/{i}")]]))
            .collect()
    };
    parse_ok(&body(serde_json::json!(conds(MAX_CONDITIONS))));
    let e = err(&body(serde_json::json!(conds(MAX_CONDITIONS + 1))));
    assert!(e.contains("`filters`"), "{e}");
    // Nesting counts too.
    let e = err(&body(serde_json::json!([[
        "or",
        [["and", conds(15)], ["not", ["or", conds(6)]]]
    ]])));
    assert!(e.contains("`filters`"), "{e}");
    let regexes = |n: usize| -> Vec<String> { (0..n).map(|i| format!("^/{i}")).collect() };
    parse_ok(&body(serde_json::json!([
        ["matches", "event:page", regexes(3)],
        ["matches_wildcard_not", "event:page", regexes(2)]
    ])));
    let e = err(&body(serde_json::json!([
        ["matches", "event:page", regexes(3)],
        ["matches_not", "event:page", regexes(3)]
    ])));
    assert!(e.contains("`filters`"), "{e}");
    // Small to write, big to compile: refused by the 64 KiB size limit.
    let e = err(&body(serde_json::json!([[
        "matches",
        "event:page",
        ["[a-z]{3000}"]
    ]])));
    assert!(e.contains("filters[0][2][0]"), "{e}");
}

#[test]
fn realtime_windows_are_the_same_all_minute() {
    let at = |s: u32| Utc.with_ymd_and_hms(2026, 11, 28, 12, 7, s).unwrap();
    for range in ["realtime", "24h"] {
        let body =
            format!(r#"{{"site_id":"a.com","metrics":["visitors"],"date_range":"{range}"}}"#);
        let a = parse(body.as_bytes(), &site(), at(1)).unwrap();
        let b = parse(body.as_bytes(), &site(), at(59)).unwrap();
        assert_eq!((a.start, a.end), (b.start, b.end), "{range}");
        assert_eq!(a.end.to_string(), "2026-11-28 12:07:00", "{range}");
    }
    let q = parse(
        br#"{"site_id":"a.com","metrics":["visitors"],"date_range":"realtime"}"#,
        &site(),
        at(30),
    )
    .unwrap();
    assert_eq!(q.start.to_string(), "2026-11-28 11:37:00");
}

#[test]
fn globs_become_anchored_regexes() {
    assert_eq!(glob_to_regex("/blog/*"), r"^/blog/.*$");
    assert_eq!(glob_to_regex("/a.b"), r"^/a\.b$");
    assert_eq!(glob_to_regex("*"), "^.*$");
}

#[test]
fn visit_columns_are_made_of_their_parts() {
    assert_eq!(
        &VISIT_COLS[..11],
        [
            "site",
            "day",
            "build",
            "visitor_id",
            "start",
            "duration",
            "pageviews",
            "events",
            "bounce",
            "entry_page",
            "exit_page"
        ]
    );
    let first_end = 11 + VISIT_FIRST.len();
    assert_eq!(&VISIT_COLS[11..first_end], VISIT_FIRST);
    assert_eq!(&VISIT_COLS[first_end..], VISIT_HITS);
    // open_visits: the visit columns up to the first-hit ones, `last` and `inter`, then the
    // hit arrays (016 added them after 014's columns).
    assert_eq!(&OPEN_VISIT_COLS[..first_end], &VISIT_COLS[..first_end]);
    assert_eq!(
        &OPEN_VISIT_COLS[first_end..first_end + 2],
        ["last", "inter"]
    );
    assert_eq!(&OPEN_VISIT_COLS[first_end + 2..], VISIT_HITS);
    // Every first-hit property is carried in the sorted hit tuples, and every daily
    // dimension is a visit column (the host excepted: it is an event dimension there).
    assert!(VISIT_FIRST.iter().all(|c| EV_FIELDS.contains(c)));
    assert!(DAILY_DIMS.iter().all(|c| VISIT_COLS.contains(c)));
    assert!(!DAILY_DIMS.contains(&"hostname"));
    assert_eq!(DAILY_DIMS.len(), 2 + VISIT_FIRST.len() - 1);
}

#[test]
fn a_place_codes_bounded_rows_are_never_summed_over_its_names() {
    // Builds before `CODES_LAYOUT` hold a place code's filtered rows one per stored name of
    // it; a visitor seen under two names in a day would be clamped in each. Differential
    // privacy clamps such a question per visitor from visit rows there, and reads the bounded
    // rows of builds that key the code (one row per visitor id and code); a stored word with
    // one value reads the rows of either.
    let clamp = assemble::Clamp {
        rows: 7,
        visits: 3,
        pageviews: 6,
        events: 20,
        visit_seconds: 3600,
        engaged_seconds: 1800,
        revenue: 1000,
        samples: 10,
        daily: true,
    };
    let built: Vec<build::Build> = (21..28)
        .map(|n| build::Build::whole(d(&format!("2026-11-{n}")), 1))
        .collect();
    let by_name: Vec<build::Build> = built
        .iter()
        .map(|b| build::Build { codes: false, ..*b })
        .collect();
    let bounded = |f: &str, built: &[build::Build]| {
        let mut q = parse_ok(&format!(
            r#"{{"site_id":"a","metrics":["visitors","visits"],"date_range":"7d","dimensions":["visit:source"],"filters":[{f}]}}"#
        ));
        q.bounded = true;
        assemble::bounded_sql(&q, &site(), built, &clamp)
            .unwrap()
            .to_string()
    };
    let region = r#"["is","visit:region",["DE-BY"]]"#;
    let place = bounded(region, &by_name);
    assert!(!place.contains("'dp:"), "{place}");
    let place = bounded(region, &built);
    assert!(place.contains("'dp:source|region=DE-BY'"), "{place}");
    assert!(!place.contains("FROM visits "), "{place}");
    for built in [&built, &by_name] {
        let device = bounded(r#"["is","visit:device",["Mobile"]]"#, built);
        assert!(device.contains("'dp:source|device=mobile'"), "{device}");
    }
}

/// The differencing guard's total counts "the filter or not the filter", which keeps every
/// row: its SQL reads no filter at all (a `has_done` set made twice, every visit's hit arrays
/// read for a page pattern, were most of the guard's time at 10M events).
#[test]
fn the_guards_everyone_question_writes_no_filter() {
    for (filter, src) in [
        (
            r#"["has_done",["is","event:goal",["Signup"]]]"#,
            Source::Visits,
        ),
        (r#"["contains","event:page",["blog"]]"#, Source::VisitHits),
        (
            r#"["is","event:page",["/blog","/docs"]]"#,
            Source::VisitHits,
        ),
        (
            r#"["has_done",["contains","event:page",["blog"]]]"#,
            Source::Visits,
        ),
        (r#"["is","event:props:plan",["pro"]]"#, Source::VisitHits),
    ] {
        let mut q = parse_ok(&format!(
            r#"{{"site_id":"a.com","metrics":["visitors"],"date_range":"7d","filters":[{filter}]}}"#
        ));
        let f = q.filter.clone().unwrap();
        let filtered = assemble::sql(&q, &site(), &[], None).to_string();
        assert_eq!(source(&q, false), src, "{filter}");
        q.filter = Some(Filter::Or(vec![f.clone(), Filter::Not(Box::new(f))]));
        // Counted by the same source as the filter's own count.
        assert_eq!(source(&q, false), src, "everyone under {filter}");
        let everyone = assemble::sql(&q, &site(), &[], None).to_string();
        for term in ["Signup", "blog", "'plan'"] {
            if filtered.contains(term) {
                assert!(!everyone.contains(term), "{filter}: {everyone}");
            }
        }
        assert!(!everyone.contains("IN (SELECT visitor_id"), "{everyone}");
    }
}

/// `has_done`'s visitors come from the range's built visit rows when every day has a build
/// (and carries the hits the condition reads); from raw events where a day has none.
#[test]
fn has_done_sets_come_from_built_visits_where_they_answer() {
    let sql_for = |inner: &str, built: &[Build]| {
        let q = parse_ok(&format!(
            r#"{{"site_id":"a.com","metrics":["visitors"],"date_range":"7d","dimensions":["visit:source"],"filters":[["has_done",{inner}]]}}"#
        ));
        assemble::sql(&q, &site(), built, None).to_string()
    };
    let all: Vec<Build> = (21..28)
        .map(|n| Build::whole(d(&format!("2026-11-{n}")), 1))
        .collect();
    let from_events = "IN (SELECT visitor_id FROM events WHERE";
    for inner in [
        r#"["is","event:goal",["Signup"]]"#,
        r#"["contains","event:page",["blog"]]"#,
        r#"["is","event:props:plan",["pro"]]"#,
    ] {
        let s = sql_for(inner, &all);
        assert!(!s.contains(from_events), "{inner}: {s}");
        assert!(
            s.contains("GLOBAL IN (SELECT visitor_id FROM ("),
            "{inner}: {s}"
        );
        // A day without a build (the 21st): its visitors from its raw events, the other
        // days' from their visit rows; no build at all: the raw events' set alone.
        let mixed = sql_for(inner, &all[1..]);
        assert!(
            mixed.contains("GLOBAL IN (SELECT visitor_id FROM ("),
            "{inner}: {mixed}"
        );
        assert!(
            mixed.contains(" UNION ALL SELECT visitor_id FROM events WHERE site = 'a.com' AND timestamp >= toDateTime('2026-11-21 00:00:00', 'UTC') AND timestamp < toDateTime('2026-11-22 00:00:00', 'UTC') AND bot = ''"),
            "{inner}: {mixed}"
        );
        assert!(
            !mixed.contains("toDate('2026-11-21')"),
            "no visit rows of the unbuilt day: {mixed}"
        );
        assert!(sql_for(inner, &[]).contains(from_events), "{inner}");
    }
}

#[test]
fn host_conditions_are_checked_on_built_days_rollups_and_raw_events_elsewhere() {
    // Top pages over 7 days (21st–27th) under a host filter and a page filter, compared with
    // the 7 days before: the 22nd and the 26th are built (the 26th's build is cut, so raw).
    let q = parse_ok(
        r#"{"site_id":"a.com","metrics":["visitors"],"date_range":"7d","dimensions":["event:page"],
            "filters":[["is","event:page",["/x"]],["is","event:hostname",["a.com"]],["is_not","event:hostname",["Staging.A.com"],{"case_sensitive":false}]],
            "include":{"comparisons":{"mode":"previous_period"}}}"#,
    );
    assert_eq!(passing::host_conds(&q), vec![1, 2]);
    let mut cut = Build::whole(d("2026-11-26"), 4);
    cut.cut = d("2026-11-26").and_hms_opt(9, 0, 0);
    let built = [Build::whole(d("2026-11-22"), 3), cut];
    let cmp = q.comparison(q.compare.unwrap(), chrono_tz::UTC);
    let ranges = [(q.start, q.end), (cmp.start, cmp.end)];
    let s = passing::hosts_sql(&q, &site(), &ranges, &built, &[1, 2])
        .unwrap()
        .to_string();
    // One count per condition, over both reads.
    assert!(
        s.starts_with("SELECT countIf(NOT (hostname IN ('a.com'))), countIf(NOT ((NOT lowerUTF8(hostname) IN ('staging.a.com'))))"),
        "{s}"
    );
    assert!(
        s.contains(
            "dim = 'event:hostname' WHERE (day, build) IN ((toDate('2026-11-22'), toUInt64(3)))"
        ),
        "{s}"
    );
    // Raw events: the 21st, the 23rd to the 27th (the cut build is not a whole day) and the
    // comparison's 14th to 20th, bots excluded.
    for stretch in [
        "(timestamp >= toDateTime('2026-11-21 00:00:00', 'UTC') AND timestamp < toDateTime('2026-11-22 00:00:00', 'UTC'))",
        "(timestamp >= toDateTime('2026-11-23 00:00:00', 'UTC') AND timestamp < toDateTime('2026-11-28 00:00:00', 'UTC'))",
        "(timestamp >= toDateTime('2026-11-14 00:00:00', 'UTC') AND timestamp < toDateTime('2026-11-21 00:00:00', 'UTC'))",
    ] {
        assert!(s.contains(stretch), "{stretch} in {s}");
    }
    assert!(s.contains("AND bot = '' GROUP BY hostname"), "{s}");
    assert!(!s.contains("/x"), "only host conditions are checked: {s}");
    // Dropping both leaves the page filter alone, in the shape the parser gives one filter;
    // the question as asked is unchanged.
    let planned = passing::without(&q, &[1, 2]);
    assert!(matches!(&planned.filter, Some(Filter::Cond { dim, .. }) if dim.name == "event:page"));
    assert_eq!(planned.asked_filter, q.filter);
    assert_eq!(source(&planned, false), Source::VisitsDaily);
    let one = passing::without(&q, &[2]);
    assert!(matches!(&one.filter, Some(Filter::And(v)) if v.len() == 2));
    // Host conditions are top-level parts only (the parser refuses them inside and/or/not).
    assert!(err(r#"{"site_id":"a.com","metrics":["visitors"],"date_range":"7d","filters":[["or",[["is","event:hostname",["a.com"]],["is","event:page",["/x"]]]]]}"#).contains("top level"));
    // Nothing to read over no range.
    assert!(passing::hosts_sql(&q, &site(), &[], &built, &[1]).is_none());
}

#[test]
fn a_question_planned_without_a_passing_condition_keeps_its_privacy_key() {
    let q = parse_ok(
        r#"{"site_id":"a.com","metrics":["visitors"],"date_range":"30d","dimensions":["event:page"],
            "filters":[["is","event:hostname",["a.com"]]]}"#,
    );
    let planned = passing::without(&q, &[0]);
    assert_eq!(planned.filter, None);
    let key = |q: &Query| crate::privacy::question_key(q, now(), "");
    // The same question, so the same noise and budget whether or not the condition was
    // planned away (a different key would reveal, noise-free, that no other host was seen)…
    assert_eq!(key(&planned), key(&q));
    // …and not the unfiltered question's.
    let unfiltered = parse_ok(
        r#"{"site_id":"a.com","metrics":["visitors"],"date_range":"30d","dimensions":["event:page"]}"#,
    );
    assert_ne!(key(&planned), key(&unfiltered));
}

#[test]
fn a_hit_filter_on_the_event_rollups_is_applied_in_each_part() {
    // Top pages under a goal completed by an event, over the 19th–20th: the 19th from
    // `events_daily`, the 20th (no build) from raw events; both read only the goal's rows.
    let q = parse_ok(
        r#"{"site_id":"a.com","metrics":["visitors","pageviews"],"date_range":["2026-11-19","2026-11-20"],
            "dimensions":["event:page"],"filters":[["is","event:goal",["Signup"]]]}"#,
    );
    assert_eq!(source(&q, false), Source::Hourly);
    let s = assemble::sql(&q, &site(), &[Build::whole(d("2026-11-19"), 2)], None).to_string();
    assert!(
        s.contains("FROM events_daily PREWHERE site = 'a.com' AND (name = 'Signup') AND day IN"),
        "{s}"
    );
    assert!(
        s.contains("FROM events WHERE site = 'a.com' AND (name = 'Signup') AND ((timestamp"),
        "{s}"
    );
    assert_eq!(
        s.matches("'Signup'").count(),
        2,
        "applied once in each part: {s}"
    );
    // The guard's "everyone" reads every row: nothing to apply.
    let mut all = q.clone();
    let f = all.filter.clone().unwrap();
    all.filter = Some(Filter::Or(vec![f.clone(), Filter::Not(Box::new(f))]));
    let s = assemble::sql(&all, &site(), &[], None).to_string();
    assert!(!s.contains("Signup"), "{s}");
}
