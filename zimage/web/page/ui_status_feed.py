"""The status panel's one-second refresh, fetched by the page's own script rather than run as a Gradio
event.

Why not a `gr.Timer` handler: after every backend event, Gradio's frontend (6.31) re-reads every
component that was ever an input or output of an event (its loading-status pass calls each one's
`get_data`), and the image editor answers that by exporting its picture: three `readPixels` and
three PNG encodings. With an 800x800 picture in Edit, a one-second Gradio tick kept headless
chromium at 1.3 CPU-s/s, for as long as the page stayed open; with this fetch (a front-end-only
event, which skips that pass) it is 0.09 (chromium's CPU time read with psutil, 2-core machine,
2026-12-06; e2e/test_edit_page.py counts the exports). The preview timer, on only while a job of
this browser runs, stays a Gradio event."""
from __future__ import annotations

import json
from typing import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..gradio_guard import LoginRequired
from ..guard_answer import error_body
from .page_jobs import valid_client_id
from .page_text import request_lang

STATUS_PATH = "/page/status"


def add_status_route(router: APIRouter, snapshot: Callable[[str | None, str], dict]) -> None:
    """GET STATUS_PATH?client=<id>: `snapshot(client_id or None, language)` as JSON (the panel's
    HTML, whether a download runs, whether this browser has something to stop). Behind a login,
    the page's own: `app.state.page_login` is the check the Gradio event guard runs (None: no login)."""
    @router.get(STATUS_PATH, include_in_schema=False)
    def page_status(request: Request, client: str = "") -> JSONResponse:
        lang = request_lang(request)
        logged_in = request.app.state.page_login
        if logged_in is not None and not logged_in(request.scope):
            err = LoginRequired()
            return JSONResponse(error_body(err, lang), status_code=err.http_status, headers={"Content-Language": lang})
        return JSONResponse(snapshot(valid_client_id(client), lang), headers={"Cache-Control": "no-store"})


def status_tick_js() -> str:
    """The Timer's front-end function: (client id) -> [panel HTML, Cancel download, Stop, Edit's
    Stop]. Cancel download's visibility is sent only when it changes (a hidden component's update
    makes Gradio walk its whole layout again); `undefined` leaves an output as it was, and an
    answer that fails leaves everything as it was."""
    return """
async (client) => {
  const seen = (window.ziStatusSeen = window.ziStatusSeen || {});
  let s;
  try {
    const r = await fetch(%s + '?client=' + encodeURIComponent(client || ''), {cache: 'no-store'});
    if (!r.ok) return [undefined, undefined, undefined, undefined];
    s = await r.json();
  } catch (e) { return [undefined, undefined, undefined, undefined]; }
  const dl = seen.downloading === s.downloading ? undefined : {__type__: 'update', visible: s.downloading};
  seen.downloading = s.downloading;
  const stop = {__type__: 'update', interactive: s.mine};
  return [s.html, dl, stop, stop];
}
""" % json.dumps(STATUS_PATH)
