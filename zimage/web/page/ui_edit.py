"""The Edit tab: an image dropped, pasted or sent from the gallery or History, then img2img
(strength), inpaint (a mask drawn on the image with Gradio's ImageEditor; mask blur; only the
masked area) or outpaint (the canvas extended by N px a side). Layout and wiring; the request is
built by `edit_request`, a pure function; the images are checked by store/images.

The editor's images reach the server through the guard (gradio_uploads.BLOB_INPUTS); the copies
Gradio writes for the event (its cache folder) are deleted once read.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from ...config import Settings
from ...errors import InvalidRequest, ZImageError
from ...jobs import Backend
from ...model_defaults import TURBO_STEPS
from ...request import (DEFAULT_MASK_BLUR, DEFAULT_PADDING, DEFAULT_STRENGTH, MAX_GUIDANCE, MAX_IMAGES, MAX_MASK_BLUR,
                       MAX_PADDING, MAX_SIZE, MAX_STEPS, MIN_SIZE, SIZE_MULTIPLE, GenerationRequest)
from ...store.images import MAX_OUTPAINT_PX, drawn_mask, load_image, outpaint_canvas
from .page_text import label, request_lang, text
from .ui_edit_send import edit_values, file_params
from .ui_inputs import page_error_text, prompt_box, seed_value
from .ui_lora import build_lora_panel, with_loras
from .ui_refusals import build_drop_check

log = logging.getLogger(__name__)

# The mode radio's values (the `edit` API's mode argument: unchanged, so API callers and scripts that
# send these English words keep working) -> the request's mode; the browser shows the page_text key.
MODES = {"Image to image": "img2img", "Inpaint (draw the mask)": "inpaint", "Outpaint (extend the canvas)": "outpaint"}
MODE_KEYS = {"img2img": "edit_mode_img2img", "inpaint": "edit_mode_inpaint", "outpaint": "edit_mode_outpaint"}
# Outpaint's sliders, in the request's order: (element id suffix, page_text key).
SIDES = (("left", "edit_extend_left"), ("right", "edit_extend_right"), ("top", "edit_extend_top"),
         ("bottom", "edit_extend_bottom"))
# InvalidRequest details: zimage/i18n.py's INVALID_ZH has their Chinese.
NO_IMAGE = "Add an image first: drop, paste or send one to the Edit tab."
NO_MASK = "Paint over the part of the image to change (Inpaint mode), or choose Image to image."


@dataclass
class EditTarget:
    """The Edit tab's parts: what Send to Edit fills (`outputs`), what a reload restores (`saved`, in
    ui_edit_session.EDIT_FIELDS order), its results and buttons."""
    settings: Settings
    editor: Any
    prompt: Any
    negative: Any
    steps: Any
    guidance: Any
    seed: Any
    lora_picks: list
    lora_strengths: list
    saved: list
    gallery: Any
    info: Any
    run_btn: Any
    stop_btn: Any
    send_again: Any
    send_generate: Any
    send_pnginfo: Any
    tab: Any = None         # the gr.Tab, whose title ui.py re-sends in the page's language

    @property
    def outputs(self) -> list:
        return [self.editor, self.prompt, self.negative, self.steps, self.guidance, self.seed, *self.lora_picks,
                *self.lora_strengths]

    def values(self, path: str, lang: str = "en") -> list:
        """The editor showing `path` (no mask yet), and the settings the image was made with, read
        from its own PNG (gr.skip() for those it does not carry)."""
        return edit_values(path, file_params(path, self.settings, lang), self.settings.max_prompt_chars)


def _read(path: str | None, field: str, settings: Settings, mask: bool = False):
    if not path:
        return None
    raw = Path(path).read_bytes()
    reader = drawn_mask if mask else load_image
    return reader(raw, field, settings.max_upload_bytes, settings.max_upload_pixels)


def editor_images(value: Any, settings: Settings) -> tuple[Any, Any]:
    """(image, mask or None) from the editor's value (type="filepath"): the background, and every
    painted layer's pixels as the mask. Raises InvalidRequest naming `image` when there is none."""
    if not isinstance(value, dict) or not (value.get("background") or value.get("composite")):
        raise InvalidRequest("image", NO_IMAGE)
    image = _read(value.get("background") or value.get("composite"), "image", settings)
    mask = None
    for i, layer in enumerate(value.get("layers") or []):
        drawn = _read(layer, f"layers[{i}]", settings, mask=True)
        if drawn is None:
            continue
        if drawn.size != image.size:
            drawn = drawn.resize(image.size)
        mask = drawn if mask is None else _union(mask, drawn)
    if mask is not None and mask.getbbox() is None:
        mask = None
    return image, mask


def _union(a, b):
    from PIL import ImageChops

    return ImageChops.lighter(a, b)


