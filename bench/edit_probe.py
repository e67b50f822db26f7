"""One edit bench case in this process (bench/edit_bench.py runs each in a fresh one): txt2img,
img2img at strength 0.6 and inpaint (a centred square, strength 1) at SIZE, 9 steps; with a
ControlNet folder also ControlNet canny ("control") and ControlNet inpaint ("control_inpaint").
One JSON line.

    python -m bench.edit_probe diffusers|ours|ours_8gib DIR [SIZE] [CONTROLNET_DIR]

- diffusers: plain ZImagePipeline, then ZImageImg2ImgPipeline / ZImageInpaintPipeline built from
  its components (the same way the app builds them), eager.
- ours: the app's manager, resident (compiled blocks where the settings say so).
- ours_8gib: the app's manager under an 8 GiB VRAM budget (a low-VRAM plan).
"first_after_switch_s": the first image of a mode right after another mode ran, less that mode's
steady s/image: what switching modes costs (no reload, no recompile expected).
- "switch": txt2img, then ControlNet, then txt2img again, each image's seconds, with the load
  count and torch.compile's graph count before and after (no reload, no recompile expected).
- diffusers' ControlNet: ZImageControlNetModel built from the same file the same way the app
  does (its from_single_file fetches a config from the Hugging Face hub, which the GPU machine
  cannot reach), then plain ZImageControlNetPipeline / ZImageControlNetInpaintPipeline from the
  base pipeline's components.
On a CPU (no CUDA) it runs with float32 and reports no VRAM: a check that the script works.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

PROMPT = "a red fox in the snow, golden hour, photo"
SEEDS = (1, 2, 3)
STEPS = 9
STRENGTH = 0.6


def median(xs) -> float:
    return round(float(np.median(xs)), 3)


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def sync() -> None:
    import torch

    if cuda():
        torch.cuda.synchronize()


def peak_gb() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda() else None


def inputs(size: int):
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack([x * 255 // size, y * 255 // size, (x + y) * 127 // size], -1) + rng.integers(-8, 9, (size, size, 3))
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    return image, mask


def graphs() -> int:
    """torch.compile's graphs so far (a recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def switch(gen, loads) -> dict:
    """txt2img -> control -> txt2img: each first image's seconds; loads and graphs added."""
    before_loads, before_graphs = loads(), graphs()
    times = [round(gen(mode, 0), 3) for mode in ("txt2img", "control", "txt2img")]
    return {"switch_s": dict(zip(("txt2img", "control", "txt2img_again"), times)),
            "switch_extra_loads": loads() - before_loads, "switch_new_graphs": graphs() - before_graphs}


def control_map(image):
    from zimage.store.control_images import canny_map

    return canny_map(image)


def measure(gen, modes: list[str]) -> dict:
    """Steady s/image per mode, then each mode's first image right after another mode."""
    out: dict = {}
    for mode in modes:
        gen(mode, 0)                                      # warm (compile, cuDNN plans)
        out[f"{mode}_s_per_image"] = median([gen(mode, s) for s in SEEDS])
    for prev, mode in zip(modes, modes[1:] + modes[:1]):
        gen(prev, 0)
        first = gen(mode, 0)
        out[f"{mode}_first_after_switch_s"] = round(first - out[f"{mode}_s_per_image"], 3)
    for mode in modes[1:]:
        out[f"{mode}_vs_txt2img"] = round(out[f"{mode}_s_per_image"] / out["txt2img_s_per_image"], 3)
    return out


