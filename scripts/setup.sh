#!/usr/bin/env bash
# Sets up everything weightmap needs to build and test, idempotently:
# a project-local .venv with torch==2.11.0 (the libtorch that tch 0.24.0 expects),
# the packages the fixture scripts and the test oracle need, and a stable
# `.venv/libtorch` link that .cargo/config.toml points torch-sys at.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
PY=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PY" -m venv .venv
fi

if ! .venv/bin/python -c "import torch, safetensors, numpy, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  echo "setup: installing torch==$TORCH_VERSION into .venv (a few minutes, ~5 GB)" >&2
  .venv/bin/pip install --disable-pip-version-check -q "torch==$TORCH_VERSION" safetensors numpy
fi

# torch-sys reads LIBTORCH/{include,lib}; the wheel's torch/ folder has both.
torch_dir=$(.venv/bin/python -c 'import torch, os; print(os.path.dirname(torch.__file__))')
ln -sfn "$torch_dir" .venv/libtorch

# Headless Chromium for the HTML report test (Debian's package), when missing.
if [ "${WEIGHTMAP_SKIP_BROWSER:-0}" != 1 ] && ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium (headless browser for the HTML report test)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ||
      echo "setup: could not install chromium; the browser test will report it" >&2
  fi
fi

# Small fixtures in models/ are committed; regenerate them only when missing.
if [ ! -f models/expected.json ]; then
  .venv/bin/python scripts/make_fixtures.py
fi
