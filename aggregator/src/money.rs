//! Revenue in Plausible's money shape: which currency a query's revenue metrics
//! (`total_revenue`, `average_revenue`) are in, and the answer's cells for them.
//!
//! Wire format: a revenue cell is `{"value": 52.5, "currency": "EUR", "long": "€52.50",
//! "short": "€52.5"}` (`long`: the amount with the currency's minor units and thousands
//! separators; `short`: one decimal, thousands as `K`, millions as `M`), or `null`.
//!
//! The currency comes from the site's revenue goals (custom-event goals with a
//! `currency`), as Plausible decides it: the goals considered are those of the query's
//! top-level goal filters (every goal when there is none); one currency among their revenue
//! goals is every cell's; with an `event:goal` dimension each goal row is in its own goal's
//! currency (rows of goals without revenue are `null`); no revenue goal, or several
//! currencies without a goal dimension, make every revenue cell `null` and put a warning in
//! `meta.metric_warnings` (`{"total_revenue": {"code": "no_revenue_goals_matching",
//! "warning": "…"}}`; the other code is `no_single_revenue_currency`). The SQL counts only
//! revenue an event carries in its goal's currency ([`crate::query::expr`]); Veil converts no
//! currencies.
//!
//! Formatting happens after the privacy module: the value shaped is the published number.

use iso_currency::Currency;
use serde_json::{json, Value};

use crate::query::{DimKind, Filter, Metric, Op, Query};
use crate::site::SiteView;

/// The currency of a query's revenue cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Currencies {
    /// The query asks no revenue metric.
    Off,
    /// Every revenue cell is in this currency.
    One(String),
    /// Each row is in the currency of its `event:goal` value: (goal name, currency).
    PerGoal(Vec<(String, String)>),
    /// Revenue cannot be answered: every revenue cell is `null`, with this warning code.
    Unavailable(&'static str),
}

/// Whether `m` is a revenue metric.
pub fn is_revenue(m: Metric) -> bool {
    matches!(m, Metric::TotalRevenue | Metric::AverageRevenue)
}

/// The currency of `q`'s revenue cells on `site`.
pub fn resolve(q: &Query, site: &SiteView) -> Currencies {
    if !q.metrics.iter().any(|m| is_revenue(*m)) {
        return Currencies::Off;
    }
    // The goals named by top-level `is` goal conditions; none: every goal.
    let top: Vec<&Filter> = match &q.filter {
        Some(Filter::And(v)) => v.iter().collect(),
        Some(f) => vec![f],
        None => Vec::new(),
    };
    let named: Vec<&str> = top
        .iter()
        .filter_map(|f| match f {
            Filter::Cond {
                op: Op::Is,
                dim,
                values,
                ..
            } if dim.kind == DimKind::Goal => Some(values.iter().map(String::as_str)),
            _ => None,
        })
        .flatten()
        .collect();
    let goals: Vec<(String, String)> = site
        .goals
        .iter()
        .filter(|g| named.is_empty() || named.contains(&g.name.as_str()))
        .filter_map(|g| Some((g.name.clone(), g.currency.clone()?)))
        .collect();
    let mut currencies: Vec<&str> = goals.iter().map(|(_, c)| c.as_str()).collect();
    currencies.sort_unstable();
    currencies.dedup();
    let by_goal = q.dimensions.iter().any(|d| d.kind == DimKind::Goal);
    match (currencies.as_slice(), by_goal) {
        ([], _) => Currencies::Unavailable("no_revenue_goals_matching"),
        ([one], false) => Currencies::One((*one).to_string()),
        (_, true) => Currencies::PerGoal(goals),
        _ => Currencies::Unavailable("no_single_revenue_currency"),
    }
}

/// What `meta.metric_warnings` says for an unavailable revenue metric.
pub fn warning(code: &str) -> Value {
    let text = match code {
        "no_single_revenue_currency" => {
            "revenue metrics are null: the goals selected have revenue in more than one currency; \
             filter by goals of one currency or break down by event:goal"
        }
        _ => "revenue metrics are null: no revenue goal (a custom-event goal with a currency) matches the query",
    };
    json!({"code": code, "warning": text})
}

/// One revenue cell of a row: `value` (the published number) in the row's currency.
pub fn cell(value: Option<f64>, currencies: &Currencies, dims: &[String], q: &Query) -> Value {
    let currency = match currencies {
        Currencies::Off => return value.map_or(Value::Null, |v| json!(v)),
        Currencies::Unavailable(_) => return Value::Null,
        Currencies::One(c) => Some(c.as_str()),
        Currencies::PerGoal(map) => q
            .dimensions
            .iter()
            .position(|d| d.kind == DimKind::Goal)
            .and_then(|i| dims.get(i))
            .and_then(|goal| map.iter().find(|(g, _)| g == goal))
            .map(|(_, c)| c.as_str()),
    };
    match (value, currency) {
        (Some(v), Some(c)) => money(v, c),
        _ => Value::Null,
    }
}

/// `amount` of `code` in the money shape.
pub fn money(amount: f64, code: &str) -> Value {
    let (symbol, digits) = match Currency::from_code(code) {
        Some(c) => (c.symbol().to_string(), c.exponent().unwrap_or(2)),
        None => (code.to_string(), 2),
    };
    let digits = usize::from(digits.min(4));
    let sign = if amount < 0.0 { "-" } else { "" };
    let abs = amount.abs();
    let long = grouped(abs, digits);
    let short = if abs >= 1_000_000.0 {
        format!("{:.1}M", abs / 1_000_000.0)
    } else if abs >= 1_000.0 {
        format!("{:.1}K", abs / 1_000.0)
    } else {
        format!("{abs:.1}")
    };
    // A letter symbol ("CHF") is set apart from the number; a sign ("€", "$") is not.
    let sep = if symbol.chars().all(|c| c.is_ascii_alphabetic()) {
        " "
    } else {
        ""
    };
    json!({
        "value": amount,
        "currency": code,
        "long": format!("{sign}{symbol}{sep}{long}"),
        "short": format!("{sign}{symbol}{sep}{short}"),
    })
}

/// `x` with `digits` decimals and a comma between thousands.
fn grouped(x: f64, digits: usize) -> String {
    let text = format!("{x:.digits$}");
    let (int, frac) = text.split_once('.').unwrap_or((text.as_str(), ""));
    let mut out = String::new();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_plausibles_shape() {
        assert_eq!(
            money(52.5, "EUR"),
            json!({"value": 52.5, "currency": "EUR", "long": "€52.50", "short": "€52.5"})
        );
        assert_eq!(money(1659.5, "USD")["long"], "$1,659.50");
        assert_eq!(money(1659.5, "USD")["short"], "$1.7K");
        assert_eq!(money(2_345_678.0, "GBP")["short"], "£2.3M");
        assert_eq!(money(1234.0, "JPY")["long"], "¥1,234");
        assert_eq!(money(-5.0, "EUR")["long"], "-€5.00");
    }
}
