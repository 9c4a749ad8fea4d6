-- 020_imports: history imported from another analytics tool (aggregator/src/imports/).
-- `imports` lists each import of a site (one row, written last: an import without its row is
-- unfinished and never read); `imported` holds its daily aggregate rows. One table for every
-- kind of row (`kind`: visitors, sources, pages, entry_pages, exit_pages, locations, devices,
-- browsers, operating_systems, custom_events), each kind filling the dimension columns it has
-- and leaving the others empty: one read path, one delete and one erase for all of them, and a
-- row is 22 short strings of which most are empty (cheap in a column store). No visitor data:
-- the rows are per-day counts the former tool published. Erasing a site removes both tables'
-- rows (they have a `site` column); deleting an import removes its rows.
CREATE TABLE IF NOT EXISTS imports
(
    site        String,
    import_id   String,
    source      String,
    file_name   String,
    start_date  Date,
    end_date    Date,
    rows        UInt64,
    imported_at DateTime
)
ENGINE = MergeTree
ORDER BY (site, import_id);

CREATE TABLE IF NOT EXISTS imported
(
    site            String,
    import_id       String,
    kind            String,
    date            Date,
    source          String,
    referrer        String,
    utm_source      String,
    utm_medium      String,
    utm_campaign    String,
    utm_content     String,
    utm_term        String,
    hostname        String,
    page            String,
    entry_page      String,
    exit_page       String,
    country         String,
    region          String,
    city            String,
    device          String,
    browser         String,
    browser_version String,
    os              String,
    os_version      String,
    name            String,
    link_url        String,
    path            String,
    visitors        UInt64,
    visits          UInt64,
    pageviews       UInt64,
    bounces         UInt64,
    visit_duration  UInt64,
    events          UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(date)
ORDER BY (site, kind, date);
