"""The Generate tab's size: the presets, what is wrong with a typed width and height (naming the
field, in the page's language), and the preset that follows the sliders. Pure but for `wire_size`."""
from __future__ import annotations

import gradio as gr

from ...request import MAX_SIZE, MIN_SIZE, SIZE_MULTIPLE, as_int
from .page_text import request_lang, text

SIZE_PRESETS = ["1024x1024", "1152x896", "896x1152", "1216x832", "832x1216", "1344x768", "768x1344",
                "1280x720", "720x1280", "768x768", "512x512"]
CUSTOM = "Custom"


def size_problem(width, height, lang: str = "en") -> str:
    """What is wrong with a width and height, naming the field ('' when both are fine)."""
    out = []
    for key, raw in (("width", width), ("height", height)):
        name, value = text(key, lang), as_int(raw)
        if value is None:
            out.append(text("size_whole", lang, name=name))
        elif not MIN_SIZE <= value <= MAX_SIZE:
            out.append(text("size_range", lang, name=name, lo=MIN_SIZE, hi=MAX_SIZE, value=value))
        elif value % SIZE_MULTIPLE:
            below = value - value % SIZE_MULTIPLE
            out.append(text("size_multiple", lang, name=name, m=SIZE_MULTIPLE, value=value, below=below,
                            above=below + SIZE_MULTIPLE))
    return " ".join(out)


def preset_for(width, height) -> str:
    """The size preset that width and height make, or "Custom"."""
    key = f"{as_int(width)}x{as_int(height)}"
    return key if key in SIZE_PRESETS else CUSTOM


def parse_preset(preset: str) -> tuple[int, int]:
    w, _, h = preset.partition("x")
    return int(w), int(h)


def wire_size(preset: gr.Dropdown, width, height, size_error: gr.Markdown) -> None:
    """A preset sets both sliders; the sliders say what is wrong with them and pick their preset."""
    def on_preset(choice):
        if choice == CUSTOM:
            return gr.skip(), gr.skip()
        return parse_preset(choice)

    def on_size(w, h, request: gr.Request = None):
        return size_problem(w, h, request_lang(request)), gr.Dropdown(value=preset_for(w, h))

    private = dict(queue=False, api_visibility="private")
    preset.input(on_preset, preset, [width, height], **private)
    gr.on([width.change, height.change], on_size, [width, height], [size_error, preset],
          show_progress="hidden", **private)
