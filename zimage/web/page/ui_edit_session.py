"""The Edit tab across reloads, and its ways in and out: its settings kept in the browser the way
Generate's are (a BrowserState set by a js function, no server round trip), its own results and a
running edit found again after a reload, its Stop, and Send to Edit / Edit again / Send to Generate
/ Send to PNG info with the picked image's own settings (ui_edit_send). Wiring only.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from .page_jobs import PageJobs, valid_client_id
from .page_text import request_lang, text
from .ui_edit import MODES, EditTarget
from .ui_edit_send import file_params, generate_controls_values, picked_path
from .ui_lora import LORA_SLOTS

# EditTarget.saved's order: what a reload gives back.
EDIT_FIELDS = ("prompt", "negative", "mode", "strength", "mask_blur", "only_masked", "padding", "extend_left",
               "extend_right", "extend_top", "extend_bottom", "image_size", "width", "height", "steps", "guidance",
               "seed", "count", *(f"lora{i}" for i in range(1, LORA_SLOTS + 1)),
               *(f"lora{i}_strength" for i in range(1, LORA_SLOTS + 1)))
# The last input is the BrowserState itself: a control that reads null (a Textbox of a tab Gradio has
# not drawn yet: the Edit tab until first opened) keeps its saved value instead of erasing it.
SAVE_EDIT_JS = (f"(...values) => {{ const saved = values.pop() || {{}}; return Object.fromEntries("
                f"{json.dumps(list(EDIT_FIELDS))}.map((k, i) => [k, values[i] ?? saved[k]])); }}")
SEND = dict(api_visibility="private", concurrency_id="page_send", concurrency_limit=4)   # queued: its toasts show


def restored(saved: Any, name: str, default: Any):
    """A saved setting when it has its control's type (localStorage is the browser's to edit), else
    gr.skip(): the control keeps what it shows."""
    value = saved.get(name) if isinstance(saved, dict) else None
    if name == "mode":
        return value if value in MODES else gr.skip()
    if isinstance(default, bool):
        return value if isinstance(value, bool) else gr.skip()
    if isinstance(default, str):
        return value if isinstance(value, str) else gr.skip()
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok else gr.skip()


@dataclass(frozen=True)
class PageParts:
    """What the Edit tab's wiring reaches beyond the tab: the page's parts and ui.py's handlers."""
    demo: gr.Blocks
    tabs: Any
    client_id: Any
    generate_controls: list          # ui_history.GenerateControls.all()
    generate_gallery: Any
    generate_send: Any               # the Generate gallery's Send to Edit
    generate_btn: Any
    generate_jobs: PageJobs
    edit_jobs: PageJobs
    pnginfo: Any                     # ui_pnginfo.PngInfoTarget
    resume: Callable                 # (client, request, progress) -> (gallery, info) of edit_jobs' running job
    stop: Callable                   # (client, request) -> the info line
    waiting_room: int


def wire_edit_session(edit: EditTarget, page: PageParts) -> None:
    settings, private = edit.settings, dict(queue=False, api_visibility="private")
    defaults = [c.value for c in edit.saved]
    saved = gr.BrowserState({}, storage_key="zimage-edit-settings")
    gen_picked, edit_picked = gr.State(None), gr.State(None)     # the files the send buttons send

    def on_load(client, saved_values):
        """The saved settings and this browser's edits (a running one's progress follows: resume)."""
        restore = [restored(saved_values, n, d) for n, d in zip(EDIT_FIELDS, defaults)]
        return [*restore, page.edit_jobs.gallery(valid_client_id(client))]

    def on_open(prompt, negative, saved_values):
        """Gradio draws a tab the first time it is opened, and a Textbox not drawn yet drops the value
        a reload restores into it (sliders, radios and numbers keep theirs): the saved text, now that
        the tab is drawn, where the box is empty."""
        return [gr.skip() if now else restored(saved_values, name, "")
                for name, now in (("prompt", prompt), ("negative", negative))]

    def picker(jobs: PageJobs):
        def on_pick(client, evt: gr.SelectData):
            return picked_path(jobs, client, evt)
        return on_pick

    def nothing_picked(lang: str, n: int) -> list:
        gr.Warning(text("edit_nothing_selected", lang))
        return [gr.skip()] * n

    def to_edit(path, request: gr.Request = None):
        lang = request_lang(request)
        if not path:
            return nothing_picked(lang, len(edit.outputs) + 1)
        return [*edit.values(path, lang), gr.Tabs(selected="edit")]

    def to_generate(path, request: gr.Request = None):
        lang = request_lang(request)
        if not path:
            return nothing_picked(lang, len(page.generate_controls) + 1)
        params = file_params(path, settings, lang)
        return [*generate_controls_values(params, settings.max_prompt_chars), gr.Tabs(selected="generate")]

    def to_pnginfo(path, request: gr.Request = None):
        lang = request_lang(request)
        if not path:
            return nothing_picked(lang, len(page.pnginfo.outputs) + 1)
        return [*page.pnginfo.values(path, lang), gr.Tabs(selected="pnginfo")]

    # Kept in the browser by the browser, as Generate's settings are (ui.py's SAVE_SETTINGS_JS).
    gr.on([c.change for c in edit.saved], None, [*edit.saved, saved], saved, show_progress="hidden", js=SAVE_EDIT_JS,
          **private)
    page.demo.load(on_load, [page.client_id, saved], [*edit.saved, edit.gallery], **private).then(
        page.resume, page.client_id, [edit.gallery, edit.info], api_visibility="private",
        concurrency_id="resume_edit", concurrency_limit=page.waiting_room)
    edit.tab.select(on_open, [edit.prompt, edit.negative, saved], [edit.prompt, edit.negative], **private)
    edit.run_btn.click(lambda: (gr.Button(interactive=True), None), None, [edit.stop_btn, edit_picked], **private)
    page.generate_btn.click(lambda: None, None, gen_picked, **private)     # new results: nothing picked
    # No `cancels=`: the edit's own handler reports "Stopped" (as Generate's Stop does).
    edit.stop_btn.click(page.stop, page.client_id, edit.info, **private)
    page.generate_gallery.select(picker(page.generate_jobs), page.client_id, gen_picked, **private)
    edit.gallery.select(picker(page.edit_jobs), page.client_id, edit_picked, **private)
    page.generate_send.click(to_edit, gen_picked, [*edit.outputs, page.tabs], **SEND)
    edit.send_again.click(to_edit, edit_picked, [*edit.outputs, page.tabs], **SEND)
    edit.send_generate.click(to_generate, edit_picked, [*page.generate_controls, page.tabs], **SEND)
    edit.send_pnginfo.click(to_pnginfo, edit_picked, [*page.pnginfo.outputs, page.tabs], **SEND)
