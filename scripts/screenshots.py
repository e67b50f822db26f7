"""Regenerate the README's screenshots: `python scripts/screenshots.py` (needs /usr/bin/chromium).

Starts `webui.py --demo` on a free port, preloads, generates one image and opens the Model cache
panel, saving, in English and Simplified Chinese (the browser's locale picks the page's language):
docs/screenshot.png and docs/screenshot-zh.png (desktop, 1440x900), docs/screenshot-phone.png and
docs/screenshot-zh-phone.png (390x844, the first screen), and docs/screenshot-cache.png. The Chinese
ones need a CJK font (Debian: fonts-wqy-zenhei or fonts-noto-cjk), or every character is a box.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
SHOTS = {"en-US": ("screenshot.png", "screenshot-phone.png"), "zh-CN": ("screenshot-zh.png", "screenshot-zh-phone.png")}
PROMPTS = {"en-US": "a lighthouse at dusk, golden light", "zh-CN": "黄昏时的灯塔，金色的光"}


def open_settings(page) -> None:
    page.locator("#settings-panel > button").first.click()      # its title is in the page's language


def make_image(page, prompt: str) -> None:
    page.fill("#prompt textarea", prompt)
    for elem, value in (("width", 512), ("height", 512)):
        box = page.locator(f"#{elem} input[type=number]")
        box.fill(str(value))
        box.press("Enter")
    page.click("#generate-btn")
    page.wait_for_selector("#gallery img", timeout=120_000)
    time.sleep(1.5)
    page.evaluate("window.scrollTo(0, 0)")      # the page is taller than the window: show its top


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tempfile.mkdtemp()
    proc = subprocess.Popen([sys.executable, "webui.py", "--demo", "--port", str(port), "--outputs",
                             os.path.join(home, "outputs")], cwd=ROOT, env=dict(os.environ, HOME=home))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if requests.get(url + "/health", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            first = None
            for locale, (desktop_png, phone_png) in SHOTS.items():
                page = browser.new_context(viewport=DESKTOP, locale=locale).new_page()
                page.goto(url)
                page.wait_for_selector("#status-panel .zi-state")
                if first is None:
                    page.click("#preload-btn")          # beside the status line
                    page.wait_for_selector('[data-state="on_cpu"]', timeout=120_000)
                    first = page
                make_image(page, PROMPTS[locale])
                page.screenshot(path=str(ROOT / "docs" / desktop_png))
                phone = browser.new_context(viewport=PHONE, locale=locale).new_page()
                phone.goto(url)
                make_image(phone, PROMPTS[locale])
                phone.screenshot(path=str(ROOT / "docs" / phone_png))
            open_settings(first)
            first.locator("#cache-panel > button").first.click()
            time.sleep(1.5)
            first.locator("#cache-panel").screenshot(path=str(ROOT / "docs" / "screenshot-cache.png"))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
