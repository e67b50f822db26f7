"""Running one probe in a fresh process: the JSON line it prints, or its error, plus the wall time."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_probe(module: str, args: list[str], on_error: dict, time_key: str, tail: int) -> dict:
    """`python -m module *args` from the project root; its last JSON line, else `on_error` with the
    last `tail` characters of its stderr. The process's seconds go under `time_key`; the line is
    printed as it comes."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", module, *args], cwd=HERE, capture_output=True, text=True,
                         timeout=900)
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    out = json.loads(lines[-1]) if lines else dict(on_error, error=res.stderr[-tail:])
    out[time_key] = round(time.perf_counter() - t0, 3)
    print(json.dumps(out), flush=True)
    return out
