"""Load benchmark: plain diffusers (the seed article's method) and zimage side by side, one run.

    python -m bench.load_bench DIR [--app-only]

DIR is a full-scale Z-Image folder (e.g. the random checkpoint of shared/anchors/make_random_zimage.py).
Each measurement runs in a fresh process; "cold" drops the page cache first (root only).
Prints JSON lines: every probe's raw figures, then one line per figure with ours, the baselines
and the ratios.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def drop_caches() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


def probe(mode: str, folder: str, *extra: str, cold: bool = False) -> dict:
    dropped = drop_caches() if cold else None
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "bench.load_probe", mode, folder, *extra], cwd=HERE,
                         capture_output=True, text=True, timeout=900)
    wall = round(time.perf_counter() - t0, 3)
    if os.environ.get("OUT") and mode == "ours_app":
        with open(os.path.join(os.environ["OUT"], f"{mode}{'_cold' if cold else ''}.log"), "w") as fh:
            fh.write(res.stderr[-200_000:])
    if res.returncode != 0:
        out = {"mode": mode, "error": res.stderr[-2000:]}
    else:
        out = json.loads(res.stdout.strip().splitlines()[-1])
    out.update(cold=cold, caches_dropped=dropped, wall_s=wall)
    print(json.dumps(out), flush=True)
    return out


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def main() -> None:
    folder = sys.argv[1]
    import torch

    meta = {"figure": "machine", "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
            "checkpoint_gb": round(sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder)
                                       for f in fs if f.endswith(".safetensors")) / 1e9, 2)}
    print(json.dumps(meta), flush=True)
    if "--app-only" in sys.argv:       # just the cold process-start pair, for diagnosis
        probe("raw", folder, cold=True)
        probe("ours_app", folder, cold=True)
        return
    warm_raw = probe("raw", folder)
    warm_seed = probe("seed", folder, "--gen")
    warm_ours = probe("ours", folder, "--gen")
    equal = probe("equal", folder)
    cold_raw = probe("raw", folder, cold=True)
    cold_seed = probe("seed", folder, cold=True)
    cold_ours = probe("ours", folder, cold=True)
    cold_app = probe("ours_app", folder, cold=True)
    ckpt = meta["checkpoint_gb"]
    figures = [
        {"figure": "model on GPU, warm page cache (s)", "ours": warm_ours.get("load_s"),
         "seed": warm_seed.get("load_s"), "raw_8_threads": warm_raw.get("load_s"),
         "ratio_vs_raw": ratio(warm_ours.get("load_s"), warm_raw.get("load_s")),
         "ratio_vs_seed": ratio(warm_ours.get("load_s"), warm_seed.get("load_s")), "target": "<= 1.3x raw"},
        {"figure": "model on GPU, cold page cache (s)", "ours": cold_ours.get("load_s"),
         "seed": cold_seed.get("load_s"), "raw_8_threads": cold_raw.get("load_s"),
         "ratio_vs_raw": ratio(cold_ours.get("load_s"), cold_raw.get("load_s")),
         "ratio_vs_seed": ratio(cold_ours.get("load_s"), cold_seed.get("load_s")), "target": "<= 1.15x raw"},
        {"figure": "process start to model ready, cold (s)", "ours_app": cold_app.get("wall_s"),
         "ours_app_includes": "prefetch, imports, fast load, 1-step warm-up image; no web server",
         "seed_process": cold_seed.get("wall_s"), "raw_cold_read": cold_raw.get("load_s"),
         "ours_minus_raw_s": round(cold_app["wall_s"] - cold_raw["load_s"], 3) if "load_s" in cold_raw else None,
         "ratio_vs_seed": ratio(cold_app.get("wall_s"), cold_seed.get("wall_s")), "target": "<= raw + 3 s"},
        {"figure": "back on GPU after idle unload (s)", "ours_pinned": warm_ours.get("reload_from_pinned_s"),
         "pageable_to_cuda": warm_ours.get("reload_from_pageable_s"),
         "ours_unload_to_pinned_s": warm_ours.get("unload_to_pinned_s"), "seed_reload_from_disk": warm_seed.get("load_s"),
         "ratio_vs_seed": ratio(warm_ours.get("reload_from_pinned_s"), warm_seed.get("load_s")), "target": "<= 0.6 s"},
        {"figure": "peak host RAM while loading (GB)", "ours": warm_ours.get("peak_rss_gb"),
         "ours_before_load": warm_ours.get("rss_before_gb"), "seed": warm_seed.get("peak_rss_gb"),
         "seed_before_load": warm_seed.get("rss_before_gb"), "checkpoint_gb": ckpt,
         "ours_growth_fraction_of_ckpt": round((warm_ours["peak_rss_gb"] - warm_ours["rss_before_gb"]) / ckpt, 3)
         if "peak_rss_gb" in warm_ours else None, "target": "<= 25% of the checkpoint"},
        {"figure": "first image after ready, 1024x1024 9 steps (s)", "ours_first": warm_ours.get("first_image_s"),
         "ours_steady": warm_ours.get("steady_image_s"), "seed_first": warm_seed.get("first_image_s"),
         "seed_steady": warm_seed.get("steady_image_s"),
         "ratio_first_vs_steady": ratio(warm_ours.get("first_image_s"), warm_ours.get("steady_image_s")),
         "ours_warmup_in_preload_s": warm_ours.get("warmup_s"),
         "target": "<= 1.5x steady"},
        {"figure": "fast path equals from_pretrained", "tensors_checked": equal.get("tensors_checked"),
         "tensors_mismatched": equal.get("tensors_mismatched")},
    ]
    for f in figures:
        print(json.dumps(f), flush=True)


if __name__ == "__main__":
    main()
