"""The Edit tab in a real browser: an image dropped into the editor, a mask drawn on it with the
mouse, inpainted; the pixels away from the stroke come back as they were. The editor's images pass
the Gradio guard (the page fixture fails on any refusal)."""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .test_browser import CHROMIUM, EventCalls, guard_refusals, page, set_slider  # noqa: F401: fixtures
from conftest import wait_for, wait_for_page

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}")]
SIZE = 256
# Gradio's editor starts on an 800x800 canvas and resizes it to a dropped image a moment later, with
# nothing in the page to say when: a stroke drawn before that exports an 800x800 background (seen in
# full CI runs under load, even after a 1.5 s wait). A picture of that size leaves nothing to resize.
EDITOR_CANVAS = 800


def picture(size: int = SIZE) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack([x * 255 // (size - 1), y * 255 // (size - 1), np.full_like(x, 90)], -1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def shows_the_picture(png: bytes) -> bool:
    """Whether a screenshot shows picture()'s gradient, at whatever scale the editor draws it: a
    twentieth of it or more has the picture's blue (90; the page's own colours and a blank canvas
    have none), with both its dark and its bright reds among those pixels."""
    if not png:
        return False
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), int)
    ours = np.abs(shot[..., 2] - 90) <= 12
    reds = shot[..., 0][ours]
    return float(ours.mean()) >= 0.05 and bool((reds < 60).any() and (reds > 200).any())


def shows_the_tiny_models_image(png: bytes) -> bool:
    """Whether a screenshot shows an image of the tiny model: its random weights paint vivid noise,
    strongly coloured pixels over a twentieth or more of the editor's box (the page's own colours and
    the editor's empty "Upload an image" canvas: under 0.1%)."""
    if not png:
        return False
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), int)
    return float(((shot.max(-1) - shot.min(-1)) > 80).mean()) >= 0.05


def open_tab(page, name: str) -> None:
    tab = page.get_by_role("tab", name=name)
    tab.click()
    wait_for_page(lambda: tab.get_attribute("aria-selected") == "true", 10, message=f"the {name} tab")


def shot_of(page, element) -> bytes:
    """The pixels where `element` is: a page screenshot of its box. Playwright's element screenshot
    first waits for the element to hold still, and the editor (its tab's buttons re-drawn by the
    status timer each second) could keep it waiting past its timeout on two busy cores."""
    box = element.bounding_box()
    if not box or box["width"] < 1 or box["height"] < 1:
        return b""
    return page.screenshot(clip=box)


# A look at the editor is a screenshot of its box. At wait_for's 50 ms pace the looks cost chromium
# 5.0 CPU-s per 10 s (0.78 idle; /tmp probe on the demo app, 2026-12-07), half a core of a 2-core
# machine taken from the very drawing they wait for (CI that day: eight drops in a row not drawn).
# Two looks a second see the picture as soon as a person would.
LOOK_EVERY_S = 0.5


def drop_into_editor(page, path: Path, waits_s: tuple[float, ...] = (10, 20, 30)) -> None:
    """Give the editor a file and wait until it draws it, as a person would before painting. The
    editor draws on canvases it makes once its tab is shown: a file given before them was lost (the
    editor went on showing "Upload an image"; 1 page in 4 in a probe on a quiet machine, 2026-12-07).
    A person drops it again; each drop here is a copy under a new name: chromium fires no change event
    when a file input is given the file it holds (a probe: two sets of one file, 1 event; then another
    name, 2), so the drops after a lost first one never reached the editor (CI, 2026-12-07)."""
    editor = page.locator("#edit-image")
    wait_for_page(lambda: editor.locator("canvas").count() > 0, 30, message="the editor's canvas")
    for n, wait_s in enumerate(waits_s):
        drop = path if n == 0 else Path(shutil.copyfile(path, path.with_name(f"{path.stem}-{n}{path.suffix}")))
        editor.locator("input[type=file]").set_input_files(str(drop))
        try:
            wait_for(lambda: shows_the_picture(shot_of(page, editor)), wait_s, LOOK_EVERY_S,
                     message="the picture drawn in the editor")
            return
        except AssertionError:
            continue
    raise AssertionError(f"the editor did not draw {path.name} after {len(waits_s)} drops")


def saved_images(server) -> list[Path]:
    return sorted(Path(server.settings.outputs_dir).rglob("*.png"), key=lambda p: p.stat().st_mtime)


