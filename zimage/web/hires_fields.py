"""The hires fix and Upscale fields of each HTTP caller made into a request's `hires`: /generate's
`hires` object, A1111 txt2img's hires fields, A1111 extras' fields (and the page's Upscale action,
through upscale_request). Mapping only: the checks are hires_request.parse_hires.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from ..config import Settings
from ..errors import InvalidRequest
from ..hires_request import A1111_NAMES, GENERATE_NAMES, parse_hires
from ..infotext import parse_infotext
from ..request import MAX_SIZE, MIN_SIZE, SIZE_MULTIPLE, GenerationRequest, fit_size
from ..store import upscalers

EXTRAS_NAMES = {"scale": "upscaling_resize", "upscaler": "upscaler_1", "steps": "steps",
                "strength": "denoising_strength", "resize_x": "upscaling_resize_w", "resize_y": "upscaling_resize_h"}
A1111_NONE = "None"          # A1111's "no upscaler": its Upscaler.upscale still resizes with Lanczos


def upscaler_paths(settings: Settings) -> dict[str, str]:
    return upscalers.usable_paths(settings.upscaler_folder)


def with_hires(req: GenerationRequest, value: Any, settings: Settings) -> GenerationRequest:
    """`req` with /generate's `hires` object ({scale, upscaler, steps, strength, resize_x,
    resize_y}); unchanged when it is missing or null."""
    if value is None:
        return req
    if not isinstance(value, Mapping):
        raise InvalidRequest("hires", "must be an object like {\"scale\": 2, \"upscaler\": \"Lanczos\"}")
    unknown = sorted(set(value) - set(GENERATE_NAMES))
    if unknown:
        raise InvalidRequest(f"hires.{str(unknown[0])[:40]}", f"is not a known field (known: {', '.join(GENERATE_NAMES)})")
    return replace(req, hires=parse_hires(value, req.width, req.height, upscaler_paths(settings)))


def a1111_hires(req: GenerationRequest, body: Mapping, settings: Settings) -> GenerationRequest:
    """`req` with A1111 txt2img's hires fix when `enable_hr` is true (its other hr_ fields are
    read only then, as A1111 does)."""
    enable = body.get("enable_hr", False)
    if enable is None or isinstance(enable, (bool, int)) and enable in (0, 1):
        enable = bool(enable)
    else:
        raise InvalidRequest("enable_hr", "must be true or false")
    data = {ours: body.get(theirs) for ours, theirs in A1111_NAMES.items()}
    if data["upscaler"] == A1111_NONE:
        data["upscaler"] = upscalers.LANCZOS
    # off: the numbers are still checked (an out-of-range field is refused, not ignored); the
    # upscaler is not, since webuiapi sends its default "Latent", which this app does not offer
    spec = parse_hires(data, req.width, req.height, upscaler_paths(settings), A1111_NAMES, numbers_only=not enable)
    return replace(req, hires=spec) if enable else req


def upscale_request(image, spec_data: Mapping, settings: Settings, names: Mapping[str, str] = EXTRAS_NAMES,
                    infotext: str = "") -> GenerationRequest:
    """The Upscale action on a picture: an img2img at strength 0 (the picture as it is) whose
    `hires` upscales it and (strength > 0) refines it. The prompt, seed and steps come from the
    picture's own parameters (`infotext`) where it has them."""
    w, h = image.size
    spec = parse_hires(spec_data, w, h, upscaler_paths(settings), names, postprocess=True)
    size = (w, h)
    if not (MIN_SIZE <= min(w, h) and max(w, h) <= MAX_SIZE and w % SIZE_MULTIPLE == 0 and h % SIZE_MULTIPLE == 0):
        size = fit_size(w, h)      # a size the pipeline takes; the target stays the picture's own x scale
        if not (spec.resize_x or spec.resize_y):
            spec = replace(spec, resize_x=spec.target(w, h)[0], resize_y=spec.target(w, h)[1])
    info = parse_infotext(infotext) if infotext else {}
    return GenerationRequest(prompt=info.get("prompt", ""), negative_prompt=info.get("negative_prompt", ""),
                             width=size[0], height=size[1], num_inference_steps=min(50, max(1, info.get("steps", 9))),
                             seed=info.get("seed", -1) if 0 <= info.get("seed", -1) < 2**32 else -1,
                             mode="img2img", init_image=image, strength=0.0, hires=spec)


def extras_fields(body: Mapping) -> dict:
    """A1111 extras' fields as parse_hires' keys: resize_mode 0 scales by upscaling_resize, 1 goes
    to upscaling_resize_w x upscaling_resize_h."""
    mode = body.get("resize_mode", 0)
    if mode not in (0, 1) or isinstance(mode, bool):
        raise InvalidRequest("resize_mode", "must be 0 (scale by upscaling_resize) or 1 (to upscaling_resize_w/h)")
    upscaler = body.get("upscaler_1")
    data = {"scale": body.get("upscaling_resize", 2), "steps": body.get("steps"),
            "upscaler": upscalers.LANCZOS if upscaler in (None, A1111_NONE) else upscaler,
            "strength": body.get("denoising_strength", 0.0)}
    if mode == 1:
        data.update(resize_x=body.get("upscaling_resize_w", 512), resize_y=body.get("upscaling_resize_h", 512))
        for key in ("resize_x", "resize_y"):
            if data[key] in (0, None):
                raise InvalidRequest(EXTRAS_NAMES[key], "must be a size in px with resize_mode 1")
    return data


def decode_extras_image(body: Any, max_bytes: int, max_pixels: int):
    """(RGB picture, its parameters text) of the body's `image` (base64), through the uploads' checks."""
    from ..store.images import decode_base64, load_image
    from ..store.pnginfo import read_image_info

    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    if body.get("image") in (None, ""):
        raise InvalidRequest("image", "is required (a base64 PNG, JPEG or WebP image)")
    image = load_image(body["image"], "image", max_bytes, max_pixels)
    found = read_image_info(decode_base64(body["image"], "image", max_bytes), max_bytes, max_pixels, "image")
    return image, found.raw if found.source in ("parameters", "exif") else ""


