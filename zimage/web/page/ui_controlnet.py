"""The ControlNet accordion on the Generate tab: control type, control image, strength, guidance
start and end, and a preview of the map the ControlNet will see. Layout and wiring only: the image
checks and the canny map are store/control_images'. Its values reach Generate through ControlPicks,
per browser session, so the `generate` event keeps its inputs (the API signature, and every caller
that sends the page's input list, stay as they were).
"""
from __future__ import annotations

import collections
import logging
import threading
from pathlib import Path

import gradio as gr

from ...config import Settings
from ...errors import InvalidRequest, ZImageError
from ...request import ControlUnit
from ...store.control_images import canny_map, load_image, make_unit
from ..gradio_uploads import IMAGE_SUFFIXES, discard
from .page_text import label, request_lang, text

log = logging.getLogger(__name__)

TYPES = [("controlnet_canny", "canny"), ("controlnet_none", "none")]     # (page_text key, module)
# An InvalidRequest detail: zimage/i18n.py's INVALID_ZH has its Chinese.
NO_IMAGE = "is missing: drop one in the ControlNet panel, or untick Use ControlNet"
FIELD = "controlnet image"
FILE_TYPES = list(IMAGE_SUFFIXES)           # what a refused upload's message names; the guard checks the name
DEFAULTS = {"enabled": False, "module": "canny", "weight": 1.0, "start": 0.0, "end": 1.0, "image": None}


def control_unit(state: dict | None, model_label: str) -> ControlUnit | None:
    """The unit the page's panel describes, None when ControlNet is off. Raises ZImageError (an
    out-of-range value, no image)."""
    state = state or DEFAULTS
    if not state.get("enabled"):
        return None
    if state.get("image") is None:
        raise InvalidRequest(FIELD, NO_IMAGE)
    return make_unit(state["image"], state["module"], model_label, float(state["weight"]), float(state["start"]),
                     float(state["end"]), prefix="controlnet")


class ControlPicks:
    """Each browser session's panel values (the decoded image included), for its Generate. Bounded:
    the oldest session's picks go first (a decoded 2048px image is 12 MB)."""

    def __init__(self, max_sessions: int = 16):
        self._lock = threading.Lock()       # the panel's events and Generate run on Gradio's threads
        self._picks: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self.max_sessions = max_sessions

    def get(self, session: str | None) -> dict:
        with self._lock:
            return dict(self._picks.get(session or "", DEFAULTS))

    def update(self, session: str | None, **changes) -> dict:
        with self._lock:
            new = {**self._picks.get(session or "", DEFAULTS), **changes}
            self._picks[session or ""] = new
            self._picks.move_to_end(session or "")
            while len(self._picks) > self.max_sessions:
                self._picks.popitem(last=False)
            return dict(new)


def build_controlnet_panel(settings: Settings, picks: ControlPicks) -> None:
    """The accordion, inside the caller's column; its values go to `picks` under the session."""
    with gr.Accordion(label("controlnet_panel"), open=False, elem_id="controlnet-panel"):
        enabled = gr.Checkbox(False, label=label("controlnet_enable"), elem_id="controlnet-enabled")
        module = gr.Radio([(label(key), kind) for key, kind in TYPES], value="canny",
                          label=label("controlnet_type"), elem_id="controlnet-module")
        with gr.Row():
            # A file drop zone, not gr.Image: gr.Image fetches the upload back to show it, and the
            # guard never serves an upload; the map below shows what was read.
            image = gr.File(label=label("controlnet_image"), file_types=FILE_TYPES, file_count="single",
                            type="filepath", elem_id="controlnet-image", height=220)
            preview = gr.Image(label=label("controlnet_preview"), interactive=False, format="png",
                               elem_id="controlnet-preview", height=220,
                               buttons=["fullscreen"])      # no "share": off Spaces it only failed
        weight = gr.Slider(0, 2, value=1.0, step=0.05, label=label("controlnet_weight"), elem_id="controlnet-weight")
        with gr.Row():
            start = gr.Slider(0, 1, value=0.0, step=0.05, label=label("controlnet_start"), elem_id="controlnet-start")
            end = gr.Slider(0, 1, value=1.0, step=0.05, label=label("controlnet_end"), elem_id="controlnet-end")
        with gr.Row():
            note = gr.Markdown("", elem_id="controlnet-note")
            remove = gr.Button(label("controlnet_remove"), size="sm", scale=0, min_width=160,
                               elem_id="controlnet-remove")

    def shown(picture, kind: str):
        return None if picture is None else (canny_map(picture) if kind == "canny" else picture)

    def session(request: gr.Request | None) -> str | None:
        return request.session_hash if request else None

    def on_image(path: str | None, kind: str, request: gr.Request = None):
        """The decoded image kept for the session and shown as its map; the drop zone emptied and
        the upload deleted (the guard never serves an upload back, and /tmp is not a store)."""
        if not path:
            return gr.skip(), gr.skip(), gr.skip()
        try:
            picture = load_image(path, settings.max_upload_bytes, settings.max_upload_pixels, FIELD)
        except ZImageError as e:
            raise gr.Error(e.user_text(request_lang(request)))
        finally:
            discard(path)
        picks.update(session(request), image=picture)
        note = text("controlnet_loaded", request_lang(request), name=Path(path).name, w=picture.width, h=picture.height)
        return None, shown(picture, kind), note

    def on_values(on: bool, kind: str, w: float, s: float, e: float, request: gr.Request = None):
        new = picks.update(session(request), enabled=bool(on), module=kind, weight=w, start=s, end=e)
        return shown(new["image"], kind)

    def on_remove(request: gr.Request = None):
        picks.update(session(request), image=None)
        return None, ""

    private = dict(queue=False, api_visibility="private", show_progress="hidden")
    # The one input here that takes an upload (gradio_uploads.UPLOAD_INPUTS names it by api_name).
    image.upload(on_image, [image, module], [image, preview, note], api_name="controlnet_image",
                 concurrency_id="controlnet", concurrency_limit=2, api_visibility="private",
                 show_progress="hidden")
    remove.click(on_remove, None, [preview, note], **private)
    gr.on([enabled.change, module.change, weight.change, start.change, end.change], on_values,
          [enabled, module, weight, start, end], preview, **private)
