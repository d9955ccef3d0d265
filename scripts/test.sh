#!/usr/bin/env bash
# Sets everything up (idempotent) and runs every test: formatting, lints, unit and
# integration tests (real PyTorch from .venv is the oracle in several of them).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --no-fail-fast -- --test-threads 2
