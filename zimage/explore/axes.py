"""The X/Y/Z plot's axes: which field an axis varies, its values as A1111 writes them, and the
body of each cell. Pure: no torch, no gradio, no files.

Values, as A1111's X/Y/Z plot script reads them: a comma list ("1, 2, 5"; quotes keep a comma in a
value: `"a, b", c`), a range "1-5" (ends included), a stepped range "1-10 (+2)", or a counted range
"0-1 [5]" (5 values from 0 to 1). An API caller may also send a JSON list, whose strings are read the
same way. A range is counted before it is made, so "0-4294967295" is refused, not built.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import InvalidRequest
from ..lora_tags import LORA_TAG
from ..request import as_int

# field -> (label in the grid, value kind). Prompt S/R: the first value is the text searched for
# in the prompt and negative prompt; each value (the first included) replaces it, as in A1111.
AXES: dict[str, tuple[str, str]] = {
    "seed": ("Seed", "int"),
    "steps": ("Steps", "int"),
    "guidance": ("CFG scale", "float"),
    "size": ("Size", "size"),
    "lora_strength": ("LoRA strength", "float"),
    "prompt_sr": ("Prompt S/R", "text"),
    "variety": ("Variety", "float"),
    "model": ("Model", "text"),          # a listed model's name: the grid runs each model's cells together
}
ALIASES = {"num_inference_steps": "steps", "guidance_scale": "guidance", "cfg_scale": "guidance", "cfg": "guidance",
           "prompt s/r": "prompt_sr", "prompt_s/r": "prompt_sr", "lora": "lora_strength",
           "checkpoint": "model", "checkpoint name": "model"}
AXIS_NAMES = ("x", "y", "z")
MAX_VALUE_CHARS = 4000
_INT_RANGE = re.compile(r"\s*([+-]?\d+)\s*-\s*([+-]?\d+)\s*(?:\(\s*([+-]\d+)\s*\)|\[\s*(\d+)\s*\])?\s*")
_UNSIGNED = r"\d+(?:\.\d*)?"
_FLOAT_RANGE = re.compile(rf"\s*([+-]?{_UNSIGNED})\s*-\s*([+-]?{_UNSIGNED})\s*(?:\(\s*([+-]{_UNSIGNED})\s*\)|\[\s*(\d+)\s*\])?\s*")
_SIZE = re.compile(r"\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*")


@dataclass(frozen=True)
class Axis:
    name: str              # x, y or z
    field: str             # a key of AXES
    values: tuple          # typed: int, float, (w, h) or str

    @property
    def title(self) -> str:
        return AXES[self.field][0]

    def label(self, value) -> str:
        """A value as the grid writes it beside its row or column."""
        if self.field == "prompt_sr":
            return str(value)
        if self.field == "size":
            return f"{self.title}: {value[0]}x{value[1]}"
        return f"{self.title}: {value:g}" if isinstance(value, float) else f"{self.title}: {value}"


def parse_axis(name: str, spec: Any, max_values: int) -> Axis | None:
    """The axis `name` of a /grid body ({"field": ..., "values": [...] or "1-5"}), or None when not sent."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise InvalidRequest(name, "must be an object like {\"field\": \"seed\", \"values\": [1, 2]}")
    field = spec.get("field")
    key = ALIASES.get(field.strip().lower(), field.strip().lower()) if isinstance(field, str) else None
    if key not in AXES:
        raise InvalidRequest(f"{name}.field", f"must be one of {', '.join(AXES)}, got {str(field)[:40]!r}")
    values = parse_values(key, spec.get("values"), f"{name}.values", max_values)
    return Axis(name, key, tuple(values))


def parse_values(field: str, raw: Any, where: str, max_values: int) -> list:
    """The typed values of one axis (A1111's syntax for text); refusals name `where` and the value."""
    kind = AXES[field][1]
    if isinstance(raw, str):
        if len(raw) > MAX_VALUE_CHARS:
            raise InvalidRequest(where, f"is too long ({len(raw)} characters, at most {MAX_VALUE_CHARS})")
        items: list = [v.strip() for v in next(csv.reader([raw], skipinitialspace=True), [])]
        items = [v for v in items if v != ""] if kind != "text" else items
    elif isinstance(raw, list):
        items = raw
    else:
        raise InvalidRequest(where, "must be a list of values or a text such as \"1-5\" or \"a, b, c\"")
    out: list = []
    for item in items:
        out += _values_of(kind, item, where, max_values - len(out))
        if len(out) > max_values:
            break
    if not out:
        raise InvalidRequest(where, "has no values")
    if len(out) > max_values:
        raise InvalidRequest(where, f"has more than {max_values} values (the grid's limit)")
    return out


