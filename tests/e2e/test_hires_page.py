"""Hires fix and Upscale in a real browser on the tiny model: Upscale on a Generate result adds
the 2x picture to the gallery (saved with A1111 extras' keys), and the ticked Hires fix accordion
makes Generate's picture 2x with A1111's hires keys. Every event passes the Gradio guard."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from .test_browser import CHROMIUM, EventCalls, guard_refusals, page, set_slider  # noqa: F401: fixtures
from conftest import wait_for, wait_for_page

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}")]


def saved(server) -> list[Path]:
    return sorted(Path(server.settings.outputs_dir).rglob("*.png"), key=lambda p: p.stat().st_mtime)


def test_upscale_a_result_then_generate_with_hires_fix(page, server):
    """The Hires fix settings and the gallery's pick reach the server as events of their own, before
    the Upscale or Generate that reads them: the test waits for them to be answered (EventCalls)."""
    calls = EventCalls(page)
    page.fill("#prompt textarea", "a lighthouse at dusk")
    set_slider(page, "width", 256)
    set_slider(page, "height", 256)
    set_slider(page, "steps", 2)
    page.locator("#seed input").fill("77")
    page.locator("#seed input").press("Enter")
    page.click("#generate-btn")
    page.wait_for_selector("#gallery img", timeout=90_000)
    wait_for(lambda: len(saved(server)) == 1, 30, message="the first picture saved")

    page.locator("#hires-panel").get_by_text("Hires fix").first.click()      # open the accordion
    for _ in range(3):        # typed while the accordion was still being drawn, the value went back to 0
        since = calls.sent
        set_slider(page, "hires-steps", 1)
        if calls.settled(since, "hires-steps", "change")[3] == 1:        # (enabled, upscaler, scale, steps, strength)
            break
    else:
        raise AssertionError("the Hires steps slider did not keep 1")
    since = calls.sent
    page.locator("#gallery img").first.click()                              # pick it
    calls.settled(since, "gallery", "select")
    page.click("#upscale-btn")
    wait_for(lambda: len(saved(server)) == 2, 120, message="the upscaled picture saved")
    wait_for_page(lambda: page.locator("#gallery .thumbnail-item, #gallery button img").count() >= 2 or
                  page.locator("#gallery img").count() >= 2, 30, message="two pictures in the gallery")
    upscaled = Image.open(saved(server)[-1])
    assert upscaled.size == (512, 512)
    params = upscaled.text["parameters"]
    assert params.startswith("a lighthouse at dusk") and "Seed: 77" in params
    assert "Postprocess upscale by: 2" in params and "Postprocess upscaler: Lanczos" in params
    assert "Refine steps: 1, Refine strength: 0.3" in params

    since = calls.sent
    page.locator("#hires-enabled input").check()
    calls.settled(since, "hires-enabled", "change")
    page.click("#generate-btn")
    wait_for(lambda: len(saved(server)) == 3, 120, message="the hires fix picture saved")
    hires = Image.open(saved(server)[-1])
    assert hires.size == (512, 512)
    assert "Size: 256x256" in hires.text["parameters"] and "Hires upscale: 2" in hires.text["parameters"]
    assert "Denoising strength: 0.3" in hires.text["parameters"]

    # History's viewer: its picked picture upscaled (found by its entry id, server-side), shown on Generate
    page.locator("#hires-enabled input").uncheck()
    page.get_by_role("tab", name="History").click()
    page.wait_for_selector("#history-gallery img", timeout=30_000)
    page.locator("#history-gallery img").last.click()                  # the oldest: the 256x256 first picture
    wait_for_page(lambda: page.locator("#history-upscale-btn").is_visible(), 30, message="History's Upscale")
    page.click("#history-upscale-btn")
    wait_for(lambda: len(saved(server)) == 4, 120, message="History's picture upscaled")
    assert Image.open(saved(server)[-1]).size == (512, 512)
    wait_for_page(lambda: page.get_by_role("tab", name="Generate").get_attribute("aria-selected") == "true", 60,
                  message="back on Generate")
