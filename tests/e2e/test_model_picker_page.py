"""The model picker in a real browser: pick the second model found under --models-from; the page
says it is switching and the status panel shows its load; steps and guidance move to the base
model's defaults (the user had left Turbo's); a generation's PNG names the new model."""
from __future__ import annotations

import dataclasses
import os

import pytest
from PIL import Image
from test_model_switch import BASE, other_root  # noqa: F401: fixtures

from .test_browser import CHROMIUM, browser_page, guard_refusals, set_slider  # noqa: F401: fixtures
from conftest import wait_for

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}")]


def test_pick_the_second_model_and_generate_with_it(start_server, settings, other_root, guard_refusals):
    srv = start_server(dataclasses.replace(settings, models_from=(str(other_root),)))
    with browser_page(srv.url) as page:
        picker = page.locator("#model-picker input")
        wait_for(lambda: picker.input_value().startswith("tiny"), 30, message="the current model shown")
        picker.click()
        page.get_by_role("option", name=BASE, exact=False).first.click()
        wait_for(lambda: f"Switching to {BASE}" in page.inner_text("#model-note"), 60,
                 message=f"the switch said (note {page.inner_text('#model-note')!r}, picker {picker.input_value()!r}, refusals {guard_refusals()})")
        wait_for(lambda: srv.manager.status().model.endswith(BASE), 30, message="the backend switching")
        wait_for(lambda: "Ready" in page.inner_text("#status-panel"), 90, message="the new model loaded")
        assert page.locator("#steps input[type=number]").input_value() == "30"
        assert page.locator("#guidance input[type=number]").input_value() == "4"
        page.fill("#prompt textarea", "a cat")
        set_slider(page, "width", 256)
        set_slider(page, "height", 256)
        set_slider(page, "steps", 2)
        page.locator("#seed input").fill("4321")
        page.click("#generate-btn")
        wait_for(lambda: "seeds 4321" in page.inner_text("#result-info"), 120, message="result info")
    files = list(srv.manager._store.root.rglob("*-4321.png"))
    assert len(files) == 1
    text = Image.open(files[0]).text["parameters"]
    assert f"Model: {BASE}" in text and "Model hash: " in text and "Steps: 2," in text
    assert guard_refusals() == []
