"""The page's Model cache panel: where the cache is, what is in it, Verify / Repair / Delete."""
from __future__ import annotations

import shutil
import time

import gradio as gr

from .cache import CachedModel, modelscope_cache_base, scan_cache
from .config import Settings
from .errors import ZImageError
from .backend import Backend
from .memory import human_bytes

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


def build_cache_panel(manager: Backend, settings: Settings) -> None:
    """Lay out the panel inside the current Blocks context and wire its events."""

    def refresh():
        models = scan_cache(modelscope_cache_base(settings.cache_dir))
        ids = sorted({m.model_id for m in models} | ({settings.model} if not settings.demo else set()))
        return (cache_summary(settings), cache_rows(models),
                gr.Dropdown(choices=ids, value=ids[0] if ids else None))

    def wait_job(job, progress: gr.Progress, label: str):
        while not job.future.done():
            s = manager.status()
            progress(s.progress, desc=f"{label}: {s.current_file}" if s.current_file else label)
            time.sleep(0.2)
        return job.future.result()

    def on_verify(model_id, progress=gr.Progress()):
        from .hub import verify

        if not model_id:
            return "Pick a model first."
        report = verify(model_id, settings.cache_dir,
                        on_progress=lambda done, total, name: progress(done / total if total else 1, desc=name))
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
            fixed = wait_job(manager.repair(model_id), progress, "Repairing")
        except ZImageError as e:
            return f"**Repair failed:** {e.user_text()}"
        if model_id == settings.model:
            manager.preload()
        return "Nothing needed repair." if not fixed else "Re-downloaded: " + ", ".join(f"`{f}`" for f in fixed)

    def on_delete(model_id, confirmed):
        if not model_id:
            return "Pick a model first.", gr.Checkbox()
        if not confirmed:
            return "Tick **Confirm delete** first: this removes the files from disk.", gr.Checkbox()
        try:
            freed = manager.delete_cached(model_id).future.result()
        except ZImageError as e:
            return f"**Not deleted:** {e.user_text()}", gr.Checkbox(value=False)
        return f"Deleted {model_id}: {human_bytes(freed)} freed.", gr.Checkbox(value=False)

    with gr.Accordion("Model cache", open=False, elem_id="cache-panel") as panel:
        summary = gr.Markdown(elem_id="cache-summary")
        table = gr.Dataframe(headers=COLUMNS, interactive=False, elem_id="cache-table")
        with gr.Row():
            model = gr.Dropdown(label="Model", choices=[], elem_id="cache-model")
            refresh_btn = gr.Button("Refresh", elem_id="cache-refresh")
            verify_btn = gr.Button("Verify", elem_id="cache-verify")
            repair_btn = gr.Button("Repair", elem_id="cache-repair")
            delete_btn = gr.Button("Delete", variant="stop", elem_id="cache-delete")
            confirm = gr.Checkbox(label="Confirm delete", value=False, elem_id="cache-confirm")
        result = gr.Markdown(elem_id="cache-result")

    private = dict(api_visibility="private")
    panel.expand(refresh, None, [summary, table, model], queue=False, **private)
    refresh_btn.click(refresh, None, [summary, table, model], queue=False, **private)
    verify_btn.click(on_verify, model, result, concurrency_id="cache", **private).then(
        refresh, None, [summary, table, model], queue=False, **private)
    repair_btn.click(on_repair, model, result, concurrency_id="cache", **private).then(
        refresh, None, [summary, table, model], queue=False, **private)
    delete_btn.click(on_delete, [model, confirm], [result, confirm], concurrency_id="cache", **private).then(
        refresh, None, [summary, table, model], queue=False, **private)
