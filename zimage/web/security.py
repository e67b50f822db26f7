"""Request guards for every route, Gradio's included (its CORS middleware only adds headers; it
never stops a handler from running).

- A Host header that is not one host[:port] is refused ("127.0.0.1:7860 evil.com" was served); on
  loopback, only a loopback Host is served: the DNS-rebinding defence.
- State-changing requests with a foreign Origin are refused: a web page the user visits must not
  start GPU work or unload the model.
- CORS headers go only to the page's own origin: Gradio's CORS middleware reflected any localhost
  origin with credentials on /config, /gradio_api/info and /gradio_api/file=, so another web app on
  this machine could read the images; the browser now keeps those answers from it.
- Our own API routes take HTTP Basic auth when auth is configured (Gradio's login covers only its own).
"""
from __future__ import annotations

import base64
import json
import re
import secrets
from urllib.parse import urlsplit

from ..i18n import error_text, language_of

LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# One host (a DNS name, IPv4, or a bracketed IPv6) and an optional port: what RFC 9110 allows in Host.
HOST_HEADER = re.compile(r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
DEFAULT_PORTS = {"http": 80, "https": 443}


def host_name(host_header: str) -> str:
    """'127.0.0.1:7860' -> '127.0.0.1', '[::1]:7860' -> '::1'."""
    parts = urlsplit("//" + host_header)
    return (parts.hostname or "").lower()


def host_header_ok(host_header: str) -> bool:
    return HOST_HEADER.fullmatch(host_header) is not None and _port(host_header) is not False


def _port(netloc: str, scheme: str = "http") -> int | None | bool:
    """The port a netloc names (the scheme's default when none), False when it is not a port."""
    try:
        port = urlsplit("//" + netloc).port
    except ValueError:
        return False
    return DEFAULT_PORTS.get(scheme) if port is None else port


def origin_allowed(origin: str, host_header: str, scheme: str = "http") -> bool:
    """Same-origin (the Origin's scheme, host and port are those the request came to), or, when the app
    is on loopback, the same scheme and port under another loopback name (http://localhost:P for a
    page opened as http://127.0.0.1:P). Another port on loopback is another web app: refused.
    `null` (sandboxed frames, file://) is never allowed."""
    parts = urlsplit(origin)
    if parts.scheme != scheme or not parts.hostname or parts.path or parts.query:
        return False
    origin_port, host_port = _port(parts.netloc, scheme), _port(host_header, scheme)
    if origin_port is False or origin_port != host_port:
        return False
    origin_host, host = parts.hostname.lower(), host_name(host_header)
    return origin_host == host or (origin_host in LOOPBACK_NAMES and host in LOOPBACK_NAMES)


def basic_credentials(header: str) -> tuple[bytes, bytes] | None:
    """(user, password) as the bytes an `Authorization: Basic ...` header carries (RFC 7617),
    None for anything else: another scheme, base64 that is not strictly base64, no colon."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip().encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):        # binascii.Error is a ValueError
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


def basic_user(header: str) -> str | None:
    """The user name of a Basic header (UTF-8, else Latin-1: see _encoded), None when there is none."""
    found = basic_credentials(header)
    if found is None:
        return None
    try:
        return found[0].decode("utf-8")
    except UnicodeDecodeError:
        return found[0].decode("latin-1")


def _encoded(text: str) -> list[bytes]:
    """`text` as a client may have sent it: UTF-8 (RFC 7617; browsers, curl, httpx), and Latin-1
    where it has one (requests, so webuiapi, encodes a str login that way)."""
    forms = [text.encode("utf-8")]
    try:
        forms.append(text.encode("latin-1"))
    except UnicodeEncodeError:
        pass
    return forms


def basic_auth_ok(header: str, user: str, password: str) -> bool:
    # Bytes, not str: secrets.compare_digest raises TypeError on a str with non-ASCII characters,
    # which made every API route a 500 for a non-ASCII login (and unusable with a non-ASCII password).
    found = basic_credentials(header)
    if found is None:
        return False
    given_user, given_pw = found
    user_ok = any([secrets.compare_digest(given_user, form) for form in _encoded(user)])    # no short cut
    password_ok = any([secrets.compare_digest(given_pw, form) for form in _encoded(password)])
    return user_ok & password_ok


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
        raw = scope.get("headers", [])
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}
        host = headers.get("host", "")
        lang = language_of(headers.get("accept-language"))
        if sum(k.lower() == b"host" for k, _ in raw) > 1 or (host and not host_header_ok(host)):
            return await _deny(send, lang, 400, "bad_host", f"Host {host[:100]!r} is not one host[:port].")
        if self.loopback_only and host_name(host) not in LOOPBACK_NAMES:
            return await _deny(send, lang, 403, "forbidden_host",
                               f"Host {host[:100]!r} is not served: this app only answers on 127.0.0.1 / localhost.")
        method = scope.get("method", "GET")
        origin = headers.get("origin")
        scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope.get("scheme", "http"))
        # A TLS proxy on another host (uvicorn trusts X-Forwarded-Proto only from 127.0.0.1) says the
        # scheme here; a cross-site page cannot add the header without a preflight, which gets no CORS.
        forwarded = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        scheme = forwarded if forwarded in ("http", "https") else scheme
        foreign = origin is not None and not origin_allowed(origin, host, scheme)
        if method not in SAFE_METHODS and foreign:
            return await _deny(send, lang, 403, "forbidden_origin", f"Requests from {origin[:100]} are not allowed.")
        path = scope["path"]
        if self.auth and (path in self.api_paths or path.startswith(self.api_prefixes)):
            given = headers.get("authorization", "")
            if not any([basic_auth_ok(given, user, password) for user, password in self.auth]):   # no short cut
                return await _deny(send, lang, 401, "unauthorized", "Log in with HTTP Basic (the --auth user:password).",
                                   extra=[(b"www-authenticate", b'Basic realm="zimage"')])
        if foreign:
            send = _without_cors(send)
        return await self.app(scope, receive, send)


def _without_cors(send):
    """A `send` that drops the Access-Control-* headers: without them the browser does not let the
    foreign page read the answer (a preflight fails, so its credentialed request is never sent)."""
    async def strip(message):
        if message["type"] == "http.response.start":
            message = dict(message, headers=[(k, v) for k, v in message.get("headers", [])
                                             if not k.lower().startswith(b"access-control-")])
        await send(message)
    return strip


async def _deny(send, lang: str, status: int, code: str, message: str, extra: list | None = None) -> None:
    # Also fine for a websocket scope: ASGI servers answer a pre-accept http.response with that status.
    body = json.dumps({"error": {"code": code, "message": error_text(code, message, "", lang)[0]}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-language", lang.encode()),
                            (b"content-length", str(len(body)).encode())] + (extra or [])})
    await send({"type": "http.response.body", "body": body})
