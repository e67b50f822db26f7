"""POST /grid: the X/Y/Z plot over HTTP (grid_answer, its work, serves the MCP grid tool too). The
body is {"base": <a /generate body>, "x": {"field": "seed", "values": [1, 2]}, "y": ..., "z": ...};
the answer the grid picture (base64 PNG, also saved in the outputs) and each cell's file and
parameters. The cells are checked first (a bad value is a 422 naming its axis and value) and run one
after another through the backend's queue; a Stop (/sdapi/v1/interrupt by the same caller) answers
the cells made so far and their partial grid, with "stopped": true.
"""
from __future__ import annotations

import asyncio
import base64
import time

from fastapi import APIRouter, Request

from ...config import Settings
from ...errors import Cancelled, ZImageError
from ...explore.axes import ALIASES, AXES, MAX_VALUE_CHARS
from ...explore.grid import cell_entry, grid_infotext, grid_picture, plan_grid, run_grid, save_grid
from ...jobs import Backend
from ...lora_tags import MAX_LORA_STRENGTH, MIN_LORA_STRENGTH
from ...request import MAX_STEPS, MIN_STEPS, GenerationRequest
from ...store.outputs import encode_png
from ...variety import MAX_VARIETY
from ..model_choice import model_choice
from .api import error_response, job_owner, read_json, request_caller, request_language
from .openapi import (ANY_JSON, BODY_ERRORS, GUIDANCE, INT, NULLABLE_STRING, RUN_ERRORS, SEED, SIZE, STRING,
                      generate_body, integer, obj, route_docs)


def _axis_item(field: str) -> dict:
    """One value of an axis on `field`, as the cell's request checks it."""
    numbers = {"guidance": GUIDANCE, "variety": {"type": "number", "minimum": 0, "maximum": MAX_VARIETY},
               "lora_strength": {"type": "number", "minimum": MIN_LORA_STRENGTH, "maximum": MAX_LORA_STRENGTH}}
    return {"seed": SEED, "steps": integer(MIN_STEPS, MAX_STEPS), "size": {**SIZE, "description": "a square side"},
            "prompt_sr": {"type": "string", "maxLength": MAX_VALUE_CHARS},
            "model": {"type": "string", "maxLength": MAX_VALUE_CHARS, "description": "a listed model's name (GET /sdapi/v1/sd-models)"}
            }.get(field) or numbers[field]


def axis_schema(field: str, max_values: int) -> dict:
    """An axis on `field` (or one of its aliases): its values a list (each typed, or A1111's text for
    one or more values), or one A1111 text ("1-5", "1-10 (+2)", "0-1 [3]", "a, b, c")."""
    text = {"type": "string", "maxLength": MAX_VALUE_CHARS, "description": "A1111's text: \"1-5\", \"1-10 (+2)\", "
            "\"0-1 [3]\", \"a, b, c\"" + ("; a size \"1024x768\"" if field == "size" else "")}
    names = [field, *sorted(alias for alias, to in ALIASES.items() if to == field)]
    return {"type": "object", "required": ["field", "values"], "properties": {
        "field": {"enum": names},
        "values": {"anyOf": [{"type": "array", "minItems": 1, "maxItems": max_values,
                              "items": {"anyOf": [_axis_item(field), text]}}, text]}}}


def grid_body(max_prompt_chars: int, max_cells: int) -> dict:
    """POST /grid: the base (the txt2img fields of a /generate body, one image) and up to three axes.
    Beyond a schema: y and z need x, the axes' values multiplied at most `max_cells` cells, a
    lora_strength axis a <lora:NAME:1> tag in the prompt, a prompt_sr axis its first value in it."""
    fields = generate_body(max_prompt_chars)["properties"]
    base = {"type": "object", "additionalProperties": False, "required": ["prompt"],
            "description": "a /generate body's text-to-image fields; num_images 1",
            "properties": {**{name: fields[name] for name in GenerationRequest.FIELDS},
                           "num_images": {"const": 1, "default": 1}}}
    axis = {"anyOf": [{"oneOf": [axis_schema(field, max_cells) for field in AXES]}, {"type": "null"}]}
    return {"type": "object", "additionalProperties": False, "required": ["base"],
            "description": f"at most {max_cells} cells (--grid-max-cells); y and z need x",
            "properties": {"base": base, "x": axis, "y": axis, "z": axis}}


GRID_ANSWER = obj({"image": {**STRING, "description": "the grid, PNG, base64"}, "file": NULLABLE_STRING, "url": STRING,
                   "cells": {"type": "array", "items": ANY_JSON}, "cells_total": INT,
                   "stopped": {"type": "boolean"}}, required=["image", "cells", "cells_total", "stopped"])


async def grid_answer(manager: Backend, settings: Settings, body, owner: str, user: str | None) -> dict:
    """A /grid body checked, its cells made in turn, the grid saved: the answer POST /grid gives
    (the MCP grid tool's too; it reads "file" and leaves "image" out). Raises the typed refusal,
    Cancelled when a Stop came before any cell was made."""
    models = model_choice(manager)
    plan = await asyncio.to_thread(plan_grid, body, settings.wildcards_folder, settings.grid_max_cells,
                                   settings.max_prompt_chars, models)       # a model axis reads the model list
    started = time.perf_counter()
    run = await asyncio.to_thread(run_grid, manager, plan, owner, user, None, models)
    if not run.done:
        raise Cancelled()
    path = await asyncio.to_thread(save_grid, run, manager._store)
    picture = path.read_bytes() if path is not None else encode_png(grid_picture(run), grid_infotext(run))
    root = manager._store.root
    answer = {"image": base64.b64encode(picture).decode("ascii"), "file": str(path) if path else None,
              "cells": [cell_entry(cell, item, root) for cell, item in run.done],
              "cells_total": len(plan.cells), "stopped": run.stopped,
              "seconds": round(time.perf_counter() - started, 3)}
    if path is not None:
        answer["url"] = "/outputs/" + path.resolve().relative_to(root.resolve()).as_posix()
    if run.warnings:
        answer["warning"] = " ".join(dict.fromkeys(run.warnings))
    return answer


def build_grid_router(manager: Backend, settings: Settings) -> APIRouter:
    router = APIRouter()
    auth_on = bool(settings.api_auth_pairs)

    @router.post("/grid", **route_docs(ok=GRID_ANSWER, body=grid_body(settings.max_prompt_chars, settings.grid_max_cells),
                                       errors=BODY_ERRORS + RUN_ERRORS))
    async def grid(request: Request):
        try:
            body = await read_json(request)
            client, user = request_caller(request, auth_on)
            return await grid_answer(manager, settings, body, job_owner(client), user)
        except ZImageError as e:
            return error_response(e, request_language(request))

    return router
