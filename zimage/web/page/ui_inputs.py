"""The page's text and number inputs as a person meets them: a prompt box with its character counter
(the browser no longer cuts a long prompt without a word: Generate refuses it and says by how
much), an empty Seed read as -1 (random), and refusals that name the control the person sees
("Prompt", "Seed", "the Edit image"), not the request's field (`prompt`, `data[0]`).

The request's validator (zimage/request.py) stays the one judge; this module only says its
verdict in the page's words (page_text_inputs has them in English and Chinese).
"""
from __future__ import annotations

import math
from typing import Any

import gradio as gr

from ...errors import InvalidRequest, ZImageError
from .page_text import text

# The request's field -> the page_text key of the control that sets it.
FIELD_KEYS = {"prompt": "field_prompt", "negative_prompt": "field_negative", "seed": "field_seed",
              "num_inference_steps": "field_steps", "guidance_scale": "field_guidance", "width": "width",
              "height": "height", "num_images": "images_label", "strength": "edit_strength", "mask_blur": "edit_blur",
              "inpaint_full_res_padding": "edit_padding", "variety": "variety_label"}
# Fields whose details are whole sentences that say which control ("Add an image first: drop, paste
# or send one to the Edit tab."): shown without the field in front.
SENTENCE_FIELDS = {"image", "mask"}
TOO_LONG = "is too long ("            # request._str_field's detail: "is too long (N characters, at most M)"
# An emptied number box reaches the validator as None: its details then, read as "is required".
EMPTY_DETAILS = ("is required", "must be an integer, got NoneType")
COUNTER_CSS = """
.zi-counter { font-size: 0.85em; color: var(--body-text-color-subdued); text-align: right; margin-top: -6px; }
.zi-counter .zi-over { color: var(--error-text-color, #b91c1c); font-weight: 700; }
"""


def counter_js(max_chars: int) -> str:
    """The counter's text from the box's, in the browser (no round trip a keystroke): characters as
    Python counts them (code points, so an emoji is one), red past the limit."""
    return (f"(p) => {{ const n = [...(p || '')].length; const over = n > {max_chars};"
            f" return `<span class=\"${{over ? 'zi-over' : ''}}\" data-chars=\"${{n}}\">${{n}} / {max_chars}</span>`; }}")


def prompt_box(max_chars: int, elem_id: str, **textbox) -> gr.Textbox:
    """A gr.Textbox without a browser-side `max_length` (which cut pasted text silently), with a
    "123 / 4000" counter under it (#<elem_id>-count) that follows every change, typed or set."""
    box = gr.Textbox(elem_id=elem_id, **textbox)
    counter = gr.HTML(f'<span data-chars="0">0 / {max_chars}</span>', elem_id=f"{elem_id}-count",
                      elem_classes=["zi-counter"], padding=False)
    box.change(None, box, counter, js=counter_js(max_chars), queue=False, show_progress="hidden",
               api_visibility="private")
    return box


def seed_value(value: Any) -> Any:
    """The Seed box's value for the request: empty (None, "", NaN) is -1, random, as its label says;
    a whole float is its int; anything else goes to the validator as it is, to be named there."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return -1
    if isinstance(value, float) and math.isnan(value):
        return -1
    return int(value) if isinstance(value, float) and value.is_integer() else value


def page_error_text(e: ZImageError, lang: str = "en") -> str:
    """A refusal as the page says it: the control's name in place of the request's field; a prompt
    over the limit as its counter shows it ("4123 / 4000")."""
    field = getattr(e, "field", None) if isinstance(e, InvalidRequest) else None
    if field in SENTENCE_FIELDS:
        message, hint = e.text(lang)
        return f"{message.removeprefix(f'{field}: ')} {hint}".strip()
    if field not in FIELD_KEYS:
        return e.user_text(lang)
    name = text(FIELD_KEYS[e.field], lang)
    detail = e.message[len(e.field) + 2:] if e.message.startswith(f"{e.field}: ") else ""
    if detail.startswith(TOO_LONG):
        n, _, cap = detail[len(TOO_LONG):].rstrip(")").partition(" characters, at most ")
        return text("input_too_long", lang, name=name, n=n, max=cap)
    if detail in EMPTY_DETAILS:
        return text("input_required", lang, name=name)
    message, hint = e.text(lang)
    if message.startswith(f"{e.field}: "):
        message = f"{name}: {message[len(e.field) + 2:]}"
    return f"{message} {hint}".strip()
