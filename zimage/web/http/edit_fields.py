"""The image fields of an edit request, as every route sends them: base64 (or a file's bytes)
decoded and checked by store/images.load_image into the request's init_image and mask, and the
body cap that fits them. Imported by api (our /generate) and edit_api (A1111's, OpenAI's)."""
from __future__ import annotations

from typing import Any

from ...errors import InvalidRequest
from ...jobs import Backend
from ...request import as_int
from ...store.images import load_image, outpaint_canvas

OUTPAINT_SIDES = ("left", "right", "top", "bottom")
OUTPAINT_STRENGTH = 1.0      # the new border has no picture to keep: it is made from noise


def edit_body_cap(max_upload_bytes: int, base_bytes: int, images: int) -> int:
    """The JSON body cap of a route that carries up to `images` images in base64 (4/3 of the bytes,
    plus a data: prefix: a picture, its mask, a ControlNet map) beside the ordinary fields
    (`base_bytes`): each at the upload cap fits, and no more."""
    return images * (max_upload_bytes * 4 // 3 + 64) + base_bytes


def caps(manager: Backend) -> tuple[int, int]:
    return manager.settings.max_upload_bytes, manager.settings.max_upload_pixels


def image_fields(body: dict, manager: Backend) -> dict:
    """Our /generate's body with `image` and `mask` (base64) decoded into init_image and mask, and
    `outpaint` ({left, right, top, bottom} px) made into an inpaint of the extended canvas."""
    data = dict(body)
    for name in ("init_image",):
        if name in data:
            raise InvalidRequest(name, "is sent as `image` (base64 PNG, JPEG or WebP)")
    max_bytes, max_pixels = caps(manager)
    image, mask, outpaint = data.pop("image", None), data.pop("mask", None), data.pop("outpaint", None)
    if image is not None:
        data["init_image"] = load_image(image, "image", max_bytes, max_pixels)
    elif mask is not None or outpaint is not None:
        raise InvalidRequest("image", "is required with a mask or outpaint")
    if mask is not None:
        data["mask"] = load_image(mask, "mask", max_bytes, max_pixels, mask=True)
    if outpaint is not None:
        if mask is not None:
            raise InvalidRequest("outpaint", "cannot be combined with a mask (the outpaint makes its own)")
        data["init_image"], data["mask"] = outpaint_canvas(data["init_image"], *_outpaint_sides(outpaint))
        data.setdefault("mode", "inpaint")
        data.setdefault("strength", OUTPAINT_STRENGTH)
    return data


def _outpaint_sides(value: Any) -> tuple[int, int, int, int]:
    if not isinstance(value, dict) or set(value) - set(OUTPAINT_SIDES):
        raise InvalidRequest("outpaint", "must be an object with left, right, top, bottom (px)")
    sides = []
    for side in OUTPAINT_SIDES:
        px = as_int(value.get(side, 0))
        if px is None:
            raise InvalidRequest("outpaint", f"{side} must be an integer number of px")
        sides.append(px)
    return tuple(sides)
