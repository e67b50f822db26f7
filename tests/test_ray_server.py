"""`python -m zimage serve --demo --backend ray` as a user starts it: no cluster running, so the app
starts a local Ray instance, deploys one replica, serves the page and the API through it, runs idle
unload on the replica, and takes Ray down again on Ctrl-C."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests

from conftest import free_port, wait_for

pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install -r requirements-ray.txt)")
pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parent.parent
WARMUP = {"prompt": "warmup", "width": 256, "height": 256, "num_inference_steps": 1, "seed": 1}


def test_serve_with_ray_backend_starts_a_local_cluster_and_serves_through_it(tmp_path):
    port = free_port()
    # Ray's sockets live under RAY_TMPDIR: a short path (socket names are limited to 107 bytes) of our
    # own, so `auto` finds no other cluster on this machine and starts a local one.
    ray_tmp = tempfile.mkdtemp(prefix="zr", dir="/tmp")
    env = dict(os.environ, HOME=str(tmp_path), RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "log.txt"
    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zimage", "serve", "--demo", "--backend", "ray", "--ray-replicas", "1",
             "--preload", "--idle-unload", "3", "--port", str(port), "--outputs", str(tmp_path / "out")],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def healthy():
            if proc.poll() is not None:
                raise AssertionError(log.read_text()[-3000:])
            try:
                return requests.get(url + "/health", timeout=5).json()["status"] == "healthy"
            except (requests.ConnectionError, ValueError):      # not up, or not yet the JSON answer (seen under load)
                return False
        wait_for(healthy, 180, interval=0.5, message="the app and its replica to be ready")
        assert "starting a local one" in log.read_text() and ray_processes(ray_tmp)
        health = requests.get(url + "/health", timeout=5).json()
        assert len(health["replicas"]) == 1 and health["replicas"][0]["phase"] == "ready"
        assert "random weights" in health["note"] and health["load_count"] == 1

        r = requests.post(url + "/generate", json=WARMUP, timeout=120)
        assert r.status_code == 200, r.text
        assert list((tmp_path / "out").rglob("*-1.png"))        # saved by the app, not the replica

        # Idle unload runs on the replica (no GPU: after --idle-unload the model is dropped).
        wait_for(lambda: requests.get(url + "/health", timeout=5).json()["status"] == "unloaded", 60,
                 message="idle unload on the replica")
        assert requests.post(url + "/generate", json=WARMUP, timeout=120).status_code == 200
        assert requests.get(url + "/health", timeout=5).json()["load_count"] == 2
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            shutil.rmtree(ray_tmp, ignore_errors=True)
    assert code == 0, log.read_text()[-3000:]
    assert "Deleting app" in log.read_text()
    wait_for(lambda: not ray_processes(ray_tmp), 30, message="the local Ray instance to stop")


def ray_processes(ray_tmp: str) -> list:
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(ray_tmp in part for part in p.info["cmdline"] or []):
                found.append(p.pid)
        except psutil.Error:
            continue
    return found
