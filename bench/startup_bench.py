"""Launch to first image: the seed method against ours, every case a fresh process, one run.

    python -m bench.startup_bench DIR [--size 512] [--steps 1] [--only CASE,CASE] [--repeat N]
    python -m bench.startup_bench DIR --cpu-targets [--tree OTHER_CHECKOUT]     issue 19's CPU targets

--cpu-targets is `--only seed,webui_off,bare_gradio --repeat 3 --warm-only`, ending in one line with both
ratios against their targets (medians of 3, the cases interleaved so load drifts hit all alike). --tree
adds webui_off_tree: the same launch from another checkout (the code before a change), in the same run.

DIR is a Z-Image folder (the tiny model on the CPU, the full-scale random checkpoint on the GPU).
Cases, each with the page cache dropped ("cold", root only; said in `caches_dropped`) and warm:
  seed              plain diffusers script: import, from_pretrained, .to(device), first image
  webui_off         `webui.py --model DIR --preload --compile off`; the first image by the seed's
                    POST /generate, sent as soon as the port accepts a connection; page_200_s is the
                    page itself (the starting page before it answers 503: first_answer_s)
  webui_auto_empty  the same, compile auto with an empty compile cache (GPU only)
  webui_auto_warm   the same, compile auto with the cache the previous case left (GPU only)
                    (compile auto with `--compile-process auto` (not the default): in a process of its own,
                    engine/aot_compile; the warm case loads the package the empty one left)
  webui_thread_empty  webui_auto_empty with `--compile-process off`: the in-thread compile, its own cache
  webui_thread_warm   the same with the cache webui_thread_empty left (GPU only)
  manager           PipelineManager without the web server (compile auto, an empty compile cache)
  manager_warm      the same with the compile cache (and cache artifacts) the previous case left
  bare_gradio       a one-textbox Gradio app: its first 200 is the page's baseline
  webui_off_tree    webui_off from the checkout given with --tree (only with --tree)
Prints JSON lines: the machine, each case's timeline {event: s since process start}, then the
figures with ours, the baseline and the ratio. Timings are figures, never pass/fail.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import requests

from bench.load_bench import drop_caches

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ("seed", "webui_off", "webui_auto_empty", "webui_auto_warm", "webui_thread_empty", "webui_thread_warm",
         "manager", "manager_warm", "bare_gradio", "webui_off_tree")
COMPILING = ("webui_auto_empty", "webui_auto_warm", "webui_thread_empty", "webui_thread_warm")
WHILE_COMPILING_TARGET = 1.15       # issue 30 item 2: images served while compiling, against eager
CPU_TARGETS = {"first_image_vs_seed": 1.3, "page_200_vs_bare_gradio": 1.3}     # issue 19, tiny model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def has_cuda() -> bool:
    done = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                          capture_output=True, text=True)
    return done.stdout.strip() == "True"


def run_probe(args: list[str], cold: bool) -> dict:
    dropped = drop_caches() if cold else None
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "bench.startup_probe", *args], cwd=HERE,
                         capture_output=True, text=True, timeout=1200)
    out = {"wall_s": round(time.perf_counter() - t0, 3)}
    if res.returncode != 0:
        out["error"] = res.stderr[-2000:]
    else:
        out.update(json.loads(res.stdout.strip().splitlines()[-1]))
    out.update(cold=cold, caches_dropped=dropped)
    return out


def poll_page(url: str, started: float, deadline: float, into: dict) -> None:
    """Until "/" answers 200. A refused connection costs the server nothing, so it is retried every
    20 ms; a served "starting" page (503, webui.py --preload) every 100 ms, since each answer is Python
    work under the GIL the launch needs (a browser reloads it once a second)."""
    while time.monotonic() < deadline:
        try:
            r = requests.get(url, timeout=30)
            if r.status_code == 200:
                into["page_200_s"] = round(time.monotonic() - started, 3)
                return
            into.setdefault("first_answer_s", round(time.monotonic() - started, 3))
            time.sleep(0.1)
        except requests.ConnectionError:
            time.sleep(0.02)


def bare_gradio(cold: bool) -> dict:
    dropped = drop_caches() if cold else None
    port = free_port()
    out: dict = {"case": "bare_gradio", "cold": cold, "caches_dropped": dropped}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "bench.startup_probe", "bare_gradio", str(port)], cwd=HERE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        poll_page(f"http://127.0.0.1:{port}/", started, started + 300, out)
    finally:
        proc.kill()
        proc.wait()
    return out


def webui(case: str, folder: str, size: int, steps: int, cache_dir: str, cold: bool, steady: int,
          root: str = HERE, extra: tuple = (), deadline_s: float = 900) -> dict:
    """The real server as a user starts it (from the checkout `root`, with `extra` arguments); the
    client sends the seed's /generate at once. Stopped after `deadline_s`."""
    dropped = drop_caches() if cold else None
    port = free_port()
    compile_ = "auto" if case in COMPILING else "off"
    process = "off" if case.startswith("webui_thread") else "auto"
    outputs = tempfile.mkdtemp(prefix="zimage-startup-out-")
    cmd = [sys.executable, "webui.py", "--model", folder, "--preload", "--port", str(port), "--outputs", outputs,
           "--cache-dir", cache_dir, "--compile", compile_, "--compile-process", process, "--idle-unload", "0",
           "--idle-drop", "0", *extra]
    out: dict = {"case": case, "cold": cold, "caches_dropped": dropped, "compile": compile_, "compile_process": process}
    url = f"http://127.0.0.1:{port}"
    body = {"prompt": "warmup", "width": size, "height": size, "num_inference_steps": steps, "seed": 1}
    log = open(os.path.join(outputs, "server.log"), "w")
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    deadline = started + deadline_s
    page = threading.Thread(target=poll_page, args=(url + "/", started, deadline, out), daemon=True)
    page.start()
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = requests.post(url + "/generate", json=body, timeout=max(1.0, deadline - time.monotonic()))
                break
            except requests.ConnectionError:
                time.sleep(0.02)
        else:
            raise RuntimeError(f"server ended with {proc.returncode}")
        out["first_image_s"] = round(time.monotonic() - started, 3)
        out["http_status"] = r.status_code
        if r.status_code == 200:
            out["png_bytes"] = len(base64.b64decode(r.json()["images"][0]))
        page.join(max(0.0, deadline - time.monotonic()))

        def health() -> dict:
            return requests.get(url + "/health", timeout=30).json()

        def one_image() -> float:
            return requests.post(url + "/generate", json=body, timeout=900).json()["seconds_per_image"]
        from bench.startup_probe import steady_images

        out.update(steady_images(one_image, lambda: "compiling in the background" in health().get("startup", {}),
                                 lambda: any(k in health().get("startup", {}) for k in
                                             ("compiled blocks in use", "compile failed")), steady))
        out["timeline"] = health().get("startup", {})
    except Exception as e:            # the figure is missing, the run goes on
        out["error"] = f"{e.__class__.__name__}: {e}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if "error" in out:
            with open(os.path.join(outputs, "server.log")) as fh:
                out["log_tail"] = fh.read()[-6000:]
        shutil.rmtree(outputs, ignore_errors=True)
    return out


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def median(values: list) -> float | None:
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2] if values else None


