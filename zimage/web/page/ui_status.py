"""The status panel: the model's state on one line with Preload and Unload beside it (they sat in
a folded section below the fold), the load's progress, the timeline, device and memory. render_status
is a pure function of the Status, so tests call it directly.
"""
from __future__ import annotations

import html
import time

import gradio as gr

from ...config import Settings
from ...i18n import status_text
from ...state import LoadState, MemoryInfo, Status
from ...units import gib
from .page_text import STATE_KEYS, label, stage_text, text
from .ui_startup import current_step, startup_html

PHASE_KEYS = {"ready": "phase_ready", "loading": "phase_loading", "unloaded": "phase_unloaded", "error": "phase_error",
              "lost": "phase_lost"}


def planned_device(settings: Settings | None, lang: str = "en") -> str:
    """The device a load will use, in `lang`, before one has happened (--device, else auto)."""
    device = settings.device if settings is not None else "auto"
    return text("device_auto", lang) if device == "auto" else device


def build_model_buttons() -> tuple[gr.Button, gr.Button]:
    """Preload and Unload, beside the status in the current row: in view on the first screen."""
    with gr.Column(scale=0, min_width=120, elem_id="model-buttons"):
        preload = gr.Button(label("preload_btn"), variant="secondary", size="sm", elem_id="preload-btn")
        unload = gr.Button(label("unload_btn"), size="sm", elem_id="unload-btn")
    return preload, unload


def queued_note(running: int, lang: str = "en"):
    """What a Generate click says when `running` jobs of this browser are already queued or running."""
    return text("generate_queued", lang, n=running + 1) if running else gr.skip()


def render_status(status: Status, mem: MemoryInfo, lang: str = "en", settings: Settings | None = None) -> str:
    """The status panel as HTML in `lang`; a pure function so tests can call it. One line (the model's
    state, a load's progress, the queue, an error) that is always shown, and the rest, which the phone
    layout folds behind a tap on that line (ui_page's CSS and script)."""
    e = html.escape
    t = lambda key, **parts: text(key, lang, **parts)     # noqa: E731
    line = [f'<span class="zi-state" data-state="{status.state.value}"><b>{t("status_model")}</b> '
            f'{e(t(STATE_KEYS[status.state]))}</span>']
    head, more = [], []
    if status.state in (LoadState.DOWNLOADING, LoadState.LOADING):
        pct = int(round(status.progress * 100))
        line.append(f"{pct}%")
        detail = stage_text(status, lang) if status.stage else ""
        if status.bytes_total:
            detail += f" · {status.bytes_done / 2**20:,.0f} / {status.bytes_total / 2**20:,.0f} MiB"
        if status.current_file:
            detail += f" · {e(status.current_file)}"
        head.append(f'<div><progress class="zi-progress" max="100" value="{pct}"></progress> {pct}% · {e(detail)}</div>')
    if status.state == LoadState.DOWNLOADING and status.speed_bps:
        eta = f" · {t('status_left', s=f'{status.eta_s:,.0f}')}" if status.eta_s is not None else ""
        head.append(f"<div>{status.speed_bps / 2**20:,.1f} MiB/s{eta}</div>")
    timeline = startup_html(status, lang)
    if timeline:          # in view while the launch is under way, folded away after it
        (head if current_step(status, lang) else more).append(timeline)
    line.append(t("status_low_vram_on" if status.low_vram else "status_low_vram_off"))
    line.append(t("status_queue", n=status.queue_length))
    if status.message or status.hint:
        css = "zi-error" if status.state == LoadState.ERROR else "zi-message"
        message, hint = status_text(status.message, status.hint, lang)
        head.append(f'<div class="{css}"><b>{e(message)}</b><br>{e(hint)}</div>')
    if status.plan:
        more.append(f'<div class="zi-plan">{e(t("status_plan", plan=status.plan))}</div>')
    peak = f" · {t('status_peak', v=gib(status.last_peak_vram_bytes))}" if status.last_peak_vram_bytes else ""
    device = (t("status_device", device=status.device) if status.device
              else t("status_device_unloaded", device=planned_device(settings, lang)))
    more.append(f"<div>{e(device)}{peak}"
                + (f" · {t('status_last_image', s=f'{status.last_image_s:.2f}')}" if status.last_image_s else "")
                + "</div>")
    vram = ""
    if mem.vram_total_bytes is not None or mem.vram_allocated_bytes is not None:
        vram = t("status_vram", allocated=gib(mem.vram_allocated_bytes), used=gib(mem.vram_used_bytes),
                 total=gib(mem.vram_total_bytes)) + " · "
    more.append(f"<div>{vram}" + t("status_ram", rss=gib(mem.process_rss_bytes), free=gib(mem.ram_available_bytes),
                                   total=gib(mem.ram_total_bytes)) + "</div>")
    if status.replicas:
        more.append(render_replicas(status.replicas, lang))
    if status.note:
        note = "\n".join(status_text(line, "", lang)[0] for line in status.note.split("\n"))
        more.append(f'<div class="zi-note">{e(note)}</div>')
    toggle = (f'<button type="button" class="zi-status-toggle" aria-expanded="false" aria-controls="zi-status-more">'
              f'{" · ".join(line)} <span class="zi-chevron" aria-hidden="true">▾ {t("status_more")}</span></button>')
    return (f'<div id="zi-status-body">{toggle}{"".join(head)}'
            f'<div class="zi-status-more" id="zi-status-more">{"".join(more)}</div></div>')


def render_replicas(replicas, lang: str = "en") -> str:
    """--backend ray: one row per replica (node, device, state and progress, queue, last image)."""
    e = html.escape
    rows = []
    for r in replicas:
        s = r.status
        state = text(PHASE_KEYS[r.phase], lang) if r.phase in PHASE_KEYS else r.phase
        if r.phase == "loading":
            state += f" · {e(stage_text(s, lang))} {round(s.progress * 100)}%"
        elif r.phase == "error" and s.message:
            state += f": {e(status_text(s.message, '', lang)[0])}"
        device = s.device or "-"
        if r.gpu_ids:
            device += f" (GPU {', '.join(r.gpu_ids)})"
        last = "-"
        if s.last_image_s and r.last_image_at:
            last = text("replica_last", lang, s=f"{s.last_image_s:.2f}",
                        time=time.strftime('%H:%M:%S', time.localtime(r.last_image_at)))
        rows.append(f'<tr class="zi-replica" data-phase="{r.phase}"><td>{e(r.replica_id)}</td><td>{e(r.node)}</td>'
                    f"<td>{e(device)}</td><td>{state}</td><td>{s.queue_length}</td><td>{last}</td></tr>")
    return f'<table class="zi-replicas">{text("replica_head", lang)}{"".join(rows)}</table>'
