"""The validated generation request (the one validator the page and every HTTP route share) and
its result records. Pure: no torch, no files. The prompt's `<lora:NAME:w>` tags are lora_tags'; the
infotext written for an image and read back is infotext's.
"""
from __future__ import annotations

import logging
import math
import secrets
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import InvalidRequest
from .hires_request import HiresSpec
from .lora_tags import parse_loras, strip_loras
from .model_defaults import MODEL_FIELDS, TURBO_STEPS, cfg_options
from .variety import variety_field

log = logging.getLogger(__name__)

MIN_SIZE, MAX_SIZE, SIZE_MULTIPLE = 256, 2048, 16
MIN_STEPS, MAX_STEPS = 1, 50
MAX_IMAGES = 4
MAX_GUIDANCE = 20.0
MAX_SEED = 2**32 - 1
MODES = ("txt2img", "img2img", "inpaint")    # outpaint is an inpaint of an extended canvas (store.images)
DEFAULT_STRENGTH = 0.75                       # A1111's denoising_strength default
DEFAULT_MASK_BLUR = 4                         # A1111's mask_blur default, px
DEFAULT_PADDING = 32                          # A1111's inpaint_full_res_padding default, px
MAX_MASK_BLUR, MAX_PADDING = 64, 256
# A1111's resize_mode: 0 just resize, 1 crop and resize, 2 resize and fill. inpainting_fill: 0 fill,
# 1 original, 2 latent noise, 3 latent nothing.
RESIZE_MODES = (0, 1, 2)
INPAINT_FILLS = (0, 1, 2, 3)


