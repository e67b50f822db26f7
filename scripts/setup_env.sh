#!/usr/bin/env bash
# Create (or reuse) .venv and install what the app needs. Sourced by start_app.sh and run_tests.sh.
# EXTRA_REQUIREMENTS: more requirement files (space separated), e.g. requirements-dev.txt for tests.
# TORCH_SPEC picks the torch build: the default lets pip choose (a CUDA build on Linux GPU machines);
# the test script pins the CPU wheel so a CPU machine does not pull several GB of CUDA.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ZIMAGE_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
EXTRA=()
for f in ${EXTRA_REQUIREMENTS:-}; do EXTRA+=(-r "$f"); done
WANT="$(cat "$ROOT/requirements.txt" ${EXTRA_REQUIREMENTS:-} | sha256sum | cut -c1-16)"
STAMP="$VENV/.zimage-installed-$WANT"   # one stamp per requirement set: app and tests don't reinstall each other
if [ ! -e "$STAMP" ]; then
  python -m pip install -q --upgrade pip
  if ! python -c "import torch" 2>/dev/null; then
    echo "[setup] installing ${TORCH_SPEC:-torch>=2.6}"
    python -m pip install -q "${TORCH_SPEC:-torch>=2.6}"
  fi
  echo "[setup] installing requirements"
  python -m pip install -q -r "$ROOT/requirements.txt" "${EXTRA[@]+"${EXTRA[@]}"}"
  touch "$STAMP"
fi
