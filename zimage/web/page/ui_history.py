"""The History tab: every image in the outputs folder, newest first, a page at a time from the
index (store.history), with search, date and size filters and a detail view whose buttons send the
image's settings to the Generate tab, download it or delete it (after a confirmation that names it).
"""
from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass
from datetime import date
from typing import Any

import gradio as gr

from ...errors import InvalidRequest, ZImageError
from ...jobs import Backend
from ...lora_tags import strip_loras
from ...store.history import HistoryEntry, HistoryQuery, split_id
from ...units import human_bytes
from .page_text import label, request_lang, text
from .ui_lora import LORA_SLOTS, NO_LORA
from .ui_variety import file_variety

log = logging.getLogger(__name__)

PAGE_SIZE = 24                   # thumbnails a page: 4 rows of 6 on a desktop
# (page_text key, the filter's value); the words are page_text's, in both languages.
ORIENTATION_CHOICES = [("history_any_size", ""), ("history_square", "square"), ("history_landscape", "landscape"),
                       ("history_portrait", "portrait")]
DETAIL_ROWS = (("field_prompt", "prompt"), ("field_negative", "negative prompt"), ("field_seed", "seed"),
               ("field_steps", "steps"), ("field_guidance", "guidance"), ("field_size", "size"),
               ("field_model", "model"), ("field_loras", "loras"), ("field_made", "made"), ("field_file", "file"))
# The delete confirmation names a long path ("2026-05-01/00042-1234567890.png"): on a line of its
# own, broken where the path allows it (after / and -), inside a word only when nothing else fits.
CSS = """
#history-confirm-text strong { display: block; margin: 2px 0; }
#history-confirm-text, #history-confirm-text * { word-break: normal !important; overflow-wrap: break-word !important; }
"""


@dataclass(frozen=True)
class GenerateControls:
    """The Generate tab's inputs that Use these settings and Reuse seed fill."""
    prompt: Any
    negative: Any
    width: Any
    height: Any
    steps: Any
    guidance: Any
    seed: Any
    count: Any
    lora_picks: list
    lora_strengths: list
    variety: Any

    def all(self) -> list:
        return [self.prompt, self.negative, self.width, self.height, self.steps, self.guidance, self.seed,
                self.count, *self.lora_picks, *self.lora_strengths, self.variety]


def parse_day(text: str, field: str) -> date | None:
    """A filter's date ('' for none); InvalidRequest naming the field otherwise."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(field, f"must be a date written YYYY-MM-DD, got {text!r}") from None


def history_query(search: str, since: str, until: str, size: str, page: int) -> HistoryQuery:
    return HistoryQuery(text=search or "", since=parse_day(since, "From"), until=parse_day(until, "To"),
                        size=size or "", offset=max(0, int(page or 0)) * PAGE_SIZE, limit=PAGE_SIZE)


def size_choices(sizes: list[tuple[int, int, int]]) -> list[tuple]:
    return [(label(key), value) for key, value in ORIENTATION_CHOICES] + [(f"{w}x{h} ({n})", f"{w}x{h}")
                                                                        for w, h, n in sizes]


def caption(entry: HistoryEntry) -> str:
    text = strip_loras(entry.prompt).replace("\n", " ")
    return (text[:40] + "…" if len(text) > 40 else text) or entry.path.rsplit("/", 1)[-1]


def summary_text(total: int, page: int, filtered: bool, lang: str = "en") -> str:
    if not total:
        return text("history_no_match" if filtered else "history_empty", lang)
    pages = -(-total // PAGE_SIZE)
    return text("history_summary", lang, total=total, page=page + 1, pages=pages)


def render_detail(entry: HistoryEntry, lang: str = "en") -> str:
    """The detail view's settings as HTML in `lang` (every value escaped: prompts are anyone's text);
    each value's data-field stays English, whatever the language."""
    e = html.escape
    loras = ", ".join(f"{n} ({w:g})" for n, w in entry.loras) or text("history_none", lang)
    size = f"{entry.width}x{entry.height}" if entry.width else "-"
    try:
        made = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.created))
    except (OverflowError, OSError, ValueError):   # an mtime past the platform's time_t (a foreign file)
        made = "-"
    took = f" · {entry.seconds:.2f} s" if entry.seconds is not None else ""
    values = [entry.prompt or "-", entry.negative or "-", "-" if entry.seed is None else str(entry.seed),
              "-" if entry.steps is None else str(entry.steps),
              "-" if entry.guidance is None else f"{entry.guidance:g}", size, entry.model or "-", loras,
              made + took, f"{entry.path} · {human_bytes(entry.bytes)}"]
    body = "".join(f'<tr><th>{e(text(key, lang))}</th><td data-field="{field}">{e(v)}</td></tr>'
                   for (key, field), v in zip(DETAIL_ROWS, values))
    return f'<table class="zi-history-detail">{body}</table>'