def test_inpaint_a_drawn_mask(page, server, tmp_path):
    source = tmp_path / "source.png"
    picture(EDITOR_CANVAS).save(source)
    open_tab(page, "Edit")
    page.get_by_text("Inpaint (draw the mask)").click()
    page.locator("#edit-prompt textarea").fill("a red square")
    set_slider(page, "edit-steps", 2)
    drop_into_editor(page, source)
    canvas = page.locator("#edit-image canvas").first
    wait_for_page(lambda: canvas.bounding_box() is not None and canvas.bounding_box()["width"] > 50, 20,
                  message="the editor's canvas")
    brush = page.locator("#edit-image").get_by_role("button", name="Brush")
    if brush.count():
        brush.first.click()
    box = canvas.bounding_box()
    # a stroke across the middle of the image
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    for i in range(11):
        page.mouse.move(box["x"] + box["width"] * (0.4 + 0.02 * i), box["y"] + box["height"] * 0.5, steps=2)
    page.mouse.up()
    before = len(saved_images(server))
    page.click("#edit-btn")
    wait_for(lambda: len(saved_images(server)) > before, 120, message="the inpainted image saved")
    wait_for_page(lambda: page.locator("#edit-gallery img").count() > 0, 30, message="the result shown")
    out = Image.open(saved_images(server)[-1])
    assert "Mode: inpaint" in out.info["parameters"] and "Mask blur: 4" in out.info["parameters"]
    result = np.asarray(out.convert("RGB"), int)
    src = np.asarray(picture(EDITOR_CANVAS), int)
    assert result.shape == src.shape
    diff = np.abs(result - src).max(-1)
    changed = diff > 2
    assert changed.any(), "the drawn stroke was inpainted"
    rows, cols = np.nonzero(changed)
    # only around the stroke (the middle row band): the top and bottom quarters are untouched
    quarter = EDITOR_CANVAS // 4
    assert np.abs(result - src)[:quarter].max() <= 1 and np.abs(result - src)[-quarter:].max() <= 1
    assert EDITOR_CANVAS * 0.25 < rows.mean() < EDITOR_CANVAS * 0.75


def test_send_to_edit_from_the_gallery_and_history_then_img2img_at_strength_0(page, server):
    """Edit exports what its editor has drawn: the canvas is there before a sent image is drawn on
    it (an Edit clicked in between, on a loaded machine, sent the empty or the previous picture), so
    the test waits, as a person would, until the editor shows the sent image."""
    page.locator("#prompt textarea").fill("a lighthouse")
    set_slider(page, "width", SIZE)
    set_slider(page, "height", SIZE)
    set_slider(page, "steps", 2)
    page.click("#generate-btn")
    wait_for_page(lambda: page.locator("#gallery img").count() > 0, 120, message="the generated image")
    generated = saved_images(server)[-1]
    calls = EventCalls(page)
    since = calls.sent
    page.locator("#gallery img").first.click()
    calls.settled(since, "gallery", "select")       # the pick, kept server-side, before the send reads it
    page.click("#send-to-edit")
    tab = page.get_by_role("tab", name="Edit")
    wait_for_page(lambda: tab.get_attribute("aria-selected") == "true", 30, message="the Edit tab")
    assert page.locator("#edit-prompt textarea").input_value() == "a lighthouse"
    editor = page.locator("#edit-image")
    wait_for(lambda: shows_the_tiny_models_image(shot_of(page, editor)), 30, LOOK_EVERY_S, message="the image drawn in the editor")
    set_slider(page, "edit-strength", 0)
    before = len(saved_images(server))
    page.click("#edit-btn")
    wait_for(lambda: len(saved_images(server)) > before, 120, message="the edited image saved")
    out = np.asarray(Image.open(saved_images(server)[-1]).convert("RGB"), int)
    assert np.abs(out - np.asarray(Image.open(generated).convert("RGB"), int)).max() <= 1   # strength 0: the input

    # History's newest: a picture unlike the one in the editor (saved as the app saves its images),
    # so the editor is seen to change to it before Edit is clicked.
    newest = server.manager._store.save(picture(), 5, "a gradient\nSteps: 2, Seed: 5, Size: 256x256")
    open_tab(page, "History")
    wait_for_page(lambda: page.locator("#history-gallery img").count() >= 3, 30, message="the history thumbnails")
    since = calls.sent
    page.locator("#history-gallery img").first.click()
    calls.settled(since, "history-gallery", "select")
    page.click("#history-send-edit")
    wait_for_page(lambda: tab.get_attribute("aria-selected") == "true", 30, message="the Edit tab from History")
    wait_for(lambda: shows_the_picture(shot_of(page, editor)), 30, LOOK_EVERY_S, message="the History image drawn in the editor")
    assert page.locator("#edit-prompt textarea").input_value() == "a gradient"
    before = len(saved_images(server))
    page.click("#edit-btn")
    wait_for(lambda: len(saved_images(server)) > before, 120, message="the History image edited")
    out = np.asarray(Image.open(saved_images(server)[-1]).convert("RGB"), int)
    assert np.abs(out - np.asarray(Image.open(newest).convert("RGB"), int)).max() <= 1


def test_a_picture_in_the_editor_is_not_exported_at_each_status_refresh(page, server, tmp_path):
    """Every Gradio event made Gradio's frontend re-read each component an event ever used, and the
    editor answers with three PNG exports of its picture: a one-second status tick as a Gradio event
    kept a page with a picture in Edit busy for good (1.3 CPU-s/s in headless chromium). The panel's
    refresh is our own fetch (ui_status_feed): it goes on, and nothing is exported meanwhile."""
    source = tmp_path / "source.png"
    picture(EDITOR_CANVAS).save(source)
    open_tab(page, "Edit")
    drop_into_editor(page, source)
    fetches = []
    page.on("request", lambda r: fetches.append(r.url) if "/page/status" in r.url else None)
    page.evaluate("""() => { window.ziExports = 0; const f = HTMLCanvasElement.prototype.toBlob;
        HTMLCanvasElement.prototype.toBlob = function (...a) { window.ziExports++; return f.apply(this, a); }; }""")
    page.wait_for_timeout(3500)
    assert len(fetches) >= 2, fetches                      # the panel refreshed meanwhile
    assert page.evaluate("() => window.ziExports") == 0
