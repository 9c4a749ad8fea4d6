-- 016_visit_hits: visit rows that carry their hits, so a filtered report reads stored visits
-- instead of putting visits together from raw events at query time.
--
-- visits, open_visits: per visit, its hits in time order (bots excluded, engagement events
-- included, as a raw-events report sees them): their times, event names, paths, hosts and
-- custom properties (each hit's keys and values) as six arrays of equal length. A report that mixes hit-level questions (a page, a goal, an
-- event name, a host, a time bucket) with visit-level ones (source, entry page, bounce rate,
-- duration) ARRAY JOINs these arrays, each hit beside its visit's properties — the rows the
-- raw path builds per query with a sessionizing GROUP BY and a join, which ran out of memory
-- at 10M events. Engagement times and revenue are not carried: reports that need them still
-- read raw events.
--
-- visit_builds.layout: 1 for builds whose visits carry these arrays. Builds written before
-- this migration have 0; the rollup job builds their days again, and until then reports
-- derive those days from raw events.
ALTER TABLE visits ADD COLUMN hit_times Array(DateTime);
ALTER TABLE visits ADD COLUMN hit_names Array(String);
ALTER TABLE visits ADD COLUMN hit_paths Array(String);
ALTER TABLE visits ADD COLUMN hit_hosts Array(String);
ALTER TABLE visits ADD COLUMN hit_prop_keys Array(Array(String));
ALTER TABLE visits ADD COLUMN hit_prop_values Array(Array(String));
ALTER TABLE open_visits ADD COLUMN hit_times Array(DateTime);
ALTER TABLE open_visits ADD COLUMN hit_names Array(String);
ALTER TABLE open_visits ADD COLUMN hit_paths Array(String);
ALTER TABLE open_visits ADD COLUMN hit_hosts Array(String);
ALTER TABLE open_visits ADD COLUMN hit_prop_keys Array(Array(String));
ALTER TABLE open_visits ADD COLUMN hit_prop_values Array(Array(String));
ALTER TABLE visit_builds ADD COLUMN layout UInt8 DEFAULT 0;
