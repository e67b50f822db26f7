"""The guard's refusals as the page and API callers read them: `{"error": {code, message, field}}`
plus `detail` (the key Gradio's clients print, and the page's toasts show: ui_toasts), in the
page's language (the switch's cookie, else Accept-Language)."""
from __future__ import annotations

import json

from ..errors import ZImageError
from ..i18n import page_language


def language(scope) -> str:
    """The page's language: the switch's cookie, else Accept-Language (as the page's own text)."""
    from starlette.requests import HTTPConnection

    accept = dict(scope.get("headers", [])).get(b"accept-language", b"").decode("latin-1")
    return page_language(HTTPConnection(scope).cookies, accept)


def error_body(err: ZImageError, lang: str = "en") -> dict:
    """The refusal's JSON: `error` for API callers, `detail` for Gradio's clients and the page's toasts."""
    return {"error": err.to_dict(lang), "detail": err.user_text(lang)}


async def send_error(send, err: ZImageError, extra: list | None = None, lang: str = "en") -> None:
    body = json.dumps(error_body(err, lang)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"content-language", lang.encode())]
    if getattr(err, "retry_after_s", None) is not None:
        headers.append((b"retry-after", str(err.retry_after_s).encode()))
    await send({"type": "http.response.start", "status": err.http_status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})
