"""The page's hires fix and Upscale: the "Hires fix" accordion on Generate (its values kept per
browser session, as the ControlNet panel's are, and read by Generate) and an Upscale button
under a gallery (Generate, Edit) or an image (History's viewer) that upscales the picked picture
with the accordion's upscaler, scale, steps and strength (0: the upscaler alone).

The picture is found server-side: a gallery's picked index among this browser's results, or
History's picked entry id; no event takes a file from the browser.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import threading
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from ...config import Settings
from ...errors import InvalidRequest, ZImageError
from ...hires_request import DEFAULT_SCALE, DEFAULT_STRENGTH, MAX_HIRES_STEPS, MAX_SCALE, MIN_SCALE, parse_hires
from ...request import GenerationRequest
from ...store import upscalers
from ..hires_fields import upscale_request, upscaler_paths
from .page_text import label, request_lang, text
from .ui_inputs import page_error_text

# The request's keys -> the page's controls (their words name a refused value)
PAGE_NAMES = {"scale": "hires_scale", "upscaler": "hires_upscaler", "steps": "hires_steps",
              "strength": "hires_strength", "resize_x": "hires_scale", "resize_y": "hires_scale"}
DEFAULTS = {"enabled": False, "upscaler": upscalers.LANCZOS, "scale": DEFAULT_SCALE, "steps": 0,
            "strength": DEFAULT_STRENGTH}


class HiresPicks:
    """Each browser session's accordion values, for its Generate and Upscale. Bounded (oldest out)."""

    def __init__(self, max_sessions: int = 256):
        self._lock = threading.Lock()       # the accordion's events and Generate run on Gradio's threads
        self._picks: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self.max_sessions = max_sessions

    def get(self, session: str | None) -> dict:
        with self._lock:
            return dict(self._picks.get(session or "", DEFAULTS))

    def update(self, session: str | None, **values) -> None:
        with self._lock:
            self._picks[session or ""] = {**self._picks.get(session or "", DEFAULTS), **values}
            self._picks.move_to_end(session or "")
            while len(self._picks) > self.max_sessions:
                self._picks.popitem(last=False)


def _session(request: gr.Request | None) -> str | None:
    return request.session_hash if request else None


def page_refusal(e: ZImageError, lang: str) -> str:
    """A refusal with the accordion's words for the field."""
    if isinstance(e, InvalidRequest) and e.field in PAGE_NAMES.values():
        message, hint = e.text(lang)
        return f"{text(e.field, lang)}: {message.removeprefix(e.field + ': ')} {hint}".strip()
    return page_error_text(e, lang)


def with_page_hires(req: GenerationRequest, picks: HiresPicks, request: gr.Request | None,
                    settings: Settings) -> GenerationRequest:
    """Generate's request with the accordion's hires fix when it is ticked (InvalidRequest naming
    the control otherwise)."""
    pick = picks.get(_session(request))
    if not pick["enabled"]:
        return req
    spec = parse_hires(pick, req.width, req.height, upscaler_paths(settings), PAGE_NAMES)
    return dataclasses.replace(req, hires=spec)


def build_hires_panel(settings: Settings, picks: HiresPicks) -> None:
    """The accordion, inside the caller's column."""
    names = list(upscaler_paths(settings))
    with gr.Accordion(label("hires_panel"), open=False, elem_id="hires-panel"):
        enabled = gr.Checkbox(False, label=label("hires_enable"), elem_id="hires-enabled")
        with gr.Row():
            upscaler = gr.Dropdown(names, value=upscalers.LANCZOS, label=label("hires_upscaler"),
                                   info=label("hires_upscaler_info"), elem_id="hires-upscaler", scale=3)
            refresh = gr.Button(label("hires_refresh"), size="sm", elem_id="hires-refresh", scale=0, min_width=80)
        with gr.Row():
            scale = gr.Slider(MIN_SCALE, MAX_SCALE, value=DEFAULT_SCALE, step=0.05, label=label("hires_scale"),
                              elem_id="hires-scale")
            steps = gr.Slider(0, MAX_HIRES_STEPS, value=0, step=1, label=label("hires_steps"), elem_id="hires-steps")
        strength = gr.Slider(0, 1, value=DEFAULT_STRENGTH, step=0.01, label=label("hires_strength"),
                             elem_id="hires-strength")

    def on_values(on, name, by, n, s, request: gr.Request = None):
        picks.update(_session(request), enabled=bool(on), upscaler=name, scale=by, steps=n, strength=s)

    def on_refresh():
        return gr.Dropdown(choices=list(upscaler_paths(settings)))

    private = dict(queue=False, api_visibility="private")
    gr.on([c.change for c in (enabled, upscaler, scale, steps, strength)], on_values,
          [enabled, upscaler, scale, steps, strength], None, show_progress="hidden", **private)
    refresh.click(on_refresh, None, upscaler, **private)


