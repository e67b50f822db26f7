"""One low-VRAM mode in a fresh process (driven by lowvram_bench.py).

    python -m bench.lowvram_probe MODE DIR [BUDGET_GB]
MODE: resident (ours, everything on the GPU), model_offload (diffusers enable_model_cpu_offload),
group (diffusers enable_group_offload, block level, CUDA streams), torchao_int8 (torchao int8
weight-only transformer, resident: the quantization baseline), ours (zimage's plan for the budget),
ours_int8 (the same with --quantize int8: the first run makes the cache, later runs load it).
A budget is enforced with torch.cuda.set_per_process_memory_fraction. Saves the seed-0 image and the
first denoising step's transformer output under /tmp/lowvram/ for PSNR and SQNR. Prints one JSON line.

The compiled-plans suite (issue 21; `lowvram_bench.py DIR --compiled`) runs these instead:

    python -m bench.lowvram_probe app DIR NAME [--budget GB] [--compile auto|on|off] [--quantize none|int8]
                                  [--switch] [--size PX] [--steps N] [--images N] [--device cuda:0|cpu]
    python -m bench.lowvram_probe plain DIR NAME [--diffusers-compile] [--size PX] [--steps N] [--images N]
      both also: [--dit FILE] [--base] [--no-reference]

`app`: the PipelineManager under Settings(vram_budget, low_vram, compile, quantize), timed once its
compile (resident: the background twin; a plan: its warm-up images) is in use; `--switch` times
resident -> 8 GiB plan -> resident instead (no disk read: load_count stays 1). `plain`: diffusers
eager, or with its compile_repeated_blocks. Both count the graphs dynamo makes during the timed
images (`recompiles`: 0 means no compile inside a request) and take a new prompt per image, as
speed_probe does. On the CPU (a check of the command with the tiny model) the plans run with the
CPU as their "GPU" and torch.compile uses ZIMAGE_BENCH_BACKEND (default aot_eager).
--dit FILE: the DiT from a single file (ComfyUI's .safetensors, fp8, .gguf) with DIR's text encoder,
VAE and configs (plain: from_single_file, GGUFQuantizationConfig for GGUF). --base: the app's
base-model settings for what a request leaves out (guidance, negative prompt, CFG options:
model_defaults.BASE), on both sides. --no-reference: no seed-0 image for the quality figures.
`on_device_s` (process start to the weights on the device) and `load_s` (from the model code
imported) are the load figures.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.probe_common import (OUT_DIR, PROMPT, app_manager, base_request, capture_first_step, measure,
                                model_settings, plain_pipeline, prompt_for, wait_compiled)

KW = dict(height=1024, width=1024, num_inference_steps=9, guidance_scale=0.0)


def _suite_args(argv: list[str]):
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("folder")
    p.add_argument("name")
    p.add_argument("--budget", type=float, default=None)
    p.add_argument("--compile", default="auto")
    p.add_argument("--quantize", default="none")
    p.add_argument("--switch", action="store_true")
    p.add_argument("--diffusers-compile", action="store_true")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=9)
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dit", default="")
    p.add_argument("--base", action="store_true")
    p.add_argument("--no-reference", action="store_true")
    return p.parse_args(argv)


def app(a) -> dict:
    from zimage import startup
    from zimage.config import Settings
    from zimage.request import GenerationRequest

    out: dict = {"mode": "app", "name": a.name, "budget_gb": a.budget, "compile": a.compile, "quantize": a.quantize,
                 "dit": a.dit or None}
    cuda = a.device.startswith("cuda")
    if a.budget and cuda and not a.switch:
        torch.cuda.set_per_process_memory_fraction(a.budget * 2**30 / torch.cuda.get_device_properties(0).total_memory)
    settings = Settings(**model_settings(a.folder, a.dit), outputs_dir="/tmp/lowvram-out",
                        cache_dir="/tmp/lowvram-cache", idle_unload_s=0, idle_drop_s=0, compile=a.compile,
                        quantize=a.quantize, device=a.device,
                        vram_budget=str(a.budget) if a.budget and not a.switch else "auto",
                        low_vram=bool(a.budget) and not a.switch)
    t0 = time.perf_counter()
    manager = app_manager(settings)
    manager.ensure_ready(900)
    out["ready_s"] = round(time.perf_counter() - t0, 2)
    events = startup.timeline_dict()
    out["on_device_s"] = events.get(startup.ON_DEVICE)
    out["load_s"] = round(out["on_device_s"] - events[startup.MODEL_IMPORTED], 3) \
        if out["on_device_s"] is not None and startup.MODEL_IMPORTED in events else None
    out["compile_wait_s"] = wait_compiled(manager, a.compile)
    out["plan"] = manager.status().plan

    def one(seed: int, prompt: str | None = None) -> tuple[float, object]:
        req = GenerationRequest(prompt=prompt or prompt_for(seed), seed=seed, width=a.size, height=a.size,
                                num_inference_steps=a.steps)
        r = manager.generate(base_request(req) if a.base else req, timeout=900)
        return r.seconds, r.images[0].image

    if a.switch:                # resident -> 8 GiB plan -> resident, no disk read
        one(1)
        t = time.perf_counter()
        manager.set_low_vram(True).future.result(600)
        out["to_plan_s"] = round(time.perf_counter() - t, 3)
        out["plan_after_switch"] = manager.status().plan
        out["first_image_in_plan_s"] = round(one(2)[0], 3)
        out["plan_compile_wait_s"] = wait_compiled(manager, a.compile)
        out["compiled_image_in_plan_s"] = round(one(3)[0], 3)
        t = time.perf_counter()
        manager.set_low_vram(False).future.result(600)
        out["to_resident_s"] = round(time.perf_counter() - t, 3)
        out["first_image_resident_again_s"] = round(one(4)[0], 3)
        out["disk_loads"] = manager.load_count
        return out
    measure(out, a.name, manager._pipe, one, a.images, a.device, not a.no_reference)   # after the swap
    out["disk_loads"] = manager.load_count
    return out


def plain(a) -> dict:
    from zimage.startup import since_start_s

    out: dict = {"mode": "plain", "name": a.name, "diffusers_compile": a.diffusers_compile, "dit": a.dit or None}
    cuda = a.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    import diffusers  # noqa: F401  (imports done: the load figure starts here, as the app's "model code imported")
    imported = since_start_s()
    t0 = time.perf_counter()
    pipe = plain_pipeline(a.folder, a.dit, dtype).to(a.device)
    if cuda:
        torch.cuda.synchronize()
    out["on_device_s"] = round(since_start_s(), 3)
    out["load_s"] = round(out["on_device_s"] - imported, 3)
    pipe.set_progress_bar_config(disable=True)
    if a.diffusers_compile:
        backend = "inductor" if cuda else os.environ.get("ZIMAGE_BENCH_BACKEND", "aot_eager")
        pipe.transformer.compile_repeated_blocks(fullgraph=True, backend=backend)
    if a.base:
        from zimage.model_defaults import BASE
        texts = dict(negative_prompt=BASE.negative_prompt, guidance_scale=BASE.guidance_scale,
                     cfg_normalization=BASE.cfg_normalization, cfg_truncation=BASE.cfg_truncation)
    else:
        texts = dict(guidance_scale=0.0)

    def one(seed: int, prompt: str | None = None):
        t = time.perf_counter()
        image = pipe(prompt=prompt or prompt_for(seed), height=a.size, width=a.size, num_inference_steps=a.steps,
                     generator=torch.Generator("cpu").manual_seed(seed), **texts).images[0]
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t, image

    if a.diffusers_compile:          # the app's warm-up prompts: two lengths, so no request compiles
        for prompt in ("warm-up", "a warm-up prompt of a different length, so that the compiled blocks take "
                                  "any prompt length without compiling again"):
            one(0, prompt)
    else:                            # eager: one 1-step image, as the app's warm_up
        pipe(prompt="warm-up", height=a.size, width=a.size, num_inference_steps=1, guidance_scale=0.0,
             generator=torch.Generator("cpu").manual_seed(0))
    out["ready_s"] = round(time.perf_counter() - t0, 2)
    measure(out, a.name, pipe, one, a.images, a.device, not a.no_reference)
    return out


def main() -> None:
    if sys.argv[1] in ("app", "plain"):
        OUT_DIR.mkdir(exist_ok=True)
        a = _suite_args(sys.argv[1:])
        print(json.dumps(app(a) if a.mode == "app" else plain(a)), flush=True)
        os._exit(0)
    mode, folder = sys.argv[1], sys.argv[2]
    budget_gb = float(sys.argv[3]) if len(sys.argv) > 3 else None
    name = f"{mode}{budget_gb or ''}"
    out = {"mode": mode, "budget_gb": budget_gb}
    OUT_DIR.mkdir(exist_ok=True)
    total = torch.cuda.get_device_properties(0).total_memory
    if budget_gb:
        torch.cuda.set_per_process_memory_fraction(budget_gb * 2**30 / total)
    from diffusers import ZImagePipeline

    from zimage.engine.generate import warm_up
    from zimage.engine.loader import load_pipeline
    from zimage.engine.placement import TorchPlacement

    runtime = None
    t0 = time.perf_counter()
    if mode == "resident":
        pipe = load_pipeline(Path(folder), torch.bfloat16, "cuda:0")
    elif mode in ("ours", "ours_int8"):
        if mode == "ours_int8":
            from zimage.engine.quantize import load_quantized

            made = []
            pipe, note = load_quantized(Path(folder), torch.bfloat16, load_pipeline, compute_device="cuda:0",
                                        on_quantize=lambda: made.append(time.perf_counter()))
            out["quant_note"] = note
            out["quantized_now"] = bool(made)
        else:
            pipe = load_pipeline(Path(folder), torch.bfloat16, "cpu")
        out["load_to_ram_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        placement = TorchPlacement("cuda:0")
        out["plan"] = placement.enable_offload(pipe, int(budget_gb * 2**30) if budget_gb else None)
        runtime = placement._runtime
    elif mode == "torchao_int8":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        pipe = ZImagePipeline.from_pretrained(folder, torch_dtype=torch.bfloat16)
        quantize_(pipe.transformer, Int8WeightOnlyConfig())
        pipe.to("cuda")
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
    setup_done = time.perf_counter()
    pipe.set_progress_bar_config(disable=True)
    t0 = time.perf_counter()
    if mode in ("resident", "ours", "ours_int8"):
        warm_up(pipe)          # what the app does after loading
    else:                      # diffusers' hooks keep state: no inference_mode tensors for them
        pipe(prompt=PROMPT, **dict(KW, num_inference_steps=1), generator=torch.Generator("cpu").manual_seed(0))
    out["warmup_s"] = round(time.perf_counter() - t0, 3)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(1 if mode == "model_offload" else 3):     # model offload: ~15 s an image
        hook = capture_first_step(pipe, name, OUT_DIR) if i == 0 else None
        t0 = time.perf_counter()
        image = pipe(prompt=PROMPT, **KW, generator=torch.Generator("cpu").manual_seed(i % 2)).images[0]
        torch.cuda.synchronize()
        times.append(round(time.perf_counter() - t0, 3))
        if hook is not None:
            hook.remove()
        if i == 0:
            arr = np.asarray(image)
            np.save(OUT_DIR / f"{name}.npy", arr)
            out["finite"] = bool(np.isfinite(np.load(OUT_DIR / f"{name}.step1.npy")).all())
    if runtime is not None:
        done, total_pin = runtime.pinning
        pinners = [p for p in [runtime.pinner, *(s.pinner for s in runtime.streamers)] if p is not None]
        out["pinned_gb"] = round(done / 1e9, 2)
        out["pin_total_gb"] = round(total_pin / 1e9, 2)
        out["pin_s"] = max((p.seconds or -1 for p in pinners), default=None)
        out["since_setup_s"] = round(time.perf_counter() - setup_done, 2)
    out["s_per_image"] = min(times)
    out["times"] = times
    out["peak_vram_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    out["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    print(json.dumps(out), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
