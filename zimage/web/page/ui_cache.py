"""The page's Model cache panel: where the cache is, what is in it, Verify / Repair / Delete."""
from __future__ import annotations

import shutil
import time

import gradio as gr

from ...config import Settings
from ...errors import ZImageError
from ...jobs import Backend
from ...store.cache import CachedModel, modelscope_cache_base, scan_cache
from ...units import human_bytes
from .page_text import label, request_lang, text

COLUMNS = ["model", "status", "size", "layout", "folder"]


def columns(lang: str = "en") -> list[str]:
    return text("cache_columns", lang).split(",")


def cache_rows(models: list[CachedModel]) -> list[list]:
    return [[m.model_id, m.status, human_bytes(m.size_bytes), m.layout, str(m.folder)] for m in models]


def cache_summary(settings: Settings, lang: str = "en") -> str:
    base = modelscope_cache_base(settings.cache_dir)
    probe = base if base.exists() else base.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    return text("cache_summary", lang, base=base, free=human_bytes(free))


def selection_after_refresh(ids: list[str], selected: str | None) -> str | None:
    """Keep the user's selection while that model exists (a reload of the list must never move it
    to another model: a Delete would then remove the wrong one)."""
    if selected in ids:
        return selected
    return ids[0] if ids else None


def confirm_label(model_id: str | None, models: list[CachedModel], lang: str = "en") -> str:
    size = sum(m.size_bytes for m in models if m.model_id == model_id)
    if not model_id:
        return text("cache_confirm", lang)
    return text("cache_confirm_named", lang, model=model_id, size=human_bytes(size))


def build_cache_panel(manager: Backend, settings: Settings) -> None:
    """Lay out the panel inside the current Blocks context and wire its events."""

    def scan() -> list[CachedModel]:
        return scan_cache(modelscope_cache_base(settings.cache_dir))

    def refresh(selected, request: gr.Request = None):
        lang = request_lang(request)
        models = scan()
        ids = sorted({m.model_id for m in models})
        value = selection_after_refresh(ids, selected)
        summary = cache_summary(settings, lang) + ("" if ids else f"\n\n{text('cache_nothing', lang)}")
        buttons = [gr.Button(interactive=bool(ids)) for _ in range(3)]
        table = gr.Dataframe(value=cache_rows(models), headers=columns(lang))
        return (summary, table, gr.Dropdown(choices=ids, value=value), *buttons,
                gr.Checkbox(interactive=bool(ids)))

    def on_select(model_id, request: gr.Request = None):
        """Any change of the selection clears the confirmation, which names the model and its size."""
        return gr.Checkbox(value=False, label=confirm_label(model_id, scan(), request_lang(request))), None

    def on_confirm(ticked, model_id):
        return model_id if ticked and model_id else None

    def wait_job(job, progress: gr.Progress, label: str):
        while not job.future.done():
            s = manager.status()
            progress(s.progress, desc=f"{label}: {s.current_file}" if s.current_file else label)
            time.sleep(0.2)
        return job.future.result()

    def verify_report(model_id: str, progress: gr.Progress, lang: str = "en"):
        # A job of the manager: it never runs beside a load or a repair.
        return wait_job(manager.verify(model_id), progress, text("cache_verifying", lang, model=model_id))

    def on_verify(model_id, request: gr.Request = None, progress=gr.Progress()):
        lang = request_lang(request)
        if not model_id:
            return text("cache_pick_first", lang)
        try:
            report = verify_report(model_id, progress, lang)
        except ZImageError as e:
            return text("cache_verify_failed", lang, model=model_id, error=e.user_text(lang))
        if report.folder is None:
            return text("cache_not_cached", lang, model=model_id)
        if not report.problems:
            return text("cache_verify_ok", lang, model=model_id, n=report.checked, how=report.how)
        lines = "\n".join(f"- `{p.path}`: {p.reason}" for p in report.problems)
        return text("cache_problems", lang, model=model_id, n=len(report.problems)) + f"\n\n{lines}"

    def on_repair(model_id, request: gr.Request = None, progress=gr.Progress()):
        lang = request_lang(request)
        if not model_id:
            return text("cache_pick_first", lang)
        try:
            fixed = wait_job(manager.repair(model_id), progress, text("cache_repairing", lang, model=model_id))
        except ZImageError as e:
            return text("cache_repair_failed", lang, model=model_id, error=e.user_text(lang))
        if model_id == settings.model:
            manager.preload()
        if not fixed:
            return text("cache_nothing_to_repair", lang, model=model_id)
        return text("cache_redownloaded", lang, model=model_id, files=", ".join(f"`{f}`" for f in fixed))

    def on_delete(model_id, confirmed, confirmed_id, request: gr.Request = None):
        lang = request_lang(request)
        cleared = gr.Checkbox(value=False)
        if not model_id:
            return text("cache_pick_first", lang), cleared, None
        if not confirmed or not confirmed_id:
            return (text("cache_tick_first", lang, confirm=confirm_label(model_id, scan(), lang)),
                    gr.Checkbox(), confirmed_id)
        try:
            # The server side refuses when the confirmed model is not the one it would delete.
            freed = manager.delete_cached(model_id, confirmed_id=confirmed_id).future.result()
        except ZImageError as e:
            return text("cache_not_deleted", lang, model=model_id, error=e.user_text(lang)), cleared, None
        return text("cache_deleted", lang, model=model_id, size=human_bytes(freed)), cleared, None

    with gr.Accordion(label("cache_panel"), open=False, elem_id="cache-panel") as panel:
        summary = gr.Markdown(elem_id="cache-summary")
        table = gr.Dataframe(headers=COLUMNS, interactive=False, elem_id="cache-table")
        with gr.Row():
            # Its own row, full width: a narrow selector hid which model Delete would remove.
            model = gr.Dropdown(label=label("cache_model"), choices=[], elem_id="cache-model", scale=1)
        with gr.Row():
            refresh_btn = gr.Button(label("cache_refresh"), elem_id="cache-refresh")
            verify_btn = gr.Button(label("cache_verify"), elem_id="cache-verify")
            repair_btn = gr.Button(label("cache_repair"), elem_id="cache-repair")
            delete_btn = gr.Button(label("cache_delete"), variant="stop", elem_id="cache-delete")
            confirm = gr.Checkbox(label=label("cache_confirm"), value=False, elem_id="cache-confirm")
        result = gr.Markdown(elem_id="cache-result")
        confirmed_id = gr.State(None)          # server-side: the model the user ticked the confirmation for

    private = dict(api_visibility="private")
    listing = [summary, table, model, verify_btn, repair_btn, delete_btn, confirm]
    panel.expand(refresh, model, listing, queue=False, **private)
    refresh_btn.click(refresh, model, listing, queue=False, **private)
    model.change(on_select, model, [confirm, confirmed_id], queue=False, **private)
    confirm.input(on_confirm, [confirm, model], confirmed_id, queue=False, **private)
    verify_btn.click(on_verify, model, result, concurrency_id="cache", **private).then(
        refresh, model, listing, queue=False, **private)
    repair_btn.click(on_repair, model, result, concurrency_id="cache", **private).then(
        refresh, model, listing, queue=False, **private)
    delete_btn.click(on_delete, [model, confirm, confirmed_id], [result, confirm, confirmed_id],
                     concurrency_id="cache", **private).then(refresh, model, listing, queue=False, **private)

