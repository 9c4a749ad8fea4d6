//! Reads Plausible's CSV export: the zip its "Export data" makes (or one of its CSV files),
//! the same files Plausible's own CSV import takes.
//!
//! Wire format (Plausible's `CSVImporter`): one file per table, named
//! `imported_<table>_<YYYYMMDD>_<YYYYMMDD>.csv` (the `imported_` prefix may be missing), the
//! dates bounding the rows kept (rows outside are left out, as Plausible does); comma-separated
//! with a header line naming the columns (ClickHouse's `CSVWithNames`: `"` quotes, `""` inside
//! quotes, LF or CRLF). Columns are found by name, in any order; columns Veil does not use are
//! ignored; an empty count is 0 and `\N` (a null) too. The tables and the columns read:
//!
//! | table | dimensions | counts |
//! |---|---|---|
//! | `visitors` | — | visitors, pageviews, bounces, visits, visit_duration |
//! | `sources` | source, referrer, utm_source, utm_medium, utm_campaign, utm_content, utm_term | pageviews, visitors, visits, visit_duration, bounces |
//! | `pages` | hostname*, page | visits*, visitors, pageviews |
//! | `entry_pages` | entry_page | visitors, entrances (as visits), visit_duration, bounces, pageviews |
//! | `exit_pages` | exit_page | visitors, visit_duration, exits (as visits), bounces, pageviews |
//! | `locations` | country, region, city (a GeoNames id; 0: none) | visitors, visits, visit_duration, bounces, pageviews |
//! | `devices` | device | visitors, visits, visit_duration, bounces, pageviews |
//! | `browsers` | browser, browser_version* | visitors, visits, visit_duration, bounces, pageviews |
//! | `operating_systems` | operating_system, operating_system_version* | visitors, visits, visit_duration, bounces, pageviews |
//! | `custom_events` | name, link_url*, path* | visitors, events |
//!
//! (* optional: older exports lack them.) `visit_duration` is the day's summed seconds, as in
//! Plausible's tables. Pages' `time_on_page`, `scroll_depth` and `pageleave_visitors` are not
//! kept (Veil's engagement metrics are not merged with imported numbers).

use std::io::Read;

use chrono::NaiveDate;

/// Stored dimension columns of `imported`, in table order.
pub const DIM_COLS: [&str; 22] = [
    "source",
    "referrer",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "hostname",
    "page",
    "entry_page",
    "exit_page",
    "country",
    "region",
    "city",
    "device",
    "browser",
    "browser_version",
    "os",
    "os_version",
    "name",
    "link_url",
    "path",
];

/// Stored count columns of `imported`, in table order.
pub const COUNT_COLS: [&str; 6] = [
    "visitors",
    "visits",
    "pageviews",
    "bounces",
    "visit_duration",
    "events",
];

/// One table of the export: its kind (the stored `kind`), and its columns as
/// `(CSV name, stored column, required)`.
pub struct Table {
    /// The stored `kind` (the table name without `imported_`).
    pub kind: &'static str,
    dims: &'static [(&'static str, &'static str, bool)],
    counts: &'static [(&'static str, &'static str, bool)],
}

const FIVE: &[(&str, &str, bool)] = &[
    ("visitors", "visitors", true),
    ("visits", "visits", true),
    ("visit_duration", "visit_duration", true),
    ("bounces", "bounces", true),
    ("pageviews", "pageviews", true),
];

