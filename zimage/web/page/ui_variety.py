"""The Generate tab's Variety slider (issue 32): seeded noise on the prompt embeddings for the first
steps, so Turbo's seeds differ more. Its range and default are the API's (zimage/variety.py); the
value goes with the generate event into the request, so into the image's parameters, and PNG info's
Send to Generate and History's Use these settings put an image's own variety back (0 for an image
that names its seed but no variety: it was made without)."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from ...infotext import parse_infotext
from ...variety import MAX_VARIETY, PAGE_DEFAULT
from .page_text import label

STEP = 0.05


def build_variety_slider() -> gr.Slider:
    return gr.Slider(0, MAX_VARIETY, value=PAGE_DEFAULT, step=STEP, label=label("variety_label"),
                     info=label("variety_info"), elem_id="variety")


def file_variety(path: str | Path) -> float | None:
    """The variety a saved image was made with (its PNG parameters; 0 when they name none), None
    when the file cannot be read or says nothing of how it was made."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            raw = im.info.get("parameters")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    params = parse_infotext(raw) if isinstance(raw, str) else {}
    if "seed" not in params:
        return None
    return params.get("variety", 0.0)
