"""The model worker process (`python -m zimage.scale.model_worker FD`): the one process that imports
torch and owns the PipelineManager, answering the page process (worker_backend.WorkerBackend) over
a Unix socket pair. The page never waits for torch's imports, a load or a compile under its GIL, and
a crash here (kill -9, a CUDA fault, the OOM killer) ends this process, not the page.

Messages are pickled tuples (multiprocessing.connection: length-prefixed frames over the socket).
Page -> worker:
    ("submit", key, request, owner, user)     a generation; answered by ("done", key, ok, value)
    ("act", cid, name, args)                  preload, unload, ... (a manager method returning a Job);
                                              answered by ("settled", cid, ok, value) when the Job ends
    ("call", cid, name, args)                 cancel, loras, preview, cancel_download; ("reply", cid, ok, value)
    ("stop",)                                 close the manager (images made are written) and exit
Worker -> page:
    ("status", WorkerReport)                  every REPORT_S while something changes, else every HEARTBEAT_S,
                                              and right before each answer (so a settled Job's status is current)
Images are saved here, into the outputs folder, as the in-process manager does; the result (with
its pixels and the saved paths) crosses back whole. Typed errors are pickle-safe (errors.py).
"""
from __future__ import annotations

import logging
import os
import pickle
import sys
import threading
import time
from multiprocessing.connection import Connection

from .. import startup
from ..errors import ZImageError
from ..state import MemoryInfo
from .worker_wire import JobProgress, WorkerReport

log = logging.getLogger(__name__)

REPORT_S = 0.1            # progress reports while a job runs (the page's progress bar polls at ~0.25 s)
HEARTBEAT_S = 1.0         # the status (and memory) when nothing changes
DELAY_ENV = "ZIMAGE_WORKER_START_DELAY_S"   # tests: a worker whose imports take this much longer
ACTIONS = frozenset({"preload", "unload", "set_low_vram", "import_model_stack", "repair", "verify", "delete_cached",
                     "enhance_prompt"})
CALLS = frozenset({"cancel", "loras", "preview", "cancel_download"})


def progress_of(job) -> JobProgress:
    return JobProgress(job.phase, job.step, job.total_steps, job.images_done, job.images_total, job.step_seconds,
                       job.decode_s_per_image, job.save_s_per_image, job.queue_position, job.cancelled, job.skipped)


def pickle_safe(value):
    """`value`, or for an exception that does not pickle (a library's own), a ZImageError saying what it was."""
    try:
        pickle.dumps(value)
        return value
    except Exception:  # noqa: BLE001 - anything unpicklable is described instead
        if isinstance(value, BaseException):
            return ZImageError(f"{value.__class__.__name__}: {str(value)[:500]}")
        raise


class WorkerServer:
    def __init__(self, conn: Connection, manager):
        self.conn = conn
        self.manager = manager
        self._send_lock = threading.Lock()       # one frame at a time on the socket
        self._jobs_lock = threading.Lock()       # guards _jobs
        self._jobs: dict[str, object] = {}       # key -> the manager's Job, until its answer is sent
        self._stop = threading.Event()
        self._memory: MemoryInfo | None = None
        self._memory_at = 0.0

    def send(self, message: tuple) -> None:
        with self._send_lock:
            self.conn.send(message)

    def report(self) -> WorkerReport:
        m = self.manager
        now = time.monotonic()
        if now - self._memory_at >= HEARTBEAT_S:
            self._memory, self._memory_at = m.memory(), now
        with self._jobs_lock:
            jobs = {key: progress_of(job) for key, job in self._jobs.items()}
        return WorkerReport(m.status(), m.load_count, m.gpu_device, self._memory, os.getpid(),
                            startup.PROCESS_START_EPOCH, jobs)

    def send_report(self) -> WorkerReport:
        report = self.report()
        self.send(("status", report))
        return report

    def _answer(self, kind: str, ident, future) -> None:
        error = future.exception()
        ok, value = (True, future.result()) if error is None else (False, error)
        try:
            self.send_report()
            self.send((kind, ident, ok, pickle_safe(value)))
        except (OSError, EOFError):
            pass                                 # the page is gone: serve() exits on its own

    def _on_done(self, key: str, future) -> None:
        self._answer("done", key, future)
        with self._jobs_lock:
            self._jobs.pop(key, None)

    def handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "submit":
            _, key, req, owner, user = message
            try:
                job = self.manager.submit(req, owner, user)
            except Exception as e:  # noqa: BLE001 - QueueFull and the like go back as the answer
                self.send(("done", key, False, pickle_safe(e)))
                return
            with self._jobs_lock:
                self._jobs[key] = job
            job.future.add_done_callback(lambda f, key=key: self._on_done(key, f))
        elif kind == "act":
            _, cid, name, args = message
            if name not in ACTIONS:
                raise ValueError(f"unknown action {name!r}")
            try:
                job = getattr(self.manager, name)(*args)
            except Exception as e:  # noqa: BLE001 - a refusal (a bad unload target) is the answer
                self.send(("settled", cid, False, pickle_safe(e)))
                return
            job.future.add_done_callback(lambda f, cid=cid: self._answer("settled", cid, f))
        elif kind == "call":
            _, cid, name, args = message
            try:
                value = self._call(name, args)
                ok = True
            except Exception as e:  # noqa: BLE001
                ok, value = False, e
            self.send(("reply", cid, ok, pickle_safe(value)))
        elif kind == "stop":
            self._stop.set()

    def _call(self, name: str, args: tuple):
        if name not in CALLS:
            raise ValueError(f"unknown call {name!r}")
        if name == "preview":
            with self._jobs_lock:
                job = self._jobs.get(args[0])
            return self.manager.preview_png(job) if job is not None else None
        return getattr(self.manager, name)(*args)

    def _report_loop(self) -> None:
        last, last_sent = None, 0.0
        while not self._stop.wait(REPORT_S):
            report = self.report()
            changed = (report.status, report.jobs, report.load_count) != last
            if changed or time.monotonic() - last_sent >= HEARTBEAT_S:
                try:
                    self.send(("status", report))
                except (OSError, EOFError):
                    return
                last, last_sent = (report.status, report.jobs, report.load_count), time.monotonic()

    def serve(self) -> None:
        """Until the page says stop or goes away (its end of the socket closes: EOF)."""
        threading.Thread(target=self._report_loop, name="zimage-worker-report", daemon=True).start()
        while not self._stop.is_set():
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                log.info("the page process is gone: the model worker ends")
                break
            self.handle(message)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [model worker] %(name)s: %(message)s")
    startup.mark(startup.IMPORTS_STARTED)
    conn = Connection(int(argv[0]))
    settings, warm = pickle.loads(conn.recv_bytes())
    delay = float(os.environ.get(DELAY_ENV) or 0)
    if delay > 0:
        time.sleep(delay)                        # a slow disk's imports, for the page-first tests
    from ..engine.demo import local_manager

    manager = local_manager(settings).start()
    server = WorkerServer(conn, manager)
    server.send_report()
    if warm and settings.preload:
        manager.preload()
    elif warm:
        manager.import_model_stack()             # here it slows no page: have torch ready for the first image
    try:
        server.serve()
    finally:
        manager.close()
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
