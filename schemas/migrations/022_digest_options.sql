-- 022_digest_options: a person's e-mails about a site beyond the weekly digest (021): a
-- monthly digest and traffic-spike notifications (aggregator/src/digest.rs).
--
-- subscribed (021) stays the weekly digest. monthly = 1 asks for the monthly one;
-- last_sent_month is the first day (YYYY-MM-DD, the site's time zone) of the last month sent,
-- '' before the first. spike_threshold > 0 asks for a notification when the site's current
-- visitors (the last five minutes, as the dashboard's Realtime shows them) reach it; last_spike
-- is when the last one was sent (Unix seconds, 0 never), so that one spike sends one e-mail.
ALTER TABLE digests ADD COLUMN monthly UInt8 DEFAULT 0;
ALTER TABLE digests ADD COLUMN last_sent_month String DEFAULT '';
ALTER TABLE digests ADD COLUMN spike_threshold UInt32 DEFAULT 0;
ALTER TABLE digests ADD COLUMN last_spike UInt32 DEFAULT 0;
