#!/usr/bin/env bash
# Sets everything up (idempotent) and runs every test: formatting, lints, unit and
# integration tests (real PyTorch from .venv is the oracle in several of them), with the
# default features and without libtorch (`--no-default-features`: the header-only core,
# which is also the `weightmap` binary that hands what needs libtorch to weightmap-torch;
# scripts/build.sh puts that one beside it for the tests of the hand-over).
# WEIGHTMAP_FULL_TESTS=1 (set by .ci/run) makes a missing test prerequisite a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --no-default-features -- -D warnings
cargo test --no-fail-fast -- --test-threads 2
./scripts/build.sh
cargo test --no-default-features --no-fail-fast -- --test-threads 2
