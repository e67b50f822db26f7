"""Batch count x batch size (A1111's n_iter x batch_size): `count` requests of `num_images` each,
seeds following on (s, s+1, ... across the batches), each batch a job of the backend's queue
(explore.in_turn); count None is Generate forever, until a Stop. Stdlib only.
"""
from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any, Callable, Iterator

from ..errors import Cancelled, InvalidRequest
from ..jobs import Backend, Job
from ..request import MAX_SEED, GenerationRequest, GenerationResult, as_int
from .in_turn import run_in_turn
from .prompting import random_seed

MAX_BATCH_COUNT = 100
STOPPED_BATCHES = "Stopped after {k} of {n} batches; the finished ones were kept."


def batch_count_of(raw: Any, field: str = "batch_count") -> int:
    count = as_int(raw)
    if count is None:
        raise InvalidRequest(field, f"must be an integer, got {type(raw).__name__}")
    if not 1 <= count <= MAX_BATCH_COUNT:
        raise InvalidRequest(field, f"must be between 1 and {MAX_BATCH_COUNT}, got {count}")
    return count


def first_seed(data: Any) -> Any:
    """The body with seed -1 drawn once (the batches' seeds follow on from it)."""
    if isinstance(data, dict) and as_int(data.get("seed", -1)) == -1:
        return dict(data, seed=random_seed())
    return data


def batch_requests(first: GenerationRequest, count: int | None,
                   rebuild: Callable[[int], GenerationRequest] | None = None) -> Iterator[GenerationRequest]:
    """`first`, then the next batches with the seeds after its images'. `rebuild(seed)` makes a
    batch's request (its wildcards picked again with its seed); else `first` with the seed."""
    yield first
    start = first.seed if first.seed >= 0 else random_seed()
    for i in itertools.count(1) if count is None else range(1, count):
        seed = (start + i * first.num_images) % (MAX_SEED + 1)
        yield rebuild(seed) if rebuild is not None else replace(first, seed=seed)


def run_batches(backend: Backend, requests: Iterator[GenerationRequest], count: int | None, owner: str | None,
                user: str | None = None, wait: Callable[[int, Job], None] | None = None) -> GenerationResult:
    """All the batches' images as one result (the first batch's request); a Stop keeps the batches
    made, with a warning saying so, or raises Cancelled when none was."""
    results: list[GenerationResult] = []
    stopped = run_in_turn(lambda req: backend.submit(req, owner, user), requests,
                          lambda i, job, result: results.append(result), wait)
    images = [item for r in results for item in r.images]
    if not images:
        raise Cancelled()
    warnings = [r.warning for r in results if r.warning]
    if stopped and count is not None:
        warnings.append(STOPPED_BATCHES.format(k=len(results), n=count))
    return GenerationResult(request=results[0].request, images=images, seconds=sum(r.seconds for r in results),
                            warning=" ".join(dict.fromkeys(warnings)),
                            peak_vram_bytes=max((r.peak_vram_bytes or 0 for r in results), default=0) or None)
