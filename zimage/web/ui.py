"""The Gradio page: layout and event wiring only. Model logic lives in the PipelineManager."""
from __future__ import annotations

import dataclasses
import html
import logging
import math
import threading
import time
from pathlib import Path

import gradio as gr

from .. import startup
from ..config import Settings
from ..errors import Cancelled, ZImageError
from ..jobs import Backend, Job
from ..request import MAX_GUIDANCE, MAX_IMAGES, MAX_SIZE, MAX_STEPS, MIN_SIZE, SIZE_MULTIPLE, GenerationRequest, as_int
from ..state import LoadState, MemoryInfo, Status
from ..units import gib
from .control_api import model_label
from .page_jobs import PageJobs, Result, new_client_id, valid_client_id
from .ui_cache import build_cache_panel
from .ui_controlnet import ControlPicks, build_controlnet_panel, control_unit
from .ui_edit import SEND_LABEL, build_edit_tab, send_selected
from .ui_history import GenerateControls, build_history_tab
from .ui_lora import LORA_DEFAULTS, LORA_SLOTS, build_lora_panel, with_loras
from .ui_params import gallery_caption
from .ui_pnginfo import build_pnginfo_tab
from .ui_preview import build_live_preview, job_progress
from .ui_startup import current_step, startup_html

log = logging.getLogger(__name__)

SIZE_PRESETS = ["1024x1024", "1152x896", "896x1152", "1216x832", "832x1216", "1344x768", "768x1344",
                "1280x720", "720x1280", "768x768", "512x512"]
UNLOAD_CHOICES = {"Free VRAM (keep in RAM)": "cpu", "Free VRAM and RAM": "none"}
GALLERY_MAX = 48
CUSTOM = "Custom"
SAVED_DEFAULTS = ("", "", 1024, 1024, 9, 0.0, -1, 1, *LORA_DEFAULTS)   # the controls' defaults, in SAVED_FIELDS order
STATE_LABELS = {
    LoadState.UNLOADED: "Not loaded", LoadState.DOWNLOADING: "Downloading", LoadState.LOADING: "Loading",
    LoadState.ON_CPU: "Ready (CPU / RAM)", LoadState.ON_GPU: "Ready (GPU)",
    LoadState.OFFLOADED: "Ready (Low VRAM: offloaded)", LoadState.ERROR: "Error",
}
STATUS_MORE = "details"
PROMPT_LABEL = "Prompt"
PROMPT_HINT = "Describe the image · Ctrl+Enter (⌘+Enter) generates · Esc stops"
SETTINGS_LABEL = "Model and memory"


