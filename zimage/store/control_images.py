"""ControlNet inputs: a control image checked and decoded like every upload (store/images.load_image:
bytes, type by content, header pixels before decoding, one frame, its colour mode made explicit),
and the canny edge map computed here with OpenCV. Pure functions; no torch.
"""
from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any, Mapping

from ..config import Settings
from ..errors import InvalidRequest
from ..request import CONTROL_MODULES, ControlUnit
from . import images
from .pnginfo import BROKEN, ImageRefused, UploadTooLarge

log = logging.getLogger(__name__)

# OpenCV's usual canny thresholds (A1111's ControlNet extension's defaults: low 100, high 200).
CANNY_LOW, CANNY_HIGH = 100, 200
UNIT_FIELDS = ("image", "module", "model", "weight", "guidance_start", "guidance_end")
MAX_CONTROL_WEIGHT = 2.0


def model_label(settings: Settings) -> str:
    """The ControlNet as the infotext names it: the repo's or folder's last part."""
    return settings.controlnet.rstrip("/").rsplit("/", 1)[-1]


def load_image(path: str | Path, max_bytes: int, max_pixels: int, field_name: str):
    """A control image uploaded on the page (a file) as RGB, checked and decoded as every upload
    is (store/images.load_image). Raises ImageRefused / UploadTooLarge / NotAnImage naming `field_name`."""
    path = Path(path)
    try:         # every call on the path inside: a name over 255 bytes is an OSError from is_file too
        size = path.stat().st_size
        if size > max_bytes:                                          # not read into memory at all
            raise UploadTooLarge(size, max_bytes, field_name)
        raw = path.read_bytes()
    except OSError as e:
        raise ImageRefused(BROKEN.format(why=e.strerror or type(e).__name__), field_name=field_name) from None
    return images.load_image(raw, field_name, max_bytes, max_pixels)


def decode_image(data: Any, max_bytes: int, max_pixels: int, field_name: str):
    """An image sent as base64 (a data URL's prefix allowed, as A1111's clients send it) as RGB."""
    if not isinstance(data, str) or not data.strip():
        raise InvalidRequest(field_name, "must be a base64-encoded PNG, JPEG or WebP image")
    return images.load_image(data, field_name, max_bytes, max_pixels)


def canny_map(image, low: int = CANNY_LOW, high: int = CANNY_HIGH):
    """White edges on black (RGB), as the union ControlNet was trained on."""
    import cv2
    import numpy as np
    from PIL import Image

    grey = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(grey, low, high)
    return Image.fromarray(np.stack([edges] * 3, axis=-1), "RGB")


def make_unit(image, module: str, model: str, weight: float, start: float, end: float,
              prefix: str = "control", thresholds: tuple[int, int] = (CANNY_LOW, CANNY_HIGH)) -> ControlUnit:
    """The unit for a decoded image: the canny map drawn when asked, the values checked."""
    if module not in CONTROL_MODULES:
        raise InvalidRequest(f"{prefix}.module", f"must be one of {', '.join(CONTROL_MODULES)}, got {module!r}")
    for name, value, lo, hi in (("weight", weight, 0.0, MAX_CONTROL_WEIGHT), ("guidance_start", start, 0.0, 1.0),
                                ("guidance_end", end, 0.0, 1.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidRequest(f"{prefix}.{name}", "must be a finite number")
        if not lo <= value <= hi:
            raise InvalidRequest(f"{prefix}.{name}", f"must be between {lo:g} and {hi:g}, got {value}")
    if start >= end:
        raise InvalidRequest(f"{prefix}.guidance_end", f"must be above guidance_start ({start:g}), got {end:g}")
    control = canny_map(image, *thresholds) if module == "canny" else image
    digest = hashlib.sha256(control.tobytes() + repr(control.size).encode()).hexdigest()
    return ControlUnit(module=module, image=control, digest=digest, model=model, weight=float(weight),
                       guidance_start=float(start), guidance_end=float(end))


def parse_control(data: Any, max_bytes: int, max_pixels: int, model: str, prefix: str = "control",
                  image_keys: tuple[str, ...] = ("image",)) -> ControlUnit:
    """Our `/generate` body's `control` object (or one A1111 ControlNet unit, with its
    `input_image` key): {image (base64), module, weight, guidance_start, guidance_end}."""
    if not isinstance(data, Mapping):
        raise InvalidRequest(prefix, "must be an object")
    known = set(UNIT_FIELDS) | set(image_keys)
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidRequest(f"{prefix}.{unknown[0]}", f"is not a known field (known: {', '.join(sorted(known))})")
    key = next((k for k in image_keys if data.get(k)), None)
    if key is None:
        raise InvalidRequest(f"{prefix}.{image_keys[0]}", "is required (a base64 PNG, JPEG or WebP image)")
    module = data.get("module", "none")
    if not isinstance(module, str):
        raise InvalidRequest(f"{prefix}.module", f"must be one of {', '.join(CONTROL_MODULES)}")
    image = decode_image(data[key], max_bytes, max_pixels, f"{prefix}.{key}")
    return make_unit(image, module.strip().lower(), model, data.get("weight", 1.0), data.get("guidance_start", 0.0),
                     data.get("guidance_end", 1.0), prefix)
