"""HTTP routes beside the page: validate, call the manager, shape JSON. Nothing else.

Keeps the seed article's shapes: `GET /health`, `POST /generate` with
`{prompt, width, height, num_inference_steps, seed}`, so its curl warm-up works unchanged.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import json
import logging
import re
import secrets
import time
from datetime import datetime, timezone
from typing import Any, Callable

from fastapi import APIRouter, Request

from ...errors import BadRequestBody, BodyTooLarge, InvalidRequest, UnsupportedMediaType, ZImageError
from ...i18n import language_of
from ...jobs import UNLOAD_TARGETS, Backend
from ...explore.batches import batch_count_of, batch_requests, first_seed, run_batches
from ...explore.prompting import dynamic_request
from ...request import GenerationRequest
from ...store.outputs import png_bytes
from .control_api import with_control
from .edit_fields import edit_body_cap, image_fields
from ..hires_fields import with_hires
from .openapi import ANY_JSON, BODY_ERRORS, GENERATED, HEALTH, RUN_ERRORS, generate_body, route_docs
from ..json_text import SafeJSONResponse, decode_json, refuse_unwritable
from ..model_choice import model_choice
from ..security import basic_user

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024      # a 4000-character prompt is ~16 KB of JSON even in 4-byte UTF-8
CLIENT_ID_HEADER = "x-client-id"
MAX_CLIENT_ID_CHARS = 128
CLIENT_ID = re.compile(r"[\x21-\x7e]{1,%d}" % MAX_CLIENT_ID_CHARS)
# The owner of API generations sent without X-Client-Id. The page's jobs always carry a browser
# session id, so an anonymous /sdapi/v1/interrupt never reaches a browser tab's images.
API_CLIENT = "api"
API_PATHS = ("/health", "/generate", "/preload", "/unload", "/grid")
MCP_PATH = "/gradio_api/mcp"          # Gradio's mount point (gradio.routes.App.setup_mcp_server)


def log_refusal(err: ZImageError) -> None:
    """One line for a refused request (the field is in the message); a server error keeps the
    traceback its raiser logged."""
    if err.http_status < 500:
        log.info("request refused (%d %s): %s", err.http_status, err.code, err.message[:300])


def request_language(request) -> str:
    """"zh" or "en": what the request's Accept-Language prefers (error messages; codes stay English)."""
    return language_of(request.headers.get("accept-language"))


def error_response(err: ZImageError, lang: str = "en") -> SafeJSONResponse:
    log_refusal(err)
    headers = {"Content-Language": lang}
    retry = getattr(err, "retry_after_s", None)
    if retry is not None:
        headers["Retry-After"] = str(retry)
    return SafeJSONResponse({"error": err.to_dict(lang)}, status_code=err.http_status, headers=headers)


async def read_json(request: Request, required: bool = True, max_bytes: int = MAX_BODY_BYTES,
                    image_keys: tuple[str | Callable[[Any], list[str]], ...] = ()):
    """The body as JSON, refusing other content types (a cross-site form post needs no preflight).
    Routes that carry images pass `max_bytes` (edit_fields.edit_body_cap) and the fields that hold
    them (a dotted key, or a function giving the body's image strings): the rest of the body still
    has MAX_BODY_BYTES."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            if max_bytes == MAX_BODY_BYTES:
                raise BodyTooLarge(f"The request body is larger than {MAX_BODY_BYTES // 1024} KB.",
                                   "Shorten the prompt.")
            raise BodyTooLarge(f"The request body is larger than {max_bytes / 2**20:.1f} MB.",
                               "Send a smaller image (the upload cap is --max-upload-bytes).")
    if not body and not required:
        return {}
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {ctype or 'none'}.",
                                   "Send the body as JSON with -H 'Content-Type: application/json'.")
    data = decode_json(bytes(body))
    refuse_unwritable(data)
    if len(body) > MAX_BODY_BYTES:
        carried = sum(len(v) for k in image_keys for v in (k(data) if callable(k) else _texts(_at(data, k))))
        if len(body) - carried > MAX_BODY_BYTES:
            raise BodyTooLarge(f"The request body is larger than {MAX_BODY_BYTES // 1024} KB besides its images.",
                               "Shorten the prompt.")
    return data


async def read_empty_object(request: Request) -> None:
    """The body of a route that takes no fields: nothing, or a JSON object (ignored)."""
    if not isinstance(await read_json(request, required=False), dict):
        raise InvalidRequest("body", "must be a JSON object (or empty)")


def _at(data, dotted: str):
    """data["a"]["b"] for "a.b", None where a level is missing or not an object."""
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _texts(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def request_caller(request: Request, auth_on: bool) -> tuple[str | None, str | None]:
    """(client id, login user) of an API request: the X-Client-Id header (None when absent) and,
    when auth is on, the HTTP Basic user name (GuardMiddleware has checked the password already;
    without auth an Authorization header proves nothing and is ignored)."""
    client = request.headers.get(CLIENT_ID_HEADER)
    if client is not None and not CLIENT_ID.fullmatch(client):
        raise InvalidRequest("X-Client-Id", f"must be 1-{MAX_CLIENT_ID_CHARS} visible ASCII characters")
    user = basic_user(request.headers.get("authorization", "")) if auth_on else None
    return client, user


def job_owner(client: str | None) -> str:
    """The owner an API generation is recorded under: its X-Client-Id, else API_CLIENT (webuiapi
    sends no id). Never None, which PipelineManager.cancel reads as "everyone"."""
    return client if client is not None else API_CLIENT


def rebuilt(data: dict, control, folder, max_prompt_chars: int, seed: int) -> GenerationRequest:
    """A later batch's request: the body again with its seed (its wildcards picked with it)."""
    return dataclasses.replace(dynamic_request(dict(data, seed=seed), folder, max_prompt_chars), control=control)


