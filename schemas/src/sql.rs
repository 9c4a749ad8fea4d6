//! The one way text becomes SQL in Veil, for every crate of the workspace.
//!
//! ClickHouse 18.16 has no query parameters (`{name:Type}`), so values are written into the
//! statement. To keep a value from ever being read as SQL, statements are a type of their own,
//! [`Sql`], that can be built from three things only:
//!
//! - **static text** — `&'static str`, written by a programmer ([`Sql::new`], the format string
//!   of [`sql!`](crate::sql!));
//! - **identifiers** — names checked against `[A-Za-z_][A-Za-z0-9_]*` ([`ident`]), or
//!   `&'static str` names from an allow-list;
//! - **literals** — strings quoted and escaped by [`lit`] (the only escaper), dates and instants
//!   ([`date`], [`utc`]), numbers.
//!
//! A `String` is not a [`SqlPart`]: passing one to [`sql!`](crate::sql!) does not compile, and
//! named placeholders (`{name}`, which would capture a variable without going through a part)
//! are refused at compile time. Statements are sent with `query_raw` ([`Run`]), so a `?` inside
//! a value is never taken for a client-side bind placeholder. Everything that runs SQL takes a
//! `&Sql`.
//!
//! ```
//! use veil_schemas::{sql, sql::{lit, Sql}};
//! let site = "it's.example";
//! let q: Sql = sql!("SELECT count() FROM events WHERE site = {} AND n > {}", lit(site), 3_u32);
//! assert_eq!(q.as_str(), r"SELECT count() FROM events WHERE site = 'it\'s.example' AND n > 3");
//! ```
//!
//! What the compiler refuses:
//!
//! ```compile_fail
//! let site = String::from("x' OR 1 = 1 --");
//! let q = veil_schemas::sql!("SELECT 1 WHERE site = {}", site); // a String is not a SqlPart
//! ```
//!
//! ```compile_fail
//! let site: &'static str = "x";
//! let q = veil_schemas::sql!("SELECT 1 WHERE site = {site}"); // a named placeholder
//! ```

use std::fmt::{self, Write as _};

use chrono::{NaiveDate, NaiveDateTime};

use crate::Error;

/// A SQL statement or fragment, built only from static text, checked identifiers and escaped
/// literals (see the module docs).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Sql(String);

impl fmt::Debug for Sql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Sql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Sql {
    /// SQL from static text.
    pub fn new(text: &'static str) -> Sql {
        Sql(text.to_string())
    }

    /// The statement's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when no text was written.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends a part.
    pub fn push(&mut self, part: impl SqlPart) {
        part.write_sql(&mut self.0);
    }

    /// Appends a part and returns `self` (for chains).
    pub fn with(mut self, part: impl SqlPart) -> Sql {
        self.push(part);
        self
    }

    /// The parts, separated by `sep` (`", "`, `" AND "` …).
    pub fn join<P: SqlPart>(parts: impl IntoIterator<Item = P>, sep: &'static str) -> Sql {
        let mut out = Sql::default();
        for (i, p) in parts.into_iter().enumerate() {
            if i > 0 {
                out.0.push_str(sep);
            }
            p.write_sql(&mut out.0);
        }
        out
    }

    /// `(a, b, …)` of the parts (an `IN` list or a tuple).
    pub fn tuple<P: SqlPart>(parts: impl IntoIterator<Item = P>) -> Sql {
        Sql::new("(")
            .with(Sql::join(parts, ", "))
            .with(Sql::new(")"))
    }

    /// Used by [`sql!`](crate::sql!): the format string is a literal and every argument a
    /// [`SqlPart`].
    #[doc(hidden)]
    pub fn __from_format(args: fmt::Arguments<'_>) -> Sql {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = s.write_fmt(args);
        Sql(s)
    }
}

/// Something that may be written into SQL: [`Sql`] itself, numbers, and `&'static str`
/// (allow-listed names and fixed fragments). Not `String` and not `&str` of any other lifetime:
/// text from outside becomes SQL through [`lit`] or [`ident`].
pub trait SqlPart {
    /// Writes the part's SQL text.
    fn write_sql(&self, out: &mut String);
}

