"""ASGI plumbing for the Gradio guard (gradio_guard.py), which reads a request's body before Gradio
does: the body read whole under a byte limit, then replayed to the app as if unread, and a `send`
that adds Retry-After to Gradio's "queue is full".
"""
from __future__ import annotations

from typing import Callable

from ..errors import ZImageError


async def read_body(scope, receive, limit: int, too_large: ZImageError) -> bytes | None:
    """The whole body, refused (raises `too_large`) once it is declared or streamed past `limit`
    bytes; None when the client left before sending it all."""
    headers = dict(scope.get("headers", []))
    declared = headers.get(b"content-length", b"")
    if declared.isdigit() and (len(declared) > 18 or int(declared) > limit):     # int() refuses 4301+ digits
        raise too_large
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":     # http.disconnect
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            raise too_large
        if not message.get("more_body", False):
            return bytes(body)


def is_multipart(scope) -> bool:
    ctype = dict(scope.get("headers", [])).get(b"content-type", b"").decode("latin-1")
    return ctype.split(";")[0].strip().lower() == "multipart/form-data"


def replay(body: bytes, receive):
    """A `receive` that gives the buffered body once, then the client's own messages (disconnects)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


def with_retry_after(send, retry_after_s: Callable[[], int]):
    """A `send` that adds Retry-After to a 503 or 429 that has none (Gradio's "queue is full")."""
    async def add(message):
        if message["type"] == "http.response.start" and message["status"] in (429, 503):
            headers = list(message.get("headers", []))
            if not any(k.lower() == b"retry-after" for k, _ in headers):
                headers.append((b"retry-after", str(retry_after_s()).encode()))
            message = dict(message, headers=headers)
        await send(message)
    return add
