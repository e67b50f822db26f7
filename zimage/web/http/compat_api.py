"""A1111-compatible (`/sdapi/v1/*`) and OpenAI-compatible (`/v1/images/generations`, `/v1/models`)
routes on the same server, manager, lock and queue. Only request mapping and response shapes live
here; validation is GenerationRequest's, the work is the PipelineManager's.

Mapping (docs/API.md): A1111's own defaults from old clients (steps 20, cfg_scale 7) become
Z-Image-Turbo's (8 steps, guidance 0); batch_size x n_iter is the number of images (at most 4);
sampler_name is accepted and reported; unknown fields are ignored, as A1111 does.
"""
from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from ...errors import InvalidRequest, ZImageError
from ...explore.prompting import dynamic_request
from ...infotext import MODEL_LABEL, SAMPLER_LABEL
from ...jobs import Backend
from ...request import MAX_IMAGES, MAX_SIZE, MIN_SIZE, GenerationRequest, as_int
from ...store.outputs import png_bytes
from .api import (API_CLIENT, MAX_BODY_BYTES, job_owner, log_refusal, read_empty_object, read_json, request_caller,
                  request_language)
from .control_api import a1111_control, a1111_unit_images
from .edit_fields import caps, edit_body_cap
from .a1111_errors import _a1111_error  # noqa: F401  (edit_api, enhance_api import it from here)
from ..json_text import SafeJSONResponse
from .models_api import submit_a1111
from ..security import basic_user
from ..hires_fields import a1111_hires
from .openapi import (A1111_ERROR, A1111_IMAGES, A1111_PNG_INFO, ANY_JSON, BODY_ERRORS, INT, NOT_FOUND, NULLABLE_STRING,
                      NUMBER, OPENAI_ERROR, OPENAI_IMAGES, RUN_ERRORS, STRING, a1111_body, obj, openai_body, route_docs)

A1111_DEFAULT_STEPS, A1111_DEFAULT_CFG = 20, 7.0
OPENAI_MODEL_ID = "z-image-turbo"
COMPAT_PREFIXES = ("/sdapi/", "/v1/", "/outputs/")
EMPTY = {"type": "object"}
PROGRESS = obj({"progress": NUMBER, "eta_relative": NUMBER, "state": obj({"job_count": INT, "sampling_step": INT,
                                                                         "sampling_steps": INT}),
                "current_image": {**NULLABLE_STRING, "description": "PNG, base64"}, "textinfo": NULLABLE_STRING})
# a 422 is answered as OpenAI's 400; 404: a LoRA the prompt names is not in the folder
OPENAI_ERRORS = (400, 404, 409, 413, 415, 429, 503, 507)
# ASCII digits, at most 5: "²".isdigit() is true but int("²") raises, and int() refuses 4301+ digits.
OPENAI_SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")
FORM_INTEGER = re.compile(r"-?[0-9]{1,9}")    # a multipart text field that is a whole number


def openai_size(size: Any, auto: tuple[int, int] | None) -> tuple[int, int] | None:
    """(width, height) from OpenAI's `size` ("1024x1024"; missing, null or "auto": `auto`), each
    side checked here so that a refusal names `size`, the field the caller sent."""
    if size is None or size == "auto":
        return auto
    match = OPENAI_SIZE.fullmatch(size) if isinstance(size, str) else None
    if match is None:
        raise InvalidRequest("size", f"must look like 1024x1024 or auto, got {str(size)[:40]!r}")
    width, height = int(match[1]), int(match[2])
    if not (MIN_SIZE <= width <= MAX_SIZE and MIN_SIZE <= height <= MAX_SIZE):
        raise InvalidRequest("size", f"each side must be {MIN_SIZE}-{MAX_SIZE} px, got {size}")
    return width, height


def openai_n(n: Any, form: bool = False) -> int:
    """OpenAI's `n`: a JSON integer, or (`form`) a multipart form's text; refused naming `n`."""
    if form:
        count = int(n) if isinstance(n, str) and FORM_INTEGER.fullmatch(n.strip()) else None
    else:
        count = as_int(n)
    if count is None:
        raise InvalidRequest("n", f"must be an integer, got {str(n)[:20]!r}")
    if not 1 <= count <= MAX_IMAGES:
        raise InvalidRequest("n", f"must be between 1 and {MAX_IMAGES}, got {count}")
    return count


