//! Reading the shipped migration files: splitting a file into statements and recognising the
//! few statement shapes the runner and the cluster rewrite need (`CREATE TABLE`, `CREATE
//! MATERIALIZED VIEW … TO`, `ALTER TABLE … ADD COLUMN`).
//!
//! Everything here works on `&'static str` slices of the embedded files (`include_str!`), so
//! a statement, and every piece the cluster rewrite cuts from one, is static text that
//! [`Sql`](crate::sql::Sql) accepts as it is: no statement text is ever copied into a `String`
//! on its way to ClickHouse.
//!
//! File rules the splitter relies on: a statement ends with a `;` at the end of a line; `--`
//! comment lines and blank lines stand between statements, not inside one (checked for every
//! shipped file by a test).

/// The statements of a migration file: each the slice from its first line to the line ending
/// in `;`, trimmed, without the `;`. Comment and blank lines between statements are skipped.
pub fn split_statements(sql: &'static str) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut offset = 0;
    for line in sql.split_inclusive('\n') {
        let at = offset;
        offset += line.len();
        let trimmed = line.trim();
        if start.is_none() && (trimmed.starts_with("--") || trimmed.is_empty()) {
            continue;
        }
        let from = *start.get_or_insert(at);
        if trimmed.ends_with(';') {
            let stmt = sql[from..offset].trim().trim_end_matches(';').trim();
            if !stmt.is_empty() {
                out.push(stmt);
            }
            start = None;
        }
    }
    if let Some(from) = start {
        let rest = sql[from..].trim();
        if !rest.is_empty() {
            out.push(rest);
        }
    }
    out
}

/// True when a comment or blank line stands inside a statement of `sql` (the splitter keeps
/// such lines in the statement; shipped files must not have them).
#[cfg(test)]
pub fn has_lines_inside_statements(sql: &str) -> bool {
    let mut inside = false;
    for line in sql.lines() {
        let trimmed = line.trim();
        let filler = trimmed.starts_with("--") || trimmed.is_empty();
        if inside && filler {
            return true;
        }
        if !filler {
            inside = !trimmed.ends_with(';');
        }
    }
    false
}

/// For `ALTER TABLE t ADD COLUMN c …`, the table and column (the runner skips it when the
/// column exists: 18.16 has no `ADD COLUMN IF NOT EXISTS`).
pub fn added_column(stmt: &str) -> Option<(&str, &str)> {
    let words: Vec<&str> = stmt.split_whitespace().take(6).collect();
    match words.as_slice() {
        [a, t, table, add, c, column]
            if a.eq_ignore_ascii_case("ALTER")
                && t.eq_ignore_ascii_case("TABLE")
                && add.eq_ignore_ascii_case("ADD")
                && c.eq_ignore_ascii_case("COLUMN") =>
        {
            Some((table, column))
        }
        _ => None,
    }
}

/// The text after `ALTER TABLE t` (the action: `ADD COLUMN …`, `DELETE WHERE …`).
pub fn alter_action<'a>(stmt: &'a str, table: &str) -> &'a str {
    let at = stmt.find(table).unwrap_or(0) + table.len();
    stmt[at..].trim()
}

