"""Speed benchmark (issue 8): plain diffusers eager and diffusers + compile_repeated_blocks (the
baselines) beside the app's default path, cold compile cache then warm; one run, a fresh process each.

    python -m bench.speed_bench DIR [--no-baselines] [--fp8] [--queue]
Prints one JSON line per process, then one per figure with ratios and quality against eager.
"""
from __future__ import annotations

import json
import shutil
import sys

from bench.lowvram_bench import compare as _compare
from bench.runner import run_probe


def probe(mode: str, folder: str) -> dict:
    return run_probe("bench.speed_probe", [mode, folder], {"mode": mode}, "process_s", 2000)


def main() -> None:
    folder = sys.argv[1]
    shutil.rmtree("/tmp/speed-cache", ignore_errors=True)      # the first "ours" compiles from nothing
    runs = {}
    if "--no-baselines" not in sys.argv:
        runs["eager"] = probe("eager", folder)
        runs["diffusers_compile"] = probe("diffusers_compile", folder)
    runs["ours_cold"] = probe("ours", folder)
    runs["ours_warm"] = probe("ours", folder)                   # the compile cache from the run before
    if "--fp8" in sys.argv:                                     # --fp8 on: compiles its own graphs (cold)
        runs["ours_fp8"] = probe("ours_fp8", folder)
    if "--queue" in sys.argv:                                   # queued requests batched or not
        for n in (1, 4):
            probe(f"ours_queue{n}", folder)
    eager = runs.get("eager", {}).get("s_per_image")
    for name, r in runs.items():
        fig = {"figure": name, "s_per_image": r.get("s_per_image"), "first_image_s": r.get("first_image_s"),
               "ready_s": r.get("ready_s"), "batch4_images_per_s": r.get("batch4_images_per_s"),
               "peak_vram_gb": r.get("peak_vram_gb"), "attention": r.get("attention"), "plan": r.get("plan"),
               "ratio_vs_eager": round(r["s_per_image"] / eager, 3) if eager and r.get("s_per_image") else None,
               "error": r.get("error")}
        fig.update(_compare(name.replace("_cold", "").replace("_warm", ""), ref="eager", out_dir="/tmp/speed"))
        print(json.dumps(fig), flush=True)


if __name__ == "__main__":
    main()
