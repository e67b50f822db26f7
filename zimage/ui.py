"""The Gradio page: layout and event wiring only. Model logic lives in the PipelineManager."""
from __future__ import annotations

import html
import logging
import time

import gradio as gr

from .config import Settings
from .errors import Cancelled, ZImageError
from .generate import MAX_GUIDANCE, MAX_IMAGES, MAX_SIZE, MAX_STEPS, MIN_SIZE, SIZE_MULTIPLE, GenerationRequest
from .backend import Backend
from .manager import Job
from .memory import MemoryInfo, gib, memory_info
from .state import LoadState, Status
from .ui_cache import build_cache_panel

log = logging.getLogger(__name__)

SIZE_PRESETS = ["1024x1024", "1152x896", "896x1152", "1216x832", "832x1216", "1344x768", "768x1344",
                "1280x720", "720x1280", "768x768", "512x512"]
UNLOAD_CHOICES = {"Free VRAM (keep in RAM)": "cpu", "Free VRAM and RAM": "none"}
GALLERY_MAX = 48
STATE_LABELS = {
    LoadState.UNLOADED: "Not loaded", LoadState.DOWNLOADING: "Downloading", LoadState.LOADING: "Loading",
    LoadState.ON_CPU: "Ready (CPU / RAM)", LoadState.ON_GPU: "Ready (GPU)",
    LoadState.OFFLOADED: "Ready (Low VRAM: offloaded)", LoadState.ERROR: "Error",
}


def render_status(status: Status, mem: MemoryInfo) -> str:
    """The status panel as HTML; a pure function so tests can call it."""
    e = html.escape
    rows = [f'<div class="zi-state" data-state="{status.state.value}"><b>Model:</b> '
            f'{e(STATE_LABELS[status.state])}</div>']
    if status.state in (LoadState.DOWNLOADING, LoadState.LOADING):
        pct = int(round(status.progress * 100))
        detail = status.stage.value if status.stage else ""
        if status.bytes_total:
            detail += f" · {status.bytes_done / 2**20:,.0f} / {status.bytes_total / 2**20:,.0f} MiB"
        if status.current_file:
            detail += f" · {e(status.current_file)}"
        rows.append(f'<progress class="zi-progress" max="100" value="{pct}"></progress> {pct}% · {e(detail)}')
    if status.state == LoadState.DOWNLOADING and status.speed_bps:
        eta = f" · {status.eta_s:,.0f} s left" if status.eta_s is not None else ""
        rows.append(f"<div>{status.speed_bps / 2**20:,.1f} MiB/s{eta}</div>")
    if status.message or status.hint:
        css = "zi-error" if status.state == LoadState.ERROR else "zi-message"
        rows.append(f'<div class="{css}"><b>{e(status.message)}</b><br>{e(status.hint)}</div>')
    if status.plan:
        rows.append(f'<div class="zi-plan">Plan: {e(status.plan)}</div>')
    peak = f" · peak VRAM {gib(status.last_peak_vram_bytes)}" if status.last_peak_vram_bytes else ""
    rows.append(f"<div>Device: {e(status.device or '-')} · Low VRAM: {'on' if status.low_vram else 'off'}{peak}"
                f" · Queue: {status.queue_length}"
                + (f" · Last image: {status.last_image_s:.2f} s" if status.last_image_s else "") + "</div>")
    vram = ""
    if mem.vram_total_bytes is not None or mem.vram_allocated_bytes is not None:
        vram = f"VRAM: {gib(mem.vram_allocated_bytes)} (device {gib(mem.vram_used_bytes)} / " \
               f"{gib(mem.vram_total_bytes)}) · "
    rows.append(f"<div>{vram}RAM: process {gib(mem.process_rss_bytes)} · "
                f"free {gib(mem.ram_available_bytes)} / {gib(mem.ram_total_bytes)}</div>")
    if status.replicas:
        rows.append(render_replicas(status.replicas))
    if status.note:
        rows.append(f'<div class="zi-note">{e(status.note)}</div>')
    return f'<div id="zi-status-body">{"".join(rows)}</div>'


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


def job_progress(job: Job, status: Status) -> tuple[float, str]:
    """(fraction, description) for Gradio's progress bar while `job` waits or runs."""
    if job.phase == "waiting":
        return 0.0, f"Waiting in queue (position {job.queue_position})"
    if job.phase == "loading":
        stage = status.stage.value if status.stage else status.state.value
        return status.progress, f"Loading model: {stage}"
    if job.total_steps:
        return job.step / job.total_steps, f"Step {job.step}/{job.total_steps}"
    return 0.0, "Starting"


def parse_preset(preset: str) -> tuple[int, int]:
    w, _, h = preset.partition("x")
    return int(w), int(h)


