"""Enhance on an OpenAI-compatible chat endpoint (--enhancer-url URL --enhancer-model NAME: Ollama's
http://127.0.0.1:11434/v1, LM Studio's http://127.0.0.1:1234/v1, or any /v1/chat/completions).

Streamed (`stream: true`), so Stop and the timeout are checked at every token the server sends and
the connection is closed at once; no weights of ours are used, so it runs beside generations, on a
thread of its own.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

from ..enhance_request import EnhanceRequest, EnhanceResult, clean_answer
from ..errors import Cancelled, EnhancerFailed, EnhancerTimeout
from .enhance import MAX_ANSWER_CHARS, TEMPERATURE, TOP_P

log = logging.getLogger(__name__)


def chat_url(base: str) -> str:
    """The chat completions URL of a base ("http://host:11434/v1" or the full path)."""
    base = base.rstrip("/")
    return base if base.endswith("/chat/completions") else f"{base}/chat/completions"


def enhance_remote(url: str, model: str, req: EnhanceRequest, cancel: threading.Event, timeout_s: float,
                   clock: Callable[[], float] = time.monotonic) -> EnhanceResult:
    import httpx

    started = clock()
    body = {"model": model, "stream": True, "max_tokens": req.max_new_tokens, "temperature": TEMPERATURE,
            "top_p": TOP_P, "seed": req.seed,
            "messages": [{"role": "system", "content": req.system_prompt}, {"role": "user", "content": req.prompt}]}
    parts: list[str] = []
    tokens = 0
    where = chat_url(url)
    try:
        with httpx.stream("POST", where, json=body, timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))) as r:
            if r.status_code != 200:
                r.read()
                raise EnhancerFailed(f"The enhancer endpoint {where} answered {r.status_code}: {r.text[:300]}",
                                     "Check --enhancer-url and --enhancer-model (is the model pulled?).")
            for line in r.iter_lines():
                if cancel.is_set():
                    raise Cancelled()
                if clock() - started > timeout_s:
                    raise EnhancerTimeout(timeout_s)
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    choice = json.loads(data)["choices"][0]
                    piece = (choice.get("delta") or choice.get("message") or {}).get("content") or ""
                except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                    raise EnhancerFailed(f"The enhancer endpoint {where} sent a chunk that is not OpenAI's: "
                                         f"{data[:200]}", "Check --enhancer-url: it must be OpenAI-compatible.") from None
                parts.append(piece)
                tokens += 1 if piece else 0
                if sum(map(len, parts)) > MAX_ANSWER_CHARS:
                    break
    except httpx.TimeoutException:
        raise EnhancerTimeout(timeout_s) from None
    except httpx.HTTPError as e:
        raise EnhancerFailed(f"The enhancer endpoint {where} cannot be reached: {e.__class__.__name__}: {e}",
                             "Start it (ollama serve, LM Studio's server), or check --enhancer-url.") from None
    answer = clean_answer("".join(parts), MAX_ANSWER_CHARS)
    if not answer:
        raise EnhancerFailed(f"The enhancer endpoint {where} answered nothing.", "Try again, or another model.")
    return EnhanceResult(prompt=answer, original_prompt=req.prompt, seed=req.seed, seconds=clock() - started,
                         tokens=tokens, backend=model)