def _values_of(kind: str, item: Any, where: str, room: int) -> list:
    def bad(why: str) -> InvalidRequest:
        return InvalidRequest(where, f"{str(item)[:60]!r} {why}")

    if kind == "text":
        if not isinstance(item, str):
            raise bad("must be text")
        return [item]
    if kind == "size":
        if as_int(item) is not None:
            return [(as_int(item), as_int(item))]
        m = _SIZE.fullmatch(item) if isinstance(item, str) else None
        if m is None:
            raise bad("must be a size like 1024x768")
        return [(int(m[1]), int(m[2]))]
    if kind == "int":
        if as_int(item) is not None:
            return [as_int(item)]
        m = _INT_RANGE.fullmatch(item) if isinstance(item, str) else None
        if m is None:
            if isinstance(item, str) and re.fullmatch(r"\s*[+-]?\d+\s*", item):
                return [int(item)]
            raise bad("must be a whole number or a range like 1-5, 1-10 (+2) or 1-9 [3]")
        start, end = int(m[1]), int(m[2])
        if m[4] is not None:
            return [round(v) for v in _linspace(start, end, _count(m[4], room, bad))]
        step = int(m[3]) if m[3] else (1 if end >= start else -1)
        if step == 0 or (end - start) * step < 0:
            raise bad("has a step that never reaches its end")
        n = (end - start) // step + 1
        if n > room:
            raise bad(f"makes {n} values; the grid takes at most {room} more")
        return list(range(start, end + (1 if step > 0 else -1), step))
    # float
    if isinstance(item, (int, float)) and not isinstance(item, bool):
        if not math.isfinite(item):
            raise bad("must be a finite number")
        return [float(item)]
    if not isinstance(item, str):
        raise bad("must be a number or a range like 0-1 (+0.5) or 0-1 [3]")
    try:
        value = float(item)
        if math.isfinite(value):
            return [value]
    except ValueError:
        pass
    m = _FLOAT_RANGE.fullmatch(item)
    if m is None:
        raise bad("must be a number or a range like 0-1 (+0.5) or 0-1 [3]")
    start, end = float(m[1]), float(m[2])
    if m[4] is not None:
        return [round(v, 6) for v in _linspace(start, end, _count(m[4], room, bad))]
    step = float(m[3]) if m[3] else (1.0 if end >= start else -1.0)
    if step == 0 or (end - start) * step < 0:
        raise bad("has a step that never reaches its end")
    n = int(math.floor((end - start) / step + 1e-9)) + 1
    if n > room:
        raise bad(f"makes {n} values; the grid takes at most {room} more")
    return [round(start + i * step, 6) for i in range(n)]


def _count(text: str, room: int, bad) -> int:
    n = int(text)
    if not 1 <= n <= room:
        raise bad(f"asks for {n} values; the grid takes 1 to {room} more")
    return n


def _linspace(start: float, end: float, n: int) -> list[float]:
    return [start] if n == 1 else [start + (end - start) * i / (n - 1) for i in range(n)]


def apply(body: dict, axis: Axis, value) -> dict:
    """The cell's body: `body` (a /generate body) with the axis' field set to `value`."""
    out = dict(body)
    if axis.field == "seed":
        out["seed"] = value
    elif axis.field == "steps":
        out["num_inference_steps"] = value
    elif axis.field == "guidance":
        out["guidance_scale"] = value
    elif axis.field == "variety":
        out["variety"] = value
    elif axis.field == "model":
        out["model"] = value
    elif axis.field == "size":
        out["width"], out["height"] = value
    elif axis.field == "lora_strength":
        prompt = out.get("prompt") if isinstance(out.get("prompt"), str) else ""
        if not LORA_TAG.search(prompt):
            raise InvalidRequest(f"{axis.name}.field", "lora_strength needs a <lora:NAME:1> tag in the base prompt")
        out["prompt"] = LORA_TAG.sub(lambda m: f"<lora:{m[1].partition(':')[0]}:{value:g}>", prompt)
    elif axis.field == "prompt_sr":
        search = axis.values[0]
        texts = {k: out.get(k) for k in ("prompt", "negative_prompt") if isinstance(out.get(k), str)}
        if not search or not any(search in t for t in texts.values()):
            raise InvalidRequest(f"{axis.name}.values", f"Prompt S/R: {search!r} (the first value) is not in the "
                                 "prompt or the negative prompt")
        out.update({k: t.replace(search, value) for k, t in texts.items()})
    return out
