"""Sending an image between the Generate, Edit and PNG info tabs with the settings it was made
with, read from the image's own PNG (never from the box the other tab happens to show). Pure
helpers, plus the handlers ui_edit_session wires.

The picked image is resolved on the server: the gallery's select event names a file the browser
shows, and only a file of this browser's own results (page_jobs) is ever read or sent.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr

from ...config import Settings
from ...errors import InvalidRequest, ZImageError
from ...lora_tags import parse_loras, strip_loras
from ...store.pnginfo import read_image_info
from .page_jobs import PageJobs, valid_client_id
from .page_text import text
from .ui_lora import LORA_SLOTS, NO_LORA
from .ui_params import generate_values

log = logging.getLogger(__name__)


def file_params(path: str, settings: Settings, lang: str = "en") -> dict[str, Any]:
    """The parameters `path` was made with ({} when it carries none or cannot be read: the page
    says so, and the picture alone is sent)."""
    try:
        params = read_image_info(path, settings.max_upload_bytes, settings.max_upload_pixels).parameters
    except (ZImageError, OSError) as e:
        log.info("no settings read from %s: %s", path, e)
        params = {}
    if not params.get("prompt"):
        gr.Warning(text("edit_no_settings", lang))
    return params


def lora_slots(prompt: str) -> tuple[str, list, list]:
    """(prompt, picks, strengths): the prompt's <lora:NAME:w> tags moved to the LoRA slots when they
    fit in them; otherwise the prompt keeps its tags and the slots are left as they are."""
    skip = gr.skip()
    try:
        loras = parse_loras(prompt)
    except InvalidRequest:          # a tag our validator refuses: left in the prompt, where it is named
        loras = ()
    if not loras or len(loras) > LORA_SLOTS:
        return prompt, [skip] * LORA_SLOTS, [skip] * LORA_SLOTS
    free = LORA_SLOTS - len(loras)
    return strip_loras(prompt), [n for n, _ in loras] + [NO_LORA] * free, [w for _, w in loras] + [1.0] * free


def _known(values: dict, name: str):
    return values[name] if name in values else gr.skip()


def edit_values(path: str, params: dict[str, Any], max_prompt_chars: int) -> list:
    """ui_edit.EditTarget.outputs' values: the editor showing `path`, then prompt, negative, steps,
    guidance, seed, LoRA picks and strengths from `params` (gr.skip() for what it lacks)."""
    values = generate_values(params, max_prompt_chars)
    editor = {"background": path, "layers": [], "composite": path}
    if "prompt" not in values:
        return [editor, *([gr.skip()] * (5 + 2 * LORA_SLOTS))]
    prompt, picks, strengths = lora_slots(values["prompt"])
    return [editor, prompt, *(_known(values, k) for k in ("negative", "steps", "guidance", "seed")), *picks,
            *strengths]


def generate_controls_values(params: dict[str, Any], max_prompt_chars: int) -> list:
    """ui_history.GenerateControls.all()'s values from `params`: count 1 (the image again)."""
    values = generate_values(params, max_prompt_chars)
    if "prompt" not in values:
        return [gr.skip()] * (9 + 2 * LORA_SLOTS)
    prompt, picks, strengths = lora_slots(values["prompt"])
    return [prompt, *(_known(values, k) for k in ("negative", "width", "height", "steps", "guidance", "seed")), 1,
            *picks, *strengths, _known(values, "variety")]


def picked_path(jobs: PageJobs, client: Any, evt: gr.SelectData) -> str | None:
    """The file of this browser's result that the select event names: by the file's name (Gradio
    shows a copy under the same name), else by its place in the gallery. None when it is not one."""
    items = [r.path for r in jobs.results(valid_client_id(client)) if r.path is not None and r.path.is_file()]
    value = evt.value if isinstance(evt.value, dict) else {}
    image = value.get("image") if isinstance(value.get("image"), dict) else {}
    shown = image.get("path") or image.get("orig_name")
    name = Path(shown).name if isinstance(shown, str) else None
    by_name = [p for p in items if p.name == name]
    if by_name:
        return str(by_name[0])
    index = evt.index if isinstance(evt.index, int) else -1
    return str(items[index]) if 0 <= index < len(items) and name is None else None
