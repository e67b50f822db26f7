"""A refused image, said the way a person reads it, when it happens.

- Toasts: Gradio's client shows a refused /upload as `HTTP 415: <the response body>`, so the page's
  toast read `HTTP 415: {"error": {...}}` (with `\\uXXXX` escapes in Chinese). The guard's answer
  carries `detail`, the sentence in the page's language (guard_answer); TOAST_JS puts that sentence
  in the toast in place of the status and the JSON. Gradio has no hook for an upload's error text
  (its client builds the string), so the script rewrites the toast it draws.
- The Edit tab's editor (gr.ImageEditor) reads a dropped file in the browser and sends nothing to
  the server until Edit is clicked: a broken or oversized image was refused only then, after the
  whole canvas was exported and sent. DROP_JS checks the file when it is dropped or picked (its
  size, first bytes, a decode, its pixels and sides, with the server's caps), keeps a refused one
  out of the editor, and clicks a hidden button whose event says why (`drop_refusal`, the same
  sentences as the server's own checks, in the page's language) in a toast. The server's checks
  at Edit stay: the browser's is for the person, not for safety.
"""
from __future__ import annotations

from typing import Any

import gradio as gr

from ...config import Settings
from ...errors import ZImageError
from ...store.images import MAX_UPLOAD_SIDE, MIN_UPLOAD_SIDE, check_side
from ...store.pnginfo import BROKEN, EMPTY, TOO_MANY_PIXELS, ImageRefused, NotAnImage, UploadTooLarge, first_bytes, \
    named, sniff
from ..gradio_uploads import UPLOAD_SUBJECTS
from .page_text import request_lang

FIELD = "image"                         # the edit request's field: what an API caller would have sent
HEAD_BYTES = 16                         # what sniff reads

TOAST_JS = r"""
// A toast of a refused request: "HTTP 415: {json}" -> the server's sentence (its `detail`).
const ziToastText = (raw) => {
  const m = /^HTTP \d{3}: ([\s\S]*)$/.exec(raw);
  if (!m) return null;
  try {
    const body = JSON.parse(m[1]);
    if (body && typeof body.detail === 'string' && body.detail) return body.detail;
    if (body && body.error && typeof body.error.message === 'string') return body.error.message;
  } catch (e) { /* not JSON: the words after the status */ }
  return m[1];
};
const ziFixToasts = () => {
  for (const el of document.querySelectorAll('[data-testid=toast-text]')) {
    const fixed = ziToastText(el.textContent.trim());
    if (fixed !== null) el.textContent = fixed;
  }
};
new MutationObserver(ziFixToasts).observe(document.documentElement, {childList: true, subtree: true, characterData: true});
"""

DROP_JS = r"""
// The Edit editor's file, checked when it is dropped or picked (ui_refusals.drop_refusal says why).
const ziChecked = new WeakSet();
const ziVet = async (file) => {
  const caps = document.querySelector('#edit-drop-caps [data-max-bytes]');
  if (!caps) return null;
  const d = caps.dataset, facts = {size: file.size, head: [], decoded: false, width: 0, height: 0};
  facts.head = Array.from(new Uint8Array(await file.slice(0, 16).arrayBuffer()));
  let bad = file.size === 0 || file.size > +d.maxBytes;
  if (!bad) {
    try { const bm = await createImageBitmap(file); facts.decoded = true; facts.width = bm.width; facts.height = bm.height; bm.close(); }
    catch (e) { bad = true; }
  }
  const w = facts.width, h = facts.height;
  bad = bad || w * h > +d.maxPixels || Math.min(w, h) < +d.minSide || Math.max(w, h) > +d.maxSide;
  return bad ? facts : null;
};
const ziRefuse = (facts) => {
  window.ziDropFacts = facts;
  const b = document.getElementById('edit-drop-refused');
  if (b) b.click();
};
document.addEventListener('change', (e) => {
  const input = e.target;
  if (ziChecked.has(e) || !(input instanceof HTMLInputElement) || input.type !== 'file' || !input.closest('#edit-image')) return;
  const file = input.files && input.files[0];
  if (!file) return;
  e.stopImmediatePropagation();
  ziVet(file).then((facts) => {
    if (facts) { input.value = ''; ziRefuse(facts); return; }
    const again = new Event('change', {bubbles: true}); ziChecked.add(again); input.dispatchEvent(again);
  });
}, true);
document.addEventListener('drop', (e) => {
  const target = e.target;
  if (ziChecked.has(e) || !target.closest || !target.closest('#edit-image') || !e.dataTransfer || !e.dataTransfer.files.length) return;
  const files = Array.from(e.dataTransfer.files);
  e.preventDefault(); e.stopImmediatePropagation();
  ziVet(files[0]).then((facts) => {
    if (facts) { target.dispatchEvent(new DragEvent('dragleave', {bubbles: true})); ziRefuse(facts); return; }
    const dt = new DataTransfer(); files.forEach((f) => dt.items.add(f));
    const again = new DragEvent('drop', {bubbles: true, cancelable: true, dataTransfer: dt});
    ziChecked.add(again); target.dispatchEvent(again);
  });
}, true);
"""

