"""The page's live feedback on this browser's job: the latent preview every step, its own progress
bar with the step, "image 2 of 4", the ETA and the queue position.

A fast timer, active only while this browser has a job, reads the job (its fields are plain values
the worker writes) and the manager's latent preview. The preview is the latent the runner already
copies to the CPU after each step (runner.on_step), mapped to RGB without the VAE
(generate.latent_preview_png): polling it adds nothing on the GPU. The image travels inline as a
data: URI, so no file is written per tick into Gradio's cache.
"""
from __future__ import annotations

import base64
import html
import logging

import gradio as gr

from ...jobs import Backend, Job
from ...state import Status
from .page_jobs import PageJobs, valid_client_id
from .page_text import request_lang, stage_text, text

log = logging.getLogger(__name__)

# About one tick per step on the GPU (a 1024x1024 step takes ~0.2 s on an H200); each tick that
# finds nothing new returns no update, so the browser re-draws only when the step changed.
PREVIEW_TICK_S = 0.25


def eta_seconds(job: Job) -> float | None:
    """The job's own ETA when the manager gives one, else from the measured step time."""
    if job.eta_s is not None:
        return job.eta_s
    if job.phase == "generating" and job.step_seconds > 0 and job.total_steps:
        return max(0, job.total_steps - job.step) * job.step_seconds
    return None


def job_progress(job: Job, status: Status, lang: str = "en") -> tuple[float, str]:
    """(fraction, description) for Gradio's progress bar and the live panel while `job` waits or
    runs, in `lang`: the phase it is in, step k of n, image k of n, and an ETA once a step has been
    timed; "Stopping…" once it is stopped. Stop's own answer wrote that into the result line, where
    it could land after the run's "Stopped" (two answers to one line, in either order on a loaded
    machine: the page said "Stopping…" for good); the panel goes when the run ends."""
    fraction, desc = _phase_progress(job, status, lang)
    return (fraction, text("stopping", lang)) if job.cancelled else (fraction, desc)


def _phase_progress(job: Job, status: Status, lang: str) -> tuple[float, str]:
    phase = job.phase
    if phase == "waiting":
        return 0.0, text("progress_waiting", lang, n=job.queue_position)
    if phase == "loading":
        return status.progress, text("progress_loading", lang, stage=stage_text(status, lang))
    total, step = job.total_steps, job.step
    images_total, images_done = job.images_total, job.images_done
    if phase == "encoding":
        fraction, desc = 0.9 * _made(images_done, images_total), text("progress_encoding", lang)
    elif phase == "decoding":
        fraction, desc = 0.9 * _made(images_done + 1, images_total), text("progress_decoding", lang)
    elif phase == "saving":
        fraction = 0.95 + 0.05 * (images_done / images_total if images_total else 0)
        desc = text("progress_saving", lang)
    elif total and (phase == "generating" or step):
        fraction = 0.9 * _made(images_done + step / total, images_total)       # one pipeline call per image
        desc = text("progress_step", lang, step=step, total=total)
    else:
        return 0.0, text("progress_starting", lang)
    if images_total > 1:
        desc = text("progress_image", lang, k=min(images_done + 1, images_total), n=images_total, desc=desc)
    eta = eta_seconds(job)
    if eta is not None:
        desc += text("progress_left", lang, s=f"{eta:.0f}" if eta >= 10 else f"{eta:.1f}")
    return fraction, desc


def _made(images: float, images_total: int) -> float:
    """The share of the job's images made (one pipeline call each), 0-1."""
    return min(1.0, images / max(1, images_total))


def progress_key(job: Job) -> str:
    """What the preview shows of `job`; a tick that finds the same key sends nothing."""
    return f"{job.id}:{job.phase}:{job.step}:{job.images_done}:{job.queue_position}:{job.cancelled}"


def render_live(job: Job, status: Status, png: bytes | None, lang: str = "en", queued: int = 0) -> str:
    """The live panel as HTML in `lang`: a progress bar with its line (and how many more of this
    browser's jobs wait behind it), and the latent preview once a step has run, drawn at the size
    the result will have (it was the latent's own 60-120 px). A pure function so tests can call it."""
    fraction, desc = job_progress(job, status, lang)
    if queued:
        desc += " · " + text("generate_queued", lang, n=queued + 1)
    pct = int(round(fraction * 100))
    parts = [f'<div class="zi-live" data-job="{job.id}" data-step="{job.step}">',
             f'<progress class="zi-live-bar" max="100" value="{pct}" aria-label="{html.escape(desc)}"></progress>',
             f'<div class="zi-live-line">{html.escape(desc)}</div>']
    if png is not None:
        data = base64.b64encode(png).decode()
        req = job.request
        size = f' style="aspect-ratio: {req.width} / {req.height}"' if req is not None else ""
        parts.append(f'<img class="zi-live-image" alt="{text("preview_alt", lang)}" title="{text("preview_title", lang)}" '
                     f'src="data:image/png;base64,{data}"{size}>')
    parts.append("</div>")
    return "".join(parts)


def build_live_preview(manager: Backend, registry: PageJobs,
                       client_id: gr.BrowserState) -> tuple[gr.Timer, gr.HTML]:
    """Lay out the live panel in the current Blocks context; returns its timer, which the caller
    activates when this browser starts (or finds) a job and stops once that job's event ended
    (clearing the panel, the other value returned)."""

    def on_tick(client, shown, request: gr.Request = None):
        jobs = registry.running(valid_client_id(client))
        if not jobs:
            return ("", "") if shown else (gr.skip(), gr.skip())
        job = jobs[0]                  # the one that runs first; a second click's waits behind it
        key = f"{progress_key(job)}:{len(jobs)}"
        if key == shown:
            return gr.skip(), gr.skip()
        try:
            png = manager.preview_png(job) if job.step else None
        except Exception:              # a preview is a nicety: never let it break the page's tick
            log.exception("latent preview failed")
            png = None
        return render_live(job, manager.status(), png, request_lang(request), queued=len(jobs) - 1), key

    panel = gr.HTML("", elem_id="live-preview")
    shown = gr.State("")
    timer = gr.Timer(PREVIEW_TICK_S, active=False)
    timer.tick(on_tick, [client_id, shown], [panel, shown], show_progress="hidden", queue=False,
               api_visibility="private")
    return timer, panel


def end_live_preview(after, registry: PageJobs, client_id: gr.BrowserState, timer: gr.Timer, panel: gr.HTML) -> None:
    """Once the event `after` has ended, well or not: the live panel's timer off and the panel
    cleared, unless another job of this browser runs (a second click's). After a failure too:
    Gradio 6.31's frontend runs an event's `.then` only after a success (on an error it dispatches
    the `.failure` ones alone), so a refused request (an empty prompt) left the timer on, four
    ticks a second for good: 0.35 of a core in chromium at rest, and a request each on the server."""
    def off(client):
        if registry.running(valid_client_id(client)):
            return gr.skip(), gr.skip()
        return gr.Timer(active=False), ""

    for listen in (after.then, after.failure):
        listen(off, client_id, [timer, panel], queue=False, api_visibility="private")
