#!/usr/bin/env bash
# Sets everything up (idempotent), then runs the main job on the shipped demo models:
# map a checkpoint onto a refactored model (every module renamed, stages nested
# differently), apply the mapping, verify it loads and computes what the original did.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Both binaries: weightmap (no libtorch, starts in milliseconds) hands `verify` to
# weightmap-torch beside it.
./scripts/build.sh
wm=target/debug/weightmap
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
$wm inspect models/demo_source.pth
$wm map models/demo_source.pth models/demo_target.pt -o "$out/mapping.json"
$wm apply models/demo_source.pth --mapping "$out/mapping.json" -o "$out/adapted.safetensors"
# Strict load into the target, then the same input through the original network and the
# adapted one: the outputs must agree.
$wm verify "$out/adapted.safetensors" models/demo_target.pt --strict --source-model models/demo_source_model.pt --input 1x3x32x32
