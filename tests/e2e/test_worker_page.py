"""The page comes first (--backend local): it is served, in a real browser, while the model worker
process is still importing, and its status panel follows the worker's start and load."""
import dataclasses

import requests

from e2e.test_browser import browser_page, pytestmark  # noqa: F401 - the browser marker and chromium check

from conftest import wait_for


def test_the_page_is_up_and_shows_the_load_while_the_worker_imports(start_server, settings, monkeypatch):
    monkeypatch.setenv("ZIMAGE_WORKER_START_DELAY_S", "20")        # a slow disk's imports
    srv = start_server(dataclasses.replace(settings, preload=True, backend="local"))
    assert requests.get(srv.url + "/", timeout=10).status_code == 200
    assert srv.manager._report is None                               # the worker has said nothing yet
    with browser_page(srv.url) as page:
        panel = page.locator("#status-panel")
        assert "The model process is starting" in panel.inner_text()
        wait_for(lambda: page.locator('#status-panel .zi-state[data-state="on_cpu"]').count() == 1, 120,
                 interval=0.5, message="the panel to show the model loaded")
