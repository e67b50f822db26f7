"""The job queue and its two threads: the worker, which runs jobs one at a time in order, and the
idle loop, which asks the manager every poll whether a quiet spell should unload the model.

What a job does is the manager's (it passes `run`); this module orders jobs, lets queued
generations that can share a pipeline call ride along with the one ahead of them, and counts what
Retry-After and the idle unload need.
"""
from __future__ import annotations

import collections
import itertools
import logging
import threading
from typing import Callable

from ..errors import Cancelled, ManagerClosed, QueueFull
from ..jobs import GENERATE, LOAD, Job

log = logging.getLogger(__name__)



class JobQueue:
    """The one lock of the pipeline manager and the queue state it guards.

    Lock rule: `lock` guards the fields set in __init__ below and the manager's status fields (the
    manager's `_lock` is this lock: one lock, so a status snapshot's busy flag and queue length
    agree with the queue). It is never held while a job runs; methods named `*_locked` expect the
    caller to hold it, the others take it themselves.
    """

    def __init__(self, run: Callable[[Job], None], *, batch_max: int, clock: Callable[[], float],
                 idle_poll_s: float, on_quiet_locked: Callable[[float], None]):
        self._run = run                         # runs one job and settles its future (never raises)
        self._batch_max = batch_max
        self._clock = clock
        self._idle_poll_s = idle_poll_s
        self._on_quiet_locked = on_quiet_locked   # (seconds since the last request), lock held
        self.lock = threading.Lock()
        self._wakeup = threading.Condition(self.lock)
        self.waiting: collections.deque[Job] = collections.deque()
        self.current: Job | None = None
        self.pending_generations = 0            # queued and running generations, riders included
        self.closed = False
        self._ids = itertools.count(1)
        self.last_activity = clock()
        self.job_seconds = 5.0                  # running mean of a generation's seconds, for Retry-After
        self._worker = threading.Thread(target=self._worker_loop, name="zimage-gpu-worker", daemon=True)
        self._idle_thread = threading.Thread(target=self._idle_loop, name="zimage-idle", daemon=True)

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._worker.start()
        self._idle_thread.start()

    def close(self, timeout: float) -> None:
        """Refuse new jobs, fail the waiting ones with ManagerClosed, stop the running one after its
        current step and wait up to `timeout` seconds for the worker to end."""
        with self.lock:
            self.closed = True
            waiting, self.waiting = list(self.waiting), collections.deque()
            if self.current:
                self.current.cancel_event.set()
            self._wakeup.notify_all()
        for job in waiting:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(ManagerClosed())
        if self._worker.is_alive():
            self._worker.join(timeout)

    @property
    def alive(self) -> bool:
        return self._worker.is_alive()

    # ---- with the lock held ----------------------------------------------------------------
    def put_locked(self, job: Job) -> Job:
        if self.closed:
            raise ManagerClosed()
        job.id = next(self._ids)
        self.waiting.append(job)
        self._renumber_locked()
        self._wakeup.notify_all()
        return job

    def admit_generation_locked(self, queue_max: int) -> None:
        """Count one more generation, or raise QueueFull (with its Retry-After) when `queue_max`
        already wait."""
        waiting = self.pending_generations - (1 if self.current and self.current.kind == GENERATE else 0)
        if waiting >= queue_max:
            retry = max(1, round(self.job_seconds * (waiting + 1)))
            raise QueueFull(waiting, retry)
        self.pending_generations += 1

    def running_locked(self) -> list[Job]:
        """The running job and its riders (the members of one pipeline call); [] when idle."""
        return [self.current, *self.current.riders] if self.current else []

    def touch_locked(self) -> None:
        """A request arrived: the idle clock starts again."""
        self.last_activity = self._clock()

    def idle_s_locked(self) -> float:
        return self._clock() - self.last_activity

    def _renumber_locked(self) -> None:
        for position, job in enumerate(self.waiting, 1):
            job.queue_position = position

    # ---- the threads -----------------------------------------------------------------------
    def _worker_loop(self) -> None:
        while True:
            with self.lock:
                while not self.waiting and not self.closed:
                    self._wakeup.wait()
                if self.closed:
                    return
                job = self.waiting.popleft()
                self._renumber_locked()
                job.queue_position = 0
                self.current = job
            started = self._clock()
            try:
                # A waiter that gives up cancels the Future (asyncio.wrap_future does when its task is
                # cancelled, e.g. a Ray Serve request cancelled by Stop): such a job is skipped, and a
                # running one's Future can no longer be cancelled; setting the result of a cancelled
                # Future would raise here and end the worker.
                if job.future.set_running_or_notify_cancel():
                    if job.kind == GENERATE and self._batch_max > 1 and not job.cancelled:
                        with self.lock:
                            self._gather_riders_locked(job)
                            self._renumber_locked()
                    self._run(job)
            finally:
                for member in [job, *job.riders]:
                    if member.phase != "saving" or member.future.done():   # else the saver thread ends it
                        member.phase = "done"
                for rider in job.riders:
                    if not rider.settled and not rider.future.done():   # never left waiting, whatever happened to the lead
                        rider.future.set_exception(Cancelled())
                with self.lock:
                    self.current = None
                    if job.kind == GENERATE:
                        self.pending_generations -= 1 + len(job.riders)
                        self.job_seconds = 0.8 * self.job_seconds + 0.2 * (self._clock() - started)
                    if job.kind in (GENERATE, LOAD):
                        self.last_activity = self._clock()

    def _gather_riders_locked(self, lead: Job) -> None:
        """Take the waiting generations that can share `lead`'s pipeline call (same size, steps,
        guidance and negative prompt; --batch-max images in all), up to the first job of another
        kind: nothing moves ahead of an unload or a plan switch queued before it."""
        from ..request import batch_key

        images = lead.request.num_images
        for job in list(self.waiting):
            if job.kind != GENERATE:
                break
            if job.cancelled or batch_key(job.request) != batch_key(lead.request):
                continue
            if images + job.request.num_images > self._batch_max:
                break
            self.waiting.remove(job)
            job.queue_position = 0
            if job.future.set_running_or_notify_cancel():
                lead.riders.append(job)
                images += job.request.num_images
            else:
                self.pending_generations -= 1    # its waiter gave up

    def _idle_loop(self) -> None:
        while True:
            with self.lock:
                self._wakeup.wait(self._idle_poll_s)
                if self.closed:
                    return
                quiet = self.current is None and not self.waiting
                idle_s = self.idle_s_locked()
                if quiet:
                    self._on_quiet_locked(idle_s)
