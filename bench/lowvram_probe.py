"""One low-VRAM mode in a fresh process (driven by lowvram_bench.py).

    python -m bench.lowvram_probe MODE DIR [BUDGET_GB]
MODE: resident (ours, everything on the GPU), model_offload (diffusers enable_model_cpu_offload),
group (diffusers enable_group_offload, block level, CUDA streams), torchao_int8 (torchao int8
weight-only transformer, resident: the quantization baseline), ours (zimage's plan for the budget),
ours_int8 (the same with --quantize int8: the first run makes the cache, later runs load it).
A budget is enforced with torch.cuda.set_per_process_memory_fraction. Saves the seed-0 image and the
first denoising step's transformer output under /tmp/lowvram/ for PSNR and SQNR. Prints one JSON line.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

PROMPT = "a red fox in the snow, golden hour, photo"
KW = dict(height=1024, width=1024, num_inference_steps=9, guidance_scale=0.0)
OUT_DIR = Path("/tmp/lowvram")


def capture_first_step(pipe, name: str, out_dir: Path = OUT_DIR):
    """Save the transformer's output at its first call (the first denoising step) as
    `<out_dir>/<name>.step1.npy`; returns the hook's handle."""
    state = {"done": False}

    def hook(_module, _args, output):
        if not state["done"]:
            state["done"] = True
            x = output[0] if isinstance(output, (tuple, list)) else output
            x = x[0] if isinstance(x, (tuple, list)) else x
            np.save(out_dir / f"{name}.step1.npy", x.float().cpu().numpy())
        return output
    return pipe.transformer.register_forward_hook(hook)


def main() -> None:
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
        hook = capture_first_step(pipe, name) if i == 0 else None
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