# Our request's fields -> A1111's, for its refusals (the others have the same names).
A1111_NAMES = {"num_inference_steps": "steps", "guidance_scale": "cfg_scale", "strength": "denoising_strength",
               "num_images": "batch_size", "variety": "subseed_strength"}


def a1111_fields(body: dict, sized: bool = True) -> tuple[dict, dict]:
    """(our request's fields, the mapping notes) from an A1111 txt2img or img2img body. `sized`:
    width and height default to 1024 (txt2img); else they are left out (img2img: the image's size)."""
    steps = body.get("steps", A1111_DEFAULT_STEPS)
    cfg = body.get("cfg_scale", A1111_DEFAULT_CFG)
    batch, iters = as_int(body.get("batch_size", 1)), as_int(body.get("n_iter", 1))
    for name, value in (("batch_size", batch), ("n_iter", iters)):
        if value is None or value < 1:
            raise InvalidRequest(name, "must be an integer >= 1")
    negative = body.get("negative_prompt")
    data = {"prompt": body.get("prompt", ""),
            "seed": body.get("seed", -1), "num_images": batch * iters}
    if body.get("subseed_strength") is not None:     # A1111's variation strength (0-1) is our variety
        data["variety"] = body["subseed_strength"]
    if negative is not None:
        data["negative_prompt"] = negative
    if steps not in (None, A1111_DEFAULT_STEPS):       # else the model's own (model_defaults, GenerationRequest.defaulted)
        data["num_inference_steps"] = steps
    if cfg not in (None, A1111_DEFAULT_CFG):
        data["guidance_scale"] = cfg
    if sized:
        data.update(width=body.get("width", 1024), height=body.get("height", 1024))
    return data, {"sampler_name": body.get("sampler_name")}


def a1111_png_info(image: Any, max_bytes: int, max_pixels: int) -> dict:
    """A1111's png-info answer for a base64 image: {"info": the parameters text (A1111's, or a
    JPEG/WebP's EXIF comment), "items": a ComfyUI graph's JSON, "parameters": {"Prompt",
    "Negative prompt", "Steps", ...}, ComfyUI's read as the PNG Info tab reads it}."""
    from ...store.images import decode_base64
    from ...store.pnginfo import read_image_info

    if image is None or image == "":
        raise InvalidRequest("image", "is required (a base64 PNG, JPEG or WebP image)")
    found = read_image_info(decode_base64(image, "image", max_bytes), max_bytes, max_pixels, "image")
    fields = found.parameters
    parameters = {"Prompt": fields.get("prompt", ""), "Negative prompt": fields.get("negative_prompt", ""),
                  **fields.get("params", {})} if found.source != "none" else {}
    return {"info": found.raw if found.source in ("parameters", "exif") else "",
            "items": {"comfyui": found.raw} if found.source == "comfyui" else {}, "parameters": parameters}


def a1111_request(data: dict, max_prompt_chars: int, wildcards_folder: Path | None = None) -> GenerationRequest:
    """Our request from an A1111 body's mapped fields (wildcards picked, explore.prompting); a refusal
    names the field the caller sent (steps, cfg_scale, denoising_strength, batch_size), not ours."""
    try:
        if wildcards_folder is not None:
            return dynamic_request(data, wildcards_folder, max_prompt_chars)
        return GenerationRequest.from_mapping(data, max_prompt_chars)
    except InvalidRequest as e:
        theirs = A1111_NAMES.get(e.field)
        if theirs is None:
            raise
        words = e.message.removeprefix(f"{e.field}: ")
        raise InvalidRequest(theirs, f"(batch_size x n_iter) {words}" if e.field == "num_images" else words) from None


