"""The page in English and Simplified Chinese, in a real browser: chosen from the browser's language
(Playwright's `locale` sets navigator.language and Accept-Language), switched on the page without
losing the prompt, with `<html lang>`, the status panel and a validation message following."""
from __future__ import annotations

import os

import pytest

from zimage.web.page.page_text import EN, ZH

from .test_browser import CHROMIUM, guard_refusals, open_page  # noqa: F401: fixtures
from conftest import wait_for_page

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}")]


def shows(page, selector: str, words: str) -> bool:
    return words in page.inner_text(selector)


def wait_language(page, table: dict[str, str]) -> None:
    """The labels, the status panel and <html lang> all in `table`'s language."""
    wait_for_page(lambda: shows(page, "#generate-btn", table["generate_btn"]), 20, message="the Generate button's word")
    wait_for_page(lambda: shows(page, "#status-panel", table["status_model"]), 20, message="the status panel's language")


def test_a_chinese_browser_gets_the_page_in_chinese(open_page):
    page = open_page(locale="zh-CN")
    wait_language(page, ZH)
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert shows(page, "#prompt", ZH["prompt_label"])
    assert page.get_attribute("#prompt textarea", "placeholder") == ZH["prompt_hint"]
    assert shows(page, "#main-tabs", ZH["tab_generate"]) and shows(page, "#main-tabs", ZH["history_tab"])
    assert shows(page, "#stop-btn", ZH["stop_btn"]) and shows(page, "#width", ZH["width"])
    assert shows(page, "#settings-panel", ZH["settings_label"])
    assert shows(page, "#status-panel", ZH["state_unloaded"]) and shows(page, "#status-panel", "队列：")
    assert "Generate" not in page.inner_text("#generate-btn")
    assert page.locator("#lang-switch input[value=zh]").is_checked()
    # A size the sliders refuse: the message names the field in Chinese.
    box = page.locator("#width input[type=number]")
    box.fill("250")
    box.press("Enter")
    wait_for_page(lambda: "宽度" in page.inner_text("#size-error"), 15, message="the size error in Chinese")
    assert "必须在 256 到 2048 之间" in page.inner_text("#size-error")
    # Generate without a prompt: the server's refusal (a toast) is in Chinese too, naming the control
    # as the page labels it (web/page/ui_inputs.page_error_text), not the request's field.
    page.click("#generate-btn")
    page.get_by_text(f"{ZH['prompt_label']}: 不能为空").first.wait_for(state="visible", timeout=15_000)
    assert page.get_by_text("prompt: 不能为空").count() == 0
    # The memory controls' choices too.
    page.locator("#settings-panel").get_by_text(ZH["settings_label"]).click()
    page.locator("#unload-to").get_by_text(ZH["unload_free_all"], exact=True).wait_for(state="visible")


def test_an_english_browser_gets_english_and_the_switch_changes_it_keeping_the_prompt(open_page, server):
    page = open_page(locale="en-US")
    wait_language(page, EN)
    assert page.evaluate("document.documentElement.lang") == "en"
    assert page.locator("#lang-switch input[value=en]").is_checked()
    page.fill("#prompt textarea", "a lighthouse at dusk")

    page.locator("#lang-switch").get_by_text("中文").click()
    wait_language(page, ZH)          # labels re-drawn in place, the server's text follows
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert shows(page, "#prompt", ZH["prompt_label"]) and shows(page, "#main-tabs", ZH["tab_pnginfo"])
    # The Edit tab's title follows the switch as the others do (it stayed "Edit"), and so does its content.
    edit_tab = page.get_by_role("tab", name=ZH["tab_edit"], exact=True)
    wait_for_page(lambda: edit_tab.count() == 1, 15, message="the Edit tab's title in Chinese")
    edit_tab.click()
    wait_for_page(lambda: shows(page, "#edit-mode", ZH["edit_mode_inpaint"]), 15, message="the Edit tab's modes in Chinese")
    assert page.input_value("#prompt textarea") == "a lighthouse at dusk"
    # The choice is kept across a reload (a cookie the server reads as well as the browser).
    page.reload()
    page.wait_for_selector("#status-panel .zi-state")
    wait_language(page, ZH)
    wait_for_page(lambda: page.locator("#lang-switch input[value=zh]").is_checked(), 15, message="the switch kept")
    assert page.input_value("#prompt textarea") == "a lighthouse at dusk"    # BrowserState kept the prompt

    page.locator("#lang-switch").get_by_text("English").click()
    wait_language(page, EN)
    assert page.evaluate("document.documentElement.lang") == "en"
    wait_for_page(lambda: page.get_by_role("tab", name=EN["tab_edit"], exact=True).count() == 1, 15,
                  message="the Edit tab's title back in English")
    assert shows(page, "#status-panel", EN["state_unloaded"])
