-- 007_app_install: two more app facts.
--
-- device_model    the device model an app SDK reports (e.g. iPhone15,2, SM-S921B): a class of
--                 device shared by millions, never an identifier of one
-- install_source  where the app was installed from (app store, referrer campaign), as sent
ALTER TABLE events ADD COLUMN device_model String DEFAULT '';
ALTER TABLE events ADD COLUMN install_source String DEFAULT '';
