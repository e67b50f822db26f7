"""A1111's model routes over the models found (web/model_choice.py): `GET /sdapi/v1/sd-models`
(title, model_name, hash, sha256, filename, config), `POST /sdapi/v1/refresh-checkpoints`,
`GET /sdapi/v1/options` naming the current one in `sd_model_checkpoint`, and `POST
/sdapi/v1/options` with `sd_model_checkpoint` switching (answered once loaded, as A1111 does).
`submit_a1111` runs a txt2img/img2img request with its `override_settings` model, put back
afterwards unless `override_settings_restore_afterwards` is false (A1111's default: true).
"""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from ...errors import InvalidRequest, ZImageError
from ...jobs import Backend
from ...request import GenerationRequest
from .a1111_errors import _a1111_error
from .api import job_owner, read_empty_object, read_json, request_caller
from ..json_text import SafeJSONResponse
from ..model_choice import model_choice
from .openapi import A1111_ERROR, BODY_ERRORS, NOT_BLANK, STRING, obj, route_docs

EMPTY = {"type": "object"}

CHECKPOINT = "sd_model_checkpoint"
# POST /sdapi/v1/options: only the checkpoint changes anything; A1111's other options are accepted and ignored.
OPTIONS_BODY = {"type": ["object", "null"], "properties": {
    CHECKPOINT: {"type": "string", "pattern": NOT_BLANK, "description": "a title or name from GET /sdapi/v1/sd-models"}}}


async def switch_and_wait(manager: Backend, wanted, field: str) -> None:
    job = await asyncio.to_thread(model_choice(manager).switch, wanted, field)
    if job is not None:
        await asyncio.wrap_future(job.future)


async def submit_a1111(manager: Backend, req: GenerationRequest, request: Request, body, auth_on: bool):
    """Submit an A1111 request: its override_settings' model first (switching, queued behind
    running work), the model's defaults for what it left out, then the old model back when asked."""
    choice = model_choice(manager)
    overrides = body.get("override_settings") if isinstance(body, dict) else None
    if overrides is not None and not isinstance(overrides, dict):
        raise InvalidRequest("override_settings", "must be an object")
    wanted = (overrides or {}).get(CHECKPOINT)
    before = await asyncio.to_thread(choice.current) if wanted is not None else None
    field = f"override_settings.{CHECKPOINT}"
    req = await asyncio.to_thread(choice.prepare, req, wanted, field)
    client, user = request_caller(request, auth_on)
    job = manager.submit(req, job_owner(client), user)
    if wanted is not None and before is not None and body.get("override_settings_restore_afterwards", True) is not False:
        await asyncio.to_thread(choice.switch, before.name, field)
    return await asyncio.wrap_future(job.future)


def build_models_router(manager: Backend) -> APIRouter:
    router = APIRouter(default_response_class=SafeJSONResponse)
    choice = model_choice(manager)

    @router.get("/sdapi/v1/sd-models", **route_docs(ok={"type": "array", "items": obj(
        {"title": STRING, "model_name": STRING, "filename": STRING}, ["title", "model_name"])}))
    async def sd_models():
        return [m.a1111() for m in await asyncio.to_thread(choice.models)]

    @router.post("/sdapi/v1/refresh-checkpoints", **route_docs(ok=EMPTY, body=EMPTY, body_required=False,
                                                               errors=BODY_ERRORS + (422,), error_schema=A1111_ERROR))
    async def refresh_checkpoints(request: Request):
        """Read the model roots again; the body, if any, is an object (ignored), as the other A1111 actions'."""
        try:
            await read_empty_object(request)
        except ZImageError as e:
            return _a1111_error(e, request)
        await asyncio.to_thread(choice.models, True)
        return {}

    @router.get("/sdapi/v1/options", **route_docs(ok=obj({CHECKPOINT: STRING}, [CHECKPOINT])))
    async def options():
        current = await asyncio.to_thread(choice.current)
        return {CHECKPOINT: current.title if current else manager.settings.model,
                "sd_checkpoint_hash": current.sha256 if current else None,
                "samples_format": "png", "outdir_txt2img_samples": str(manager._store.root)}

    @router.post("/sdapi/v1/options", **route_docs(ok=EMPTY, body=OPTIONS_BODY, body_required=False,
                                                   errors=BODY_ERRORS + (422,), error_schema=A1111_ERROR))
    async def set_options(request: Request):
        """Only sd_model_checkpoint changes anything; the other options are accepted and ignored."""
        try:
            body = await read_json(request, required=False)
            if body is not None and not isinstance(body, dict):
                raise InvalidRequest("body", "must be a JSON object")
            if body and CHECKPOINT in body:
                await switch_and_wait(manager, body[CHECKPOINT], CHECKPOINT)
        except ZImageError as e:
            return _a1111_error(e, request)
        return {}

    return router