def upscale_button(elem_id: str) -> gr.Button:
    return gr.Button(label("upscale_btn"), size="sm", elem_id=elem_id)


def _picture(path: str, settings: Settings):
    """(RGB picture, its parameters text) of a page image (a path the guard let through)."""
    from ...store.images import load_image
    from ...store.pnginfo import read_image_info

    raw = Path(path).read_bytes()
    image = load_image(raw, "image", settings.max_upload_bytes, settings.max_upload_pixels)
    found = read_image_info(raw, settings.max_upload_bytes, settings.max_upload_pixels, "image")
    return image, found.raw if found.source in ("parameters", "exif") else ""


def gallery_path(registry, index: Any, client: str | None) -> str | None:
    """The saved file of the browser's gallery item `index` (its results, server-side: the
    galleries show exactly registry.gallery), or None."""
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        return None
    shown = [r.path for r in registry.results(client) if r.gallery_item() is not None]
    return str(shown[index]) if index < len(shown) else None


def history_path(store, item: Any) -> str | None:
    """The file of History's picked entry (its id, kept server-side) while it is the one listed."""
    from ...store.history import split_id

    parsed = split_id(item) if isinstance(item, str) and item else None
    entry = store.history.get(parsed[0]) if parsed else None
    return str(store.root / entry.path) if entry is not None and entry.id == item else None


def upscale_handler(settings: Settings, picks: HiresPicks, run: Callable[..., tuple],
                    resolve: Callable[[Any, str | None], str | None]) -> Callable:
    """The Upscale click: (key, client) -> what `run` (ui.run_edit: queued, tracked, (gallery,
    info)) gives. `resolve(key, client)` finds the file server-side (gallery_path, history_path):
    no event takes a file from the browser (results stay server-side; tests/test_ui.py)."""

    def on_upscale(key: Any, client, request: gr.Request = None, progress=gr.Progress()):
        from .page_jobs import valid_client_id

        lang = request_lang(request)
        path = resolve(key, valid_client_id(client))
        if not path:
            raise gr.Error(text("upscale_nothing", lang))
        pick = picks.get(_session(request))
        try:
            image, info = _picture(path, settings)
            req = upscale_request(image, pick, settings, PAGE_NAMES, info)
        except OSError:
            raise gr.Error(text("upscale_gone", lang)) from None
        except ZImageError as e:
            raise gr.Error(page_refusal(e, lang)) from None
        return run(req, client, request, progress)
    return on_upscale


def picked_index(evt: gr.SelectData):
    """The index of the gallery image clicked (Upscale's pick)."""
    return evt.index if isinstance(evt.index, int) else None


@dataclasses.dataclass(frozen=True)
class UpscaleSpots:
    """What the Upscale buttons need from the page (ui.build_ui): `run_edit` queues and tracks a
    request, (gallery, info) of the PageJobs it is given; `registry` and `edit_jobs` are Generate's
    and Edit's results."""
    settings: Settings
    picks: HiresPicks
    run_edit: Callable[..., tuple]
    registry: Any
    edit_jobs: Any
    store: Any
    client_id: Any
    tabs: gr.Tabs
    waiting_room: int


def wire_upscale(at: UpscaleSpots, gallery, info, button: gr.Button, edit, history_tab) -> None:
    """Upscale on Generate's and Edit's galleries and History's viewer: queued as a generation, its
    result in the gallery it was asked from (History's: Generate's)."""
    private = dict(queue=False, api_visibility="private")
    queued = dict(concurrency_id="gpu", concurrency_limit=at.waiting_room, api_visibility="private")
    to_generate = functools.partial(at.run_edit, jobs=at.registry)
    picked_at = gr.State(None)      # the gallery's picked index (Upscale reads the browser's results by it)
    on_upscale = upscale_handler(at.settings, at.picks, to_generate, functools.partial(gallery_path, at.registry))
    gallery.select(picked_index, None, picked_at, **private)
    button.click(on_upscale, [picked_at, at.client_id], [gallery, info], **queued)
    with edit.tab:
        edit_button, edit_picked_at = upscale_button("edit-upscale-btn"), gr.State(None)
    on_edit = upscale_handler(at.settings, at.picks, at.run_edit, functools.partial(gallery_path, at.edit_jobs))
    edit.gallery.select(picked_index, None, edit_picked_at, **private)
    edit_button.click(on_edit, [edit_picked_at, at.client_id], [edit.gallery, edit.info], **queued)
    with history_tab:
        history_button = upscale_button("history-upscale-btn")
    on_history = upscale_handler(at.settings, at.picks, to_generate, lambda item, _client: history_path(at.store, item))
    history_button.click(on_history, [history_tab.viewer_selected, at.client_id], [gallery, info],
                         **queued).then(lambda: gr.Tabs(selected="generate"), None, at.tabs, **private)