/// Splits a statement into words, keeping `(`, `)` and `,` as words of their own.
pub fn words(stmt: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in stmt.char_indices() {
        let sep = c.is_whitespace() || c == '(' || c == ')' || c == ',';
        if sep {
            if let Some(s) = start.take() {
                out.push(&stmt[s..i]);
            }
            if !c.is_whitespace() {
                out.push(&stmt[i..i + c.len_utf8()]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push(&stmt[s..]);
    }
    out
}

/// Case-insensitive keyword match.
pub fn is(word: &str, kw: &str) -> bool {
    word.eq_ignore_ascii_case(kw)
}

/// Byte offset of the keyword `kw` as a whole word at depth 0 of parentheses, from `from`.
fn find_kw(stmt: &str, kw: &str, from: usize) -> Option<usize> {
    let bytes = stmt.as_bytes();
    let mut depth = 0i32;
    let mut in_str = false;
    let mut i = from;
    while i < bytes.len() {
        let c = bytes[i];
        if in_str {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == b'\'' {
                in_str = false;
            }
        } else if c == b'\'' {
            in_str = true;
        } else if c == b'(' {
            depth += 1;
        } else if c == b')' {
            depth -= 1;
        } else if depth == 0
            && stmt[i..].len() >= kw.len()
            && stmt.is_char_boundary(i + kw.len())
            && stmt[i..i + kw.len()].eq_ignore_ascii_case(kw)
            && (i == 0 || !is_ident_byte(bytes[i - 1]))
            && bytes.get(i + kw.len()).is_none_or(|b| !is_ident_byte(*b))
        {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// A byte that may be part of an identifier.
pub fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A parsed `CREATE TABLE [IF NOT EXISTS] name (columns) ENGINE = E[(args)] rest`.
pub struct CreateTable<'a> {
    /// Table name.
    pub name: &'a str,
    /// The column list, without the parentheses.
    pub columns: &'a str,
    /// Engine name.
    pub engine: &'a str,
    /// Engine arguments, without the parentheses (`None` when empty or absent).
    pub engine_args: Option<&'a str>,
    /// Everything after the engine (`PARTITION BY …`, `ORDER BY …`, `SETTINGS …`).
    pub rest: &'a str,
}

/// Parses a `CREATE TABLE` statement (`None`: not one).
pub fn parse_create_table(stmt: &str) -> Option<CreateTable<'_>> {
    let w = words(stmt);
    if !(w.len() > 3 && is(w[0], "CREATE") && is(w[1], "TABLE")) {
        return None;
    }
    let name = if is(w[2], "IF") { *w.get(5)? } else { w[2] };
    let name_at = stmt.find(name)?;
    let open = name_at + stmt[name_at..].find('(')?;
    let engine_kw = find_kw(stmt, "ENGINE", open)?;
    let close = stmt[..engine_kw].rfind(')')?;
    let columns = &stmt[open + 1..close];
    let after = stmt[engine_kw + "ENGINE".len()..].trim_start();
    let after = after.strip_prefix('=')?.trim_start();
    let end = after
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(after.len());
    let engine = &after[..end];
    let mut rest = after[end..].trim_start();
    let mut engine_args = None;
    if let Some(r) = rest.strip_prefix('(') {
        let close = r.find(')')?;
        engine_args = Some(r[..close].trim()).filter(|a| !a.is_empty());
        rest = r[close + 1..].trim_start();
    }
    Some(CreateTable {
        name,
        columns,
        engine,
        engine_args,
        rest,
    })
}

/// Column names of a column list (the first word of each top-level comma-separated item).
pub fn column_names(columns: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let bytes = columns.as_bytes();
    for i in 0..=bytes.len() {
        let c = bytes.get(i).copied().unwrap_or(b',');
        match c {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b',' if depth == 0 => {
                if let Some(n) = columns[start..i].split_whitespace().next() {
                    out.push(n.trim_matches('`'));
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    out
}

/// For `CREATE MATERIALIZED VIEW [IF NOT EXISTS] v TO t …`, (v, t, offset of `AS`).
pub fn parse_mv(stmt: &str) -> Option<(&str, &str, usize)> {
    let w = words(stmt);
    if !(w.len() > 5 && is(w[0], "CREATE") && is(w[1], "MATERIALIZED") && is(w[2], "VIEW")) {
        return None;
    }
    let i = if is(w[3], "IF") { 6 } else { 3 };
    let view = *w.get(i)?;
    if !is(w.get(i + 1)?, "TO") {
        return None;
    }
    let target = *w.get(i + 2)?;
    let as_at = find_kw(stmt, "AS", 0)?;
    Some((view, target, as_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_slices_of_the_file() {
        let sql = "-- c\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\n  CREATE TABLE b\n  (y UInt8)\nENGINE = Memory;\nSELECT 1";
        let s = split_statements(sql);
        assert_eq!(
            s,
            [
                "CREATE TABLE a (x UInt8) ENGINE = Memory",
                "CREATE TABLE b\n  (y UInt8)\nENGINE = Memory",
                "SELECT 1"
            ]
        );
        assert!(!has_lines_inside_statements(sql));
        assert!(has_lines_inside_statements(
            "CREATE TABLE a\n-- x\n(x UInt8) ENGINE = Memory;"
        ));
        assert!(has_lines_inside_statements(
            "CREATE TABLE a\n\n(x UInt8) ENGINE = Memory;"
        ));
    }

    #[test]
    fn create_table_parts() {
        let t = parse_create_table(
            "CREATE TABLE IF NOT EXISTS r (k String, v Nullable(UInt64)) ENGINE = ReplacingMergeTree(v) ORDER BY k",
        )
        .unwrap();
        assert_eq!(t.name, "r");
        assert_eq!(column_names(t.columns), ["k", "v"]);
        assert_eq!(t.engine, "ReplacingMergeTree");
        assert_eq!(t.engine_args, Some("v"));
        assert_eq!(t.rest, "ORDER BY k");
        assert_eq!(
            parse_mv("CREATE MATERIALIZED VIEW IF NOT EXISTS m TO t AS SELECT 1")
                .map(|m| (m.0, m.1)),
            Some(("m", "t"))
        );
        assert_eq!(
            alter_action("ALTER TABLE r ADD COLUMN w UInt8", "r"),
            "ADD COLUMN w UInt8"
        );
    }

    #[test]
    fn add_column_statements_are_recognised() {
        assert_eq!(
            added_column("ALTER TABLE events ADD COLUMN x UInt8 DEFAULT 0"),
            Some(("events", "x"))
        );
        assert_eq!(
            added_column("CREATE TABLE x (a UInt8) ENGINE = Memory"),
            None
        );
    }
}
