"""Two processes (issue 30): the page against a bare Gradio app, launch to first image against the
plain diffusers script, a worker's restart after kill -9, and the memory "Unload VRAM and RAM" gives
back. Every launch is a fresh process, the baselines in the same run, JSON lines out.

    python -m bench.process_bench DIR [--size 512] [--steps 1] [--repeat 3] [--inprocess]

DIR is a Z-Image folder (the tiny model on the CPU: `python -m zimage.cli make-tiny-model DIR`).
Figures (medians of --repeat, the cases interleaved so load drifts hit all alike):
  page_200          `webui.py --preload` (the default: the model in a worker process) until "/" answers 200,
                    against bare_gradio (a one-textbox Gradio app); target <= 1.2x
  first_image       launch to the first POST /generate's answer, against seed (import, from_pretrained,
                    first image in one script); target <= 1.15x
  restart           kill -9 of the worker with the model loaded, to the next /generate's 200 (sent at once:
                    it waits in the page for the new worker); target <= 30 s
  unload_memory     RSS of the worker and the page after an image, and after POST /unload {"to": "none"}
--inprocess adds the same launch with --backend inprocess (the one-process app) to the table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import psutil
import requests

from bench.startup_bench import HERE, bare_gradio, free_port, median, ratio, run_probe, webui

TARGETS = {"page_200_vs_bare_gradio": 1.2, "first_image_vs_seed": 1.15, "restart_s": 30.0}


def wait_up(url: str, deadline_s: float = 300) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/health", timeout=5).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the app did not answer")


def gpu_used_mb() -> int | None:
    """The GPU memory in use on the machine (every process), from nvidia-smi; None without one."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30)
        return int(out.stdout.split()[0]) if out.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def restart_and_memory(folder: str, size: int, steps: int) -> dict:
    """One app: an image, kill -9 of its worker, the next image; then the memory before and after
    an unload to "none"."""
    port, outputs = free_port(), tempfile.mkdtemp(prefix="zimage-process-out-")
    url = f"http://127.0.0.1:{port}"
    body = {"prompt": "warmup", "width": size, "height": size, "num_inference_steps": steps, "seed": 1}
    log = open(os.path.join(outputs, "server.log"), "w")
    proc = subprocess.Popen([sys.executable, "webui.py", "--model", folder, "--preload", "--port", str(port),
                             "--outputs", outputs, "--compile", "off", "--idle-unload", "0", "--idle-drop", "0"],
                            cwd=HERE, stdout=log, stderr=subprocess.STDOUT)
    out: dict = {"case": "restart_and_memory"}
    try:
        wait_up(url)
        requests.post(url + "/generate", json=body, timeout=600).raise_for_status()
        page = psutil.Process(proc.pid)
        worker = page.children()[0]
        out["rss_after_image_mb"] = {"worker": worker.memory_info().rss >> 20, "page": page.memory_info().rss >> 20}
        out["gpu_used_after_image_mb"] = gpu_used_mb()
        killed = time.monotonic()
        worker.kill()
        r = requests.post(url + "/generate", json=body, timeout=600)
        out["restart_to_next_image_s"] = round(time.monotonic() - killed, 3)
        out["restart_http_status"] = r.status_code
        worker = page.children()[0]
        before = worker.memory_info().rss
        requests.post(url + "/unload", json={"to": "none"}, timeout=120).raise_for_status()
        time.sleep(2.0)                     # the bare worker's own imports settle
        new = page.children()[0]
        out["rss_after_unload_none_mb"] = {"worker": new.memory_info().rss >> 20, "page": page.memory_info().rss >> 20,
                                           "worker_before": before >> 20, "worker_replaced": new.pid != worker.pid}
        out["gpu_used_after_unload_none_mb"] = gpu_used_mb()
    except Exception as e:  # noqa: BLE001 - the figure is missing, the run goes on
        out["error"] = f"{e.__class__.__name__}: {e}"
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--inprocess", action="store_true", help="also time --backend inprocess (the one-process app)")
    a = p.parse_args()
    folder = os.path.abspath(a.dir)
    print(json.dumps({"figure": "machine", "python": platform.python_version(), "cpus": os.cpu_count(),
                      "date": time.strftime("%Y-%m-%d %H:%M"), "load_avg": os.getloadavg()[0],
                      "size": a.size, "steps": a.steps, "repeat": a.repeat}), flush=True)
    cache = tempfile.mkdtemp(prefix="zimage-process-cache-")
    runs: dict[str, list[dict]] = {}
    cases = ["seed", "bare_gradio", "webui_local"] + (["webui_inprocess"] if a.inprocess else [])
    for _ in range(a.repeat):
        for case in cases:
            if case == "seed":
                r = run_probe(["seed", folder, str(a.size), str(a.steps)], cold=False)
                r["first_image_s"] = r.get("timeline", {}).get("first image")
            elif case == "bare_gradio":
                r = bare_gradio(cold=False)
            else:
                extra = ("--backend", case.split("_", 1)[1])
                r = webui(case, folder, a.size, a.steps, cache, cold=False, steady=0, extra=extra)
            r["case"] = case
            r.pop("log_tail", None) if "error" not in r else None
            print(json.dumps(r), flush=True)
            runs.setdefault(case, []).append(r)

    def fig(case: str, key: str):
        return median([r.get(key) for r in runs.get(case, [])])

    seed, bare = fig("seed", "first_image_s"), fig("bare_gradio", "page_200_s")
    for case in cases[2:]:
        page, image = fig(case, "page_200_s"), fig(case, "first_image_s")
        print(json.dumps({"figure": f"page 200 and launch to first image over HTTP, medians of {a.repeat} (s)",
                          "case": case, "page_200_s": page, "bare_gradio_page_200_s": bare,
                          "page_200_vs_bare_gradio": ratio(page, bare), "first_image_s": image,
                          "seed_first_image_s": seed, "first_image_vs_seed": ratio(image, seed),
                          "targets": TARGETS}), flush=True)
    restart = restart_and_memory(folder, a.size, a.steps)
    restart["figure"] = "worker restart after kill -9 (s) and RSS around an unload to none (MiB)"
    restart["within_target"] = (restart.get("restart_to_next_image_s") or 1e9) <= TARGETS["restart_s"]
    print(json.dumps(restart), flush=True)


if __name__ == "__main__":
    main()
