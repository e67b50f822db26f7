"""The page "/" answers while `--preload` builds the real one (web.launch): the model's state, the
step under way and the timeline in the page's own words and look. No gradio (the point of that
early app); page_text imports gradio only on first use.

Before (issue 28): an unstyled page with the raw state names ("on_cpu, read 45%") and the
timeline's event names in English whatever the language.
"""
from __future__ import annotations

import html

from ...state import Status
from .page_text import STATE_KEYS, stage_text, text
from .ui_startup import current_step, timeline_groups

RELOAD_S = 1                  # how often the starting page reloads itself

# The look of the page's status line (Gradio's default theme: its font, colours and the card).
STYLE = """
body { font-family: 'Source Sans Pro', ui-sans-serif, system-ui, sans-serif; margin: 0; background: #f9fafb;
  color: #1f2937; }
main { max-width: 720px; margin: 12vh auto 0; padding: 24px 28px; background: #fff; border: 1px solid #e5e7eb;
  border-radius: 12px; box-shadow: 0 1px 3px rgba(0,0,0,.06); }
h1 { font-size: 1.4rem; margin: 0 0 8px; }
p { line-height: 1.5; margin: 8px 0; }
.zi-state { font-weight: 600; color: #ea580c; }
progress { width: 100%; height: 10px; accent-color: #f97316; }
ul { padding-left: 1.2em; color: #4b5563; } li { margin: 2px 0; }
@media (prefers-color-scheme: dark) { body { background: #0b0f19; color: #e5e7eb; }
  main { background: #1f2937; border-color: #374151; } ul { color: #d1d5db; } }
"""


def starting_page(status: Status | None, lang: str = "en") -> str:
    """The whole page in `lang`; `status` None leaves the state and timeline out (a login is asked
    first: the page's own login is not there yet)."""
    e = html.escape
    body = ""
    if status is not None:
        state = text(STATE_KEYS[status.state], lang)
        if status.stage is not None:
            state += f" · {stage_text(status, lang)} {status.progress:.0%}"
        now = current_step(status, lang)
        body = (f'<p><b>{e(text("status_model", lang))}</b> <span class="zi-state">{e(state)}</span></p>'
                + (f'<p>{e(text("starting_now", lang))} {e(now)}</p>' if now else "")
                + (f'<progress max="100" value="{round(status.progress * 100)}"></progress>' if status.stage else "")
                + "".join(f"<p><b>{e(title)}</b></p><ul>" + "".join(f"<li>{e(s)}</li>" for s in steps) + "</ul>"
                          for title, steps in timeline_groups(status, lang)))
    html_lang = "zh-CN" if lang == "zh" else "en"
    return (f'<!doctype html><html lang="{html_lang}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta http-equiv="refresh" content="{RELOAD_S}"><title>{e(text("starting_title", lang))}</title>'
            f"<style>{STYLE}</style></head><body><main><h1>Z-Image-Turbo</h1>"
            f'<p>{e(text("starting_sentence", lang))}</p>{body}</main></body></html>')
