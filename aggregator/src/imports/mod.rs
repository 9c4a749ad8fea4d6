//! History imported from another analytics tool: Plausible's CSV export today
//! ([`plausible`]), read into the `imported` table (migration `020_imports.sql`) and merged
//! with Veil's own numbers by the Stats API when a query says `include.imports: true`
//! ([`merge`]).
//!
//! - **One table for every kind of row.** `imported` has a `kind` column (visitors, sources,
//!   pages, entry_pages, exit_pages, locations, devices, browsers, operating_systems,
//!   custom_events) and one column per dimension any kind carries; a kind leaves the others
//!   empty. One table rather than ten: the merge reads one table whatever the dimension (its
//!   SQL differs only in `kind` and the columns named), an import is deleted and a site erased
//!   with one statement each, and a new kind (Umami's, GA4's) needs no migration. The price,
//!   mostly empty string columns, is small in a column store.
//! - **An import** is one file: its id is the first 16 hex digits of blake3 of the file's
//!   bytes, so importing the same file again finds it and changes nothing ([`Outcome::already`]).
//!   Its row in `imports` is written last, after every row of `imported`, and reads only take
//!   rows of imports listed there: an import stopped half-way is never read, and importing
//!   the file again first deletes what it left. Deleting an import removes its `imports` row
//!   first (its numbers leave every report at once), then its rows.
//! - **Overlaps are refused**: a second export whose days overlap an import of the site would
//!   count those days twice; delete the older import first (Plausible refuses them too).
//! - **No visitor data**: the rows are per-day counts the former tool published; they hold no
//!   identifier. `veil erase-site` removes them with the site's other rows (both tables have a
//!   `site` column: [`crate::retention::erase_site`] finds them).

pub mod merge;
pub mod plausible;

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use serde::Serialize;
use serde_json::Value;
use veil_schemas::sql;
use veil_schemas::sql::{date, lit, Sql};
use veil_schemas::ClickHouseConfig;

use crate::db::{cell_u64, count, exec, fetch, mutation_target};
use crate::Error;

/// Rows per `INSERT` statement.
const CHUNK: usize = 2000;

/// How long a delete may take to show (ClickHouse mutations run in the background).
const DELETE_WAIT: Duration = Duration::from_secs(600);

/// One import of a site, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportInfo {
    /// The import's id (16 hex digits of blake3 of the file).
    pub id: String,
    /// Where it came from (`plausible`).
    pub source: String,
    /// The file's name when it was imported.
    pub file_name: String,
    /// First day covered.
    pub start_date: String,
    /// Last day covered.
    pub end_date: String,
    /// Rows stored.
    pub rows: u64,
    /// When it was imported (UTC, `YYYY-MM-DD hh:mm:ss`).
    pub imported_at: String,
}

/// What an import did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The import.
    pub import: ImportInfo,
    /// True when this file was imported already: nothing changed.
    pub already: bool,
    /// Files read, with their rows.
    pub files: Vec<(String, usize)>,
    /// Files of the zip that are not tables of the export (left alone).
    pub skipped: Vec<String>,
}

/// The id of an import of `bytes`.
pub fn import_id(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex()[..16].to_string()
}

