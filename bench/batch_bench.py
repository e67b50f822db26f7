"""A request's several images: one pipeline call (the baseline: what the app did) beside one call
per image (what the app does, so that Stop keeps the finished images), each in a fresh process.
JSON lines out: seconds per image for each, and the ratio.

    python -m bench.batch_bench [DIR] [--size N] [--images N] [--steps N] [--repeats N]
DIR: a Z-Image pipeline folder; without it, the tiny random model is written to a temporary
folder (a CPU figure: it says nothing about a GPU's batching gain, which is what to measure there).
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile

from bench.runner import run_probe


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folder", nargs="?", default="")
    p.add_argument("--size", default="1024")
    p.add_argument("--images", default="4")
    p.add_argument("--steps", default="9")
    p.add_argument("--repeats", default="3")
    a = p.parse_args()
    folder = a.folder
    if not folder:
        from zimage.testing.tiny_model import make_tiny_model

        folder = str(make_tiny_model(tempfile.mkdtemp(prefix="batch-bench-") + "/tiny"))
    shape = ["--size", a.size, "--images", a.images, "--steps", a.steps, "--repeats", a.repeats]
    runs = {mode: run_probe("bench.batch_probe", [mode, folder, *shape], {"mode": mode}, "process_s", 2000)
            for mode in ("one_pass", "per_image")}
    base, ours = runs["one_pass"].get("s_per_image"), runs["per_image"].get("s_per_image")
    summary = {"summary": "s_per_image", "machine": platform.node(), "processor": platform.processor(),
               "model": a.folder or "tiny random (make_tiny_model)", "baseline_one_pass": base,
               "ours_per_image": ours}
    if base and ours:
        summary["ratio_ours_vs_baseline"] = round(ours / base, 3)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
