#!/usr/bin/env bash
# Sets everything up (idempotent), then runs the main job on the shipped demo models:
# map a checkpoint onto a renamed model, apply the mapping, verify it loads and runs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --quiet
wm=target/debug/weightmap
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
$wm inspect models/demo_source.pth
$wm map models/demo_source.pth models/demo_target.pt -o "$out/mapping.json"
$wm apply models/demo_source.pth --mapping "$out/mapping.json" -o "$out/adapted.safetensors"
$wm verify "$out/adapted.safetensors" models/demo_target.pt --strict
