-- 023_link_embeds: the origins (scheme://host[:port], space-separated, at most 10) a shared
-- link's dashboard may be embedded in (`<iframe>`). The page served at
-- `/share/{domain}?embed={link id}` carries `frame-ancestors` with exactly these origins; every
-- other page stays `frame-ancestors 'none'`. '' (every link made before, and any link made
-- without them): never embedded.
ALTER TABLE shared_links ADD COLUMN embed_origins String DEFAULT '';
