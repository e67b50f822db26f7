#!/usr/bin/env bash
# One-click launcher: set up .venv on first run, then start the web UI on http://127.0.0.1:7860.
#   bash scripts/start_app.sh [--warmup] [webui.py flags...]
# --warmup preloads the model and sends the seed article's warm-up request once /health is healthy.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
for a in "$@"; do
  if [ "$a" = "--help" ] || [ "$a" = "-h" ]; then     # answer at once: nothing is installed for help
    echo "usage: bash scripts/start_app.sh [--warmup] [webui.py flags...]"
    echo "  first run: creates .venv (torch fits the machine: CUDA where nvidia-smi answers, else the CPU"
    echo "  wheel; TORCH_SPEC=... or ZIMAGE_TORCH=cpu|cuda overrides), then serves http://127.0.0.1:7860"
    echo "  --warmup   preload the model and send one warm-up image once /health is healthy"
    echo
    exec "${PYTHON:-python3}" webui.py --help          # the flags parse with the standard library only
  fi
done
WARMUP=0
ARGS=()
for a in "$@"; do
  if [ "$a" = "--warmup" ]; then WARMUP=1; else ARGS+=("$a"); fi
done
# shellcheck disable=SC1091
. "$ROOT/scripts/setup_env.sh"
if [ "$WARMUP" = 0 ]; then
  exec python webui.py "${ARGS[@]+"${ARGS[@]}"}"
fi
python webui.py --preload "${ARGS[@]+"${ARGS[@]}"}" &
APP=$!
trap 'kill $APP 2>/dev/null' INT TERM
PORT=$(python - "${ARGS[@]+"${ARGS[@]}"}" <<'PY'
import sys
from zimage.config_load import load_settings
print(load_settings(sys.argv[1:]).port)
PY
)
echo "[warmup] waiting for the model on port $PORT"
while kill -0 $APP 2>/dev/null; do
  STATUS=$(curl -s "http://localhost:$PORT/health" | python -c "import json,sys; print(json.load(sys.stdin)['status'])" 2>/dev/null || true)
  if [ "$STATUS" = "healthy" ]; then
    curl -s -o /dev/null -w "[warmup] POST /generate -> %{http_code}\n" -X POST "http://localhost:$PORT/generate" \
      -H "Content-Type: application/json" \
      -d '{"prompt": "warmup", "width": 512, "height": 512, "num_inference_steps": 1, "seed": 1}'
    echo "[warmup] done: the model is warm"
    break
  fi
  if [ "$STATUS" = "error" ]; then echo "[warmup] the model failed to load; see the page"; break; fi
  sleep 1
done
wait $APP
