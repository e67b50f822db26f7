"""The page's Gradio start (issue 29): `import gradio` with and without its type-stub rewrite, and
building the page with one Gradio App against Gradio's four (web/gradio_stubs.py, server.py's
gradio_app_deferred). Every case is a fresh process, the baselines in the same run, the cases
interleaved, medians of --repeat, JSON lines out.

    python -m bench.gradio_start_bench DIR [--repeat 5]

DIR is a Z-Image folder (the tiny model: `python -m zimage.cli make-tiny-model DIR`).
  import_gradio   CPU-s of `import gradio` in a fresh process: Gradio's own (baseline, imported
                  before zimage.web) against ours (imported after zimage.web)
  page_build      CPU-s of create_app() for the page, the second build in a process (imports warm):
                  Gradio's Apps (baseline: gradio_app_deferred replaced by a no-op) against ours
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

IMPORT = """
import sys, time
if sys.argv[1] == "ours":
    import zimage.web
started = time.process_time()
import gradio
print(time.process_time() - started)
"""

BUILD = """
import contextlib, sys, tempfile, time
from pathlib import Path
import zimage.web.server as server
from zimage.app import create_backend
from zimage.config import Settings
if sys.argv[1] == "baseline":
    server.gradio_app_deferred = contextlib.nullcontext
out = Path(tempfile.mkdtemp())
settings = Settings(model=sys.argv[2], outputs_dir=str(out / "o"), cache_dir=str(out / "c"), backend="inprocess")
manager = create_backend(settings).start()
server.create_app(settings, manager)              # the imports and Gradio's first build
started = time.process_time()
server.create_app(settings, manager)
print(time.process_time() - started)
manager.close()
"""


def run(code: str, *args: str) -> float:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cases = {"import_gradio": (IMPORT, ()), "page_build": (BUILD, (args.model,))}
    seconds = {(case, who): [] for case in cases for who in ("baseline", "ours")}
    for _ in range(args.repeat):
        for case, (code, extra) in cases.items():
            for who in ("baseline", "ours"):
                seconds[case, who].append(run(code, who, *extra))
    for case in cases:
        base, ours = (statistics.median(seconds[case, w]) for w in ("baseline", "ours"))
        print(json.dumps({"case": case, "baseline_cpu_s": round(base, 3), "ours_cpu_s": round(ours, 3),
                          "ratio": round(ours / base, 2), "repeat": args.repeat, "machine": platform.machine(),
                          "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}))


if __name__ == "__main__":
    main()
