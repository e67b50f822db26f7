#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install the app into it (`pip install -e .`).
# Sourced by start_app.sh and run_tests.sh.
#   ZIMAGE_VENV   the environment's folder (default .venv)
#   ZIMAGE_EXTRAS the package's extras to add, comma separated (the tests: dev,ray)
#   TORCH_SPEC    overrides the torch choice, e.g. "torch==2.13.0" or "torch>=2.6"; TORCH_INDEX adds an index
#   ZIMAGE_TORCH  cpu | cuda: forces the choice below
# The torch build fits the machine: scripts/torch_choice.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ZIMAGE_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
# shellcheck disable=SC1091
. "$ROOT/scripts/torch_choice.sh"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
KIND="$(zimage_torch_kind)"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt" "$ROOT/requirements-ray.txt" \
        | { cat; echo "extras=${ZIMAGE_EXTRAS:-} torch=${TORCH_SPEC:-$KIND}"; } | sha256sum | cut -c1-16)"
STAMP="$VENV/.zimage-installed-$WANT"   # one stamp per requirement set: app and tests don't reinstall each other
if [ ! -e "$STAMP" ]; then
  python -m pip install -q --upgrade pip
  HAVE="$(python -c 'import torch; print("cuda" if torch.version.cuda else "cpu")' 2>/dev/null || echo none)"
  if [ "$HAVE" = none ] || { [ -z "${TORCH_SPEC:-}" ] && [ "$HAVE" != "$KIND" ]; }; then
    mapfile -t TORCH_ARGS < <(zimage_torch_args)
    [ "$HAVE" != none ] && python -m pip uninstall -q -y torch   # the other build: pip would keep it
    echo "[setup] installing ${TORCH_ARGS[*]} (this machine: $KIND)"
    python -m pip install -q "${TORCH_ARGS[@]}"
    if [ "$KIND" = cpu ] && python -c 'import sys, torch; sys.exit(not torch.version.cuda)' 2>/dev/null; then
      echo "[setup] warning: pip gave a CUDA build of torch on a machine without an NVIDIA driver;" \
           "set TORCH_INDEX to a CPU wheel index (TORCH_SPEC=torch==2.13.0)" >&2
    fi
  fi
  echo "[setup] installing zimage-webui${ZIMAGE_EXTRAS:+[$ZIMAGE_EXTRAS]} (pip install -e)"
  python -m pip install -q -e "$ROOT${ZIMAGE_EXTRAS:+[$ZIMAGE_EXTRAS]}"
  touch "$STAMP"
fi
