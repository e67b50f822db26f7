"""One headless chromium per test process, shared by the browser tests; each test opens its pages in
browser contexts of its own (their own storage, cookies and client id), closed when it ends.

Why shared: a chromium launched per test cost 3.7 CPU-seconds on the 2-core CI machine before the
test did anything (0.9 to launch, 2.8 for its first page of the app, mostly compiling Gradio's
scripts); a page in a new context of a running chromium cost 0.45 (measured with psutil, 2026-12-07).

Playwright's sync API marks the thread's asyncio loop as running between its calls, so a test that
runs its own loop (asyncio.run: the MCP client tests) cannot run while it is started: conftest stops
this chromium before any test that is not marked `browser`."""
from __future__ import annotations

import contextlib
import os

CHROMIUM = os.environ.get("ZIMAGE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

_running: dict = {}             # "playwright", "browser": this process's, once started


def browser():
    """This process's chromium, started (or started again, if it died) on first use."""
    if "browser" in _running and _running["browser"].is_connected():
        return _running["browser"]
    stop()
    from playwright.sync_api import sync_playwright

    _running["playwright"] = sync_playwright().start()
    _running["browser"] = _running["playwright"].chromium.launch(executable_path=CHROMIUM, args=ARGS)
    return _running["browser"]


def open_page(viewport: dict | None = None, locale: str | None = None):
    """A page in a context of its own, left open until close_contexts() (`locale` sets
    navigator.language and Accept-Language)."""
    context = browser().new_context(viewport=viewport or {"width": 1400, "height": 1000},
                                    **({"locale": locale} if locale else {}))
    return context.new_page()


@contextlib.contextmanager
def new_page(viewport: dict | None = None, locale: str | None = None):
    """open_page's page, its context closed when the block ends."""
    page = open_page(viewport, locale)
    try:
        yield page
    finally:
        page.context.close()


def close_contexts() -> None:
    """Every context a test left open (its pages, storage and downloads), chromium kept running."""
    if "browser" in _running and _running["browser"].is_connected():
        for context in list(_running["browser"].contexts):
            with contextlib.suppress(Exception):
                context.close()


def stop() -> None:
    browser_, playwright = _running.pop("browser", None), _running.pop("playwright", None)
    with contextlib.suppress(Exception):
        if browser_ is not None:
            browser_.close()
    with contextlib.suppress(Exception):
        if playwright is not None:
            playwright.stop()