/// Imports Plausible's CSV export `bytes` (named `file_name`) into `site`'s history. A file
/// that does not parse is a [`Error::BadRequest`] naming the file, line and column.
pub async fn import_plausible(
    ch: &ClickHouseConfig,
    site: &str,
    file_name: &str,
    bytes: &[u8],
) -> Result<Outcome, Error> {
    let export = plausible::read(file_name, bytes).map_err(Error::BadRequest)?;
    let id = import_id(bytes);
    let client = ch.client();
    if let Some(info) = list(ch, site).await?.into_iter().find(|i| i.id == id) {
        return Ok(Outcome {
            import: info,
            already: true,
            files: export.files,
            skipped: export.skipped,
        });
    }
    let (from, to) = export
        .range
        .ok_or_else(|| Error::BadRequest(format!("{file_name}: no dated file in it")))?;
    let day = |d: NaiveDate| d.format("%Y-%m-%d").to_string();
    for other in list(ch, site).await? {
        if other.start_date <= day(to) && other.end_date >= day(from) {
            return Err(Error::BadRequest(format!(
                "{file_name} covers {} to {}, which overlaps import {} ({} to {}) of {site}; \
                 delete that one first (`veil import delete {} --site {site}`)",
                day(from),
                day(to),
                other.id,
                other.start_date,
                other.end_date,
                other.id
            )));
        }
    }
    // Rows an earlier, unfinished run of this file left.
    delete_rows(ch, "imported", site, &id).await?;
    for chunk in export.rows.chunks(CHUNK) {
        let values = chunk.iter().map(|r| {
            let dims = Sql::join(r.dims.iter().map(|d| lit(d)), ", ");
            let counts = Sql::join(r.counts.iter().copied(), ", ");
            sql!(
                "({}, {}, {}, {}, {}, {})",
                lit(site),
                lit(&id),
                lit(r.kind),
                date(r.date),
                dims,
                counts
            )
        });
        let stmt = sql!(
            "INSERT INTO imported (site, import_id, kind, date, {}, {}) VALUES {}",
            veil_schemas::sql::idents(&plausible::DIM_COLS, ", "),
            veil_schemas::sql::idents(&plausible::COUNT_COLS, ", "),
            Sql::join(values, ", ")
        );
        exec(&client, &stmt).await?;
    }
    let now = Utc::now().naive_utc();
    let info = ImportInfo {
        id: id.clone(),
        source: "plausible".into(),
        file_name: file_name.to_string(),
        start_date: day(from),
        end_date: day(to),
        rows: export.rows.len() as u64,
        imported_at: now.format("%Y-%m-%d %H:%M:%S").to_string(),
    };
    exec(
        &client,
        &sql!(
            "INSERT INTO imports (site, import_id, source, file_name, start_date, end_date, rows, imported_at) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {})",
            lit(site),
            lit(&id),
            lit(&info.source),
            lit(file_name),
            date(from),
            date(to),
            info.rows,
            veil_schemas::sql::utc(now)
        ),
    )
    .await?;
    Ok(Outcome {
        import: info,
        already: false,
        files: export.files,
        skipped: export.skipped,
    })
}

/// The imports of `site`, oldest first.
pub async fn list(ch: &ClickHouseConfig, site: &str) -> Result<Vec<ImportInfo>, Error> {
    let rows = fetch(
        &ch.client(),
        &sql!(
            "SELECT import_id, any(source), any(file_name), toString(min(start_date)), \
             toString(max(end_date)), max(rows), toString(min(imported_at), 'UTC') \
             FROM imports WHERE site = {} GROUP BY import_id ORDER BY min(imported_at), import_id",
            lit(site)
        ),
    )
    .await?;
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Ok(rows
        .iter()
        .filter_map(|r| {
            let c = r.as_array()?;
            Some(ImportInfo {
                id: s(c.first()?),
                source: s(c.get(1)?),
                file_name: s(c.get(2)?),
                start_date: s(c.get(3)?),
                end_date: s(c.get(4)?),
                rows: cell_u64(c.get(5)?).unwrap_or(0),
                imported_at: s(c.get(6)?),
            })
        })
        .collect())
}

/// Deletes import `id` of `site` (a [`Error::NotFound`] when there is none): its `imports`
/// row first (its numbers leave the reports), then its rows; returns once both are gone.
pub async fn delete(ch: &ClickHouseConfig, site: &str, id: &str) -> Result<ImportInfo, Error> {
    let Some(info) = list(ch, site).await?.into_iter().find(|i| i.id == id) else {
        return Err(Error::NotFound(format!("{site} has no import {id:?}")));
    };
    delete_rows(ch, "imports", site, id).await?;
    delete_rows(ch, "imported", site, id).await?;
    Ok(info)
}

/// `ALTER TABLE table DELETE` of one import's rows, waited for (when there are any).
async fn delete_rows(
    ch: &ClickHouseConfig,
    table: &'static str,
    site: &str,
    id: &str,
) -> Result<(), Error> {
    let client = ch.client();
    let cond = sql!("site = {} AND import_id = {}", lit(site), lit(id));
    let n = sql!("SELECT count() FROM {} WHERE {}", table, cond);
    if count(&client, &n).await? == 0 {
        return Ok(());
    }
    let target = mutation_target(ch, table)?;
    exec(
        &client,
        &sql!("ALTER TABLE {} DELETE WHERE {}", target, cond),
    )
    .await?;
    let deadline = tokio::time::Instant::now() + DELETE_WAIT;
    let mut pause = Duration::from_millis(20);
    while count(&client, &n).await? > 0 {
        if tokio::time::Instant::now() > deadline {
            return Err(Error::ClickHouse(format!(
                "deleting import {id} from {table} did not finish in {} s",
                DELETE_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
    Ok(())
}