def as_int(value: Any) -> int | None:
    """An integer from JSON: 512, or 512.0 (JSON has one number type, and JSON Schema's "integer"
    includes 512.0); None for anything else (True, 1.5, "512", NaN)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _int_field(data: Mapping, name: str, default: int, lo: int, hi: int) -> int:
    raw = data.get(name, default)
    value = as_int(raw)
    if value is None:
        raise InvalidRequest(name, f"must be an integer, got {type(raw).__name__}")
    if not lo <= value <= hi:
        raise InvalidRequest(name, f"must be between {lo} and {hi}, got {value}")
    return value


def _size_field(data: Mapping, name: str, default: int) -> int:
    value = _int_field(data, name, default, MIN_SIZE, MAX_SIZE)
    if value % SIZE_MULTIPLE:
        raise InvalidRequest(name, f"must be a multiple of {SIZE_MULTIPLE}, got {value}")
    return value


def _str_field(data: Mapping, name: str, default: str | None, max_chars: int) -> str:
    if name not in data and default is None:
        raise InvalidRequest(name, "is required")
    value = data.get(name, default)
    if value is None and default is not None:
        value = default
    if not isinstance(value, str):
        raise InvalidRequest(name, f"must be a string, got {type(value).__name__}")
    if len(value) > max_chars:
        raise InvalidRequest(name, f"is too long ({len(value)} characters, at most {max_chars})")
    if "\x00" in value:
        raise InvalidRequest(name, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:   # JSON's "\ud800" decodes to a lone surrogate; the tokenizer raises on it
        raise InvalidRequest(name, f"must be valid Unicode text (a lone UTF-16 surrogate at character {e.start})") \
            from None
    return value


CONTROL_MODULES = ("canny", "none")     # canny: edges computed here; none: the image is the control map


@dataclass(frozen=True)
class ControlUnit:
    """One ControlNet unit, checked: `image` is the control map the ControlNet sees (PIL RGB, the
    canny edges already drawn), `digest` its pixels' sha256 (requests share a pipeline call only
    with the same map). Weight is the ControlNet's conditioning scale; start/end are fractions of
    the steps, as A1111's ControlNet extension has them."""
    module: str
    image: Any = field(compare=False, repr=False)
    digest: str = ""
    model: str = ""
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0

    def infotext(self, index: int = 0) -> str:
        """A1111's ControlNet extension's infotext entry."""
        return (f'ControlNet {index}: "Module: {self.module}, Model: {self.model}, Weight: {self.weight:g}, '
                f'Guidance Start: {self.guidance_start:g}, Guidance End: {self.guidance_end:g}"')


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str = ""
    width: int = 1024
    height: int = 1024
    num_inference_steps: int = TURBO_STEPS
    guidance_scale: float = 0.0
    cfg_normalization: bool = False    # the base model's CFG options (model_defaults.py)
    cfg_truncation: float = 1.0
    seed: int = -1                 # -1 = random
    num_images: int = 1
    loras: tuple[tuple[str, float], ...] = ()     # from the prompt's <lora:NAME:w> tags (not an input field)
    control: ControlUnit | None = None            # ControlNet (store.control_images.parse_control; not an input field)
    defaulted: frozenset = field(default=frozenset(), compare=False, repr=False)  # model_defaults.MODEL_FIELDS not sent
    hires: HiresSpec | None = None                # upscale + refine after the pass (hires_request; not an input field)
    # Edit modes. init_image: a checked RGB PIL image (store.images.load_image); mask: "L", 255 =
    # change. Neither takes part in ==, repr or the infotext; batch_key keeps edits apart.
    mode: str = "txt2img"
    init_image: Any = field(default=None, compare=False, repr=False)
    mask: Any = field(default=None, compare=False, repr=False)
    strength: float = DEFAULT_STRENGTH
    mask_blur: int = DEFAULT_MASK_BLUR
    inpaint_full_res: bool = False
    inpaint_full_res_padding: int = DEFAULT_PADDING
    resize_mode: int = 0
    inpainting_fill: int = 1
    variety: float = 0.0           # seeded noise on the prompt embeddings' first steps (zimage/variety.py)
    original_prompt: str = ""      # the prompt before Enhance rewrote it, kept in the infotext
    wildcard_prompt: str = ""     # the prompt as written when wildcards chose `prompt` (explore.prompting; not an input)

    FIELDS = ("prompt", "negative_prompt", "width", "height", "num_inference_steps",
              "guidance_scale", "cfg_normalization", "cfg_truncation", "seed", "num_images", "variety", "original_prompt")
    EDIT_FIELDS = ("mode", "init_image", "mask", "strength", "mask_blur", "inpaint_full_res",
                   "inpaint_full_res_padding", "resize_mode", "inpainting_fill")

    @classmethod
    def from_mapping(cls, data: Any, max_prompt_chars: int = 4000) -> "GenerationRequest":
        """Validate untrusted input (a JSON body or the page's fields). Errors name the field."""
        if not isinstance(data, Mapping):
            raise InvalidRequest("body", "must be a JSON object")
        unknown = sorted(set(data) - set(cls.FIELDS) - set(cls.EDIT_FIELDS))
        if unknown:
            raise InvalidRequest(unknown[0], f"is not a known field (known: {', '.join(cls.FIELDS)})")
        edit = _edit_fields(data)
        prompt = _str_field(data, "prompt", None, max_prompt_chars)
        if not prompt.strip():
            raise InvalidRequest("prompt", "must not be empty")
        guidance = _number_field(data, "guidance_scale", 0.0, 0.0, MAX_GUIDANCE)
        seed = as_int(data.get("seed", -1))
        if seed is None or not (seed == -1 or 0 <= seed <= MAX_SEED):
            raise InvalidRequest("seed", f"must be -1 (random) or an integer 0-{MAX_SEED}")
        loras = parse_loras(prompt)
        return cls(
            prompt=prompt,
            loras=loras,
            negative_prompt=_str_field(data, "negative_prompt", "", max_prompt_chars),
            width=_size_field(data, "width", edit.pop("default_width", 1024)),
            height=_size_field(data, "height", edit.pop("default_height", 1024)),
            num_inference_steps=_int_field(data, "num_inference_steps", TURBO_STEPS, MIN_STEPS, MAX_STEPS),
            guidance_scale=float(guidance),
            **cfg_options(data),
            seed=seed,
            num_images=_int_field(data, "num_images", 1, 1, MAX_IMAGES),
            variety=variety_field(data),
            original_prompt=_str_field(data, "original_prompt", "", max_prompt_chars),
            defaulted=frozenset(MODEL_FIELDS) - set(data), **edit,
        )

    @property
    def is_edit(self) -> bool:
        return self.mode != "txt2img"

    @property
    def denoising_strength(self) -> float:
        """The strength the pipeline runs, which the PNG and the APIs record. "latent noise"
        (inpainting_fill 2) starts the masked area from pure noise: 1. So does inpaint (and outpaint)
        with a ControlNet: diffusers' ZImageControlNetInpaintPipeline has no strength; the masked
        picture and the mask reach the model through the ControlNet, beside the control map."""
        if self.mode == "inpaint" and (self.inpainting_fill == 2 or self.control is not None):
            return 1.0
        return self.strength

    def __post_init__(self):
        # every way a request is made (from_mapping, dataclasses.replace by the routes) passes here
        if self.control is not None and self.mode == "img2img":     # diffusers 0.42 has no such pipeline
            raise InvalidRequest("control", "ControlNet works with text to image, inpaint and outpaint, not with "
                                 "image to image; add a mask (inpaint), or send the control image without an init image")

    @property
    def encoder_prompt(self) -> str:
        """The prompt the text encoder gets: `prompt` keeps the tags (for the infotext, as A1111 does)."""
        return strip_loras(self.prompt)

    def with_resolved_seed(self) -> "GenerationRequest":
        """Replace seed -1 with a concrete random seed, so the result can be reproduced."""
        if self.seed >= 0:
            return self
        return replace(self, seed=secrets.randbelow(MAX_SEED - MAX_IMAGES))

    def seeds(self) -> list[int]:
        """One seed per image, A1111-style: seed, seed+1, ..."""
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.num_images)]

    def to_dict(self) -> dict:
        """The fields as plain values; an image or mask as its size ("WxH"), not its pixels; the
        ControlNet unit without its image."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("init_image", "mask", "control", "defaulted")}
        out["hires"] = None if self.hires is None else asdict(self.hires)
        out["loras"] = [list(pair) for pair in self.loras]
        for name in ("init_image", "mask"):
            value = getattr(self, name)
            out[name] = None if value is None else "%dx%d" % tuple(value.size)
        out["control"] = None
        if self.control is not None:
            unit = self.control
            out["control"] = {"module": unit.module, "model": unit.model, "weight": unit.weight,
                              "guidance_start": unit.guidance_start, "guidance_end": unit.guidance_end}
        return out


@dataclass(frozen=True)
class GeneratedImage:
    image: Any          # PIL.Image.Image
    seed: int
    infotext: str
    path: Path | None   # where it was saved, None when saving failed


@dataclass(frozen=True)
class GenerationResult:
    request: GenerationRequest
    images: list[GeneratedImage]
    seconds: float
    warning: str = ""
    peak_vram_bytes: int | None = None   # the GPU's peak allocation during this generation
    batch_images: int = 0                # images in the pipeline call it shared with queued requests (0: alone)

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(1, self.batch_images or len(self.images))


def batch_key(req: GenerationRequest) -> tuple:
    """Requests with the same key can share one pipeline call: the LoRAs too, since they are fused
    into the one transformer the call uses. An edit shares a call with nothing: its image, mask and
    strength are the call's (the image's identity, not its pixels, is the key)."""
    key = (req.width, req.height, req.num_inference_steps, req.guidance_scale, req.cfg_normalization,
           req.cfg_truncation, req.negative_prompt, req.loras, req.control, req.variety, req.hires)
    if req.is_edit:
        key += (req.mode, id(req.init_image), id(req.mask))
    return key


def fit_size(w: int, h: int) -> tuple[int, int]:
    """The size an edit of a w x h image runs at when no width/height is given: the image's own,
    scaled into MIN_SIZE..MAX_SIZE (aspect kept where the limits allow) and rounded to SIZE_MULTIPLE."""
    scale = min(1.0, MAX_SIZE / max(w, h))
    scale = max(scale, MIN_SIZE / min(w, h))

    def snap(v: float) -> int:
        return int(min(MAX_SIZE, max(MIN_SIZE, round(v / SIZE_MULTIPLE) * SIZE_MULTIPLE)))
    return snap(w * scale), snap(h * scale)


def _is_image(value: Any, mode: str) -> bool:
    return getattr(value, "mode", None) == mode and isinstance(getattr(value, "size", None), tuple)


def finite_number(value: Any) -> float | None:
    """A JSON number as a finite float; None for anything else (a bool, NaN, an int past float's
    range: math.isfinite(10**400) raises OverflowError, which was a 500)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _number_field(data: Mapping, name: str, default: float, lo: float, hi: float) -> float:
    raw = data.get(name, default)
    value = finite_number(raw)
    if value is None:
        raise InvalidRequest(name, "must be a finite number")
    if not lo <= value <= hi:
        raise InvalidRequest(name, f"must be between {lo:g} and {hi:g}, got {value:g}")
    return value


