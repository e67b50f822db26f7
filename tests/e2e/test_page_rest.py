"""A page left open costs the browser next to nothing: no animation frame loop at rest (Gradio's
status tracker's, which we serve fixed: web/page/gradio_frontend) and no event after a refused
Generate (the live panel's timer ticked four times a second for good: ui_preview.end_live_preview)."""
from __future__ import annotations

import os
import time

import pytest

import chromium

from .test_browser import CHROMIUM, DESKTOP, wait_loaded
from .test_page_refusals import toasts
from conftest import wait_for_page

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}")]

COUNT_FRAMES = """window.ziFrames = 0;
const ziAsk = window.requestAnimationFrame.bind(window);
window.requestAnimationFrame = (callback) => { window.ziFrames += 1; return ziAsk(callback); };"""
# A loop asks for 60 frames a second; at rest the page asks for about 10 (a spinner's spring now and then).
MAX_FRAMES_PER_S = 20
WINDOW_S = 2.0


def frames_per_second(pg) -> float:
    before = pg.evaluate("window.ziFrames")
    time.sleep(WINDOW_S)
    return (pg.evaluate("window.ziFrames") - before) / WINDOW_S


def comes_to_rest(pg, after: str) -> None:
    """Within 30 s of `after`, a window of WINDOW_S with fewer than MAX_FRAMES_PER_S frames asked for
    (a page that has just loaded or answered draws for a moment)."""
    seen: list[float] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen.append(frames_per_second(pg))
        if seen[-1] < MAX_FRAMES_PER_S:
            return
    raise AssertionError(f"the page did not come to rest after {after}: frames a second {seen}")


def test_the_page_at_rest_and_after_a_refused_generate_asks_for_no_frames_and_sends_no_events(server):
    events: list[float] = []
    with chromium.new_page(DESKTOP) as pg:
        pg.add_init_script(COUNT_FRAMES)
        pg.on("request", lambda r: r.method == "POST" and "/gradio_api/" in r.url and events.append(time.monotonic()))
        pg.goto(server.url)
        wait_loaded(pg)
        comes_to_rest(pg, "its load")

        pg.fill("#prompt textarea", "")
        pg.click("#generate-btn")
        wait_for_page(lambda: any("Prompt" in t for t in toasts(pg)), 30, message="the empty prompt's refusal")
        wait_for_page(lambda: not events or time.monotonic() - events[-1] > 1.0, 20,
                      message="the page to stop sending events after the refusal")
        sent = len(events)
        comes_to_rest(pg, "the refusal")
        assert len(events) == sent, f"{len(events) - sent} events after the refusal, at rest"
