"""The prompt enhancer's validated request, its result, our system prompt and the answer's clean-up.

Pure (core layer). The route (POST /sdapi/v1/prompt-enhance, SD.Next's: {prompt, type, model,
system_prompt, seed, nsfw, ...} -> {prompt, seed}), the MCP tool and the page share `from_mapping`.
"""
from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import InvalidRequest
from .request import MAX_SEED, _str_field, as_int

MAX_SYSTEM_PROMPT_CHARS = 8000
MIN_NEW_TOKENS, MAX_NEW_TOKENS = 16, 2048
DEFAULT_NEW_TOKENS = 400        # the official template's rewrites run 150-300 words
# In the spirit of Z-Image's official prompt-enhancing template (Tongyi-MAI/Z-Image pe.py, ../shared/
# research/turn3-models.md §2): keep the core, add composition and light, no meta tags, answer only
# the prompt. Written anew (no copy), shorter: a 4B model follows a short instruction better.
DEFAULT_SYSTEM_PROMPT = (
    "You rewrite prompts for a text-to-image model. Keep everything the user's prompt fixes: the subject, "
    "how many there are, their actions and states, named characters, colours, and any text to be shown, "
    "written exactly inside double quotes. Then make it concrete and visual: add composition and camera "
    "view, lighting, materials and textures, a colour scheme and the layers of the space (foreground, "
    "middle, background). Describe, do not interpret: no metaphors, no feelings, and no tags such as "
    "\"8K\", \"masterpiece\" or \"best quality\". Answer in the language of the user's prompt, in one "
    "paragraph, and output only the rewritten prompt.")
TYPES = ("text",)               # SD.Next's type: text (image and video prompts are not ours)


@dataclass(frozen=True)
class EnhanceRequest:
    prompt: str
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_new_tokens: int = DEFAULT_NEW_TOKENS
    seed: int = -1

    @classmethod
    def from_mapping(cls, data: Any, max_prompt_chars: int = 4000, system_prompt: str = "",
                     max_new_tokens: int = DEFAULT_NEW_TOKENS) -> "EnhanceRequest":
        """Untrusted input checked, errors naming the field. `system_prompt` and `max_new_tokens`
        are the server's defaults (Settings) for a request that sends none."""
        if not isinstance(data, Mapping):
            raise InvalidRequest("body", "must be a JSON object")
        prompt = _str_field(data, "prompt", None, max_prompt_chars)
        if not prompt.strip():
            raise InvalidRequest("prompt", "must not be empty")
        kind = data.get("type", "text")
        if kind is not None and kind not in TYPES:
            raise InvalidRequest("type", f"must be \"text\", got {str(kind)[:40]!r}")
        for name in ("model", "prefix", "suffix"):        # SD.Next's; accepted, checked, not used
            if data.get(name) is not None:
                _str_field(data, name, "", 200 if name == "model" else max_prompt_chars)
        if data.get("nsfw") is not None and not isinstance(data["nsfw"], bool):
            raise InvalidRequest("nsfw", f"must be true or false, got {type(data['nsfw']).__name__}")
        system = data.get("system_prompt")
        system = system_prompt or DEFAULT_SYSTEM_PROMPT if system in (None, "") else \
            _str_field(data, "system_prompt", "", MAX_SYSTEM_PROMPT_CHARS)
        tokens = data.get("max_tokens")
        tokens = max_new_tokens if tokens is None else as_int(tokens)
        if tokens is None:
            raise InvalidRequest("max_tokens", f"must be an integer, got {type(data.get('max_tokens')).__name__}")
        if not MIN_NEW_TOKENS <= tokens <= MAX_NEW_TOKENS:
            raise InvalidRequest("max_tokens", f"must be between {MIN_NEW_TOKENS} and {MAX_NEW_TOKENS}, got {tokens}")
        seed = as_int(data.get("seed", -1))
        if seed is None or not (seed == -1 or 0 <= seed <= MAX_SEED):
            raise InvalidRequest("seed", f"must be -1 (random) or an integer 0-{MAX_SEED}")
        if seed == -1:
            seed = secrets.randbelow(MAX_SEED)
        return cls(prompt=prompt, system_prompt=system, max_new_tokens=tokens, seed=seed)


@dataclass(frozen=True)
class EnhanceResult:
    prompt: str                 # the rewrite
    original_prompt: str
    seed: int
    seconds: float
    tokens: int                 # new tokens generated (the endpoint's count, when it gives one)
    backend: str                # "text-encoder" or the endpoint's model name


_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def clean_answer(text: str, max_chars: int) -> str:
    """The rewrite from a model's answer: thinking dropped, the official Space's fenced
    {"revised_prompt": ...} read, one pair of surrounding quotes removed, cut to `max_chars`."""
    text = _THINK.sub("", text or "").strip()
    fenced = _FENCE.search(text)
    candidate = fenced.group(1).strip() if fenced else text
    if candidate.startswith("{"):
        try:
            revised = json.loads(candidate).get("revised_prompt")
            if isinstance(revised, str):
                candidate = revised
        except (ValueError, AttributeError):
            pass
    candidate = candidate.strip()
    if len(candidate) >= 2 and candidate[0] == candidate[-1] and candidate[0] in "\"'“":
        candidate = candidate[1:-1].strip()
    return candidate[:max_chars]
