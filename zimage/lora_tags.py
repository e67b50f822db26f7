"""A1111's `<lora:NAME:w>` prompt tags: the LoRAs a prompt asks for, and the prompt the text encoder
sees without them. Pure: the names are checked against the folder later (store.loras.resolve).
"""
from __future__ import annotations

import math
import re

from .errors import InvalidRequest

MIN_LORA_STRENGTH, MAX_LORA_STRENGTH = -2.0, 2.0

# A1111's extra-network tag as its parser finds them (extra_networks.re_extra_net: `<(\w+):([^>]+)>`),
# for the `lora` network: `<lora:NAME>` or `<lora:NAME:w>`. An opened tag that never closes is caught
# apart: A1111 would leave it in the prompt, which silently drops the LoRA the user asked for.
LORA_TAG = re.compile(r"<lora:([^>]*)>")
_LORA_OPEN = re.compile(r"<lora:")


def parse_loras(prompt: str) -> tuple[tuple[str, float], ...]:
    """((name, strength), ...) of the prompt's `<lora:NAME:w>` tags, in order; InvalidRequest
    naming `prompt` for a malformed tag or a strength outside -2..2. Names are checked against the
    folder later (store.loras.resolve), when the LoRA is used."""
    found = []
    for m in LORA_TAG.finditer(prompt):
        name, sep, rest = m.group(1).partition(":")
        name = name.strip()
        if not name:
            raise InvalidRequest("prompt", f"the LoRA tag {m.group(0)!r} has no name (write <lora:NAME:1>)")
        strength = 1.0
        if sep:
            text = rest.strip()
            if ":" in text:
                raise InvalidRequest("prompt", f"the LoRA tag {m.group(0)!r} has more than one strength "
                                     f"(write <lora:{name}:1>; Z-Image has one strength per LoRA)")
            try:
                strength = float(text)
            except ValueError:
                raise InvalidRequest("prompt", f"the LoRA tag {m.group(0)!r} has a strength that is not a number "
                                     f"(write <lora:{name}:0.8>)") from None
            if not math.isfinite(strength) or not MIN_LORA_STRENGTH <= strength <= MAX_LORA_STRENGTH:
                raise InvalidRequest("prompt", f"the strength of LoRA {name!r} must be between "
                                     f"{MIN_LORA_STRENGTH:g} and {MAX_LORA_STRENGTH:g}, got {text}")
        found.append((name, strength))
    if len(_LORA_OPEN.findall(prompt)) != len(found):
        raise InvalidRequest("prompt", "a <lora:... tag is not closed with '>' (write <lora:NAME:1>)")
    return tuple(found)


def strip_loras(prompt: str) -> str:
    """The prompt the text encoder sees: the tags removed, the spaces and commas they leave tidied.
    A prompt without tags is returned unchanged (the same picture as before LoRAs existed)."""
    if not LORA_TAG.search(prompt):
        return prompt
    text = LORA_TAG.sub(" ", prompt)
    lines = []
    for line in text.splitlines():
        line = re.sub(r"[ \t]+", " ", line).strip()
        line = re.sub(r"\s+,", ",", line)
        line = re.sub(r",(\s*,)+", ",", line).strip(" ,")
        lines.append(line)
    return "\n".join(lines).strip()
