"""The kept queue's routes (kept_queue.KeptQueueBackend): `GET /queue` lists the jobs kept on disk
(waiting, running, interrupted: this run's and those left by the last one), `POST /queue/{id}/run`
submits a kept job to the backend again, `DELETE /queue/{id}` drops exactly that job. The same
login as the other API routes (launch.add_guards); with one, a caller sees and acts on its own jobs.
"""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ...errors import InvalidRequest, ZImageError
from ...kept_queue import KeptQueueBackend
from ...store.job_queue import MAX_ID, KeptJob
from .api import error_response, read_json, request_caller, request_language
from .openapi import ANY_JSON, BODY_ERRORS, INT, STRING, obj, route_docs

QUEUE_PATH = "/queue"
QUEUE_PREFIX = "/queue/"
KEPT_JOB = obj({"id": INT, "state": {"enum": ["waiting", "running", "interrupted"]}, "prompt": STRING,
                "width": INT, "height": INT, "size": STRING, "created": {"type": "number"},
                "owner": {"type": ["string", "null"]}, "mode": STRING, "num_images": INT,
                "seed": INT, "live": {"type": "boolean"}})
QUEUE_LIST = obj({"jobs": {"type": "array", "items": KEPT_JOB}})
RUN_ANSWER = obj({"job": KEPT_JOB, "files": {"type": "array", "items": STRING}})


def parse_job_id(raw: str) -> int:
    """A kept job's id from the path: ASCII digits 1..2**63-1, else InvalidRequest naming `id`."""
    if not (isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 19 and 1 <= int(raw) <= MAX_ID):
        raise InvalidRequest("id", f"must be a job id (a whole number 1-{MAX_ID}), got {raw[:40]!r}")
    return int(raw)


def job_dict(manager: KeptQueueBackend, job: KeptJob) -> dict:
    return {**job.to_dict(), "live": manager.is_live(job.id)}


def build_queue_router(manager: KeptQueueBackend) -> APIRouter:
    router = APIRouter()
    auth_on = bool(manager.settings.api_auth_pairs)

    def caller_user(request: Request) -> str | None:
        return request_caller(request, auth_on)[1] if auth_on else None

    @router.get(QUEUE_PATH, **route_docs(ok=QUEUE_LIST, errors=(422, 503)))
    async def list_queue(request: Request):
        try:
            jobs = await asyncio.to_thread(manager.kept_jobs, caller_user(request))
        except ZImageError as e:
            return error_response(e, request_language(request))
        return {"jobs": [job_dict(manager, job) for job in jobs]}

    @router.post(QUEUE_PREFIX + "{job_id}/run", **route_docs(
        ok=RUN_ANSWER, also_ok=(202,), errors=BODY_ERRORS + (404, 409, 410, 422, 429, 503, 507), body_required=False,
        body={**ANY_JSON, "properties": {"wait": {**ANY_JSON, "description": "truthy: answer once its images are saved"}}}))
    async def run_job(job_id: str, request: Request):
        try:
            kept_id = parse_job_id(job_id)
            data = await read_json(request, required=False)
            wait = bool(data.get("wait", False)) if isinstance(data, dict) else False
            user = caller_user(request)
            live = await asyncio.to_thread(manager.run_kept, kept_id, user)
            kept = await asyncio.to_thread(manager.kept.get, kept_id)
            answer = {"job": job_dict(manager, kept) if kept else {"id": kept_id}, "files": []}
            if not wait:
                return JSONResponse(answer, status_code=202)
            result = await asyncio.wrap_future(live.future)
        except ZImageError as e:
            return error_response(e, request_language(request))
        answer["job"] = {**answer["job"], "live": False}
        answer["files"] = [str(item.path) for item in result.images if item.path is not None]
        return answer

    @router.delete(QUEUE_PREFIX + "{job_id}", **route_docs(ok=obj({"deleted": INT}), errors=(404, 422, 503)))
    async def delete_job(job_id: str, request: Request):
        try:
            kept_id = parse_job_id(job_id)
            await asyncio.to_thread(manager.drop_kept, kept_id, caller_user(request))
        except ZImageError as e:
            return error_response(e, request_language(request))
        return {"deleted": kept_id}

    return router
