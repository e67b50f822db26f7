"""LoRA on the full-size model through the app (a first GPU check, not yet the issue's full bench):
a random rank-32 LoRA (diffusers keys) over every attention and feed-forward Linear of the blocks,
written for the loaded transformer's shapes. The app resident with compiled blocks: s/image without
a LoRA, with one, time to switch to another and back to none, strength 0 against none, and whether
a switch recompiles (torch._dynamo's frame counter). One JSON line.

    python -m bench.lora_probe DIR
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


def write_lora(transformer, path: Path, seed: int, rank: int = 32) -> int:
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


def main() -> None:
    folder = sys.argv[1]
    from torch._dynamo.utils import counters

    from zimage.config import Settings
    from zimage.engine.manager import PipelineManager
    from zimage.request import GenerationRequest

    loras = Path(tempfile.mkdtemp(prefix="loras-"))
    settings = Settings(model=folder, outputs_dir="/tmp/lora-out", cache_dir="/tmp/lora-cache", idle_unload_s=0,
                        idle_drop_s=0, lora_dir=str(loras))
    manager = PipelineManager(settings).start()
    t0 = time.perf_counter()
    manager.ensure_ready(900)
    out: dict = {"ready_s": round(time.perf_counter() - t0, 2), "plan": manager.status().plan}
    out["lora_modules"] = write_lora(manager._pipe.transformer, loras / "a.safetensors", 1)
    write_lora(manager._pipe.transformer, loras / "b.safetensors", 2)

    def gen(prompt_tail: str, seed: int = 0):
        t = time.perf_counter()
        r = manager.generate(GenerationRequest.from_mapping({"prompt": PROMPT + prompt_tail, "seed": seed}), timeout=900)
        return time.perf_counter() - t, np.asarray(r.images[0].image).astype(np.int16), r.seconds

    def frames() -> int:
        return int(sum(counters["frames"].values())) if "frames" in counters else 0

    _, base, _ = gen("")
    steady = [gen("", s)[2] for s in (1, 2, 3)]
    out["none_s_per_image"] = round(float(np.median(steady)), 3)
    f0 = frames()
    first_a, img_a, _ = gen(" <lora:a:1>")
    out["first_image_after_switch_to_a_s"] = round(first_a, 3)
    with_a = [gen(" <lora:a:1>", s)[2] for s in (1, 2, 3)]
    out["one_lora_s_per_image"] = round(float(np.median(with_a)), 3)
    out["one_lora_ratio"] = round(out["one_lora_s_per_image"] / out["none_s_per_image"], 3)
    first_b, _, _ = gen(" <lora:b:0.8>")
    out["first_image_after_switch_to_b_s"] = round(first_b, 3)
    _, zero, _ = gen(" <lora:a:0>")
    _, back, _ = gen("")
    out["recompiled_frames_during_switches"] = frames() - f0
    out["lora_changes_picture_mean_abs"] = round(float(np.abs(img_a - base).mean()), 2)
    out["strength0_max_pixel_diff"] = int(np.abs(zero - base).max())
    out["back_to_none_max_pixel_diff"] = int(np.abs(back - base).max())
    out["load_count"] = manager.load_count
    print(json.dumps(out), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
