"""The one-click launcher, run as a user would: `bash scripts/start_app.sh --warmup --demo`."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent


def test_start_app_warmup_sends_the_seed_request_once_healthy(tmp_path):
    port = free_port()
    env = dict(os.environ, HOME=str(tmp_path), ZIMAGE_VENV=sys.prefix, ZIMAGE_OUTPUTS_DIR=str(tmp_path / "out"))
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", "scripts/start_app.sh", "--warmup", "--demo", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "[warmup] done" in log.read_text() or "[warmup] the model failed" in log.read_text()
                 or proc.poll() is not None, 240,
                 interval=0.5, message="the warm-up to finish")
        text = log.read_text()
        assert "[warmup] POST /generate -> 200" in text, text[-2000:]
        health = requests.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
        assert health["status"] == "healthy" and health["load_count"] == 1
        assert "random weights" in health["note"]
        assert list((tmp_path / "out").rglob("*-1.png"))     # the warm-up image (seed 1) was saved
        # --preload serves the model first and builds the page after it (web/launch.py).
        wait_for(lambda: "the page is up" in log.read_text(), 60, message="the page to be built after the model")
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
