"""The prompt before Enhance rewrote it, in the PNG parameters: `Original prompt: "..."`.

Pure (core layer). Quoted as A1111 quotes an infotext value (modules/infotext_utils.quote: JSON text),
always, so a comma, colon or newline in the prompt never splits the parameters line; read back with
json (A1111's unquote).
"""
from __future__ import annotations

import json
from typing import Any, Mapping

INFOTEXT_KEY = "Original prompt"


def original_prompt_part(original: str, prompt: str) -> str:
    """The infotext entry, nothing when there is no original or it is the prompt itself."""
    if not original or original == prompt:
        return ""
    return f", {INFOTEXT_KEY}: {json.dumps(original, ensure_ascii=False)}"


def parse_original_prompt(params: Mapping[str, Any]) -> str | None:
    """The original prompt from an infotext's params (parse_infotext strips the quotes), None when absent."""
    raw = params.get(INFOTEXT_KEY)
    if not isinstance(raw, str) or not raw:
        return None
    try:
        value = json.loads(f'"{raw}"')
    except ValueError:
        return raw
    return value if isinstance(value, str) else raw
