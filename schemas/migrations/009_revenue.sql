-- 009_revenue: what Plausible's tracker sends with revenue goals and non-interactive events.
--
-- revenue_micros    the amount in millionths of the currency unit (exact, no float rounding)
-- revenue_currency  ISO 4217 code, e.g. EUR
-- interactive       0 for events the sender marked non-interactive (they do not end a bounce)
ALTER TABLE events ADD COLUMN revenue_micros Int64 DEFAULT 0;
ALTER TABLE events ADD COLUMN revenue_currency String DEFAULT '';
ALTER TABLE events ADD COLUMN interactive UInt8 DEFAULT 1;
