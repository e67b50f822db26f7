"""The Generate tab's parameters to and from other shapes: a parameters dict (request.parse_infotext's,
store/pnginfo's) to the values of the Generate controls, and a result to its gallery caption. Pure."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ...lora_tags import LORA_TAG
from ...request import MAX_GUIDANCE, MAX_SEED, MAX_SIZE, MAX_STEPS, MIN_SIZE, MIN_STEPS, SIZE_MULTIPLE
from ...variety import MAX_VARIETY
from .page_text import text as page_text

# The Generate controls a parameters dict can fill, by SAVED_FIELDS name (ui_saved), in this order.
CONTROL_FIELDS = ("prompt", "negative", "width", "height", "steps", "guidance", "seed", "variety")
CAPTION_PROMPT_CHARS = 40           # a gallery tile shows about this much on a 1440px screen


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _size(value: Any) -> int | None:
    """A width or height as the sliders take it: snapped to the multiple, inside the range."""
    value = _int(value)
    if value is None or value <= 0:
        return None
    snapped = int(round(min(value, MAX_SIZE) / SIZE_MULTIPLE)) * SIZE_MULTIPLE     # a 400-digit int: no float
    return min(MAX_SIZE, max(MIN_SIZE, snapped))


def generate_values(params: Mapping[str, Any], max_prompt_chars: int = 4000) -> dict[str, Any]:
    """The Generate controls' values from a parameters dict ({"prompt", "negative_prompt", "steps",
    "seed", "guidance_scale", "width", "height", ...}): only the fields it has, each fitted to its
    control's range (an A1111 image of 40 steps at 512x768 gives 40 -> MAX_STEPS, 512, 768). The
    prompt keeps its <lora:NAME:w> tags: the Generate tab reads them as it reads typed ones. Variety
    is the image's, or 0 when it names its seed but no variety (it was made without: the slider's
    value would make another picture of that seed)."""
    out: dict[str, Any] = {}
    for key, name in (("prompt", "prompt"), ("negative_prompt", "negative")):
        if isinstance(params.get(key), str) and (params[key] or key == "negative_prompt"):
            out[name] = params[key][:max_prompt_chars]
    for key in ("width", "height"):
        size = _size(params.get(key))
        if size is not None:
            out[key] = size
    steps = _int(params.get("steps"))
    if steps is not None:
        out["steps"] = min(MAX_STEPS, max(MIN_STEPS, steps))
    guidance = params.get("guidance_scale")
    if isinstance(guidance, (int, float)) and not isinstance(guidance, bool) and math.isfinite(guidance):
        out["guidance"] = min(MAX_GUIDANCE, max(0.0, float(guidance)))
    seed = _int(params.get("seed"))
    if seed is not None:
        out["seed"] = seed if 0 <= seed <= MAX_SEED else -1
    variety = params.get("variety")      # request.parse_infotext's: a float within the range, or absent
    if isinstance(variety, float) and 0.0 <= variety <= MAX_VARIETY:
        out["variety"] = variety
    elif seed is not None:
        out["variety"] = 0.0
    return out


def control_updates(values: Mapping[str, Any], skip: Any, fields: Sequence[str] = CONTROL_FIELDS) -> list:
    """`values` in the order of `fields`, `skip` (gr.skip()) where a field has no value."""
    return [values[name] if name in values else skip for name in fields]


def gallery_caption(prompt: str, seed: int, steps: int, width: int, height: int,
                    loras: Sequence[tuple[str, float]] = (), seconds: float | None = None, lang: str = "en") -> str:
    """A result's caption in `lang`: the prompt's start, seed, steps, size, LoRAs and seconds."""
    text = " ".join(LORA_TAG.sub(" ", prompt).split())
    if len(text) > CAPTION_PROMPT_CHARS:
        text = text[:CAPTION_PROMPT_CHARS - 1].rstrip() + "…"
    parts = [text, page_text("caption_seed", lang, seed=seed), page_text("caption_steps", lang, steps=steps),
             f"{width}x{height}"]
    if loras:
        parts.append("LoRA " + ", ".join(f"{name} {weight:g}" for name, weight in loras))
    if seconds is not None:
        parts.append(f"{seconds:.2f} s")
    return " · ".join(p for p in parts if p)
