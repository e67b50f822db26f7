"""Stop to idle, measured in a fresh process (driven by stop_bench.py).

    python -m bench.stop_probe MODE DIR [--size N] [--images N] [--steps N] [--stop-after K] [--code DIR]
MODE: diffusers (plain ZImagePipeline, resident, stopped through its own `_interrupt` flag: it still
decodes the half-denoised latents, the seed article's method) or ours (the app's PipelineManager,
stopped with `cancel()` as the page's Stop does). The user presses Stop once step K has ended; the
figure is the time from that press until the GPU is free (the pipeline call returned, the app's
worker idle) and, for ours, until the next request's first step has run. `--code DIR` imports
`zimage` from DIR first (an older tree, for a before/after figure). Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

PROMPT = "a red fox in the snow, golden hour, photo"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["diffusers", "ours"])
    p.add_argument("folder")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--steps", type=int, default=9)
    p.add_argument("--stop-after", type=int, default=3, help="Stop is pressed once this step has ended")
    p.add_argument("--code", default="", help="import zimage from this folder (a before figure)")
    a = p.parse_args()
    if a.code:
        sys.path.insert(0, os.path.abspath(a.code))
    import torch

    cuda = torch.cuda.is_available()
    out: dict = {"mode": a.mode, "code": a.code or "this tree", "size": a.size, "images": a.images,
                 "steps": a.steps, "stop_after_step": a.stop_after,
                 "device": torch.cuda.get_device_name(0) if cuda else "cpu"}
    if a.mode == "diffusers":
        out.update(plain_diffusers(a, cuda))
    else:
        out.update(ours(a))
    print(json.dumps(out), flush=True)
    os._exit(0)


def plain_diffusers(a, cuda: bool) -> dict:
    import torch
    from diffusers import ZImagePipeline

    pipe = ZImagePipeline.from_pretrained(a.folder, torch_dtype=torch.bfloat16 if cuda else torch.float32)
    pipe = pipe.to("cuda" if cuda else "cpu")
    pipe.set_progress_bar_config(disable=True)
    pressed = threading.Event()
    marks: dict = {"step": 0}

    def on_step_end(pipeline, step, _t, kwargs):
        marks["step"] = step + 1
        if pressed.is_set():
            pipeline._interrupt = True      # diffusers' own flag: the loop ends, the VAE still decodes
        return kwargs

    def press_stop() -> None:               # the user, watching the steps as the app's page does
        while marks["step"] < a.stop_after:
            time.sleep(0.0005)
        marks["stop"] = time.perf_counter()
        pressed.set()

    def run(n: int, steps: int, callback=None):
        pipe(prompt=[PROMPT] * n, width=a.size, height=a.size, num_inference_steps=steps, guidance_scale=0.0,
             generator=torch.Generator("cpu").manual_seed(0), callback_on_step_end=callback)
        if cuda:
            torch.cuda.synchronize()

    run(1, 1)                                # warm-up
    t = time.perf_counter()
    run(a.images, a.steps)
    full = time.perf_counter() - t
    watcher = threading.Thread(target=press_stop)
    watcher.start()
    run(a.images, a.steps, on_step_end)
    idle = time.perf_counter()
    return {"full_call_s": round(full, 3), "stop_to_idle_s": round(idle - marks["stop"], 3)}


def ours(a) -> dict:
    from zimage.config import Settings
    from zimage.engine.manager import PipelineManager
    from zimage.errors import Cancelled
    from zimage.request import GenerationRequest

    settings = Settings(model=a.folder, outputs_dir="/tmp/stop-out", cache_dir="/tmp/stop-cache", idle_unload_s=0,
                        idle_drop_s=0, compile="off")
    manager = PipelineManager(settings).start()
    manager.ensure_ready(900)
    req = GenerationRequest(prompt=PROMPT, width=a.size, height=a.size, num_inference_steps=a.steps,
                            num_images=a.images, seed=0)
    t = time.perf_counter()
    manager.generate(req, timeout=900)
    full = time.perf_counter() - t

    job = manager.submit(req)
    while job.step < a.stop_after and not job.future.done():
        time.sleep(0.0005)
    stop = time.perf_counter()
    manager.cancel()
    nxt = manager.submit(GenerationRequest(prompt=PROMPT + ", again", width=a.size, height=a.size,
                                           num_inference_steps=a.steps, seed=1))
    try:
        job.future.result(900)
        outcome = "finished"
    except Cancelled:
        outcome = "cancelled"
    answered = time.perf_counter()
    while nxt.step < 1 and not nxt.future.done():
        time.sleep(0.0005)
    next_step = time.perf_counter()
    nxt.future.result(900)
    manager.close()
    return {"full_call_s": round(full, 3), "outcome": outcome, "stop_to_idle_s": round(answered - stop, 3),
            "stop_to_next_first_step_s": round(next_step - stop, 3)}


if __name__ == "__main__":
    main()