/// Every table Veil reads.
pub const TABLES: &[Table] = &[
    Table {
        kind: "visitors",
        dims: &[],
        counts: FIVE,
    },
    Table {
        kind: "sources",
        dims: &[
            ("source", "source", true),
            ("referrer", "referrer", true),
            ("utm_source", "utm_source", true),
            ("utm_medium", "utm_medium", true),
            ("utm_campaign", "utm_campaign", true),
            ("utm_content", "utm_content", true),
            ("utm_term", "utm_term", true),
        ],
        counts: FIVE,
    },
    Table {
        kind: "pages",
        dims: &[("hostname", "hostname", false), ("page", "page", true)],
        counts: &[
            ("visits", "visits", false),
            ("visitors", "visitors", true),
            ("pageviews", "pageviews", true),
        ],
    },
    Table {
        kind: "entry_pages",
        dims: &[("entry_page", "entry_page", true)],
        counts: &[
            ("visitors", "visitors", true),
            ("entrances", "visits", true),
            ("visit_duration", "visit_duration", true),
            ("bounces", "bounces", true),
            ("pageviews", "pageviews", true),
        ],
    },
    Table {
        kind: "exit_pages",
        dims: &[("exit_page", "exit_page", true)],
        counts: &[
            ("visitors", "visitors", true),
            ("exits", "visits", true),
            ("visit_duration", "visit_duration", true),
            ("bounces", "bounces", true),
            ("pageviews", "pageviews", true),
        ],
    },
    Table {
        kind: "locations",
        dims: &[
            ("country", "country", true),
            ("region", "region", true),
            ("city", "city", true),
        ],
        counts: FIVE,
    },
    Table {
        kind: "devices",
        dims: &[("device", "device", true)],
        counts: FIVE,
    },
    Table {
        kind: "browsers",
        dims: &[
            ("browser", "browser", true),
            ("browser_version", "browser_version", false),
        ],
        counts: FIVE,
    },
    Table {
        kind: "operating_systems",
        dims: &[
            ("operating_system", "os", true),
            ("operating_system_version", "os_version", false),
        ],
        counts: FIVE,
    },
    Table {
        kind: "custom_events",
        dims: &[
            ("name", "name", true),
            ("link_url", "link_url", false),
            ("path", "path", false),
        ],
        counts: &[("visitors", "visitors", true), ("events", "events", true)],
    },
];

/// One imported row: a day of one table, its dimension values and counts (in [`DIM_COLS`]
/// and [`COUNT_COLS`] order; unused ones empty or 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The table's kind.
    pub kind: &'static str,
    /// The day (the site's time zone, as Plausible exports it).
    pub date: NaiveDate,
    /// Dimension values.
    pub dims: Vec<String>,
    /// Counts.
    pub counts: [u64; 6],
}

/// What one export holds.
#[derive(Debug, Clone, Default)]
pub struct Export {
    /// Rows of every table read.
    pub rows: Vec<Row>,
    /// The first and last day the file names cover.
    pub range: Option<(NaiveDate, NaiveDate)>,
    /// Files read, with the rows each gave.
    pub files: Vec<(String, usize)>,
    /// Files in the zip that are not one of Plausible's tables (left alone).
    pub skipped: Vec<String>,
}

/// The table and date range a file name names (`imported_sources_20240101_20241231.csv` or
/// `sources_20240101_20241231.csv`), if it is one of [`TABLES`].
pub fn parse_file_name(name: &str) -> Option<(&'static Table, NaiveDate, NaiveDate)> {
    let base = name.rsplit('/').next().unwrap_or(name);
    let stem = base.strip_suffix(".csv")?;
    let stem = stem.strip_prefix("imported_").unwrap_or(stem);
    // <kind>_<8 digits>_<8 digits>
    if stem.len() < 18 {
        return None;
    }
    // `<kind>` then `_YYYYMMDD_YYYYMMDD` (18 bytes, ASCII when the name is one of ours).
    let at = stem.len() - 18;
    let (kind, dates) = (stem.get(..at)?, stem.get(at..)?);
    let dates = dates.strip_prefix('_')?;
    let (a, b) = dates.split_once('_')?;
    let day = |s: &str| NaiveDate::parse_from_str(s, "%Y%m%d").ok();
    let t = TABLES.iter().find(|t| t.kind == kind)?;
    Some((t, day(a)?, day(b)?))
}

