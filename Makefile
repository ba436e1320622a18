# One task runner; CI (.ci/run, Jenkinsfile) calls these targets as they are.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
STACK := deploy/local/stack.sh

.PHONY: dev build check test test-unit up down status clean-local

## Runs the whole platform in one process (embedded log and store, no services).
dev:
	cargo run --release -p ticketing -- dev

build:
	cargo build --release -p ticketing

## Formatting and lints, as CI enforces them.
check:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --all-features -- -D warnings

## Every test: lints, unit and property tests, and the integration tests against
## the real engines, which this target installs and starts itself.
test: check
	$(STACK) up
	eval "$$($(STACK) env)" && cargo test --workspace --all-features

## Tests that need no engine.
test-unit:
	cargo test --workspace

up:
	$(STACK) up

down:
	$(STACK) down

status:
	$(STACK) status