def edit_request(value: Any, mode_label: str, prompt: str, negative: str, strength: float, blur: int,
                 only_masked: bool, padding: int, outpaint: tuple[int, int, int, int], image_size: bool,
                 width: int, height: int, steps: int, seed: int, count: int, settings: Settings,
                 loras: tuple[Any, ...] = (), lora_strengths: tuple[float, ...] = (),
                 guidance: float = 0.0) -> GenerationRequest:
    """The Edit tab's fields as a validated request (errors name the field). Pure but for the
    editor's files, which it reads."""
    mode = MODES.get(mode_label, mode_label)
    image, mask = editor_images(value, settings)
    data: dict[str, Any] = {"prompt": with_loras(prompt or "", loras, lora_strengths) if loras else (prompt or ""),
                            "negative_prompt": negative or "", "num_inference_steps": int(steps),
                            "seed": seed_value(seed), "num_images": int(count), "strength": float(strength),
                            "guidance_scale": float(guidance)}
    if mode == "outpaint":
        image, mask = outpaint_canvas(image, *(int(v) for v in outpaint))
        data.update(mode="inpaint", mask_blur=int(blur))
    elif mode == "inpaint":
        if mask is None:
            raise InvalidRequest("mask", NO_MASK)
        data.update(mode="inpaint", mask_blur=int(blur), inpaint_full_res=bool(only_masked),
                    inpaint_full_res_padding=int(padding))
    else:
        data["mode"], mask = "img2img", None
    data["init_image"], data["mask"] = image, mask
    if not image_size:
        data.update(width=int(width), height=int(height))
    return GenerationRequest.from_mapping(data, settings.max_prompt_chars)


def _discard(value: Any, cache: str | None, in_use: set[str]) -> None:
    """Delete the event's copies of the editor's images: files in Gradio's cache that the page does
    not show (`in_use`: its registered files, e.g. a picture Send to Edit put in the editor)."""
    if not isinstance(value, dict) or not cache:
        return
    root = Path(cache).resolve()
    paths = [value.get("background"), value.get("composite"), *(value.get("layers") or [])]
    for p in paths:
        try:
            if p and p not in in_use and Path(p).resolve().is_relative_to(root):
                Path(p).unlink(missing_ok=True)
                Path(p).parent.rmdir()          # Gradio's one-file folder (a hash)
        except OSError:
            pass


RunEdit = Callable[..., tuple]      # (request, client, gr.Request, gr.Progress) -> (gallery, info)