def build_ui(manager: Backend, settings: Settings) -> gr.Blocks:
    gpu_default = "Free VRAM (keep in RAM)"

    def status_html() -> str:
        return render_status(manager.status(), memory_info(manager.gpu_device))

    def on_generate(prompt, negative, width, height, steps, guidance, seed, count, gallery,
                    request: gr.Request, progress=gr.Progress()):
        try:
            req = GenerationRequest.from_mapping(
                {"prompt": prompt or "", "negative_prompt": negative or "", "width": int(width),
                 "height": int(height), "num_inference_steps": int(steps), "guidance_scale": float(guidance),
                 "seed": int(seed), "num_images": int(count)}, settings.max_prompt_chars)
            job = manager.submit(req, owner=request.session_hash if request else None)
        except ZImageError as e:          # validation errors included: they name the field
            raise gr.Error(e.user_text())
        except (TypeError, ValueError) as e:
            raise gr.Error(f"Check the settings: {e}")
        while not job.future.done():
            fraction, desc = job_progress(job, manager.status())
            progress(fraction, desc=desc)
            time.sleep(0.2)
        try:
            result = job.future.result()
        except Cancelled:
            gr.Info("Stopped: the cancelled image was discarded.")
            return gallery or [], "Stopped. No image was kept."
        except ZImageError as e:
            raise gr.Error(e.user_text())
        items = [(str(item.path) if item.path else item.image,
                  f"seed {item.seed} · {result.seconds_per_image:.2f} s") for item in result.images]
        peak = f" · peak VRAM {result.peak_vram_bytes / 2**30:.1f} GiB" if result.peak_vram_bytes else ""
        info = (f"{len(result.images)} image(s) in {result.seconds:.2f} s ({result.seconds_per_image:.2f} s/image)"
                f"{peak} · seeds {', '.join(str(i.seed) for i in result.images)}")
        if result.warning:
            info += f"\n\n⚠️ {result.warning}"
            gr.Warning(result.warning)
        return (items + list(gallery or []))[:GALLERY_MAX], info

    def on_stop(request: gr.Request):
        n = manager.cancel(owner=request.session_hash if request else None)
        return "Stopping…" if n else "Nothing to stop."

    def on_preload():
        manager.preload()
        return status_html()

    def on_unload(choice):
        manager.unload(UNLOAD_CHOICES.get(choice, "none"))
        return status_html()

    def on_cancel_download():
        manager.cancel_download()
        return status_html()

    def on_low_vram(enabled):
        manager.set_low_vram(bool(enabled))
        return status_html()

    def on_preset(preset):
        return parse_preset(preset)

    with gr.Blocks(title="Z-Image-Turbo", analytics_enabled=False) as demo:
        gr.Markdown("## Z-Image-Turbo")
        with gr.Row():
            with gr.Column(scale=3):
                status_box = gr.HTML(status_html(), elem_id="status-panel")
            with gr.Column(scale=2):
                with gr.Row():
                    preload_btn = gr.Button("Preload model", variant="secondary", elem_id="preload-btn")
                    unload_btn = gr.Button("Unload", elem_id="unload-btn")
                    cancel_dl_btn = gr.Button("Cancel download", elem_id="cancel-download-btn", size="sm")
                unload_to = gr.Radio(list(UNLOAD_CHOICES), value=gpu_default, label="Unload frees",
                                     elem_id="unload-to")
                low_vram = gr.Checkbox(value=settings.low_vram, label="Low VRAM (stream weights from RAM)",
                                       elem_id="low-vram")
        with gr.Row():
            with gr.Column(scale=2):
                prompt = gr.Textbox(label="Prompt", lines=3, max_length=settings.max_prompt_chars,
                                    elem_id="prompt")
                negative = gr.Textbox(label="Negative prompt (used when guidance > 0)", lines=1,
                                      max_length=settings.max_prompt_chars, elem_id="negative-prompt")
                preset = gr.Dropdown(SIZE_PRESETS, value="1024x1024", label="Size preset", elem_id="preset")
                with gr.Row():
                    width = gr.Slider(MIN_SIZE, MAX_SIZE, value=1024, step=SIZE_MULTIPLE, label="Width",
                                      elem_id="width")
                    height = gr.Slider(MIN_SIZE, MAX_SIZE, value=1024, step=SIZE_MULTIPLE, label="Height",
                                       elem_id="height")
                with gr.Row():
                    steps = gr.Slider(1, MAX_STEPS, value=9, step=1, label="Steps", elem_id="steps")
                    guidance = gr.Slider(0, MAX_GUIDANCE, value=0.0, step=0.1, label="Guidance", elem_id="guidance")
                with gr.Row():
                    seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)", elem_id="seed")
                    count = gr.Slider(1, MAX_IMAGES, value=1, step=1, label="Images", elem_id="count")
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="Results", columns=2, height="auto", format="png",
                                     interactive=False, elem_id="gallery")
                info = gr.Markdown("", elem_id="result-info")

        build_cache_panel(manager, settings)

        timer = gr.Timer(1.0)
        # Status reads never enter the queue: a full generation queue must not freeze the panel.
        timer.tick(status_html, None, status_box, queue=False, show_progress="hidden", api_visibility="private")
        preload_btn.click(on_preload, None, status_box, queue=False, api_visibility="private")
        unload_btn.click(on_unload, unload_to, status_box, queue=False, api_visibility="private")
        cancel_dl_btn.click(on_cancel_download, None, status_box, queue=False, api_visibility="private")
        low_vram.change(on_low_vram, low_vram, status_box, queue=False, api_visibility="private")
        preset.change(on_preset, preset, [width, height], queue=False, api_visibility="private")
        gen_event = gr.on([generate_btn.click, prompt.submit], on_generate,
                          [prompt, negative, width, height, steps, guidance, seed, count, gallery],
                          [gallery, info], api_name="generate", concurrency_id="gpu",
                          concurrency_limit=settings.generation_concurrency)
        stop_btn.click(on_stop, None, info, cancels=[gen_event], queue=False, api_visibility="private")
    return demo
