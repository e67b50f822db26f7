"""The status line while the server does not answer (issue 28): it said "Ready" from its last
answer while the server was down. The browser asks /health every few seconds; when that fails (no
answer at all: a 401 or 503 is an answer), the line says "Server not reachable" in the page's
language. When the server answers again the page's own status tick redraws the line; if no tick
comes (a restarted server's page events), the page reloads, and the browser's settings and results
come back (BrowserState's secret and the kept gallery: web.page_gallery).
"""
from __future__ import annotations

import json

from .page_text import text

POLL_S = 2.0                 # how often the browser asks; a 1-2 s outage may go unseen, which is fine
ANSWER_WAIT_S = 3.0          # an answer later than this counts as none
RELOAD_AFTER_S = 6.0         # the server is back but no status tick redrew the line: reload


def offline_js() -> str:
    words = {lang: {"line": text("server_unreachable", lang), "hint": text("server_unreachable_hint", lang),
                    "model": text("status_model", lang)} for lang in ("en", "zh")}
    return """
(() => {
  const WORDS = %s;
  let down = false, backSince = 0;
  const panel = () => document.getElementById('status-panel');
  const show = () => {
    const p = panel(); if (!p) return;
    const w = WORDS[(window.ziLang && window.ziLang()) || 'en'] || WORDS.en;
    const state = p.querySelector('.zi-state');
    if (state && state.dataset.state === 'unreachable') return;
    const body = p.querySelector('#zi-status-body') || p;
    body.innerHTML = `<button type="button" class="zi-status-toggle"><span class="zi-state zi-offline" data-state="unreachable"><b>${w.model}</b> ${w.line}</span></button><div class="zi-message">${w.hint}</div>`;
  };
  const ask = async () => {
    const ctl = new AbortController(); const timer = setTimeout(() => ctl.abort(), %d);
    let ok = false;
    try { await fetch('/health', {cache: 'no-store', signal: ctl.signal}); ok = true; } catch (e) { ok = false; }
    clearTimeout(timer);
    if (!ok) { down = true; backSince = 0; show(); return; }
    if (!down) return;
    const state = panel() && panel().querySelector('.zi-state');
    if (!state || state.dataset.state !== 'unreachable') { down = false; return; }     // a tick redrew it
    if (!backSince) backSince = Date.now();
    else if (Date.now() - backSince > %d) location.reload();
  };
  setInterval(ask, %d);
})();
""" % (json.dumps(words, ensure_ascii=False), ANSWER_WAIT_S * 1000, RELOAD_AFTER_S * 1000, POLL_S * 1000)
