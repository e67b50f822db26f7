"""The launch's timeline (issue 19): what /health and the status panel say while the app starts
(importing, reading weights n%, building, compiling in the background) and when each step ended;
and the start order that lets the weight reads begin before the page's imports."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

from zimage import startup
from zimage.state import LoadStage, LoadState, MemoryInfo, Status
from zimage.web.page.ui import render_status
from zimage.web.page.ui_startup import current_step, startup_html

ROOT = Path(__file__).resolve().parent.parent
MEM = MemoryInfo(process_rss_bytes=2**30, ram_total_bytes=8 * 2**30, ram_available_bytes=4 * 2**30)


def test_the_panel_names_the_step_under_way():
    importing = Status(state=LoadState.LOADING, stage=LoadStage.READ, startup=((startup.READING, 0.4),))
    assert "importing the model code" in render_status(importing, MEM)
    reading = Status(state=LoadState.LOADING, stage=LoadStage.READ, progress=0.45, bytes_done=45, bytes_total=100,
                     startup=((startup.READING, 0.4), (startup.MODEL_IMPORTED, 2.5)))
    html = render_status(reading, MEM)
    assert "reading weights 45%" in html and "model code 2.1 s" in html     # since the load began (0.4 s)
    building = Status(state=LoadState.LOADING, stage=LoadStage.BUILD, progress=1.0,
                      startup=((startup.MODEL_IMPORTED, 2.5), (startup.READ, 3.0)))
    assert current_step(building) == "building the pipeline"
    compiling = Status(state=LoadState.ON_GPU, device="cuda:0",
                       startup=((startup.READY, 4.0), (startup.FIRST_IMAGE, 4.6), (startup.COMPILING, 4.1)))
    html = render_status(compiling, MEM)
    assert "compiling in the background" in html and "first image 4.6 s" in html
    swapped = Status(state=LoadState.ON_GPU, startup=compiling.startup + ((startup.COMPILED, 30.2),))
    assert current_step(swapped) == "" and "compiled blocks in use 30.2 s" in startup_html(swapped)


def test_health_gives_the_timeline_of_a_real_load_and_first_image(start_server, settings):
    startup.reset()
    srv = start_server(settings)
    r = requests.post(srv.url + "/generate", json={"prompt": "a fox", "width": 256, "height": 256,
                                                   "num_inference_steps": 1, "seed": 1}, timeout=120)
    assert r.status_code == 200, r.text
    timeline = requests.get(srv.url + "/health", timeout=10).json()["startup"]
    steps = [startup.READING, startup.MODEL_IMPORTED, startup.READ, startup.BUILT, startup.ON_DEVICE,
             startup.READY, startup.FIRST_IMAGE]
    assert all(s in timeline for s in steps), timeline
    times = [timeline[s] for s in steps]
    assert times == sorted(times) and times[0] > 0, timeline
    # The page shows the same timeline, folded below the line once the launch is over.
    assert f"first image {timeline[startup.FIRST_IMAGE]:.1f} s" in render_status(srv.manager.status(), MEM)


def test_the_backend_is_created_without_importing_torch():
    """webui.py --preload starts the worker's reads before the page's imports; importing torch on
    the main thread first (1.1-3 s) held every read back until it was done."""
    done = subprocess.run([sys.executable, "-c", "import sys; from zimage.app import create_backend; "
                           "print('torch' in sys.modules, 'diffusers' in sys.modules)"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False"], done.stderr[-2000:]


def test_the_page_does_not_read_a_torch_that_is_still_being_imported(monkeypatch, settings):
    """The worker imports torch while the page is built (webui.py --preload): the page asked the
    half-imported module for torch.cuda and the start failed ("partially initialized module")."""
    import dataclasses
    import importlib.machinery
    import types

    from zimage.web.page.ui import gpu_absent

    partial = types.ModuleType("torch")
    partial.__spec__ = importlib.machinery.ModuleSpec("torch", None)
    partial.__spec__._initializing = True
    monkeypatch.setitem(sys.modules, "torch", partial)
    assert gpu_absent(dataclasses.replace(settings, device="auto")) is None
    assert startup.imported("torch") is None and startup.imported("zimage.startup") is startup


def test_the_upload_folder_rule_is_gradios(monkeypatch, tmp_path):
    from gradio.utils import get_upload_folder

    from zimage.web.server import gradio_upload_folder

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    assert gradio_upload_folder() == get_upload_folder()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "up"))
    assert gradio_upload_folder() == get_upload_folder() == str(tmp_path / "up")


def test_the_weight_reads_start_before_the_page_imports_gradio(tmp_path):
    """serve() checks the outputs folder before it starts the worker: that check imported gradio
    (2.5 s), so the reads and the model's imports began only after it."""
    code = ("import sys; from zimage.config_load import load_settings; "
            "from zimage.web.server import outputs_dir_checked; "
            f"outputs_dir_checked(load_settings(['--outputs', {str(tmp_path / 'out')!r}], env={{}})); "
            "print('gradio' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False"], done.stderr[-2000:]


