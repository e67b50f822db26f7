"""JSON that can always be written back: the reading (decode_json) and the check every JSON body
passes (api.read_json, the MCP guard; the Gradio guard reads its bodies with decode_json too) and the
answer class of our routes.

JSON's "\\ud800" escape decodes to a lone UTF-16 surrogate, a str that Python cannot encode to
UTF-8, and "1e999" to inf, which JSON cannot write. A1111's answers echo the body (`parameters`,
`info`'s sampler_name): an image was made and saved, then Starlette's JSONResponse raised
(UnicodeEncodeError, ValueError) and the client got a 500 instead of it. So either, anywhere in a
body, in a value or a key name, is refused before any work, naming where it is; and
SafeJSONResponse writes any answer that still holds a lone surrogate with \\u escapes.
"""
from __future__ import annotations

import json
import math
from collections import deque
from typing import Any

from fastapi.responses import JSONResponse

from ..errors import BadRequestBody, InvalidRequest

UNICODE_RULE = "must be valid Unicode text (a lone UTF-16 surrogate at character {at})"
KEY_RULE = "the key name {key} must be valid Unicode text (a lone UTF-16 surrogate at character {at})"


def decode_json(body: bytes):
    """JSON from an untrusted body; every way it can be broken is a BadRequestBody (400)."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequestBody(f"The body is not valid JSON: {e}.") from None
    except RecursionError:     # "[[[[..." 100k deep fits the size limit; json's C scanner gives up here
        raise BadRequestBody("The body is not valid JSON: it is nested too deeply.") from None


def _surrogate_at(text: str) -> int | None:
    if text.isascii():          # O(1) in CPython (a flag of the str): a base64 image costs nothing
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def _printable(text: str, limit: int = 60) -> str:
    """`text` with its surrogates as \\udXXX, so that a refusal naming it can itself be written."""
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def refuse_unwritable(data: Any) -> None:
    """InvalidRequest naming the first value of `data` (a decoded JSON value) that JSON cannot write
    back, a string with a lone surrogate or a number that is not finite: the field ("sampler_name",
    "alwayson_scripts.controlnet.args[0].module"), or, for a key name, the object it is in ("body"
    at the top). Iterative: json's own limit allows nesting deeper than Python's recursion limit."""
    todo: deque[tuple[str, Any]] = deque([("", data)])     # breadth first: the top level's fields first
    while todo:
        path, value = todo.popleft()
        if isinstance(value, str):
            at = _surrogate_at(value)
            if at is not None:
                raise InvalidRequest(path or "body", UNICODE_RULE.format(at=at))
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidRequest(path or "body", "must be a finite number")
        elif isinstance(value, dict):
            for key, item in value.items():
                at = _surrogate_at(key)
                if at is not None:
                    raise InvalidRequest(path or "body", KEY_RULE.format(key=repr(_printable(key)), at=at))
                todo.append((_child(path, key), item))
        elif isinstance(value, list):
            todo.extend((f"{path}[{i}]", item) for i, item in enumerate(value))


class SafeJSONResponse(JSONResponse):
    """JSONResponse that cannot fail on text: UTF-8 as usual, \\u escapes (ASCII) where a string
    holds a lone surrogate, which UTF-8 cannot carry."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")
