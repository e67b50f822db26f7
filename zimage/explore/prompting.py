"""The request from a body whose prompt may hold wildcards and choices: the one step every entry
point (the page, /generate, A1111's routes, the grid, MCP) takes instead of calling
GenerationRequest.from_mapping itself. Stdlib only.

The picks are made with the request's seed, so a seed of -1 is resolved here first: the image's
saved seed then makes the same prompt again. The request's `prompt` is the expanded text (what the
model saw, what the PNG's parameters say); `wildcard_prompt` keeps the template ("Wildcard prompt"
in the parameters).
"""
from __future__ import annotations

import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

from ..request import MAX_IMAGES, MAX_SEED, GenerationRequest, as_int
from .wildcards import Wildcards, expand, is_dynamic

TEXT_FIELDS = ("prompt", "negative_prompt")


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED - MAX_IMAGES)


def expanded_fields(data: Any, folder: Path, wildcards: Wildcards | None = None) -> tuple[Any, str]:
    """(the body with its prompt and negative prompt expanded, the prompt template or '' when
    nothing was dynamic). Anything that is not a body of text fields is returned for the validator
    to refuse."""
    if not isinstance(data, Mapping):
        return data, ""
    texts = {name: data.get(name) for name in TEXT_FIELDS if isinstance(data.get(name), str)}
    if not any(is_dynamic(text) for text in texts.values()):
        return data, ""
    seed = as_int(data.get("seed", -1))
    if seed is None or seed < -1 or seed > MAX_SEED:
        return data, ""           # the validator names the seed; nothing is picked with a bad one
    if seed == -1:
        seed = random_seed()
    wildcards = wildcards or Wildcards(folder)
    out = dict(data, seed=seed)
    for name, text in texts.items():
        out[name] = expand(text, seed, wildcards, name)
    template = texts.get("prompt", "")
    return out, (template if out.get("prompt") != template else "")


def dynamic_request(data: Any, folder: Path, max_prompt_chars: int,
                    build: Callable[[Any, int], GenerationRequest] = GenerationRequest.from_mapping,
                    wildcards: Wildcards | None = None) -> GenerationRequest:
    """The validated request of `data` (by `build`, from_mapping or a route's own mapping), its
    prompt's wildcards and choices picked with its seed."""
    data, template = expanded_fields(data, folder, wildcards)
    req = build(data, max_prompt_chars)
    return replace(req, wildcard_prompt=template) if template else req
