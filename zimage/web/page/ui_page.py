"""The page's own CSS and script: layout for desktop and phone, focus rings, contrast, keyboard, `<html lang>`.

Passed to `gr.mount_gradio_app(css=..., head=...)` by `page_assets()` (Gradio 6 takes them there,
not on Blocks). The script only clicks the page's own buttons, so every action still goes through
the same Gradio events (and the same guard) as a mouse click.
"""
from __future__ import annotations

import json

from ...i18n import LANG_COOKIE
from .page_text import page_i18n
from .ui_history import CSS as HISTORY_CSS
from .ui_inputs import COUNTER_CSS
from .ui_look import LOOK_CSS
from .ui_offline import offline_js
from .ui_refusals import CSS as REFUSALS_CSS, page_script

PAGE_PARTS_CSS = COUNTER_CSS + HISTORY_CSS + REFUSALS_CSS + LOOK_CSS   # the CSS of the modules that own those parts

PHONE_MAX_PX = 767      # below this width the phone layout applies (a 390 px phone, a 768 px tablet is desktop)

# Text on the page's background must reach WCAG AA's 4.5:1. Gradio's slider limit labels use
# --body-text-color-subdued (#9ca3af in the default theme: 2.5:1 on white); #4b5563 is 7.6:1 on
# white, #d1d5db 12:1 on Gradio's dark background (#0b0f19).
SUBDUED_LIGHT = "#4b5563"
SUBDUED_DARK = "#d1d5db"
FOCUS_RING = "#2563eb"  # 5.2:1 against white: a ring people can see (WCAG 2.4.7 / 1.4.11)

CSS = f"""
/* Visible focus for keyboard users only (a mouse click shows none). */
:focus-visible, #main-tabs button:focus-visible, .gradio-container input:focus-visible,
.gradio-container textarea:focus-visible, .gradio-container button:focus-visible {{
  outline: 3px solid {FOCUS_RING} !important; outline-offset: 2px !important;
}}
/* Slider limits (min/max) and other subdued text: AA contrast. */
.gradio-container {{ --body-text-color-subdued: {SUBDUED_LIGHT}; }}
.dark .gradio-container, .gradio-container.dark {{ --body-text-color-subdued: {SUBDUED_DARK}; }}
.gradio-container .min_value, .gradio-container .max_value {{ color: {SUBDUED_LIGHT} !important; }}
.dark .gradio-container .min_value, .dark .gradio-container .max_value {{ color: {SUBDUED_DARK} !important; }}
/* Forge's place for Generate: a narrow column right of the prompt, the button as tall as the box. */
#generate-col {{ min-width: 120px !important; max-width: 220px; }}
#generate-btn {{ min-height: 64px; font-size: 1.1em; }}
/* Results grow with the page instead of scrolling inside a fixed box. */
#gallery, #gallery .grid-wrap, #gallery .grid-container {{ max-height: none !important; overflow: visible !important;
  height: auto !important; }}
#live-preview:not(:has(.zi-live)) {{ display: none !important; }}
#live-preview img {{ max-width: 100%; max-height: 384px; image-rendering: pixelated; display: block; }}
#live-preview .zi-live-line {{ margin: 2px 0 6px; }}
#live-preview progress {{ width: 100%; }}
/* The language switch: two small choices side by side, at the status row's end. */
#title-col {{ gap: 4px !important; }}
#lang-switch .wrap {{ flex-wrap: nowrap !important; gap: 4px; }}
#lang-switch label {{ padding: 2px 8px !important; }}
/* The status: one line; the rest below it on desktop, behind a tap on the phone. */
#status-panel .zi-status-toggle {{ all: unset; cursor: pointer; display: block; width: 100%; }}
#status-panel .zi-status-toggle .zi-chevron {{ display: none; }}
#status-panel .zi-status-more {{ font-size: 0.9em; }}
#status-panel .zi-status-more > div {{ display: inline; }}
#status-panel .zi-status-more > div + div::before {{ content: " · "; }}
@media (max-width: {PHONE_MAX_PX}px) {{
  #status-panel .zi-status-toggle .zi-chevron {{ display: inline; }}
  #status-panel:not(.zi-expanded) .zi-status-more {{ display: none; }}
  #status-panel .zi-status-more > div {{ display: block; }}
  #status-panel .zi-status-more > div + div::before {{ content: none; }}
  /* Results right under the prompt and Generate, the settings after them. */
  #work-row {{ flex-direction: column; }}
  #results-col {{ order: -1; }}
  #prompt-row {{ flex-wrap: nowrap !important; }}
  #generate-col {{ min-width: 96px !important; max-width: 110px; }}
  #page-title {{ display: none; }}
  /* The switch alone on the status line's left, as narrow as its two words. */
  #title-col {{ min-width: 0 !important; flex: 0 0 auto !important; }}
  #lang-switch label {{ padding: 2px 6px !important; }}
  #lang-switch input {{ position: absolute; opacity: 0; }}   /* still focusable, still a radio to a screen reader */
  #lang-switch label:has(input:checked) {{ font-weight: 700; border-color: var(--color-accent) !important; }}
}}
"""

