"""The page in a real browser (Playwright driving Debian's chromium), on the tiny model."""
import contextlib
import json
import logging
import os
import re
from pathlib import Path

import pytest

import chromium
from chromium import CHROMIUM
from conftest import wait_for, wait_for_page

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}")]
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def guard_refusals(caplog):
    """Requests the Gradio event guard refused: the page's own must all pass it."""
    caplog.set_level(logging.INFO, logger="zimage.web.gradio_guard")
    # caplog.records holds only the current phase's records, and the `page` fixture asks in its
    # teardown: read the setup and call phases too, or a refusal during the test goes unseen.
    return lambda: [r.getMessage() for when in ("setup", "call", "teardown") for r in caplog.get_records(when)
                    if r.name == "zimage.web.gradio_guard"]


@pytest.fixture
def page(server, guard_refusals):
    with browser_page(server.url) as page:
        yield page
    assert guard_refusals() == []


def wait_loaded(page) -> None:
    """Until the page has loaded: its status panel drawn and Generate enabled (the page has its
    client id; until then its buttons that start a job are disabled)."""
    page.wait_for_selector("#status-panel")
    page.wait_for_selector("#generate-btn:not([disabled])")


@contextlib.contextmanager
def browser_page(url: str, viewport: dict | None = None):
    """A page of `url` in a context of its own, once the status panel is there (the page fixtures)."""
    with chromium.new_page(viewport) as page:
        page.goto(url)
        wait_loaded(page)
        yield page


@pytest.fixture
def open_page(server, guard_refusals):
    """open_page(viewport, locale) -> a page of the running server in a fresh browser context (its
    own localStorage, so its own client id; `locale` sets navigator.language and Accept-Language)."""
    def open_(viewport=DESKTOP, locale: str | None = None):
        page = chromium.open_page(viewport, locale)
        page.goto(server.url)
        wait_loaded(page)
        page.wait_for_selector("#status-panel .zi-state")
        return page
    yield open_
    chromium.close_contexts()
    assert guard_refusals() == []


def open_settings(page) -> None:
    """The memory controls (Unload's choice, Low VRAM) and the cache panel live in the folded Model and
    memory section; Preload and Unload themselves sit beside the status."""
    if not page.locator("#unload-to").is_visible():
        page.locator("#settings-panel").get_by_text("Model and memory").click()
        page.locator("#unload-to").wait_for(state="visible")


def state_of(page) -> str:
    return page.get_attribute("#status-panel .zi-state", "data-state")


