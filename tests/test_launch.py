"""`webui.py --backend inprocess --preload` (the one-process app) serves the model first (web/launch.py,
issue 19): the HTTP API answers while
the model loads and gradio is imported only after it, so the first image is not held back by the
page's imports; "/" says the app is starting (503, reloading itself) until the page is built, and
the page then works (its queue runs: Gradio's lifespan was entered); the early app has the same
host, origin and login guard; Ctrl-C / SIGTERM stops it in either phase."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from zimage import startup

from conftest import free_port, page_client, wait_for

ROOT = Path(__file__).resolve().parent.parent
BODY = {"prompt": "a fox", "width": 256, "height": 256, "num_inference_steps": 1, "seed": 1}


class Launch:
    def __init__(self, model: Path | str, tmp_path: Path, *extra: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.log = tmp_path / "terminal.txt"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "webui.py", "--model", str(model), "--preload", "--port", str(self.port),
                 "--outputs", str(tmp_path / "out"), "--idle-unload", "0", "--idle-drop", "0", "--backend", "inprocess", *extra],
                cwd=ROOT, env=dict(os.environ, HOME=str(tmp_path / "home"), **(env or {})), stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True)

    def first_answer(self) -> requests.Response:
        """The first answer "/" gives, as soon as the port takes connections."""
        got = []

        def answered() -> bool:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                got.append(requests.get(self.url + "/", timeout=30))
                return True
            except requests.ConnectionError:
                return False
        wait_for(answered, 120, interval=0.02, message="the port to take connections")
        return got[0]

    def page_up(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            r = requests.get(self.url + "/", timeout=30)
        except requests.ConnectionError:
            return False
        return r.status_code == 200 and "gradio_config" in r.text

    def stop(self) -> bool:
        """SIGTERM; True once the process has ended as uvicorn ends on it (the signal re-raised)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(30) in (0, -signal.SIGTERM)


@pytest.fixture
def launch(tiny_model_dir, tmp_path):
    started = []

    def start(*extra: str, model: str | None = None, env: dict | None = None) -> Launch:
        started.append(Launch(model or tiny_model_dir, tmp_path / str(len(started)), *extra, env=env))
        return started[-1]
    yield start
    for one in started:
        one.stop()


def test_the_api_answers_while_the_model_loads_and_the_page_comes_after(launch):
    app = launch()
    first = app.first_answer()
    # The port opens before torch is imported; the page is only built after the load.
    assert first.status_code == 503 and "is starting" in first.text, (first.status_code, first.text[:300])
    assert first.headers["retry-after"] == "1" and 'http-equiv="refresh"' in first.text
    r = requests.post(app.url + "/generate", json=BODY, timeout=120)
    assert r.status_code == 200 and r.json()["images"], r.text[:300]
    wait_for(app.page_up, 120, interval=0.1, message="the page to be built")
    timeline = requests.get(app.url + "/health", timeout=10).json()["startup"]
    assert timeline[startup.READY] <= timeline[startup.WEB_IMPORTED] <= timeline[startup.PAGE_UP], timeline
    assert startup.FIRST_IMAGE in timeline, timeline
    # The page's own queue runs (Gradio starts it in its lifespan, entered at the switch).
    result = page_client(app.url).predict("a fox", "", 256, 256, 1, 0.0, 5, 1, [], api_name="/generate")
    assert result, result
    assert app.stop() and "Traceback" not in app.log.read_text(), app.log.read_text()[-3000:]


def test_the_starting_page_shows_the_timeline_and_hides_it_behind_a_login(launch):
    app = launch()
    first = app.first_answer()
    assert first.status_code == 503 and "<b>Model:</b>" in first.text and "<style>" in first.text, first.text[:500]
    secured = launch("--auth", "me:secret-password-1")
    early = secured.first_answer()
    assert early.status_code == 503 and "is starting" in early.text and "Model:" not in early.text, early.text
    assert requests.post(secured.url + "/generate", json=BODY, timeout=30).status_code == 401
    ok = requests.post(secured.url + "/generate", json=BODY, auth=("me", "secret-password-1"), timeout=120)
    assert ok.status_code == 200, ok.text[:300]


def test_the_early_app_refuses_foreign_hosts_and_origins_and_speaks_the_pages_language(settings, tmp_path):
    """The same guard as the full app's, before the page exists (in process: no timing involved);
    the starting page in the page's language."""
    import dataclasses

    from fastapi.testclient import TestClient

    from zimage.app import create_backend
    from zimage.web.launch import api_routers, create_early_app

    settings = dataclasses.replace(settings, auth="")
    manager = create_backend(settings)                 # never started: nothing is loaded
    client = TestClient(create_early_app(settings, manager, api_routers(settings, manager)), base_url="http://127.0.0.1")
    assert client.get("/health").status_code == 200
    assert client.get("/", headers={"host": "evil.example"}).status_code == 403
    foreign = client.post("/generate", json=BODY, headers={"origin": "http://evil.example"})
    assert foreign.status_code == 403 and "not allowed" in foreign.text
    assert client.get("/gradio_api/info").status_code == 503
    chinese = client.get("/", headers={"accept-language": "zh-CN,zh;q=0.9,en;q=0.5"})
    assert chinese.status_code == 503 and "正在启动" in chinese.text and 'lang="zh-CN"' in chinese.text
    assert "未加载" in chinese.text and "unloaded" not in chinese.text        # the page's words, not the state's name
    client.cookies.set("zimage-lang", "en")                        # the page's switch wins over the header
    assert "is starting" in client.get("/", headers={"accept-language": "zh-CN"}).text


def test_sigterm_stops_it_while_the_model_is_still_loading(launch):
    app = launch()
    assert app.first_answer().status_code == 503
    assert app.stop() and "Traceback" not in app.log.read_text(), app.log.read_text()[-3000:]


def test_the_page_comes_during_a_download(launch, tiny_model_dir, tmp_path):
    """A first start downloads the model (minutes on a real line): the page, with its progress and
    Cancel button, is built at once rather than after the download."""
    from zimage.testing.fake_hub import FakeHub

    with FakeHub({"Tongyi-MAI/Z-Image-Turbo": tiny_model_dir}, chunk_size=4096) as hub:
        hub.delay_per_chunk_s = 0.2              # ~1 MB in 4 KB blocks: a download of about a minute
        app = launch("--cache-dir", str(tmp_path / "cache"), model="Tongyi-MAI/Z-Image-Turbo",
                     env=dict(hub.env(), MODELSCOPE_CACHE=str(tmp_path / "ms-cache")))
        wait_for(app.page_up, 120, interval=0.2, message="the page to be built")
        assert requests.get(app.url + "/health", timeout=10).json()["state"] == "downloading"
        hub.delay_per_chunk_s = 0.0
        wait_for(lambda: requests.get(app.url + "/health", timeout=10).json()["state"] == "on_cpu", 120,
                 interval=0.2, message="the model to load after the download")
        assert app.stop() and "Traceback" not in app.log.read_text(), app.log.read_text()[-3000:]
