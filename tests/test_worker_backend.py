"""--backend local: the page process in front of the model worker process (scale/worker_backend.py,
scale/model_worker.py), on real processes and the real server over HTTP. A worker killed with
SIGKILL mid-image costs that image (a typed error naming the cause), not the queue nor the page."""
import dataclasses
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
import requests

from conftest import ROOT, free_port, wait_for

LONG = {"prompt": "a long one", "width": 1024, "height": 1024, "num_inference_steps": 40}
SHORT = {"prompt": "a short one", "width": 256, "height": 256, "num_inference_steps": 2}

pytestmark = pytest.mark.worker          # the `server` fixture's model runs in a worker process here


def post_in_thread(url: str, body: dict) -> dict:
    """POST in a thread; the returned dict gets "response" once it answers."""
    out: dict = {}

    def run():
        out["response"] = requests.post(url, json=body, timeout=300)
    out["thread"] = threading.Thread(target=run, daemon=True)
    out["thread"].start()
    return out


def maps_torch(pid: int) -> bool:
    """Whether torch's shared library is mapped into process `pid` (it was imported there)."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def test_kill_9_mid_generation_fails_that_job_by_name_and_runs_the_queued_one(server):
    backend = server.manager
    first_pid = backend.worker_pid
    requests.post(server.url + "/preload", json={"wait": True}, timeout=120).raise_for_status()
    running = post_in_thread(server.url + "/generate", LONG)
    wait_for(lambda: (job := backend.current_generation()) is not None and job.phase == "generating" and job.step >= 1,
             120, message="the long image to be generating")
    queued = post_in_thread(server.url + "/generate", SHORT)
    wait_for(lambda: backend.status().queue_length == 2, 30, message="the second image to wait")

    os.kill(first_pid, signal.SIGKILL)
    running["thread"].join(60)
    r = running["response"]
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["code"] == "worker_crashed"
    assert "killed by signal 9 (SIGKILL)" in error["message"] and "restarting" in error["message"]

    queued["thread"].join(120)
    assert queued["response"].status_code == 200, queued["response"].text
    assert Path(queued["response"].json()["files"][0]).is_file()
    health = requests.get(server.url + "/health", timeout=10).json()
    assert health["status"] == "healthy" and health["state"] == "on_cpu"
    assert backend.worker_pid != first_pid and not psutil.pid_exists(first_pid) or \
        psutil.Process(first_pid).status() == psutil.STATUS_ZOMBIE
    assert "killed by signal 9" in health["note"]
    assert requests.post(server.url + "/generate", json=SHORT, timeout=120).status_code == 200


def test_status_says_restarting_until_the_new_worker_reports(start_server, settings, monkeypatch):
    monkeypatch.setenv("ZIMAGE_WORKER_START_DELAY_S", "0")
    srv = start_server(dataclasses.replace(settings, backend="local"))
    backend = srv.manager
    wait_for(lambda: backend._report is not None, 60, message="the worker's first report")
    monkeypatch.setenv("ZIMAGE_WORKER_START_DELAY_S", "30")     # the next worker takes its time
    os.kill(backend.worker_pid, signal.SIGKILL)
    health = wait_for(lambda: (h := requests.get(srv.url + "/health", timeout=10).json())["state"] == "error" and h,
                      30, message="/health to say the worker ended")
    assert health["note"] == "worker restarting"
    assert "killed by signal 9" in health["message"] and "restarting" in health["message"]
    assert requests.get(srv.url + "/", timeout=10).status_code == 200        # the page stays up


def test_unload_to_none_ends_the_worker_and_gives_its_memory_back(server):
    backend = server.manager
    requests.post(server.url + "/generate", json=SHORT, timeout=120).raise_for_status()
    old = psutil.Process(backend.worker_pid)
    old_rss = old.memory_info().rss
    r = requests.post(server.url + "/unload", json={"to": "none"}, timeout=60)
    assert r.status_code == 200 and r.json()["state"] == "unloaded"
    old.wait(30)                                      # that worker has ended: its memory is the system's
    new = psutil.Process(backend.worker_pid)
    wait_for(lambda: backend._report is not None, 60, message="the new worker's report")
    assert new.pid != old.pid and not maps_torch(new.pid)        # bare: torch not imported yet
    assert new.memory_info().rss < old_rss / 2
    assert requests.post(server.url + "/generate", json=SHORT, timeout=120).status_code == 200
    assert backend.load_count == 2


def test_the_page_process_never_imports_torch(tmp_path):
    """The real app (webui.py --demo --preload) makes an image over HTTP: torch is in the worker's
    memory map, never in the page's."""
    port = free_port()
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    proc = subprocess.Popen([sys.executable, "webui.py", "--demo", "--preload", "--port", str(port),
                             "--outputs", str(tmp_path / "out")], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        answers = []

        def page() -> bool:
            try:
                answers.append(requests.get(url + "/", timeout=30).status_code)
            except requests.ConnectionError:
                return False
            return answers[-1] == 200
        wait_for(page, 120, interval=0.05, message="the page")
        assert answers == [200]                       # never a "starting" 503, even with --preload
        r = requests.post(url + "/generate", json=SHORT, timeout=180)
        assert r.status_code == 200, r.text
        workers = psutil.Process(proc.pid).children()
        assert len(workers) == 1 and maps_torch(workers[0].pid)
        assert not maps_torch(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def _start_app(tmp_path: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    return subprocess.Popen([sys.executable, "webui.py", "--demo", "--port", str(port), "--outputs",
                             str(tmp_path / "out")], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_kill_9_of_the_whole_app_keeps_the_outputs_and_leaves_no_worker(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = _start_app(tmp_path, port)
    try:
        wait_for(lambda: _ok(url + "/health"), 120, interval=0.2, message="the app")
        made = requests.post(url + "/generate", json=SHORT, timeout=180).json()["files"]
        saved = {f: Path(f).read_bytes() for f in made}
        worker = psutil.Process(app.pid).children()[0]
        app.kill()                                      # the page process, SIGKILL: no clean-up at all
        app.wait(10)
        worker.wait(30)                                 # its end of the socket closed: it ends too
    finally:
        if app.poll() is None:
            os.killpg(app.pid, signal.SIGKILL)
    again = _start_app(tmp_path, port)
    try:
        wait_for(lambda: _ok(url + "/health"), 120, interval=0.2, message="the app again")
        assert {f: Path(f).read_bytes() for f in made} == saved
        r = requests.post(url + "/generate", json=SHORT, timeout=180)
        assert r.status_code == 200
        assert sorted(p.name for p in (tmp_path / "out").rglob("*.png")) == sorted(
            Path(f).name for f in made + r.json()["files"])
    finally:
        os.killpg(again.pid, signal.SIGTERM)
        again.wait(30)


def test_inprocess_backend_stays_one_process(start_server, settings):
    srv = start_server(dataclasses.replace(settings, backend="inprocess"))
    assert requests.post(srv.url + "/generate", json=SHORT, timeout=120).status_code == 200
    assert psutil.Process().children() == [] or all(not maps_torch(c.pid) for c in psutil.Process().children())


@pytest.mark.parametrize("name", ["bogus"])
def test_an_unknown_backend_is_refused_by_name(name):
    from zimage.config import ConfigError, Settings

    with pytest.raises(ConfigError) as e:
        Settings(backend=name).validate()
    assert "local, inprocess or ray" in str(e.value)
