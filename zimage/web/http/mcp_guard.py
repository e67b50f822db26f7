"""The MCP server's request bodies checked before the `mcp` library reads them (--mcp).

The library's streamable HTTP transport answers only json.JSONDecodeError as a parse error: a
5000-digit integer (ValueError, Python's 4,300-digit limit) or 10,000 nested lists (RecursionError)
in a tool's arguments escaped as a 500 ("Error handling POST request"). Here every POST body under
the MCP path goes through the API's JSON reading (json_text.decode_json) and its lone-surrogate check,
and a refusal is a JSON-RPC error with HTTP 400, as the library answers broken JSON: -32700 (parse
error) for a body that is not JSON, -32602 (invalid params) for one that holds what no tool takes.
"""
from __future__ import annotations

import json
from typing import Any

from ...errors import BodyTooLarge, InvalidRequest, ZImageError
from .api import MAX_BODY_BYTES, MCP_PATH
from ..json_text import decode_json, refuse_unwritable

PARSE_ERROR, INVALID_PARAMS = -32700, -32602
# A tool call is {"jsonrpc", "id", "method", "params": {"name", "arguments": {field: value}}}: 3 levels
# and the values, which are flat. Deeper is no call any of our tools takes.
MAX_DEPTH = 16


def json_depth_over(data: Any, limit: int) -> bool:
    """Whether `data` nests lists/objects deeper than `limit` (iterative: no recursion to run out of)."""
    todo = [(data, 0)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, (dict, list)):
            if depth >= limit:
                return True
            todo.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return False


def check_mcp_body(body: bytes) -> None:
    """The checks of one MCP POST body; raises the typed refusal."""
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"The request body is larger than {MAX_BODY_BYTES // 1024} KB.", "Shorten the prompt.")
    data = decode_json(body)
    if json_depth_over(data, MAX_DEPTH):
        raise InvalidRequest("params", f"nests more than {MAX_DEPTH} levels of lists or objects")
    refuse_unwritable(data)


def _request_id(body: bytes) -> Any:
    try:
        found = json.loads(body).get("id")
    except Exception:           # noqa: BLE001: a body refused above may be anything
        return None
    return found if isinstance(found, str) and found.isascii() or type(found) is int and abs(found) < 2**53 else None


class MCPBodyGuard:
    """Pure ASGI middleware: POST bodies under MCP_PATH are read (capped), checked, then replayed."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or scope.get("method") != "POST" or not (
                path == MCP_PATH or path.startswith(MCP_PATH + "/")):
            return await self.app(scope, receive, send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY_BYTES:
                break
        try:
            check_mcp_body(bytes(body))
        except ZImageError as e:
            code = INVALID_PARAMS if isinstance(e, InvalidRequest) else PARSE_ERROR
            answer = {"jsonrpc": "2.0", "id": _request_id(bytes(body)) if code == INVALID_PARAMS else None,
                      "error": {"code": code, "message": f"{e.code}: {e.message}"}}
            status = 413 if isinstance(e, BodyTooLarge) else 400
            raw = json.dumps(answer).encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]})
            await send({"type": "http.response.body", "body": raw})
            return None
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()
        return await self.app(scope, replay, send)
