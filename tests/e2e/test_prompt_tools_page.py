"""Variety and the prompt enhancer in a real browser on the tiny model (issue 32): the Variety slider
goes into the PNG's parameters and PNG info's Send to Generate and History's Use these settings put it
back; ✨ Enhance rewrites the prompt (an OpenAI-compatible endpoint started here, then the loaded text
encoder), ↶ Undo gives the person's words back exactly, the instruction setting reaches the enhancer
and survives a reload, the PNG keeps the original prompt, a running generation makes Enhance wait
(and Stop ends both), and an enhancer that cannot run says why, in English and in Chinese."""
from __future__ import annotations

import dataclasses
import os
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from zimage.enhance_request import DEFAULT_SYSTEM_PROMPT
from zimage.infotext import parse_infotext
from zimage.request import GenerationRequest

from .test_browser import CHROMIUM, browser_page, guard_refusals, open_settings, page, set_slider  # noqa: F401
from conftest import Gate, wait_for, wait_for_page
from test_enhance import FakeOpenAI

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}")]


def saved(server) -> list[Path]:
    return sorted(Path(server.settings.outputs_dir).rglob("*.png"), key=lambda p: p.stat().st_mtime)


def small_and_quick(page, seed: int) -> None:
    set_slider(page, "width", 256)
    set_slider(page, "height", 256)
    set_slider(page, "steps", 2)
    page.locator("#seed input").fill(str(seed))


def variety_of(page) -> str:
    return page.input_value("#variety input[type=number]")


def open_tab(page, name: str) -> None:
    tab = page.get_by_role("tab", name=name)
    tab.click()
    wait_for_page(lambda: tab.get_attribute("aria-selected") == "true", 10, message=f"the {name} tab")


def prompt_of(page) -> str:
    return page.input_value("#prompt textarea")


def test_variety_goes_into_the_png_and_pnginfo_and_history_put_it_back(page, server):
    page.fill("#prompt textarea", "a fox in the snow")
    small_and_quick(page, 11)
    assert variety_of(page) == "0"                                   # off by default, as in the API
    set_slider(page, "variety", 0.35)
    page.click("#generate-btn")
    wait_for(lambda: len(saved(server)) == 1, 90, message="the picture saved")
    params = Image.open(saved(server)[0]).text["parameters"]
    assert "Variety: 0.35" in params and "Seed: 11" in params

    set_slider(page, "variety", 0)
    open_tab(page, "History")
    page.wait_for_selector("#history-gallery .thumbnail-item")
    page.locator("#history-gallery .thumbnail-item").first.click()
    wait_for_page(lambda: page.is_enabled("#history-use"), 20, message="History's Use these settings")
    page.click("#history-use")
    wait_for_page(lambda: variety_of(page) == "0.35", 20, message="History's variety back on the slider")

    # An image made without variety sends 0 (its seed alone would make another picture with 0.35 left on)
    plain = server.manager.generate(GenerationRequest(prompt="a plain one", width=256, height=256,
                                                      num_inference_steps=2, seed=3), timeout=120).images[0].path
    for path, prompt, expected in ((saved(server)[0], "a fox in the snow", "0.35"), (plain, "a plain one", "0")):
        set_slider(page, "variety", 0.8)
        open_tab(page, "PNG info")
        page.locator("#pnginfo-file input[type=file]").set_input_files(str(path))
        # this PNG's own text (the one read before stays until the new one is read: Send sent it)
        wait_for_page(lambda: page.input_value("#pnginfo-raw textarea").startswith(prompt), 30, message="the PNG read")
        page.click("#pnginfo-send")
        wait_for_page(lambda: page.locator("#prompt textarea").is_visible(), 10, message="the Generate tab")
        wait_for_page(lambda: variety_of(page) == expected, 10, message=f"PNG info's variety {expected}")


@pytest.fixture
def endpoint():
    """The fake OpenAI-compatible chat endpoint (tests/test_enhance.py's), stoppable mid-test."""
    FakeOpenAI.seen, FakeOpenAI.delay_s = [], 0.0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", httpd
    httpd.shutdown()
    httpd.server_close()


