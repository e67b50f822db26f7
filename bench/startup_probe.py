"""One launch measured in a fresh process (driven by startup_bench.py).

    python -m bench.startup_probe seed DIR SIZE STEPS      plain diffusers: import, from_pretrained, .to(device), image
    python -m bench.startup_probe manager DIR SIZE STEPS [--compile auto|off] [--cache-dir D] [--steady N]
    python -m bench.startup_probe bare_gradio PORT         a one-textbox Gradio app (the page baseline)

Prints one JSON line whose timeline is {event: seconds since this process started}.
"""
from __future__ import annotations

import json
import os
import sys
import time


def since_start() -> float:
    from zimage.startup import since_start_s

    return round(since_start_s(), 3)


def seed(folder: str, size: int, steps: int) -> dict:
    t = {}
    import torch
    from diffusers import ZImagePipeline
    t["imports done"] = since_start()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    pipe = ZImagePipeline.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
    t["weights read and built"] = since_start()
    pipe.to(device)
    if device == "cuda":
        torch.cuda.synchronize()
    t["on device"] = since_start()
    pipe.set_progress_bar_config(disable=True)
    pipe(prompt="warmup", width=size, height=size, num_inference_steps=steps, guidance_scale=0.0,
         generator=torch.Generator("cpu").manual_seed(1))
    if device == "cuda":
        torch.cuda.synchronize()
    t["first image"] = since_start()
    return {"case": "seed", "device": device, "timeline": t}


def manager(folder: str, size: int, steps: int, args: list[str]) -> dict:
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(relativeCreated)7.0f ms %(threadName)s %(name)s: %(message)s")
    from zimage import startup
    from zimage.config import Settings
    from zimage.engine.manager import PipelineManager
    from zimage.request import GenerationRequest

    opt = dict(zip(args[::2], args[1::2]))
    settings = Settings(model=folder, outputs_dir="/tmp/zimage-startup-bench-out", idle_unload_s=0, idle_drop_s=0,
                        compile=opt.get("--compile", "auto"), cache_dir=opt.get("--cache-dir", ""))
    m = PipelineManager(settings).start()
    req = GenerationRequest(prompt="warmup", width=size, height=size, num_inference_steps=steps, seed=1)
    m.generate(req, timeout=900)
    startup.mark(startup.FIRST_IMAGE)
    steady = steady_images(lambda: m.generate(req, timeout=900).seconds_per_image,
                           lambda: startup.COMPILING in startup.timeline_dict(),
                           lambda: bool(startup.timeline_dict().get(startup.COMPILED)
                                        or startup.timeline_dict().get(startup.COMPILE_FAILED)),
                           int(opt.get("--steady", "2")))
    out = {"case": "manager", "device": m.status().device, "timeline": startup.timeline_dict(), **steady}
    print(json.dumps(out), flush=True)
    os._exit(0)      # skip the teardown of the weights: not part of the figure


def steady_images(one_image, compiling, compiled, n: int, timeout_s: float = 600) -> dict:
    """s/image eager (before the swap: while a background compile runs) and, when one runs, after
    it; the fastest of `n` each, and every image's time (`*_images_s`)."""
    eager = [one_image() for _ in range(n)]
    out = {"steady_eager_s": min(eager, default=None), "eager_images_s": eager}
    if compiling():
        deadline = time.monotonic() + timeout_s
        while not compiled() and time.monotonic() < deadline:
            time.sleep(0.2)
        after = [one_image() for _ in range(n)]
        out.update(steady_compiled_s=min(after, default=None), compiled_images_s=after)
    return out


def bare_gradio(port: int) -> None:
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr

    with gr.Blocks() as demo:
        gr.Textbox(label="prompt")
    demo.launch(server_name="127.0.0.1", server_port=port, ssr_mode=False, prevent_thread_lock=False)


def main() -> None:
    mode = sys.argv[1]
    if mode == "bare_gradio":
        bare_gradio(int(sys.argv[2]))
        return
    folder, size, steps = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if mode == "seed":
        print(json.dumps(seed(folder, size, steps)), flush=True)
        os._exit(0)
    manager(folder, size, steps, sys.argv[5:])


if __name__ == "__main__":
    main()
