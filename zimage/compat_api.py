"""A1111-compatible (`/sdapi/v1/*`) and OpenAI-compatible (`/v1/images/generations`, `/v1/models`)
routes on the same server, manager, lock and queue. Only request mapping and response shapes live
here; validation is GenerationRequest's, the work is the PipelineManager's.

Mapping (docs/API.md): A1111's own defaults from old clients (steps 20, cfg_scale 7) become
Z-Image-Turbo's (9 steps, guidance 0); batch_size x n_iter is the number of images (at most 4);
sampler_name is accepted and reported; unknown fields are ignored, as A1111 does.
"""
from __future__ import annotations

import asyncio
import base64
import json
import time

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse

from .api import read_json
from .backend import Backend
from .errors import InvalidRequest, ZImageError
from .generate import MODEL_LABEL, SAMPLER_LABEL, GenerationRequest, png_bytes

A1111_DEFAULT_STEPS, A1111_DEFAULT_CFG = 20, 7.0
OPENAI_MODEL_ID = "z-image-turbo"
COMPAT_PREFIXES = ("/sdapi/", "/v1/", "/outputs/")


def a1111_to_request(body: dict, max_prompt_chars: int) -> tuple[GenerationRequest, dict]:
    """(validated request, the mapping notes) from an A1111 txt2img body."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    steps = body.get("steps", A1111_DEFAULT_STEPS)
    cfg = body.get("cfg_scale", A1111_DEFAULT_CFG)
    batch, iters = body.get("batch_size", 1), body.get("n_iter", 1)
    for name, value in (("batch_size", batch), ("n_iter", iters)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequest(name, "must be an integer >= 1")
    data = {"prompt": body.get("prompt", ""), "negative_prompt": body.get("negative_prompt") or "",
            "width": body.get("width", 1024), "height": body.get("height", 1024),
            "num_inference_steps": 9 if steps in (None, A1111_DEFAULT_STEPS) else steps,
            "guidance_scale": 0.0 if cfg in (None, A1111_DEFAULT_CFG) else cfg,
            "seed": body.get("seed", -1), "num_images": batch * iters}
    return GenerationRequest.from_mapping(data, max_prompt_chars), {"sampler_name": body.get("sampler_name")}


def _a1111_error(err: ZImageError) -> JSONResponse:
    # A1111's FastAPI answers 422 with "detail" for bad input; its clients print the body.
    headers = {"Retry-After": str(err.retry_after_s)} if hasattr(err, "retry_after_s") else {}
    return JSONResponse({"error": err.code, "detail": err.user_text(), "errors": err.message},
                        status_code=err.http_status, headers=headers)


def _openai_error(err: ZImageError) -> JSONResponse:
    status = 400 if err.http_status == 422 else err.http_status
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": err.user_text(), "type": kind,
                                   "param": getattr(err, "field", None), "code": err.code}}, status_code=status)


def _preview(job) -> str | None:
    from .generate import latent_preview_png

    latent = job.latest_latent
    return base64.b64encode(latent_preview_png(latent)).decode() if latent is not None else None


def build_compat_router(manager: Backend, max_prompt_chars: int) -> APIRouter:
    router = APIRouter()
    outputs = manager._store.root

    async def run(req: GenerationRequest):
        return await asyncio.wrap_future(manager.submit(req).future)

    @router.post("/sdapi/v1/txt2img")
    async def txt2img(request: Request):
        try:
            body = await read_json(request)
            req, notes = a1111_to_request(body, max_prompt_chars)
            result = await run(req)
        except ZImageError as e:
            return _a1111_error(e)
        r = result.request
        info = {"prompt": r.prompt, "negative_prompt": r.negative_prompt, "seed": r.seed,
                "all_seeds": [i.seed for i in result.images], "width": r.width, "height": r.height,
                "steps": r.num_inference_steps, "cfg_scale": r.guidance_scale,
                "sampler_name": notes["sampler_name"] or SAMPLER_LABEL, "sd_model_name": MODEL_LABEL,
                "infotexts": [i.infotext for i in result.images], "seconds": round(result.seconds, 3)}
        return {"images": [base64.b64encode(png_bytes(i)).decode() for i in result.images],
                "parameters": body, "info": json.dumps(info)}

    @router.get("/sdapi/v1/progress")
    async def progress(skip_current_image: bool = False):
        job = manager.current_generation()
        status = manager.status()
        fraction = (job.step / job.total_steps) if job and job.total_steps else 0.0
        eta = (status.last_image_s or 0.0) * (1 - fraction) if job else 0.0
        return {"progress": round(fraction, 4), "eta_relative": round(eta, 3),
                "state": {"skipped": False, "interrupted": bool(job and job.cancelled), "job": job.kind if job else "",
                          "job_count": status.queue_length, "job_timestamp": "", "job_no": 0,
                          "sampling_step": job.step if job else 0,
                          "sampling_steps": job.total_steps if job else 0},
                "current_image": _preview(job) if job is not None and not skip_current_image else None,
                "textinfo": job.phase if job else None}

    @router.post("/sdapi/v1/interrupt")
    async def interrupt():
        manager.cancel(owner=None)
        return {}

    @router.post("/sdapi/v1/skip")
    async def skip():
        manager.cancel(owner=None)
        return {}

    @router.get("/sdapi/v1/sd-models")
    async def sd_models():
        return [{"title": MODEL_LABEL, "model_name": MODEL_LABEL, "hash": None, "sha256": None,
                 "filename": manager.settings.model, "config": None}]

    @router.get("/sdapi/v1/samplers")
    async def samplers():
        return [{"name": SAMPLER_LABEL, "aliases": ["euler", "flow_match_euler"], "options": {}}]

    @router.get("/sdapi/v1/options")
    async def options():
        return {"sd_model_checkpoint": MODEL_LABEL, "samples_format": "png", "outdir_txt2img_samples": str(outputs)}

    @router.post("/sdapi/v1/options")
    async def set_options(request: Request):
        await read_json(request, required=False)     # accepted and ignored: nothing here is switchable
        return {}

    @router.post("/sdapi/v1/unload-checkpoint")
    async def unload_checkpoint():
        await asyncio.wrap_future(manager.unload("none").future)
        return {}

    @router.post("/sdapi/v1/reload-checkpoint")
    async def reload_checkpoint():
        try:
            await asyncio.wrap_future(manager.preload().future)
        except ZImageError as e:
            return _a1111_error(e)
        return {}

    @router.post("/v1/images/generations")
    async def openai_generate(request: Request):
        try:
            body = await read_json(request)
            if not isinstance(body, dict):
                raise InvalidRequest("body", "must be a JSON object")
            size = body.get("size") or "1024x1024"
            w, sep, h = str(size).partition("x")
            if not sep or not w.isdigit() or not h.isdigit():
                raise InvalidRequest("size", f"must look like 1024x1024, got {size!r}")
            fmt = body.get("response_format") or "b64_json"
            if fmt not in ("b64_json", "url"):
                raise InvalidRequest("response_format", "must be b64_json or url")
            req = GenerationRequest.from_mapping({"prompt": body.get("prompt"), "width": int(w), "height": int(h),
                                                  "num_images": body.get("n", 1)}, max_prompt_chars)
            result = await run(req)
        except ZImageError as e:
            return _openai_error(e)
        base = str(request.base_url).rstrip("/")
        data = []
        for item in result.images:
            if fmt == "url" and item.path is not None:
                data.append({"url": f"{base}/outputs/{item.path.relative_to(outputs).as_posix()}",
                             "revised_prompt": result.request.prompt})
            else:
                data.append({"b64_json": base64.b64encode(png_bytes(item)).decode(),
                             "revised_prompt": result.request.prompt})
        return {"created": int(time.time()), "data": data}

    @router.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": OPENAI_MODEL_ID, "object": "model", "created": 0,
                                            "owned_by": "zimage-webui"}]}

    @router.get("/outputs/{rel_path:path}")
    async def output_file(rel_path: str):
        """Saved images, for OpenAI's `url` answers: only files inside the outputs folder."""
        target = (outputs / rel_path).resolve()
        if not target.is_relative_to(outputs) or not target.is_file() or target.suffix.lower() != ".png":
            return JSONResponse({"error": {"message": "not found"}}, status_code=404)
        return FileResponse(target, media_type="image/png")

    return router
