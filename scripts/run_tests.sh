#!/usr/bin/env bash
# The README's test command: set up the tests' own environment (.venv-test, always the CPU torch wheel,
# so the same tests run whatever the app's .venv holds) and run the pytest suite on the tiny model.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export ZIMAGE_VENV="${ZIMAGE_TEST_VENV:-$ROOT/.venv-test}" ZIMAGE_TORCH=cpu ZIMAGE_EXTRAS=dev,ray
# shellcheck disable=SC1091
. "$ROOT/scripts/setup_env.sh"
# Three workers (pytest-xdist) on the 2-core CI machine, the longest units first (tests/scheduling.py):
# 11:28 on this 2-core machine (2026-12-07); four workers took 12:53 (both cores busy throughout: 1% idle).
python -m pytest -q -n 3 "$@"