def set_slider(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


class EventCalls:
    """Waits until an action's direct event calls are answered: Gradio's /run/predict, the
    queue=False events such as a gallery pick or the Hires fix settings, which the server keeps for
    the next Generate or Upscale. The click that reads such a value goes to the server on its own
    way (the queue); on a loaded machine it was handled first (the upscale ran with the default
    refine steps). A person's pause between the two is not a number a test can know."""

    def __init__(self, page):
        self.page, self.sent = page, 0
        config = page.evaluate("() => window.gradio_config")
        self.ids = {c.get("props", {}).get("elem_id"): c["id"] for c in config["components"]}
        self.deps = config["dependencies"]
        self.calls: list[list] = []          # [number, fn_index, trigger_id, answered, data]
        self._open: dict = {}                # request -> its entry in calls
        page.on("request", self._sent)
        page.on("requestfinished", self._answered)
        page.on("requestfailed", self._answered)

    def _sent(self, request) -> None:
        if "/run/predict" not in request.url:
            return
        try:
            body = json.loads(request.post_data or "{}")
        except ValueError:
            body = {}
        self.sent += 1
        self._open[request] = [self.sent, body.get("fn_index"), body.get("trigger_id"), False, body.get("data")]
        self.calls.append(self._open[request])

    def _answered(self, request) -> None:
        entry = self._open.pop(request, None)
        if entry is not None:
            entry[3] = True

    def settled(self, since: int, elem_id: str, event: str, timeout: float = 30) -> list:
        """Until every direct event call of `event` on `elem_id` (one per handler the page wires
        to it) sent since the count was `since` is answered; the inputs the last one sent."""
        target = [self.ids[elem_id], event]
        fns = {d["id"] for d in self.deps if target in d["targets"] and d["backend_fn"] and not d["queue"]}
        assert fns, f"no direct event call answers {event} on #{elem_id}"

        def done() -> bool:
            self.page.evaluate("0")          # lets Playwright deliver the network events
            mine = [c for c in self.calls if c[0] > since and c[1] in fns and c[2] == target[0]]
            return {c[1] for c in mine} == fns and all(c[3] for c in mine)
        wait_for(done, timeout, interval=0.1, message=f"the {event} calls of #{elem_id} answered")
        return [c for c in self.calls if c[0] > since and c[1] in fns and c[2] == target[0]][-1][4]


def test_preload_progress_generate_unload(page, server):
    assert state_of(page) == "unloaded"
    open_settings(page)
    page.click("#preload-btn")
    wait_for_page(lambda: state_of(page) == "on_cpu", 60, message="status panel to show ready")
    assert "Ready (CPU / RAM)" in page.inner_text("#status-panel")
    page.fill("#prompt textarea", "a lighthouse at dusk")
    set_slider(page, "width", 256)
    set_slider(page, "height", 256)
    page.locator("#seed input").fill("1234")
    page.click("#generate-btn")
    page.wait_for_selector("#gallery img", timeout=60_000)
    wait_for_page(lambda: "seeds 1234" in page.inner_text("#result-info"), 30, message="result info")
    files = list((server.manager._store.root).rglob("*-1234.png"))
    assert len(files) == 1
    page.locator("#unload-to label", has_text="Free VRAM and RAM").click()
    page.click("#unload-btn")
    wait_for_page(lambda: state_of(page) == "unloaded", 30, message="unloaded")
    assert server.manager.load_count == 1


def test_stop_during_a_long_generation(page, server):
    """Stop said "Stopping..." forever (Gradio cancelled the event before "Stopped" could arrive).
    The tiny model's 50 steps take about a second: on a loaded machine they had all run before the
    click reached the page (Stop rightly disabled again), so the third step is held until Stop."""
    import threading

    server.manager.ensure_ready(60)
    held, release, calls = threading.Event(), threading.Event(), []

    def hold_the_third_step(*_):
        calls.append(1)
        if len(calls) == 3:
            held.set()
            assert release.wait(60)
    handle = server.manager._pipe.transformer.register_forward_pre_hook(hold_the_third_step)
    try:
        assert page.locator("#stop-btn").is_disabled()                  # nothing of this browser runs
        page.fill("#prompt textarea", "a long one")
        set_slider(page, "steps", 50)
        page.click("#generate-btn")
        wait_for(held.is_set, 60, message="the third step to start")
        wait_for_page(lambda: re.search(r"Step \d+ of 50", page.inner_text("body")), 60, message="steps to advance")
        page.click("#stop-btn")
        wait_for(lambda: server.manager.current_generation() is None or server.manager.current_generation().cancelled,
                 30, message="the generation cancelled")
    finally:
        release.set()
        handle.remove()
    wait_for_page(lambda: "Stopped" in page.inner_text("#result-info"), 60, message="the page to say Stopped")
    assert server.manager.status().queue_length == 0 and not server.manager.status().busy
    assert page.locator("#gallery img").count() == 0
    assert list(server.manager._store.root.rglob("*.png")) == []
    wait_for_page(lambda: page.locator("#stop-btn").is_disabled(), 10, message="Stop disabled again")


def test_low_vram_toggle_reaches_the_manager(page, server):
    open_settings(page)
    page.locator("#low-vram input").check()
    wait_for(lambda: server.manager.status().low_vram, 20, message="low VRAM on")
    wait_for_page(lambda: "Low VRAM: on" in page.inner_text("#status-panel"), 20, message="panel shows it")
    page.locator("#low-vram input").uncheck()
    wait_for(lambda: not server.manager.status().low_vram, 20, message="low VRAM off")


MODEL_ID = "Tongyi-MAI/Z-Image-Turbo"


@pytest.fixture
def hub(tiny_model_dir, monkeypatch):
    from zimage.testing.fake_hub import FakeHub

    with FakeHub({MODEL_ID: tiny_model_dir}) as fake:
        fake.configure_client(monkeypatch.setenv)
        yield fake


def test_model_cache_panel_verify_repair_delete(hub, start_server, settings, guard_refusals):
    import dataclasses
    from pathlib import Path

    srv = start_server(dataclasses.replace(settings, model=MODEL_ID))
    srv.manager.ensure_ready(60)                     # downloaded through the fake hub
    srv.manager.unload("none").future.result(30)
    folder = next(Path(settings.cache_dir).rglob("model_index.json")).parent
    shard = sorted(folder.rglob("*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    with chromium.new_page({"width": 1400, "height": 1400}) as page:
        page.goto(srv.url)
        open_settings(page)
        page.get_by_text("Model cache").click()
        wait_for_page(lambda: MODEL_ID in page.inner_text("#cache-table"), 30, message="the cache table")
        assert settings.cache_dir in page.inner_text("#cache-summary")
        page.click("#cache-verify")
        wait_for_page(lambda: "problem" in page.inner_text("#cache-result"), 60, message="problem")
        assert shard.name in page.inner_text("#cache-result")
        page.click("#cache-repair")
        wait_for_page(lambda: "re-downloaded" in page.inner_text("#cache-result"), 60, message="re-downloaded")
        wait_for_page(lambda: state_of(page) == "on_cpu", 60, message="reload after repair")
        page.click("#cache-delete")
        wait_for_page(lambda: "Tick **Delete" in page.inner_text("#cache-result") or "Tick Delete" in page.inner_text("#cache-result"), 60, message="asks to tick the confirmation")
        page.locator("#cache-confirm input").check()
        page.click("#cache-delete")
        wait_for_page(lambda: "cannot be deleted" in page.inner_text("#cache-result"), 60, message="cannot be deleted")   # it is loaded
        assert folder.exists()
        page.locator("#unload-to label", has_text="Free VRAM and RAM").click()
        page.click("#unload-btn")
        wait_for_page(lambda: state_of(page) == "unloaded", 30, message="unloaded")
        page.locator("#cache-confirm input").check()
        page.click("#cache-delete")
        wait_for_page(lambda: "Deleted" in page.inner_text("#cache-result"), 60, message="Deleted")
        assert not folder.exists()
        page.screenshot(path=str(Path(settings.outputs_dir).parent / "cache-panel.png"))
    assert guard_refusals() == []


@pytest.mark.parametrize("fault", ["config file names a missing model folder", "model_index.json is damaged"])
def test_model_errors_show_in_the_status_panel_and_the_api(start_server, settings, tmp_path, model_copy,
                                                           guard_refusals, fault):
    import dataclasses

    import requests

    from zimage.config_load import load_settings

    if fault.startswith("config"):
        missing = tmp_path / "no-such-model"
        config = tmp_path / "config.toml"
        config.write_text(f'model = "{missing}"\noutputs_dir = "{settings.outputs_dir}"\n'
                          f'cache_dir = "{settings.cache_dir}"\nidle_unload_s = 0\nidle_drop_s = 0\n')
        srv = start_server(load_settings(["--config", str(config)], env={}, default_config=None))
        says, hint = f"Model folder not found: {missing}", "Check --model"
    else:
        (model_copy / "model_index.json").write_text('{"_class_name": "ZImagePipeline", ')
        srv = start_server(dataclasses.replace(settings, model=str(model_copy)))
        says, hint = "model_index.json: unreadable", "copy the damaged files again"
    with chromium.new_page({"width": 1400, "height": 1000}) as page:
        page.goto(srv.url)
        page.wait_for_selector("#status-panel")
        open_settings(page)
        page.click("#preload-btn")
        wait_for_page(lambda: state_of(page) == "error", 30, message="the status panel to show the error")
        panel = page.inner_text("#status-panel")
    assert "Model: Error" in panel and says in panel and hint in panel
    r = requests.post(srv.url + "/generate", json={"prompt": "x", "width": 256, "height": 256}, timeout=60)
    assert r.status_code == 503 and says in r.json()["error"]["message"] and hint in r.json()["error"]["hint"]
    assert guard_refusals() == []


OTHER_ID = "someone/Other-Model"


def pick(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.locator(f"li[role=option][aria-label=\"{option}\"]").first.click()
    wait_for_page(lambda: page.input_value(f"#{elem_id} input") == option, 10, message=f"{option} selected")


def test_cache_panel_acts_on_the_selected_second_model(tiny_model_dir, monkeypatch, start_server, settings,
                                                       guard_refusals):
    """Verify then Delete on the second model of the list: the list reload after Verify moved the
    selector back to the first model, and Delete removed that one (the 20 GB default)."""
    import dataclasses

    from zimage.store.cache import modelscope_cache_base, scan_cache
    from zimage.store.hub import download
    from zimage.testing.fake_hub import FakeHub

    with FakeHub({MODEL_ID: tiny_model_dir, OTHER_ID: tiny_model_dir}) as fake:
        fake.configure_client(monkeypatch.setenv)
        for mid in (MODEL_ID, OTHER_ID):
            download(mid, settings.cache_dir)
        roots = {m.model_id: m.root for m in scan_cache(modelscope_cache_base(settings.cache_dir))}
        shard = sorted(roots[OTHER_ID].rglob("*.safetensors"))[0]
        shard.write_bytes(shard.read_bytes()[:-8])                 # truncated
        srv = start_server(dataclasses.replace(settings, model=MODEL_ID))
        with chromium.new_page({"width": 1400, "height": 1400}) as page:
            page.goto(srv.url)
            open_settings(page)
            page.get_by_text("Model cache").click()
            wait_for_page(lambda: OTHER_ID in page.inner_text("#cache-table"), 30, message="the cache table")
            assert page.input_value("#cache-model input") == MODEL_ID      # the first one, sorted
            pick(page, "cache-model", OTHER_ID)
            assert page.eval_on_selector("#cache-model input", "e => e.scrollWidth <= e.clientWidth")
            page.click("#cache-verify")
            wait_for_page(lambda: "problem" in page.inner_text("#cache-result"), 60, message="problem")
            assert OTHER_ID in page.inner_text("#cache-result") and shard.name in page.inner_text("#cache-result")
            wait_for_page(lambda: "Verifying" not in page.inner_text("body"), 30, message="the list reloaded")
            assert page.input_value("#cache-model input") == OTHER_ID         # still the one the user picked
            wait_for_page(lambda: f"Delete {OTHER_ID}, " in page.inner_text("#cache-confirm"), 10,
                          message="the confirmation names the model and its size")
            page.locator("#cache-confirm input").check()
            pick(page, "cache-model", MODEL_ID)                               # another model: confirmation gone
            wait_for_page(lambda: not page.locator("#cache-confirm input").is_checked(), 10, message="cleared")
            assert f"Delete {MODEL_ID}, " in page.inner_text("#cache-confirm")
            pick(page, "cache-model", OTHER_ID)
            page.locator("#cache-confirm input").check()
            page.click("#cache-delete")
            wait_for_page(lambda: "Deleted" in page.inner_text("#cache-result"), 60, message="Deleted")
            assert f"Deleted {OTHER_ID}" in page.inner_text("#cache-result")
            wait_for_page(lambda: OTHER_ID not in page.inner_text("#cache-table"), 30, message="the list reloaded")
        assert roots[MODEL_ID].exists() and not roots[OTHER_ID].exists()
    assert guard_refusals() == []


def test_a_reload_keeps_the_settings_the_running_job_and_the_gallery(page, server, monkeypatch):
    """A reload during a generation wiped the prompt, the settings and the gallery; the images were
    saved but never shown."""
    import threading

    server.manager.ensure_ready(60)
    transformer = server.manager._pipe.transformer
    gate, forward = threading.Event(), transformer.forward

    def gated(*args, **kwargs):              # the tiny model makes 50 steps in ~1 s: hold it while the page reloads
        assert gate.wait(120)
        return forward(*args, **kwargs)
    monkeypatch.setattr(transformer, "forward", gated)
    page.fill("#prompt textarea", "a reload-proof fox")
    set_slider(page, "width", 256)
    set_slider(page, "height", 256)
    set_slider(page, "steps", 50)
    page.locator("#seed input").fill("4321")
    page.locator("#seed input").press("Enter")
    page.click("#generate-btn")
    wait_for(lambda: server.manager.current_generation() is not None, 30, message="the generation to start")
    page.reload()
    page.wait_for_selector("#status-panel")
    wait_for_page(lambda: page.input_value("#prompt textarea") == "a reload-proof fox", 20, message="the prompt back")
    assert page.input_value("#width input[type=number]") == "256"
    assert page.input_value("#steps input[type=number]") == "50" and page.input_value("#seed input") == "4321"
    wait_for_page(lambda: re.search(r"Step \d+ of 50", page.inner_text("body")), 60, message="the job's progress")
    assert page.locator("#gallery img").count() == 0
    gate.set()
    page.wait_for_selector("#gallery img", timeout=120_000)
    wait_for_page(lambda: "seeds 4321" in page.inner_text("#result-info"), 30, message="the job's result")
    page.reload()
    page.wait_for_selector("#gallery img", timeout=30_000)         # this browser's recent results
    assert page.locator("#gallery img").count() == 1


def test_an_unexpected_error_is_named_on_the_page_and_the_page_keeps_working(page, server, monkeypatch):
    server.manager.ensure_ready(60)

    def broken(*args, **kwargs):
        raise RuntimeError("injected fault in the transformer")
    monkeypatch.setattr(server.manager._pipe.transformer, "forward", broken)
    page.fill("#prompt textarea", "a fox")
    set_slider(page, "width", 256)
    set_slider(page, "height", 256)
    set_slider(page, "steps", 1)
    page.click("#generate-btn")
    wait_for_page(lambda: "injected fault in the transformer" in page.inner_text("body"), 60, message="the error")
    assert "The generation failed" in page.inner_text("body")
    monkeypatch.undo()
    page.click("#generate-btn")
    page.wait_for_selector("#gallery img", timeout=60_000)


def test_controls_say_what_they_do(page, server):
    """Width 1000 was taken (the slider showed 1008) and refused only after Generate; the preset did
    not follow the sizes; Cancel download and Stop showed when there was nothing to cancel; Low VRAM
    and Unload (keep in RAM) silently did nothing without a GPU; an empty cache offered its buttons."""
    set_slider(page, "width", 1000)
    wait_for_page(lambda: "multiple of 16" in page.inner_text("#size-error"), 10, message="the size error")
    assert "Width" in page.inner_text("#size-error") and page.input_value("#preset input") == "Custom"
    set_slider(page, "width", 512)
    set_slider(page, "height", 512)
    wait_for_page(lambda: page.input_value("#preset input") == "512x512", 10, message="the preset to follow")
    assert page.inner_text("#size-error").strip() == ""
    pick(page, "preset", "1216x832")
    wait_for_page(lambda: page.input_value("#width input[type=number]") == "1216", 10, message="the preset's width")
    assert not page.locator("#cancel-download-btn").is_visible()     # nothing downloads
    assert page.locator("#stop-btn").is_disabled()
    open_settings(page)
    page.locator("#low-vram input").check()
    wait_for_page(lambda: "changes nothing" in page.inner_text("#controls-note"), 10, message="the low VRAM note")
    page.locator("#low-vram input").uncheck()
    page.click("#unload-btn")                                          # "Free VRAM (keep in RAM)"
    wait_for_page(lambda: "already lives in RAM" in page.inner_text("#controls-note"), 10, message="the unload note")
    page.get_by_text("Model cache").click()
    wait_for_page(lambda: "Nothing cached yet" in page.inner_text("#cache-summary"), 20, message="the empty cache")
    for button in ("verify", "repair", "delete"):
        assert page.locator(f"#cache-{button}").is_disabled()


def generated_image_width(url: str, prompt: str, then=None) -> int:
    """Open the page at `url`, make a 256x256 image and return the gallery image's width once the
    browser has loaded it (0 would be a broken image). `then(page)` runs before the browser closes."""
    with chromium.new_page({"width": 1400, "height": 1000}) as page:
        page.goto(url)
        wait_loaded(page)       # the page's load restores the sliders: set before it, they went back to 1024
        page.fill("#prompt textarea", prompt)
        set_slider(page, "width", 256)
        set_slider(page, "height", 256)
        page.click("#generate-btn")
        page.wait_for_selector("#gallery img", timeout=120_000)
        loaded = wait_for_page(lambda: page.evaluate(
            "() => { const i = document.querySelector('#gallery img'); return i.complete && i.naturalWidth }"),
            30, message="the gallery image to load")
        if then is not None:
            then(page)
    return loaded


def test_the_generated_image_shows_when_the_app_runs_as_webui(cli_server):
    """`python webui.py` as a user starts it: the gallery's image loads in the browser (the guard
    once refused Gradio's copy of it, so the page showed a broken image while every in-process test
    passed)."""
    url, terminal = cli_server
    assert generated_image_width(url, "a lighthouse at dusk") == 256
    assert "refused GET /gradio_api/file=" not in terminal()


def test_on_a_full_disk_the_page_still_shows_the_image_and_says_why(start_server, settings, small_disk):
    """Saving fails (a real 32 KB filesystem): the image is not in the outputs folder, Gradio serves its
    own copy of it, and the page shows it with the warning."""
    import dataclasses

    srv = start_server(dataclasses.replace(settings, outputs_dir=str(small_disk)))

    def warned(page) -> None:
        wait_for_page(lambda: "No space left on device" in page.inner_text("#result-info"), 30, message="the warning")
    assert generated_image_width(srv.url, "a full disk", then=warned) == 256


def test_the_lora_picker_lists_the_folder_and_its_pick_reaches_the_image(tiny_model_dir, tmp_path, start_server,
                                                                         settings, guard_refusals):
    """Issue 17: a LoRA from the folder, picked on the page, is applied (infotext tag and hash);
    picking None again makes the base model's image."""
    import dataclasses
    import shutil

    from PIL import Image
    from zimage.testing.tiny_lora import make_tiny_loras

    make_tiny_loras(tmp_path / "loras", tiny_model_dir)
    srv = start_server(dataclasses.replace(settings, lora_dir=str(tmp_path / "loras")))
    outputs = Path(settings.outputs_dir)

    def generate(n: int) -> str:
        page.click("#generate-btn")
        wait_for(lambda: len(list(outputs.rglob("*.png"))) == n, 120, message=f"image {n} saved")
        newest = max(outputs.rglob("*.png"), key=lambda p: p.stat().st_mtime_ns)
        return Image.open(newest).text["parameters"]

    with chromium.new_page({"width": 1400, "height": 1000}) as page:
        page.goto(srv.url)
        wait_loaded(page)
        page.locator("#lora-panel").get_by_text("LoRA", exact=True).first.click()
        page.wait_for_selector("#lora-1 input")
        # listed when the page opens (issue 36: never while the page is built, before the server listens)
        refused = wait_for_page(lambda: "pickled" in page.inner_text("#lora-refused") and page.inner_text("#lora-refused"),
                                20, message="the refused LoRAs listed")
        assert "Not usable" in refused
        page.fill("#prompt textarea", "a fox")
        set_slider(page, "width", 256)
        set_slider(page, "height", 256)
        set_slider(page, "steps", 1)
        page.locator("#seed input").fill("99")
        page.locator("#seed input").press("Enter")
        page.click("#lora-1 input")
        page.get_by_role("option", name="diffusers_style", exact=True).click()
        assert page.get_by_role("option", name="pickled", exact=True).count() == 0
        set_slider(page, "lora-strength-1", 1)
        text = generate(1)
        assert "<lora:diffusers_style:1>" in text and "Lora hashes:" in text
        page.reload()                                   # the pick is kept with the other settings
        page.wait_for_selector("#status-panel")
        page.locator("#lora-panel").get_by_text("LoRA", exact=True).first.click()
        wait_for_page(lambda: page.input_value("#lora-1 input") == "diffusers_style", 20, message="the pick restored")
        page.click("#lora-1 input")
        page.get_by_role("option", name="None", exact=True).click()
        text = generate(2)
        assert "<lora:" not in text and "Lora hashes:" not in text and "Seed: 99" in text
        shutil.copy(tmp_path / "loras" / "diffusers_style.safetensors", tmp_path / "loras" / "added_later.safetensors")
        page.click("#lora-refresh")                     # a file added while the page is open
        page.click("#lora-2 input")
        page.get_by_role("option", name="added_later", exact=True).wait_for(timeout=20_000)
    assert guard_refusals() == []


@pytest.mark.parametrize("backend", ["local", "inprocess"])
def test_a_page_opened_while_preload_starts_turns_into_the_app_by_itself(backend, tiny_model_dir, tmp_path):
    """`webui.py --preload`, a browser opened the moment the port takes connections. With the default
    backend (local: the model in a worker process) the page comes first: the first answer is the page
    itself (200), and its status panel shows the load until the model is in. With --backend inprocess
    the model comes first (web/launch.py): the first answer is the starting page (503), which reloads
    itself until the real page is there. In both, the user reaches the loaded model with no reload."""
    import signal
    import subprocess
    import sys

    import requests
    from conftest import free_port
    from zimage.web.page.page_text import text

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "webui.py", "--model", str(tiny_model_dir), "--preload", "--port",
                             str(port), "--outputs", str(tmp_path / "out"), "--idle-unload", "0", "--idle-drop", "0",
                             "--backend", backend],
                            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        first = []

        def answered() -> bool:
            assert proc.poll() is None
            try:
                first.append(requests.get(url + "/", timeout=30).status_code)
                return True
            except requests.ConnectionError:
                return False
        wait_for(answered, 180, interval=0.02, message="the port to take connections")
        with chromium.new_page(DESKTOP) as page:
            page.goto(url)
            started_on = page.title()
            page.wait_for_selector("#status-panel .zi-state", timeout=120_000)
            # the tiny model preloaded on this CPU machine, shown without a reload
            page.wait_for_selector('#status-panel .zi-state[data-state="on_cpu"]', timeout=120_000)
        if backend == "local":
            assert first == [200] and started_on != text("starting_title"), (first, started_on)
        else:
            assert first == [503] and started_on == text("starting_title"), (first, started_on)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