def build_router(manager: Backend, max_prompt_chars: int) -> APIRouter:
    router = APIRouter(default_response_class=SafeJSONResponse)
    auth_on = bool(manager.settings.api_auth_pairs)
    generate_cap = edit_body_cap(manager.settings.max_upload_bytes, MAX_BODY_BYTES, images=3)   # image, mask, control

    server_id = secrets.token_hex(8)        # new at every start: a page that sees it change reloads (ui_offline)

    def health_body() -> dict:
        status = manager.status()
        body = {"status": status.health, "timestamp": datetime.now(timezone.utc).isoformat(),
                "load_count": manager.load_count, "server_id": server_id}
        body.update(status.to_dict())
        return body

    @router.get("/health", **route_docs(ok=HEALTH))
    async def health():
        return health_body()

    @router.post("/generate", **route_docs(ok=GENERATED, body=generate_body(max_prompt_chars),
                                           errors=BODY_ERRORS + RUN_ERRORS))
    async def generate(request: Request):
        try:
            data = await read_json(request, max_bytes=generate_cap, image_keys=("image", "mask", "control.image"))
            control = data.pop("control", None) if isinstance(data, dict) else None
            model = data.pop("model", None) if isinstance(data, dict) else None   # a listed name: switches first
            hires = data.pop("hires", None) if isinstance(data, dict) else None
            if isinstance(data, dict) and ({"image", "mask", "outpaint", "init_image"} & set(data)):
                data = await asyncio.to_thread(image_fields, data, manager)     # decoding takes ~0.1 s a 2 MP image
            count = batch_count_of(data.pop("batch_count", 1)) if isinstance(data, dict) else 1
            data = first_seed(data) if count > 1 else data
            req = dynamic_request(data, manager.settings.wildcards_folder, max_prompt_chars)
            req = await with_control(req, control, manager.settings)
            req = await asyncio.to_thread(model_choice(manager).prepare, req, model)
            req = await asyncio.to_thread(with_hires, req, hires, manager.settings)    # reads the upscaler folder
            client, user = request_caller(request, auth_on)
            started = time.perf_counter()
            if count == 1:
                result = await asyncio.wrap_future(manager.submit(req, job_owner(client), user).future)
            else:       # batch count: one queued job per batch, the seeds following on
                rebuild = functools.partial(rebuilt, data, req.control, manager.settings.wildcards_folder,
                                            max_prompt_chars)
                result = await asyncio.to_thread(run_batches, manager, batch_requests(req, count, rebuild), count,
                                                 job_owner(client), user)
        except ZImageError as e:
            return error_response(e, request_language(request))
        r = result.request
        body = {
            "images": [base64.b64encode(png_bytes(item)).decode("ascii") for item in result.images],
            "seed": r.seed, "seeds": [item.seed for item in result.images],
            "width": r.width, "height": r.height, "num_inference_steps": r.num_inference_steps,
            "guidance_scale": r.guidance_scale, "seconds": round(result.seconds, 3),
            "seconds_per_image": round(result.seconds_per_image, 3), "peak_vram_bytes": result.peak_vram_bytes,
            "total_seconds": round(time.perf_counter() - started, 3),
            "files": [str(item.path) for item in result.images if item.path is not None],
            "info": result.images[0].infotext if result.images else "",
        }
        if result.warning:
            body["warning"] = result.warning
        return body

    @router.post("/preload", **route_docs(
        ok=HEALTH, also_ok=(202,), errors=BODY_ERRORS + (503, 507), body_required=False,
        body={**ANY_JSON, "properties": {"wait": {**ANY_JSON, "description": "truthy: answer once loaded (200)"}}}))
    async def preload(request: Request):
        try:
            data = await read_json(request, required=False)
            wait = bool(data.get("wait", False)) if isinstance(data, dict) else False
            job = manager.preload()
            if wait:
                await asyncio.wrap_future(job.future)
        except ZImageError as e:
            return error_response(e, request_language(request))
        return SafeJSONResponse(health_body(), status_code=200 if wait else 202)

    @router.post("/unload", **route_docs(
        ok=HEALTH, errors=BODY_ERRORS + (422,), body_required=False,
        body={"type": "object", "properties": {"to": {"enum": ["cpu", "none"], "default": "none"}}}))
    async def unload(request: Request):
        try:
            data = await read_json(request, required=False)
            to = data.get("to", "none") if isinstance(data, dict) else None
            if to not in UNLOAD_TARGETS:
                raise InvalidRequest("to", "must be \"cpu\" (keep in RAM) or \"none\"")
            await asyncio.wrap_future(manager.unload(to).future)
        except ZImageError as e:
            return error_response(e, request_language(request))
        return health_body()

    return router
