"""Speed benchmark (issue 8): plain diffusers eager and diffusers + compile_repeated_blocks (the
baselines) beside the app's default path, cold compile cache then warm; one run, a fresh process each.

    python -m bench.speed_bench DIR [--no-baselines] [--queue]
Prints one JSON line per process, then one per figure with ratios and quality against eager.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from bench.lowvram_bench import compare as _compare

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def probe(mode: str, folder: str) -> dict:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "bench.speed_probe", mode, folder], cwd=HERE, capture_output=True,
                         text=True, timeout=900)
    lines = [l for l in res.stdout.splitlines() if l.startswith("{")]
    out = json.loads(lines[-1]) if lines else {"mode": mode, "error": res.stderr[-2000:]}
    out["process_s"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    folder = sys.argv[1]
    shutil.rmtree("/tmp/speed-cache", ignore_errors=True)      # the first "ours" compiles from nothing
    runs = {}
    if "--no-baselines" not in sys.argv:
        runs["eager"] = probe("eager", folder)
        runs["diffusers_compile"] = probe("diffusers_compile", folder)
    runs["ours_cold"] = probe("ours", folder)
    runs["ours_warm"] = probe("ours", folder)                   # the compile cache from the run before
    if "--queue" in sys.argv:                                   # queued requests batched or not
        for n in (1, 4):
            probe(f"ours_queue{n}", folder)
    eager = runs.get("eager", {}).get("s_per_image")
    for name, r in runs.items():
        fig = {"figure": name, "s_per_image": r.get("s_per_image"), "first_image_s": r.get("first_image_s"),
               "ready_s": r.get("ready_s"), "batch4_images_per_s": r.get("batch4_images_per_s"),
               "peak_vram_gb": r.get("peak_vram_gb"), "attention": r.get("attention"),
               "ratio_vs_eager": round(r["s_per_image"] / eager, 3) if eager and r.get("s_per_image") else None,
               "error": r.get("error")}
        fig.update(_compare(name.replace("_cold", "").replace("_warm", ""), ref="eager", out_dir="/tmp/speed"))
        print(json.dumps(fig), flush=True)


if __name__ == "__main__":
    main()
