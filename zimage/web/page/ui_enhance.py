"""The prompt enhancer on the page (issue 32): ✨ Enhance beside the prompt rewrites it with the
enhancer (Backend.enhance_prompt after EnhanceRequest.from_mapping, as POST /sdapi/v1/prompt-enhance
and the MCP tool do), ↶ Undo puts back exactly what the person wrote, and the instruction the
enhancer gets is a setting kept in the browser with the others (empty: the server's
enhancer_system_prompt from the config file, else the built-in one).

The link between a rewrite and the prompt it came from, {"before", "after"}, is kept in the browser
(a BrowserState, beside the saved prompt: Undo still works after a reload). Typing in the prompt
moves "after" along in the browser (no round trip a keystroke), so Generate sends "before" as
original_prompt (kept in the PNG parameters) while the prompt is the rewrite, edited or not; a
prompt the page puts there (PNG info, History, Edit) is not the rewrite, so it goes without one.
Enhancing the rewrite again keeps the first "before": Undo returns to the person's own words.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from ...config import Settings
from ...enhance_request import DEFAULT_SYSTEM_PROMPT, EnhanceRequest
from ...errors import Cancelled, InvalidRequest, ZImageError
from ...jobs import Backend, Job
from .page_jobs import valid_client_id
from .page_text import label, request_lang, text
from .ui_inputs import page_error_text
from .ui_preview import job_progress

log = logging.getLogger(__name__)

# The browser's side: typing keeps the rewrite linked to the prompt it came from.
FOLLOW_EDITS_JS = "(p, l) => (l && typeof l === 'object' && typeof l.before === 'string') ? {...l, after: p} : l"


class EnhanceRuns:
    """The browsers with an enhancement under way (Stop is enabled for them, as for a generation)."""

    def __init__(self):
        self._lock = threading.Lock()       # Gradio's threads start and end them; the status tick reads
        self._runs: Counter[str] = Counter()

    def start(self, client: str | None) -> None:
        with self._lock:
            self._runs[client or ""] += 1

    def end(self, client: str | None) -> None:
        with self._lock:
            self._runs[client or ""] -= 1
            if self._runs[client or ""] <= 0:
                del self._runs[client or ""]

    def running(self, client: str | None) -> bool:
        with self._lock:
            return self._runs.get(client or "", 0) > 0


@dataclass(frozen=True)
class EnhanceControls:
    enhance: gr.Button
    undo: gr.Button
    note: gr.Markdown


def build_enhance_buttons() -> EnhanceControls:
    """✨ Enhance and ↶ Undo in a row under the prompt, and the line that says how it went."""
    with gr.Row(elem_id="enhance-row"):
        enhance = gr.Button(label("enhance_btn"), size="sm", elem_id="enhance-btn", scale=0, min_width=120)
        undo = gr.Button(label("enhance_undo"), size="sm", elem_id="enhance-undo", scale=0, min_width=90,
                         interactive=False)
        note = gr.Markdown("", elem_id="enhance-note")
    return EnhanceControls(enhance, undo, note)


def build_enhancer_setting() -> gr.Textbox:
    """The enhancer's instruction, in the settings area; the built-in one shows as its placeholder."""
    return gr.Textbox("", label=label("enhancer_system_label"), info=label("enhancer_system_info"), lines=3,
                      max_lines=8, placeholder=DEFAULT_SYSTEM_PROMPT, elem_id="enhancer-system-prompt")


def linked(link: Any) -> bool:
    """A link the browser sent back that has the shape the page writes (it is the browser's to edit)."""
    return isinstance(link, dict) and isinstance(link.get("before"), str) and isinstance(link.get("after"), str)


def original_prompt(prompt: Any, link: Any) -> str:
    """Generate's original_prompt: the person's own words while the prompt is still their rewrite."""
    return link["before"] if linked(link) and prompt == link["after"] and prompt != link["before"] else ""


