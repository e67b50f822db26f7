"""The PNG info tab in a real browser: drop our PNG and an A1111 PNG, read the fields, send them to
Generate; a broken file says what is wrong. The page's own upload passes the Gradio guard."""
from __future__ import annotations

import io
import os

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from zimage.infotext import infotext
from zimage.request import GenerationRequest
from zimage.store.outputs import OutputStore

from .test_browser import CHROMIUM, browser_page, guard_refusals, page  # noqa: F401: fixtures
from conftest import wait_for_page

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}")]

A1111 = ("masterpiece, a castle on a hill\nNegative prompt: lowres, bad hands\n"
         "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 3141592653, Size: 512x768, "
         "Model: v1-5-pruned-emaonly, Version: v1.9.4")


def value_of(page, selector: str) -> str:
    return page.locator(selector).input_value()


def open_tab(page, name: str) -> None:
    tab = page.get_by_role("tab", name=name)
    tab.click()
    wait_for_page(lambda: tab.get_attribute("aria-selected") == "true", 10, message=f"the {name} tab")


def drop(page, path) -> None:
    page.locator("#pnginfo-file input[type=file]").set_input_files(str(path))


def test_read_our_png_and_an_a1111_png_and_send_them_to_generate(page, tmp_path, guard_refusals):
    req = GenerationRequest(prompt="a lighthouse at dusk", negative_prompt="fog", width=832, height=1216,
                            num_inference_steps=6, guidance_scale=1.5, seed=4242)
    ours = OutputStore(tmp_path / "theirs").save(Image.new("RGB", (64, 96)), 4242, infotext(req, 4242))
    open_tab(page, "PNG info")
    drop(page, ours)
    wait_for_page(lambda: value_of(page, "#pnginfo-prompt textarea") == "a lighthouse at dusk", 30, message="prompt read")
    assert value_of(page, "#pnginfo-negative textarea") == "fog"
    summary = page.inner_text("#pnginfo-summary")
    assert "4242" in summary and "832x1216" in summary and "Z-Image-Turbo" in summary
    assert "Seed: 4242" in value_of(page, "#pnginfo-raw textarea")
    page.click("#pnginfo-send")
    wait_for_page(lambda: page.locator("#prompt textarea").is_visible(), 10, message="the Generate tab")
    wait_for_page(lambda: value_of(page, "#prompt textarea") == "a lighthouse at dusk", 10, message="prompt sent")
    assert value_of(page, "#negative-prompt textarea") == "fog"
    assert value_of(page, "#seed input") == "4242"
    assert value_of(page, "#width input[type=number]") == "832"
    assert value_of(page, "#height input[type=number]") == "1216"
    assert value_of(page, "#steps input[type=number]") == "6"
    assert value_of(page, "#guidance input[type=number]") == "1.5"

    meta = PngInfo()
    meta.add_text("parameters", A1111)
    a1111 = tmp_path / "00001-3141592653.png"
    Image.new("RGB", (51, 76)).save(a1111, pnginfo=meta)
    open_tab(page, "PNG info")
    drop(page, a1111)
    wait_for_page(lambda: value_of(page, "#pnginfo-prompt textarea") == "masterpiece, a castle on a hill", 30,
                  message="A1111 prompt read")
    assert "v1-5-pruned-emaonly" in page.inner_text("#pnginfo-summary")
    page.click("#pnginfo-send")
    wait_for_page(lambda: value_of(page, "#prompt textarea") == "masterpiece, a castle on a hill", 10, message="sent")
    assert value_of(page, "#steps input[type=number]") == "28"
    assert value_of(page, "#width input[type=number]") == "512"
    assert value_of(page, "#seed input") == "3141592653"
    assert guard_refusals() == []


@pytest.fixture
def page_with_refusals(server, guard_refusals):
    """`page` without its check that the guard refused nothing: the broken file is refused there."""
    with browser_page(server.url) as page:
        yield page


def test_a_broken_file_says_what_is_wrong(page_with_refusals, tmp_path, guard_refusals):
    page = page_with_refusals
    buf = io.BytesIO()
    Image.frombytes("RGB", (128, 128), os.urandom(128 * 128 * 3)).save(buf, format="PNG")    # ~49 KB
    broken = tmp_path / "broken.png"
    broken.write_bytes(buf.getvalue()[:20_000])             # cut inside the image data
    open_tab(page, "PNG info")
    drop(page, broken)
    wait_for_page(lambda: "The uploaded image could not be read: image file is truncated."
                  in page.inner_text("body"), 30, message="the error shown, when the file is dropped")
    assert value_of(page, "#pnginfo-prompt textarea") == ""
    assert [m for m in guard_refusals() if "truncated" not in m] == []       # the one refusal is that file's
    page.click("#pnginfo-send")
    wait_for_page(lambda: "Drop an image" in page.inner_text("#pnginfo-note"), 10, message="nothing to send")
