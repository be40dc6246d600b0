#!/usr/bin/env bash
# The test command: set-up, one debug build of every binary, then every test (unit, store
# conformance, golden files, and end-to-end tests with real Envoy), plus fmt and clippy.
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY_BIN=$(./scripts/setup.sh | tail -1)
export ENVOY_BIN
cargo fmt --all -- --check
cargo build --workspace --bins
cargo clippy --workspace --all-targets -- -D warnings
cargo nextest run --workspace --no-fail-fast "$@"
