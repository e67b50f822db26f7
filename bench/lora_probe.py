"""One LoRA bench case in this process (bench/lora_bench.py runs each in a fresh one), on the
full-size model: three random rank-32 LoRAs (diffusers keys) over every attention and feed-forward
Linear of the blocks, written for the loaded transformer's shapes. 1024x1024, 9 steps. One JSON line.

    python -m bench.lora_probe diffusers|ours|ours_8gib DIR

- diffusers: the seed's method plus diffusers' own LoRA API, eager: `load_lora_weights` each file,
  `set_adapters` for one and for three, `fuse_lora` / `unfuse_lora`, `unload_lora_weights`.
- ours: the app's manager, resident with compiled blocks (fused in place, copies kept for switches).
- ours_8gib: the app's manager under an 8 GiB VRAM budget (streamed blocks carry the LoRAs).
Switch time = the first image after a change of LoRA set, less the steady s/image of that set.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROMPT = "a red fox in the snow, golden hour, photo"
RANK = 32
SEEDS = (1, 2, 3)


def write_lora(transformer, path: Path, seed: int, rank: int = RANK) -> int:
    import torch
    from safetensors.torch import save_file

    from zimage.testing.tiny_lora import target_shapes

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for module, (out_f, in_f) in target_shapes(transformer).items():
        tensors[f"transformer.{module}.lora_A.weight"] = (torch.randn(rank, in_f, generator=g) / in_f ** 0.5).to(torch.bfloat16)
        tensors[f"transformer.{module}.lora_B.weight"] = (torch.randn(out_f, rank, generator=g) * 0.01).to(torch.bfloat16)
    save_file(tensors, str(path))
    return len(tensors) // 2


def median(xs) -> float:
    return round(float(np.median(xs)), 3)


def peak_gb() -> float:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def run_diffusers(folder: str, loras: Path) -> dict:
    import torch
    from diffusers import ZImagePipeline

    t0 = time.perf_counter()
    pipe = ZImagePipeline.from_pretrained(folder, torch_dtype=torch.bfloat16).to("cuda")
    out: dict = {"ready_s": round(time.perf_counter() - t0, 2)}
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        write_lora(pipe.transformer, loras / f"{name}.safetensors", seed)

    def gen(seed: int) -> tuple[float, np.ndarray]:
        torch.cuda.synchronize()
        t = time.perf_counter()
        image = pipe(prompt=PROMPT, height=1024, width=1024, num_inference_steps=9, guidance_scale=0.0,
                     generator=torch.Generator("cuda").manual_seed(seed)).images[0]
        torch.cuda.synchronize()
        return time.perf_counter() - t, np.asarray(image).astype(np.int16)

    def timed(fn) -> float:
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return round(time.perf_counter() - t, 3)

    _, base = gen(0)
    out["none_s_per_image"] = median([gen(s)[0] for s in SEEDS])
    out["load_lora_s"] = timed(lambda: pipe.load_lora_weights(str(loras / "a.safetensors"), adapter_name="a"))
    for name in ("b", "c"):
        pipe.load_lora_weights(str(loras / f"{name}.safetensors"), adapter_name=name)
    out["set_adapters_s"] = timed(lambda: pipe.set_adapters(["a"], [1.0]))
    first, img_a = gen(0)
    out["one_lora_s_per_image"] = median([gen(s)[0] for s in SEEDS])
    out["first_image_after_switch_s"] = round(first, 3)
    out["switch_s"] = round(out["set_adapters_s"] + max(0.0, first - out["one_lora_s_per_image"]), 3)
    pipe.set_adapters(["a", "b", "c"], [1.0, 0.8, 0.6])
    gen(0)
    out["three_loras_s_per_image"] = median([gen(s)[0] for s in SEEDS])
    pipe.set_adapters(["a"], [0.0])
    _, zero = gen(0)
    out["strength0_max_pixel_diff"] = int(np.abs(zero - base).max())
    pipe.set_adapters(["a"], [1.0])
    out["fuse_lora_s"] = timed(lambda: pipe.fuse_lora(adapter_names=["a"], lora_scale=1.0))
    gen(0)
    out["one_lora_fused_s_per_image"] = median([gen(s)[0] for s in SEEDS])
    out["unfuse_and_unload_s"] = timed(lambda: (pipe.unfuse_lora(), pipe.unload_lora_weights()))
    _, back = gen(0)
    out["back_to_none_max_pixel_diff"] = int(np.abs(back - base).max())
    out["lora_changes_picture_mean_abs"] = round(float(np.abs(img_a - base).mean()), 2)
    out["one_lora_ratio"] = round(out["one_lora_s_per_image"] / out["none_s_per_image"], 3)
    out["three_loras_ratio"] = round(out["three_loras_s_per_image"] / out["none_s_per_image"], 3)
    out["peak_vram_gb"] = peak_gb()
    return out


def run_ours(folder: str, loras: Path, budget_gb: float) -> dict:
    import torch
    from torch._dynamo.utils import counters

    from zimage.config import Settings
    from zimage.engine.manager import PipelineManager
    from zimage.request import GenerationRequest

    settings = Settings(model=folder, outputs_dir="/tmp/lora-out", cache_dir="/tmp/lora-cache", idle_unload_s=0,
                        idle_drop_s=0, lora_dir=str(loras), low_vram=budget_gb > 0,
                        vram_budget=f"{budget_gb:g}" if budget_gb else "auto")
    manager = PipelineManager(settings).start()
    t0 = time.perf_counter()
    manager.ensure_ready(900)
    out: dict = {"ready_s": round(time.perf_counter() - t0, 2), "plan": manager.status().plan}
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        out["lora_modules"] = write_lora(manager._pipe.transformer, loras / f"{name}.safetensors", seed)

    def gen(tail: str, seed: int) -> tuple[float, np.ndarray, float]:
        t = time.perf_counter()
        r = manager.generate(GenerationRequest.from_mapping({"prompt": PROMPT + tail, "seed": seed}), timeout=900)
        return time.perf_counter() - t, np.asarray(r.images[0].image).astype(np.int16), r.seconds

    def steady(tail: str) -> float:
        return median([gen(tail, s)[2] for s in SEEDS])

    def frames() -> int:
        return int(sum(counters["frames"].values())) if "frames" in counters else 0

    _, base, _ = gen("", 0)
    out["none_s_per_image"] = steady("")
    f0 = frames()
    torch.cuda.reset_peak_memory_stats()
    one, three = " <lora:a:1>", " <lora:a:1> <lora:b:0.8> <lora:c:0.6>"
    first_total, img_a, _ = gen(one, 0)             # the first switch also makes the kept copies
    out["first_ever_switch_image_s"] = round(first_total, 3)
    out["one_lora_s_per_image"] = steady(one)
    switches = []
    for tail in (" <lora:b:1>", one, " <lora:c:0.5>", one):
        total, _, _ = gen(tail, 0)
        switches.append(total)
    # the image's own time, measured without a switch, is taken off each switch's first image
    out["switch_s"] = round(float(np.median(switches)) - out["one_lora_s_per_image"], 3)
    out["first_image_after_switch_s"] = median(switches)
    gen(three, 0)
    out["three_loras_s_per_image"] = steady(three)
    _, zero, _ = gen(" <lora:a:0>", 0)
    _, back, _ = gen("", 0)
    out["recompiled_frames_during_switches"] = frames() - f0
    out["one_lora_ratio"] = round(out["one_lora_s_per_image"] / out["none_s_per_image"], 3)
    out["three_loras_ratio"] = round(out["three_loras_s_per_image"] / out["none_s_per_image"], 3)
    out["lora_changes_picture_mean_abs"] = round(float(np.abs(img_a - base).mean()), 2)
    out["strength0_max_pixel_diff"] = int(np.abs(zero - base).max())
    out["back_to_none_max_pixel_diff"] = int(np.abs(back - base).max())
    out["peak_vram_gb_with_loras"] = peak_gb()
    out["kept_copies_gb"] = round((manager._loras._state.saved_bytes if manager._loras._state else 0) / 2**30, 2)
    out["load_count"] = manager.load_count
    return out


def main() -> None:
    case, folder = sys.argv[1], sys.argv[2]
    loras = Path(tempfile.mkdtemp(prefix="loras-"))
    if case == "diffusers":
        out = run_diffusers(folder, loras)
    else:
        out = run_ours(folder, loras, 8.0 if case == "ours_8gib" else 0.0)
    print(json.dumps({"case": case, **out}), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
