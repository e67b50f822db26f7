"""Running one probe in a fresh process: the JSON line it prints, or its error, plus the wall time."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module: str, args: list[str], timeout: float = 900, env: dict | None = None) -> tuple[list[dict], str, float]:
    """`python -m module *args` from the project root: (every JSON line it printed, its error text
    ("" when it ended well; the tail of its stderr, or that it ran past `timeout` and was killed),
    seconds)."""
    t0 = time.perf_counter()
    try:
        res = subprocess.run([sys.executable, "-m", module, *args], cwd=HERE, capture_output=True, text=True,
                             timeout=timeout, env=None if env is None else {**os.environ, **env})
        stdout, stderr, error = res.stdout, res.stderr, "" if res.returncode == 0 else f"exit {res.returncode}"
    except subprocess.TimeoutExpired as e:        # the child was killed; what it printed is kept
        stdout = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        error = f"timed out after {timeout:.0f} s (killed)"
    lines = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass
    if not error and not lines:
        error = "printed no JSON line"
    if error:
        error = f"{error}: {stderr[-3000:]}"
    return lines, error, time.perf_counter() - t0


def run_probe(module: str, args: list[str], on_error: dict, time_key: str, tail: int,
              timeout: float = 900) -> dict:
    """`python -m module *args` from the project root; its last JSON line, else `on_error` with the
    last `tail` characters of its stderr. The process's seconds go under `time_key`; the line is
    printed as it comes."""
    lines, error, seconds = run_module(module, args, timeout)
    out = lines[-1] if lines else dict(on_error, error=error[-tail:])
    out[time_key] = round(seconds, 3)
    print(json.dumps(out), flush=True)
    return out
