"""The public job handle every backend returns, its kinds and phases, and the Backend protocol: the
surface the page and the HTTP routes use to reach the model, whichever backend runs it.

`WorkerBackend` (--backend local, the default: the manager in a model worker process, restarted if
it dies), `PipelineManager` itself (--backend inprocess: one process) and `RayBackend` (--backend ray:
the manager as Ray Serve replicas) provide it; `app.create_backend` picks one.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable, Protocol

from .config import Settings
from .request import GenerationRequest, GenerationResult
from .state import MemoryInfo, Status


class JobKind(StrEnum):
    GENERATE = "generate"
    LOAD = "load"
    UNLOAD = "unload"
    LOW_VRAM = "low_vram"
    IDLE = "idle"
    IMPORT = "import"
    CACHE = "cache"          # verify, repair, delete of a cached model
    COMPILE = "compile"      # the background compile's blocks swapped in, between two requests
    ENHANCE = "enhance"      # a prompt rewritten by the text encoder (or the --enhancer-url endpoint)


class JobPhase(StrEnum):
    """Where a job is; a StrEnum, so `job.phase == "saving"` reads as it always did."""
    WAITING = "waiting"
    LOADING = "loading"
    ENCODING = "encoding"
    GENERATING = "generating"
    DECODING = "decoding"
    SAVING = "saving"
    DONE = "done"


GENERATE, LOAD, UNLOAD, LOW_VRAM, IDLE, IMPORT, CACHE, COMPILE, ENHANCE = JobKind


@dataclass(eq=False)
class Job:
    kind: str
    fn: Callable[["Job"], Any]
    owner: str | None = None         # the client that asked: a browser tab's id, X-Client-Id, or the API's default
    id: int = 0
    future: Future = field(default_factory=Future)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    phase: str = JobPhase.WAITING    # a JobPhase
    step: int = 0
    total_steps: int = 0
    images_done: int = 0             # this job's images finished (one pipeline call each) or saved (while "saving")
    images_total: int = 0            # this job's images, known once it runs
    step_seconds: float = 0.0        # mean measured seconds per denoising step, 0.0 until one is timed
    decode_s_per_image: float | None = None    # the manager's last measured figures when it started
    save_s_per_image: float | None = None
    queue_position: int = 0          # 1 = next to run; 0 once running
    latest_latent: Any = None        # the first image's latent after the last step (a CPU copy)
    request: GenerationRequest | None = None   # a generation's request
    riders: list["Job"] = field(default_factory=list)   # queued generations sharing this one's pipeline call
    settled: bool = False            # its future has its outcome, or will have once its images are saved
    user: str | None = None          # the logged-in user who asked (None without auth)
    skipped: bool = False            # stopped by a skip (its own image only), not an interrupt

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    @property
    def eta_s(self) -> float | None:
        """Seconds left: the remaining steps of this image and of the images after it (one
        pipeline call each) at this job's measured step time, then decoding and saving its images
        at the manager's last measured figures; None while any is unknown."""
        decode, save, n = self.decode_s_per_image, self.save_s_per_image, self.images_total
        if self.phase == "done":
            return 0.0
        if self.phase == "saving":
            return None if save is None else max(0, n - self.images_done) * save
        if decode is None or save is None:
            return None
        later = max(0, n - self.images_done - 1)        # images after the one being made
        if self.phase == "decoding":
            return max(0, n - self.images_done) * decode + later * self.total_steps * self.step_seconds + n * save
        if self.phase in ("encoding", "generating") and self.step_seconds:
            steps = max(0, self.total_steps - self.step) + later * self.total_steps
            return steps * self.step_seconds + (later + 1) * decode + n * save
        return None



def matches(job: Job, owner: str | None, user: str | None) -> bool:
    """The job belongs to `owner` and `user`, each checked only when given."""
    return (owner is None or job.owner == owner) and (user is None or job.user == user)



UNLOAD_TARGETS = ("cpu", "none")        # unload(to=...): "cpu" keeps the weights in RAM, "none" frees VRAM and RAM


def check_unload_target(to: Any) -> None:
    """Every backend's unload refuses another target before anything is queued or sent."""
    if to not in UNLOAD_TARGETS:
        raise ValueError(f"unload target must be 'cpu' or 'none', got {to!r}")


def preload_and_wait(backend: Backend, timeout: float | None = None) -> Status:
    """Every backend's ensure_ready: its preload (one load however many ask), waited for, then its status."""
    backend.preload().future.result(timeout)
    return backend.status()



def settle(future: Future, outcome: Any) -> None:
    """Give `future` the outcome: an exception, a value, or (a Future) whatever that one resolves to."""
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    elif isinstance(outcome, Future):
        outcome.add_done_callback(lambda done: future.set_exception(done.exception()) if done.exception()
                                  else future.set_result(done.result()))
    else:
        future.set_result(outcome)



class Backend(Protocol):
    settings: Settings
    _store: Any                   # the OutputStore where images are saved on this machine (compat_api serves
                                  # them; the History tab lists them from its `history` and deletes through it)

    def start(self) -> Backend: ...
    def close(self, timeout: float = 10.0) -> None: ...
    def status(self) -> Status: ...
    @property
    def gpu_device(self) -> str | None: ...
    @property
    def load_count(self) -> int: ...
    def memory(self) -> MemoryInfo: ...                                       # RAM and VRAM in use now
    def loras(self, refresh: bool = False, hash_files: bool = True) -> list[dict]: ...  # the LoRA folder (A1111's list)

    def submit(self, req: GenerationRequest, owner: str | None = None, user: str | None = None) -> Job: ...
    def generate(self, req: GenerationRequest, owner: str | None = None,
                 timeout: float | None = None) -> GenerationResult: ...
    def cancel(self, owner: str | None = None, user: str | None = None, current_only: bool = False) -> int: ...
    def enhance_prompt(self, req: Any, owner: str | None = None, user: str | None = None) -> Job: ...
    def current_generation(self) -> Job | None: ...
    def preview_png(self, job: Job) -> bytes | None: ...                    # the job's latest latent, cheaply

    def preload(self) -> Job: ...
    def ensure_ready(self, timeout: float | None = None) -> Status: ...
    def unload(self, to: str = "none") -> Job: ...
    def set_low_vram(self, enabled: bool) -> Job: ...
    def import_model_stack(self) -> Job: ...
    def cancel_download(self) -> bool: ...
    def repair(self, model_id: str | None = None) -> Job: ...                 # result: hub.RepairReport
    def verify(self, model_id: str | None = None) -> Job: ...                 # result: hub.VerifyReport
    def delete_cached(self, model_id: str, confirmed_id: str | None = None) -> Job: ...   # result: bytes freed
