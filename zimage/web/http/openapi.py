"""The OpenAPI description of our own HTTP routes (not Gradio's): what each body may hold and each
answer looks like, errors included.

The bodies are parsed by hand (api.py, compat_api.py); these schemas only describe them, and are
built from the same limits GenerationRequest checks, so a change there shows up here. Nothing
serves the schema (the app keeps `openapi_url=None`): `python -m zimage openapi` prints it, and
tests/test_fuzz_schema.py fuzzes the running server from it with schemathesis.
"""
from __future__ import annotations

from typing import Any

from ...model_defaults import TURBO_STEPS
from ...request import (INPAINT_FILLS, MAX_GUIDANCE, MAX_IMAGES, MAX_MASK_BLUR, MAX_PADDING, MAX_SEED, MAX_SIZE,
                       MAX_STEPS, MIN_SIZE, MIN_STEPS, MODES, RESIZE_MODES, SIZE_MULTIPLE)

JSON_MEDIA = "application/json"
ANY_JSON: dict = {"description": "any JSON value"}


def _pattern_class(chars: str) -> str:
    return "".join(f"\\u{ord(c):04x}" for c in chars)


# Exactly the characters str.strip() removes, spelled out: regex engines disagree on what `\s` is.
_SPACE = _pattern_class("".join(chr(c) for c in range(0x3001) if chr(c).isspace()))
NO_NUL = "^[^\\u0000]*$"
NOT_BLANK = f"^[^\\u0000]*[^\\u0000{_SPACE}][^\\u0000]*$"     # not empty once stripped, no NUL


def text(max_chars: int, *, blank_ok: bool, nullable: bool = False) -> dict:
    schema = {"type": ["string", "null"] if nullable else "string", "maxLength": max_chars,
              "pattern": NO_NUL if blank_ok else NOT_BLANK}
    if not blank_ok:
        schema["minLength"] = 1
    return schema


def integer(lo: int, hi: int, default: int | None = None, **extra) -> dict:
    schema = {"type": "integer", "minimum": lo, "maximum": hi, **extra}
    if default is not None:
        schema["default"] = default
    return schema


