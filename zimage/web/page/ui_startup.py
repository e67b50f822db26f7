"""The start-up timeline in the status panel: what the launch is doing now (importing the model
code, reading weights n%, building, compiling in the background) and when each step finished.
The process's own steps count from the process's start; the model load's from the load's start
(a Preload pressed 96 s after the start read as a 96 s load). Pure functions of the Status, for
render_status, the starting page and the tests."""
from __future__ import annotations

import html

from ... import startup
from ...state import LoadStage, LoadState, Status
from .page_text import text

# The finished steps shown, in launch order, with the page_text keys of their words: the process's
# (seconds since it started) and the load's (seconds since its weights began to be read).
PROCESS_LABELS = ((startup.CUDA_READY, "startup_cuda_ready"), (startup.WEB_IMPORTED, "startup_web_imported"),
                  (startup.PAGE_UP, "startup_page_up"), (startup.FIRST_IMAGE, "startup_first_image"))
LOAD_LABELS = ((startup.MODEL_IMPORTED, "startup_model_imported"), (startup.READ, "startup_read"),
               (startup.BUILT, "startup_built"), (startup.ON_DEVICE, "startup_on_device"),
               (startup.READY, "startup_ready"), (startup.COMPILED, "startup_compiled"),
               (startup.COMPILE_FAILED, "startup_compile_failed"))


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


def timeline_groups(status: Status, lang: str = "en") -> list[tuple[str, list[str]]]:
    """[(title, ["step 1.2 s", ...])] in `lang`: the process's steps, then the load's own."""
    events = events_of(status)
    began = events.get(startup.READING, 0.0)

    def done(labels, zero: float) -> list[str]:
        return [text("startup_done", lang, step=text(key, lang), s=f"{max(0.0, events[name] - zero):.1f}")
                for name, key in labels if name in events]
    groups = [(text("startup_title", lang), done(PROCESS_LABELS, 0.0)),
              (text("startup_load_title", lang), done(LOAD_LABELS, began))]
    return [(title, steps) for title, steps in groups if steps]


def startup_html(status: Status, lang: str = "en") -> str:
    """One line in `lang`: the step under way, then the finished ones (the process's since it
    started, the load's since the load began); "" once there is no timeline (a Ray replica's status)."""
    if not events_of(status):
        return ""
    now = current_step(status, lang)
    parts = [f"<b>{html.escape(now)}</b>"] if now else []
    parts += [f"<b>{html.escape(title)}</b> " + " · ".join(html.escape(d) for d in steps)
              for title, steps in timeline_groups(status, lang)]
    return f'<div class="zi-startup">' + " · ".join(parts) + "</div>"
