//! Checks a filter's regular expression with the syntax ClickHouse will run it with: RE2's
//! (`match(column, pattern)`), before any SQL is sent, so a pattern RE2 refuses is a 400
//! naming the filter instead of a database failure, and a pattern is never read one way here
//! and another way there.
//!
//! The pattern is parsed with `regex-syntax` (Rust's regex syntax, which descends from RE2's)
//! and then every construct is held to what RE2 accepts *with the same meaning*:
//!
//! | construct | RE2 | Rust | here |
//! |---|---|---|---|
//! | look-around `(?=…)`, `(?<=…)`, back-reference `\1` | refused | refused | refused |
//! | counted repetition above 1000 (`a{1001}`, or nested ones multiplying past it) | refused | accepted | refused |
//! | `a{2,1}`, unclosed groups and classes | refused | refused | refused |
//! | named group `(?P<n>…)` | accepted | accepted | accepted (name of ASCII word characters) |
//! | named group `(?<n>…)` | only RE2 since 2023 (not ClickHouse 18.16's) | accepted | refused |
//! | flags `i`, `m`, `s`, `U` | accepted | accepted | accepted |
//! | flags `x`, `u`, `R` | refused | accepted | refused |
//! | class set operations `[a&&b]`, `[a--b]`, `[a~~b]`, nested `[[a]]` | literal characters | set operations | refused |
//! | `\<`, `\>`, `\b{start}` … | literal `<`, `>`, `{start}` | word boundaries | refused |
//! | `\u0041`, `\U…` | refused | code points | refused |
//! | `\p{Lu}`, `\pL`, `\p{Any}` (general categories) | accepted | accepted | accepted |
//! | `\p{Greek}` (scripts), `\p{Alphabetic}`, `\p{gc=Lu}` | scripts only | accepted | refused (scripts too: a narrower, documented gap) |
//! | octal `\012`, `\Q…\E`, `\C`, a `{` that starts no repetition (`a{`, `x{y}`) | accepted | refused | refused (a narrower gap: say it another way) |
//!
//! What remains different is meaning, not syntax: RE2 in ClickHouse matches bytes of UTF-8 and
//! its `\d`, `\s`, `\w` and `\b` are ASCII-only, where Rust's are Unicode-aware; nothing here
//! runs the pattern (goal filters aside, which match goal *names* in Veil, see
//! [`crate::query::expr`]).

use regex_syntax::ast::parse::ParserBuilder;
use regex_syntax::ast::{
    AssertionKind, Ast, ClassSet, ClassSetItem, ClassUnicodeKind, Flag, FlagsItemKind, GroupKind,
    HexLiteralKind, LiteralKind, RepetitionKind, RepetitionRange,
};

/// RE2's largest count in a counted repetition (`kMaxRepeat`), also the bound on nested
/// counted repetitions multiplied together.
pub const MAX_REPEAT: u64 = 1000;

/// How deeply groups and repetitions may nest (regex-syntax's default).
const NEST_LIMIT: u32 = 250;

/// Unicode general categories as RE2 names them (`\pL`, `\p{Lu}`), and `Any`.
const CATEGORIES: &[&str] = &[
    "Any", "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn",
    "N", "Nd", "Nl", "No", "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm",
    "So", "Z", "Zl", "Zp", "Zs",
];

/// Checks `pattern` as RE2 will read it; the error says what is wrong and where (a byte
/// offset into the pattern), for a 400 that also names the filter.
pub fn check(pattern: &str) -> Result<(), String> {
    let ast = ParserBuilder::new()
        .octal(false)
        .nest_limit(NEST_LIMIT)
        .build()
        .parse(pattern)
        .map_err(|e| format!("{} at byte {}", e.kind(), e.span().start.offset))?;
    walk(&ast, 1)
}

fn at(span: &regex_syntax::ast::Span, what: &str) -> String {
    format!("{what} at byte {} (ClickHouse runs RE2)", span.start.offset)
}

/// Checks `ast`, inside counted repetitions whose counts multiply to `repeat`.
fn walk(ast: &Ast, repeat: u64) -> Result<(), String> {
    match ast {
        Ast::Empty(_) | Ast::Dot(_) | Ast::ClassPerl(_) => Ok(()),
        Ast::Flags(f) => flags(&f.flags),
        Ast::Literal(l) => check_char(l),
        Ast::Assertion(a) => match a.kind {
            AssertionKind::StartLine
            | AssertionKind::EndLine
            | AssertionKind::StartText
            | AssertionKind::EndText
            | AssertionKind::WordBoundary
            | AssertionKind::NotWordBoundary => Ok(()),
            _ => Err(at(
                &a.span,
                "RE2 has no start- or end-of-word assertions (it reads \\< as <, \\b{start} as \\b then {start}); use \\b",
            )),
        },
        Ast::ClassUnicode(c) => unicode(c),
        Ast::ClassBracketed(c) => class_set(&c.kind),
        Ast::Repetition(r) => {
            let n = match &r.op.kind {
                RepetitionKind::ZeroOrOne
                | RepetitionKind::ZeroOrMore
                | RepetitionKind::OneOrMore => 1,
                RepetitionKind::Range(range) => {
                    let high = match *range {
                        RepetitionRange::Exactly(n) | RepetitionRange::AtLeast(n) => n,
                        RepetitionRange::Bounded(lo, hi) => lo.max(hi),
                    };
                    u64::from(high).max(1)
                }
            };
            let total = repeat.saturating_mul(n);
            if total > MAX_REPEAT {
                return Err(at(
                    &r.op.span,
                    &format!(
                        "RE2 allows counted repetitions up to {MAX_REPEAT} (nested ones multiplied together)"
                    ),
                ));
            }
            walk(&r.ast, total)
        }
        Ast::Group(g) => {
            match &g.kind {
                GroupKind::CaptureIndex(_) => {}
                GroupKind::CaptureName {
                    starts_with_p,
                    name,
                } => {
                    if !starts_with_p {
                        return Err(at(
                            &g.span,
                            "RE2 names a group (?P<name>…), not (?<name>…)",
                        ));
                    }
                    if !name
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        return Err(at(
                            &name.span,
                            "an RE2 group name is made of ASCII letters, digits and _",
                        ));
                    }
                }
                GroupKind::NonCapturing(f) => flags(f)?,
            }
            walk(&g.ast, repeat)
        }
        Ast::Alternation(a) => a.asts.iter().try_for_each(|x| walk(x, repeat)),
        Ast::Concat(c) => c.asts.iter().try_for_each(|x| walk(x, repeat)),
    }
}

