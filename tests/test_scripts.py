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


def torch_choice(tmp_path, env_extra: dict, driver: bool | None) -> list[str]:
    """What scripts/torch_choice.sh asks pip for. `driver`: a stand-in nvidia-smi that answers (an
    NVIDIA driver cannot exist on the CPU machine), one that fails (a driver-less nvidia-smi), or none."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    smi = bindir / "nvidia-smi"
    smi.unlink(missing_ok=True)
    if driver is not None:
        smi.write_text("#!/bin/sh\n" + ("echo 'GPU 0: NVIDIA H100 (UUID: x)'\n" if driver else "exit 9\n"))
        smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_SPEC", "TORCH_INDEX", "ZIMAGE_TORCH")}
    # No nvidia-smi of the machine's own: PATH has only the stand-in's folder and the basic tools.
    env.update({"PATH": f"{bindir}:/usr/bin:/bin", "PYTHON": sys.executable, "ZIMAGE_CPU_INDEX": "http://127.0.0.1:9/none", **env_extra})
    out = subprocess.run(["bash", "-c", ". scripts/torch_choice.sh; zimage_torch_args"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.split()


def test_torch_choice_fits_the_machine(tmp_path):
    # A machine whose NVIDIA driver answers gets the CUDA build from PyPI.
    assert torch_choice(tmp_path, {}, driver=True) == ["torch>=2.6"]
    # No driver, or an nvidia-smi that cannot reach one: the CPU wheel, never a bare "torch".
    assert torch_choice(tmp_path, {}, driver=False) == ["torch==2.13.0"]
    assert torch_choice(tmp_path, {}, driver=None) == ["torch==2.13.0"]
    # The user's choice wins.
    assert torch_choice(tmp_path, {"ZIMAGE_TORCH": "cpu"}, driver=True) == ["torch==2.13.0"]
    assert torch_choice(tmp_path, {"TORCH_SPEC": "torch==2.9.1", "TORCH_INDEX": "https://example.invalid/whl"},
                        driver=True) == ["torch==2.9.1", "--extra-index-url", "https://example.invalid/whl"]


def test_torch_choice_names_the_cpu_index_when_it_answers(tmp_path):
    import http.server

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<a>torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl</a>")

        def log_message(self, *a):
            pass

    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/whl/cpu"
        assert torch_choice(tmp_path, {"ZIMAGE_CPU_INDEX": url}, driver=None) == [
            "torch==2.13.0", "--extra-index-url", url]
    finally:
        server.shutdown()


def test_start_app_help_answers_at_once_without_installing(tmp_path):
    venv = tmp_path / "venv"
    env = dict(os.environ, ZIMAGE_VENV=str(venv))
    out = subprocess.run(["bash", "scripts/start_app.sh", "--help"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "usage: bash scripts/start_app.sh" in out.stdout and "--demo" in out.stdout   # webui.py's flags too
    assert not venv.exists()                      # nothing was set up for the help


def test_webui_without_its_packages_says_how_to_set_up():
    # -S: no site-packages, as a Python that never had the app installed (gradio, torch missing).
    out = subprocess.run([sys.executable, "-S", "webui.py", "--demo"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 3
    assert "Traceback" not in out.stderr
    assert "is not installed" in out.stderr and "bash scripts/start_app.sh" in out.stderr
