"""A1111's error answer (its FastAPI answers 422 with "detail"), shared by the A1111 routes:
compat_api, models_api, edit_api, enhance_api (a module of its own, so that none of them imports another
for it)."""
from __future__ import annotations

from fastapi import Request

from ...errors import ZImageError
from .api import log_refusal, request_language
from ..json_text import SafeJSONResponse


def _a1111_error(err: ZImageError, request: Request) -> SafeJSONResponse:
    # A1111's FastAPI answers 422 with "detail" for bad input; its clients print the body.
    log_refusal(err)
    lang = request_language(request)
    headers = {"Content-Language": lang}
    if hasattr(err, "retry_after_s"):
        headers["Retry-After"] = str(err.retry_after_s)
    return SafeJSONResponse({"error": err.code, "detail": err.user_text(lang), "errors": err.text(lang)[0]},
                        status_code=err.http_status, headers=headers)
