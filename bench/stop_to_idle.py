"""Stop-to-idle on the tiny random model (CPU): seconds from Stop (cancel) until the worker is idle,
for 4 images at 1024x1024. Run from the repository root:

    python -m bench.stop_to_idle [--runs 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--size", type=int, default=1024)
    args = p.parse_args()

    from zimage.config import Settings
    from zimage.generate import GenerationRequest
    from zimage.manager import PipelineManager
    from zimage.testing.tiny_model import make_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="stop-bench-"))
    model = make_tiny_model(tmp / "tiny")
    m = PipelineManager(Settings(model=str(model), outputs_dir=str(tmp / "out"), cache_dir=str(tmp / "cache"),
                                 idle_unload_s=0, idle_drop_s=0)).start()
    m.ensure_ready(120)
    req = GenerationRequest.from_mapping({"prompt": "stop me", "width": args.size, "height": args.size,
                                          "num_inference_steps": 50, "num_images": 4, "seed": 1})
    m.generate(GenerationRequest.from_mapping({"prompt": "warm", "width": 256, "height": 256,
                                               "num_inference_steps": 1}), timeout=120)
    figures, steps = [], []
    for _ in range(args.runs):
        job = m.submit(req)
        while job.step < 2:
            time.sleep(0.005)
        stopped_at = time.perf_counter()
        m.cancel()
        while m.status().busy:
            time.sleep(0.002)
        figures.append(time.perf_counter() - stopped_at)
        steps.append((job.step, round(getattr(job, "step_seconds", 0.0), 3)))
    m.close()
    print(f"stop-to-idle, 4 x {args.size}x{args.size}, tiny model, CPU: "
          + ", ".join(f"{f:.3f}" for f in figures) + f" s (median {statistics.median(figures):.3f} s); "
          f"(step reached, seconds per step): {steps}")


if __name__ == "__main__":
    main()
