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
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace

from .. import startup
from ..config import Settings
from ..errors import BackendUnavailable, Cancelled, QueueFull
from ..jobs import CACHE, ENHANCE, GENERATE, IMPORT, LOAD, LOW_VRAM, UNLOAD, Job, matches
from ..request import GenerationRequest, GenerationResult
from ..state import MemoryInfo, Status
from ..store.cache_ops import check_confirmed
from ..store.outputs import OutputStore
from .worker_wire import WorkerReport, page_status
from .worker_process import crash_error, exit_description, restarting_status, spawn_worker

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 10.0       # a synchronous question to the worker (cancel, preview) answers within this
STOP_TIMEOUT_S = 15.0       # a stopping worker writes the images it made, then exits; killed after this
QUICK_DEATH_S = 10.0        # a worker that dies sooner than this after its start counts towards a crash loop
MAX_PAUSE_S = 30.0          # the longest pause before restarting a worker that keeps dying
IDLE_PHASES = frozenset({"waiting", "done"})


@dataclass(eq=False)
class WorkerJob(Job):
    """A generation as the page knows it; its progress fields follow the worker's reports."""
    key: str = ""
    sent_to: int = 0              # the worker incarnation it was sent to (0: not sent yet)


def _never_run(job: Job) -> None:
    raise AssertionError("a worker job runs in the model worker process, not here")


