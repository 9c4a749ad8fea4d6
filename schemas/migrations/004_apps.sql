-- 004_apps: facts app SDKs report (Aptabase's systemProps, the native API, Umami's language).
--
-- locale          e.g. en-US (language and region, never more)
-- app_version     the app's version string
-- app_build       the app's build number
-- sdk_version     the sender SDK, e.g. aptabase-web@0.5.0
-- engine          runtime engine and major version, e.g. Chromium 120, Node.js 20
-- is_debug        1 when the SDK says the event came from a debug build
ALTER TABLE events ADD COLUMN locale String DEFAULT '';
ALTER TABLE events ADD COLUMN app_version String DEFAULT '';
ALTER TABLE events ADD COLUMN app_build String DEFAULT '';
ALTER TABLE events ADD COLUMN sdk_version String DEFAULT '';
ALTER TABLE events ADD COLUMN engine String DEFAULT '';
ALTER TABLE events ADD COLUMN is_debug UInt8 DEFAULT 0;
