"""The page process's link to the model worker process: start it and send it the backlog, send
frames, read its reports and answers on a thread of its own, stop it, and start another when it dies
(the running image fails with WorkerCrashed, the waiting ones go to the next worker; a crash loop
pauses between starts).

Methods of `WorkerBackend` (worker_backend.py), which owns every field they touch, its `_lock`
(never held while sending) and its `_send_lock` (one frame at a time on the socket).
"""
from __future__ import annotations

import logging
import threading
import time

from ..errors import BackendUnavailable
from ..jobs import Job
from .worker_process import crash_error, exit_description, restarting_status, spawn_worker
from .worker_wire import WorkerReport

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 15.0       # a stopping worker writes the images it made, then exits; killed after this
QUICK_DEATH_S = 10.0        # a worker that dies sooner than this after its start counts towards a crash loop
MAX_PAUSE_S = 30.0          # the longest pause before restarting a worker that keeps dying
IDLE_PHASES = frozenset({"waiting", "done"})


def never_run(job: Job) -> None:
    raise AssertionError("a worker job runs in the model worker process, not here")


class WorkerLink:
    """WorkerBackend's process and socket (mixed in; the fields are the backend's)."""

    def start(self, warm: bool = True) -> "WorkerLink":
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
                future = self._acts.pop(ident, (Job(kind="", fn=never_run), 0))[0].future
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