fn flags(f: &regex_syntax::ast::Flags) -> Result<(), String> {
    for item in &f.items {
        if let FlagsItemKind::Flag(flag) = item.kind {
            match flag {
                Flag::CaseInsensitive
                | Flag::MultiLine
                | Flag::DotMatchesNewLine
                | Flag::SwapGreed => {}
                Flag::Unicode | Flag::CRLF | Flag::IgnoreWhitespace => {
                    return Err(at(
                        &item.span,
                        "RE2 knows the flags i, m, s and U only (not x, u or R)",
                    ))
                }
            }
        }
    }
    Ok(())
}

fn check_char(l: &regex_syntax::ast::Literal) -> Result<(), String> {
    match l.kind {
        LiteralKind::HexFixed(HexLiteralKind::UnicodeShort | HexLiteralKind::UnicodeLong)
        | LiteralKind::HexBrace(HexLiteralKind::UnicodeShort | HexLiteralKind::UnicodeLong) => {
            Err(at(
                &l.span,
                "RE2 has no \\u or \\U escapes; write \\x{…} for a code point",
            ))
        }
        // Octal is turned off in the parser (so that `\1` is refused as a back-reference).
        _ => Ok(()),
    }
}

fn unicode(c: &regex_syntax::ast::ClassUnicode) -> Result<(), String> {
    let ok = match &c.kind {
        ClassUnicodeKind::OneLetter(l) => CATEGORIES.contains(&l.to_string().as_str()),
        ClassUnicodeKind::Named(n) => CATEGORIES.contains(&n.as_str()),
        ClassUnicodeKind::NamedValue { .. } => false,
    };
    if ok {
        Ok(())
    } else {
        Err(at(
            &c.span,
            "this filter accepts Unicode classes by general category only (\\pL, \\p{Lu}, \\p{Any})",
        ))
    }
}

fn class_set(set: &ClassSet) -> Result<(), String> {
    match set {
        ClassSet::BinaryOp(op) => Err(at(
            &op.span,
            "RE2 has no class set operations (&&, --, ~~): inside [ ] it reads them as characters",
        )),
        ClassSet::Item(item) => class_item(item),
    }
}

fn class_item(item: &ClassSetItem) -> Result<(), String> {
    match item {
        ClassSetItem::Empty(_)
        | ClassSetItem::Range(_)
        | ClassSetItem::Ascii(_)
        | ClassSetItem::Perl(_) => Ok(()),
        ClassSetItem::Literal(l) => check_char(l),
        ClassSetItem::Unicode(u) => unicode(u),
        ClassSetItem::Bracketed(b) => Err(at(
            &b.span,
            "RE2 has no nested classes ([[a]]): inside [ ] it reads [ as a character; escape it (\\[)",
        )),
        ClassSetItem::Union(u) => u.items.iter().try_for_each(class_item),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re2_syntax_is_accepted() {
        for ok in [
            "^/blog/",
            "^/(a|b)+$",
            r"^/p/\d{1,3}$",
            "(?i)^/Pricing",
            "(?P<slug>[a-z0-9_-]+)",
            "a{1000}",
            "(a{10}){100}",
            r"[[:alpha:]]+\.html",
            r"\pL\p{Lu}\p{Any}[\p{Nd}x]",
            r"\x{1F600}|\x41",
            r"\bword\b\B\A\z",
            "",
            r"^/blog/.*$",
            r"\#\&\-\~",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn what_re2_refuses_or_reads_otherwise_is_refused() {
        for (bad, says) in [
            ("(a", "unclosed group"),
            ("a{2,1}", "invalid"),
            ("(?<=x)y", "look-around"),
            ("(?=x)", "look-around"),
            (r"(a)\1", "backreferences"),
            ("a{1001}", "up to 1000"),
            ("(a{100}){11}", "up to 1000"),
            ("(?<n>a)", "(?P<name>"),
            ("(?x) a", "flags"),
            ("(?u:a)", "flags"),
            ("[a&&b]", "set operations"),
            ("[a--b]", "set operations"),
            ("[[a]b]", "nested"),
            (r"\<a", "assertions"),
            (r"\b{start}a", "assertions"),
            (r"\u0041", r"\u"),
            (r"\p{Greek}", "general category"),
            (r"\p{gc=Lu}", "general category"),
            (r"\p{Alphabetic}", "general category"),
        ] {
            let e = check(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains("at byte"), "{bad}: {e}");
        }
    }
}