def render_status(status: Status, mem: MemoryInfo) -> str:
    """The status panel as HTML; a pure function so tests can call it. One line (the model's state,
    a load's progress, the queue, an error) that is always shown, and the rest, which the phone
    layout folds behind a tap on that line (ui_page's CSS and script)."""
    e = html.escape
    line = [f'<span class="zi-state" data-state="{status.state.value}"><b>Model:</b> '
            f'{e(STATE_LABELS[status.state])}</span>']
    head, more = [], []
    if status.state in (LoadState.DOWNLOADING, LoadState.LOADING):
        pct = int(round(status.progress * 100))
        line.append(f"{pct}%")
        detail = status.stage.value if status.stage else ""
        if status.bytes_total:
            detail += f" · {status.bytes_done / 2**20:,.0f} / {status.bytes_total / 2**20:,.0f} MiB"
        if status.current_file:
            detail += f" · {e(status.current_file)}"
        head.append(f'<div><progress class="zi-progress" max="100" value="{pct}"></progress> {pct}% · {e(detail)}</div>')
    if status.state == LoadState.DOWNLOADING and status.speed_bps:
        eta = f" · {status.eta_s:,.0f} s left" if status.eta_s is not None else ""
        head.append(f"<div>{status.speed_bps / 2**20:,.1f} MiB/s{eta}</div>")
    timeline = startup_html(status)
    if timeline:          # in view while the launch is under way, folded away after it
        (head if current_step(status) else more).append(timeline)
    line.append(f"Low VRAM: {'on' if status.low_vram else 'off'}")
    line.append(f"Queue: {status.queue_length}")
    if status.message or status.hint:
        css = "zi-error" if status.state == LoadState.ERROR else "zi-message"
        head.append(f'<div class="{css}"><b>{e(status.message)}</b><br>{e(status.hint)}</div>')
    if status.plan:
        more.append(f'<div class="zi-plan">Plan: {e(status.plan)}</div>')
    peak = f" · peak VRAM {gib(status.last_peak_vram_bytes)}" if status.last_peak_vram_bytes else ""
    more.append(f"<div>Device: {e(status.device or '-')}{peak}"
                + (f" · Last image: {status.last_image_s:.2f} s" if status.last_image_s else "") + "</div>")
    vram = ""
    if mem.vram_total_bytes is not None or mem.vram_allocated_bytes is not None:
        vram = f"VRAM: {gib(mem.vram_allocated_bytes)} (device {gib(mem.vram_used_bytes)} / " \
               f"{gib(mem.vram_total_bytes)}) · "
    more.append(f"<div>{vram}RAM: process {gib(mem.process_rss_bytes)} · "
                f"free {gib(mem.ram_available_bytes)} / {gib(mem.ram_total_bytes)}</div>")
    if status.replicas:
        more.append(render_replicas(status.replicas))
    if status.note:
        more.append(f'<div class="zi-note">{e(status.note)}</div>')
    toggle = (f'<button type="button" class="zi-status-toggle" aria-expanded="false" aria-controls="zi-status-more">'
              f'{" · ".join(line)} <span class="zi-chevron" aria-hidden="true">▾ {STATUS_MORE}</span></button>')
    return (f'<div id="zi-status-body">{toggle}{"".join(head)}'
            f'<div class="zi-status-more" id="zi-status-more">{"".join(more)}</div></div>')


PHASE_LABELS = {"ready": "Ready", "loading": "Loading", "unloaded": "Not loaded", "error": "Error",
                "lost": "Not answering (Ray is restarting it)"}


def render_replicas(replicas) -> str:
    """--backend ray: one row per replica (node, device, state and progress, queue, last image)."""
    e = html.escape
    rows = []
    for r in replicas:
        s = r.status
        state = PHASE_LABELS.get(r.phase, r.phase)
        if r.phase == "loading":
            stage = s.stage.value if s.stage else s.state.value
            state += f" · {e(stage)} {round(s.progress * 100)}%"
        elif r.phase == "error" and s.message:
            state += f": {e(s.message)}"
        device = s.device or "-"
        if r.gpu_ids:
            device += f" (GPU {', '.join(r.gpu_ids)})"
        last = "-"
        if s.last_image_s and r.last_image_at:
            last = f"{s.last_image_s:.2f} s at {time.strftime('%H:%M:%S', time.localtime(r.last_image_at))}"
        rows.append(f'<tr class="zi-replica" data-phase="{r.phase}"><td>{e(r.replica_id)}</td><td>{e(r.node)}</td>'
                    f"<td>{e(device)}</td><td>{state}</td><td>{s.queue_length}</td><td>{last}</td></tr>")
    head = "<tr><th>Replica</th><th>Node</th><th>Device</th><th>State</th><th>Queue</th><th>Last image</th></tr>"
    return f'<table class="zi-replicas">{head}{"".join(rows)}</table>'


def size_problem(width, height) -> str:
    """What is wrong with a width and height, naming the field ('' when both are fine)."""
    out = []
    for name, raw in (("Width", width), ("Height", height)):
        value = as_int(raw)
        if value is None:
            out.append(f"**{name}** must be a whole number.")
        elif not MIN_SIZE <= value <= MAX_SIZE:
            out.append(f"**{name}** must be between {MIN_SIZE} and {MAX_SIZE}, got {value}.")
        elif value % SIZE_MULTIPLE:
            below = value - value % SIZE_MULTIPLE
            out.append(f"**{name}** must be a multiple of {SIZE_MULTIPLE}: {value} lies between "
                       f"{below} and {below + SIZE_MULTIPLE}.")
    return " ".join(out)


