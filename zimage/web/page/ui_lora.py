"""The Generate page's LoRA picker: up to LORA_SLOTS LoRAs from the folder, each with a strength.

The picks become `<lora:NAME:w>` tags appended to the prompt server-side (lora_tags), so the page,
the API and A1111-style prompts all reach the one validator (request.parse_loras).
"""
from __future__ import annotations

import html
import logging
from collections.abc import Sequence

import gradio as gr

from ...jobs import Backend
from ...lora_tags import MAX_LORA_STRENGTH, MIN_LORA_STRENGTH
from .page_text import label, request_lang, text
from .page_text_more import lora_reason

log = logging.getLogger(__name__)

LORA_SLOTS = 3
NO_LORA = "None"
LORA_DEFAULTS = (NO_LORA,) * LORA_SLOTS + (1.0,) * LORA_SLOTS     # pick 1..3, then strength 1..3


def _strength_text(value: float) -> str:
    # The slider's step is 0.05: round away the float noise a slider sends (0.30000000000000004).
    return f"{round(float(value), 2):g}"


def lora_tags(names: Sequence, strengths: Sequence) -> str:
    """The picks as prompt tags (' <lora:a:1> <lora:b:0.55>'), '' when none is picked. A slot left
    at None (or empty) is skipped; a strength that is not a number is left to the validator."""
    tags = []
    for name, strength in zip(names, strengths):
        if not isinstance(name, str) or not name.strip() or name == NO_LORA:
            continue
        try:
            w = _strength_text(strength if strength is not None else 1.0)
        except (TypeError, ValueError):
            w = str(strength)
        tags.append(f"<lora:{name.strip()}:{w}>")
    return "".join(" " + t for t in tags)


def with_loras(prompt: str, names: Sequence, strengths: Sequence) -> str:
    tags = lora_tags(names, strengths)
    return f"{prompt}{tags}" if tags else prompt


def lora_choices(listing: list[dict]) -> list:
    """The dropdown's choices: "None" (shown in the page's language, its value stays NO_LORA), then
    the usable LoRAs by name."""
    return [(label("lora_none"), NO_LORA)] + [e["name"] for e in listing if e.get("usable")]


def render_refused(listing: list[dict], lang: str = "en") -> str:
    """The files the folder holds but the app will not use, each with why (small text)."""
    refused = [e for e in listing if not e.get("usable")]
    if not refused:
        return ""
    fallback = text("lora_not_usable_reason", lang)
    rows = "".join(f"<li><b>{html.escape(e['name'])}</b>: "
                   f"{html.escape(lora_reason(e.get('refused_reason') or fallback, lang))}</li>" for e in refused)
    return f'<div class="zi-lora-refused"><small>{text("lora_not_usable", lang)}<ul>{rows}</ul></small></div>'


def render_triggers(listing: list[dict], picks: Sequence, lang: str = "en") -> str:
    """The trigger words of the picked LoRAs, as Markdown ('' when none has any)."""
    by_name = {e["name"]: e for e in listing}
    lines = []
    for name in dict.fromkeys(p for p in picks if p and p != NO_LORA):
        words = (by_name.get(name) or {}).get("trigger_words") or []
        if words:
            lines.append(text("lora_triggers", lang, name=name, words=", ".join(f"`{w}`" for w in words)))
    return "\n\n".join(lines)


def build_lora_panel(manager: Backend, demo: gr.Blocks, prefix: str = "") -> tuple[list, list]:
    """The accordion (inside the caller's layout); returns ([dropdowns], [sliders]). `prefix` starts
    its elements' ids (the Edit tab has its own slots: "edit-"). The folder is listed when a page
    opens (demo.load), never while the page is built: the build runs before the server listens, and
    reading one file's metadata (a LoRA with 200,000 training tags took 226 s) kept the page from
    ever opening."""
    def listing(refresh: bool = False) -> list[dict]:
        try:
            # No hashing for the picker: it needs names, trigger words and refusals, and hashing reads
            # every whole file, which here ran while the page was built, before the server answered.
            return manager.loras(refresh=refresh, hash_files=False)
        except Exception:              # a folder that cannot be read must not take the page down
            log.exception("listing the LoRA folder failed")
            return []

    private = dict(queue=False, api_visibility="private")
    with gr.Accordion(label("lora_panel"), open=False, elem_id=f"{prefix}lora-panel"):
        picks, strengths = [], []
        for i in range(LORA_SLOTS):
            with gr.Row():
                # allow_custom_value: a pick saved in the browser or typed into the API is checked by the
                # folder lookup (LoraNotFound names it), not refused by Gradio with a bare "invalid value".
                picks.append(gr.Dropdown(lora_choices([]), value=NO_LORA, label=text("lora_slot", i=i + 1),
                                         allow_custom_value=True, elem_id=f"{prefix}lora-{i + 1}", scale=3))
                strengths.append(gr.Slider(MIN_LORA_STRENGTH, MAX_LORA_STRENGTH, value=1.0, step=0.05,
                                           label=label("lora_strength"), elem_id=f"{prefix}lora-strength-{i + 1}", scale=2))
        triggers = gr.Markdown("", elem_id=f"{prefix}lora-triggers")
        refresh_btn = gr.Button(label("lora_refresh"), size="sm", elem_id=f"{prefix}lora-refresh")
        refused = gr.HTML("", elem_id=f"{prefix}lora-refused")

    # One parameter per slot: Gradio hands gr.Request only to a positional parameter, never after *args.
    assert LORA_SLOTS == 3, "on_refresh / on_pick take one parameter per LoRA slot"

    def on_refresh(pick1, pick2, pick3, request: gr.Request = None):
        lang, current = request_lang(request), (pick1, pick2, pick3)
        fresh = listing(refresh=True)
        choices = lora_choices(fresh)
        names = {c[1] if isinstance(c, tuple) else c for c in choices}
        kept = [c if c in names else NO_LORA for c in current]
        return [*(gr.Dropdown(choices=choices, value=v) for v in kept), render_refused(fresh, lang),
                render_triggers(fresh, kept, lang)]

    def on_open(request: gr.Request = None):
        # Choices only, no value: the page's own load restores the saved picks at the same time.
        fresh = listing()
        return [*(gr.Dropdown(choices=lora_choices(fresh)) for _ in picks), render_refused(fresh, request_lang(request))]

    def on_pick(pick1, pick2, pick3, request: gr.Request = None):
        return render_triggers(listing(), (pick1, pick2, pick3), request_lang(request))

    demo.load(on_open, None, [*picks, refused], **private)
    refresh_btn.click(on_refresh, picks, [*picks, refused, triggers], **private)
    gr.on([p.change for p in picks], on_pick, picks, triggers, show_progress="hidden", **private)
    return picks, strengths
