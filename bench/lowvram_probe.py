"""One low-VRAM mode in a fresh process (driven by lowvram_bench.py).

    python -m bench.lowvram_probe MODE DIR [BUDGET_GB]
MODE: resident (ours, everything on the GPU), model_offload (diffusers enable_model_cpu_offload),
group (diffusers enable_group_offload, block level, CUDA streams), ours (zimage's plan for the
budget). A budget is enforced with torch.cuda.set_per_process_memory_fraction. Saves the seed-0
image as /tmp/lowvram/<MODE><BUDGET>.npy for the pixel comparison. Prints one JSON line.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

KW = dict(prompt="a red fox in the snow, golden hour, photo", height=1024, width=1024,
          num_inference_steps=9, guidance_scale=0.0)


def main() -> None:
    mode, folder = sys.argv[1], sys.argv[2]
    budget_gb = float(sys.argv[3]) if len(sys.argv) > 3 else None
    out = {"mode": mode, "budget_gb": budget_gb}
    total = torch.cuda.get_device_properties(0).total_memory
    if budget_gb:
        torch.cuda.set_per_process_memory_fraction(budget_gb * 2**30 / total)
    from diffusers import ZImagePipeline

    from zimage.devices import TorchPlacement
    from zimage.generate import warm_up
    from zimage.loader import load_pipeline

    t0 = time.perf_counter()
    if mode == "resident":
        pipe = load_pipeline(Path(folder), torch.bfloat16, "cuda:0")
    elif mode == "ours":
        pipe = load_pipeline(Path(folder), torch.bfloat16, "cpu")
        out["load_to_ram_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        out["plan"] = TorchPlacement("cuda:0").enable_offload(pipe, int(budget_gb * 2**30))
    else:
        pipe = ZImagePipeline.from_pretrained(folder, torch_dtype=torch.bfloat16)
        out["load_to_ram_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        if mode == "model_offload":
            pipe.enable_model_cpu_offload()
        else:
            pipe.enable_group_offload(onload_device=torch.device("cuda"), offload_type="block_level",
                                      num_blocks_per_group=1, use_stream=True)
    torch.cuda.synchronize()
    out["setup_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    if mode in ("resident", "ours"):
        warm_up(pipe)          # what the app does after loading
    else:                      # diffusers' hooks keep state: no inference_mode tensors for them
        pipe(**dict(KW, num_inference_steps=1), generator=torch.Generator("cpu").manual_seed(0))
    out["warmup_s"] = round(time.perf_counter() - t0, 3)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(2):
        t0 = time.perf_counter()
        image = pipe(**KW, generator=torch.Generator("cpu").manual_seed(i)).images[0]
        torch.cuda.synchronize()
        times.append(round(time.perf_counter() - t0, 3))
        if i == 0:
            Path("/tmp/lowvram").mkdir(exist_ok=True)
            np.save(f"/tmp/lowvram/{mode}{budget_gb or ''}.npy", np.asarray(image))
    out["s_per_image"] = min(times)
    out["times"] = times
    out["peak_vram_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    out["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    print(json.dumps(out), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
