"""The status line while the server does not answer (issue 28): it said "Ready" from its last
answer while the server was down. The browser asks /health every few seconds; when that fails (no
connection at once, or no answer twice running: a busy server answers late, and a 401 or 503 is an
answer), the line says "Server not reachable" in the page's language. When the same server answers
again the page's own status tick redraws the line. When another server answers (its /health
`server_id` is not the one this page first saw: a restart, whose Gradio sessions are new), the page
reloads, and the browser's settings and results come back (BrowserState's secret and the kept
gallery: web.page_gallery). Reloading on a late answer alone lost what was typed a moment before
on a loaded machine (a 256 width came back 1024), so only a new server reloads the page.
"""
from __future__ import annotations

import json

from .page_text import text

POLL_S = 2.0                 # how often the browser asks; a 1-2 s outage may go unseen, which is fine
ANSWER_WAIT_S = 3.0          # an answer later than this counts as none
LATE_ANSWERS_DOWN = 2        # this many late answers in a row count as the server gone


def offline_js() -> str:
    words = {lang: {"line": text("server_unreachable", lang), "hint": text("server_unreachable_hint", lang),
                    "model": text("status_model", lang)} for lang in ("en", "zh")}
    return """
(() => {
  const WORDS = %s;
  let late = 0, seen = null, before = null;     // before: the line as the page last drew it
  const panel = () => document.getElementById('status-panel');
  const show = () => {
    const p = panel(); if (!p) return;
    const w = WORDS[(window.ziLang && window.ziLang()) || 'en'] || WORDS.en;
    const state = p.querySelector('.zi-state');
    if (state && state.dataset.state === 'unreachable') return;
    const body = p.querySelector('#zi-status-body') || p;
    before = body.innerHTML;
    body.innerHTML = `<button type="button" class="zi-status-toggle"><span class="zi-state zi-offline" data-state="unreachable"><b>${w.model}</b> ${w.line}</span></button><div class="zi-message">${w.hint}</div>`;
  };
  const ask = async () => {
    const ctl = new AbortController(); const timer = setTimeout(() => ctl.abort(), %d);
    let answer = null, gone = false;
    try {
      const r = await fetch('/health', {cache: 'no-store', signal: ctl.signal});
      answer = r.ok ? await r.json().catch(() => ({})) : {};
    } catch (e) { gone = e.name !== 'AbortError'; }
    clearTimeout(timer);
    if (answer === null) {
      late = gone ? %d : late + 1;
      if (late >= %d) show();
      return;
    }
    late = 0;
    const id = answer.server_id;
    if (id && seen && id !== seen) { location.reload(); return; }      // another server: its sessions are new
    if (id) seen = id;
    // The same server: its tick redraws the line, but only with news (Gradio leaves an unchanged value
    // alone), so the line it last drew comes back until then.
    const p = panel(), state = p && p.querySelector('.zi-state');
    if (state && state.dataset.state === 'unreachable' && before !== null) {
      (p.querySelector('#zi-status-body') || p).innerHTML = before;
    }
  };
  ask();
  setInterval(ask, %d);
})();
""" % (json.dumps(words, ensure_ascii=False), ANSWER_WAIT_S * 1000, LATE_ANSWERS_DOWN, LATE_ANSWERS_DOWN,
       POLL_S * 1000)
