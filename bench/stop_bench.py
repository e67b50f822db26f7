"""Stop to idle (issue 15): plain diffusers' interrupt and the app's Stop side by side, each in a fresh
process, 4 images at 1024x1024 by default, Stop pressed after step 3 of 9. JSON lines out.

    python -m bench.stop_bench DIR [--before OLD_TREE] [--size N] [--images N] [--steps N]
`--before` also runs the app from an older tree (e.g. `git archive <commit> zimage | tar -x -C OLD`),
for the before/after figure. On a machine without CUDA the probes run on the CPU (the tiny model).
"""
from __future__ import annotations

import argparse
import json

from bench.runner import run_probe


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--before", default="")
    p.add_argument("--size", default="1024")
    p.add_argument("--images", default="4")
    p.add_argument("--steps", default="9")
    a = p.parse_args()
    shape = ["--size", a.size, "--images", a.images, "--steps", a.steps]
    runs = {"diffusers": run_probe("bench.stop_probe", ["diffusers", a.folder, *shape], {"mode": "diffusers"},
                                   "process_s", 2000)}
    if a.before:
        runs["ours_before"] = run_probe("bench.stop_probe", ["ours", a.folder, *shape, "--code", a.before],
                                        {"mode": "ours_before"}, "process_s", 2000)
    runs["ours"] = run_probe("bench.stop_probe", ["ours", a.folder, *shape], {"mode": "ours"}, "process_s", 2000)
    base = runs["diffusers"].get("stop_to_idle_s")
    summary = {"summary": "stop_to_idle", **{f"{k}_s": r.get("stop_to_idle_s") for k, r in runs.items()}}
    if base:
        summary.update({f"{k}_vs_diffusers": round(r["stop_to_idle_s"] / base, 3)
                        for k, r in runs.items() if k != "diffusers" and r.get("stop_to_idle_s") is not None})
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
