"""The start-up timeline in the status panel: what the launch is doing now (importing the model
code, reading weights n%, building, compiling in the background) and when each step finished.
Pure functions of the Status, for render_status and the tests."""
from __future__ import annotations

import html

from .. import startup
from ..state import LoadStage, LoadState, Status

NOW_IMPORTING = "importing the model code (torch, diffusers)"
NOW_READING = "reading weights {pct}%"
NOW_BUILDING = "building the pipeline"
NOW_MOVING = "moving to the device {pct}%"
NOW_WARMING = "warming up"
NOW_COMPILING = "compiling in the background (images run eagerly meanwhile)"
TITLE = "Start-up"
# The finished steps shown, in launch order, with the words the panel uses.
DONE_LABELS = ((startup.WEB_IMPORTED, "page code"), (startup.MODEL_IMPORTED, "model code"),
               (startup.READ, "weights read"), (startup.BUILT, "built"), (startup.ON_DEVICE, "on device"),
               (startup.READY, "ready"), (startup.PAGE_UP, "page up"), (startup.FIRST_IMAGE, "first image"),
               (startup.COMPILED, "compiled blocks in use"), (startup.COMPILE_FAILED, "compile failed: eager"))


def events_of(status: Status) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, t in status.startup:
        out.setdefault(name, t)
    return out


def compiling(events: dict[str, float]) -> bool:
    return startup.COMPILING in events and startup.COMPILED not in events and startup.COMPILE_FAILED not in events


def current_step(status: Status) -> str:
    """What the launch is doing now, "" when nothing is under way."""
    events = events_of(status)
    pct = int(round(status.progress * 100))
    if status.state == LoadState.LOADING:
        if status.stage == LoadStage.READ:
            if startup.MODEL_IMPORTED not in events and not status.bytes_done:
                return NOW_IMPORTING
            return NOW_READING.format(pct=pct)
        if status.stage == LoadStage.BUILD:
            return NOW_BUILDING
        if status.stage == LoadStage.MOVE:
            return NOW_MOVING.format(pct=pct)
        if status.stage == LoadStage.WARMUP:
            return NOW_WARMING
    if compiling(events):
        return NOW_COMPILING
    return ""


def startup_html(status: Status) -> str:
    """One line: the step under way, then the finished ones with their time since the process
    started; "" once there is no timeline (a Ray replica's status)."""
    events = events_of(status)
    if not events:
        return ""
    done = [f"{label} {events[name]:.1f} s" for name, label in DONE_LABELS if name in events]
    now = current_step(status)
    parts = ([f"<b>{html.escape(now)}</b>"] if now else []) + [html.escape(d) for d in done]
    return f'<div class="zi-startup"><b>{TITLE}:</b> ' + " · ".join(parts) + "</div>"
