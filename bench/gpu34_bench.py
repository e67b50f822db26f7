"""Issue 34's figure that bench/process_bench.py and bench/startup_bench.py do not give, on one GPU;
every case a fresh process, plain diffusers beside ours in the same run.

    python -m bench.gpu34_bench DIR --out OUTDIR [--files FILESDIR] [--size 1024] [--steps 8]
                                [--budget-s 540] [--warm-only] [--device cuda:0|cpu] [--keep-fp32]

 1  launch to first image with the DiT stored in fp32 (the official repo's layout; FILESDIR/zimage-fp32,
    written from DIR by bench/gpu34_probe.py fp32: 24.6 GB at full scale, the other parts linked) and
    after the app's bf16 copy of it exists: `webui.py --preload --compile off` (the page and its model
    worker, the first POST /generate; startup_bench.webui) against the plain diffusers script from the
    same folder (startup_probe seed), with the page cache dropped (cold; root only, said in
    caches_dropped) and warm. The copy is made by engine/bf16_copy.make_copy in a process of its own
    (the app makes it in the background after its first load; the launches before it run without one).
    Goals (issue 34): warm <= 0.5x plain, cold <= 0.6x.
The issue's other items with the bf16 folder: 1 (cold and warm) `python -m bench.startup_bench DIR --only
seed,webui_off`; 3 `python -m bench.startup_bench DIR --only webui_off,webui_auto_empty,webui_auto_warm`
(its "images while compiling and compiled-ready" lines); 2, 4 and 5 `python -m bench.process_bench DIR
--size 1024 --steps 8 --repeat 1`. The fp32 folder and its copy (37 GB at full scale) are deleted at the
end unless --keep-fp32. Budget, skips and lines as bench/gpu35_bench.py (bench/budget.py): OUTDIR/gpu34.jsonl.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.budget import Bench, gpu_name, ratio, version
from bench.load_bench import drop_caches
from bench.runner import run_module
from bench.startup_bench import webui

GPU_ESTIMATE_S = {"fp32_write": 90, "seed": 50, "webui": 60, "copy": 60}
GOALS = {True: 0.6, False: 0.5}            # launch to first image vs plain diffusers: cold, warm


def seed(b: Bench, name: str, folder: Path, cold: bool) -> dict:
    timeout = b.admit(1, name, "seed")
    if timeout is None:
        return {}
    dropped = drop_caches() if cold else None
    lines, error, seconds = run_module("bench.startup_probe", ["seed", str(folder), str(b.a.size), str(b.a.steps)],
                                       timeout)
    for line in lines:
        line.update(cold=cold, caches_dropped=dropped, first_image_s=line.get("timeline", {}).get("first image"))
    return b.record(1, name, lines, error, seconds)[-1]


def ours(b: Bench, name: str, folder: Path, cold: bool) -> dict:
    timeout = b.admit(1, name, "webui")
    if timeout is None:
        return {}
    started = time.monotonic()
    cache = tempfile.mkdtemp(prefix="gpu34-cache-")        # the app's cache folder (compile off: stays empty)
    r = webui(name, str(folder), b.a.size, b.a.steps, cache, cold, 0, deadline_s=timeout)
    shutil.rmtree(cache, ignore_errors=True)
    r.pop("log_tail", None) if "error" not in r else None
    return b.record(1, name, [r], r.get("error", ""), time.monotonic() - started)[-1]


def item1(b: Bench) -> None:
    a = b.a
    fp32 = Path(a.files) / "zimage-fp32"
    b.case(1, "write_fp32", "bench.gpu34_probe", ["fp32", a.folder, str(fp32)], "fp32_write")
    if not (fp32 / "model_index.json").exists():
        b.emit({"item": 1, "skipped": "no fp32 folder (see the write_fp32 line)"})
        return
    temperatures = [False] if a.warm_only else [True, False]
    runs: dict[tuple[str, bool], dict] = {}
    shutil.rmtree(fp32 / ".zimage-bf16", ignore_errors=True)
    for cold in temperatures:
        tag = "cold" if cold else "warm"
        runs["seed", cold] = seed(b, f"seed_fp32_{tag}", fp32, cold)
        shutil.rmtree(fp32 / ".zimage-bf16", ignore_errors=True)        # a launch before the copy exists
        runs["fp32", cold] = ours(b, f"ours_fp32_{tag}", fp32, cold)
    shutil.rmtree(fp32 / ".zimage-bf16", ignore_errors=True)
    b.case(1, "make_copy", "bench.gpu34_probe", ["copy", str(fp32)], "copy")
    for cold in temperatures:
        runs["copy", cold] = ours(b, f"ours_copy_{'cold' if cold else 'warm'}", fp32, cold)
    for cold in temperatures:
        base = runs["seed", cold].get("first_image_s")
        line = {"item": 1, "figure": f"launch to first image, fp32 DiT on disk, {'cold' if cold else 'warm'} page "
                                     "cache (s)", "seed_first_image_s": base, "goal": f"<= {GOALS[cold]}x plain"}
        for key in ("fp32", "copy"):
            first = runs[key, cold].get("first_image_s")
            line[f"ours_{key}_first_image_s"] = first
            line[f"ours_{key}_vs_seed"] = ratio(first, base)
            line[f"ours_{key}_page_200_s"] = runs[key, cold].get("page_200_s")
        b.emit(line)
    if not a.keep_fp32:
        shutil.rmtree(fp32, ignore_errors=True)


def parse(argv: list[str] | None = None):
    p = argparse.ArgumentParser(prog="python -m bench.gpu34_bench")
    p.add_argument("folder")
    p.add_argument("--out", required=True, help="gpu34.jsonl goes here")
    p.add_argument("--files", default="", help="the fp32 folder goes here (default: --out)")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--budget-s", type=float, default=540)
    p.add_argument("--warm-only", action="store_true")
    p.add_argument("--keep-fp32", action="store_true")
    p.add_argument("--device", default="cuda:0" if shutil.which("nvidia-smi") else "cpu")
    a = p.parse_args(argv)
    a.folder = str(Path(a.folder).resolve())
    a.files = str(Path(a.files or a.out).resolve())
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    b = Bench(a, "gpu34", GPU_ESTIMATE_S)
    b.emit({"figure": "machine", "date": time.strftime("%Y-%m-%d %H:%M"), "gpu": gpu_name(), "device": a.device,
            "python": sys.version.split()[0],
            **{p: version(p) for p in ("torch", "diffusers", "transformers", "gradio")},
            "folder": a.folder, "size": a.size, "steps": a.steps, "budget_s": a.budget_s})
    item1(b)
    b.emit({"figure": "budget", "spent_s": round(time.monotonic() - b.t0, 1), "left_s": round(b.left(), 1)})
    b.log.close()


if __name__ == "__main__":
    main()
