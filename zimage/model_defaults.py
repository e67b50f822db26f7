"""Each Z-Image model's own defaults, by kind (store.model_files.kind_of tells Turbo from base).

Turbo: 8 steps, guidance 0. diffusers >= 0.39 counts num_inference_steps as transformer passes, so
the model card's "9 steps (= 8 DiT forwards)" is 8 now; 9 cost one more pass per image.
Base (Tongyi-MAI/Z-Image, undistilled): the README's "28-50 steps, guidance 3-5, negative prompts
strongly recommended; cfg_normalization False for style, True for realism"; cfg_truncation is
diffusers' ZImagePipeline option (1.0 = guidance on every step).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelDefaults:
    steps: int
    guidance_scale: float
    negative_prompt: str = ""
    cfg_normalization: bool = False
    cfg_truncation: float = 1.0


TURBO = ModelDefaults(steps=8, guidance_scale=0.0)
BASE = ModelDefaults(steps=30, guidance_scale=4.0,
                     negative_prompt="blurry, low quality, distorted, deformed, watermark, text",
                     cfg_normalization=False, cfg_truncation=1.0)
TURBO_STEPS = TURBO.steps
# A request's fields that, when not sent, take the model's default (GenerationRequest.defaulted).
MODEL_FIELDS = ("num_inference_steps", "guidance_scale", "negative_prompt")
MAX_CFG_TRUNCATION = 1.0


def cfg_options(data) -> dict:
    """The request's cfg_normalization (true/false) and cfg_truncation (0-1), validated; errors name the field."""
    import math

    from .errors import InvalidRequest

    norm = data.get("cfg_normalization", False)
    if not isinstance(norm, bool):
        raise InvalidRequest("cfg_normalization", f"must be true or false, got {type(norm).__name__}")
    trunc = data.get("cfg_truncation", 1.0)
    if isinstance(trunc, bool) or not isinstance(trunc, (int, float)) or not math.isfinite(trunc):
        raise InvalidRequest("cfg_truncation", "must be a finite number")
    if not 0.0 <= trunc <= MAX_CFG_TRUNCATION:
        raise InvalidRequest("cfg_truncation", f"must be between 0 and {MAX_CFG_TRUNCATION:g}, got {trunc}")
    return {"cfg_normalization": norm, "cfg_truncation": float(trunc)}


def cfg_infotext(cfg_normalization: bool, cfg_truncation: float) -> str:
    """The infotext's CFG options, only where they differ from diffusers' defaults."""
    if not cfg_normalization and cfg_truncation == 1.0:
        return ""
    return f", CFG normalization: {cfg_normalization}, CFG truncation: {cfg_truncation:g}"


def defaults_for(kind: str) -> ModelDefaults:
    return BASE if kind == "base" else TURBO


def with_model_defaults(req, kind: str):
    """`req` with the fields its sender left out set to this kind of model's defaults (an API
    request that omits steps or guidance gets 30 and 4 on the base model, 8 and 0 on Turbo)."""
    from dataclasses import replace

    if not req.defaulted:
        return req
    d = defaults_for(kind)
    values = {"num_inference_steps": d.steps, "guidance_scale": d.guidance_scale, "negative_prompt": d.negative_prompt}
    return replace(req, **{k: values[k] for k in req.defaulted}, defaulted=frozenset())