impl SqlPart for Sql {
    fn write_sql(&self, out: &mut String) {
        out.push_str(&self.0);
    }
}

impl<T: SqlPart + ?Sized> SqlPart for &T {
    fn write_sql(&self, out: &mut String) {
        (**self).write_sql(out);
    }
}

impl SqlPart for &'static str {
    fn write_sql(&self, out: &mut String) {
        out.push_str(self);
    }
}

macro_rules! integer_parts {
    ($($t:ty),*) => {$(
        impl SqlPart for $t {
            fn write_sql(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
integer_parts!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

impl SqlPart for f64 {
    /// Finite numbers in Rust's shortest round-trip form (`0.25`, `1e-7`, `3.0`); NaN and
    /// infinities as ClickHouse spells them.
    fn write_sql(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("nan");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "inf" } else { "-inf" });
        } else {
            let _ = write!(out, "{self:?}");
        }
    }
}

impl SqlPart for bool {
    fn write_sql(&self, out: &mut String) {
        out.push(if *self { '1' } else { '0' });
    }
}

/// Used by [`sql!`](crate::sql!) to show a part through `format_args!`.
#[doc(hidden)]
pub struct Show<'a, P: SqlPart + ?Sized>(pub &'a P);

impl<P: SqlPart + ?Sized> fmt::Display for Show<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        self.0.write_sql(&mut s);
        f.write_str(&s)
    }
}

