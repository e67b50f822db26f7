"""The page's issue-33 controls: 🎲 and ♻ beside Seed, Batch count and Generate forever, and the
X/Y/Z plot tab. Layout and wiring; the logic is in zimage/explore (no gradio there)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import gradio as gr

from ...config import Settings
from ...errors import ZImageError
from ...explore.batches import MAX_BATCH_COUNT
from ...explore.grid import grid_picture, plan_grid, run_grid, save_grid
from ...infotext import parse_infotext
from ...jobs import Backend, Job
from ..model_choice import model_choice
from .page_jobs import PageJobs, valid_client_id
from .page_text import label, request_lang, text
from .ui_inputs import page_error_text, seed_value
from .ui_lora import with_loras
from .ui_preview import job_progress

DICE, REUSE = "🎲", "♻"          # symbols in both languages
AXIS_CHOICES = [("xyz_none", "none"), ("xyz_seed", "seed"), ("xyz_steps", "steps"), ("xyz_guidance", "guidance"),
                ("xyz_size", "size"), ("xyz_lora_strength", "lora_strength"), ("xyz_prompt_sr", "prompt_sr"),
                ("xyz_variety", "variety"), ("xyz_model", "model")]


def build_seed_tools() -> tuple[gr.Button, gr.Button]:
    """🎲 (seed -1) and ♻ (the picked or last result's seed), beside the Seed box."""
    dice = gr.Button("🎲", elem_id="seed-random", size="sm", scale=0, min_width=44)
    reuse = gr.Button("♻", elem_id="seed-reuse", size="sm", scale=0, min_width=44)
    return dice, reuse


def build_batch_controls() -> tuple[gr.Slider, gr.Checkbox]:
    with gr.Row():
        count = gr.Slider(1, MAX_BATCH_COUNT, value=1, step=1, label=label("batch_count_label"), elem_id="batch-count")
        forever = gr.Checkbox(False, label=label("forever_label"), elem_id="generate-forever")
    return count, forever


def result_seed(registry: PageJobs, client: str | None, picked: str | None) -> int | None:
    """The seed of this browser's picked result (matched by file name among its own results: the
    path the gallery sends is Gradio's copy) or of its newest; None without one."""
    results = [r for r in registry.results(valid_client_id(client)) if r.path is not None]
    if picked:
        name = Path(str(picked)).name
        results = [r for r in results if r.path.name == name] or results
    for r in results:
        try:
            from PIL import Image

            with Image.open(r.path) as im:
                seed = parse_infotext(im.info.get("parameters", "")).get("seed")
        except OSError:
            continue
        if seed is not None:
            return seed
    return None


def wire_seed_tools(dice: gr.Button, reuse: gr.Button, seed: gr.Number, picked: gr.State, client_id,
                    registry: PageJobs) -> None:
    def on_reuse(client, chosen, request: gr.Request = None):
        found = result_seed(registry, client, chosen)
        if found is None:
            gr.Info(text("seed_none_yet", request_lang(request)))
            return gr.skip()
        return found
    dice.click(None, None, seed, js="() => -1", queue=False, api_visibility="private")
    reuse.click(on_reuse, [client_id, picked], seed, queue=False, api_visibility="private")


class StepProgress:
    """gr.Progress for one of several jobs: the job's fraction within its slot, its words after ours."""

    def __init__(self, progress, index: int, total: int | None, key: str, lang: str):
        self.progress, self.index, self.total, self.key, self.lang = progress, index, total, key, lang

    def __call__(self, fraction: float, desc: str = "") -> None:
        n = self.total or (self.index + 1)
        key = "batch_forever_progress" if self.total is None and self.key == "batch_progress" else self.key
        self.progress(min(1.0, (self.index + fraction) / n),
                      desc=text(key, self.lang, i=self.index + 1, n=self.total or "", desc=desc))


def build_xyz_tab(manager: Backend, settings: Settings, base_inputs: list, lora_controls: list, client_id,
                  owner_of: Callable) -> gr.Tab:
    """The X/Y/Z plot tab: axes over the Generate tab's prompt and settings (`base_inputs`: prompt,
    negative, width, height, steps, guidance, seed, variety)."""

    def wait(progress, lang: str, i: int, n: int, job: Job) -> None:
        step = StepProgress(progress, i, n, "xyz_progress", lang)
        while not job.future.done():
            step(*job_progress(job, manager.status(), lang))
            time.sleep(0.2)

    def on_grid(prompt, negative, width, height, steps, guidance, seed, variety, client, xf, xv, yf, yv, zf, zv,
                *loras, request: gr.Request = None, progress=gr.Progress()):
        lang = request_lang(request)
        names, strengths = loras[:len(loras) // 2], loras[len(loras) // 2:]
        base = {"prompt": with_loras(prompt or "", names, strengths), "negative_prompt": negative or "",
                "width": width, "height": height, "num_inference_steps": steps, "guidance_scale": guidance,
                "seed": seed_value(seed), "variety": variety}
        body = {"base": base}
        for name, field, values in (("x", xf, xv), ("y", yf, yv), ("z", zf, zv)):
            if field and field != "none":
                body[name] = {"field": field, "values": values or ""}
        try:
            models = model_choice(manager)
            plan = plan_grid(body, settings.wildcards_folder, settings.grid_max_cells, settings.max_prompt_chars, models)
            started = time.perf_counter()
            run = run_grid(manager, plan, owner_of(valid_client_id(client), request), getattr(request, "username", None),
                           lambda i, n, job: wait(progress, lang, i, n, job), models)
        except ZImageError as e:
            raise gr.Error(page_error_text(e, lang))
        n, k = len(plan.cells), len(run.done)
        if not run.done:
            return None, text("xyz_stopped", lang, k=0, n=n)
        path = save_grid(run, manager._store)
        picture = str(path) if path is not None else grid_picture(run)
        if run.stopped:
            return picture, text("xyz_stopped", lang, k=k, n=n)
        return picture, text("xyz_done", lang, k=k, n=n, s=f"{time.perf_counter() - started:.1f}",
                             file=path.name if path else "-")

    def on_stop(client, request: gr.Request = None):
        manager.cancel(owner=owner_of(valid_client_id(client), request), user=getattr(request, "username", None))

    with gr.Tab(label("tab_xyz"), id="xyz", elem_id="xyz-tab") as tab:
        gr.Markdown(label("xyz_intro"))
        axis_inputs = []
        for axis, default, type_key, values_key in (("X", "seed", "xyz_x_type", "xyz_x_values"),
                                                    ("Y", "none", "xyz_y_type", "xyz_y_values"),
                                                    ("Z", "none", "xyz_z_type", "xyz_z_values")):
            with gr.Row():
                choices = [(label(key), value) for key, value in AXIS_CHOICES]
                field = gr.Dropdown(choices, value=default, label=label(type_key), elem_id=f"xyz-{axis.lower()}-type",
                                    scale=1)
                values = gr.Textbox("1-2" if default == "seed" else "", label=label(values_key), max_lines=1,
                                    elem_id=f"xyz-{axis.lower()}-values", scale=3)
            axis_inputs += [field, values]
        with gr.Row():
            run_btn = gr.Button(label("xyz_run"), variant="primary", elem_id="xyz-run")
            stop_btn = gr.Button(label("xyz_stop"), variant="stop", elem_id="xyz-stop")
        picture = gr.Image(label=label("xyz_grid_label"), type="filepath", interactive=False, elem_id="xyz-grid",
                           format="png", buttons=["download", "fullscreen"])      # no "share": it fails off Spaces
        info = gr.Markdown("", elem_id="xyz-info")
    run_btn.click(on_grid, [*base_inputs, client_id, *axis_inputs, *lora_controls], [picture, info],
                  api_visibility="private", concurrency_id="grid", concurrency_limit=settings.queue_max,
                  show_progress="full")
    stop_btn.click(on_stop, client_id, None, queue=False, api_visibility="private")
    return tab