def test_a_late_preload_shows_the_loads_own_durations(start_server, settings):
    """Issue 28: a Preload pressed 96 s after the start read as a 96 s load (every step counted
    from the process's start). This test's process started long before its Preload."""
    startup.reset()
    srv = start_server(settings)
    assert requests.post(srv.url + "/preload", timeout=60).status_code in (200, 202)
    srv.manager.ensure_ready(60)
    events = dict(srv.manager.status().startup)
    began, ready = events[startup.READING], events[startup.READY]
    assert began > 1.0                                # pressed well after the process started
    html = render_status(srv.manager.status(), MEM)
    assert f"Model load:</b> " in html and f"ready {ready - began:.1f} s" in html, html
    assert f"ready {ready:.1f} s" not in html
    late = Status(state=LoadState.ON_CPU, device="cpu", startup=((startup.WEB_IMPORTED, 2.0),
                  (startup.READING, 96.0), (startup.MODEL_IMPORTED, 97.5), (startup.READY, 99.0)))
    line = startup_html(late)
    assert "page code 2.0 s" in line and "model code 1.5 s" in line and "ready 3.0 s" in line and "96" not in line


def test_the_starting_page_uses_the_pages_words_and_look():
    """Issue 28: the --preload starting page showed raw state names ("on_cpu, read 45%") unstyled."""
    from zimage.web.page.ui_starting import starting_page

    loading = Status(state=LoadState.LOADING, stage=LoadStage.READ, progress=0.45, bytes_done=45,
                     startup=((startup.WEB_IMPORTED, 0.3), (startup.READING, 0.5), (startup.MODEL_IMPORTED, 2.5)))
    en, zh = starting_page(loading, "en"), starting_page(loading, "zh")
    assert "<style>" in en and "Loading" in en and "read weights 45%" in en and "model code 2.0 s" in en
    assert "loading," not in en and "model code imported" not in en
    assert "加载中" in zh and "读取权重 45%" in zh and "模型代码 2.0 秒" in zh and "Loading" not in zh
    ready = starting_page(Status(state=LoadState.ON_CPU, device="cpu"), "en")
    assert "Ready (CPU / RAM)" in ready and "on_cpu" not in ready
    assert "Loading" not in starting_page(None, "en")          # behind a login: no state, no timeline


def test_the_device_before_a_load_says_what_will_be_used():
    from zimage.config import Settings

    unloaded = Status(state=LoadState.UNLOADED)
    assert "Device: -" not in render_status(unloaded, MEM)
    assert "Device: not loaded (will use the GPU if there is one, else the CPU)" in render_status(unloaded, MEM)
    assert "will use cpu" in render_status(unloaded, MEM, settings=Settings(device="cpu"))
    assert "设备：未加载" in render_status(unloaded, MEM, "zh")
