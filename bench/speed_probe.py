"""One way of making 1024x1024, 9-step images, measured in a fresh process (driven by speed_bench.py).

    python -m bench.speed_probe MODE DIR
MODE: eager (plain diffusers, resident: the baseline), diffusers_compile (plain diffusers +
transformer.compile_repeated_blocks), ours (the app: PipelineManager with its defaults: attention
choice, regional compile warmed during preload with a persistent cache), ours_nocompile (the app
with --compile off), ours_fp8 (the app with --fp8 on), ours_queueN (8 single-image requests at once with --batch-max N: images/s). Saves the seed-0 image and the first step's transformer output under
/tmp/speed/ for PSNR and SQNR. Prints one JSON line.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench.probe_common import PROMPT, capture_first_step, prompt_for

OUT_DIR = Path("/tmp/speed")


def main() -> None:
    mode, folder = sys.argv[1], sys.argv[2]
    OUT_DIR.mkdir(exist_ok=True)
    import torch

    out: dict = {"mode": mode}
    t0 = time.perf_counter()
    if mode.startswith("ours"):
        from zimage.config import Settings
        from zimage.engine.manager import PipelineManager
        from zimage.request import GenerationRequest

        batch = int(mode[len("ours_queue"):]) if mode.startswith("ours_queue") else 1
        settings = Settings(model=folder, outputs_dir="/tmp/speed-out", idle_unload_s=0, idle_drop_s=0,
                            cache_dir="/tmp/speed-cache", compile="off" if mode == "ours_nocompile" else "auto",
                            fp8="on" if mode == "ours_fp8" else "off", batch_max=batch, queue_max=16)
        manager = PipelineManager(settings).start()
        manager.ensure_ready(900)
        if mode.startswith("ours_queue"):       # 8 single-image requests at once (8 users), --batch-max N
            for attempt in ("warm", "timed"):
                t = time.perf_counter()
                jobs = [manager.submit(GenerationRequest(prompt=f"{PROMPT} #{i}", seed=i)) for i in range(8)]
                [j.future.result(900) for j in jobs]
                out[f"{attempt}_8_requests_s"] = round(time.perf_counter() - t, 3)
            out["images_per_s"] = round(8 / out["timed_8_requests_s"], 3)
            print(json.dumps(out), flush=True)
            os._exit(0)
        out["ready_s"] = round(time.perf_counter() - t0, 2)      # load + compile + warm-up images
        out["attention"] = manager._attention
        out["plan"] = manager.status().plan
        pipe = manager._pipe

        def one(seed: int, n: int = 1) -> tuple[float, list]:
            r = manager.generate(GenerationRequest(prompt=prompt_for(seed), seed=seed, num_images=n), timeout=600)
            out.setdefault("peak_vram_reported_gb", round((r.peak_vram_bytes or 0) / 2**30, 2))
            return r.seconds, [np.asarray(i.image) for i in r.images]
    else:
        from diffusers import ZImagePipeline

        pipe = ZImagePipeline.from_pretrained(folder, torch_dtype=torch.bfloat16).to("cuda")
        pipe.set_progress_bar_config(disable=True)
        if mode == "diffusers_compile":
            pipe.transformer.compile_repeated_blocks(fullgraph=True)
        torch.cuda.synchronize()
        out["ready_s"] = round(time.perf_counter() - t0, 2)

        def one(seed: int, n: int = 1) -> tuple[float, list]:
            t = time.perf_counter()
            images = pipe(prompt=prompt_for(seed), height=1024, width=1024, num_inference_steps=9, guidance_scale=0.0,
                          num_images_per_prompt=n,
                          generator=[torch.Generator("cpu").manual_seed(seed + i) for i in range(n)]).images
            torch.cuda.synchronize()
            return time.perf_counter() - t, [np.asarray(i) for i in images]

    handle = capture_first_step(pipe, mode, OUT_DIR)
    torch.cuda.reset_peak_memory_stats()
    first, images = one(0)
    handle.remove()
    np.save(OUT_DIR / f"{mode}.npy", images[0])
    out["first_image_s"] = round(first, 3)
    steady = [round(one(1 + i)[0], 3) for i in range(3)]
    out["steady_s"] = steady
    out["s_per_image"] = min(steady)
    other = one(7)[0]                                   # a new prompt length would recompile a static graph
    out["other_seed_s"] = round(other, 3)
    if mode.startswith("ours"):
        r = manager.generate(GenerationRequest(prompt=PROMPT + ", with a much longer description of the scene "
                                               "and its light", seed=3), timeout=600)
        out["new_prompt_length_s"] = round(r.seconds, 3)
        r = manager.generate(GenerationRequest(prompt=PROMPT, seed=3, width=1280, height=768), timeout=600)
        out["new_size_1280x768_s"] = round(r.seconds, 3)
    one(20, 4)                                          # batch 4: once to warm, once timed
    t4, _ = one(30, 4)
    out["batch4_s"] = round(t4, 3)
    out["batch4_images_per_s"] = round(4 / t4, 3)
    out["peak_vram_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    out["finite"] = bool(np.isfinite(np.load(OUT_DIR / f"{mode}.step1.npy")).all())
    print(json.dumps(out), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