/// Checks, at compile time, that a [`sql!`](crate::sql!) format string has only `{}` (or
/// `{0}`, `{1}` …) placeholders: a named one (`{site}`) would capture a variable without
/// passing it through [`SqlPart`], and a format spec (`{:?}`) would print it its own way.
#[doc(hidden)]
pub const fn __check_format(fmt: &str) -> bool {
    let b = fmt.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'{' {
            if i + 1 < b.len() && b[i + 1] == b'{' {
                i += 2;
                continue;
            }
            let mut j = i + 1;
            while j < b.len() && b[j] != b'}' {
                if !b[j].is_ascii_digit() {
                    return false;
                }
                j += 1;
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    true
}

/// Builds an [`Sql`] from a literal format string whose `{}` placeholders take [`SqlPart`]s:
/// `sql!("SELECT x FROM {} WHERE site = {}", table, lit(site))`.
#[macro_export]
macro_rules! sql {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{
        const _: () = assert!(
            $crate::sql::__check_format($fmt),
            "sql!: only {{}} placeholders (a named or formatted one would bypass escaping)"
        );
        // A `let`, not a tail expression: the arguments' temporaries end here, so a
        // statement built inline (`fetch(&sql!(…)).await`) does not hold them across an await.
        let built = $crate::sql::Sql::__from_format(format_args!($fmt $(, $crate::sql::Show(&$arg))*));
        built
    }};
}

/// A ClickHouse string literal for `s`: single-quoted, with `\`, `'` and control characters
/// escaped. The only escaper in Veil; the result is safe anywhere a string literal is.
pub fn lit(s: &str) -> Sql {
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
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    Sql(out)
}

/// `(lit(a), lit(b), …)` for an `IN` list (callers make sure it is not empty).
pub fn lit_list<S: AsRef<str>>(values: &[S]) -> Sql {
    Sql::tuple(values.iter().map(|v| lit(v.as_ref())))
}

/// A UTC instant as a ClickHouse `DateTime` expression.
pub fn utc(t: NaiveDateTime) -> Sql {
    sql!(
        "toDateTime({}, 'UTC')",
        lit(&t.format("%Y-%m-%d %H:%M:%S").to_string())
    )
}

/// A `DateTime` expression as UTC text, `YYYY-MM-DD hh:mm:ss` (the epoch for 0), the same on
/// every server: `toString(x, 'UTC')`. Not `formatDateTime(x, '%Y-%m-%d %H:%M:%S')`: since
/// ClickHouse 23.4 `%M` is the month's name (`14:November:00`), in 18.16 the minutes.
pub fn utc_text(expr: impl SqlPart) -> Sql {
    sql!("toString({}, 'UTC')", expr)
}

/// A date as a ClickHouse `Date` expression.
pub fn date(d: NaiveDate) -> Sql {
    sql!("toDate({})", lit(&d.format("%Y-%m-%d").to_string()))
}

/// True for names safe to write into SQL as an identifier: `[A-Za-z_][A-Za-z0-9_]*`, at most
/// 64 bytes.
pub fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

/// An identifier (database, table, cluster, column name) given at run time, checked by
/// [`valid_identifier`].
pub fn ident(name: &str) -> Result<Sql, Error> {
    if valid_identifier(name) {
        Ok(Sql(name.to_string()))
    } else {
        Err(Error::Invalid(format!(
            "{name:?} is not a valid identifier (letters, digits and underscores, not starting with a digit)"
        )))
    }
}

/// Identifiers of a `&'static str` allow-list, joined by `sep`.
pub fn idents(names: &[&'static str], sep: &'static str) -> Sql {
    Sql::join(names.iter().copied(), sep)
}

/// A ClickHouse server's version, as `SELECT version()` prints it (`18.16.1`, `26.9.2.1`).
///
/// Veil's SQL is written to mean the same on 18.16 and on current servers (ClickHouse 26 is
/// tested through the chdb fixture, `testing/chdb/serve.py`); where they had to differ, the
/// portable form is here ([`utc_text`]) or in the statement itself (aliases on joined
/// subqueries). When a statement cannot be written once, its variants are chosen here, from
/// this version, and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    /// `18`, `26` …
    pub major: u32,
    /// `16`, `9` …
    pub minor: u32,
}

impl ServerVersion {
    /// Parses `MAJOR.MINOR[.…]`.
    pub fn parse(text: &str) -> Option<ServerVersion> {
        let mut parts = text.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(ServerVersion { major, minor })
    }

    /// The version of the server `client` talks to.
    pub async fn of(client: &clickhouse::Client) -> Result<ServerVersion, Error> {
        let text = client
            .sql(&Sql::new("SELECT version()"))
            .fetch_one::<String>()
            .await?;
        ServerVersion::parse(&text)
            .ok_or_else(|| Error::Invalid(format!("unexpected server version {text:?}")))
    }

    /// Debian's 18.16 (and anything before 19): the oldest server Veil supports.
    pub fn is_legacy(self) -> bool {
        self.major < 19
    }
}

/// The setting that makes a retried insert feed the materialized views its first attempt
/// missed (ClickHouse 19.x and later; 18.16 lacks it): see [`has_setting`].
pub const MV_DEDUP_SETTING: &str = "deduplicate_blocks_in_dependent_materialized_views";

/// Whether the server knows the setting `name`: settings newer than 18.16 are sent only to
/// servers that have them (asked of `system.settings`, which is exact where a version number
/// would be a guess).
pub async fn has_setting(client: &clickhouse::Client, name: &str) -> Result<bool, Error> {
    let n = client
        .sql(&crate::sql!(
            "SELECT count() FROM system.settings WHERE name = {}",
            lit(name)
        ))
        .fetch_one::<u64>()
        .await?;
    Ok(n > 0)
}

/// Runs an [`Sql`] with the `clickhouse` crate: always `query_raw`, so `?` in a value is inert.
pub trait Run {
    /// The query, ready to `execute`, `fetch_all` or `fetch_bytes`.
    fn sql(&self, q: &Sql) -> clickhouse::query::Query;

    /// An `INSERT … FORMAT …` whose data the caller sends already formatted (the collector's
    /// RowBinary batches).
    fn insert_sql(&self, q: &Sql) -> clickhouse::insert_formatted::InsertFormatted;
}

impl Run for clickhouse::Client {
    fn sql(&self, q: &Sql) -> clickhouse::query::Query {
        self.query_raw(q.as_str())
    }

    fn insert_sql(&self, q: &Sql) -> clickhouse::insert_formatted::InsertFormatted {
        self.insert_formatted_with(q.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_everything_that_could_end_them() {
        assert_eq!(lit("a").as_str(), "'a'");
        assert_eq!(lit("it's").as_str(), r"'it\'s'");
        assert_eq!(lit(r"back\").as_str(), r"'back\\'");
        assert_eq!(
            lit(r"\'; DROP TABLE events; --").as_str(),
            r"'\\\'; DROP TABLE events; --'"
        );
        assert_eq!(lit("a\nb\0").as_str(), r"'a\nb\0'");
        assert_eq!(lit("x\ty\r").as_str(), r"'x\ty\r'");
        assert_eq!(lit("\u{1}").as_str(), r"'\x01'");
        assert_eq!(lit("naïve ? ??").as_str(), "'naïve ? ??'");
        assert_eq!(lit_list(&["a", "b'"]).as_str(), r"('a', 'b\'')");
    }

    #[test]
    fn the_macro_writes_parts_in_order() {
        let t: &'static str = "events";
        let q = sql!(
            "SELECT {} FROM {} WHERE site = {} AND n IN {} AND r < {} AND b = {} {{x}}",
            Sql::new("count()"),
            t,
            lit("a'b"),
            Sql::tuple([1_u32, 2, 3]),
            0.25_f64,
            true
        );
        assert_eq!(
            q.as_str(),
            r"SELECT count() FROM events WHERE site = 'a\'b' AND n IN (1, 2, 3) AND r < 0.25 AND b = 1 {x}"
        );
        assert_eq!(sql!("{1} {0}", 1_u8, 2_u8).as_str(), "2 1");
    }

    #[test]
    fn named_or_formatted_placeholders_are_refused() {
        assert!(__check_format("a {} b {0} {{lit}} }}"));
        assert!(!__check_format("a {site}"));
        assert!(!__check_format("a {:?}"));
        assert!(!__check_format("a {0:>5}"));
    }

    #[test]
    fn dates_instants_and_numbers() {
        let d = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        assert_eq!(date(d).as_str(), "toDate('2026-12-03')");
        let t = d.and_hms_opt(9, 5, 7).unwrap();
        assert_eq!(utc(t).as_str(), "toDateTime('2026-12-03 09:05:07', 'UTC')");
        assert_eq!(
            utc_text(Sql::new("argMax(cut, build)")).as_str(),
            "toString(argMax(cut, build), 'UTC')"
        );
        assert_eq!(sql!("{}", f64::NAN).as_str(), "nan");
        assert_eq!(sql!("{}", -f64::INFINITY).as_str(), "-inf");
        assert_eq!(sql!("{}", 1e-7_f64).as_str(), "1e-7");
        assert_eq!(sql!("{}", -3_i64).as_str(), "-3");
    }

    #[test]
    fn identifiers_are_checked() {
        assert_eq!(ident("veil_db_1").unwrap().as_str(), "veil_db_1");
        for bad in ["", "1a", "a-b", "a b", "a;DROP", "é", &"x".repeat(65)] {
            assert!(ident(bad).is_err(), "{bad:?}");
        }
        assert_eq!(idents(&["a", "b"], ", ").as_str(), "a, b");
    }

    #[test]
    fn an_inline_statement_can_cross_an_await() {
        fn is_send<T: Send>(_: T) {}
        async fn run(_q: &Sql) {}
        is_send(async { run(&sql!("SELECT {}", lit(&String::from("a")))).await });
    }

    #[test]
    fn server_versions_on_each_side() {
        let old = ServerVersion::parse("18.16.1").unwrap();
        assert_eq!((old.major, old.minor), (18, 16));
        assert!(old.is_legacy());
        let new = ServerVersion::parse("26.9.2.1\n").unwrap();
        assert_eq!((new.major, new.minor), (26, 9));
        assert!(!new.is_legacy());
        assert!(old < new);
        for bad in ["", "26", "x.y", "26.x"] {
            assert_eq!(ServerVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn join_and_push() {
        let mut q = Sql::new("SELECT ");
        q.push(Sql::join([lit("a"), lit("b")], ", "));
        assert_eq!(q.as_str(), "SELECT 'a', 'b'");
        assert!(Sql::default().is_empty());
        assert_eq!(Sql::join(Vec::<Sql>::new(), ",").as_str(), "");
    }
}