def preset_for(width, height) -> str:
    """The size preset that width and height make, or "Custom"."""
    key = f"{as_int(width)}x{as_int(height)}"
    return key if key in SIZE_PRESETS else CUSTOM


def failure_text(e: BaseException) -> str:
    """A failed generation, for the page: typed errors say what to do; anything else names itself."""
    if isinstance(e, ZImageError):
        return e.user_text()
    detail = str(e).strip() or type(e).__name__
    return (f"The generation failed: {detail}. The model stays loaded and nothing was saved; try again, "
            "and if it keeps failing, press Unload (Free VRAM and RAM) and then Preload model.")


def gpu_absent(settings: Settings) -> bool | None:
    """True on a machine without a usable GPU, None while that is not known yet (torch not imported)."""
    if settings.device == "cpu":
        return True
    torch = startup.imported("torch")    # never imported just to answer: the page runs before torch
    if torch is None:
        return None
    return not torch.cuda.is_available()



def parse_preset(preset: str) -> tuple[int, int]:
    w, _, h = preset.partition("x")
    return int(w), int(h)


NO_GPU_LOW_VRAM = "No GPU on this machine: Low VRAM changes nothing here (the model runs from RAM anyway)."
NO_GPU_UNLOAD = ("No GPU on this machine: the model already lives in RAM, so \"Free VRAM (keep in RAM)\" "
                 "changes nothing here. Choose \"Free VRAM and RAM\" to free the memory.")
SAVED_FIELDS = ("prompt", "negative", "width", "height", "steps", "guidance", "seed", "count",
                *(f"lora{i}" for i in range(1, LORA_SLOTS + 1)),
                *(f"lora{i}_strength" for i in range(1, LORA_SLOTS + 1)))


def _restored(saved, name: str, default):
    """A saved setting when it has the type of its control (localStorage is the browser's to edit)."""
    value = saved.get(name) if isinstance(saved, dict) else None
    if isinstance(default, str):
        return value if isinstance(value, str) else gr.skip()
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok else gr.skip()


