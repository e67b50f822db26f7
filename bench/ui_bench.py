"""Time to UI on the CPU machine: `python webui.py --demo` to the first HTTP 200 on `/`, side by side
with a bare Gradio Blocks app (a Markdown, a Button, a Textbox) and `python -c "import torch, diffusers"`.

    python -m bench.ui_bench [--runs 3]
Prints one JSON line per run and a summary line with medians and ratios.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BARE_APP = """
import gradio as gr, sys
with gr.Blocks() as demo:
    gr.Markdown("hello"); gr.Button("go"); gr.Textbox()
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_200(cmd: list[str], port: int, env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t0 < 120:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    if r.status == 200:
                        return round(time.perf_counter() - t0, 3)
            except OSError:
                time.sleep(0.02)
        raise TimeoutError(cmd)
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 3
    home = tempfile.mkdtemp()
    env = dict(os.environ, HOME=home, GRADIO_ANALYTICS_ENABLED="False")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(BARE_APP)
    results: dict[str, list[float]] = {"bare_gradio": [], "webui_demo": [], "import_torch_diffusers": []}
    for i in range(runs):
        port = free_port()
        results["bare_gradio"].append(time_to_200([sys.executable, fh.name, str(port)], port, env))
        port = free_port()
        results["webui_demo"].append(time_to_200([sys.executable, "webui.py", "--demo", "--port", str(port),
                                                  "--outputs", os.path.join(home, "out")], port, env))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, diffusers"], check=True, env=env)
        results["import_torch_diffusers"].append(round(time.perf_counter() - t0, 3))
        print(json.dumps({"run": i, **{k: v[-1] for k, v in results.items()}}), flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(json.dumps({"figure": "time to UI (s, median)", "machine": platform.node(), "cpus": os.cpu_count(),
                      "date": time.strftime("%Y-%m-%d"), **med,
                      "ratio_webui_vs_bare": round(med["webui_demo"] / med["bare_gradio"], 3),
                      "webui_before_import_alone": med["webui_demo"] < med["import_torch_diffusers"],
                      "target": "<= 1.3x bare app, and before `import torch, diffusers` alone"}), flush=True)


if __name__ == "__main__":
    main()
