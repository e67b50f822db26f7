"""--backend local: the page process (no torch) in front of one model worker process that owns the
PipelineManager (model_worker.py), behind the same Backend surface as the in-process manager and
the Ray replicas. The page answers while the worker imports torch, loads or compiles, and a worker
that dies (kill -9, a CUDA fault, the OOM killer) costs the image it was running, not the page:

- the running generation ends with WorkerCrashed naming the cause ("killed by signal 9 (SIGKILL)");
- generations still waiting are kept here and sent to the new worker, which starts at once
  (after a second death within QUICK_DEATH_S, after a growing pause, so a crash loop cannot spin);
- the status says "restarting" until the new worker reports.

The worker saves images into the outputs folder itself, as the in-process manager does; results come
back whole. "Unload VRAM and RAM" (to "none") ends the idle worker and starts a bare one (torch not
imported): the model's memory goes back to the system (bench/process_bench.py measures it).

This file is the Backend surface; the process and its socket (start, send, read, restart after a
death) are worker_link.py's.
"""
from __future__ import annotations

import itertools
import logging
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace

from .. import startup
from ..config import Settings
from ..errors import BackendUnavailable, Cancelled, QueueFull
from ..jobs import (CACHE, ENHANCE, GENERATE, IMPORT, LOAD, LOW_VRAM, UNLOAD, Job, check_unload_target, matches,
                   preload_and_wait)
from ..request import GenerationRequest, GenerationResult
from ..state import MemoryInfo, Status
from ..store.cache_ops import check_confirmed
from ..store.outputs import OutputStore
from .worker_link import IDLE_PHASES, WorkerLink, never_run
from .worker_wire import WorkerReport, page_status

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 10.0       # a synchronous question to the worker (cancel, preview) answers within this


@dataclass(eq=False)
class WorkerJob(Job):
    """A generation as the page knows it; its progress fields follow the worker's reports."""
    key: str = ""
    sent_to: int = 0              # the worker incarnation it was sent to (0: not sent yet)


