"""The Gradio page: layout and event wiring only. Model logic lives in the PipelineManager."""
from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from pathlib import Path

import gradio as gr
from fastapi import APIRouter

from ... import startup
from ...config import Settings
from ...errors import Cancelled, ZImageError
from ...explore.batches import batch_count_of, batch_requests, first_seed
from ...explore.in_turn import run_in_turn
from ...explore.prompting import dynamic_request
from ...i18n import status_text
from ...jobs import Backend, Job
from ...model_defaults import TURBO_STEPS
from ...request import MAX_GUIDANCE, MAX_IMAGES, MAX_SIZE, MAX_STEPS, MIN_SIZE, SIZE_MULTIPLE, GenerationRequest
from ...state import LoadState
from ...store.control_images import model_label
from ...store.page_memory import page_secret
from .page_jobs import PageJobs, PageRuns, Result, new_client_id, valid_client_id
from .page_gallery import KeptGalleries
from .page_text import LANG_CHOICES, label, request_lang, text
from .ui_cache import build_cache_panel
from .ui_controlnet import ControlPicks, build_controlnet_panel, control_unit
from .ui_edit import build_edit_tab
from .ui_edit_session import PageParts, wire_edit_session
from .ui_enhance import EnhanceRuns, build_enhance_buttons, build_enhancer_setting, original_prompt, wire_enhance
from .ui_explore import StepProgress, build_batch_controls, build_seed_tools, build_xyz_tab, wire_seed_tools
from .ui_history import GenerateControls, build_history_tab
from .ui_hires import (HiresPicks, UpscaleSpots, build_hires_panel, page_refusal, upscale_button, wire_upscale,
                       with_page_hires)
from .ui_inputs import page_error_text, prompt_box, seed_value
from .ui_lora import build_lora_panel, with_loras
from .ui_models import build_model_picker
from .ui_page import SWITCH_JS
from .ui_params import gallery_caption
from .ui_pnginfo import build_pnginfo_tab
from .ui_queue import build_queue_panel
from .ui_saved import SAVED_FIELDS, SAVE_SETTINGS_JS, restored_values  # noqa: F401 (SAVED_FIELDS: tests' import)
from .ui_preview import build_live_preview, end_live_preview, job_progress
from .ui_size import CUSTOM, SIZE_PRESETS, parse_preset, preset_for, size_problem, wire_size  # noqa: F401 (tests')
from .ui_slider import SizeSlider
from .ui_status_feed import add_status_route, status_tick_js
from .ui_status import build_model_buttons, queued_note, render_replicas, render_status  # noqa: F401 (tests' import)
from .ui_variety import build_variety_slider

log = logging.getLogger(__name__)

UNLOAD_CHOICES = [("unload_keep_ram", "cpu"), ("unload_free_all", "none")]    # (page_text key, unload(to=))
GALLERY_MAX = 48


def failure_text(e: BaseException, lang: str = "en") -> str:
    """A failed generation, for the page: typed errors say what to do; anything else names itself."""
    if isinstance(e, ZImageError):
        return e.user_text(lang)
    detail = str(e).strip() or type(e).__name__
    return text("failure_generic", lang, detail=detail)


def gpu_absent(settings: Settings) -> bool | None:
    """True on a machine without a usable GPU, None while that is not known yet (torch not imported)."""
    if settings.device == "cpu":
        return True
    torch = startup.imported("torch")    # never imported just to answer: the page runs before torch
    if torch is None:
        return None
    return not torch.cuda.is_available()


