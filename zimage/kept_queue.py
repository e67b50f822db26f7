"""The queue that outlives a restart: a Backend that records every generation submitted through it
in the kept queue (store/job_queue.py) and passes everything else to the backend it wraps, so the
page, the seed API, the A1111 and OpenAI routes and the MCP tools are all covered by one wrapping
point (web/server.serve), whichever backend runs the model (local worker, a worker process, Ray).

A job's row: `waiting` when submitted; `running` once the backend starts it (a watcher thread looks
at the live jobs' futures and phases: the Backend protocol has no start callback); removed when its
future settles (its images are saved by then, or it failed or was cancelled: the user saw that).
While the app closes, a job the backend drops unrun (ManagerClosed) stays `waiting` and the one it
stops stays as `interrupted`; after a kill -9 nothing runs at all, and the next start marks the
`running` row `interrupted` (JobQueue.open). Kept jobs run again only on request (run_kept), or at
start with --resume-queue: the waiting ones, never the interrupted one, which may be what ended
the app (an out-of-memory kill) and would end it again.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from concurrent.futures import Future
from typing import Any

from .errors import Cancelled, KeptJobActive, KeptJobNotFound, KeptJobUnreadable, ManagerClosed, QueueBusy
from .jobs import Backend, Job, JobPhase
from .request import GenerationRequest, GenerationResult
from .store.job_queue import INTERRUPTED, RUNNING, WAITING, JobQueue, KeptJob

log = logging.getLogger(__name__)

WATCH_S = 0.1          # how often the live jobs are looked at for their start (a few attribute reads each)


class KeptQueueBackend:
    """Wraps `inner` (not started); `start()` starts it and returns this wrapper."""

    def __init__(self, inner: Backend, queue: JobQueue, watch_s: float = WATCH_S):
        self._inner = inner
        self.kept = queue
        self._watch_s = watch_s
        self._lock = threading.Lock()      # guards _live and _marked; held over run_kept's check-and-submit
        self._live: dict[int, Job] = {}    # kept id -> this process's job, until its future settles
        self._marked: set[int] = set()     # kept ids already marked running
        self._closing = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="zimage-kept-queue", daemon=True)

    def __getattr__(self, name: str) -> Any:          # the rest of the Backend surface, unchanged
        return getattr(self._inner, name)

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "KeptQueueBackend":
        self._inner.start()
        kept = self.kept.open()
        waiting = [job for job in kept if job.state == WAITING]
        if kept:
            log.info("kept queue: %d job(s) from the last run (%d waiting, %d interrupted)%s", len(kept), len(waiting),
                     sum(job.state == INTERRUPTED for job in kept),
                     ", resuming the waiting ones" if self.settings.resume_queue and waiting else "")
        self._watcher.start()
        if self.settings.resume_queue:
            for job in waiting:
                try:
                    self.run_kept(job.id)
                except Exception as e:       # one job that cannot run costs that job
                    log.warning("kept queue: job %d not resumed: %s", job.id, e)
        return self

    def close(self, timeout: float = 10.0) -> None:
        self._closing.set()
        try:
            self._inner.close(timeout)
        finally:
            if self._watcher.is_alive():
                self._watcher.join(2)
            self.kept.close()

    # ---- generations -----------------------------------------------------------------------------
    def submit(self, req: GenerationRequest, owner: str | None = None, user: str | None = None) -> Job:
        req = req.with_resolved_seed()           # kept resolved: a job run again makes the image it would have
        try:
            kept_id = self.kept.add(req, owner, user)
        except (QueueBusy, sqlite3.Error, OSError) as e:
            # The generation matters more than its record: it runs, it just does not outlive a restart.
            log.warning("kept queue: a job not recorded (%s); it runs, but is not kept over a restart", e)
            return self._inner.submit(req, owner, user)
        try:
            job = self._inner.submit(req, owner, user)
        except BaseException:
            self._forget(kept_id)
            raise
        self._track(kept_id, job)
        return job

    def generate(self, req: GenerationRequest, owner: str | None = None,
                 timeout: float | None = None) -> GenerationResult:
        return self.submit(req, owner).future.result(timeout)

    # ---- the kept jobs ---------------------------------------------------------------------------
    def kept_jobs(self, user: str | None = None) -> list[KeptJob]:
        """Every kept job (this run's and earlier runs'), oldest first; with `user`, only theirs."""
        return [job for job in self.kept.list() if user is None or job.user == user]

    def is_live(self, job_id: int) -> bool:
        with self._lock:
            return job_id in self._live

    def run_kept(self, job_id: int, user: str | None = None) -> Job:
        """Submit kept job `job_id` (waiting or interrupted, from an earlier run) to the backend again."""
        with self._lock:
            job = self._get(job_id, user)
            if job_id in self._live:
                raise KeptJobActive(job_id)
            try:
                req = self.kept.request_of(job)
            except FileNotFoundError:
                raise KeptJobUnreadable(job_id, "its input image files are gone") from None
            except Exception as e:
                log.warning("kept queue: job %d unreadable: %r", job_id, e)
                raise KeptJobUnreadable(job_id, "its stored request cannot be read") from None
            live = self._inner.submit(req, job.owner, job.user)
            self.kept.mark(job_id, WAITING)
            self._live[job_id] = live
        self._track(job_id, live)
        return live

    def drop_kept(self, job_id: int, user: str | None = None) -> KeptJob:
        """Remove exactly job `job_id`; one this run has queued or running is stopped too."""
        with self._lock:
            job = self._get(job_id, user)
            live = self._live.pop(job_id, None)
            self._marked.discard(job_id)
        if live is not None:
            live.cancel_event.set()      # waiting: the backend skips it; running: it stops after this step
        self.kept.remove(job_id)
        return job

    def _get(self, job_id: int, user: str | None) -> KeptJob:
        job = self.kept.get(job_id)
        if job is None or (user is not None and job.user != user):
            raise KeptJobNotFound(job_id)
        return job

    # ---- bookkeeping -----------------------------------------------------------------------------
    def _track(self, kept_id: int, job: Job) -> None:
        with self._lock:
            self._live[kept_id] = job
        job.future.add_done_callback(lambda future: self._settled(kept_id, future))

    def _settled(self, kept_id: int, future: Future) -> None:
        with self._lock:
            if self._live.get(kept_id) is not None and self._live[kept_id].future is not future:
                return                   # an older run of a job that was run again
            self._live.pop(kept_id, None)
            was_running = kept_id in self._marked
            self._marked.discard(kept_id)
        error = None if future.cancelled() else future.exception()
        try:
            if self._closing.is_set() and (future.cancelled() or isinstance(error, (ManagerClosed, Cancelled))):
                # Dropped or stopped because the app is closing: kept for the next start.
                self.kept.mark(kept_id, INTERRUPTED if was_running or isinstance(error, Cancelled) else WAITING)
            else:
                self.kept.remove(kept_id)
        except Exception as e:           # a locked or gone file: the next start sees the row as it was
            log.warning("kept queue: job %d not updated after it ended: %s", kept_id, e)

    def _forget(self, kept_id: int) -> None:
        try:
            self.kept.remove(kept_id)
        except Exception as e:
            log.warning("kept queue: job %d left recorded: %s", kept_id, e)

    def _watch(self) -> None:
        while not self._closing.wait(self._watch_s):
            with self._lock:
                started = [kept_id for kept_id, job in self._live.items()
                           if kept_id not in self._marked and not job.future.done()
                           and (job.future.running() or job.phase != JobPhase.WAITING)]
                self._marked.update(started)
            for kept_id in started:
                try:
                    self.kept.mark(kept_id, RUNNING)
                except Exception as e:
                    log.warning("kept queue: job %d not marked running: %s", kept_id, e)


def with_kept_queue(backend: Backend) -> KeptQueueBackend:
    """`backend` (not started) with its generations kept in `<outputs>/.index/queue.sqlite3`."""
    return KeptQueueBackend(backend, JobQueue(backend.settings.outputs_dir))
