"""The model picker in a real browser: pick the second model found under --models-from; the page
says it is switching and the status panel shows its load; steps and guidance move to the base
model's defaults (the user had left Turbo's); a generation's PNG names the new model."""
from __future__ import annotations

import dataclasses
import os

import pytest
from PIL import Image
from test_model_switch import BASE, other_root  # noqa: F401: fixtures

from .test_browser import CHROMIUM, EventCalls, browser_page, guard_refusals, set_slider  # noqa: F401: fixtures
from conftest import Gate, wait_for, wait_for_page
from zimage.request import GenerationRequest

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}")]


def test_pick_the_second_model_and_generate_with_it(start_server, settings, other_root, guard_refusals):
    srv = start_server(dataclasses.replace(settings, models_from=(str(other_root),)))
    # A generation held running: the switch waits behind it, so the page's words while it waits are
    # seen whatever the machine's speed (the tiny model's load is over in a moment).
    gate = Gate(srv.manager)
    held = srv.manager.submit(GenerationRequest.from_mapping({"prompt": "held", "width": 256, "height": 256,
                                                              "num_inference_steps": 1}))
    assert gate.entered.wait(60)
    with browser_page(srv.url) as page:
        calls = EventCalls(page)
        picker = page.locator("#model-picker input")
        wait_for_page(lambda: picker.input_value().startswith("tiny"), 60, message="the current model shown")
        since = calls.sent
        picker.click()
        page.get_by_role("option", name=BASE, exact=False).first.click()
        # Gradio's dropdown sends the pick twice, the two calls at once: both answered, the note
        # says the switch is on its way (not "in use": the model is not loaded yet).
        calls.settled(since, "model-picker", "input")
        wait_for_page(lambda: f"Switching to {BASE}" in page.inner_text("#model-note"), 30,
                      message=f"the switch said (note {page.inner_text('#model-note')!r}, picker {picker.input_value()!r}, refusals {guard_refusals()})")
        assert "tiny" in srv.manager.status().model and srv.manager.load_count == 1
        gate.release.set()
        held.future.result(60)
        wait_for(lambda: srv.manager.load_count == 2, 90, message="the new model loaded")      # one switch, one load
        assert srv.manager.status().model.endswith(BASE)
        wait_for_page(lambda: "Ready" in page.inner_text("#status-panel"), 30, message="the panel to say Ready")
        assert page.locator("#steps input[type=number]").input_value() == "30"
        assert page.locator("#guidance input[type=number]").input_value() == "4"
        page.fill("#prompt textarea", "a cat")
        set_slider(page, "width", 256)
        set_slider(page, "height", 256)
        set_slider(page, "steps", 2)
        page.locator("#seed input").fill("4321")
        page.locator("#seed input").press("Enter")
        page.click("#generate-btn")
        wait_for_page(lambda: "seeds 4321" in page.inner_text("#result-info"), 120, message="result info")
    files = list(srv.manager._store.root.rglob("*-4321.png"))
    assert len(files) == 1
    text = Image.open(files[0]).text["parameters"]
    assert f"Model: {BASE}" in text and "Model hash: " in text and "Steps: 2," in text
    assert guard_refusals() == []
