"""POST /sdapi/v1/prompt-enhance: SD.Next's route and shape ({prompt, type, model, system_prompt, seed,
nsfw, ...} -> {prompt, seed}), answered by the Backend's enhance_prompt; our extra answer fields:
original_prompt, seconds, tokens, backend. Validation is EnhanceRequest's."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from ...enhance_request import MAX_NEW_TOKENS, MAX_SYSTEM_PROMPT_CHARS, MIN_NEW_TOKENS, EnhanceRequest
from ...errors import ZImageError
from ...jobs import Backend
from .api import job_owner, read_json, request_caller
from .compat_api import _a1111_error
from .openapi import A1111_ERROR, BODY_ERRORS, INT, NUMBER, STRING, obj, route_docs

ENHANCE_PATH = "/sdapi/v1/prompt-enhance"


def enhance_body(max_prompt_chars: int) -> dict:
    return obj({"prompt": {"type": "string", "minLength": 1, "maxLength": max_prompt_chars, "pattern": r"\S"},
                "type": {"enum": ["text"], "default": "text"},
                "system_prompt": {"type": ["string", "null"], "maxLength": MAX_SYSTEM_PROMPT_CHARS},
                "max_tokens": {"type": ["integer", "null"], "minimum": MIN_NEW_TOKENS, "maximum": MAX_NEW_TOKENS},
                "seed": {"type": "integer", "minimum": -1, "maximum": 2**32 - 1, "default": -1},
                "model": {"type": ["string", "null"], "maxLength": 200},
                "nsfw": {"type": ["boolean", "null"]}}, ["prompt"])


def build_enhance_router(manager: Backend, max_prompt_chars: int) -> APIRouter:
    router = APIRouter()
    settings = manager.settings
    auth_on = bool(settings.api_auth_pairs)

    @router.post(ENHANCE_PATH, **route_docs(
        ok=obj({"prompt": STRING, "seed": INT, "original_prompt": STRING, "seconds": NUMBER, "tokens": INT,
                "backend": STRING}, ["prompt", "seed"]),
        body=enhance_body(max_prompt_chars), errors=BODY_ERRORS + (409, 422, 502, 503, 504),
        error_schema=A1111_ERROR))
    async def prompt_enhance(request: Request):
        """The prompt rewritten for Z-Image (the loaded text encoder, or --enhancer-url's endpoint)."""
        try:
            body = await read_json(request)
            req = EnhanceRequest.from_mapping(body, max_prompt_chars, settings.enhancer_system_prompt,
                                              settings.enhancer_max_tokens)
            client, user = request_caller(request, auth_on)
            result = await asyncio.wrap_future(manager.enhance_prompt(req, job_owner(client), user).future)
        except ZImageError as e:
            return _a1111_error(e, request)
        return {"prompt": result.prompt, "seed": result.seed, "original_prompt": result.original_prompt,
                "seconds": round(result.seconds, 3), "tokens": result.tokens, "backend": result.backend}

    return router