def a1111_to_request(body: dict, max_prompt_chars: int,
                     wildcards_folder: Path | None = None) -> tuple[GenerationRequest, dict]:
    """(validated request, the mapping notes) from an A1111 txt2img body."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    data, notes = a1111_fields(body)
    return a1111_request(data, max_prompt_chars, wildcards_folder), notes


def a1111_images(result, notes: dict, parameters: dict, **info_extra) -> dict:
    """A1111's images answer (txt2img and img2img): the PNGs in base64, the request echoed as
    `parameters`, and `info` as the JSON text A1111 writes, with `info_extra`'s keys in it."""
    r = result.request
    info = {"prompt": r.prompt, "negative_prompt": r.negative_prompt, "seed": r.seed,
            "all_seeds": [i.seed for i in result.images], "width": r.width, "height": r.height,
            "steps": r.num_inference_steps, "cfg_scale": r.guidance_scale, **info_extra,
            "sampler_name": notes["sampler_name"] or SAMPLER_LABEL, "sd_model_name": MODEL_LABEL,
            "infotexts": [i.infotext for i in result.images], "seconds": round(result.seconds, 3)}
    return {"images": [base64.b64encode(png_bytes(i)).decode() for i in result.images],
            "parameters": parameters, "info": json.dumps(info)}


def openai_images(result, fmt: str, request: Request, outputs: Path, **per_image) -> dict:
    """OpenAI's images answer: each image as a URL of the outputs route (`fmt` "url", when it was
    saved) or base64, with `per_image`'s keys beside it."""
    base = str(request.base_url).rstrip("/")
    data = []
    for item in result.images:
        if fmt == "url" and item.path is not None:
            data.append({"url": f"{base}/outputs/{item.path.relative_to(outputs).as_posix()}", **per_image})
        else:
            data.append({"b64_json": base64.b64encode(png_bytes(item)).decode(), **per_image})
    return {"created": int(time.time()), "data": data}


def _openai_error(err: ZImageError, request: Request) -> SafeJSONResponse:
    log_refusal(err)
    lang = request_language(request)
    status = 400 if err.http_status == 422 else err.http_status
    kind = "invalid_request_error" if status < 500 else "server_error"
    retry = getattr(err, "retry_after_s", None)       # openai's client waits this long before its retry
    headers = {"Content-Language": lang}
    if retry is not None:
        headers["Retry-After"] = str(retry)
    return SafeJSONResponse({"error": {"message": err.user_text(lang), "type": kind,
                                   "param": getattr(err, "field", None), "code": err.code}}, status_code=status,
                        headers=headers)


def _preview(manager: Backend, job) -> str | None:
    png = manager.preview_png(job)
    return base64.b64encode(png).decode() if png is not None else None