class WorkerBackend(WorkerLink):
    def __init__(self, settings: Settings):
        from ..engine.demo import with_demo_model   # no torch: the --demo model's folder only
        self.settings = with_demo_model(settings)
        self._store = OutputStore(self.settings.outputs_dir)
        self._lock = threading.Lock()           # guards everything below; never held while sending
        self._send_lock = threading.Lock()      # one frame at a time on the socket
        self._ids = itertools.count(1)
        self._jobs: dict[str, WorkerJob] = {}   # generations not answered, in submission order
        self._acts: dict[int, tuple[Job, int]] = {}        # cid -> (Job, incarnation sent to)
        self._calls: dict[int, tuple[Future, int]] = {}
        self._outbox: list[tuple] = []          # messages for the next worker while none is connected
        self._report: WorkerReport | None = None
        self._restart_status: Status | None = None   # shown from a crash until the new worker reports
        self._conn = None
        self._proc = None
        self._incarnation = 0
        self._started_at = 0.0
        self._quick_deaths = 0
        self._load_base = 0                     # loads done by workers that have ended
        self._lora_hashes: dict = {}
        self._closing = False
        self._retiring = 0                      # the incarnation being ended on purpose (unload to none)
        self.restarts = 0                       # workers started again after one died
        self.last_crash = ""                    # the last death's cause, for the status note

    # ---- the worker's life (start, send, read, restart: worker_link.WorkerLink) -----------------
    @property
    def worker_pid(self) -> int | None:
        return getattr(self._proc, "pid", None)

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closing = True
        self._stop_worker(timeout)
        with self._lock:
            leftovers = list(self._jobs.values()) + [job for job, _ in self._acts.values()]
            self._jobs.clear()
            self._acts.clear()
        for job in leftovers:
            if not job.future.done():
                job.future.set_exception(BackendUnavailable("The server is shutting down."))

    # ---- reading --------------------------------------------------------------------------------
    def status(self) -> Status:
        with self._lock:
            report, restarting = self._report, self._restart_status
            waiting_here = sum(1 for j in self._jobs.values() if j.sent_to == 0)
            queued = len(self._jobs)
        if report is None:
            base = restarting or Status(model=self.settings.model, message="The model process is starting.")
            return replace(base, queue_length=queued, startup=tuple(startup.timeline()))
        note = (f"The model process was restarted {self.restarts} time(s); the last one ended ({self.last_crash})."
                if self.last_crash else "")
        return page_status(report, waiting_here, note)

    @property
    def gpu_device(self) -> str | None:
        report = self._report
        return report.gpu_device if report is not None else None

    @property
    def load_count(self) -> int:
        report = self._report
        return self._load_base + (report.load_count if report is not None else 0)

    def memory(self) -> MemoryInfo:
        """The worker's RAM and VRAM (its last report); this process's until it reports."""
        report = self._report
        if report is not None and report.memory is not None:
            return report.memory
        from ..engine.memory import memory_info      # psutil only; never imports torch

        return memory_info(None)

    def loras(self, refresh: bool = False, hash_files: bool = True) -> list[dict]:
        """The LoRA folders, read here (headers, hashes: no torch); a refresh also empties the worker's cache."""
        from ..store.lora_folders import a1111_list_all, lora_folders

        if refresh:
            self._lora_hashes = {}
            try:
                self._ask("loras", (True, False), wait=False)
            except BackendUnavailable:
                pass
        return a1111_list_all(lora_folders(self.settings), self._lora_hashes, hash_files)

    def current_generation(self) -> Job | None:
        with self._lock:
            return next((j for j in self._jobs.values() if j.phase not in IDLE_PHASES), None)

    def preview_png(self, job: Job) -> bytes | None:
        key = getattr(job, "key", "")
        if not key or not job.step:
            return None
        try:
            return self._ask("preview", (key,))
        except (BackendUnavailable, FutureTimeout):
            return None

    def _ask(self, name: str, args: tuple, wait: bool = True, timeout: float = CALL_TIMEOUT_S):
        future: Future = Future()
        with self._lock:
            cid = next(self._ids)
            self._calls[cid] = (future, self._incarnation)
        try:
            self._send(("call", cid, name, args))
        except BackendUnavailable:
            with self._lock:
                self._calls.pop(cid, None)
            raise
        if not wait:
            return None
        try:
            return future.result(timeout)
        finally:
            with self._lock:
                self._calls.pop(cid, None)

    # ---- generations ----------------------------------------------------------------------------
    def submit(self, req: GenerationRequest, owner: str | None = None, user: str | None = None) -> Job:
        req = req.with_resolved_seed()
        with self._lock:
            running = any(j.phase not in IDLE_PHASES for j in self._jobs.values())
            waiting = len(self._jobs) - (1 if running else 0)
            if waiting >= self.settings.queue_max:
                last = self._report.status.last_image_s if self._report is not None else None
                raise QueueFull(waiting, max(1, round((last or 5.0) * (waiting + 1))))
            job = WorkerJob(kind=GENERATE, fn=never_run, owner=owner, user=user, id=next(self._ids),
                            key=f"g{next(self._ids)}", total_steps=req.num_inference_steps, request=req,
                            queue_position=waiting + 1)
            self._jobs[job.key] = job
            if self._conn is not None:
                job.sent_to = self._incarnation
        if job.sent_to:         # else, or if that worker has just died, the next one gets it
            self._send(("submit", job.key, req, owner, user), job.sent_to)
        return job

    def generate(self, req: GenerationRequest, owner: str | None = None, timeout: float | None = None):
        return self.submit(req, owner).future.result(timeout)

    def cancel(self, owner: str | None = None, user: str | None = None, current_only: bool = False) -> int:
        """As PipelineManager.cancel: the worker stops the matching jobs it has (a running one after its
        step); those waiting here for a new worker are dropped here."""
        with self._lock:
            here = [j for j in self._jobs.values() if j.sent_to == 0 and not current_only and matches(j, owner, user)]
            for job in here:
                del self._jobs[job.key]
            there = [j for j in self._jobs.values() if j.sent_to and matches(j, owner, user)
                     and not (current_only and j.phase in IDLE_PHASES)]
        for job in here:
            job.cancel_event.set()
            job.future.set_exception(Cancelled())
        count = 0
        with self._lock:       # a prompt rewrite runs in the worker too: its Stop is the worker's cancel
            enhancing = any(job.kind == ENHANCE and sent for job, sent in self._acts.values())
        if there or enhancing:
            try:
                count = self._ask("cancel", (owner, user, current_only))
            except (BackendUnavailable, FutureTimeout):
                count = 0
            for job in there:
                job.skipped = current_only
                job.cancel_event.set()
        return len(here) + count

    # ---- model commands -------------------------------------------------------------------------
    def _act(self, kind: str, name: str, *args) -> Job:
        job = Job(kind=kind, fn=never_run)
        with self._lock:
            cid = job.id = next(self._ids)
            sent_to = self._incarnation if self._conn is not None else 0
            self._acts[cid] = (job, sent_to)
            if not sent_to:
                self._outbox.append(("act", cid, name, args))
        if sent_to:             # a worker that dies first fails it with WorkerCrashed
            self._send(("act", cid, name, args), sent_to)
        return job

    def preload(self) -> Job:
        with self._lock:
            pending = next((job for job, _ in self._acts.values() if job.kind == LOAD), None)
        return pending or self._act(LOAD, "preload")

    def ensure_ready(self, timeout: float | None = None) -> Status:
        return preload_and_wait(self, timeout)

    def unload(self, to: str = "none") -> Job:
        check_unload_target(to)
        inner = self._act(UNLOAD, "unload", to)
        if to == "cpu":
            return inner
        outer = Job(kind=UNLOAD, fn=never_run, id=inner.id)

        def then(done: Future) -> None:
            if done.exception() is not None:
                outer.future.set_exception(done.exception())
                return
            threading.Thread(target=self._recycle, args=(outer,), name="zimage-worker-recycle", daemon=True).start()
        inner.future.add_done_callback(then)
        return outer

    def _recycle(self, job: Job) -> None:
        """After an unload to "none": end the idle worker and start a bare one (torch not imported),
        so the memory the model used (and torch's own) goes back to the system."""
        with self._lock:
            busy = bool(self._jobs) or any(j.kind != UNLOAD for j, _ in self._acts.values())
            if not busy and not self._closing:
                self._retiring = self._incarnation
                if self._report is not None:
                    self._load_base += self._report.load_count
                self._report = None
        if not busy:
            self._stop_worker()
            self.start(warm=False)
        job.future.set_result(self.status())

    def enhance_prompt(self, req, owner: str | None = None, user: str | None = None) -> Job:
        """A prompt rewrite (engine/enhance_job.py) on the worker's loaded text encoder or its endpoint."""
        return self._act(ENHANCE, "enhance_prompt", req, owner, user)

    def switch_model(self, model: str, name: str = "") -> Job:    # a worker started later loads it too
        self.settings = replace(self.settings, model=model)
        return self._act(LOAD, "switch_model", model, name)

    def set_low_vram(self, enabled: bool) -> Job:
        return self._act(LOW_VRAM, "set_low_vram", bool(enabled))

    def import_model_stack(self) -> Job:
        return self._act(IMPORT, "import_model_stack")
    def repair(self, model_id: str | None = None) -> Job:
        return self._act(CACHE, "repair", model_id)

    def verify(self, model_id: str | None = None) -> Job:
        return self._act(CACHE, "verify", model_id)

    def delete_cached(self, model_id: str, confirmed_id: str | None = None) -> Job:
        check_confirmed(model_id, confirmed_id)
        return self._act(CACHE, "delete_cached", model_id)

    def cancel_download(self) -> bool:
        try:
            return bool(self._ask("cancel_download", ()))
        except (BackendUnavailable, FutureTimeout):
            return False
