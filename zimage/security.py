"""Request guards for every route, Gradio's included (its CORS middleware only adds headers; it
never stops a handler from running).

- On loopback, only a loopback Host header is served: the DNS-rebinding defence.
- State-changing requests with a foreign Origin are refused: a web page the user visits must not
  start GPU work or unload the model.
- Our own API routes take HTTP Basic auth when auth is configured (Gradio's login covers only its own).
"""
from __future__ import annotations

import base64
import json
import secrets
from urllib.parse import urlsplit

LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def host_name(host_header: str) -> str:
    """'127.0.0.1:7860' -> '127.0.0.1', '[::1]:7860' -> '::1'."""
    parts = urlsplit("//" + host_header)
    return (parts.hostname or "").lower()


def origin_allowed(origin: str, host_header: str) -> bool:
    """Same-origin (the Origin's host:port is the Host the request came to), or a loopback origin
    when the app itself is on loopback. `null` (sandboxed frames, file://) is never allowed."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    return parts.netloc.lower() == host_header.lower()


def basic_auth_ok(header: str, user: str, password: str) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given_user, _, given_pw = base64.b64decode(encoded).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return secrets.compare_digest(given_user, user) & secrets.compare_digest(given_pw, password)


class GuardMiddleware:
    """Pure ASGI middleware (no buffering, so Gradio's streaming responses pass untouched)."""

    def __init__(self, app, *, loopback_only: bool, api_paths: tuple[str, ...],
                 api_prefixes: tuple[str, ...] = (), auth: list[tuple[str, str]] | None = None):
        self.app = app
        self.api_prefixes = api_prefixes
        self.loopback_only = loopback_only
        self.api_paths = api_paths
        self.auth = auth

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if self.loopback_only and host_name(host) not in LOOPBACK_NAMES:
            return await _deny(send, 403, "forbidden_host",
                               f"Host {host!r} is not served: this app only answers on 127.0.0.1 / localhost.")
        method = scope.get("method", "GET")
        origin = headers.get("origin")
        if method not in SAFE_METHODS and origin is not None and not origin_allowed(origin, host):
            return await _deny(send, 403, "forbidden_origin", f"Requests from {origin} are not allowed.")
        path = scope["path"]
        if self.auth and (path in self.api_paths or path.startswith(self.api_prefixes)):
            given = headers.get("authorization", "")
            if not any([basic_auth_ok(given, user, password) for user, password in self.auth]):   # no short cut
                return await _deny(send, 401, "unauthorized", "Log in with HTTP Basic (the --auth user:password).",
                                   extra=[(b"www-authenticate", b'Basic realm="zimage"')])
        return await self.app(scope, receive, send)


async def _deny(send, status: int, code: str, message: str, extra: list | None = None) -> None:
    # Also fine for a websocket scope: ASGI servers answer a pre-accept http.response with that status.
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())] + (extra or [])})
    await send({"type": "http.response.body", "body": body})