def build_compat_router(manager: Backend, max_prompt_chars: int) -> APIRouter:
    router = APIRouter(default_response_class=SafeJSONResponse)
    outputs = manager._store.root
    txt2img_cap = edit_body_cap(manager.settings.max_upload_bytes, MAX_BODY_BYTES, images=1)   # a ControlNet map
    png_info_cap = txt2img_cap

    auth_on = bool(manager.settings.api_auth_pairs)

    async def run(req: GenerationRequest, request: Request):
        client, user = request_caller(request, auth_on)
        return await asyncio.wrap_future(manager.submit(req, job_owner(client), user).future)

    def stop_callers_jobs(request: Request, current_only: bool) -> int:
        """interrupt / skip: only the caller's generations. With auth, the logged-in user's (narrowed
        to one X-Client-Id when sent); without, those of its X-Client-Id, or the API's anonymous ones."""
        client, user = request_caller(request, auth_on)
        owner = client if client is not None or user is not None else API_CLIENT
        return manager.cancel(owner=owner, user=user, current_only=current_only)

    @router.post("/sdapi/v1/txt2img", **route_docs(ok=A1111_IMAGES, body=a1111_body(max_prompt_chars),
                                                   errors=BODY_ERRORS + RUN_ERRORS, error_schema=A1111_ERROR))
    async def txt2img(request: Request):
        try:
            body = await read_json(request, max_bytes=txt2img_cap, image_keys=(a1111_unit_images,))
            req, notes = a1111_to_request(body, max_prompt_chars, manager.settings.wildcards_folder)
            req = await a1111_control(req, body, manager.settings)
            req = await asyncio.to_thread(a1111_hires, req, body, manager.settings)    # reads the upscaler folder
            result = await submit_a1111(manager, req, request, body, auth_on)
        except ZImageError as e:
            return _a1111_error(e, request)
        return a1111_images(result, notes, body)

    @router.get("/sdapi/v1/progress", **route_docs(ok=PROGRESS))
    async def progress(request: Request, skip_current_image: bool = False):
        """The running generation's progress; its preview only for its own user when logins are on
        (another user's picture is theirs), for anyone without (one person's local app)."""
        job = manager.current_generation()
        own = not auth_on or (job is not None and job.user is not None
                              and job.user == basic_user(request.headers.get("authorization", "")))
        status = manager.status()
        fraction = 0.0
        if job and job.total_steps:      # over the job's images, one pipeline call each (A1111's batch count)
            fraction = (job.images_done + job.step / job.total_steps) / max(1, job.images_total)
        eta = job.eta_s if job is not None else 0.0
        if eta is None:         # before the first timed step: the last image's time, scaled
            eta = (status.last_image_s or 0.0) * (1 - fraction)
        return {"progress": round(fraction, 4), "eta_relative": round(eta, 3),
                "state": {"skipped": bool(job and job.skipped),
                          "interrupted": bool(job and job.cancelled and not job.skipped), "job": job.kind if job else "",
                          "job_count": status.queue_length, "job_timestamp": "", "job_no": 0,
                          "sampling_step": job.step if job else 0,
                          "sampling_steps": job.total_steps if job else 0},
                "current_image": _preview(manager, job) if job is not None and own and not skip_current_image else None,
                "textinfo": job.phase if job else None}

    # No body, or an empty JSON one: webuiapi's interrupt() and skip() post nothing, with no
    # Content-Type. A body of another type is a 415, as on every POST route (a cross-site form
    # post needs no CORS preflight).
    stop_docs = route_docs(ok=EMPTY, body=EMPTY, body_required=False, errors=BODY_ERRORS + (422,),
                           error_schema=A1111_ERROR)
    checkpoint_errors = BODY_ERRORS + (422,)

    async def stop(request: Request, current_only: bool):
        try:
            await read_empty_object(request)
            stop_callers_jobs(request, current_only=current_only)
        except ZImageError as e:
            return _a1111_error(e, request)
        return {}

    @router.post("/sdapi/v1/interrupt", **stop_docs)
    async def interrupt(request: Request):
        """The caller's running and waiting generations stop (docs/API.md: whose jobs are the caller's)."""
        return await stop(request, current_only=False)

    @router.post("/sdapi/v1/skip", **stop_docs)
    async def skip(request: Request):
        """The caller's running pipeline call ends; its queued generations still run."""
        return await stop(request, current_only=True)

    @router.post("/sdapi/v1/png-info", **route_docs(ok=A1111_PNG_INFO, body=obj({"image": STRING}, ["image"]),
                                                    errors=BODY_ERRORS + (422,), error_schema=A1111_ERROR))
    async def png_info(request: Request):
        """A1111's PNG Info: the `parameters` text of an image (PNG text, or a JPEG/WebP's EXIF
        comment; ComfyUI's graph read as the PNG Info tab reads it) and its fields parsed, as
        webuiapi's png_info() reads them. The image goes through the uploads' checks."""
        try:
            body = await read_json(request, max_bytes=png_info_cap, image_keys=("image",))
            if not isinstance(body, dict):
                raise InvalidRequest("body", "must be a JSON object")
            info = await asyncio.to_thread(a1111_png_info, body.get("image"), *caps(manager))
        except ZImageError as e:
            return _a1111_error(e, request)
        return info

    @router.get("/sdapi/v1/samplers", **route_docs(ok={"type": "array", "items": obj({"name": STRING}, ["name"])}))
    async def samplers():
        return [{"name": SAMPLER_LABEL, "aliases": ["euler", "flow_match_euler"], "options": {}}]

    @router.post("/sdapi/v1/unload-checkpoint", **route_docs(ok=EMPTY, body=EMPTY, body_required=False,
                                                             errors=checkpoint_errors, error_schema=A1111_ERROR))
    async def unload_checkpoint(request: Request):
        try:
            await read_empty_object(request)
            await asyncio.wrap_future(manager.unload("none").future)
        except ZImageError as e:
            return _a1111_error(e, request)
        return {}

    @router.post("/sdapi/v1/reload-checkpoint", **route_docs(ok=EMPTY, body=EMPTY, body_required=False,
                                                             errors=checkpoint_errors + (503, 507),
                                                             error_schema=A1111_ERROR))
    async def reload_checkpoint(request: Request):
        try:
            await read_empty_object(request)
            await asyncio.wrap_future(manager.preload().future)
        except ZImageError as e:
            return _a1111_error(e, request)
        return {}

    lora_entry = obj({"name": STRING, "alias": STRING, "path": STRING, "metadata": {"type": "object"},
                      "usable": {"type": "boolean"}, "refused_reason": STRING, "autov3": STRING},
                     ["name", "alias", "path", "metadata"])

    @router.get("/sdapi/v1/loras", **route_docs(ok={"type": "array", "items": lora_entry}))
    async def loras():
        """A1111's list of the LoRA folder (what `<lora:NAME:w>` can name), refused files with their reason."""
        return await asyncio.to_thread(manager.loras)

    @router.post("/sdapi/v1/refresh-loras", **route_docs(ok=EMPTY, body=EMPTY, body_required=False,
                                                         errors=checkpoint_errors, error_schema=A1111_ERROR))
    async def refresh_loras(request: Request):
        """Read the folder again (a replaced file is hashed and read again)."""
        try:
            await read_empty_object(request)
        except ZImageError as e:
            return _a1111_error(e, request)
        await asyncio.to_thread(manager.loras, True)
        return {}

    @router.post("/v1/images/generations", **route_docs(ok=OPENAI_IMAGES, body=openai_body(max_prompt_chars),
                                                        errors=OPENAI_ERRORS, error_schema=OPENAI_ERROR))
    async def openai_generate(request: Request):
        try:
            body = await read_json(request)
            if not isinstance(body, dict):
                raise InvalidRequest("body", "must be a JSON object")
            # Only a missing or null field takes the default: "", false or [] are mistakes to report.
            width, height = openai_size(body.get("size"), auto=(1024, 1024))
            fmt = body.get("response_format")
            fmt = "b64_json" if fmt is None else fmt
            if fmt not in ("b64_json", "url"):
                raise InvalidRequest("response_format", "must be b64_json or url")
            req = GenerationRequest.from_mapping({"prompt": body.get("prompt"), "width": width, "height": height,
                                                  "num_images": openai_n(body.get("n", 1))}, max_prompt_chars)
            result = await run(req, request)
        except ZImageError as e:
            return _openai_error(e, request)
        return openai_images(result, fmt, request, outputs, revised_prompt=result.request.prompt)

    @router.get("/v1/models", **route_docs(ok=obj({"object": STRING, "data": {"type": "array", "items": obj(
        {"id": STRING, "object": STRING, "owned_by": STRING})}})))
    async def models():
        return {"object": "list", "data": [{"id": OPENAI_MODEL_ID, "object": "model", "created": 0,
                                            "owned_by": "zimage-webui"}]}

    @router.get("/outputs/{rel_path:path}", **route_docs(ok={"type": "string", "format": "binary"},
                                                         ok_media="image/png", errors=(404,), error_schema=NOT_FOUND))
    async def output_file(rel_path: str):
        """Saved images, for OpenAI's `url` answers: only files inside the outputs folder."""
        try:       # a NUL byte is a ValueError, a name over 255 bytes an OSError (both were 500s)
            target = (outputs / rel_path).resolve()
            found = target.is_relative_to(outputs.resolve()) and target.is_file() and target.suffix.lower() == ".png"
        except (OSError, ValueError):
            found = False
        if not found:
            return SafeJSONResponse({"error": {"message": "not found"}}, status_code=404)
        return FileResponse(target, media_type="image/png")

    return router
