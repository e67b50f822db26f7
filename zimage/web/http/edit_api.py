"""The edit routes: A1111's `POST /sdapi/v1/img2img`, OpenAI's `POST /v1/images/edits` (multipart),
and the image fields of our `/generate`. Only mapping and shapes live here: images are decoded and
checked by store/images.load_image, the request by GenerationRequest, the work is the manager's.

Mapping (docs/API.md): A1111's init_images[0] and mask (white = change; inpainting_mask_invert
flips it) with denoising_strength, mask_blur, inpainting_fill, inpaint_full_res(_padding) and
resize_mode as A1111 reads them; OpenAI's image and mask files (the mask's transparent pixels are
edited, as OpenAI's), size "auto" or absent: the image's own size, fitted to the model's limits.
"""
from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from ...errors import BodyTooLarge, InvalidRequest, UnsupportedMediaType, ZImageError
from ...jobs import Backend
from ...request import GenerationRequest, as_int
from ...store.images import load_image
from .api import MAX_BODY_BYTES, job_owner, read_json, request_caller
from .compat_api import (OPENAI_ERRORS, _a1111_error, _openai_error, a1111_fields, a1111_images, a1111_request,
                         openai_images, openai_n, openai_size)
from .control_api import a1111_control, a1111_unit_images
from .edit_fields import caps, edit_body_cap
from ..gradio_uploads import buffered_form
from ..json_text import SafeJSONResponse
from .models_api import submit_a1111
from .openapi import (A1111_ERROR, A1111_IMAGES, BODY_ERRORS, OPENAI_ERROR, OPENAI_IMAGES, RUN_ERRORS, edits_body,
                      img2img_body, route_docs)

# A1111 fields an img2img body maps onto the request; the others are accepted and ignored, as A1111 does.
A1111_EDIT = {"denoising_strength": "strength", "mask_blur": "mask_blur", "inpainting_fill": "inpainting_fill",
              "inpaint_full_res": "inpaint_full_res", "inpaint_full_res_padding": "inpaint_full_res_padding",
              "resize_mode": "resize_mode"}
# Multipart: the two files' part headers and the text fields around them.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def a1111_img2img_request(body: Any, manager: Backend, max_prompt_chars: int) -> tuple[GenerationRequest, dict]:
    """(validated request, mapping notes) from an A1111 img2img body."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    data, notes = a1111_fields(body, sized=False)
    images = body.get("init_images")
    if not isinstance(images, list) or len(images) != 1:
        count = len(images) if isinstance(images, list) else type(images).__name__
        raise InvalidRequest("init_images", f"must be a list of one base64 image, got {count}")
    max_bytes, max_pixels = caps(manager)
    data["init_image"] = load_image(images[0], "init_images[0]", max_bytes, max_pixels)
    mask = body.get("mask")
    if mask is not None and mask != "":
        mask = load_image(mask, "mask", max_bytes, max_pixels, mask=True)
        invert = as_int(body.get("inpainting_mask_invert", 0))
        if invert not in (0, 1):
            raise InvalidRequest("inpainting_mask_invert", "must be 0 (white = change) or 1 (black = change)")
        if invert:
            from PIL import ImageOps

            mask = ImageOps.invert(mask)
        data["mask"], data["mode"] = mask, "inpaint"
    else:
        data["mode"] = "img2img"
    for theirs, ours in A1111_EDIT.items():
        if body.get(theirs) is not None:
            data[ours] = body[theirs]
    if data["mode"] == "img2img":     # A1111 sends its inpaint fields in img2img too: they mean nothing there
        for name in ("mask_blur", "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding"):
            data.pop(name, None)
    for name in ("width", "height"):
        if body.get(name) is not None:
            data[name] = body[name]
    return a1111_request(data, max_prompt_chars, manager.settings.wildcards_folder), notes


async def read_capped(request: Request, cap: int, what: str) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise BodyTooLarge(f"The request body is larger than {cap / 2**20:.1f} MB.",
                               f"Send {what} of at most {cap / 2**20:.1f} MB in all.")
    return bytes(body)


async def read_form(request: Request, cap: int) -> dict[str, Any]:
    """A multipart form under `cap` bytes: {name: bytes of a file | text}. The parts are parsed from
    the buffered body (Starlette: in memory up to 1 MB a file, then a temporary file closed here)."""
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "multipart/form-data" or "boundary=" not in ctype:
        raise UnsupportedMediaType(f"Content-Type must be multipart/form-data, got {ctype.split(';')[0] or 'none'}.",
                                   "Send the image and mask as files of a multipart form (the openai SDK does).")
    body = await read_capped(request, cap, "the image and mask")
    form = await buffered_form(request.scope, body, "body", max_files=4, max_fields=32)
    out: dict[str, Any] = {}
    try:
        for key, value in form.multi_items():
            key = key[:-2] if key.endswith("[]") else key       # the SDK's image[] for a list
            if key in out:
                raise InvalidRequest(key, "is sent more than once (one image, one mask)")
            out[key] = await value.read() if hasattr(value, "read") else value
    finally:
        await form.close()
    return out


def openai_edit_request(form: dict[str, Any], manager: Backend, max_prompt_chars: int) -> tuple[GenerationRequest, str]:
    """(validated request, response_format) from OpenAI's edits form."""
    max_bytes, max_pixels = caps(manager)
    if "image" not in form:
        raise InvalidRequest("image", "is required (a PNG, JPEG or WebP file)")
    if not isinstance(form["image"], bytes):
        raise InvalidRequest("image", "must be a file, not a text field")
    data: dict[str, Any] = {"prompt": form.get("prompt"), "init_image": load_image(form["image"], "image", max_bytes,
                                                                                    max_pixels)}
    if form.get("mask") is not None:
        if not isinstance(form["mask"], bytes):
            raise InvalidRequest("mask", "must be a file, not a text field")
        data["mask"] = load_image(form["mask"], "mask", max_bytes, max_pixels, mask=True)
        data["mode"] = "inpaint"
        # OpenAI's edits fill the transparent area anew: nothing of it is kept
        data["strength"] = 1.0
    if form.get("n") is not None:
        data["num_images"] = openai_n(form["n"], form=True)
    if form.get("strength") is not None:        # ours, beyond OpenAI's fields
        try:
            data["strength"] = float(form["strength"])
        except (TypeError, ValueError):
            raise InvalidRequest("strength", "must be a number 0-1") from None
    size = openai_size(form.get("size") or None, auto=None)          # auto: the image's own size
    if size is not None:
        data["width"], data["height"] = size
    fmt = form.get("response_format") or "b64_json"
    if fmt not in ("b64_json", "url"):
        raise InvalidRequest("response_format", "must be b64_json or url")
    return GenerationRequest.from_mapping(data, max_prompt_chars), fmt