def _edit_fields(data: Mapping) -> dict[str, Any]:
    """The edit fields of `data`, checked (images already decoded by store.images.load_image); the
    mode defaults to what the inputs say (an image: img2img; with a mask: inpaint). Also
    default_width/default_height: the image's size, fitted (fit_size)."""
    image, mask = data.get("init_image"), data.get("mask")
    mode = data.get("mode")
    if mode is None:
        mode = "txt2img" if image is None else "img2img" if mask is None else "inpaint"
    if mode not in MODES:
        raise InvalidRequest("mode", f"must be one of {', '.join(MODES)}, got {str(mode)[:40]!r}")
    scalars = _edit_scalars(data)
    if mode == "txt2img":
        for name in ("init_image", "mask"):
            if data.get(name) is not None:
                raise InvalidRequest(name, "is only used by the img2img and inpaint modes")
        return {}
    if image is None:
        raise InvalidRequest("init_image", f"is required in the {mode} mode")
    if not _is_image(image, "RGB"):
        raise InvalidRequest("init_image", "must be a decoded RGB image")
    if mode == "inpaint":
        if mask is None:
            raise InvalidRequest("mask", "is required in the inpaint mode")
        if not _is_image(mask, "L"):
            raise InvalidRequest("mask", "must be a decoded greyscale (L) image")
        if mask.getbbox() is None:
            raise InvalidRequest("mask", "marks nothing to change (it is all black; white = change)")
    elif mask is not None:
        raise InvalidRequest("mask", "is only used by the inpaint mode")
    width, height = fit_size(*image.size)
    return dict(mode=mode, init_image=image, mask=mask, default_width=width, default_height=height, **scalars)