def run_diffusers(folder: str, size: int, controlnet: str | None = None) -> dict:
    import torch
    from diffusers import ZImageImg2ImgPipeline, ZImageInpaintPipeline, ZImagePipeline

    device = "cuda" if cuda() else "cpu"
    dtype = torch.bfloat16 if cuda() else torch.float32
    t0 = time.perf_counter()
    base = ZImagePipeline.from_pretrained(folder, torch_dtype=dtype).to(device)
    pipes = {"txt2img": base, "img2img": ZImageImg2ImgPipeline(**base.components),
             "inpaint": ZImageInpaintPipeline(**base.components)}
    image, mask = inputs(size)
    extra = {"txt2img": {}, "img2img": {"image": image, "strength": STRENGTH},
             "inpaint": {"image": image, "mask_image": mask, "strength": 1.0}}
    if controlnet:
        from pathlib import Path

        from diffusers import ZImageControlNetInpaintPipeline, ZImageControlNetPipeline

        from zimage.engine.controlnet import load_controlnet

        cn = load_controlnet(Path(controlnet), base.transformer, dtype, device)
        pipes["control"] = ZImageControlNetPipeline(**base.components, controlnet=cn)
        pipes["control_inpaint"] = ZImageControlNetInpaintPipeline(**base.components, controlnet=cn)
        hint = control_map(image)
        extra["control"] = {"control_image": hint, "controlnet_conditioning_scale": 1.0}
        extra["control_inpaint"] = {"control_image": hint, "controlnet_conditioning_scale": 1.0, "image": image,
                                    "mask_image": mask}
    for p in pipes.values():
        p.set_progress_bar_config(disable=True)
    out: dict = {"ready_s": round(time.perf_counter() - t0, 2)}

    def gen(mode: str, seed: int) -> float:
        sync()
        t = time.perf_counter()
        pipes[mode](prompt=PROMPT, height=size, width=size, num_inference_steps=STEPS, guidance_scale=0.0,
                    generator=torch.Generator("cpu").manual_seed(seed), **extra[mode])
        sync()
        return time.perf_counter() - t
    if cuda():
        torch.cuda.reset_peak_memory_stats()
    out.update(measure(gen, list(pipes)))
    if controlnet:
        out.update(switch(gen, lambda: 0))
    out["peak_vram_gb"] = peak_gb()
    return out


def run_ours(folder: str, size: int, budget_gb: float, controlnet: str | None = None) -> dict:
    import dataclasses

    import torch

    from zimage.config import Settings
    from zimage.engine.manager import PipelineManager
    from zimage.request import GenerationRequest
    from zimage.store.control_images import make_unit

    settings = Settings(model=folder, outputs_dir="/tmp/edit-bench-out", cache_dir="/tmp/edit-bench-cache",
                        idle_unload_s=0, idle_drop_s=0, low_vram=budget_gb > 0,
                        vram_budget=f"{budget_gb:g}" if budget_gb else "auto",
                        **({"controlnet": controlnet} if controlnet else {}))
    manager = PipelineManager(settings).start()
    t0 = time.perf_counter()
    manager.ensure_ready(900)
    out: dict = {"ready_s": round(time.perf_counter() - t0, 2), "plan": manager.status().plan}
    if cuda():           # the steady figures are the compiled ones: wait for the background compile's swap
        from bench.probe_common import wait_compiled

        out["compile_wait_s"] = wait_compiled(manager, settings.compile, timeout_s=400)
    image, mask = inputs(size)
    extra = {"txt2img": {}, "img2img": {"init_image": image, "strength": STRENGTH},
             "inpaint": {"init_image": image, "mask": mask, "strength": 1.0, "mask_blur": 4}}
    modes = ["txt2img", "img2img", "inpaint"]
    unit = None
    if controlnet:
        unit = make_unit(image, "canny", "bench", 1.0, 0.0, 1.0)
        extra["control"], extra["control_inpaint"] = {}, dict(extra["inpaint"])
        modes += ["control", "control_inpaint"]

    def gen(mode: str, seed: int) -> float:
        req = GenerationRequest.from_mapping({"prompt": PROMPT, "seed": seed, "width": size, "height": size,
                                              "num_inference_steps": STEPS, **extra[mode]})
        if mode.startswith("control"):
            req = dataclasses.replace(req, control=unit)
        return manager.generate(req, timeout=900).seconds     # the pipeline call, decode included
    if cuda():
        torch.cuda.reset_peak_memory_stats()
    loads = manager.load_count
    out.update(measure(gen, modes))
    if controlnet:
        out.update(switch(gen, lambda: manager.load_count))
        out["plan_with_controlnet"] = manager.status().plan
        out["budget_gb"] = budget_gb or None
    out["peak_vram_gb"] = peak_gb()
    out["extra_loads"] = manager.load_count - loads
    manager.close()
    return out


def main() -> None:
    case, folder = sys.argv[1], sys.argv[2]
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
    controlnet = sys.argv[4] if len(sys.argv) > 4 else None
    if case == "diffusers":
        out = run_diffusers(folder, size, controlnet)
    else:
        out = run_ours(folder, size, 8.0 if case == "ours_8gib" else 0.0, controlnet)
    print(json.dumps({"case": case, "size": size, **out}), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