def build_ui(manager: Backend, settings: Settings, registry: PageJobs | None = None,
             status_router: APIRouter | None = None) -> gr.Blocks:
    """The page. `status_router` gets the route its status panel refreshes from (ui_status_feed)."""
    gpu_default = "cpu"
    store = manager._store      # the gallery's results are kept beside the outputs, for after a restart
    registry = registry or PageJobs(max_results=GALLERY_MAX, kept=KeptGalleries(store.root, store.history, GALLERY_MAX))
    edit_jobs = PageJobs(max_results=GALLERY_MAX)      # the Edit tab's own results, apart from Generate's
    no_gpu_at_start = gpu_absent(settings)
    control_picks = ControlPicks()          # the ControlNet panel's values, per browser session
    hires_picks = HiresPicks()              # the Hires fix accordion's, likewise (ui_hires)

    def status_html(lang: str = "en") -> str:
        return render_status(manager.status(), manager.memory(), lang, settings)

    def owner_of(client_id: str | None, request: gr.Request | None) -> str | None:
        return client_id or (request.session_hash if request else None)

    def submit(req: GenerationRequest, owner: str | None, request: gr.Request | None) -> Job:
        return manager.submit(req, owner=owner, user=getattr(request, "username", None))

    def track(client_id: str, job: Job, lang: str, jobs: PageJobs = registry) -> threading.Event:
        """Record the job under this browser; its results join the browser's gallery when it ends,
        whether or not a page is still waiting for it (a reload drops the waiting handler's page)."""
        recorded = threading.Event()
        jobs.start(client_id, job)

        def done(future) -> None:
            try:
                results = [] if future.cancelled() or future.exception() else result_entries(future.result(), lang)
                jobs.finish(client_id, job, results)
            finally:
                recorded.set()
        job.future.add_done_callback(done)
        return recorded

    def result_entries(result, lang: str = "en") -> list[Result]:
        req = result.request
        return [Result(caption=functools.partial(gallery_caption, req.prompt, item.seed, req.num_inference_steps,
                                                 req.width, req.height, req.loras, result.seconds_per_image),
                       path=Path(item.path) if item.path else None, image=None if item.path else item.image)
                for item in result.images]

    def result_info(result, lang: str) -> str:
        peak = text("result_peak", lang, v=f"{result.peak_vram_bytes / 2**30:.1f}") if result.peak_vram_bytes else ""
        info = text("result_info", lang, n=len(result.images), s=f"{result.seconds:.2f}",
                    per=f"{result.seconds_per_image:.2f}", peak=peak,
                    seeds=", ".join(str(i.seed) for i in result.images))
        if result.warning:
            info += f"\n\n⚠️ {status_text(result.warning, '', lang)[0]}"
        return info

    def wait_for_job(job: Job, finished, progress: gr.Progress, lang: str) -> None:
        while not finished():
            fraction, desc = job_progress(job, manager.status(), lang)
            progress(fraction, desc=desc)
            time.sleep(0.2)

    def outcome(job: Job, client_id: str | None, lang: str, jobs: PageJobs = registry):
        """(gallery, info) once `job` has ended (`jobs`: the tab's results); raises gr.Error with what went wrong."""
        try:
            result = job.future.result()
        except Cancelled:
            gr.Info(text("stopped_info", lang))
            return (jobs.gallery(client_id, lang) if client_id else []), text("stopped_text", lang)
        except Exception as e:          # typed or not: the page says what happened and keeps working
            raise gr.Error(failure_text(e, lang))
        if result.warning:
            gr.Warning(status_text(result.warning, "", lang)[0])
        if client_id:
            return jobs.gallery(client_id, lang), result_info(result, lang)
        entries = result_entries(result, lang)
        return [item for item in (r.gallery_item(lang) for r in entries) if item], result_info(result, lang)

    runs = PageRuns()                     # Generate's runs under way (Batch count, Generate forever), for Stop
    enhance_runs = EnhanceRuns()          # the clients whose Enhance runs (Stop stops it)

    def on_generate(prompt, negative, width, height, steps, guidance, seed, count, client=None,
                    lora1=None, lora2=None, lora3=None, lora1_strength=1.0, lora2_strength=1.0,
                    lora3_strength=1.0, batch_count=1, forever=False, variety=0.0, link=None,
                    request: gr.Request = None, progress=gr.Progress()):
        client_id, lang = valid_client_id(client), request_lang(request)
        try:
            data = {"prompt": with_loras(prompt or "", (lora1, lora2, lora3), (lora1_strength, lora2_strength,
                                                                               lora3_strength)),
                    "negative_prompt": negative or "", "width": width, "height": height, "num_inference_steps": steps,
                    "guidance_scale": guidance, "seed": seed_value(seed), "num_images": count, "variety": variety,
                    "original_prompt": original_prompt(prompt, link)}
            batches = None if forever is True else batch_count_of(1 if batch_count is None else batch_count)
            data = first_seed(data) if batches != 1 else data
            control = control_unit(control_picks.get(request.session_hash if request else None), model_label(settings))
            build = lambda d: with_page_hires(dataclasses.replace(   # noqa: E731  (wildcards picked with each batch's seed)
                dynamic_request(d, settings.wildcards_folder, settings.max_prompt_chars), control=control),
                hires_picks, request, settings)
            requests = batch_requests(build(data), batches, lambda s: build(dict(data, seed=s)))
        except ZImageError as e:          # validation errors included: they name the control (hires' too)
            raise gr.Error(page_refusal(e, lang))
        jobs: dict = {}                   # job -> its recorded event; the last one waited for answers
        made: list = []                   # the run's finished batches (a Stop keeps them)
        owner = owner_of(client_id, request)
        stop = runs.begin(owner)          # Stop stays enabled for the whole run, not only while a batch runs

        def start(req: GenerationRequest) -> Job:
            job = submit(req, owner, request)
            jobs[job] = track(client_id, job, lang) if client_id else None
            return job

        def wait(i: int, job: Job) -> None:
            jobs["last"] = job
            step = StepProgress(progress, i, batches, "batch_progress", lang) if batches != 1 else progress
            wait_for_job(job, jobs[job].is_set if jobs[job] else job.future.done, step, lang)
        try:
            stopped = run_in_turn(start, requests, lambda i, job, result: made.append(result), wait, stop)
            if stopped and batches != 1 and made:       # whether the Stop met a job or came between two
                words = text("batches_stopped", lang, k=len(made))
                gr.Info(words)
                return (registry.gallery(client_id, lang) if client_id else []), words
        except Cancelled:
            pass
        except ZImageError as e:
            if "last" not in jobs:
                raise gr.Error(page_error_text(e, lang))
        except Exception:                 # the job's failure: outcome() says what happened
            pass
        finally:
            runs.end(owner, stop)
        return outcome(jobs["last"], client_id, lang)

    def run_edit(req: GenerationRequest, client, request: gr.Request | None, progress,
                 jobs: PageJobs | None = None) -> tuple:
        """The Edit tab's request, queued and tracked as Generate's are: (gallery, info) of `jobs`
        (the Edit tab's results; Generate's for an Upscale asked from Generate or History)."""
        jobs = edit_jobs if jobs is None else jobs
        client_id, lang = valid_client_id(client), request_lang(request)
        try:
            if req.mode == "inpaint":    # and outpaint; img2img takes no ControlNet (the request refuses one)
                picked = control_picks.get(request.session_hash if request else None)
                req = dataclasses.replace(req, control=control_unit(picked, model_label(settings)))
            job = submit(req, owner_of(client_id, request), request)
        except ZImageError as e:
            raise gr.Error(e.user_text(lang))
        recorded = track(client_id, job, lang, jobs) if client_id else None
        wait_for_job(job, recorded.is_set if recorded else job.future.done, progress, lang)
        return outcome(job, client_id, lang, jobs)

    def on_pick(evt: gr.SelectData):
        image = evt.value.get("image") if isinstance(evt.value, dict) else None
        return image.get("path") if isinstance(image, dict) else None

    def resumer(jobs: PageJobs):
        def on_resume(client, request: gr.Request = None, progress=gr.Progress()):
            """A page (re)opened while this browser's job of `jobs` runs: its progress, then its images."""
            client_id = valid_client_id(client)
            job = (jobs.running(client_id) or [None])[-1]
            if job is None:
                return gr.skip(), gr.skip()
            lang = request_lang(request)
            wait_for_job(job, lambda: job not in jobs.running(client_id), progress, lang)
            return outcome(job, client_id, lang, jobs)
        return on_resume

    def on_load(client, saved, request: gr.Request = None):
        client_id = valid_client_id(client) or new_client_id()
        restored = restored_values(saved)
        lang = request_lang(request)
        return [client_id, *restored, registry.gallery(client_id, lang), gr.Timer(active=bool(registry.running(client_id))),
                lang, status_html(lang), *tab_labels(lang), *[gr.Button(interactive=True) for _ in ready_buttons]]

    def on_click(client, request: gr.Request = None):
        """Generate was clicked: Stop and the live panel on, and a word when it queues behind a job."""
        mine = registry.running(valid_client_id(client))
        return gr.Button(interactive=True), gr.Timer(active=True), queued_note(len(mine), request_lang(request))

    def on_stop(client, request: gr.Request):
        owner = owner_of(valid_client_id(client), request)
        n = runs.stop(owner)              # first: a job the run submits meanwhile is then the cancel's to find
        n += manager.cancel(owner=owner, user=getattr(request, "username", None))
        # what it stopped says "Stopping…" in the live panel (job_progress), then "Stopped" here
        return gr.skip() if n else text("nothing_to_stop", request_lang(request))

    def status_snapshot(client: str | None, lang: str) -> dict:
        """What the page's one-second refresh shows (ui_status_feed): the panel, and whether a
        download runs and this browser has something to stop."""
        status = manager.status()
        mine = client is not None and (bool(registry.running(client) or edit_jobs.running(client))
                                       or runs.active(client) or enhance_runs.running(client))   # between batches too
        return {"html": render_status(status, manager.memory(), lang, settings),
                "downloading": status.state == LoadState.DOWNLOADING, "mine": mine}

    def on_preload(request: gr.Request = None):
        manager.preload()
        return status_html(request_lang(request))

    def on_unload(choice, request: gr.Request = None):
        lang = request_lang(request)
        to = choice if choice in dict(UNLOAD_CHOICES).values() else "none"
        manager.unload(to)
        return status_html(lang), (text("no_gpu_unload", lang) if to == "cpu" and gpu_absent(settings) else "")

    def on_cancel_download(request: gr.Request = None):
        manager.cancel_download()
        return status_html(request_lang(request))

    def on_low_vram(enabled, request: gr.Request = None):
        lang = request_lang(request)
        manager.set_low_vram(bool(enabled))
        return status_html(lang), (text("no_gpu_low_vram", lang) if enabled and gpu_absent(settings) else "")

    def tab_labels(lang: str) -> list:
        """The tabs' titles from the server: Gradio's tab bar keeps the titles it drew first, so the
        hidden tabs' stayed in the old language when the browser's locale changed."""
        return [gr.Tab(label=text(key, lang)) for key in ("tab_generate", "tab_edit", "history_tab", "tab_pnginfo")]

    def on_lang(lang, width, height, client):
        """The switch moved (its script already set the cookie and the browser's labels): the text the
        server wrote, again in the new language (the gallery's captions too)."""
        lang = lang if lang in dict(LANG_CHOICES).values() else "en"
        client_id = valid_client_id(client)
        return (status_html(lang), size_problem(width, height, lang), *tab_labels(lang),
                registry.gallery(client_id, lang) if client_id else gr.skip())

    # Gradio's own sweep of its temp folder (the uploads, the editor's blobs): every hour (or every
    # upload_keep_s, if shorter) the files older than upload_keep_s go, and all of them at exit. It
    # deletes only files in that folder (copies of ours among them): the outputs folder can never be
    # inside it (server.outputs_dir_checked refuses the start).
    sweep = (min(3600, settings.upload_keep_s), settings.upload_keep_s)
    with gr.Blocks(title="Z-Image-Turbo", analytics_enabled=False, delete_cache=sweep) as demo:
        # One secret per outputs folder, not Gradio's random one per process: a restart left the
        # browser's values undecryptable, so the page came back with default settings and no results.
        secret = page_secret(store.root)
        client_id = gr.BrowserState(None, storage_key="zimage-client", secret=secret)
        saved = gr.BrowserState({}, storage_key="zimage-settings", secret=secret)
        enhanced = gr.BrowserState(None, storage_key="zimage-enhance", secret=secret)    # ui_enhance's link
        with gr.Row(elem_id="status-row", equal_height=True):
            with gr.Column(scale=0, min_width=200, elem_id="title-col"):
                gr.Markdown("## Z-Image-Turbo", elem_id="page-title")
                lang_switch = gr.Radio(LANG_CHOICES, value="en", show_label=False, label=label("lang_label"),
                                       elem_id="lang-switch", container=False)
            status_box = gr.HTML(status_html(), elem_id="status-panel")
            preload_btn, unload_btn = build_model_buttons()
            cancel_dl_btn = gr.Button(label("cancel_download"), elem_id="cancel-download-btn", size="sm",
                                      visible=False, scale=0, min_width=140)
        with gr.Tabs(elem_id="main-tabs") as tabs:
            with gr.Tab(label("tab_generate"), id="generate", elem_id="generate-tab") as generate_tab:
                # Forge's layout: Generate in a narrow column right of the prompt; settings left, results right.
                with gr.Row(elem_id="prompt-row", equal_height=True):
                    with gr.Column(scale=6, min_width=200):
                        prompt = prompt_box(settings.max_prompt_chars, "prompt", label=label("prompt_label"), lines=3,
                                            placeholder=label("prompt_hint"))
                        enhance = build_enhance_buttons()
                    with gr.Column(scale=1, min_width=96, elem_id="generate-col"):
                        generate_btn = gr.Button(label("generate_btn"), variant="primary", elem_id="generate-btn",
                                                 interactive=False)     # on_load enables it (ready_buttons)
                        stop_btn = gr.Button(label("stop_btn"), variant="stop", elem_id="stop-btn", interactive=False)
                with gr.Row(elem_id="work-row"):
                    with gr.Column(scale=2, elem_id="settings-col"):
                        negative = prompt_box(settings.max_prompt_chars, "negative-prompt", label=label("negative_label"),
                                              lines=1)
                        lora_picks, lora_strengths = build_lora_panel(manager, demo)
                        build_controlnet_panel(settings, control_picks)
                        build_hires_panel(settings, hires_picks)
                        preset = gr.Dropdown([*SIZE_PRESETS, (label("preset_custom"), CUSTOM)], value="1024x1024",
                                             label=label("preset_label"), elem_id="preset")
                        with gr.Row():
                            width = SizeSlider(MIN_SIZE, MAX_SIZE, value=1024, step=SIZE_MULTIPLE, label=label("width"),
                                                elem_id="width")
                            height = SizeSlider(MIN_SIZE, MAX_SIZE, value=1024, step=SIZE_MULTIPLE, label=label("height"),
                                                 elem_id="height")
                        size_error = gr.Markdown("", elem_id="size-error")
                        with gr.Row():
                            steps = gr.Slider(1, MAX_STEPS, value=TURBO_STEPS, step=1, label=label("steps"), elem_id="steps")
                            guidance = gr.Slider(0, MAX_GUIDANCE, value=0.0, step=0.1, label=label("guidance"),
                                                 elem_id="guidance")
                        build_model_picker(manager, demo, steps, guidance, negative)
                        with gr.Row():
                            seed = gr.Number(value=-1, precision=0, label=label("seed_label"), elem_id="seed")
                            seed_dice, seed_reuse = build_seed_tools()
                            count = gr.Slider(1, MAX_IMAGES, value=1, step=1, label=label("images_label"),
                                              elem_id="count")
                        variety = build_variety_slider()
                        batch_count, forever = build_batch_controls()
                        with gr.Accordion(label("settings_label"), open=False, elem_id="settings-panel"):
                            unload_to = gr.Radio([(label(key), to) for key, to in UNLOAD_CHOICES], value=gpu_default,
                                                 label=label("unload_to_label"), elem_id="unload-to",
                                                 info=label("no_gpu_unload") if no_gpu_at_start else None)
                            low_vram = gr.Checkbox(value=settings.low_vram, label=label("low_vram_label"),
                                                   elem_id="low-vram",
                                                   info=label("no_gpu_low_vram") if no_gpu_at_start else None)
                            controls_note = gr.Markdown("", elem_id="controls-note")
                            enhancer_system = build_enhancer_setting()
                            build_cache_panel(manager, settings)
                        build_queue_panel(manager)
                    with gr.Column(scale=3, elem_id="results-col"):
                        preview_timer, preview_panel = build_live_preview(manager, registry, client_id)
                        gallery = gr.Gallery(label=label("results_label"), columns=2, height="auto", format="png",
                                             interactive=False, elem_id="gallery",  # no "share": it only
                                             buttons=["download", "fullscreen"],    # answered "Share failed"
                                             object_fit="contain")      # a portrait whole, not cropped square
                        info = gr.Markdown("", elem_id="result-info")
                        with gr.Row():
                            send_btn = gr.Button(label("send_to_edit"), size="sm", elem_id="send-to-edit")
                            upscale_btn = upscale_button("upscale-btn")
                        picked = gr.State(None)     # the gallery image ♻ takes its seed from (own results only)
            edit = build_edit_tab(settings, run_edit, client_id, manager, demo)
            generate_controls = GenerateControls(prompt, negative, width, height, steps, guidance, seed, count,
                                                 lora_picks, lora_strengths, variety)
            history_tab = build_history_tab(manager, tabs, generate_controls, edit)
            with gr.Tab(label("tab_pnginfo"), id="pnginfo") as pnginfo_tab:
                pnginfo = build_pnginfo_tab(settings, [prompt, negative, width, height, steps, guidance, seed, variety],
                                            tabs)
            build_xyz_tab(manager, settings, [prompt, negative, width, height, steps, guidance, seed, variety],
                          [*lora_picks, *lora_strengths], client_id, owner_of)

        private = dict(queue=False, api_visibility="private")
        tab_outputs = [generate_tab, edit.tab, history_tab, pnginfo_tab]      # in tab_labels' order
        # Disabled until the page has its client id: a click before that (a loaded machine, a fast
        # user) made a job no browser owned: Stop stayed disabled, the result went to no gallery.
        ready_buttons = [generate_btn, edit.run_btn]
        controls = [prompt, negative, width, height, steps, guidance, seed, count]
        lora_controls = [*lora_picks, *lora_strengths]
        saved_controls = [*controls, *lora_controls, variety, enhancer_system]       # in SAVED_FIELDS order
        # Every tab's generation reaches the manager's queue (which counts it and enforces queue_max
        # with QueueFull); with a limit of 1 here the others waited in Gradio's queue, uncounted.
        waiting_room = settings.generation_concurrency + settings.queue_max + 1
        live_panel = (registry, client_id, preview_timer, preview_panel)
        end_live_preview(demo.load(on_load, [client_id, saved], [client_id, *saved_controls, gallery, preview_timer, lang_switch,
                                                             status_box, *tab_outputs, *ready_buttons], **private).then(
            resumer(registry), client_id, [gallery, info], api_visibility="private", concurrency_id="resume",
            concurrency_limit=waiting_room, show_progress="hidden"), *live_panel)
        timer = gr.Timer(1.0)
        # A fetch of our own route, not a Gradio event (ui_status_feed says why); never queued, so a
        # full generation queue does not freeze the panel.
        add_status_route(status_router or APIRouter(), status_snapshot)
        timer.tick(None, client_id, [status_box, cancel_dl_btn, stop_btn, edit.stop_btn], js=status_tick_js(),
                   show_progress="hidden", **private)
        # Kept in the browser by the browser, with no round trip: a setting changed a moment before a
        # reload was lost under load, its save still on its way to the server and back.
        gr.on([c.change for c in saved_controls], None, saved_controls, saved, show_progress="hidden",
              js=SAVE_SETTINGS_JS, **private)
        preload_btn.click(on_preload, None, status_box, **private)
        unload_btn.click(on_unload, unload_to, [status_box, controls_note], **private)
        cancel_dl_btn.click(on_cancel_download, None, status_box, **private)
        low_vram.change(on_low_vram, low_vram, [status_box, controls_note], **private)
        # The script first (the cookie that later requests carry, the browser's labels), then the server's text.
        lang_switch.input(on_lang, [lang_switch, width, height, client_id], [status_box, size_error, *tab_outputs, gallery],
                          js=SWITCH_JS, **private)
        wire_size(preset, width, height, size_error)
        # No prompt.submit: Enter in the prompt is a newline; Ctrl/Cmd+Enter clicks Generate (ui_page).
        # A click while this browser's job runs is queued behind it ("multiple"; Gradio's "once" dropped
        # it without a word) and says so; one progress bar, the live panel's: none of Gradio's on the results.
        # In one chain, the live panel's timer is on before the job's event starts, and off after it ends:
        # as two events, a refused request (an empty prompt) could end before on_click's answer came.
        end_live_preview(generate_btn.click(on_click, client_id, [stop_btn, preview_timer, info], show_progress="hidden",
                                            trigger_mode="multiple", **private).then(
            on_generate, [*controls, client_id, *lora_controls, batch_count, forever, variety, enhanced], [gallery, info],
            api_name="generate", concurrency_id="gpu", concurrency_limit=waiting_room,
            trigger_mode="multiple", show_progress="hidden"), *live_panel)
        # No `cancels=`: Gradio would end the event before "Stopped" could arrive; the handler reports it.
        stop_btn.click(on_stop, client_id, info, **private)
        gallery.select(on_pick, None, picked, **private)
        wire_seed_tools(seed_dice, seed_reuse, seed, picked, client_id, registry)
        wire_enhance(manager, settings, demo, prompt, enhance, enhancer_system, enhanced, client_id, owner_of, enhance_runs,
                     waiting_room)
        wire_edit_session(edit, PageParts(demo, tabs, client_id, generate_controls.all(), gallery, send_btn, generate_btn,
                                          registry, edit_jobs, pnginfo, resumer(edit_jobs), on_stop, waiting_room))
        wire_upscale(UpscaleSpots(settings, hires_picks, run_edit, registry, edit_jobs, store, client_id, tabs,
                                  waiting_room), gallery, info, upscale_btn, edit, history_tab)
    return demo