/// Reads an export: a zip of Plausible's CSV files, or one such CSV file (`name` says which
/// table). Errors name the file, line and column.
pub fn read(name: &str, bytes: &[u8]) -> Result<Export, String> {
    let mut out = Export::default();
    if bytes.starts_with(b"PK") {
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
            .map_err(|e| format!("{name}: not a readable zip archive: {e}"))?;
        for i in 0..zip.len() {
            let mut f = zip
                .by_index(i)
                .map_err(|e| format!("{name}: entry {i} cannot be read: {e}"))?;
            if f.is_dir() {
                continue;
            }
            let fname = f.name().to_string();
            let Some(table) = parse_file_name(&fname) else {
                out.skipped.push(fname);
                continue;
            };
            let mut text = Vec::new();
            // At most 4 GiB of CSV per file (a guard against a zip bomb, not a real limit).
            (&mut f)
                .take(4 << 30)
                .read_to_end(&mut text)
                .map_err(|e| format!("{fname}: cannot be decompressed: {e}"))?;
            read_table(&mut out, &fname, table, &text)?;
        }
    } else {
        let table = parse_file_name(name).ok_or_else(|| {
            format!(
                "{name}: neither a zip nor a CSV file named like Plausible's export \
                 (imported_visitors_YYYYMMDD_YYYYMMDD.csv, imported_sources_…, …)"
            )
        })?;
        read_table(&mut out, name, table, bytes)?;
    }
    if out.files.is_empty() {
        return Err(format!(
            "{name}: no CSV file of Plausible's export in it (expected names like \
             imported_visitors_YYYYMMDD_YYYYMMDD.csv)"
        ));
    }
    Ok(out)
}

