#!/usr/bin/env bash
# Builds weightmap's two binaries side by side in target/<profile>/ (idempotent):
#   weightmap-torch  with libtorch (the default cargo feature): tracing, verifying,
#                    TorchScript models loaded, CUDA;
#   weightmap        without libtorch: starts in milliseconds (libtorch's shared libraries
#                    take ~0.3 s to load) and hands whatever turns out to need libtorch to
#                    weightmap-torch, with the same arguments, before writing anything.
# usage: scripts/build.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/.."
profile=()
dir=debug
case "${1:-}" in
  --release) profile=(--release); dir=release ;;
  "") ;;
  *) echo "build.sh: unknown argument '$1' (use --release or nothing)" >&2; exit 2 ;;
esac
cargo build --quiet ${profile[@]+"${profile[@]}"} --bin weightmap
# Copied, not linked: the next build replaces target/$dir/weightmap in place.
cp -f "target/$dir/weightmap" "target/$dir/weightmap-torch.tmp"
mv -f "target/$dir/weightmap-torch.tmp" "target/$dir/weightmap-torch"
cargo build --quiet ${profile[@]+"${profile[@]}"} --no-default-features --bin weightmap