class WorkerBackend:
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

    # ---- the worker's life ----------------------------------------------------------------------
    def start(self, warm: bool = True) -> WorkerBackend:
        """Start a worker (`warm`: it imports torch at once, or preloads with --preload) and send it
        what waits for one: generations and commands that arrived while none was running."""
        proc, conn = spawn_worker(self.settings, warm)
        self._lock.acquire()
        self._send_lock.acquire()      # held until the backlog is sent: nothing overtakes it
        try:
            self._incarnation += 1
            incarnation = self._incarnation
            self._proc, self._conn, self._started_at = proc, conn, time.monotonic()
            outbox, self._outbox = self._outbox, []
            resend = [j for j in self._jobs.values() if j.sent_to == 0]
            for job in resend:
                job.sent_to = incarnation
            for cid, (job, sent) in list(self._acts.items()):
                if sent == 0:
                    self._acts[cid] = (job, incarnation)
        finally:
            self._lock.release()
        try:
            for message in outbox + [("submit", j.key, j.request, j.owner, j.user) for j in resend]:
                conn.send(message)
        except OSError:
            pass                       # it died at once: its reader sees the end and starts another
        finally:
            self._send_lock.release()
        threading.Thread(target=self._read_loop, args=(proc, conn, incarnation),
                         name=f"zimage-worker-{incarnation}", daemon=True).start()
        log.info("model worker process %d started (pid %d)", incarnation, proc.pid)
        return self

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

    def _stop_worker(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Ask the worker to stop (it writes the images it made), kill it if it does not in time.
        From here on, what arrives waits for the next worker (or fails on close)."""
        with self._lock, self._send_lock:
            proc, conn, self._conn = self._proc, self._conn, None
        if conn is not None:
            try:
                conn.send(("stop",))
            except OSError:
                pass
        if proc is not None:
            try:
                proc.wait(timeout)
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: it hangs; end it
                log.warning("the model worker did not stop in %.0f s: killing it", timeout)
                proc.kill()
                proc.wait()
        if conn is not None:
            conn.close()

    def _send(self, message: tuple, incarnation: int | None = None) -> bool:
        """Send to the worker now running (only if it is still `incarnation`, when given). Raises
        BackendUnavailable when none is; False when `incarnation` has ended (its end handled the message)."""
        with self._send_lock:
            if incarnation is not None and incarnation != self._incarnation:
                return False
            if self._conn is None:
                if incarnation is not None:
                    return False
                raise BackendUnavailable("The model process is not running.")
            try:
                self._conn.send(message)
            except OSError as e:
                if incarnation is not None:
                    return False
                raise BackendUnavailable("The model process is not running.") from e
        return True

    def _read_loop(self, proc, conn, incarnation: int) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # noqa: BLE001 - a frame that does not unpickle: a bug; the rest still count
                log.exception("a message from the model worker could not be read")
                continue
            self._dispatch(message)
        self._worker_ended(proc, incarnation)

    def _dispatch(self, message: tuple) -> None:
        kind = message[0]
        if kind == "status":
            report: WorkerReport = message[1]
            with self._lock:
                self._report, self._restart_status = report, None
                for key, p in report.jobs.items():
                    job = self._jobs.get(key)
                    if job is not None:
                        (job.phase, job.step, job.total_steps, job.images_done, job.images_total,
                         job.step_seconds, job.decode_s_per_image, job.save_s_per_image,
                         job.queue_position) = (p.phase, p.step, p.total_steps, p.images_done, p.images_total,
                                                p.step_seconds, p.decode_s_per_image, p.save_s_per_image,
                                                p.queue_position)
                        job.skipped = job.skipped or p.skipped
            return
        _, ident, ok, value = message
        with self._lock:
            if kind == "done":
                target = self._jobs.pop(ident, None)
                future = target.future if target is not None else None
                if target is not None:
                    target.phase = "done"
            elif kind == "settled":
                future = self._acts.pop(ident, (Job(kind="", fn=_never_run), 0))[0].future
            else:
                future = self._calls.pop(ident, (None, 0))[0]
        if future is not None and not future.done():
            future.set_result(value) if ok else future.set_exception(value)

    def _worker_ended(self, proc, incarnation: int) -> None:
        """The worker's socket closed: on purpose (close, unload to none), or it died."""
        returncode = proc.wait()
        with self._lock:
            if self._closing or self._retiring == incarnation:
                return
            with self._send_lock:          # from here, what arrives waits for the next worker
                conn, self._conn = self._conn, None
            why = exit_description(returncode)
            self.last_crash = why
            lived_s = time.monotonic() - self._started_at
            self._quick_deaths = self._quick_deaths + 1 if lived_s < QUICK_DEATH_S else 0
            crash = crash_error(why)
            lost = [j for j in self._jobs.values() if j.sent_to == incarnation and j.phase not in IDLE_PHASES]
            for job in lost:
                del self._jobs[job.key]
            for job in self._jobs.values():
                if job.sent_to == incarnation:         # waiting there: it goes to the next worker
                    job.sent_to, job.phase, job.step = 0, "waiting", 0
            dead_acts = [cid for cid, (_, sent) in self._acts.items() if sent == incarnation]
            failed = [self._acts.pop(cid)[0].future for cid in dead_acts] + [j.future for j in lost]
            failed += [self._calls.pop(cid)[0] for cid, (_, sent) in list(self._calls.items()) if sent == incarnation]
            if self._report is not None:
                self._load_base += self._report.load_count
            self._report = None
            self._restart_status = restarting_status(self.settings.model, crash)
        if conn is not None:
            conn.close()
        log.error("the model worker process %d ended (%s) with %d image(s) running and %d waiting: restarting it",
                  incarnation, why, len(lost), len(self._jobs))
        for future in failed:
            if not future.done():
                future.set_exception(crash)
        pause = min(MAX_PAUSE_S, 2.0 ** (self._quick_deaths - 1)) if self._quick_deaths > 1 else 0.0
        if pause:
            log.warning("the model worker keeps ending: waiting %.0f s before the next start", pause)
            time.sleep(pause)
        with self._lock:
            if self._closing:
                return
            self.restarts += 1
        self.start(warm=True)

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
            job = WorkerJob(kind=GENERATE, fn=_never_run, owner=owner, user=user, id=next(self._ids),
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
        job = Job(kind=kind, fn=_never_run)
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
        self.preload().future.result(timeout)
        return self.status()

    def unload(self, to: str = "none") -> Job:
        if to not in ("cpu", "none"):
            raise ValueError(f"unload target must be 'cpu' or 'none', got {to!r}")
        inner = self._act(UNLOAD, "unload", to)
        if to == "cpu":
            return inner
        outer = Job(kind=UNLOAD, fn=_never_run, id=inner.id)

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
