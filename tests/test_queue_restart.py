"""The queue outlives a real kill (issue 30): `python webui.py --demo` is killed with SIGKILL while
one job runs and two wait; the next start lists them (interrupted, waiting, waiting) under the same
ids and runs none by itself; Run of the second makes its image, Delete of the first drops only it,
the image saved before the kill is untouched; with --resume-queue the waiting one runs by itself."""
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from conftest import ROOT, free_port, wait_for

from zimage.store.history import scan_pngs

SMALL = {"width": 256, "height": 256, "num_inference_steps": 1}
# Minutes of work for the tiny model on a CPU: it is still running when the kill comes.
LONG = {"width": 1024, "height": 1024, "num_inference_steps": 30}


class App:
    def __init__(self, tmp_path: Path, out: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / f"terminal-{self.port}.txt"
        env = dict(os.environ, HOME=str(tmp_path / "home"))
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "webui.py", "--demo", "--port", str(self.port),
                                          "--outputs", str(out), *extra], cwd=ROOT, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._up, 120, interval=0.2, message="webui.py --demo to serve")

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            return requests.get(self.url + "/queue", timeout=2).ok
        except requests.ConnectionError:
            return False

    def queue(self) -> list[dict]:
        return requests.get(self.url + "/queue", timeout=10).json()["jobs"]

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        self.proc.wait(30)


@pytest.mark.slow
def test_jobs_outlive_a_kill_and_run_on_request_or_with_resume_queue(tmp_path):
    out = tmp_path / "out"
    app = App(tmp_path, out)
    apps = [app]
    try:
        saved = requests.post(app.url + "/generate", json={"prompt": "saved before", **SMALL}, timeout=120).json()
        [before] = saved["files"]
        before_bytes = Path(before).read_bytes()

        def post(body):
            try:
                requests.post(app.url + "/generate", json=body, timeout=300)
            except requests.RequestException:
                pass                                   # the kill ends it
        for body in ({"prompt": "long running", **LONG}, {"prompt": "waiting one", **SMALL},
                     {"prompt": "waiting two", **SMALL}):
            threading.Thread(target=post, args=(body,), daemon=True).start()
            wait_for(lambda: body["prompt"] in [j["prompt"] for j in app.queue()], 30, message=body["prompt"])
        jobs = wait_for(lambda: (j := app.queue())[0]["state"] == "running" and j, 30, message="the long job running")
        ids = [j["id"] for j in jobs]
        app.kill()

        app = App(tmp_path, out)
        apps.append(app)
        after = app.queue()
        assert [(j["id"], j["prompt"], j["state"]) for j in after] == [
            (ids[0], "long running", "interrupted"), (ids[1], "waiting one", "waiting"),
            (ids[2], "waiting two", "waiting")]
        assert set(scan_pngs(out)) == {Path(before).relative_to(out).as_posix()}       # nothing ran by itself

        r = requests.post(f"{app.url}/queue/{ids[2]}/run", json={"wait": True}, timeout=120)
        assert r.status_code == 200, r.text
        [made] = r.json()["files"]
        assert Path(made).is_file() and Path(made).parent.parent == out
        assert requests.delete(f"{app.url}/queue/{ids[0]}", timeout=10).json() == {"deleted": ids[0]}
        wait_for(lambda: [j["id"] for j in app.queue()] == [ids[1]], 10, message="only the first waiting left")
        assert Path(before).read_bytes() == before_bytes
        app.kill()

        app = App(tmp_path, out, "--resume-queue")
        apps.append(app)
        wait_for(lambda: app.queue() == [], 120, message="the waiting job to run by itself")
        assert len(scan_pngs(out)) == 3 and Path(before).read_bytes() == before_bytes
        prompts = []
        from PIL import Image
        for rel in scan_pngs(out):
            with Image.open(out / rel) as im:
                prompts.append(im.info["parameters"].split("\n")[0])
        assert sorted(prompts) == ["saved before", "waiting one", "waiting two"]
    finally:
        for a in apps:
            a.kill(signal.SIGTERM)