def build_ui(manager: Backend, settings: Settings, registry: PageJobs | None = None) -> gr.Blocks:
    gpu_default = "Free VRAM (keep in RAM)"
    registry = registry or PageJobs(max_results=GALLERY_MAX)
    no_gpu_at_start = gpu_absent(settings)
    control_picks = ControlPicks()          # the ControlNet panel's values, per browser session

    def status_html() -> str:
        return render_status(manager.status(), manager.memory())

    def owner_of(client_id: str | None, request: gr.Request | None) -> str | None:
        return client_id or (request.session_hash if request else None)

    def submit(req: GenerationRequest, owner: str | None, request: gr.Request | None) -> Job:
        return manager.submit(req, owner=owner, user=getattr(request, "username", None))

    def track(client_id: str, job: Job) -> threading.Event:
        """Record the job under this browser; its results join the browser's gallery when it ends,
        whether or not a page is still waiting for it (a reload drops the waiting handler's page)."""
        recorded = threading.Event()
        registry.start(client_id, job)

        def done(future) -> None:
            try:
                results = [] if future.cancelled() or future.exception() else result_entries(future.result())
                registry.finish(client_id, job, results)
            finally:
                recorded.set()
        job.future.add_done_callback(done)
        return recorded

    def result_entries(result) -> list[Result]:
        req = result.request
        return [Result(caption=gallery_caption(req.prompt, item.seed, req.num_inference_steps, req.width, req.height,
                                               req.loras, result.seconds_per_image),
                       path=Path(item.path) if item.path else None, image=None if item.path else item.image)
                for item in result.images]

    def result_info(result) -> str:
        peak = f" · peak VRAM {result.peak_vram_bytes / 2**30:.1f} GiB" if result.peak_vram_bytes else ""
        info = (f"{len(result.images)} image(s) in {result.seconds:.2f} s ({result.seconds_per_image:.2f} s/image)"
                f"{peak} · seeds {', '.join(str(i.seed) for i in result.images)}")
        if result.warning:
            info += f"\n\n⚠️ {result.warning}"
        return info

    def wait_for_job(job: Job, finished, progress: gr.Progress) -> None:
        while not finished():
            fraction, desc = job_progress(job, manager.status())
            progress(fraction, desc=desc)
            time.sleep(0.2)

    def outcome(job: Job, client_id: str | None):
        """(gallery, info) once `job` has ended; raises gr.Error with what went wrong."""
        try:
            result = job.future.result()
        except Cancelled:
            gr.Info("Stopped: the cancelled image was discarded.")
            return (registry.gallery(client_id) if client_id else []), "Stopped. No image was kept."
        except Exception as e:          # typed or not: the page says what happened and keeps working
            raise gr.Error(failure_text(e))
        if result.warning:
            gr.Warning(result.warning)
        if client_id:
            return registry.gallery(client_id), result_info(result)
        return [item for item in (r.gallery_item() for r in result_entries(result)) if item], result_info(result)

    def on_generate(prompt, negative, width, height, steps, guidance, seed, count, client=None,
                    lora1=None, lora2=None, lora3=None, lora1_strength=1.0, lora2_strength=1.0,
                    lora3_strength=1.0, request: gr.Request = None, progress=gr.Progress()):
        client_id = valid_client_id(client)
        try:
            req = GenerationRequest.from_mapping(
                {"prompt": with_loras(prompt or "", (lora1, lora2, lora3),
                                      (lora1_strength, lora2_strength, lora3_strength)),
                 "negative_prompt": negative or "", "width": int(width),
                 "height": int(height), "num_inference_steps": int(steps), "guidance_scale": float(guidance),
                 "seed": int(seed), "num_images": int(count)}, settings.max_prompt_chars)
            picked = control_picks.get(request.session_hash if request else None)
            req = dataclasses.replace(req, control=control_unit(picked, model_label(settings)))
            job = submit(req, owner_of(client_id, request), request)
        except ZImageError as e:          # validation errors included: they name the field
            raise gr.Error(e.user_text())
        except (TypeError, ValueError) as e:
            raise gr.Error(f"Check the settings: {e}")
        recorded = track(client_id, job) if client_id else None
        wait_for_job(job, recorded.is_set if recorded else job.future.done, progress)
        return outcome(job, client_id)

    def run_edit(req: GenerationRequest, client, request: gr.Request | None, progress) -> tuple:
        """The Edit tab's request, queued and tracked as Generate's are: (gallery, info)."""
        client_id = valid_client_id(client)
        try:
            job = submit(req, owner_of(client_id, request), request)
        except ZImageError as e:
            raise gr.Error(e.user_text())
        recorded = track(client_id, job) if client_id else None
        wait_for_job(job, recorded.is_set if recorded else job.future.done, progress)
        return outcome(job, client_id)

    def on_pick(evt: gr.SelectData):
        image = evt.value.get("image") if isinstance(evt.value, dict) else None
        return image.get("path") if isinstance(image, dict) else None

    def on_resume(client, progress=gr.Progress()):
        """A page (re)opened while this browser's job runs: its progress, then its images."""
        client_id = valid_client_id(client)
        jobs = registry.running(client_id)
        if not jobs:
            return gr.skip(), gr.skip()
        job = jobs[-1]
        wait_for_job(job, lambda: job not in registry.running(client_id), progress)
        return outcome(job, client_id)

    def on_load(client, saved):
        client_id = valid_client_id(client) or new_client_id()
        restored = [_restored(saved, name, default) for name, default in zip(SAVED_FIELDS, SAVED_DEFAULTS)]
        return [client_id, *restored, registry.gallery(client_id), gr.Timer(active=bool(registry.running(client_id)))]

    def on_save(*values):
        return dict(zip(SAVED_FIELDS, values))

    def on_stop(client, request: gr.Request):
        owner = owner_of(valid_client_id(client), request)
        n = manager.cancel(owner=owner, user=getattr(request, "username", None))
        return "Stopping… (the image being made ends after its current step)" if n else "Nothing to stop."

    def on_tick(client):
        status = manager.status()
        mine = bool(registry.running(valid_client_id(client)))
        return (render_status(status, manager.memory()),
                gr.Button(visible=status.state == LoadState.DOWNLOADING), gr.Button(interactive=mine))

    def on_preload():
        manager.preload()
        return status_html()

    def on_unload(choice):
        to = UNLOAD_CHOICES.get(choice, "none")
        manager.unload(to)
        return status_html(), (NO_GPU_UNLOAD if to == "cpu" and gpu_absent(settings) else "")

    def on_cancel_download():
        manager.cancel_download()
        return status_html()

    def on_low_vram(enabled):
        manager.set_low_vram(bool(enabled))
        return status_html(), (NO_GPU_LOW_VRAM if enabled and gpu_absent(settings) else "")

    def on_preset(preset):
        if preset == CUSTOM:
            return gr.skip(), gr.skip()
        return parse_preset(preset)

    def on_size(width, height):
        return size_problem(width, height), gr.Dropdown(value=preset_for(width, height))

    with gr.Blocks(title="Z-Image-Turbo", analytics_enabled=False) as demo:
        client_id = gr.BrowserState(None, storage_key="zimage-client")
        saved = gr.BrowserState({}, storage_key="zimage-settings")
        with gr.Row(elem_id="status-row", equal_height=True):
            gr.Markdown("## Z-Image-Turbo", elem_id="page-title")
            status_box = gr.HTML(status_html(), elem_id="status-panel")
            cancel_dl_btn = gr.Button("Cancel download", elem_id="cancel-download-btn", size="sm", visible=False,
                                      scale=0, min_width=140)
        with gr.Tabs(elem_id="main-tabs") as tabs:
            with gr.Tab("Generate", id="generate", elem_id="generate-tab"):
                # Forge's layout: Generate in a narrow column right of the prompt; settings left, results right.
                with gr.Row(elem_id="prompt-row", equal_height=True):
                    with gr.Column(scale=6, min_width=200):
                        prompt = gr.Textbox(label=PROMPT_LABEL, lines=3, max_length=settings.max_prompt_chars,
                                            elem_id="prompt", placeholder=PROMPT_HINT)
                    with gr.Column(scale=1, min_width=96, elem_id="generate-col"):
                        generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn", interactive=False)
                with gr.Row(elem_id="work-row"):
                    with gr.Column(scale=2, elem_id="settings-col"):
                        negative = gr.Textbox(label="Negative prompt (used when guidance > 0)", lines=1,
                                              max_length=settings.max_prompt_chars, elem_id="negative-prompt")
                        lora_picks, lora_strengths = build_lora_panel(manager)
                        build_controlnet_panel(settings, control_picks)
                        preset = gr.Dropdown(SIZE_PRESETS + [CUSTOM], value="1024x1024", label="Size preset",
                                             elem_id="preset")
                        with gr.Row():
                            width = gr.Slider(MIN_SIZE, MAX_SIZE, value=1024, step=SIZE_MULTIPLE, label="Width",
                                              elem_id="width")
                            height = gr.Slider(MIN_SIZE, MAX_SIZE, value=1024, step=SIZE_MULTIPLE, label="Height",
                                               elem_id="height")
                        size_error = gr.Markdown("", elem_id="size-error")
                        with gr.Row():
                            steps = gr.Slider(1, MAX_STEPS, value=9, step=1, label="Steps", elem_id="steps")
                            guidance = gr.Slider(0, MAX_GUIDANCE, value=0.0, step=0.1, label="Guidance",
                                                 elem_id="guidance")
                        with gr.Row():
                            seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)", elem_id="seed")
                            count = gr.Slider(1, MAX_IMAGES, value=1, step=1, label="Images", elem_id="count")
                        with gr.Accordion(SETTINGS_LABEL, open=False, elem_id="settings-panel"):
                            with gr.Row():
                                preload_btn = gr.Button("Preload model", variant="secondary", elem_id="preload-btn")
                                unload_btn = gr.Button("Unload", elem_id="unload-btn")
                            unload_to = gr.Radio(list(UNLOAD_CHOICES), value=gpu_default, label="Unload frees",
                                                 elem_id="unload-to", info=NO_GPU_UNLOAD if no_gpu_at_start else None)
                            low_vram = gr.Checkbox(value=settings.low_vram, label="Low VRAM (stream weights from RAM)",
                                                   elem_id="low-vram",
                                                   info=NO_GPU_LOW_VRAM if no_gpu_at_start else None)
                            controls_note = gr.Markdown("", elem_id="controls-note")
                            build_cache_panel(manager, settings)
                    with gr.Column(scale=3, elem_id="results-col"):
                        preview_timer, preview_panel = build_live_preview(manager, registry, client_id)
                        gallery = gr.Gallery(label="Results", columns=2, height="auto", format="png",
                                             interactive=False, elem_id="gallery",  # no "share": it only
                                             buttons=["download", "fullscreen"])    # answered "Share failed"
                        info = gr.Markdown("", elem_id="result-info")
                        send_btn = gr.Button(SEND_LABEL, size="sm", elem_id="send-to-edit")
                        picked = gr.State(None)     # the gallery image Send to Edit sends
            edit = build_edit_tab(settings, run_edit, client_id, lora_picks, lora_strengths)
            build_history_tab(manager, tabs, GenerateControls(prompt, negative, width, height, steps, guidance,
                                                              seed, count, lora_picks, lora_strengths), edit)
            with gr.Tab("PNG info", id="pnginfo"):
                build_pnginfo_tab(settings, [prompt, negative, width, height, steps, guidance, seed], tabs)

        private = dict(queue=False, api_visibility="private")
        controls = [prompt, negative, width, height, steps, guidance, seed, count]
        lora_controls = [*lora_picks, *lora_strengths]
        saved_controls = [*controls, *lora_controls]       # in SAVED_FIELDS order
        # Every tab's generation reaches the manager's queue (which counts it and enforces queue_max
        # with QueueFull); with a limit of 1 here the others waited in Gradio's queue, uncounted.
        waiting_room = settings.generation_concurrency + settings.queue_max + 1
        preview_off = (lambda: (gr.Timer(active=False), ""), None, [preview_timer, preview_panel])
        demo.load(on_load, [client_id, saved], [client_id, *saved_controls, gallery, preview_timer], **private).then(
            on_resume, client_id, [gallery, info], api_visibility="private", concurrency_id="resume",
            concurrency_limit=waiting_room).then(*preview_off, **private)
        timer = gr.Timer(1.0)
        # Status reads never enter the queue: a full generation queue must not freeze the panel.
        timer.tick(on_tick, client_id, [status_box, cancel_dl_btn, stop_btn], show_progress="hidden", **private)
        gr.on([c.change for c in saved_controls], on_save, saved_controls, saved, show_progress="hidden", **private)
        preload_btn.click(on_preload, None, status_box, **private)
        unload_btn.click(on_unload, unload_to, [status_box, controls_note], **private)
        cancel_dl_btn.click(on_cancel_download, None, status_box, **private)
        low_vram.change(on_low_vram, low_vram, [status_box, controls_note], **private)
        preset.input(on_preset, preset, [width, height], **private)
        gr.on([width.change, height.change], on_size, [width, height], [size_error, preset],
              show_progress="hidden", **private)
        # No prompt.submit: Enter in the prompt is a newline; Ctrl/Cmd+Enter clicks Generate (ui_page).
        generate_btn.click(lambda: (gr.Button(interactive=True), gr.Timer(active=True)), None,
                           [stop_btn, preview_timer], **private)
        generate_btn.click(on_generate, [*controls, client_id, *lora_controls], [gallery, info],
                           api_name="generate", concurrency_id="gpu", concurrency_limit=waiting_room).then(
            *preview_off, **private)
        # No `cancels=`: Gradio would end the event before "Stopped" could arrive; the handler reports it.
        stop_btn.click(on_stop, client_id, info, **private)
        gallery.select(on_pick, None, picked, **private)
        send_btn.click(send_selected, [picked, prompt], [*edit.outputs, tabs], **private)
    return demo