def test_enhance_undo_the_instruction_setting_and_the_original_in_the_png(start_server, settings, endpoint,
                                                                          guard_refusals):
    url, httpd = endpoint
    srv = start_server(dataclasses.replace(settings, enhancer_url=url, enhancer_model="fake-model"))
    mine = 'a red fox, "HELLO" sign  \n  second line '          # quotes, doubled spaces, a newline: back exactly
    with browser_page(srv.url) as page:
        assert page.is_disabled("#enhance-undo")
        page.fill("#prompt textarea", mine)
        page.click("#enhance-btn")
        wait_for_page(lambda: prompt_of(page) == FakeOpenAI.answer, 30, message="the rewrite in the prompt")
        system, user = FakeOpenAI.seen[-1][1]["messages"]
        assert system == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}    # the setting empty: the built-in
        assert user == {"role": "user", "content": mine}
        assert "Prompt enhanced" in page.inner_text("#enhance-note")
        wait_for_page(lambda: page.is_enabled("#enhance-undo"), 10, message="Undo enabled")
        page.click("#enhance-undo")
        wait_for_page(lambda: prompt_of(page) == mine, 10, message="the person's prompt back")
        wait_for_page(lambda: page.is_disabled("#enhance-undo"), 10, message="nothing left to undo")

        open_settings(page)
        page.fill("#enhancer-system-prompt textarea", "Answer in capitals.")
        page.click("#enhance-btn")
        wait_for_page(lambda: prompt_of(page) == FakeOpenAI.answer, 30, message="the second rewrite")
        assert FakeOpenAI.seen[-1][1]["messages"][0]["content"] == "Answer in capitals."
        box = page.locator("#prompt textarea")                     # an edit by hand keeps the link
        box.press("End")
        box.type(" Extra.")
        small_and_quick(page, 21)
        page.click("#generate-btn")
        wait_for(lambda: len(saved(srv)) == 1, 90, message="the picture saved")
        params = parse_infotext(Image.open(saved(srv)[0]).text["parameters"])
        assert params["prompt"] == FakeOpenAI.answer + " Extra." and params["original_prompt"] == mine

        page.reload()                                               # kept in the browser: setting, prompt, link
        page.wait_for_selector("#status-panel .zi-state")
        wait_for_page(lambda: prompt_of(page) == FakeOpenAI.answer + " Extra.", 20, message="the prompt kept")
        open_settings(page)
        assert page.input_value("#enhancer-system-prompt textarea") == "Answer in capitals."
        wait_for_page(lambda: page.is_enabled("#enhance-undo"), 20, message="Undo still there after the reload")
        page.click("#enhance-undo")
        wait_for_page(lambda: prompt_of(page) == mine, 10, message="the person's prompt back after a reload")

        httpd.shutdown()                                            # the enhancer cannot run: the page says why
        httpd.server_close()
        page.click("#enhance-btn")
        wait_for_page(lambda: "could not be enhanced" in page.inner_text("#enhance-note"), 30, message="the failure said")
        note = page.inner_text("#enhance-note")
        assert "cannot be reached" in note and "--enhancer-url" in note and "unchanged" in note
        assert prompt_of(page) == mine
        page.locator("#lang-switch").get_by_text("中文").click()
        wait_for_page(lambda: page.locator("#lang-switch input[value=zh]").is_checked(), 15, message="the switch")
        page.click("#enhance-btn")
        wait_for_page(lambda: "无法优化提示词" in page.inner_text("#enhance-note"), 30, message="the failure in Chinese")
        note = page.inner_text("#enhance-note")
        assert "无法连接" in note and "cannot be reached" not in note and "你的提示词没有改变" in note, note
        assert prompt_of(page) == mine
    assert srv.manager.load_count == 1           # the generation's load; the endpoint never needed the model


def test_enhance_waits_for_a_running_generation_stop_ends_it_then_the_text_encoder_rewrites(page, server):
    gate = Gate(server.manager)
    page.fill("#prompt textarea", "a cat")
    small_and_quick(page, 5)
    page.click("#generate-btn")
    assert gate.entered.wait(60)
    page.click("#enhance-btn")
    wait_for_page(lambda: any("waits for the model" in t.inner_text()
                         for t in page.locator("[data-testid=toast-text]").all()), 20, message="the busy note")
    wait_for_page(lambda: page.is_enabled("#stop-btn"), 20, message="Stop enabled")
    page.click("#stop-btn")
    gate.release.set()
    wait_for_page(lambda: "Enhance stopped" in page.inner_text("#enhance-note"), 30, message="the enhancement stopped")
    assert prompt_of(page) == "a cat"

    page.click("#enhance-btn")                     # the tiny model's own text encoder writes (random words)
    wait_for_page(lambda: "Prompt enhanced" in page.inner_text("#enhance-note"), 60, message="the rewrite")
    assert prompt_of(page) not in ("", "a cat")
    page.click("#enhance-undo")
    wait_for_page(lambda: prompt_of(page) == "a cat", 10, message="Undo")


def test_an_enhancer_whose_model_cannot_load_says_so_in_chinese(start_server, settings, tmp_path, guard_refusals):
    srv = start_server(dataclasses.replace(settings, model=str(tmp_path / "no-such-model")))
    with browser_page(srv.url) as page:
        page.locator("#lang-switch").get_by_text("中文").click()
        wait_for_page(lambda: page.locator("#lang-switch input[value=zh]").is_checked(), 15, message="the switch")
        page.fill("#prompt textarea", "一只猫")
        page.click("#enhance-btn")
        wait_for_page(lambda: "无法优化提示词" in page.inner_text("#enhance-note"), 60, message="the failure in Chinese")
        note = page.inner_text("#enhance-note")
        assert "找不到模型文件夹" in note and "你的提示词没有改变" in note and prompt_of(page) == "一只猫", note
