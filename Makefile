# Veil: the two commands of the README's quick start, and a few helpers.
#   make up     install what is missing, build, run everything (managed ClickHouse) on :8080
#   make test   install what is missing, lint, run the whole test suite

SITE ?= example.com
LISTEN ?= 127.0.0.1:8080
CARGO ?= cargo

.PHONY: up test deps build lint unit bench load clean

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --release -p veil

up: build
	./target/release/veil up --site $(SITE) --listen $(LISTEN)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace --all-targets

test: deps lint unit

bench: deps
	$(CARGO) bench -p veil-benches --bench pipeline

load: deps
	$(CARGO) run --release -p veil-benches --bin veil-load -- --duration 10

clean:
	$(CARGO) clean
	rm -rf var
