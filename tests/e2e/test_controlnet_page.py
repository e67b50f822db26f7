"""The ControlNet panel in a real browser: drop a control image, see its canny map, generate with
it; the ControlNet comes from the local fake hub on first use and the PNG records the unit. The
page's own upload passes the Gradio guard."""
from __future__ import annotations

import os

import pytest
from PIL import Image
from test_controlnet import cn_server, hub, square_png, tiny_controlnet_dir  # noqa: F401: fixtures

from .test_browser import CHROMIUM, browser_page, guard_refusals, set_slider  # noqa: F401: fixtures
from conftest import wait_for_page

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}")]


@pytest.fixture
def cn_page(cn_server, guard_refusals):
    with browser_page(cn_server.url, {"width": 1400, "height": 1200}) as page:
        yield page
    assert guard_refusals() == []


def generate(page, seed: int) -> None:
    page.fill("#prompt textarea", "a cat")
    set_slider(page, "width", 256)
    set_slider(page, "height", 256)
    set_slider(page, "steps", 2)
    page.locator("#seed input").fill(str(seed))
    page.click("#generate-btn")
    wait_for_page(lambda: f"seeds {seed}" in page.inner_text("#result-info"), 120, message="result info")


def parameters(server, seed: int) -> str:
    files = list(server.manager._store.root.rglob(f"*-{seed}.png"))
    assert len(files) == 1
    return Image.open(files[0]).text["parameters"]


def test_controlnet_panel_previews_the_canny_map_and_steers_the_image(cn_page, cn_server, hub, tmp_path):
    page = cn_page
    page.locator("#controlnet-panel").get_by_text("ControlNet").first.click()
    page.locator("#controlnet-enabled input").wait_for(state="visible")
    page.locator("#controlnet-enabled input").check()
    control = tmp_path / "square.png"
    control.write_bytes(square_png())
    page.locator("#controlnet-image input[type=file]").set_input_files(str(control))
    page.locator("#controlnet-preview img").wait_for(state="visible", timeout=30_000)
    wait_for_page(lambda: "square.png (256x256)" in page.inner_text("#controlnet-note"), 10, message="the image named")
    assert not hub.file_requests                      # the preview is computed here; nothing downloaded yet
    set_slider(page, "controlnet-weight", 0.8)
    generate(page, 1234)
    assert 'ControlNet 0: "Module: canny, Model: Z-Image-Turbo-Fun-Controlnet-Union, Weight: 0.8, ' \
           'Guidance Start: 0, Guidance End: 1"' in parameters(cn_server, 1234)
    assert [p for p, _ in hub.file_requests] == ["Z-Image-Turbo-Fun-Controlnet-Union.safetensors"]
    page.locator("#controlnet-module label", has_text="None").click()
    generate(page, 1235)
    assert '"Module: none' in parameters(cn_server, 1235)
    page.locator("#controlnet-enabled input").uncheck()
    generate(page, 1236)
    assert "ControlNet" not in parameters(cn_server, 1236)
    assert cn_server.manager.load_count == 1