SIZE = integer(MIN_SIZE, MAX_SIZE, 1024, multipleOf=SIZE_MULTIPLE)
SEED = integer(-1, MAX_SEED, -1, description="-1 = random")
GUIDANCE = {"type": "number", "minimum": 0, "maximum": MAX_GUIDANCE, "default": 0.0}
IMAGE_B64 = {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/*",
             "description": "a PNG, JPEG or WebP image, base64 (a data:image/...;base64, prefix allowed)"}
STRENGTH = {"type": "number", "minimum": 0, "maximum": 1, "default": 0.75}
# The edit fields our /generate and A1111's img2img share (GenerationRequest's checks).
EDIT_COMMON = {
    "mask_blur": integer(0, MAX_MASK_BLUR, 4),
    "inpainting_fill": {"enum": list(INPAINT_FILLS), "default": 1,
                        "description": "0 fill, 1 original, 2 latent noise, 3 latent nothing"},
    "inpaint_full_res": {"type": "boolean", "default": False, "description": "inpaint only the masked area"},
    "inpaint_full_res_padding": integer(0, MAX_PADDING, 32),
    "resize_mode": {"enum": list(RESIZE_MODES), "default": 0,
                    "description": "0 just resize, 1 crop and resize, 2 resize and fill"},
}


CONTROL_UNIT = {"type": "object", "additionalProperties": False, "required": ["image"],
                "description": "ControlNet (web/http/control_api.py): a control image and how strongly it steers",
                "properties": {
                    "image": {"type": "string", "description": "PNG, JPEG or WebP, base64 (a data: URL too)"},
                    "module": {"enum": ["canny", "none"], "default": "none",
                               "description": "canny: edges computed here; none: the image is the map"},
                    "model": {**ANY_JSON, "description": "accepted; the server's --controlnet is used"},
                    "weight": {"type": "number", "minimum": 0, "maximum": 2, "default": 1},
                    "guidance_start": {"type": "number", "minimum": 0, "maximum": 1, "default": 0},
                    "guidance_end": {"type": "number", "minimum": 0, "maximum": 1, "default": 1}}}


# 0 = off, else a side in px (64-4096)
RESIZE_PX = {"type": "integer", "minimum": 0, "maximum": 4096, "default": 0, "not": {"minimum": 1, "maximum": 63}}
# /generate's hires fix: upscale (a name from /sdapi/v1/upscalers), then refine at strength
HIRES = {"type": ["object", "null"], "additionalProperties": False, "properties": {
    "scale": {"type": "number", "minimum": 1, "maximum": 4, "default": 2},
    "upscaler": {"type": "string", "default": "Lanczos"},
    "steps": {"type": "integer", "minimum": 0, "maximum": 50, "default": 0, "description": "0: the first pass's"},
    "strength": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.3},
    "resize_x": RESIZE_PX, "resize_y": RESIZE_PX}}


def generate_body(max_prompt_chars: int) -> dict:
    """POST /generate: GenerationRequest's fields; unknown fields are refused."""
    return {"type": "object", "additionalProperties": False, "required": ["prompt"], "properties": {
        "prompt": text(max_prompt_chars, blank_ok=False),
        "negative_prompt": text(max_prompt_chars, blank_ok=True, nullable=True),
        "width": SIZE, "height": SIZE,
        "num_inference_steps": integer(MIN_STEPS, MAX_STEPS, TURBO_STEPS),
        "guidance_scale": GUIDANCE, "seed": SEED,
        # the base model's CFG options (diffusers' ZImagePipeline); no effect at guidance 0
        "cfg_normalization": {"type": "boolean", "default": False},
        "cfg_truncation": {"type": "number", "minimum": 0, "maximum": 1, "default": 1},
        "num_images": integer(1, MAX_IMAGES, 1),
        "variety": {"type": ["number", "null"], "minimum": 0, "maximum": 1, "default": 0,
                    "description": "seeded noise on the prompt embeddings' first steps: more difference between seeds"},
        "original_prompt": text(max_prompt_chars, blank_ok=True, nullable=True),
        "batch_count": integer(1, 100, 1),     # explore.batches.MAX_BATCH_COUNT: batches in turn, seeds following on
        "control": CONTROL_UNIT,
        "hires": HIRES,
        # edits: an image makes it img2img, with a mask inpaint; outpaint extends the canvas
        "image": IMAGE_B64, "mask": {**IMAGE_B64, "description": "white = change (an alpha channel: transparent = change)"},
        "mode": {"enum": list(MODES)}, "strength": STRENGTH,
        "outpaint": {"type": "object", "additionalProperties": False, "properties": {
            side: integer(0, 1024) for side in ("left", "right", "top", "bottom")}},
        **EDIT_COMMON,
    }}


def img2img_body(max_prompt_chars: int) -> dict:
    """POST /sdapi/v1/img2img: txt2img's fields, one init image, an optional mask (inpaint)."""
    body = a1111_body(max_prompt_chars)
    body["required"] = ["init_images"]
    body["properties"].update({
        "prompt": text(max_prompt_chars, blank_ok=False),
        "init_images": {"type": "array", "items": IMAGE_B64, "minItems": 1, "maxItems": 1},
        "mask": {**IMAGE_B64, "type": ["string", "null"], "description": "white = change; null or \"\": img2img"},
        "denoising_strength": STRENGTH, "inpainting_mask_invert": {"enum": [0, 1], "default": 0},
        **EDIT_COMMON,
    })
    body["required"] = ["init_images", "prompt"]
    return body


def edits_body(max_prompt_chars: int) -> dict:
    """POST /v1/images/edits: OpenAI's multipart form."""
    binary = {"type": "string", "format": "binary"}
    return {"type": "object", "required": ["image", "prompt"], "properties": {
        "image": {**binary, "description": "PNG, JPEG or WebP"},
        "mask": {**binary, "description": "PNG with alpha: the transparent pixels are edited"},
        "prompt": text(max_prompt_chars, blank_ok=False), "n": integer(1, MAX_IMAGES, 1),
        "size": {"type": "string", "description": "WIDTHxHEIGHT or auto (the image's size)"},
        "response_format": {"enum": ["b64_json", "url"], "default": "b64_json"},
        "strength": {**STRENGTH, "description": "ours: with no mask, how much of the image changes"},
        "model": ANY_JSON,
    }}


def a1111_body(max_prompt_chars: int) -> dict:
    """POST /sdapi/v1/txt2img: A1111's fields we use; others are accepted and ignored, as A1111 does.
    steps 20 and cfg_scale 7 (A1111's defaults) mean Z-Image-Turbo's 8 and 0."""
    return {"type": "object", "required": ["prompt"], "properties": {
        "prompt": text(max_prompt_chars, blank_ok=False),
        "negative_prompt": text(max_prompt_chars, blank_ok=True, nullable=True),
        "width": SIZE, "height": SIZE,
        "steps": {**integer(MIN_STEPS, MAX_STEPS, 20), "type": ["integer", "null"]},
        "cfg_scale": {**GUIDANCE, "type": ["number", "null"], "default": 7.0},
        "seed": SEED,
        "batch_size": integer(1, MAX_IMAGES, 1, description=f"batch_size x n_iter <= {MAX_IMAGES}"),
        "n_iter": integer(1, MAX_IMAGES, 1, description=f"batch_size x n_iter <= {MAX_IMAGES}"),
        "sampler_name": {**ANY_JSON, "description": "accepted and reported back; the sampler is fixed"},
        "enable_hr": {"type": "boolean", "default": False},
        "hr_scale": {"type": ["number", "null"], "minimum": 1, "maximum": 4, "default": 2},
        "hr_upscaler": {"type": ["string", "null"], "description": "a name from /sdapi/v1/upscalers"},
        "hr_second_pass_steps": {"type": ["integer", "null"], "minimum": 0, "maximum": 50, "default": 0},
        "denoising_strength": {"type": ["number", "null"], "minimum": 0, "maximum": 1, "default": 0.3},
        "hr_resize_x": {**RESIZE_PX, "type": ["integer", "null"]},
        "hr_resize_y": {**RESIZE_PX, "type": ["integer", "null"]},
        "alwayson_scripts": {"type": "object", "description": "ControlNet: {\"controlnet\": {\"args\": [unit]}}, the "
                             "extension's shape (input_image or image, module canny or none, weight, "
                             "guidance_start, guidance_end); one enabled unit"},
    }}


def openai_body(max_prompt_chars: int) -> dict:
    """POST /v1/images/generations: OpenAI's fields we use; others are accepted and ignored."""
    return {"type": "object", "required": ["prompt"], "properties": {
        "prompt": text(max_prompt_chars, blank_ok=False),
        "size": {"type": ["string", "null"], "pattern": "^([0-9]{1,5}x[0-9]{1,5}|auto)$", "default": "1024x1024",
                 "description": f"WIDTHxHEIGHT, each {MIN_SIZE}-{MAX_SIZE} and a multiple of {SIZE_MULTIPLE}; "
                                "auto: 1024x1024"},
        "n": integer(1, MAX_IMAGES, 1),
        "response_format": {"enum": ["b64_json", "url", None], "default": "b64_json"},
        "model": ANY_JSON,
    }}


def obj(properties: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": properties, "required": required or list(properties)}


STRING, NUMBER, INT, BOOL = {"type": "string"}, {"type": "number"}, {"type": "integer"}, {"type": "boolean"}
NULLABLE_NUMBER, NULLABLE_STRING = {"type": ["number", "null"]}, {"type": ["string", "null"]}

HEALTH = obj({
    "status": {"enum": ["healthy", "loading", "unloaded", "error"]}, "timestamp": STRING, "load_count": INT,
    "server_id": {**STRING, "description": "new at every start of the server"},
    "state": {"enum": ["unloaded", "downloading", "loading", "on_cpu", "on_gpu", "offloaded", "error"]},
    "model": STRING, "stage": NULLABLE_STRING, "progress": NUMBER, "bytes_done": INT, "bytes_total": INT,
    "current_file": STRING, "speed_bps": NUMBER, "eta_s": NULLABLE_NUMBER, "device": NULLABLE_STRING,
    "low_vram": BOOL, "message": STRING, "hint": STRING, "busy": BOOL, "queue_length": INT,
    "last_image_s": NULLABLE_NUMBER, "note": STRING, "plan": STRING,
    "last_peak_vram_bytes": {"type": ["integer", "null"]}, "oom_count": INT,
})
GENERATED = obj({
    "images": {"type": "array", "items": STRING, "description": "PNG, base64"}, "seed": INT,
    "seeds": {"type": "array", "items": INT}, "width": INT, "height": INT, "num_inference_steps": INT,
    "guidance_scale": NUMBER, "seconds": NUMBER, "total_seconds": NUMBER,
    "files": {"type": "array", "items": STRING}, "info": STRING,
    "warning": {**STRING, "description": "set when the image could not be saved"},
}, required=["images", "seed", "seeds", "width", "height", "files", "info"])
A1111_IMAGES = obj({"images": {"type": "array", "items": STRING}, "parameters": {"type": "object"},
                    "info": {**STRING, "description": "JSON text"}})
OPENAI_IMAGES = obj({"created": INT, "data": {"type": "array", "items": {
    "type": "object", "properties": {"b64_json": STRING, "url": STRING, "revised_prompt": STRING}}}})

ERROR = obj({"error": obj({"code": STRING, "message": STRING, "hint": STRING, "field": STRING},
                          required=["code", "message"])})
A1111_ERROR = obj({"error": STRING, "detail": STRING, "errors": STRING})
OPENAI_ERROR = obj({"error": obj({"message": STRING, "type": STRING, "param": NULLABLE_STRING, "code": STRING},
                                 required=["message", "type"])})
A1111_PNG_INFO = obj({"info": STRING, "items": {"type": "object"}, "parameters": {"type": "object"}})
# /outputs/{rel_path}: a name with a line break does not match the route, so the page's 404 answers it.
NOT_FOUND = {"anyOf": [obj({"error": obj({"message": STRING})}), obj({"detail": STRING})]}

GUARD_ERRORS = (400, 401, 403)        # security.GuardMiddleware, in front of every route (400: a malformed Host)
BODY_ERRORS = (400, 413, 415)         # api.read_json
RUN_ERRORS = (404, 409, 422, 429, 503, 507)     # 404: a LoRA the prompt names is not in the folder
REASONS = {200: "OK", 202: "Accepted: the load runs on", 400: "The body is not JSON, or a malformed Host header",
           401: "Log in (--auth / --api-auth)", 403: "Foreign Host or Origin", 404: "Not found",
           409: "Stopped or in use", 413: "Body too large", 415: "Not sent as JSON", 422: "A field is wrong",
           429: "Queue full (Retry-After)", 503: "The model is unavailable or the server is stopping",
           507: "Out of memory or disk"}


def _answer(status: int, schema: dict, media: str = JSON_MEDIA) -> dict:
    answer = {"description": REASONS.get(status, ""), "content": {media: {"schema": schema}}}
    if status == 429:
        answer["headers"] = {"Retry-After": {"schema": INT, "description": "seconds"}}
    return answer


def route_docs(*, ok: dict | None = None, body: dict | None = None, body_required: bool = True,
               errors: tuple[int, ...] = (), error_schema: dict = ERROR, also_ok: tuple[int, ...] = (),
               ok_media: str = JSON_MEDIA, body_media: str = JSON_MEDIA) -> dict[str, Any]:
    """Keyword arguments for a route decorator: `openapi_extra` (the hand-parsed body) and `responses`."""
    responses = {status: _answer(status, ok or ANY_JSON, ok_media) for status in (200, *also_ok)}
    responses.update({status: _answer(status, error_schema) for status in errors})
    for status in GUARD_ERRORS:       # the guard's answer, or the route's own where both give this status
        own = responses.get(status, {}).get("content", {}).get(JSON_MEDIA, {}).get("schema")
        responses[status] = _answer(status, ERROR if own in (None, ERROR) else {"anyOf": [own, ERROR]})
    docs: dict[str, Any] = {"responses": responses}
    if body is not None:
        docs["openapi_extra"] = {"requestBody": {"required": body_required,
                                                 "content": {body_media: {"schema": body}}}}
    return docs


def openapi_schema(routers: list, title: str = "zimage-webui API", version: str = "1") -> dict:
    """The OpenAPI 3.1 document of our routers (server.create_app keeps them in app.state.api_routers)."""
    from fastapi.openapi.utils import get_openapi

    return get_openapi(title=title, version=version, routes=[route for router in routers for route in router.routes],
                       description="Routes beside the Gradio page: our own, A1111's and OpenAI's (docs/API.md).")
