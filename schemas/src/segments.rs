//! Saved filter sets ("segments") of a site: a name and the Stats API filters it stands for,
//! either for every reader of the site (a *site* segment, `owner` empty) or for one person (a
//! *personal* one, `owner` = their `users.id`). The Stats API takes `["is", "segment", [ID]]`
//! and answers as if the segment's filters were written there (aggregator/src/segments.rs).
//!
//! Storage (migration `024_segments.sql`): `segments`, append-only and versioned like the
//! people tables ([`crate::people`]): a change inserts a whole row with a higher version;
//! readers keep the newest per id. Read on demand (a few rows per site), not cached in the
//! registry's snapshot. Filters are stored as the JSON array they were given (checked by the
//! aggregator's query parser before they are stored).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::registry::{now_secs, random_hex, Registry};
use crate::sql::{lit, Run as _};
use crate::{sql, Error};

/// The most segments one site keeps (site and personal together).
pub const MAX_SEGMENTS: usize = 200;

/// One segment, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRecord {
    /// Random id (16 hex digits): what `["is", "segment", [ID]]` names.
    pub id: String,
    /// The site's domain.
    pub site: String,
    /// `users.id` of the one person it is for; empty: every reader of the site.
    pub owner: String,
    /// Its name, 1 to 100 bytes.
    pub name: String,
    /// The Stats API filters it stands for.
    pub filters: Vec<Value>,
    /// Unix seconds.
    pub created_at: u32,
    /// Removed.
    pub deleted: bool,
    /// Row version.
    pub version: u64,
}

#[derive(Debug, clickhouse::Row, Serialize, Deserialize)]
struct SegmentRow {
    id: String,
    site: String,
    owner: String,
    name: String,
    filters: String,
    created_at: u32,
    deleted: u8,
    version: u64,
}

impl From<SegmentRow> for SegmentRecord {
    fn from(r: SegmentRow) -> Self {
        Self {
            id: r.id,
            site: r.site,
            owner: r.owner,
            name: r.name,
            filters: serde_json::from_str(&r.filters).unwrap_or_default(),
            created_at: r.created_at,
            deleted: r.deleted != 0,
            version: r.version,
        }
    }
}

/// Segments (the writes and reads of `segments`).
impl Registry {
    /// Every live segment of `site` (site and personal), by name.
    pub async fn segments(&self, site: &str) -> Result<Vec<SegmentRecord>, Error> {
        let rows: Vec<SegmentRow> = self
            .client()
            .sql(&sql!(
                "SELECT id, argMax(site, version) AS s, argMax(owner, version) AS o, \
                 argMax(name, version) AS n, argMax(filters, version) AS f, \
                 argMax(created_at, version) AS c, argMax(deleted, version) AS d, \
                 max(version) AS v FROM segments WHERE site = {} GROUP BY id \
                 ORDER BY lower(n), id",
                lit(site)
            ))
            .fetch_all()
            .await?;
        Ok(rows
            .into_iter()
            .map(SegmentRecord::from)
            .filter(|s| !s.deleted)
            .collect())
    }

    /// Stores a new segment of `site` for `owner` (empty: a site segment).
    pub async fn create_segment(
        &self,
        site: &str,
        owner: &str,
        name: &str,
        filters: Vec<Value>,
    ) -> Result<SegmentRecord, Error> {
        let rec = SegmentRecord {
            id: random_hex(8)?,
            site: site.to_string(),
            owner: owner.to_string(),
            name: name.to_string(),
            filters,
            created_at: now_secs(),
            deleted: false,
            version: self.next_version(),
        };
        self.put_segment(&rec).await?;
        Ok(rec)
    }

    /// Removes a segment (a new version with `deleted`).
    pub async fn delete_segment(&self, mut rec: SegmentRecord) -> Result<(), Error> {
        rec.deleted = true;
        rec.version = self.next_version();
        self.put_segment(&rec).await
    }

    async fn put_segment(&self, rec: &SegmentRecord) -> Result<(), Error> {
        let row = SegmentRow {
            id: rec.id.clone(),
            site: rec.site.clone(),
            owner: rec.owner.clone(),
            name: rec.name.clone(),
            filters: serde_json::to_string(&rec.filters).unwrap_or_else(|_| "[]".into()),
            created_at: rec.created_at,
            deleted: u8::from(rec.deleted),
            version: rec.version,
        };
        let mut ins = self.client().insert::<SegmentRow>("segments").await?;
        ins.write(&row).await?;
        ins.end().await?;
        Ok(())
    }
}