fn read_table(
    out: &mut Export,
    fname: &str,
    (table, from, to): (&'static Table, NaiveDate, NaiveDate),
    bytes: &[u8],
) -> Result<(), String> {
    if from > to {
        return Err(format!(
            "{fname}: its name's date range ends before it starts"
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("{fname}: not UTF-8 text (byte {})", e.valid_up_to()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let records = records(text).map_err(|(line, m)| format!("{fname} line {line}: {m}"))?;
    let mut it = records.into_iter();
    let Some((_, header)) = it.next() else {
        return Err(format!("{fname}: empty (no header line)"));
    };
    let col = |n: &str| header.iter().position(|h| h.trim() == n);
    let date_at = col("date").ok_or_else(|| format!("{fname} line 1: no `date` column"))?;
    let find = |cols: &'static [(&'static str, &'static str, bool)]| {
        cols.iter()
            .map(|(csv, stored, required)| match col(csv) {
                Some(at) => Ok(Some((at, *csv, *stored))),
                None if *required => Err(format!("{fname} line 1: no `{csv}` column")),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>, String>>()
            .map(|v| v.into_iter().flatten().collect::<Vec<_>>())
    };
    let dims = find(table.dims)?;
    let counts = find(table.counts)?;
    let mut n = 0;
    for (line, cells) in it {
        if cells.len() == 1 && cells[0].is_empty() {
            continue; // a blank line
        }
        if cells.len() != header.len() {
            return Err(format!(
                "{fname} line {line}: {} cells, the header has {}",
                cells.len(),
                header.len()
            ));
        }
        let date = NaiveDate::parse_from_str(cells[date_at].trim(), "%Y-%m-%d").map_err(|_| {
            format!(
                "{fname} line {line}, column date: {:?} is not a date (YYYY-MM-DD)",
                cells[date_at]
            )
        })?;
        if date < from || date > to {
            continue; // outside the file's range: Plausible's importer leaves it out too
        }
        let mut row = Row {
            kind: table.kind,
            date,
            dims: vec![String::new(); DIM_COLS.len()],
            counts: [0; 6],
        };
        for (at, _, stored) in &dims {
            let v = cells[*at].clone();
            let v = if *stored == "city" && v.trim() == "0" {
                String::new()
            } else {
                v
            };
            if let Some(i) = DIM_COLS.iter().position(|c| c == stored) {
                row.dims[i] = v;
            }
        }
        for (at, csv, stored) in &counts {
            let raw = cells[*at].trim();
            let v = if raw.is_empty() || raw == "\\N" {
                0
            } else {
                raw.parse::<u64>().map_err(|_| {
                    format!("{fname} line {line}, column {csv}: {raw:?} is not a whole number")
                })?
            };
            if let Some(i) = COUNT_COLS.iter().position(|c| c == stored) {
                row.counts[i] = v;
            }
        }
        out.rows.push(row);
        n += 1;
    }
    out.range = Some(match out.range {
        Some((a, b)) => (a.min(from), b.max(to)),
        None => (from, to),
    });
    out.files.push((fname.to_string(), n));
    Ok(())
}

/// The records of a CSV text with the line each starts on (1-based); an error names the line.
/// A CSV record: the line it starts on and its cells.
type Record = (usize, Vec<String>);

fn records(text: &str) -> Result<Vec<Record>, (usize, String)> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut start = 1;
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    cell.push(c);
                }
                _ => cell.push(c),
            }
            continue;
        }
        match c {
            '"' if cell.is_empty() => quoted = true,
            '"' => return Err((line, "a quote inside an unquoted cell".into())),
            ',' => cells.push(std::mem::take(&mut cell)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                cells.push(std::mem::take(&mut cell));
                out.push((start, std::mem::take(&mut cells)));
                line += 1;
                start = line;
                any = false;
            }
            _ => cell.push(c),
        }
    }
    if quoted {
        return Err((start, "a quoted cell is not closed".into()));
    }
    if any {
        cells.push(cell);
        out.push((start, cells));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn file_names_as_plausible_parses_them() {
        let (t, a, b) = parse_file_name("imported_devices_00010101_20250101.csv").unwrap();
        assert_eq!(
            (t.kind, a.to_string(), b.to_string()),
            ("devices", "0001-01-01".into(), "2025-01-01".into())
        );
        assert_eq!(
            parse_file_name("devices_20240101_20240131.csv")
                .unwrap()
                .0
                .kind,
            "devices"
        );
        assert_eq!(
            parse_file_name("x/imported_entry_pages_20240101_20240131.csv")
                .unwrap()
                .0
                .kind,
            "entry_pages"
        );
        assert!(parse_file_name("my_data.csv").is_none());
        assert!(parse_file_name("imported_devices_2024010_20240131.csv").is_none());
        assert!(parse_file_name("imported_nothing_20240101_20240131.csv").is_none());
    }

    #[test]
    fn csv_cells_in_double_quote_marks_and_line_numbers() {
        let r = records("a,b\r\n\"x, \"\"y\"\"\",2\n\"multi\nline\",3\n").unwrap();
        assert_eq!(r[1], (2, vec!["x, \"y\"".to_string(), "2".into()]));
        assert_eq!(r[2], (3, vec!["multi\nline".to_string(), "3".into()]));
        assert_eq!(records("a\n\"open").unwrap_err().0, 2);
    }

    #[test]
    fn a_bad_number_names_file_line_and_column() {
        let csv = b"date,device,visitors,visits,visit_duration,bounces,pageviews\n\
                    2024-01-01,Desktop,1,1,1,0,1\n2024-01-02,Mobile,x,1,1,0,1\n";
        let e = read("imported_devices_20240101_20240131.csv", csv).unwrap_err();
        assert_eq!(
            e,
            "imported_devices_20240101_20240131.csv line 3, column visitors: \"x\" is not a whole number"
        );
        let e = read("imported_devices_20240101_20240131.csv", b"date,device\n").unwrap_err();
        assert!(e.contains("line 1: no `visitors` column"), "{e}");
    }
}
