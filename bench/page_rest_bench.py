"""The page left open (issue 29): what headless chromium spends on our page at rest, with Gradio's
status tracker as Gradio ships it (baseline: its frame loop runs on once the page's "Loading..."
tracker is gone) against the one we serve (web/page/gradio_frontend). Every case is a fresh process
(the app and its chromium), the cases interleaved, medians of --repeat, JSON lines out.

    python -m bench.page_rest_bench DIR [--repeat 3] [--seconds 10]

DIR is a Z-Image folder (the tiny model: `python -m zimage.cli make-tiny-model DIR`). Needs
Playwright and a chromium (ZIMAGE_CHROMIUM, else /usr/bin/chromium).
  rest_cpu_s_per_s   chromium's CPU seconds (all its processes) per second, the page loaded and left
                     alone for 3 s, then measured over --seconds
  frames_per_s       the animation frames the page asked for in that time
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

REST = """
import json, os, sys, tempfile, threading, time
import psutil
from playwright.sync_api import sync_playwright
import zimage.web.page.gradio_frontend as frontend
if sys.argv[1] == "baseline":
    frontend.fixed_tracker = lambda folder=None: None         # Gradio's own file is served
from zimage.app import create_backend
from zimage.config import Settings
from zimage.web.server import create_app, make_server
out = tempfile.mkdtemp()
settings = Settings(model=sys.argv[2], outputs_dir=out + "/o", cache_dir=out + "/c", backend="inprocess", port=int(sys.argv[4]))
manager = create_backend(settings).start()
server = make_server(create_app(settings, manager), settings)
threading.Thread(target=server.run, daemon=True).start()
while not server.started:
    time.sleep(0.05)
driver = sync_playwright().start()
browser = driver.chromium.launch(executable_path=os.environ.get("ZIMAGE_CHROMIUM", "/usr/bin/chromium"),
                                 args=["--headless", "--no-sandbox", "--disable-gpu"])
page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
page.add_init_script("window.ziFrames = 0; const ask = window.requestAnimationFrame.bind(window);"
                     "window.requestAnimationFrame = (cb) => { window.ziFrames += 1; return ask(cb); };")
page.goto(f"http://127.0.0.1:{settings.port}")
page.wait_for_selector("#generate-btn:not([disabled])")
time.sleep(3)
def chromium_cpu():
    total = 0.0
    for p in psutil.Process().children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total
seconds = float(sys.argv[3])
frames, cpu = page.evaluate("window.ziFrames"), chromium_cpu()
time.sleep(seconds)
frames, cpu = page.evaluate("window.ziFrames") - frames, chromium_cpu() - cpu
print(json.dumps({"cpu": cpu / seconds, "frames": frames / seconds}))
browser.close()
driver.stop()
server.should_exit = True
manager.close()
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(who: str, model: str, seconds: float) -> dict:
    done = subprocess.run([sys.executable, "-c", REST, who, model, str(seconds), str(free_port())], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    seen = {who: [] for who in ("baseline", "ours")}
    for _ in range(args.repeat):
        for who in seen:
            seen[who].append(run(who, args.model, args.seconds))
    for key, case in (("cpu", "rest_cpu_s_per_s"), ("frames", "frames_per_s")):
        base, ours = (statistics.median(r[key] for r in seen[w]) for w in ("baseline", "ours"))
        print(json.dumps({"case": case, "baseline": round(base, 3), "ours": round(ours, 3),
                          "ratio": round(ours / base, 2) if base else None, "repeat": args.repeat,
                          "seconds": args.seconds, "machine": platform.machine(), "cpus": os.cpu_count(),
                          "date": time.strftime("%Y-%m-%d")}))


if __name__ == "__main__":
    main()
