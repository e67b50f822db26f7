#!/usr/bin/env bash
# The README's test command: set up .venv (CPU torch) and run the pytest suite on the tiny model.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
# shellcheck disable=SC1091
EXTRA_REQUIREMENTS="$ROOT/requirements-dev.txt $ROOT/requirements-ray.txt" . "$ROOT/scripts/setup_env.sh"
python -m pytest -q "$@"