def build_edit_router(manager: Backend, max_prompt_chars: int) -> APIRouter:
    router = APIRouter(default_response_class=SafeJSONResponse)
    outputs = manager._store.root
    auth_on = bool(manager.settings.api_auth_pairs)
    json_cap = edit_body_cap(manager.settings.max_upload_bytes, MAX_BODY_BYTES, images=3)  # init, mask, ControlNet
    form_cap = 2 * manager.settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES

    async def run(req: GenerationRequest, request: Request):
        client, user = request_caller(request, auth_on)
        return await asyncio.wrap_future(manager.submit(req, job_owner(client), user).future)

    @router.post("/sdapi/v1/img2img", **route_docs(ok=A1111_IMAGES, body=img2img_body(max_prompt_chars),
                                                   errors=BODY_ERRORS + RUN_ERRORS, error_schema=A1111_ERROR))
    async def img2img(request: Request):
        try:
            body = await read_json(request, max_bytes=json_cap, image_keys=("init_images", "mask", a1111_unit_images))
            req, notes = await asyncio.to_thread(a1111_img2img_request, body, manager, max_prompt_chars)
            req = await a1111_control(req, body, manager.settings)     # with a mask: ControlNet inpaint
            result = await submit_a1111(manager, req, request, body, auth_on)
        except ZImageError as e:
            return _a1111_error(e, request)
        # A1111 echoes the request; the images are left out (megabytes the client already has)
        parameters = {k: v for k, v in body.items() if k not in ("init_images", "mask")}
        return a1111_images(result, notes, parameters, denoising_strength=result.request.denoising_strength)

    @router.post("/v1/images/edits", **route_docs(ok=OPENAI_IMAGES, body=edits_body(max_prompt_chars),
                                                  body_media="multipart/form-data", errors=OPENAI_ERRORS,
                                                  error_schema=OPENAI_ERROR))
    async def openai_edit(request: Request):
        try:
            form = await read_form(request, form_cap)
            req, fmt = await asyncio.to_thread(openai_edit_request, form, manager, max_prompt_chars)
            result = await run(req, request)
        except ZImageError as e:
            return _openai_error(e, request)
        return openai_images(result, fmt, request, outputs)

    return router
