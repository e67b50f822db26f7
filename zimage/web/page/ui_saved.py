"""The Generate tab's settings kept in the browser (a BrowserState, {field: value}): which controls,
their defaults, the script that saves them (in the browser, no round trip) and the check of a
saved value before it is put back (localStorage is the browser's to edit)."""
from __future__ import annotations

import json
import math

import gradio as gr

from ...model_defaults import TURBO_STEPS
from ...variety import PAGE_DEFAULT as VARIETY_DEFAULT
from .ui_lora import LORA_DEFAULTS, LORA_SLOTS

SAVED_FIELDS = ("prompt", "negative", "width", "height", "steps", "guidance", "seed", "count",
                *(f"lora{i}" for i in range(1, LORA_SLOTS + 1)),
                *(f"lora{i}_strength" for i in range(1, LORA_SLOTS + 1)), "variety", "enhancer_prompt")
# The controls' defaults, in SAVED_FIELDS order
SAVED_DEFAULTS = ("", "", 1024, 1024, TURBO_STEPS, 0.0, -1, 1, *LORA_DEFAULTS, VARIETY_DEFAULT, "")
# The settings as BrowserState keeps them ({field: value}), made in the browser from the controls.
SAVE_SETTINGS_JS = f"(...values) => Object.fromEntries({json.dumps(list(SAVED_FIELDS))}.map((k, i) => [k, values[i]]))"


def restored(saved, name: str, default):
    """A saved setting when it has the type of its control, else gr.skip()."""
    value = saved.get(name) if isinstance(saved, dict) else None
    if isinstance(default, str):
        return value if isinstance(value, str) else gr.skip()
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok else gr.skip()


def restored_values(saved) -> list:
    """Every saved setting (SAVED_FIELDS order), gr.skip() where none or of the wrong type."""
    return [restored(saved, name, default) for name, default in zip(SAVED_FIELDS, SAVED_DEFAULTS)]
