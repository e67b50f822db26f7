"""Requests through the Backend one after another (a grid's cells, a batch count's batches,
Generate forever): each one a job of the backend's queue, so one model load serves them all and
other callers' jobs take their turns between them.

One job waits in the queue behind the running one, so a Stop (the backend's cancel for the owner)
finds a job of this run to cancel while one runs or waits; that job's Cancelled (or its stopped
result) ends the run, and what finished before is kept. The instant when none does (both ended
before the caller looked again: the tiny model makes an image in less than the page's 0.2 s poll,
and Stop found nothing to cancel while Generate forever went on) is the caller's `stop` event.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Callable, Iterable, Iterator

from ..errors import Cancelled, QueueFull
from ..jobs import Job
from ..request import GenerationRequest, GenerationResult

log = logging.getLogger(__name__)

AHEAD = 1          # jobs queued behind the running one


def run_in_turn(submit: Callable[[GenerationRequest], Job], requests: Iterable[GenerationRequest],
                on_result: Callable[[int, Job, GenerationResult], None],
                wait: Callable[[int, Job], None] | None = None, stop: threading.Event | None = None) -> bool:
    """Submit `requests` in order and give each result to `on_result(index, job, result)`; `wait`
    (index, job) is called first while the job runs (progress). `stop`, once set (the caller's Stop,
    beside the backend's cancel), ends the run after the job being waited for: nothing more is
    submitted and the queued job is cancelled. True when a Stop ended the run before the last
    request. A failure other than a Stop cancels the queued job and is raised."""
    todo: Iterator[GenerationRequest] = iter(requests)
    pending: deque[tuple[int, Job]] = deque()
    index, held = 0, None

    def stopping() -> bool:
        return stop is not None and stop.is_set()

    def top_up() -> None:
        nonlocal index, held
        while len(pending) <= AHEAD and not stopping():
            req = held if held is not None else next(todo, None)
            if req is None:
                return
            try:
                pending.append((index, submit(req)))
                if stopping():        # a Stop while it was being submitted, too late for the cancel to see it
                    pending[-1][1].cancel_event.set()
            except QueueFull:
                if not pending:       # nothing of ours runs: the caller hears the queue is full
                    raise
                held = req            # others fill the queue: this one goes in after ours ends
                return
            held = None
            index += 1

    def drop_pending() -> None:
        for _, job in pending:
            job.cancel_event.set()
        pending.clear()

    def stopped() -> bool:
        """A Stop ended the run: the queued job is cancelled; one that had finished already (the tiny
        model's next image is often made before the caller looks) still gives its result."""
        for i, job in pending:
            if job.future.done() and not job.future.cancelled() and job.future.exception() is None:
                on_result(i, job, job.future.result())
        drop_pending()
        return True

    try:
        top_up()
        while pending:
            i, job = pending.popleft()
            if wait is not None:
                wait(i, job)
            try:
                result = job.future.result()
            except Cancelled:
                return stopped()
            on_result(i, job, result)
            if job.cancelled or stopping():   # stopped after some of its images: they are kept, the run ends
                return stopped()
            top_up()
    except BaseException:
        drop_pending()
        raise
    return False
