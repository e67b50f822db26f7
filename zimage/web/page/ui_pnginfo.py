"""The PNG info tab: drop an image, read the parameters it was made with, send them to Generate.
Layout and wiring only; the reading is store/pnginfo's, the mapping to controls ui_params'."""
from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import gradio as gr

from ...config import Settings
from ...errors import ZImageError
from ...lora_tags import parse_loras
from ...store.pnginfo import ImageInfo, read_image_info
from ..gradio_uploads import IMAGE_SUFFIXES
from .page_text import label, request_lang, text
from .ui_params import CONTROL_FIELDS, control_updates, generate_values

log = logging.getLogger(__name__)

SOURCE_KEYS = {"parameters": "png_source_parameters", "comfyui": "png_source_comfyui", "exif": "png_source_exif"}
FILE_TYPES = list(IMAGE_SUFFIXES)      # the guard checks the upload's name against the same


def render_summary(info: ImageInfo, name: str = "", lang: str = "en") -> str:
    """The fields beside the prompt, as Markdown in `lang` (a pure function for tests)."""
    p = info.parameters
    t = lambda key: text(key, lang)     # noqa: E731
    if info.source == "none":
        return t("png_nothing_found")
    e = lambda v: html.escape(str(v)).replace("|", "\\|")    # noqa: E731: the file's text, not ours
    rows = [(t("field_seed"), p.get("seed")), (t("field_steps"), p.get("steps")),
            (t("field_cfg"), p.get("guidance_scale")),
            (t("field_size"), f"{p['width']}x{p['height']}" if "width" in p and "height" in p else None),
            (t("field_model"), p.get("model")),
            (t("field_loras"), _loras(p)),
            (t("field_sampler"), p.get("params", {}).get("Sampler") or p.get("params", {}).get("sampler_name")),
            (t("field_read_from"), t(SOURCE_KEYS[info.source]) if info.source in SOURCE_KEYS else info.source),
            (t("field_image"), f"{name} ({info.format} {info.width}x{info.height})".strip())]
    body = "".join(f"| {name} | {e(value)} |\n" for name, value in rows if value not in (None, ""))
    return t("png_table_head") + "\n|---|---|\n" + body


def _loras(p: dict) -> str:
    """The LoRAs by the prompt's tags (with their strengths), else by A1111's hashes or ComfyUI's loaders."""
    try:
        tags = parse_loras(p.get("prompt", ""))
    except ZImageError:             # a tag our validator refuses still names a LoRA; show the hashes instead
        tags = ()
    if tags:
        return ", ".join(f"{name} ({weight:g})" for name, weight in tags)
    return ", ".join(p.get("lora_hashes", {})) or p.get("params", {}).get("Loras", "")


@dataclass(frozen=True)
class PngInfoTarget:
    """What sending an image to the tab fills (`outputs`) with `values(path, lang)`."""
    outputs: list
    values: Callable[[str, str], tuple]


def build_pnginfo_tab(settings: Settings, controls: Sequence[gr.components.Component], tabs: gr.Tabs,
                      generate_tab: str = "generate") -> PngInfoTarget:
    """Inside the caller's `gr.Tab`. `controls`: the Generate tab's prompt, negative, width, height,
    steps, guidance and seed (ui_params.CONTROL_FIELDS order); Send to Generate fills them and
    selects the Generate tab of `tabs`. Returns what another tab's Send to PNG info fills."""
    if len(controls) != len(CONTROL_FIELDS):
        raise ValueError(f"controls: give the {len(CONTROL_FIELDS)} controls {', '.join(CONTROL_FIELDS)}")

    def on_read(path: str | None, request: gr.Request = None):
        """The fields, and the drop zone emptied: the upload is deleted once read, and the next
        image can be dropped at once."""
        if not path:
            return gr.skip(), None, "", "", "", "", ""
        try:
            return (None, *shown(path, request_lang(request)))
        finally:
            _discard(path)          # read once: the upload has no other use, and /tmp is not a store

    def shown(path: str, lang: str) -> tuple:
        """(params, prompt, negative, summary, raw, note) of the image at `path`."""
        try:
            info = read_image_info(path, settings.max_upload_bytes, settings.max_upload_pixels)
        except ZImageError as e:
            raise gr.Error(e.user_text(lang))
        p = info.parameters
        return p or None, p.get("prompt", ""), p.get("negative_prompt", ""), render_summary(info, Path(path).name, lang), \
            info.raw, ""

    def on_send(params: dict | None, request: gr.Request = None):
        lang = request_lang(request)
        if not params:
            return [*control_updates({}, gr.skip()), gr.skip(), text("png_nothing_to_send", lang)]
        values = generate_values(params, settings.max_prompt_chars)
        return [*control_updates(values, gr.skip()), gr.Tabs(selected=generate_tab), text("png_sent", lang)]

    params = gr.State(None)
    with gr.Row():
        with gr.Column(scale=2):
            upload = gr.File(label=label("png_upload"), file_types=FILE_TYPES, file_count="single", type="filepath",
                             elem_id="pnginfo-file")
            send = gr.Button(label("png_send"), variant="primary", elem_id="pnginfo-send")
            note = gr.Markdown("", elem_id="pnginfo-note")
        with gr.Column(scale=3):
            prompt = gr.Textbox(label=label("field_prompt"), lines=3, interactive=False, elem_id="pnginfo-prompt")
            negative = gr.Textbox(label=label("field_negative"), lines=1, interactive=False, elem_id="pnginfo-negative")
            summary = gr.Markdown("", elem_id="pnginfo-summary")
            raw = gr.Textbox(label=label("png_raw"), lines=4, interactive=False, elem_id="pnginfo-raw")
    # Its own concurrency: reading a PNG must not wait behind the GPU queue.
    upload.upload(on_read, upload, [upload, params, prompt, negative, summary, raw, note], api_name="png_info",
                  concurrency_id="pnginfo", concurrency_limit=2,
                  show_progress="hidden")   # a read takes ~50 ms; a failure's toast says why, no badge on each field
    send.click(on_send, params, [*controls, tabs, note], queue=False, api_visibility="private")
    return PngInfoTarget([params, prompt, negative, summary, raw, note], shown)


def _discard(path: str) -> None:
    file = Path(path)
    try:
        file.unlink(missing_ok=True)
        file.parent.rmdir()         # Gradio's one-upload folder
    except OSError:
        pass
