"""The page's Queue panel: the jobs kept on disk (kept_queue.KeptQueueBackend), one row each with
its own Run and Delete, so a click acts on exactly the job of its row (its id is bound when the
row is drawn, never looked up by position after a refresh). Layout and wiring; the handlers are
small functions tests call directly."""
from __future__ import annotations

import html
import time
from functools import partial

import gradio as gr

from ...errors import ZImageError
from ...kept_queue import KeptQueueBackend
from ...store.job_queue import KeptJob
from .page_text import label, request_lang, text

PROMPT_CHARS = 80
STATE_KEYS = {"waiting": "queue_state_waiting", "running": "queue_state_running",
              "interrupted": "queue_state_interrupted"}
QUEUE_ROWS = 12         # rows drawn; more kept jobs are counted (GET /queue lists them all)


def _user(request: gr.Request | None) -> str | None:
    return getattr(request, "username", None) if request is not None else None


def row_text(job: KeptJob, live: bool, lang: str = "en") -> str:
    prompt = job.prompt if len(job.prompt) <= PROMPT_CHARS else job.prompt[:PROMPT_CHARS - 1] + "…"
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(job.created))
    return (text("queue_row", lang, id=job.id, state=text(STATE_KEYS[job.state], lang) if job.state in STATE_KEYS else job.state,
                 size=f"{job.width}x{job.height}", created=created, prompt=html.escape(prompt.replace("\n", " ")))
            + (text("queue_live", lang) if live else ""))


def listing(manager: KeptQueueBackend, user: str | None, lang: str = "en") -> list[tuple[int, str]]:
    """(id, row text) of every kept job the page's user may see, oldest first."""
    return [(job.id, row_text(job, manager.is_live(job.id), lang)) for job in manager.kept_jobs(user)]


def run_picked(manager: KeptQueueBackend, job_id: int, user: str | None, lang: str = "en") -> str:
    try:
        manager.run_kept(job_id, user)
    except ZImageError as e:
        return e.user_text(lang)
    return text("queue_ran", lang, id=job_id)


def drop_picked(manager: KeptQueueBackend, job_id: int, user: str | None, lang: str = "en") -> str:
    try:
        manager.drop_kept(job_id, user)
    except ZImageError as e:
        return e.user_text(lang)
    return text("queue_deleted", lang, id=job_id)


def build_queue_panel(manager) -> None:
    """The accordion (inside the caller's layout); nothing when the backend keeps no queue. A fixed
    set of rows (the page's event guard admits only events built with the page, so no gr.render)."""
    if not isinstance(manager, KeptQueueBackend):
        return
    with gr.Accordion(label("queue_label"), open=False, elem_id="queue-panel") as panel:
        gr.Markdown(label("queue_intro"))
        refresh = gr.Button(label("queue_refresh"), size="sm", elem_id="queue-refresh")
        note = gr.Markdown("", elem_id="queue-note")
        shown = gr.State([])                  # the ids of the rows as drawn, slot by slot
        slots = []
        for n in range(QUEUE_ROWS):
            with gr.Row(visible=False, elem_classes="zi-queue-row", elem_id=f"queue-slot-{n}") as row:
                line = gr.Markdown("", elem_classes="zi-queue-text")
                run = gr.Button(label("queue_run"), size="sm", min_width=60, elem_id=f"queue-run-{n}")
                drop = gr.Button(label("queue_delete"), size="sm", min_width=60, variant="stop",
                                 elem_id=f"queue-delete-{n}")
            slots.append((row, line, run, drop))
        outputs = [shown, note] + [c for row, line, _, _ in slots for c in (row, line)]

        def draw(request: gr.Request | None, message: str = ""):
            lang = request_lang(request)
            try:
                listed = listing(manager, _user(request), lang)
            except ZImageError as e:
                listed, message = [], e.user_text(lang)
            if not listed and not message:
                message = text("queue_empty", lang)
            elif len(listed) > QUEUE_ROWS:
                message = (message + " " + text("queue_more", lang, n=len(listed) - QUEUE_ROWS)).strip()
            ids = [job_id for job_id, _ in listed[:QUEUE_ROWS]]
            cells = []
            for n in range(QUEUE_ROWS):
                present = n < len(ids)
                cells += [gr.Row(visible=present), listed[n][1] if present else ""]
            return [ids, message] + cells

        def load(request: gr.Request = None):
            return draw(request)

        def act(action, slot: int, ids: list, request: gr.Request = None):
            """The job drawn in `slot` when the user clicked: the ids came with the rows."""
            if not isinstance(ids, list) or slot >= len(ids):
                return draw(request)
            return draw(request, action(manager, ids[slot], _user(request), request_lang(request)))

        for n, (_, _, run, drop) in enumerate(slots):
            run.click(partial(act, run_picked, n), [shown], outputs)
            drop.click(partial(act, drop_picked, n), [shown], outputs)
        for trigger in (refresh.click, panel.expand):
            trigger(load, None, outputs)
