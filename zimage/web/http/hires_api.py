"""A1111's `/sdapi/v1/upscalers` and `/sdapi/v1/extra-single-image` (the upscaler folder's list;
a picture upscaled). Mapping only (hires_fields); the work is the backend's (engine/hires.py).

extra-single-image is A1111's upscaler alone by default; our `denoising_strength` (and `steps`)
adds the refine pass on the loaded model, as the page's Upscale action does.
"""
from __future__ import annotations

import asyncio
import base64

from fastapi import APIRouter, Request

from ...errors import ZImageError
from ...jobs import Backend
from ...store import upscalers
from ...store.outputs import png_bytes
from .api import MAX_BODY_BYTES, job_owner, read_json, request_caller
from .edit_fields import caps, edit_body_cap
from ..hires_fields import EXTRAS_NAMES, decode_extras_image, extras_fields, upscale_request
from .openapi import A1111_ERROR, BODY_ERRORS, RUN_ERRORS, STRING, obj, route_docs

UPSCALER_ENTRY = obj({"name": STRING, "model_name": {"type": ["string", "null"]}, "model_path": {"type": ["string", "null"]},
                      "model_url": {"type": ["string", "null"]}, "scale": {"type": ["number", "null"]}},
                     ["name", "scale"])
EXTRAS_BODY = {"type": "object", "required": ["image"], "properties": {
    "image": {"type": "string", "description": "PNG, JPEG or WebP, base64"},
    "resize_mode": {"enum": [0, 1], "default": 0},
    "upscaling_resize": {"type": "number", "minimum": 1, "maximum": 4, "default": 2},
    "upscaling_resize_w": {"type": "integer", "minimum": 64, "maximum": 4096},
    "upscaling_resize_h": {"type": "integer", "minimum": 64, "maximum": 4096},
    "upscaler_1": {"type": "string", "description": "a name from /sdapi/v1/upscalers (None: Lanczos)"},
    "denoising_strength": {"type": "number", "minimum": 0, "maximum": 1, "default": 0,
                           "description": "ours: > 0 refines the upscaled picture on the loaded model"},
    "steps": {"type": "integer", "minimum": 0, "maximum": 50, "default": 0, "description": "ours: refine steps"}}}


def build_hires_router(manager: Backend) -> APIRouter:
    from .compat_api import _a1111_error

    router = APIRouter()
    settings = manager.settings
    auth_on = bool(settings.api_auth_pairs)
    cap = edit_body_cap(settings.max_upload_bytes, MAX_BODY_BYTES, images=1)

    @router.get("/sdapi/v1/upscalers", **route_docs(ok={"type": "array", "items": UPSCALER_ENTRY}))
    async def list_upscalers():
        """A1111's list: the built-in resamplers, then the upscaler folder's files (refused ones,
        such as pickle .pth files, with usable false and their reason)."""
        return await asyncio.to_thread(upscalers.a1111_list, settings.upscaler_folder)

    @router.post("/sdapi/v1/extra-single-image", **route_docs(
        ok=obj({"html_info": STRING, "image": STRING}), body=EXTRAS_BODY, errors=BODY_ERRORS + RUN_ERRORS,
        error_schema=A1111_ERROR))
    async def extra_single_image(request: Request):
        try:
            body = await read_json(request, max_bytes=cap, image_keys=("image",))
            image, info = await asyncio.to_thread(decode_extras_image, body, *caps(manager))
            req = await asyncio.to_thread(upscale_request, image, extras_fields(body), settings, EXTRAS_NAMES, info)
            client, user = request_caller(request, auth_on)
            result = await asyncio.wrap_future(manager.submit(req, job_owner(client), user).future)
        except ZImageError as e:
            return _a1111_error(e, request)
        item = result.images[0]
        return {"html_info": item.infotext, "image": base64.b64encode(png_bytes(item)).decode()}

    return router