# Keys act on the tab in view: Ctrl+Enter / Cmd+Enter clicks its run button (Generate, or Edit on
# the Edit tab: the hidden Generate button ran a txt2img job from the Edit tab). Escape, on any tab,
# clicks an enabled Stop (each is that tab's Stop event, which stops every job of this browser's
# client id). Enter in the prompt stays a newline (Gradio's own).
RUN_BUTTONS = ("generate-btn", "edit-btn")
STOP_BUTTONS = ("stop-btn", "edit-stop-btn")
KEYS_JS = """
document.addEventListener('keydown', (e) => {
  const shown = (b) => b && (b.checkVisibility ? b.checkVisibility() : b.offsetParent !== null);
  const buttons = (ids) => ids.map((id) => document.getElementById(id)).filter((b) => b && !b.disabled);
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && !e.isComposing) {
    const run = buttons(RUN_IDS).find(shown);
    if (run) { run.click(); e.preventDefault(); e.stopPropagation(); }
  } else if (e.key === 'Escape' && !e.isComposing) {
    if (document.querySelector('[role=listbox], .options')) return;    // Escape closes an open dropdown first
    const stop = buttons(STOP_IDS);
    if (stop.length) stop[0].click();
  }
}, true);
document.addEventListener('click', (e) => {
  const t = e.target.closest && e.target.closest('#status-panel .zi-status-toggle');
  if (!t) return;
  const panel = document.getElementById('status-panel');
  panel.classList.toggle('zi-expanded');
  t.setAttribute('aria-expanded', panel.classList.contains('zi-expanded') ? 'true' : 'false');
});
// The panel is re-rendered every second: it is the live region (its wrapper stays, so screen readers
// hear changes), and its button's aria-expanded follows the wrapper's class.
const ziWatchStatus = () => {
  const panel = document.getElementById('status-panel');
  if (!panel) { setTimeout(ziWatchStatus, 200); return; }
  panel.setAttribute('aria-live', 'polite');
  panel.setAttribute('role', 'status');
  const sync = () => { const t = panel.querySelector('.zi-status-toggle');
    if (t) t.setAttribute('aria-expanded', panel.classList.contains('zi-expanded') ? 'true' : 'false'); };
  new MutationObserver(sync).observe(panel, {childList: true, subtree: true});
  sync();
};
ziWatchStatus();
""".replace("RUN_IDS", json.dumps(list(RUN_BUTTONS))).replace("STOP_IDS", json.dumps(list(STOP_BUTTONS)))


# The page's language, in the browser. Gradio's frontend picks its locale from navigator.language
# once, before this script runs, and has no setting for it on a mounted page without its footer; its
# `changeLocale` (the export its own Settings panel uses) is reached through the module the page has
# already loaded, so a switch re-labels the page in place: no reload, the prompt and results stay.
# The choice lives in a cookie, so every later request (status ticks, progress, errors) carries it
# to the server (page_text.request_lang), which writes its own text in the same language.
LANG_JS = """
const ziLocale = (code) => (code === 'zh' ? 'zh-CN' : 'en');
const ziCookie = () => { const m = document.cookie.match(/(?:^|;\\s*)COOKIE=(en|zh)(?:;|$)/); return m ? m[1] : null; };
// Accept-Language's rule (zimage.i18n.language_of): the first of the browser's languages that is en or zh.
const ziBrowserLang = () => { for (const l of (navigator.languages || [navigator.language || 'en'])) {
  const p = String(l).toLowerCase().split('-')[0]; if (p === 'zh' || p === 'en') return p; } return 'en'; };
let ziCoreModule = null;
const ziCore = async () => {
  if (ziCoreModule) return ziCoreModule;
  const url = performance.getEntriesByType('resource').map((e) => e.name)
    .find((n) => /\\/assets\\/core-[\\w-]+\\.js$/.test(n));
  if (!url) return null;
  ziCoreModule = await import(url);      // the same URL: the module instance the page runs
  return ziCoreModule;
};
const ziApplyLang = async (code, tries = 50) => {
  document.documentElement.lang = ziLocale(code);
  const core = await ziCore();
  if (core && core.changeLocale) { core.changeLocale(ziLocale(code)); document.documentElement.lang = ziLocale(code); }
  else if (tries > 0) setTimeout(() => ziApplyLang(code, tries - 1), 100);
  else console.warn('zimage: Gradio has no changeLocale; the page keeps the browser language');
};
window.ziLang = () => ziCookie() || ziBrowserLang();
window.ziSetLang = (code) => {
  if (code !== 'zh' && code !== 'en') return;
  document.cookie = `COOKIE=${code}; path=/; max-age=31536000; SameSite=Strict`;
  ziApplyLang(code);
};
ziApplyLang(window.ziLang());
""".replace("COOKIE", LANG_COOKIE)

# The language switch's `js=`: set the language in the browser first, then pass the inputs on.
SWITCH_JS = "(lang, ...rest) => { window.ziSetLang(lang); return [lang, ...rest]; }"


def set_lang_js(lang: str | None = None) -> str:
    """The one hook for the page's language: `window.ziSetLang(code)` ("en" or "zh") sets the
    cookie, Gradio's locale and `<html lang>`; at load the cookie, else the browser's languages,
    decide (`lang` forces one, for a page built for a single language)."""
    return LANG_JS + (f"window.ziSetLang({json.dumps(lang)});\n" if lang else "")


def page_assets(lang: str | None = None) -> dict[str, str]:
    """The keyword arguments for gr.mount_gradio_app: the page's CSS, its head script and its
    English and Chinese tables."""
    return {"css": CSS + PAGE_PARTS_CSS,
            "head": f"<script>\n{set_lang_js(lang)}{KEYS_JS}{offline_js()}{page_script()}</script>",
            "i18n": page_i18n()}
