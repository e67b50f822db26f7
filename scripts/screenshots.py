"""Regenerate the README's screenshots: `python scripts/screenshots.py` (needs /usr/bin/chromium).

Starts `webui.py --demo` on a free port, preloads, generates one image and opens the Model cache
panel, saving docs/screenshot.png (desktop, 1440x900), docs/screenshot-phone.png (390x844, the
first screen) and docs/screenshot-cache.png.
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


def make_image(page) -> None:
    page.fill("#prompt textarea", "a lighthouse at dusk, golden light")
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
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(url)
            page.locator("#settings-panel").get_by_text("Model and memory").click()
            page.click("#preload-btn")
            page.wait_for_selector('[data-state="on_cpu"]', timeout=120_000)
            page.locator("#settings-panel").get_by_text("Model and memory").click()     # folded again
            make_image(page)
            page.screenshot(path=str(ROOT / "docs" / "screenshot.png"))
            phone = browser.new_page(viewport={"width": 390, "height": 844})
            phone.goto(url)
            make_image(phone)
            phone.screenshot(path=str(ROOT / "docs" / "screenshot-phone.png"))
            page.locator("#settings-panel").get_by_text("Model and memory").click()
            page.get_by_text("Model cache").click()
            time.sleep(1.5)
            page.locator("#cache-panel").screenshot(path=str(ROOT / "docs" / "screenshot-cache.png"))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
