"""Soak: generate on the tiny model for a bounded time over HTTP and report RSS and open-file growth.

    python -m bench.soak [--seconds 120]
Starts `webui.py --demo` on a free port, warms up, then sends requests back to back (with an
unload every 25 requests to exercise the load path too). Prints JSON lines: samples, then a summary
with the growth from the first sample after warm-up to the last (target: flat within 10%).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import psutil
import requests

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQ = {"prompt": "soak", "width": 256, "height": 256, "num_inference_steps": 2}


def main() -> None:
    seconds = float(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 120.0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tempfile.mkdtemp()
    proc = subprocess.Popen([sys.executable, "webui.py", "--demo", "--port", str(port), "--outputs",
                             os.path.join(home, "out")], cwd=HERE, env=dict(os.environ, HOME=home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if requests.get(url + "/health", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        p = psutil.Process(proc.pid)
        http = requests.Session()
        for i in range(10):      # warm-up: load, allocator pools, Python caches
            http.post(url + "/generate", json=dict(REQ, seed=i), timeout=120).raise_for_status()
        samples, n, errors = [], 0, 0
        start = time.time()
        while time.time() - start < seconds:
            r = http.post(url + "/generate", json=dict(REQ, seed=n), timeout=120)
            errors += r.status_code != 200
            n += 1
            if n % 25 == 0:
                http.post(url + "/unload", json={"to": "none"}, timeout=120)
            if n % 10 == 0:
                sample = {"t_s": round(time.time() - start, 1), "requests": n, "rss_mb": round(p.memory_info().rss / 2**20, 1),
                          "open_files": len(p.open_files()), "fds": p.num_fds(), "threads": p.num_threads()}
                samples.append(sample)
                print(json.dumps(sample), flush=True)
        first, last = samples[0], samples[-1]
        print(json.dumps({"figure": "soak", "seconds": seconds, "requests": n, "errors": errors,
                          "rss_growth_pct": round(100 * (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"], 1),
                          "fd_growth": last["fds"] - first["fds"], "open_files_growth": last["open_files"] - first["open_files"],
                          "threads_growth": last["threads"] - first["threads"], "first": first, "last": last,
                          "target": "RSS and open files flat within 10%"}), flush=True)
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
