"""Variety: seeded noise on the prompt embeddings for the first steps, so Turbo's seeds differ more.

Pure (core layer): the field's checks, its infotext key, and when the clean embeddings come back.
The noise itself is engine/variety.py's. Z-Image-Turbo's model card rates its diversity "Low";
ComfyUI's SeedVarianceEnhancer, InvokeAI's z_image_seed_variance_enhancer and Forge Neo's built-in
all add noise to the text embeddings, not the latents (docs: ../shared/research/turn3-models.md §3).

`variety` is 0 (off, the picture of the same seed without it) to 1. The noise is uniform in
[-a, a] with a = variety x NOISE_STD_SCALE x std(the prompt's embeddings), on SHARE of the values,
for the first SWITCH_FRACTION of the steps: InvokeAI scales by the std (0.1 subtle, 0.5 strong, 2
at most), ComfyUI randomises 50 % for the first 20 % of the steps; noise on all steps "reduces
prompt adherence and text rendering significantly" (SeedVarianceEnhancer's README).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from .errors import InvalidRequest

MAX_VARIETY = 1.0
NOISE_STD_SCALE = 2.0          # variety 1 -> amplitude 2 x std, InvokeAI's maximum
SHARE = 0.5                    # the share of embedding values that get noise (ComfyUI's randomize_percent 50)
SWITCH_FRACTION = 0.25         # noisy for this share of the steps, at least one: 9 steps -> 2
# The variety the page and the APIs start at: off. Measured (bench/variety_bench.py, docs/BENCHMARKS.md):
# on the tiny random model the spread between 4 seeds is the latent noise's (72 levels of 255 at off,
# 72.03 at 1.0: ratio 1.00) while each picture drifts from its own off image in step with variety
# (0.13 levels at 0.3, 0.42 at 1.0); a random model says nothing about a default that raises variety,
# so it stays off until the real-shape figure (the GPU issue) picks one.
PAGE_DEFAULT = 0.0
INFOTEXT_KEY = "Variety"
A1111_FIELD = "subseed_strength"   # A1111's variation strength (0-1), mapped onto variety


def variety_field(data: Mapping, name: str = "variety") -> float:
    """The checked variety of a request body (0 when absent); InvalidRequest naming `name`."""
    value = data.get(name, 0.0)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequest(name, "must be a finite number")
    if not 0.0 <= value <= MAX_VARIETY:
        raise InvalidRequest(name, f"must be between 0 and {MAX_VARIETY:g}, got {value}")
    return float(value)


def noisy_steps(num_inference_steps: int) -> int:
    """How many of the first steps see the noisy embeddings (the rest the clean ones)."""
    return max(1, min(num_inference_steps, round(num_inference_steps * SWITCH_FRACTION)))


def infotext_part(variety: float) -> str:
    """The infotext entry (", Variety: 0.3"), nothing when off: an image made without it reads as before."""
    return f", {INFOTEXT_KEY}: {variety:g}" if variety > 0 else ""


def parse_variety(params: Mapping[str, Any]) -> float | None:
    """The variety an infotext's params give, None when absent or not a number in range."""
    raw = params.get(INFOTEXT_KEY)
    try:
        value = float(raw) if isinstance(raw, str) and len(raw) <= 32 else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and 0 <= value <= MAX_VARIETY else None
