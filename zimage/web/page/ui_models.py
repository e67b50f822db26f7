"""The model picker (layout and wiring only): the models found (web/model_choice.py: the configured
one, the ModelScope cache's, the --models-from roots'), switching on pick without a restart (a job
queued behind running generations; the status panel shows its load), and the new model's steps,
guidance and negative prompt put in the fields the user had left at the previous model's defaults.
"""
from __future__ import annotations

import logging

import gradio as gr

from ...errors import ZImageError
from ...jobs import Backend
from ...model_defaults import defaults_for
from ...units import human_bytes
from ..model_choice import model_choice
from .page_text import label, request_lang, text

log = logging.getLogger(__name__)


# A model's kind (store.model_files.kind_of: "turbo" or "base") as the page words it.
KIND_WORDS = {"turbo": "model_kind_turbo", "base": "model_kind_base"}


def choices(models, lang: str = "en") -> list[tuple[str, str]]:
    return [(text("model_choice", lang, name=m.name, kind=text(KIND_WORDS[m.kind], lang), format=m.format,
                  size=human_bytes(m.size_bytes) if m.size_bytes else "?"), m.name) for m in models]


def kept_or_default(value, old, new):
    """The field's value after a switch: the new model's default where it still held the old one's."""
    return new if value == old else value


def build_model_picker(manager: Backend, demo: gr.Blocks, steps, guidance, negative) -> gr.Dropdown:
    choice = model_choice(manager)
    private = dict(queue=False, api_visibility="private")
    with gr.Row(elem_id="model-row"):
        picker = gr.Dropdown([], value=None, label=label("model_picker"), elem_id="model-picker", scale=4,
                             allow_custom_value=True)
        refresh_btn = gr.Button(label("model_refresh"), size="sm", elem_id="model-refresh", scale=1)
    note = gr.Markdown("", elem_id="model-note")
    kind = gr.State("turbo")          # the kind whose defaults the fields were set from

    def listed(refresh: bool, request: gr.Request | None):
        lang = request_lang(request)
        try:
            models = choice.models(refresh)
            current = choice.current()
        except Exception:                # a root that cannot be read must not take the page down
            log.exception("listing the models failed")
            return gr.Dropdown(), "turbo"
        return (gr.Dropdown(choices=choices(models, lang), value=current.name if current else None),
                current.kind if current else "turbo")

    def on_open(request: gr.Request = None):
        return listed(False, request)

    def on_refresh(request: gr.Request = None):
        return listed(True, request)

    def on_pick(name, old_kind, steps_v, guidance_v, negative_v, request: gr.Request = None):
        lang = request_lang(request)
        if not name:
            return gr.update(), gr.update(), gr.update(), "", old_kind
        try:
            target = choice.find(name, "model")
            job, queued_now = choice.switch_asked(name, "model")
        except ZImageError as e:
            return gr.update(), gr.update(), gr.update(), text("model_failed", lang, error=e.user_text(lang)), old_kind
        old, new = defaults_for(old_kind), defaults_for(target.kind)
        shown = text("model_switching" if job is not None else "model_current", lang, name=target.name)
        if not queued_now:
            # The model in use or on its way: its defaults are in the fields already. (Gradio's dropdown
            # sends one pick twice, at once; the second read the kind the first had stored with the
            # fields' values from before it, and put Turbo's steps back.)
            return gr.skip(), gr.skip(), gr.skip(), shown, gr.skip()
        return (kept_or_default(steps_v, old.steps, new.steps),
                kept_or_default(guidance_v, old.guidance_scale, new.guidance_scale),
                kept_or_default(negative_v or "", old.negative_prompt, new.negative_prompt), shown, target.kind)

    demo.load(on_open, None, [picker, kind], **private)
    refresh_btn.click(on_refresh, None, [picker, kind], **private)
    picker.input(on_pick, [picker, kind, steps, guidance, negative], [steps, guidance, negative, note, kind],
                 **private)
    return picker
