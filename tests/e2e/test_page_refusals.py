"""Refusals in a real browser, as a new user met them (issue 28): a non-image dropped on the page
showed `HTTP 415: {"error": ...}` (with \\u escapes in Chinese); a broken image dropped into the
Edit editor was refused only after Edit; a long prompt was cut without a word; an empty Seed
showed a Python error. Now: a sentence in the page's language, when it happens."""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from zimage.web.page.page_text import text

import chromium

from .test_browser import CHROMIUM, guard_refusals, page, set_slider  # noqa: F401: fixtures
from .test_edit_page import drop_into_editor, picture, shows_the_picture
from conftest import wait_for_page

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}")]


@contextlib.contextmanager
def page_in(url: str, locale: str):
    with chromium.new_page({"width": 1400, "height": 1000}, locale) as pg:
        pg.goto(url)
        pg.wait_for_selector("#status-panel .zi-state")
        yield pg


def toasts(pg) -> list[str]:
    return [t.inner_text() for t in pg.locator("[data-testid=toast-text]").all()]


def open_tab(pg, key: str, lang: str) -> None:
    tab = pg.get_by_role("tab", name=text(key, lang))
    tab.click()
    wait_for_page(lambda: tab.get_attribute("aria-selected") == "true", 10, message=f"the {key} tab")


@pytest.mark.parametrize("locale,lang,words", [("en-US", "en", "The uploaded image is not a PNG, JPEG or WebP image"),
                                               ("zh-CN", "zh", "上传的图片不是 PNG、JPEG 或 WebP 图片")])
def test_a_file_that_is_no_image_is_refused_in_a_toast_of_words(server, tmp_path, locale, lang, words):
    notes = tmp_path / "notes.png"
    notes.write_text("hello, this is text")
    with page_in(server.url, locale) as pg:
        open_tab(pg, "tab_pnginfo", lang)
        pg.locator("#pnginfo-file input[type=file]").set_input_files(str(notes))
        shown = wait_for_page(lambda: [t for t in toasts(pg) if words in t], 20, message="the refusal's toast")
        for toast in shown:
            assert "{" not in toast and "HTTP 4" not in toast and "\\u" not in toast, toast


def test_a_broken_or_tiny_image_dropped_into_the_editor_is_refused_when_dropped(page, server, tmp_path):
    buf = io.BytesIO()
    Image.frombytes("RGB", (128, 128), os.urandom(128 * 128 * 3)).save(buf, format="PNG")
    broken = tmp_path / "broken.png"
    broken.write_bytes(buf.getvalue()[:20_000])            # cut inside the image data
    tiny = tmp_path / "tiny.png"
    picture(32).save(tiny)                                  # below the 64 px an image to edit needs
    open_tab(page, "tab_edit", "en")
    editor = page.locator("#edit-image")
    editor.locator("input[type=file]").set_input_files(str(broken))
    wait_for_page(lambda: any("The Edit image could not be read" in t for t in toasts(page)), 15,
                  message="the broken image refused")
    editor.locator("input[type=file]").set_input_files(str(tiny))
    wait_for_page(lambda: any("The Edit image is 32x32 pixels; an image to edit must be at least 64x64" in t
                         for t in toasts(page)), 15, message="the tiny image refused")
    assert not shows_the_picture(editor.screenshot())       # neither reached the editor
    assert all("data[" not in t and "{" not in t for t in toasts(page))
    good = tmp_path / "good.png"
    picture(256).save(good)
    drop_into_editor(page, good)                            # a good picture still goes in, checked the same way


def test_an_empty_seed_generates_and_a_long_prompt_is_refused_by_its_counter(page, server):
    cap = server.settings.max_prompt_chars
    page.locator("#prompt textarea").fill("a" * (cap + 3))
    wait_for_page(lambda: page.inner_text("#prompt-count").strip() == f"{cap + 3} / {cap}", 10, message="the counter")
    assert page.input_value("#prompt textarea") == "a" * (cap + 3)          # nothing cut
    page.click("#generate-btn")
    wait_for_page(lambda: any(f"Prompt is too long: {cap + 3} / {cap} characters" in t for t in toasts(page)), 20,
                  message="the refusal naming the prompt and its count")
    assert server.manager.load_count == 0

    page.locator("#prompt textarea").fill("a lighthouse")
    wait_for_page(lambda: page.inner_text("#prompt-count").strip() == f"12 / {cap}", 10, message="the counter again")
    page.locator("#seed input").fill("")
    set_slider(page, "width", 256)
    set_slider(page, "height", 256)
    set_slider(page, "steps", 2)
    page.click("#generate-btn")
    wait_for_page(lambda: page.locator("#gallery img").count() > 0, 120, message="the image of a random seed")
    saved = sorted(Path(server.settings.outputs_dir).rglob("*.png"))
    assert len(saved) == 1 and "Seed: " in Image.open(saved[0]).info["parameters"]
    assert not any("int()" in t or "NoneType" in t for t in toasts(page))
