"""One way of making a request's images, timed in a fresh process (driven by batch_bench.py).

    python -m bench.batch_probe MODE DIR [--size N] [--images N] [--steps N] [--repeats N]
MODE: one_pass (all the request's images in one pipeline call: generate.run_batch, what the app did)
or per_image (one call per image: generate.run_per_image, what the app does, so that Stop keeps the
finished ones). Both through the app's own code on a plain resident ZImagePipeline (bf16 on CUDA,
float32 on the CPU), with the app's prompt cache, after one untimed run. Prints one JSON line:
the median seconds per image over the repeats.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

PROMPT = "a red fox in the snow, golden hour, photo"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["one_pass", "per_image"])
    p.add_argument("folder")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--steps", type=int, default=9)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    import torch
    from diffusers import ZImagePipeline

    from zimage.engine.generate import run_batch, run_per_image
    from zimage.engine.prompt_cache import PromptCache
    from zimage.request import GenerationRequest

    cuda = torch.cuda.is_available()
    pipe = ZImagePipeline.from_pretrained(a.folder, torch_dtype=torch.bfloat16 if cuda else torch.float32)
    pipe.to("cuda" if cuda else "cpu")
    pipe.set_progress_bar_config(disable=True)
    req = GenerationRequest(prompt=PROMPT, width=a.size, height=a.size, num_inference_steps=a.steps,
                            seed=1, num_images=a.images)
    cache = PromptCache()
    run = run_batch if a.mode == "one_pass" else run_per_image
    stop = (lambda: False) if a.mode == "one_pass" else (lambda i: False)

    def once() -> float:
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        images = run(pipe, [req], stop, encode=cache.embeds)[0]
        if cuda:
            torch.cuda.synchronize()
        assert len(images) == a.images
        return time.perf_counter() - started

    once()                                                   # kernels, allocator, the prompt's embedding
    times = [once() for _ in range(a.repeats)]
    print(json.dumps({"mode": a.mode, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
                      "size": a.size, "images": a.images, "steps": a.steps, "repeats": a.repeats,
                      "s_per_image": round(statistics.median(times) / a.images, 4),
                      "request_s": [round(t, 3) for t in times],
                      "peak_vram_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                      "torch": torch.__version__}), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
