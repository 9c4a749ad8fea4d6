-- 003_tracker: facts sent by browser trackers (veil.js and Plausible's engagement events).
--
-- engagement_ms   visible time on the page reported by an `engagement` event, milliseconds
-- scroll_depth    deepest scroll position reported, percent (0 when unknown)
-- screen_class    mobile | tablet | laptop | desktop (from the viewport width, never the exact size)
-- processor_class 1-2 | 3-4 | 5-8 | 9-16 | 17+ logical cores (navigator.hardwareConcurrency)
--
-- 18.16 has no ADD COLUMN IF NOT EXISTS: the migration runner skips an ADD COLUMN whose column
-- already exists, so a run interrupted half-way can run again. One ADD COLUMN per statement.
ALTER TABLE events ADD COLUMN engagement_ms UInt32 DEFAULT 0;
ALTER TABLE events ADD COLUMN scroll_depth UInt8 DEFAULT 0;
ALTER TABLE events ADD COLUMN screen_class String DEFAULT '';
ALTER TABLE events ADD COLUMN processor_class String DEFAULT '';
