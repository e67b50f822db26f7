"""A real CUDA out-of-memory in the app, and its step-down (issue 7), on the GPU machine.

    python -m bench.oom_probe DIR [CAP_GB]
The app (with a fixed --vram-budget 76, so it does not re-plan on its own) loads the model
resident; then the process's VRAM is capped at CAP_GB (default 21.5) with
torch.cuda.set_per_process_memory_fraction, as if another program had taken the rest: the weights
still fit, a 1024x1024 image does not. The first request runs out of memory, the manager frees
memory, steps down to a 25% smaller plan and retries; the answer carries a warning. Prints JSON lines.
"""
from __future__ import annotations

import json
import os
import sys
import time

import torch


def main() -> None:
    folder = sys.argv[1]
    cap_gb = float(sys.argv[2]) if len(sys.argv) > 2 else 21.5
    from zimage.config import Settings
    from zimage.engine.manager import PipelineManager
    from zimage.request import GenerationRequest

    m = PipelineManager(Settings(model=folder, outputs_dir="/tmp/oom-out", idle_unload_s=0, idle_drop_s=0,
                                 compile="off", vram_budget="76")).start()
    status = m.ensure_ready(600)
    print(json.dumps({"step": "ready", "state": status.state.value, "plan": status.plan,
                      "allocated_gb": round(torch.cuda.memory_allocated() / 2**30, 2)}), flush=True)
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(cap_gb * 2**30 / total)
    torch.cuda.empty_cache()     # the cap applies to new cudaMalloc calls: give the warm-up's cached pool back
    req = GenerationRequest(prompt="a red fox in the snow", seed=1)
    t0 = time.perf_counter()
    try:
        r = m.generate(req, timeout=600)
        out = {"step": "first request", "ok": True, "warning": r.warning, "seconds": round(r.seconds, 2),
               "peak_vram_gb": round((r.peak_vram_bytes or 0) / 2**30, 2)}
    except Exception as e:   # noqa: BLE001 - the figure is what the user would see
        out = {"step": "first request", "ok": False, "error": f"{e.__class__.__name__}: {e}"}
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    s = m.status()
    out.update(state=s.state.value, plan=s.plan, oom_count=s.oom_count, cap_gb=cap_gb)
    print(json.dumps(out), flush=True)
    r = m.generate(GenerationRequest(prompt="a red fox in the snow", seed=2), timeout=600)
    print(json.dumps({"step": "next request", "ok": True, "seconds": round(r.seconds, 2), "warning": r.warning,
                      "peak_vram_gb": round((r.peak_vram_bytes or 0) / 2**30, 2),
                      "oom_count": m.status().oom_count}), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