def build_edit_tab(settings: Settings, run: RunEdit, client_id, manager: Backend, demo: gr.Blocks) -> EditTarget:
    """The Edit tab (inside the caller's gr.Tabs), with its own LoRA slots, Stop and results;
    `run` submits a request and waits for its images."""

    def on_mode(choice):
        mode = MODES.get(choice, "img2img")
        return gr.Group(visible=mode == "inpaint"), gr.Group(visible=mode == "outpaint"), \
            gr.Slider(visible=mode != "img2img")

    def on_image_size(checked):
        return gr.Row(visible=not checked)

    root = gr.context.Context.root_block         # the page: its registered files are not discarded

    def in_use() -> set[str]:
        sets = getattr(root, "temp_file_sets", None) or []
        return {str(p) for s in sets for p in s}

    def on_edit(value, mode_label, prompt, negative, strength, blur, only_masked, padding, left, right, top, bottom,
                image_size, width, height, steps, seed, count, client=None, lora1=None, lora2=None, lora3=None,
                lora1_strength=1.0, lora2_strength=1.0, lora3_strength=1.0, guidance=0.0,
                request: gr.Request = None, progress=gr.Progress()):
        picks, weights = (lora1, lora2, lora3), (lora1_strength, lora2_strength, lora3_strength)
        lang = request_lang(request)
        try:
            req = edit_request(value, mode_label, prompt, negative, strength, blur, only_masked, padding,
                               (left, right, top, bottom), image_size, width, height, steps, seed, count, settings,
                               tuple(picks), tuple(weights), guidance)
        except ZImageError as e:
            raise gr.Error(page_error_text(e, lang))
        except (TypeError, ValueError) as e:
            raise gr.Error(text("check_settings", lang, error=e))
        finally:
            _discard(value, getattr(editor, "GRADIO_CACHE", None), in_use())
        return run(req, client, request, progress)

    with gr.Tab(label("tab_edit"), id="edit", elem_id="edit-tab") as tab:
        with gr.Row(equal_height=True):
            with gr.Column(scale=6, min_width=200):
                prompt = prompt_box(settings.max_prompt_chars, "edit-prompt", label=label("prompt_label"), lines=2,
                                    placeholder=label("edit_prompt_hint"))
            with gr.Column(scale=1, min_width=96):
                run_btn = gr.Button(label("edit_btn"), variant="primary", elem_id="edit-btn",
                                    interactive=False)          # until the page has loaded (ui.ready_buttons)
                stop_btn = gr.Button(label("stop_btn"), variant="stop", elem_id="edit-stop-btn", interactive=False)
        with gr.Row():
            with gr.Column(scale=3):
                editor = gr.ImageEditor(type="filepath", label=label("edit_image"), sources=["upload", "clipboard"],
                                        image_mode="RGBA", format="png", layers=False, transforms=(),
                                        brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=32),
                                        elem_id="edit-image", buttons=["download", "fullscreen"])   # no "share"
                build_drop_check(settings)      # a broken or oversized image refused when it is dropped
                mode = gr.Radio([(label(MODE_KEYS[m]), value) for value, m in MODES.items()],
                                value=next(iter(MODES)), label=label("edit_mode_label"), elem_id="edit-mode")
                strength = gr.Slider(0, 1, value=DEFAULT_STRENGTH, step=0.01, label=label("edit_strength"),
                                     elem_id="edit-strength")
                blur = gr.Slider(0, MAX_MASK_BLUR, value=DEFAULT_MASK_BLUR, step=1, label=label("edit_blur"),
                                 elem_id="edit-mask-blur", visible=False)
                with gr.Group(visible=False, elem_id="edit-inpaint") as inpaint_group:
                    only_masked = gr.Checkbox(False, label=label("edit_only_masked"), elem_id="edit-only-masked")
                    padding = gr.Slider(0, MAX_PADDING, value=DEFAULT_PADDING, step=4, label=label("edit_padding"),
                                        elem_id="edit-padding")
                with gr.Group(visible=False, elem_id="edit-outpaint") as outpaint_group:
                    with gr.Row():
                        sides = [gr.Slider(0, MAX_OUTPAINT_PX, value=0, step=SIZE_MULTIPLE,
                                           label=label(key), elem_id=f"edit-extend-{side}")
                                 for side, key in SIDES]
                negative = prompt_box(settings.max_prompt_chars, "edit-negative", label=label("negative_label"), lines=1)
                lora_picks, lora_strengths = build_lora_panel(manager, demo, prefix="edit-")
                image_size = gr.Checkbox(True, label=label("edit_image_size"), elem_id="edit-image-size")
                with gr.Row(visible=False) as size_row:
                    width = gr.Slider(MIN_SIZE, MAX_SIZE, value=1024, step=SIZE_MULTIPLE, label=label("width"),
                                      elem_id="edit-width")
                    height = gr.Slider(MIN_SIZE, MAX_SIZE, value=1024, step=SIZE_MULTIPLE, label=label("height"),
                                       elem_id="edit-height")
                with gr.Row():
                    steps = gr.Slider(1, MAX_STEPS, value=TURBO_STEPS, step=1, label=label("steps"), elem_id="edit-steps")
                    guidance = gr.Slider(0, MAX_GUIDANCE, value=0.0, step=0.1, label=label("guidance"),
                                         elem_id="edit-guidance")
                with gr.Row():
                    seed = gr.Number(value=-1, precision=0, label=label("seed_label"), elem_id="edit-seed")
                    count = gr.Slider(1, MAX_IMAGES, value=1, step=1, label=label("images_label"), elem_id="edit-count")
            with gr.Column(scale=3):
                gallery = gr.Gallery(label=label("results_label"), columns=2, height="auto", format="png",
                                     interactive=False, elem_id="edit-gallery", buttons=["download", "fullscreen"])
                info = gr.Markdown("", elem_id="edit-info")
                with gr.Row():
                    send_again = gr.Button(label("edit_send_again"), size="sm", elem_id="edit-send-edit")
                    send_generate = gr.Button(label("edit_send_generate"), size="sm", elem_id="edit-send-generate")
                    send_pnginfo = gr.Button(label("edit_send_pnginfo"), size="sm", elem_id="edit-send-pnginfo")

    private = dict(queue=False, api_visibility="private")
    mode.change(on_mode, mode, [inpaint_group, outpaint_group, blur], **private)
    image_size.change(on_image_size, image_size, size_row, **private)
    inputs = [editor, mode, prompt, negative, strength, blur, only_masked, padding, *sides, image_size, width, height,
              steps, seed, count, client_id, *lora_picks, *lora_strengths, guidance]
    # api_name "edit", input 0: the editor (gradio_uploads.BLOB_INPUTS lets exactly it carry images)
    run_btn.click(on_edit, inputs, [gallery, info], api_name="edit", concurrency_id="gpu",
                  concurrency_limit=settings.generation_concurrency + settings.queue_max + 1)
    saved = [prompt, negative, mode, strength, blur, only_masked, padding, *sides, image_size, width, height, steps,
             guidance, seed, count, *lora_picks, *lora_strengths]
    return EditTarget(settings, editor, prompt, negative, steps, guidance, seed, lora_picks, lora_strengths, saved,
                      gallery, info, run_btn, stop_btn, send_again, send_generate, send_pnginfo, tab=tab)
