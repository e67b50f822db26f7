"""Variety's spread between seeds against off: mean pairwise pixel distance of N seeds' images.

    python3 -m bench.variety_bench [MODEL_DIR] [--size 256] [--steps 9] [--seeds 4] [--varieties 0,0.1,0.3]

Without MODEL_DIR, the tiny random model (written to a temporary folder). One JSON line per variety
(0 = off, the baseline, measured in the same run): `spread` is the mean absolute difference (0-255)
between every pair of the seeds' images, `ratio` spread / spread at off, `drift` the mean distance of
each seed's image from its own image at off (how far the picture moves). Same prompt, seeds s..s+N-1.
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import tempfile
import time

VARIETIES = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)
PROMPT = "a portrait of a woman in a red coat standing in a snowy street, evening light"


def main(argv: list[str] | None = None) -> None:
    import diffusers
    import torch

    from zimage.engine.loader import load_pipeline

    p = argparse.ArgumentParser()
    p.add_argument("model", nargs="?")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=9)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--varieties", default=",".join(f"{v:g}" for v in VARIETIES),
                   help="the varieties measured, in this order (the first is the baseline: 0, off)")
    args = p.parse_args(argv)
    varieties = [float(v) for v in args.varieties.split(",") if v]
    model = args.model
    if model is None:
        from zimage.testing.tiny_model import make_tiny_model

        model = make_tiny_model(tempfile.mkdtemp(prefix="variety-bench-"))
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    from pathlib import Path

    pipe = load_pipeline(Path(model), dtype, args.device, None, True)
    machine = {"machine": platform.node(), "cpu": platform.processor() or platform.machine(),
               "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
               "torch": torch.__version__, "diffusers": diffusers.__version__, "python": sys.version.split()[0]}
    meta = {"model": "tiny" if args.model is None else str(model), **machine}
    for line in spread_lines(pipe, args.size, args.steps, args.seeds, varieties):
        print(json.dumps({**line, **meta}), flush=True)


def spread_lines(pipe, size: int, steps: int, seeds: int, varieties: list[float]):
    """One dict per variety (the first is the baseline) for `pipe`: the seeds' images through the
    app's run_pipeline, their spread, its ratio to the baseline's and each image's drift from its own
    baseline image. Also run inside bench/gpu35_probe.py's session (issue 35 item 6)."""
    import numpy as np

    from zimage.engine.generate import run_pipeline
    from zimage.request import GenerationRequest

    base_images = None
    base_spread = None
    for variety in varieties:
        started = time.perf_counter()
        images = []
        for seed in range(1, seeds + 1):
            req = GenerationRequest.from_mapping({"prompt": PROMPT, "width": size, "height": size,
                                                  "num_inference_steps": steps, "seed": seed, "variety": variety})
            images.append(np.asarray(run_pipeline(pipe, req, lambda: False)[0], dtype=np.float64))
        spread = float(np.mean([np.abs(a - b).mean() for a, b in itertools.combinations(images, 2)]))
        if base_images is None:
            base_images, base_spread = images, spread
        drift = float(np.mean([np.abs(a - b).mean() for a, b in zip(images, base_images)]))
        yield {"bench": "variety", "variety": variety, "size": size, "steps": steps, "seeds": seeds,
               "spread": round(spread, 3), "baseline_spread": round(base_spread, 3),
               "ratio": round(spread / base_spread, 4), "drift": round(drift, 3),
               "seconds": round(time.perf_counter() - started, 2)}

if __name__ == "__main__":
    main()
