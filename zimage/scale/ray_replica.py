"""One Ray Serve replica (--backend ray): a PipelineManager of its own, on the GPU Ray gave it.

Generations arrive through the deployment handle (`generate`); everything else (Preload, Unload, Low
VRAM, cache jobs) arrives through the replica board (ray_board.py), which this replica visits every
REPORT_PERIOD_S with its status. Images go back as PNG bytes, so the app saves them in its own
outputs folder even when this replica runs on another machine. Ray is imported inside methods: this
module is imported by the replica process, which has Ray, and by nothing else.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..errors import ZImageError
from ..jobs import Job
from ..request import GenerationRequest, GenerationResult
from ..store.outputs import png_bytes
from .ray_board import COMMANDS, Command
from .replicas import REPORT_PERIOD_S, JobProgress, ReplicaStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteImage:
    png: bytes            # as the replica saved it, with the A1111 `parameters` text chunk
    seed: int
    infotext: str


@dataclass(frozen=True)
class RemoteResult:
    request: GenerationRequest
    images: tuple         # RemoteImage
    seconds: float
    warning: str
    replica_status: ReplicaStatus     # right after the image: the app's view is current at once
    peak_vram_bytes: int | None = None   # the replica GPU's peak during the pipeline call
    batch_images: int = 0             # images in the pipeline call it shared with queued requests (0: alone)


def remote_result(result: GenerationResult, report: ReplicaStatus) -> RemoteResult:
    """What goes back to the app for one generation (its scratch files removed): the images as PNG
    bytes and every figure the local answer has, so seconds_per_image counts a shared batch."""
    images = []
    for item in result.images:
        images.append(RemoteImage(png_bytes(item), item.seed, item.infotext))
        if item.path is not None:
            item.path.unlink(missing_ok=True)
    return RemoteResult(result.request, tuple(images), result.seconds, result.warning, report,
                        peak_vram_bytes=result.peak_vram_bytes, batch_images=result.batch_images)


class ZImageReplica:
    """The body of the Serve deployment (ray_backend wraps it with `serve.deployment`)."""

    def __init__(self, settings: Settings, board_name: str, namespace: str):
        import ray
        from ray import serve

        from ..engine.demo import local_manager

        self.replica_id = serve.get_replica_context().replica_id.unique_id
        # Images are read back as bytes and sent to the app, which keeps them: this folder is scratch.
        self._scratch = tempfile.mkdtemp(prefix="zimage-replica-")
        self.settings = dataclasses.replace(settings, outputs_dir=self._scratch, backend="local", preload=False)
        self.manager = local_manager(self.settings).start()
        context = ray.get_runtime_context()
        self._node_id = context.get_node_id()
        self._node = f"{socket.gethostname()} ({self._node_id[:8]})"
        self._gpu_ids = tuple(str(g) for g in ray.get_gpu_ids())
        self._jobs: dict[str, Job] = {}
        self._done: dict[int, tuple[bool, Any]] = {}
        self._done_lock = threading.Lock()
        self._last_image_at: float | None = None
        self._board_name, self._namespace = board_name, namespace
        self._board = ray.get_actor(board_name, namespace=namespace)
        self._seq, want_loaded = ray.get(self._board.join.remote(self._report()))
        if want_loaded or settings.preload:
            self.manager.preload()
        self._stop = threading.Event()
        self._sync_thread = threading.Thread(target=self._sync_loop, name="zimage-replica-sync", daemon=True)
        self._sync_thread.start()
        log.info("replica %s up on %s (GPUs %s)", self.replica_id, self._node, self._gpu_ids or "none")

    # ---- called through the deployment handle -----------------------------------------------------
    async def generate(self, req: GenerationRequest, owner: str | None, key: str, user: str | None = None) -> dict:
        """{"result": RemoteResult} or {"error": ZImageError}: typed errors travel as values."""
        try:
            job = self.manager.submit(req, owner, user)
        except ZImageError as e:
            return {"error": e}
        self._jobs[key] = job
        try:
            result = await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:       # the app cancelled the request (Stop): stop the job too
            job.cancel_event.set()
            raise
        except ZImageError as e:
            return {"error": e}
        finally:
            self._jobs.pop(key, None)
        self._last_image_at = time.time()
        return {"result": remote_result(result, self._report())}

    def check_health(self) -> None:
        """Serve calls this every health_check_period_s; raising makes Serve replace the replica."""
        if not self.manager.worker_alive:
            raise RuntimeError("the pipeline worker thread has stopped")

    # ---- the board --------------------------------------------------------------------------------
    def _report(self) -> ReplicaStatus:
        jobs = tuple(JobProgress(key, job.phase, job.step, job.total_steps, job.queue_position)
                     for key, job in list(self._jobs.items()))
        return ReplicaStatus(replica_id=self.replica_id, node=self._node, node_id=self._node_id, pid=os.getpid(),
                             gpu_ids=self._gpu_ids, status=self.manager.status(), load_count=self.manager.load_count,
                             last_image_at=self._last_image_at, jobs=jobs, reported_at=time.time())

    def _sync_loop(self) -> None:
        import ray

        while not self._stop.wait(REPORT_PERIOD_S):
            with self._done_lock:
                done = dict(self._done)       # taken before the report, so the report is at least as new
            try:
                commands = ray.get(self._board.sync.remote(self._report(), self._seq, done), timeout=30)
            except Exception as e:  # noqa: BLE001 - the app went away or the board is busy: try again later
                log.warning("replica %s: the board did not answer (%s)", self.replica_id, e.__class__.__name__)
                self._reconnect()
                continue
            with self._done_lock:
                for seq in done:
                    self._done.pop(seq, None)
            for command in commands:
                self._apply(command)
                self._seq = command.seq

    def _reconnect(self) -> None:
        import ray

        try:
            self._board = ray.get_actor(self._board_name, namespace=self._namespace)
        except ValueError:
            pass

    def _apply(self, command: Command) -> None:
        if command.name not in COMMANDS:
            self._finish(command.seq, False, ZImageError(f"Unknown replica command {command.name!r}."))
            return
        try:
            outcome = getattr(self.manager, command.name)(*command.args)
        except ZImageError as e:
            self._finish(command.seq, False, e)
            return
        if isinstance(outcome, Job):
            outcome.future.add_done_callback(lambda f, seq=command.seq: self._finish_future(seq, f))
        else:
            self._finish(command.seq, True, outcome)

    def _finish_future(self, seq: int, future) -> None:
        error = future.exception()
        if error is None:
            self._finish(seq, True, future.result())
        elif isinstance(error, ZImageError):
            self._finish(seq, False, error)
        else:
            self._finish(seq, False, ZImageError(f"{error.__class__.__name__}: {str(error)[:300]}"))

    def _finish(self, seq: int, ok: bool, value: Any) -> None:
        with self._done_lock:
            self._done[seq] = (ok, value)

    # ---- shutdown ---------------------------------------------------------------------------------
    def __del__(self):
        """Serve calls this when it stops the replica on purpose (scale down, app deleted)."""
        stop = getattr(self, "_stop", None)
        if stop is None:
            return
        stop.set()
        try:
            self._board.leave.remote(self.replica_id)
        except Exception as e:      # noqa: BLE001 - the board may be gone with the app; it forgets us then
            log.info("replica %s: could not sign off (%s)", self.replica_id, e.__class__.__name__)
        self.manager.close(timeout=5)
        shutil.rmtree(self._scratch, ignore_errors=True)
