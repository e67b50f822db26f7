"""Variety and the prompt enhancer in a real browser on the tiny model (issue 32): the Variety slider
goes into the PNG's parameters and PNG info's Send to Generate and History's Use these settings put it
back; ✨ Enhance rewrites the prompt (an OpenAI-compatible endpoint started here, then the loaded text
encoder), ↶ Undo gives the person's words back exactly, the instruction setting reaches the enhancer
and survives a reload, the PNG keeps the original prompt, a running generation makes Enhance wait
(and Stop ends both), and an enhancer that cannot run says why, in English and in Chinese."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from PIL import Image

from zimage.request import GenerationRequest

from .test_browser import CHROMIUM, guard_refusals, page, set_slider  # noqa: F401
from conftest import wait_for

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
    wait_for(lambda: tab.get_attribute("aria-selected") == "true", 10, message=f"the {name} tab")


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
    wait_for(lambda: page.is_enabled("#history-use"), 20, message="History's Use these settings")
    page.click("#history-use")
    wait_for(lambda: variety_of(page) == "0.35", 20, message="History's variety back on the slider")

    # An image made without variety sends 0 (its seed alone would make another picture with 0.35 left on)
    plain = server.manager.generate(GenerationRequest(prompt="a plain one", width=256, height=256,
                                                      num_inference_steps=2, seed=3), timeout=120).images[0].path
    for path, expected in ((saved(server)[0], "0.35"), (plain, "0")):
        set_slider(page, "variety", 0.8)
        open_tab(page, "PNG info")
        page.locator("#pnginfo-file input[type=file]").set_input_files(str(path))
        wait_for(lambda: "Seed" in page.input_value("#pnginfo-raw textarea"), 30, message="the PNG read")
        page.click("#pnginfo-send")
        wait_for(lambda: page.locator("#prompt textarea").is_visible(), 10, message="the Generate tab")
        wait_for(lambda: variety_of(page) == expected, 10, message=f"PNG info's variety {expected}")