def cpu_targets_line(fig, cold: bool, runs: int) -> dict:
    """Issue 19's two CPU figures against their targets, for ours and (with --tree) the other checkout."""
    out: dict = {"figure": f"CPU targets, {'cold' if cold else 'warm'} page cache, medians of {runs}",
                 "targets": CPU_TARGETS, "seed_first_image_s": fig("seed", cold, "first_image_s"),
                 "bare_gradio_page_200_s": fig("bare_gradio", cold, "page_200_s")}
    for case in ("webui_off", "webui_off_tree"):
        image = ratio(fig(case, cold, "first_image_s"), out["seed_first_image_s"])
        page = ratio(fig(case, cold, "page_200_s"), out["bare_gradio_page_200_s"])
        if image is None and page is None:
            continue
        out[case] = {"first_image_s": fig(case, cold, "first_image_s"), "first_image_vs_seed": image,
                     "page_200_s": fig(case, cold, "page_200_s"), "page_200_vs_bare_gradio": page,
                     "within": {k: v is not None and v <= CPU_TARGETS[k] for k, v in
                                (("first_image_vs_seed", image), ("page_200_vs_bare_gradio", page))}}
    return out


def compile_line(case: str, cold: bool, meanwhile: float, eager: float | None, runs: list[dict]) -> dict:
    """Issue 30 item 2's figures for one compiling case: s/image right after launch (while it
    compiles, unless the swap came first), against webui_off's eager s/image in the same run, and
    when the compiled blocks were in use (s since launch, the median of the runs)."""
    ready = median([r.get("timeline", {}).get("compiled blocks in use") for r in runs])
    failed = [r["timeline"]["compile failed"] for r in runs if "compile failed" in r.get("timeline", {})]
    return {"figure": f"images while compiling and compiled-ready, {'cold' if cold else 'warm'} page cache",
            "case": case, "while_compiling_s": meanwhile, "eager_s": eager, "ratio_vs_eager": ratio(meanwhile, eager),
            "target": f"<= {WHILE_COMPILING_TARGET}x eager", "compiled_in_use_after_launch_s": ready,
            "compile_failed_at_s": failed or None,
            "every_image_s": [r.get("eager_images_s") for r in runs]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--size", type=int, default=None, help="image side (default 512 on the CPU, 1024 on a GPU)")
    p.add_argument("--steps", type=int, default=None, help="steps (default 1 on the CPU, 9 on a GPU)")
    p.add_argument("--only", default=",".join(CASES))
    p.add_argument("--repeat", type=int, default=1, help="runs of each case (figures take the median)")
    p.add_argument("--steady", type=int, default=2, help="images for the steady s/image, before and after a swap")
    p.add_argument("--warm-only", action="store_true", help="skip the cold (page cache dropped) runs")
    p.add_argument("--cpu-targets", action="store_true",
                   help="the CPU targets in one command: seed, webui_off, bare_gradio, 3 runs each, warm")
    p.add_argument("--tree", default="", help="another checkout: adds webui_off_tree, its webui.py in the same run")
    a = p.parse_args()
    if a.cpu_targets:
        a.only, a.warm_only = "seed,webui_off,bare_gradio", True
        a.repeat = max(a.repeat, 3)
    if a.tree:
        a.only += ",webui_off_tree"
    tree = os.path.abspath(a.tree) if a.tree else ""
    folder = os.path.abspath(a.dir)
    gpu = has_cuda()
    size, steps = a.size or (1024 if gpu else 512), a.steps or (9 if gpu else 1)
    cases = [c for c in a.only.split(",") if c in CASES and (c != "webui_off_tree" or tree)]
    if not gpu:        # compile auto is off without CUDA: those cases would repeat webui_off
        cases = [c for c in cases if c not in COMPILING]
    meta = {"figure": "machine", "python": platform.python_version(), "cpus": os.cpu_count(), "gpu": gpu,
            "size": size, "steps": steps, "date": time.strftime("%Y-%m-%d %H:%M"), "root": os.geteuid() == 0,
            "load_avg": os.getloadavg()[0], "tree": tree or None}
    print(json.dumps(meta), flush=True)
    compile_cache = tempfile.mkdtemp(prefix="zimage-startup-cache-")     # empty: webui_auto_empty fills it
    manager_cache = tempfile.mkdtemp(prefix="zimage-startup-mcache-")    # the same for manager, manager_warm
    thread_cache = tempfile.mkdtemp(prefix="zimage-startup-tcache-")     # and for webui_thread_*
    results: dict[tuple[str, bool], list[dict]] = {}
    temperatures = [False] if a.warm_only else [True, False]
    for _ in range(a.repeat):
        for cold in temperatures:
            for case in cases:
                if case == "seed":
                    r = run_probe(["seed", folder, str(size), str(steps)], cold)
                elif case in ("manager", "manager_warm"):
                    if case == "manager":
                        shutil.rmtree(manager_cache, ignore_errors=True)
                        os.makedirs(manager_cache)
                    r = run_probe(["manager", folder, str(size), str(steps), "--steady", str(a.steady),
                                   "--cache-dir", manager_cache], cold)
                    r["case"] = case
                elif case == "bare_gradio":
                    r = bare_gradio(cold)
                elif case == "webui_off_tree":
                    r = webui(case, folder, size, steps, compile_cache, cold, a.steady, root=tree)
                else:
                    cache = thread_cache if case.startswith("webui_thread") else compile_cache
                    if case.endswith("_empty"):
                        shutil.rmtree(cache, ignore_errors=True)
                        os.makedirs(cache)
                    r = webui(case, folder, size, steps, cache, cold, a.steady)
                r.setdefault("case", case)
                r["cold"] = cold
                print(json.dumps(r), flush=True)
                results.setdefault((case, cold), []).append(r)

    def fig(case: str, cold: bool, key: str):
        runs = results.get((case, cold), [])
        if key == "first_image_s" and case in ("seed", "manager", "manager_warm"):
            return median([r.get("timeline", {}).get("first image") for r in runs])
        return median([r.get(key) for r in runs])

    for cold in temperatures:
        seed = fig("seed", cold, "first_image_s")
        for case in ("webui_off", "webui_off_tree", *COMPILING, "manager", "manager_warm"):
            ours = fig(case, cold, "first_image_s")
            if ours is not None:
                print(json.dumps({"figure": f"launch to first image, {'cold' if cold else 'warm'} page cache (s)",
                                  "case": case, "ours": ours, "seed": seed, "ratio_vs_seed": ratio(ours, seed),
                                  "steady_eager_s": fig(case, cold, "steady_eager_s"),
                                  "steady_compiled_s": fig(case, cold, "steady_compiled_s"),
                                  "target": "<= 1.3x seed (CPU, tiny model)" if not gpu else
                                  ("<= 15 s" if cold else "<= 6 s")}), flush=True)
        eager = fig("webui_off", cold, "steady_eager_s")
        for case in COMPILING:
            meanwhile = fig(case, cold, "steady_eager_s")
            if meanwhile is not None:
                print(json.dumps(compile_line(case, cold, meanwhile, eager, results.get((case, cold), []))), flush=True)
        bare = fig("bare_gradio", cold, "page_200_s")
        for case in ("webui_off", "webui_off_tree"):
            page = fig(case, cold, "page_200_s")
            if page is not None:
                print(json.dumps({"figure": f"page's first 200, {'cold' if cold else 'warm'} page cache (s)",
                                  "case": case, "ours": page, "bare_gradio": bare, "ratio_vs_bare": ratio(page, bare),
                                  "target": "<= 1.3x a bare Gradio app"}), flush=True)
        if not gpu:
            print(json.dumps(cpu_targets_line(fig, cold, a.repeat)), flush=True)
    shutil.rmtree(compile_cache, ignore_errors=True)
    shutil.rmtree(manager_cache, ignore_errors=True)
    shutil.rmtree(thread_cache, ignore_errors=True)


if __name__ == "__main__":
    main()
