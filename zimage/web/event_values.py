"""The type of each value a page event takes, checked before Gradio sees it.

Gradio 6.31 hands an event's values to its components' `preprocess` unchecked: a string sent as a
slider's value (`width: "abc"`) is a TypeError inside `Number.raise_if_out_of_bounds`, a NaN or an
infinity an error inside `round`, a dict as a textbox's value reaches the event as its repr, and each
one left a traceback in the server log (tests/test_fuzz_gradio.py: the wrong-typed cases). Here a
value of the wrong type is a 422 naming the field, before the event is queued.
The kinds are read from the input components (their classes, not their labels), so a new input of a
known class is checked without a change here; inputs of another class (State, BrowserState, File,
ImageEditor: their checks are the guard's file checks) are passed through.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

from ..errors import InvalidRequest

NUMBER, OPTIONAL_NUMBER, TEXT, BOOL, CHOICE, CHOICES = "number", "number?", "text", "bool", "choice", "choices"


def kind_of(component) -> str | None:
    """What values `component` accepts as an event input: one of the kinds above, or None (any)."""
    import gradio as gr

    if isinstance(component, gr.Slider):
        return NUMBER                  # preprocess compares it with the bounds: None is a TypeError too
    if isinstance(component, gr.Number):
        return OPTIONAL_NUMBER         # an emptied number box sends null
    if isinstance(component, gr.Textbox):
        return TEXT
    if isinstance(component, gr.Checkbox):
        return BOOL
    if isinstance(component, gr.Dropdown) and getattr(component, "multiselect", False):
        return CHOICES
    if isinstance(component, (gr.Radio, gr.Dropdown)):
        return CHOICE                  # Gradio itself checks that it is one of the choices
    return None


def kinds_of(inputs: Iterable, api_only: bool = False) -> tuple[str | None, ...]:
    """The kinds of an event's inputs; `api_only`: without the ones an API caller does not send."""
    return tuple(kind_of(b) for b in inputs if not (api_only and getattr(b, "skip_api", False)))


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def is_int(value: Any) -> bool:
    """An int that is not a bool (JSON's true is no index)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_choice(value: Any) -> bool:
    return value is None or isinstance(value, str) or (_is_number(value) and math.isfinite(value))


def check_value(value: Any, kind: str | None, where: str) -> None:
    """Raises InvalidRequest naming `where` when `value` is not of `kind`."""
    if kind is None:
        return
    if kind in (NUMBER, OPTIONAL_NUMBER):
        if value is None and kind == OPTIONAL_NUMBER:
            return
        if not _is_number(value):
            raise InvalidRequest(where, f"must be a number, got {_type_name(value)}")
        if not math.isfinite(value):
            raise InvalidRequest(where, "must be a finite number")
    elif kind == TEXT:
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(where, f"must be a string, got {_type_name(value)}")
    elif kind == BOOL:
        if value is not None and not isinstance(value, bool):
            raise InvalidRequest(where, f"must be true or false, got {_type_name(value)}")
    elif kind == CHOICE:
        if not _is_choice(value):
            raise InvalidRequest(where, f"must be one of the choices, got {_type_name(value)}")
    elif kind == CHOICES:
        if value is not None and not (isinstance(value, list) and all(_is_choice(v) for v in value)):
            raise InvalidRequest(where, f"must be a list of the choices, got {_type_name(value)}")


def check_values(values: Any, kinds: tuple[str | None, ...], names: list[str] | None = None,
                 where: str = "data") -> None:
    """Each value of an event (a list in input order, as long as `kinds`: the caller checked the
    length) against its input's kind; the field is `data[i]`, or `body.<name>` for call/v2 keywords."""
    if not isinstance(values, list) or len(values) != len(kinds):
        return
    for i, (value, kind) in enumerate(zip(values, kinds)):
        check_value(value, kind, f"{where}.{names[i]}" if names else f"{where}[{i}]")