def settings_values(entry: HistoryEntry, variety: float | None = None) -> list:
    """The Generate controls' values (GenerateControls.all order) for this image: its own seed and
    count 1 (the image itself again); LoRAs from its prompt's tags go to the slots (the prompt keeps
    them when there are more tags than slots); `variety`: its file's (ui_variety.file_variety, not
    in the index). gr.skip() where the image does not say."""
    keep = gr.skip()
    loras = entry.loras if len(entry.loras) <= LORA_SLOTS else ()
    prompt = strip_loras(entry.prompt) if loras else entry.prompt
    picks = [n for n, _ in loras] + [NO_LORA] * (LORA_SLOTS - len(loras))
    strengths = [w for _, w in loras] + [1.0] * (LORA_SLOTS - len(loras))

    def known(value):
        return keep if value is None else value

    return [prompt, entry.negative, known(entry.width), known(entry.height), known(entry.steps),
            known(entry.guidance), known(entry.seed), 1, *picks, *strengths, known(variety)]


def build_history_tab(manager: Backend, tabs: gr.Tabs, generate: GenerateControls, edit=None) -> gr.Tab:
    """The History tab inside the caller's gr.Tabs; `generate` are the controls its buttons fill,
    `edit` (ui_edit.EditTarget) what Send to Edit fills."""
    store = manager._store

    def current(item: str | None) -> HistoryEntry | None:
        """The entry `item` names while its file is the one listed (same path and mtime)."""
        parsed = split_id(item) if item else None
        if parsed is None:
            return None
        entry = store.history.get(parsed[0])
        return entry if entry is not None and entry.id == item else None

    def show(search, since, until, size, page, request: gr.Request = None):
        lang = request_lang(request)
        try:
            q = history_query(search, since, until, size, page)
            listed = store.history.query(q)
            if listed.total and not listed.entries and q.offset:      # past the end (a delete emptied it)
                page = max(0, -(-listed.total // PAGE_SIZE) - 1)
                listed = store.history.query(history_query(search, since, until, size, page))
            sizes = store.history.sizes()
        except ZImageError as e:
            return gr.skip(), gr.skip(), f"**{e.user_text(lang)}**", gr.skip(), gr.skip(), gr.skip(), gr.skip()
        page = int(page or 0)
        filtered = bool((search or "").strip() or (since or "").strip() or (until or "").strip() or size)
        pages = -(-listed.total // PAGE_SIZE)
        items = [(str(store.root / e.path), caption(e)) for e in listed.entries]
        return (items, [e.id for e in listed.entries], summary_text(listed.total, page, filtered, lang), page,
                gr.Button(interactive=page > 0), gr.Button(interactive=page + 1 < pages),
                gr.Dropdown(choices=size_choices(sizes)))

    def first_page(search, since, until, size, request: gr.Request = None):
        return show(search, since, until, size, 0, request)

    def newer(search, since, until, size, page, request: gr.Request = None):
        return show(search, since, until, size, max(0, int(page or 0) - 1), request)

    def older(search, since, until, size, page, request: gr.Request = None):
        return show(search, since, until, size, int(page or 0) + 1, request)

    def hidden_confirm() -> tuple:
        return gr.Row(visible=False), None      # the confirmation hidden, and it names nothing

    def actions(enabled: bool) -> list:
        """Use these settings, Reuse seed, Send to Edit, Delete: usable only while an image is picked."""
        return [gr.Button(interactive=enabled) for _ in range(4)]

    def on_select(ids, evt: gr.SelectData, request: gr.Request = None):
        lang = request_lang(request)
        index = evt.index if isinstance(evt.index, int) else -1
        entry = current(ids[index]) if 0 <= index < len(ids) else None
        if entry is None:
            return (None, text("history_gone", lang), gr.DownloadButton(value=None, interactive=False), None,
                    *hidden_confirm(), "", *actions(False))
        path = str(store.root / entry.path)
        return (path, render_detail(entry, lang), gr.DownloadButton(value=path, interactive=True), entry.id,
                *hidden_confirm(), "", *actions(True))

    def on_use(item, request: gr.Request = None):
        entry = current(item)
        if entry is None:
            gr.Warning(text("history_gone", request_lang(request)))
            return [gr.skip()] * len(generate.all()) + [gr.skip()]
        return [*settings_values(entry, file_variety(store.root / entry.path)), gr.Tabs(selected="generate")]

    def on_reuse_seed(item, request: gr.Request = None):
        entry = current(item)
        if entry is None or entry.seed is None:
            gr.Warning(text("history_gone" if entry is None else "history_no_seed", request_lang(request)))
            return gr.skip(), gr.skip()
        return entry.seed, gr.Tabs(selected="generate")

    def on_send(item, request: gr.Request = None):
        entry = current(item)
        if entry is None:
            gr.Warning(text("history_gone", request_lang(request)))
            return [gr.skip()] * (len(edit.outputs) + 1)
        return [*edit.values(str(store.root / entry.path), request_lang(request)), gr.Tabs(selected="edit")]

    def on_delete(item, request: gr.Request = None):
        """Ask first: the confirmation names the file and remembers exactly this one (its id)."""
        lang = request_lang(request)
        entry = current(item)
        if entry is None:
            return gr.Row(visible=False), "", None, text("history_gone", lang)
        return gr.Row(visible=True), text("history_confirm_text", lang, name=entry.path), entry.id, ""

    def on_confirm(pending, request: gr.Request = None):
        lang = request_lang(request)
        keep = [gr.skip()] * 4
        if not pending:
            return *hidden_confirm(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), "", *keep
        try:
            entry = store.delete(pending)
        except ZImageError as e:
            return (*hidden_confirm(), gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                    text("history_not_deleted", lang, why=e.user_text(lang)), *keep)
        return (*hidden_confirm(), None, text("history_pick", lang), gr.DownloadButton(value=None, interactive=False),
                None, text("history_deleted", lang, name=entry.path), *actions(False))

    with gr.Tab(label("history_tab"), id="history", elem_id="history-tab") as tab:
        with gr.Row():
            search = gr.Textbox(label=label("history_search"), placeholder=label("history_search_hint"),
                                elem_id="history-search", scale=3)
            since = gr.Textbox(label=label("history_since"), elem_id="history-since", scale=1)
            until = gr.Textbox(label=label("history_until"), elem_id="history-until", scale=1)
            size = gr.Dropdown(size_choices([]), value="", label=label("history_size"), elem_id="history-size",
                               scale=1)
            refresh_btn = gr.Button(label("history_refresh"), elem_id="history-refresh", scale=0)
        summary = gr.Markdown("", elem_id="history-summary")
        with gr.Row():
            with gr.Column(scale=3):
                gallery = gr.Gallery(show_label=False, columns=6, height="auto", allow_preview=False,
                                     interactive=False, format="png", elem_id="history-gallery",
                                     buttons=["download", "fullscreen"])
                with gr.Row():
                    newer_btn = gr.Button(label("history_newer"), size="sm", interactive=False, elem_id="history-newer")
                    older_btn = gr.Button(label("history_older"), size="sm", interactive=False, elem_id="history-older")
            with gr.Column(scale=2):
                image = gr.Image(type="filepath", interactive=False, show_label=False, elem_id="history-image",
                                 buttons=["download", "fullscreen"])     # no "share": off Spaces it only fails
                detail = gr.HTML(label("history_pick"), elem_id="history-detail")
                with gr.Row():
                    # No image picked yet: nothing for these to act on (they said "no longer in the outputs folder").
                    use_btn = gr.Button(label("history_use"), variant="primary", elem_id="history-use", interactive=False)
                    seed_btn = gr.Button(label("history_reuse_seed"), elem_id="history-reuse-seed", interactive=False)
                    send_btn = gr.Button(label("history_send_edit"), elem_id="history-send-edit",
                                         visible=edit is not None, interactive=False)
                    download = gr.DownloadButton(label("history_download"), interactive=False, elem_id="history-download")
                    delete_btn = gr.Button(label("history_delete"), variant="stop", elem_id="history-delete",
                                           interactive=False)
                with gr.Row(visible=False, elem_id="history-confirm-row") as confirm_row:
                    confirm_text = gr.Markdown("", elem_id="history-confirm-text")
                    confirm_btn = gr.Button(label("history_confirm"), variant="stop", elem_id="history-confirm")
                    cancel_btn = gr.Button(label("history_cancel"), elem_id="history-cancel")
                result = gr.Markdown("", elem_id="history-result")
        page_ids = gr.State([])        # the ids of the thumbnails shown, in gallery order
        page_no = gr.State(0)
        selected = gr.State(None)      # the id of the image in the detail view
        pending = gr.State(None)       # the id the delete confirmation names

    private = dict(queue=False, api_visibility="private")
    filters = [search, since, until, size]
    listing = [gallery, page_ids, summary, page_no, newer_btn, older_btn, size]
    gr.on([tab.select, refresh_btn.click, search.submit, since.submit, until.submit, size.input],
          first_page, filters, listing, **private)
    newer_btn.click(newer, [*filters, page_no], listing, **private)
    older_btn.click(older, [*filters, page_no], listing, **private)
    action_btns = [use_btn, seed_btn, send_btn, delete_btn]
    gallery.select(on_select, page_ids, [image, detail, download, selected, confirm_row, pending, result, *action_btns],
                   **private)
    use_btn.click(on_use, selected, [*generate.all(), tabs], **private)
    seed_btn.click(on_reuse_seed, selected, [generate.seed, tabs], **private)
    if edit is not None:
        send_btn.click(on_send, selected, [*edit.outputs, tabs], api_visibility="private",   # queued: its toast shows
                       concurrency_id="page_send", concurrency_limit=4)
    delete_btn.click(on_delete, selected, [confirm_row, confirm_text, pending, result], **private)
    cancel_btn.click(hidden_confirm, None, [confirm_row, pending], **private)
    confirm_btn.click(on_confirm, pending, [confirm_row, pending, image, detail, download, selected, result,
                                            *action_btns], **private).then(show, [*filters, page_no], listing, **private)
    tab.viewer_selected = selected  # the picked entry's id (server-side), for ui.py's Upscale
    return tab