def enhance_refusal(e: ZImageError, lang: str) -> str:
    """A refusal in the page's words: the instruction setting named as the page names it."""
    if isinstance(e, InvalidRequest) and e.field == "system_prompt":
        message, hint = e.text(lang)
        return f"{text('enhancer_system_label', lang)}: {message.removeprefix('system_prompt: ')} {hint}".strip()
    return page_error_text(e, lang)


def wire_enhance(manager: Backend, settings: Settings, demo: gr.Blocks, prompt: gr.Textbox, controls: EnhanceControls,
                 system: gr.Textbox, link: gr.BrowserState, client_id, owner_of: Callable, runs: EnhanceRuns,
                 waiting_room: int) -> None:
    def wait(job: Job, progress, lang: str) -> None:
        while not job.future.done():
            fraction, desc = job_progress(job, manager.status(), lang)
            if job.phase == "generating":
                fraction, desc = 0.5, text("enhance_writing", lang)
            progress(fraction, desc=text("enhance_progress", lang, desc=desc))
            time.sleep(0.2)

    def on_enhance(words, instruction, was, client, request: gr.Request = None, progress=gr.Progress()):
        """The prompt rewritten, the link to what it came from, Undo on, and how it went; a prompt
        left as it was and a line saying why when the enhancer cannot run."""
        lang, client = request_lang(request), valid_client_id(client)
        keep = (gr.skip(), gr.skip(), gr.skip())
        if not isinstance(words, str) or not words.strip():
            return (*keep, text("enhance_empty", lang))
        try:
            req = EnhanceRequest.from_mapping({"prompt": words, "system_prompt": instruction or None},
                                              settings.max_prompt_chars, settings.enhancer_system_prompt,
                                              settings.enhancer_max_tokens)
            status = manager.status()
            if status.busy or status.queue_length:
                gr.Info(text("enhance_busy", lang))
            runs.start(client)
            try:
                job = manager.enhance_prompt(req, owner_of(client, request), getattr(request, "username", None))
                wait(job, progress, lang)
                result = job.future.result()
            finally:
                runs.end(client)
        except Cancelled:
            return (*keep, text("enhance_stopped", lang))
        except ZImageError as e:
            return (*keep, text("enhance_failed", lang, error=enhance_refusal(e, lang)))
        except Exception as e:          # a bug: the page says what it was and keeps working
            log.exception("Enhance failed")
            return (*keep, text("enhance_failed", lang, error=str(e).strip() or type(e).__name__))
        before = was["before"] if linked(was) and words == was["after"] else words
        return (result.prompt, {"before": before, "after": result.prompt}, gr.Button(interactive=True),
                text("enhance_done", lang, s=f"{result.seconds:.1f}", tokens=result.tokens))

    def on_undo(words, was, request: gr.Request = None):
        """The person's own prompt back, while the prompt is the rewrite (edited or not); a prompt the
        page put there since (PNG info, History) stays, and the link goes."""
        if not linked(was) or words != was["after"]:
            return gr.skip(), None, gr.Button(interactive=False), ""
        return was["before"], None, gr.Button(interactive=False), text("enhance_undone", request_lang(request))

    private = dict(queue=False, api_visibility="private")
    # Queued with the generations (the enhancement is a job of the same worker), with its progress on the prompt.
    controls.enhance.click(on_enhance, [prompt, system, link, client_id], [prompt, link, controls.undo, controls.note],
                           api_visibility="private", concurrency_id="gpu", concurrency_limit=waiting_room,
                           show_progress="full", show_progress_on=prompt)
    controls.undo.click(on_undo, [prompt, link], [prompt, link, controls.undo, controls.note], **private)
    prompt.input(None, [prompt, link], link, js=FOLLOW_EDITS_JS, show_progress="hidden", **private)
    demo.load(lambda was: gr.Button(interactive=linked(was)), link, controls.undo, **private)    # after a reload

