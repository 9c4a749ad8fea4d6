-- 017_privacy: what differential privacy keeps (aggregator/src/privacy).
--
-- privacy_keys: per site, the secret that keys its report noise (blake3 keyed by it over the
-- canonical question), so the same question over the same data gets the same noisy answer on
-- every aggregator and after restarts. Like salts, each aggregator that finds none inserts a
-- random 32-byte secret with a random nonce, and every reader uses the lowest nonce, so all
-- agree. Erasing a site deletes its key.
--
-- privacy_spend: the privacy budget ledger. One row per new question a credential (admin,
-- site key, shared link) asked on a UTC day, with the epsilon it spent; a question already in
-- the ledger is answered again for free (it gets the same noise). Rows of days before
-- yesterday are dropped by the retention job.
CREATE TABLE IF NOT EXISTS privacy_keys
(
    site       String,
    secret     FixedString(32),
    nonce      UInt64,
    created_at DateTime
)
ENGINE = MergeTree
ORDER BY (site, nonce);
CREATE TABLE IF NOT EXISTS privacy_spend
(
    day        Date,
    credential String,
    question   String,
    epsilon    Float64,
    at         DateTime
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(day)
ORDER BY (day, credential, question);
