-- 008_bots: sites that keep bot traffic (--keep-bots-site) store it flagged instead of dropping
-- it. `bot` is the reason (bot_crawler, bot_headless, bot_monitoring, bot_library); reports
-- leave flagged rows out.
ALTER TABLE events ADD COLUMN bot String DEFAULT '';