CSS = """
#edit-drop-caps, #edit-drop-refused { display: none !important; }
"""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def drop_refusal(facts: Any, settings: Settings) -> ZImageError | None:
    """Why the Edit editor's dropped file is refused, from what the browser found (its size, first
    bytes, whether it decoded, its size in pixels), with the server's caps and sentences; None when
    these facts pass (the browser's check and ours disagree: say nothing)."""
    if not isinstance(facts, dict):
        return None
    size, decoded = _int(facts.get("size")), facts.get("decoded") is True
    w, h = _int(facts.get("width")), _int(facts.get("height"))
    head = facts.get("head") if isinstance(facts.get("head"), list) else []
    head = bytes(b for b in head[:HEAD_BYTES] if isinstance(b, int) and 0 <= b < 256)
    try:
        if size == 0:
            raise ImageRefused(EMPTY, field_name=FIELD)
        if size > settings.max_upload_bytes:
            raise UploadTooLarge(size, settings.max_upload_bytes, FIELD)
        if sniff(head) is None:
            raise NotAnImage(first_bytes(head), FIELD)
        if not decoded:
            raise ImageRefused(BROKEN.format(why="the browser could not decode it"), field_name=FIELD)
        if w * h > settings.max_upload_pixels:
            raise ImageRefused(TOO_MANY_PIXELS.format(w=w, h=h, n=w * h, cap=settings.max_upload_pixels),
                               field_name=FIELD)
        check_side(w, h, FIELD)
    except ZImageError as e:
        return named(e, UPLOAD_SUBJECTS["edit"])
    return None


def build_drop_check(settings: Settings) -> None:
    """The Edit tab's hidden parts of the drop check (inside its layout): the caps DROP_JS reads and
    the button it clicks to have the refusal said."""
    caps = {"max-bytes": settings.max_upload_bytes, "max-pixels": settings.max_upload_pixels,
            "min-side": MIN_UPLOAD_SIDE, "max-side": MAX_UPLOAD_SIDE}
    gr.HTML("<span " + " ".join(f'data-{k}="{v}"' for k, v in caps.items()) + "></span>", elem_id="edit-drop-caps")
    button = gr.Button("", elem_id="edit-drop-refused")
    facts = gr.JSON(None, visible=False)

    def refuse(found, request: gr.Request = None) -> None:
        err = drop_refusal(found, settings)
        if err is not None:
            raise gr.Error(err.user_text(request_lang(request)))

    # queued: Gradio shows the gr.Error of a queued event as a toast (of a queue=False one, nothing)
    button.click(refuse, facts, None, js="() => [window.ziDropFacts || null]", show_progress="hidden",
                 api_visibility="private")


def page_script() -> str:
    return TOAST_JS + DROP_JS

