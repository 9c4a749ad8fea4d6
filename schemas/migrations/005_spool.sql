-- 005_spool: which spool batch wrote each row, so a batch replayed after a crash is not
-- inserted twice (ClickHouse 18.16 deduplicates retried inserts only on Replicated tables).
-- The token names a spool instance and a byte range: nothing about any visitor. One value
-- per batch of thousands of rows, so it compresses to almost nothing.
ALTER TABLE events ADD COLUMN spool_token String DEFAULT '';
