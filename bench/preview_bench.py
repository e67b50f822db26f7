"""Live preview cost (issue 18): s/image with the page's latent preview polled every 0.2 s against
without, side by side in one process, rounds alternating so drift hits both alike. JSON lines out.

    python -m bench.preview_bench DIR [--size N] [--steps N] [--rounds N] [--poll-s S]
DIR is a Z-Image folder (the full-scale random checkpoint of shared/anchors/make_random_zimage.py
on the GPU; the tiny model on a CPU, to check the script). The poller does what the page's preview
timer does on the server: read the running job and call manager.preview_png(job) (the latent the
runner already copied to the CPU after each step, mapped to RGB, PNG-encoded). It adds no GPU
work, so its cost is the poller's CPU time and GIL share beside the worker thread.
"""
from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from concurrent.futures import wait

PROMPT = "a red fox in the snow, golden hour, photo"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=9)
    p.add_argument("--rounds", type=int, default=5, help="images per mode, alternating")
    p.add_argument("--poll-s", type=float, default=0.2)
    a = p.parse_args()

    import torch

    from zimage.config import Settings
    from zimage.engine.manager import PipelineManager
    from zimage.request import GenerationRequest

    cuda = torch.cuda.is_available()
    settings = Settings(model=a.folder, outputs_dir="/tmp/preview-bench-out", cache_dir="/tmp/speed-cache",
                        idle_unload_s=0, idle_drop_s=0, device="auto" if cuda else "cpu")
    manager = PipelineManager(settings).start()
    manager.ensure_ready(900)

    def image(seed: int, poll: bool) -> tuple[float, list[float]]:
        """One image's seconds (the manager's own figure), and each preview's seconds when polled."""
        req = GenerationRequest(prompt=f"{PROMPT}, take {seed}", seed=seed, width=a.size, height=a.size,
                                num_inference_steps=a.steps)
        job = manager.submit(req)
        previews: list[float] = []

        def poller() -> None:
            while not job.future.done():
                t = time.perf_counter()
                if manager.preview_png(job) is not None:
                    previews.append(time.perf_counter() - t)
                wait([job.future], timeout=a.poll_s)       # the page's timer period, ended by the job
        thread = threading.Thread(target=poller, daemon=True) if poll else None
        if thread:
            thread.start()
        result = job.future.result(900)
        if thread:
            thread.join()
        return result.seconds_per_image, previews

    image(0, False)                                   # warm-up (compile, caches), not counted
    times: dict[str, list[float]] = {"off": [], "polled": []}
    preview_s: list[float] = []
    for i in range(a.rounds):
        for mode in (("off", "polled") if i % 2 == 0 else ("polled", "off")):
            s, previews = image(1 + 2 * i + (mode == "polled"), mode == "polled")
            times[mode].append(s)
            preview_s += previews
    base = {"machine": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
            "size": a.size, "steps": a.steps, "rounds": a.rounds, "poll_s": a.poll_s}
    for mode, ts in times.items():
        print(json.dumps({**base, "figure": f"s_per_image_preview_{mode}", "s_per_image": round(statistics.median(ts), 4),
                          "all_s": [round(t, 4) for t in ts]}), flush=True)
    off, polled = statistics.median(times["off"]), statistics.median(times["polled"])
    step_s = off / a.steps
    print(json.dumps({**base, "figure": "preview_cost", "baseline_s_per_image": round(off, 4),
                      "polled_s_per_image": round(polled, 4), "ratio": round(polled / off, 4),
                      "previews_made": len(preview_s),
                      "preview_png_ms_median": round(1000 * statistics.median(preview_s), 3) if preview_s else None,
                      "preview_png_vs_step": round(statistics.median(preview_s) / step_s, 4) if preview_s else None}),
          flush=True)
    manager.close()


if __name__ == "__main__":
    main()
