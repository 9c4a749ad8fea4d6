//! The small SQL builder every report query goes through.
//!
//! Two rules keep user input out of SQL text: identifiers (columns, functions, expressions)
//! only ever come from the allow-lists in [`super`], and every value is rendered by [`lit`],
//! which quotes and escapes it as a ClickHouse string literal. Queries built here are sent with
//! `query_raw`, so a `?` in a value is not mistaken for a bind placeholder.

/// A ClickHouse string literal for `s`: single-quoted, with `\`, `'` and control characters
/// escaped. The result is safe anywhere a string literal is.
pub fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `(lit(a), lit(b), …)` for an `IN` list (never empty: callers check).
pub fn lit_list<S: AsRef<str>>(values: &[S]) -> String {
    let items: Vec<String> = values.iter().map(|v| lit(v.as_ref())).collect();
    format!("({})", items.join(", "))
}

/// A UTC instant as a ClickHouse `DateTime` expression.
pub fn utc(t: chrono::NaiveDateTime) -> String {
    format!(
        "toDateTime({}, 'UTC')",
        lit(&t.format("%Y-%m-%d %H:%M:%S").to_string())
    )
}

/// A date as a ClickHouse `Date` expression.
pub fn date(d: chrono::NaiveDate) -> String {
    format!("toDate({})", lit(&d.format("%Y-%m-%d").to_string()))
}

/// Turns a goal's page pattern (`*` = any run of characters) into an anchored RE2 regex.
pub fn glob_to_regex(pattern: &str) -> String {
    let parts: Vec<String> = pattern.split('*').map(regex::escape).collect();
    format!("^{}$", parts.join(".*"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_everything_that_could_end_them() {
        assert_eq!(lit("a"), "'a'");
        assert_eq!(lit("it's"), r"'it\'s'");
        assert_eq!(lit(r"back\"), r"'back\\'");
        assert_eq!(
            lit(r"\'; DROP TABLE events; --"),
            r"'\\\'; DROP TABLE events; --'"
        );
        assert_eq!(lit("a\nb\0"), r"'a\nb\0'");
        assert_eq!(lit("\u{1}"), r"'\x01'");
        assert_eq!(lit("naïve ? ??"), "'naïve ? ??'");
        assert_eq!(lit_list(&["a", "b'"]), r"('a', 'b\'')");
    }

    #[test]
    fn globs_become_anchored_regexes() {
        assert_eq!(glob_to_regex("/blog/*"), r"^/blog/.*$");
        assert_eq!(glob_to_regex("/a.b"), r"^/a\.b$");
        assert_eq!(glob_to_regex("*"), "^.*$");
    }
}