def _edit_scalars(data: Mapping) -> dict[str, Any]:
    """The edit modes' numbers and switches, checked in every mode: a text-to-image request that
    sends them out of range is refused like any other field, not quietly ignored."""
    full_res = data.get("inpaint_full_res", False)
    if not isinstance(full_res, bool):
        full_res = as_int(full_res)             # A1111's clients send 0 / 1 as well as false / true
        if full_res not in (0, 1):
            raise InvalidRequest("inpaint_full_res", "must be true or false")
        full_res = bool(full_res)
    resize = as_int(data.get("resize_mode", 0))
    if resize not in RESIZE_MODES:
        raise InvalidRequest("resize_mode", "must be 0 (just resize), 1 (crop and resize) or 2 (resize and fill)")
    fill = as_int(data.get("inpainting_fill", 1))
    if fill not in INPAINT_FILLS:
        raise InvalidRequest("inpainting_fill", "must be 0 (fill), 1 (original), 2 (latent noise) or 3 (latent nothing)")
    return dict(strength=_number_field(data, "strength", DEFAULT_STRENGTH, 0.0, 1.0),
                mask_blur=_int_field(data, "mask_blur", DEFAULT_MASK_BLUR, 0, MAX_MASK_BLUR),
                inpaint_full_res=full_res,
                inpaint_full_res_padding=_int_field(data, "inpaint_full_res_padding", DEFAULT_PADDING, 0, MAX_PADDING),
                resize_mode=resize, inpainting_fill=fill)
