"""The page's Model cache panel: where the cache is, what is in it, Verify / Repair / Delete."""
from __future__ import annotations

import shutil
import time

import gradio as gr

from ..config import Settings
from ..errors import ZImageError
from ..jobs import Backend
from ..store.cache import CachedModel, modelscope_cache_base, scan_cache
from ..units import human_bytes

COLUMNS = ["model", "status", "size", "layout", "folder"]


def cache_rows(models: list[CachedModel]) -> list[list]:
    return [[m.model_id, m.status, human_bytes(m.size_bytes), m.layout, str(m.folder)] for m in models]


def cache_summary(settings: Settings) -> str:
    base = modelscope_cache_base(settings.cache_dir)
    probe = base if base.exists() else base.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    return (f"**Cache:** `{base}` · {human_bytes(free)} free on that disk. "
            "Move it by setting `MODELSCOPE_CACHE` (or `--cache-dir`) and restarting.")


NOTHING_CACHED = "Nothing cached yet: the model downloads on the first **Preload model** or **Generate**."


def selection_after_refresh(ids: list[str], selected: str | None) -> str | None:
    """Keep the user's selection while that model exists (a reload of the list must never move it
    to another model: a Delete would then remove the wrong one)."""
    if selected in ids:
        return selected
    return ids[0] if ids else None


def confirm_label(model_id: str | None, models: list[CachedModel]) -> str:
    size = sum(m.size_bytes for m in models if m.model_id == model_id)
    return f"Delete {model_id}, {human_bytes(size)}?" if model_id else "Confirm delete"


def build_cache_panel(manager: Backend, settings: Settings) -> None:
    """Lay out the panel inside the current Blocks context and wire its events."""

    def scan() -> list[CachedModel]:
        return scan_cache(modelscope_cache_base(settings.cache_dir))

    def refresh(selected):
        models = scan()
        ids = sorted({m.model_id for m in models})
        value = selection_after_refresh(ids, selected)
        summary = cache_summary(settings) + ("" if ids else f"\n\n{NOTHING_CACHED}")
        buttons = [gr.Button(interactive=bool(ids)) for _ in range(3)]
        return (summary, cache_rows(models), gr.Dropdown(choices=ids, value=value), *buttons,
                gr.Checkbox(interactive=bool(ids)))

    def on_select(model_id):
        """Any change of the selection clears the confirmation, which names the model and its size."""
        return gr.Checkbox(value=False, label=confirm_label(model_id, scan())), None

    def on_confirm(ticked, model_id):
        return model_id if ticked and model_id else None

    def wait_job(job, progress: gr.Progress, label: str):
        while not job.future.done():
            s = manager.status()
            progress(s.progress, desc=f"{label}: {s.current_file}" if s.current_file else label)
            time.sleep(0.2)
        return job.future.result()

    def verify_report(model_id: str, progress: gr.Progress):
        # A job of the manager: it never runs beside a load or a repair.
        return wait_job(manager.verify(model_id), progress, f"Verifying {model_id}")

    def on_verify(model_id, progress=gr.Progress()):
        if not model_id:
            return "Pick a model first."
        try:
            report = verify_report(model_id, progress)
        except ZImageError as e:
            return f"**Verify of {model_id} failed:** {e.user_text()}"
        if report.folder is None:
            return f"{model_id} is not in the cache."
        if not report.problems:
            return f"OK: {model_id}: all {report.checked} files are intact ({report.how})."
        lines = "\n".join(f"- `{p.path}`: {p.reason}" for p in report.problems)
        return f"**{model_id}: {len(report.problems)} problem(s).** Press **Repair**.\n\n{lines}"

    def on_repair(model_id, progress=gr.Progress()):
        if not model_id:
            return "Pick a model first."
        try:
            fixed = wait_job(manager.repair(model_id), progress, f"Repairing {model_id}")
        except ZImageError as e:
            return f"**Repair of {model_id} failed:** {e.user_text()}"
        if model_id == settings.model:
            manager.preload()
        if not fixed:
            return f"{model_id}: nothing needed repair."
        return f"{model_id}: re-downloaded " + ", ".join(f"`{f}`" for f in fixed)

    def on_delete(model_id, confirmed, confirmed_id):
        cleared = gr.Checkbox(value=False)
        if not model_id:
            return "Pick a model first.", cleared, None
        if not confirmed or not confirmed_id:
            return (f"Tick **{confirm_label(model_id, scan())}** first: this removes the files from disk.",
                    gr.Checkbox(), confirmed_id)
        try:
            # The server side refuses when the confirmed model is not the one it would delete.
            freed = manager.delete_cached(model_id, confirmed_id=confirmed_id).future.result()
        except ZImageError as e:
            return f"**{model_id} not deleted:** {e.user_text()}", cleared, None
        return f"Deleted {model_id}: {human_bytes(freed)} freed.", cleared, None

    with gr.Accordion("Model cache", open=False, elem_id="cache-panel") as panel:
        summary = gr.Markdown(elem_id="cache-summary")
        table = gr.Dataframe(headers=COLUMNS, interactive=False, elem_id="cache-table")
        with gr.Row():
            # Its own row, full width: a narrow selector hid which model Delete would remove.
            model = gr.Dropdown(label="Model", choices=[], elem_id="cache-model", scale=1)
        with gr.Row():
            refresh_btn = gr.Button("Refresh", elem_id="cache-refresh")
            verify_btn = gr.Button("Verify", elem_id="cache-verify")
            repair_btn = gr.Button("Repair", elem_id="cache-repair")
            delete_btn = gr.Button("Delete", variant="stop", elem_id="cache-delete")
            confirm = gr.Checkbox(label="Confirm delete", value=False, elem_id="cache-confirm")
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

