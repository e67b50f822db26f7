"""The History tab in a real browser (Playwright driving Debian's chromium), on the tiny model."""
import re
from pathlib import Path

import pytest
from e2e.test_browser import CHROMIUM, guard_refusals, page  # noqa: F401  (fixtures)

from conftest import wait_for_page

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not __import__("os").path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}")]

ACTIONS = ("history-use", "history-reuse-seed", "history-send-edit", "history-delete")
IMAGES = [(101, "a red boat"), (102, "a green tree"), (103, "a blue boat")]    # made in this order


def make_images(manager):
    from zimage.request import GenerationRequest

    paths = {}
    for seed, prompt in IMAGES:
        # guidance above 0, or the negative prompt has no effect and is left out of the infotext
        req = GenerationRequest.from_mapping({"prompt": prompt, "negative_prompt": f"not {prompt}", "seed": seed,
                                              "width": 256, "height": 256, "num_inference_steps": 2,
                                              "guidance_scale": 1.5})
        paths[seed] = manager.generate(req, timeout=120).images[0].path
    return paths


def open_history(page):
    page.get_by_role("tab", name="History").click()
    page.wait_for_selector("#history-gallery .thumbnail-item")


def thumbnails(page):
    return page.locator("#history-gallery .thumbnail-item")


def test_history_search_pick_the_second_reuse_and_delete_it(page, server):
    paths = make_images(server.manager)
    page.reload()
    page.wait_for_selector("#status-panel")
    open_history(page)
    wait_for_page(lambda: thumbnails(page).count() == 3, 20, message="three thumbnails")
    assert "3 image(s)" in page.inner_text("#history-summary")

    page.fill("#history-search textarea, #history-search input", "BOAT")
    page.press("#history-search textarea, #history-search input", "Enter")
    wait_for_page(lambda: thumbnails(page).count() == 2, 20, message="the search to leave the two boats")
    # Nothing picked: nothing for the actions to act on (they answered "no longer in the outputs folder").
    assert not any(page.is_enabled(f"#{b}") for b in ACTIONS)
    thumbnails(page).nth(1).click()                 # newest first: the blue boat, then the red one
    wait_for_page(lambda: "a red boat" in page.inner_text("#history-detail"), 20, message="the detail of the second")
    wait_for_page(lambda: all(page.is_enabled(f"#{b}") for b in ACTIONS), 10, message="the actions enabled by the pick")
    detail = page.inner_text("#history-detail")
    assert "101" in detail and "256x256" in detail and "not a red boat" in detail
    # the model as the picker lists it: the tiny model's folder name
    assert re.search(rf"Model\s+{re.escape(Path(server.settings.model).name)}\n", detail), detail
    assert re.search(r"Guidance\s+1\.5\n", detail), detail
    page.wait_for_selector("#history-image img")

    page.click("#history-use")
    wait_for_page(lambda: page.locator("#prompt textarea").is_visible(), 20, message="the Generate tab")
    wait_for_page(lambda: page.input_value("#prompt textarea") == "a red boat", 20, message="the prompt filled")
    assert page.input_value("#negative-prompt textarea") == "not a red boat"
    assert page.input_value("#seed input") == "101"
    assert page.input_value("#width input[type=number]") == "256"
    assert page.input_value("#steps input[type=number]") == "2"
    assert float(page.input_value("#guidance input[type=number]")) == 1.5

    page.locator("#seed input").fill("5")
    page.locator("#seed input").press("Tab")
    page.get_by_role("tab", name="History").click()
    page.click("#history-reuse-seed")
    wait_for_page(lambda: page.locator("#seed input").is_visible() and page.input_value("#seed input") == "101", 20,
                  message="Reuse seed to fill the seed")

    page.get_by_role("tab", name="History").click()
    page.click("#history-delete")
    page.wait_for_selector("#history-confirm-row", state="visible")
    red = paths[101].relative_to(server.manager._store.root).as_posix()
    assert red in page.inner_text("#history-confirm-text")
    # the name on a line of its own, broken (if at all) where the path allows, not inside a word
    name = page.locator("#history-confirm-text strong")
    assert name.evaluate("e => getComputedStyle(e).display") == "block"
    assert name.evaluate("e => getComputedStyle(e).wordBreak") == "normal"
    assert all(p.exists() for p in paths.values())                  # asked first, nothing removed yet
    page.click("#history-confirm")
    wait_for_page(lambda: f"Deleted {red}" in page.inner_text("#history-result"), 20, message="the deletion reported")
    assert not paths[101].exists() and paths[102].exists() and paths[103].exists()
    wait_for_page(lambda: thumbnails(page).count() == 1, 20, message="one boat left")
    wait_for_page(lambda: not any(page.is_enabled(f"#{b}") for b in ACTIONS), 10, message="the actions off once it is gone")

    page.reload()
    page.wait_for_selector("#status-panel")
    open_history(page)
    wait_for_page(lambda: thumbnails(page).count() == 2, 20, message="two images after a reload")
    assert "2 image(s)" in page.inner_text("#history-summary")
    assert server.manager._store.history.count() == 2


def test_a_new_image_shows_in_history_on_refresh(page, server):
    open_history_empty = page.get_by_role("tab", name="History")
    open_history_empty.click()
    wait_for_page(lambda: "No images yet" in page.inner_text("#history-summary"), 20, message="the empty history")
    make_images(server.manager)
    page.click("#history-refresh")
    wait_for_page(lambda: thumbnails(page).count() == 3, 20, message="the new images after Refresh")
