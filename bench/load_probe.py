"""One way of putting a Z-Image folder on the GPU, measured in a fresh process (driven by load_bench.py).

    python -m bench.load_probe MODE DIR [--gen]
MODE: raw (safetensors straight to cuda on 8 threads: the floor), seed (diffusers from_pretrained,
then .to("cuda"): the seed article's method), ours (zimage's fast loader), ours_app (the app's own
path: PipelineManager.preload, prefetch during imports included), equal (ours vs from_pretrained,
every tensor compared). Prints one JSON line; times exclude nothing unless the key says so.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time

T_PROCESS = time.perf_counter()


def rss_gb() -> float:
    import psutil

    return round(psutil.Process().memory_info().rss / 1e9, 2)


def peak_rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 2)


def timed_images(pipe, out: dict, n_steady: int = 2) -> None:
    import torch

    kw = dict(prompt="a red fox in the snow, golden hour, photo", height=1024, width=1024,
              num_inference_steps=9, guidance_scale=0.0)
    times = []
    for i in range(1 + n_steady):
        t0 = time.perf_counter()
        pipe(**kw, generator=torch.Generator("cpu").manual_seed(i))
        torch.cuda.synchronize()
        times.append(round(time.perf_counter() - t0, 3))
    out["first_image_s"], out["steady_image_s"] = times[0], min(times[1:])
    out["peak_vram_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)


def main() -> None:
    mode, folder = sys.argv[1], sys.argv[2]
    gen = "--gen" in sys.argv
    out: dict = {"mode": mode}
    if mode == "ours_app":     # as `webui.py --preload` does: nothing imported before the load starts
        import logging

        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(relativeCreated)7.0f ms %(threadName)s %(name)s: %(message)s")
        from zimage.config import Settings
        from zimage.engine.manager import PipelineManager
        settings = Settings(model=folder, outputs_dir="/tmp/zimage-bench-out", idle_unload_s=0, idle_drop_s=0)
        m = PipelineManager(settings).start()
        m.ensure_ready(600)
        logging.getLogger("bench").info("ready")
        out["state"] = m.status().state.value
        out["process_s"] = round(time.perf_counter() - T_PROCESS, 3)
        out["peak_rss_gb"] = peak_rss_gb()
        print(json.dumps(out), flush=True)
        os._exit(0)      # skip interpreter teardown of 20 GB of tensors: not part of the figure
    import torch

    torch.zeros(1, device="cuda")
    out["cuda_ready_s"] = round(time.perf_counter() - T_PROCESS, 3)
    if mode == "raw":
        import glob
        from concurrent.futures import ThreadPoolExecutor

        from safetensors import safe_open

        files = sorted(glob.glob(f"{folder}/**/*.safetensors", recursive=True))

        def load(f):
            with safe_open(f, framework="pt", device="cuda:0") as sf:
                return [sf.get_tensor(k) for k in sf.keys()]
        out["rss_before_gb"] = rss_gb()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(8) as ex:
            held = list(ex.map(load, files))
        torch.cuda.synchronize()
        out["load_s"] = round(time.perf_counter() - t0, 3)
        out["gb"] = round(sum(t.numel() * t.element_size() for ts in held for t in ts) / 1e9, 2)
    elif mode in ("seed", "ours", "equal"):
        from pathlib import Path

        t0 = time.perf_counter()
        import diffusers  # noqa: F401
        from diffusers import ZImagePipeline

        from zimage.engine.loader import load_pipeline
        out["import_s"] = round(time.perf_counter() - t0, 3)
        out["rss_before_gb"] = rss_gb()
        t0 = time.perf_counter()
        if mode == "seed":
            pipe = ZImagePipeline.from_pretrained(folder, torch_dtype=torch.bfloat16)
            pipe.to("cuda")
        else:
            pipe = load_pipeline(Path(folder), torch.bfloat16, "cuda:0", fast=True)
        torch.cuda.synchronize()
        out["load_s"] = round(time.perf_counter() - t0, 3)
        out["peak_rss_gb"] = peak_rss_gb()
        out["vram_gb"] = round(torch.cuda.memory_allocated() / 1e9, 2)
        if mode == "equal":
            plain = ZImagePipeline.from_pretrained(folder, torch_dtype=torch.bfloat16).to("cuda")
            checked = mismatched = 0
            for name in ("transformer", "vae", "text_encoder"):
                a, b = getattr(pipe, name), getattr(plain, name)
                ta = dict(a.named_parameters()) | dict(a.named_buffers())
                tb = dict(b.named_parameters()) | dict(b.named_buffers())
                mismatched += len(ta.keys() ^ tb.keys())
                for k in ta.keys() & tb.keys():
                    checked += 1
                    mismatched += not (ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]))
                    if not (ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k])):
                        out.setdefault("mismatched_names", []).append(f"{name}.{k}")
            out["tensors_checked"], out["tensors_mismatched"] = checked, mismatched
        if gen and mode == "ours":
            from zimage.engine.generate import warm_up

            out["warmup_s"] = round(warm_up(pipe), 3)      # part of the app's preload
        if gen and mode != "equal":
            timed_images(pipe, out)
        if mode == "ours":
            from zimage.engine.placement import TorchPlacement

            place = TorchPlacement("cuda:0")
            t0 = time.perf_counter()
            place.move(pipe, "cpu")                   # idle unload: into pinned RAM
            out["unload_to_pinned_s"] = round(time.perf_counter() - t0, 3)
            t0 = time.perf_counter()
            place.move(pipe, "cuda:0")
            out["reload_from_pinned_s"] = round(time.perf_counter() - t0, 3)
            t0 = time.perf_counter()
            place.move(pipe, "cpu")                   # a later idle unload reuses the pinned buffer
            out["unload_to_pinned_again_s"] = round(time.perf_counter() - t0, 3)
            place.move(pipe, "cuda:0")
            place.release_pinned()
            TorchPlacement.move_modules(pipe, "cpu")    # a plain .to("cpu"): pageable RAM
            t0 = time.perf_counter()
            TorchPlacement.move_modules(pipe, "cuda:0")
            out["reload_from_pageable_s"] = round(time.perf_counter() - t0, 3)
    out["process_s"] = round(time.perf_counter() - T_PROCESS, 3)
    out.setdefault("peak_rss_gb", peak_rss_gb())
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
