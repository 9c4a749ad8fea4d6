-- 006_enrichment: where visits come from and where visitors are, coarsely.
--
-- source   friendly referrer name (Google, Hacker News…), else the referrer host, else utm_source
-- channel  Direct | Organic Search | Paid Search | Organic Social | Paid Social | Organic Video |
--          Email | Referral | Paid
-- region   ISO 3166-2 subdivision code (or name) from GeoIP
-- city     city name from GeoIP (not stored for child-directed sites)
-- asn      autonomous system number of the client's network (not for child-directed sites)
-- isp      the AS organisation, shown as ISP (not for child-directed sites)

ALTER TABLE events ADD COLUMN source String DEFAULT '';
ALTER TABLE events ADD COLUMN channel String DEFAULT '';
ALTER TABLE events ADD COLUMN region String DEFAULT '';
ALTER TABLE events ADD COLUMN city String DEFAULT '';
ALTER TABLE events ADD COLUMN asn UInt32 DEFAULT 0;
ALTER TABLE events ADD COLUMN isp String DEFAULT '';
