"""The hires fix / upscale settings of a request (A1111's enable_hr, hr_scale, hr_upscaler,
hr_second_pass_steps, denoising_strength, hr_resize_x/y), checked, and their infotext keys.
Pure: no torch, no files (the upscaler names a request may use are passed in).

A request with `hires` is upscaled after its pass (engine/hires.py): the upscaler, then an
img2img refine at `strength` on the loaded model. The page's Upscale action and
/sdapi/v1/extra-single-image are an img2img at strength 0 (the picture as it is) with `hires`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import InvalidRequest, UpscalerNotFound

MIN_SCALE, MAX_SCALE = 1.0, 4.0          # A1111's hires slider
MAX_HIRES_SIZE = 4096                    # px, either side of the upscaled picture (2048 x 2)
MAX_HIRES_STEPS = 50
DEFAULT_SCALE = 2.0
# Turbo is distilled: crispz's refine defaults (denoise 0.30, research turn3-models.md section 7),
# not A1111's 0.7, which repaints a Turbo picture.
DEFAULT_STRENGTH = 0.3
DEFAULT_UPSCALER = "Lanczos"
# The key a refusal names, per caller: /generate's `hires` object, A1111's txt2img, A1111's extras.
GENERATE_NAMES = {k: f"hires.{k}" for k in ("scale", "upscaler", "steps", "strength", "resize_x", "resize_y")}
A1111_NAMES = {"scale": "hr_scale", "upscaler": "hr_upscaler", "steps": "hr_second_pass_steps",
               "strength": "denoising_strength", "resize_x": "hr_resize_x", "resize_y": "hr_resize_y"}


@dataclass(frozen=True)
class HiresSpec:
    scale: float = DEFAULT_SCALE
    upscaler: str = DEFAULT_UPSCALER
    steps: int = 0                   # refine steps; 0 = the first pass's (A1111's hr_second_pass_steps)
    strength: float = DEFAULT_STRENGTH
    resize_x: int = 0                # A1111's hr_resize_x/y: a size instead of the scale (0 = by scale)
    resize_y: int = 0
    postprocess: bool = False        # the Upscale action / extras (infotext keys), not txt2img's hires fix
    path: str = ""                   # the model file of `upscaler` ("" for a built-in), found when checked

    def target(self, width: int, height: int) -> tuple[int, int]:
        """The upscaled size of a width x height picture: resize_x/y when given (one of them: the
        other keeps the aspect), else the scale."""
        if self.resize_x and self.resize_y:
            return self.resize_x, self.resize_y
        if self.resize_x:
            return self.resize_x, max(1, round(height * self.resize_x / width))
        if self.resize_y:
            return max(1, round(width * self.resize_y / height)), self.resize_y
        return max(1, round(width * self.scale)), max(1, round(height * self.scale))

    def refine_steps(self, first_pass_steps: int) -> int:
        return self.steps or first_pass_steps

    def infotext(self, is_edit: bool, first_pass_steps: int) -> str:
        """A1111's keys: `Denoising strength` (txt2img's only strength), Hires upscale / steps /
        upscaler / resize; for the Upscale action, A1111 extras' Postprocess keys and ours for the refine."""
        by = f"{self.scale:g}" if not (self.resize_x or self.resize_y) else ""
        if self.postprocess:
            text = f", Postprocess upscale by: {by}" if by else f", Postprocess upscale to: {self.resize_x}x{self.resize_y}"
            text += f", Postprocess upscaler: {_quoted(self.upscaler)}"
            if self.strength > 0:
                text += f", Refine steps: {self.refine_steps(first_pass_steps)}, Refine strength: {self.strength:g}"
            return text
        text = "" if is_edit else f", Denoising strength: {self.strength:g}"
        if by:
            text += f", Hires upscale: {by}"
        else:
            text += f", Hires resize: {self.resize_x}x{self.resize_y}"
        if self.steps:
            text += f", Hires steps: {self.steps}"
        return text + f", Hires upscaler: {_quoted(self.upscaler)}"


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' if any(c in value for c in ',:"') else value


def _number(data: Mapping, key: str, field: str, default: float, lo: float, hi: float) -> float:
    value = data.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequest(field, f"must be a finite number, got {str(value)[:40]!r}")
    if not lo <= value <= hi:
        raise InvalidRequest(field, f"must be between {lo:g} and {hi:g}, got {value:g}")
    return float(value)


def _integer(data: Mapping, key: str, field: str, lo: int, hi: int, zero_ok: bool = True) -> int:
    value = data.get(key, 0)
    if value is None:
        value = 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(field, f"must be an integer, got {str(value)[:40]!r}")
    if not (value == 0 and zero_ok) and not lo <= value <= hi:
        raise InvalidRequest(field, f"must be 0 (off) or between {lo} and {hi}, got {value}" if zero_ok
                             else f"must be between {lo} and {hi}, got {value}")
    return value


def parse_hires(data: Mapping[str, Any], width: int, height: int, upscaler_paths: Mapping[str, str],
                names: Mapping[str, str] = GENERATE_NAMES, postprocess: bool = False,
                numbers_only: bool = False) -> HiresSpec:
    """A checked HiresSpec from `data` (keys scale, upscaler, steps, strength, resize_x, resize_y;
    missing or null: the default) for a width x height first pass; refusals name `names[key]`,
    the field the caller sent. `upscaler_paths`: every usable name -> its file ("" for a
    built-in). The upscaled size must stay within MAX_HIRES_SIZE. `numbers_only`: only the numbers'
    ranges (A1111 txt2img's hr_ fields when enable_hr is off: checked, as every field is, not used)."""
    if not isinstance(data, Mapping):
        raise InvalidRequest(names["scale"].partition(".")[0], "must be a JSON object")
    upscaler = data.get("upscaler")
    upscaler = DEFAULT_UPSCALER if upscaler in (None, "") or numbers_only else upscaler
    if not isinstance(upscaler, str) or upscaler not in upscaler_paths:
        shown = upscaler[:80] if isinstance(upscaler, str) else type(upscaler).__name__
        raise UpscalerNotFound(names["upscaler"], f"unknown upscaler {shown!r} (known: {', '.join(upscaler_paths)})")
    spec = HiresSpec(scale=_number(data, "scale", names["scale"], DEFAULT_SCALE, MIN_SCALE, MAX_SCALE),
                     upscaler=upscaler,
                     steps=_integer(data, "steps", names["steps"], 1, MAX_HIRES_STEPS),
                     strength=_number(data, "strength", names["strength"], DEFAULT_STRENGTH, 0.0, 1.0),
                     resize_x=_integer(data, "resize_x", names["resize_x"], 64, MAX_HIRES_SIZE),
                     resize_y=_integer(data, "resize_y", names["resize_y"], 64, MAX_HIRES_SIZE),
                     postprocess=postprocess, path=upscaler_paths[upscaler])
    tw, th = spec.target(width, height)
    if max(tw, th) > MAX_HIRES_SIZE and not numbers_only:
        field = names["resize_x" if spec.resize_x or spec.resize_y else "scale"]
        raise InvalidRequest(field, f"the upscaled picture would be {tw}x{th}: each side at most {MAX_HIRES_SIZE} px "
                             f"(the first pass is {width}x{height})")
    return spec
