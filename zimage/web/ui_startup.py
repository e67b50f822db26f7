"""The start-up timeline in the status panel: what the launch is doing now (importing the model
code, reading weights n%, building, compiling in the background) and when each step finished.
Pure functions of the Status, for render_status and the tests."""
from __future__ import annotations

import html

from .. import startup
from ..state import LoadStage, LoadState, Status
from .page_text import text

# The finished steps shown, in launch order, with the page_text keys of their words.
DONE_LABELS = ((startup.CUDA_READY, "startup_cuda_ready"), (startup.WEB_IMPORTED, "startup_web_imported"),
               (startup.MODEL_IMPORTED, "startup_model_imported"),
               (startup.READ, "startup_read"), (startup.BUILT, "startup_built"),
               (startup.ON_DEVICE, "startup_on_device"), (startup.READY, "startup_ready"),
               (startup.PAGE_UP, "startup_page_up"), (startup.FIRST_IMAGE, "startup_first_image"),
               (startup.COMPILED, "startup_compiled"), (startup.COMPILE_FAILED, "startup_compile_failed"))


def events_of(status: Status) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, t in status.startup:
        out.setdefault(name, t)
    return out


def compiling(events: dict[str, float]) -> bool:
    return startup.COMPILING in events and startup.COMPILED not in events and startup.COMPILE_FAILED not in events


def current_step(status: Status, lang: str = "en") -> str:
    """What the launch is doing now in `lang`, "" when nothing is under way."""
    events = events_of(status)
    pct = int(round(status.progress * 100))
    if status.state == LoadState.LOADING:
        if status.stage == LoadStage.READ:
            if startup.MODEL_IMPORTED not in events and not status.bytes_done:
                return text("startup_importing", lang)
            return text("startup_reading", lang, pct=pct)
        if status.stage == LoadStage.BUILD:
            return text("startup_building", lang)
        if status.stage == LoadStage.MOVE:
            return text("startup_moving", lang, pct=pct)
        if status.stage == LoadStage.WARMUP:
            return text("startup_warming", lang)
    if compiling(events):
        return text("startup_compiling", lang)
    return ""


def startup_html(status: Status, lang: str = "en") -> str:
    """One line in `lang`: the step under way, then the finished ones with their time since the
    process started; "" once there is no timeline (a Ray replica's status)."""
    events = events_of(status)
    if not events:
        return ""
    done = [text("startup_done", lang, step=text(key, lang), s=f"{events[name]:.1f}")
            for name, key in DONE_LABELS if name in events]
    now = current_step(status, lang)
    parts = ([f"<b>{html.escape(now)}</b>"] if now else []) + [html.escape(d) for d in done]
    return f'<div class="zi-startup"><b>{html.escape(text("startup_title", lang))}</b> ' + " · ".join(parts) + "</div>"
