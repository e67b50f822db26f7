"""PipelineManager: the single owner of the one shared pipeline, its state machine and its worker.

Everything that touches the pipeline (page, HTTP API, preload, unload, low-VRAM switch, idle unload)
is a Job run one at a time on one worker thread: diffusers pipelines are not thread-safe (the
scheduler keeps step state), and an unload queued behind a generation can never pull the model from
under it. Readers get an immutable `Status` snapshot without waiting for the worker.
"""
from __future__ import annotations

import collections
import functools
import itertools
import sys
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from .config import Settings
from .errors import (Cancelled, DownloadCancelled, GenerationFailed, ManagerClosed, ModelLoadFailed,
                     OutOfMemory, QueueFull, ZImageError)
from .generate import GenerationRequest, GenerationResult, OutputStore, run_batch, save_result
from .idle import idle_action
from .manager_cache import CacheJobs
from .prompt_cache import PromptCache
from .planning import WORKING_BYTES
from .state import READY_STATES, LoadStage, LoadState, Status
from .vram import cuda_available, is_oom, peak_vram_bytes, reset_peak_vram

log = logging.getLogger(__name__)

GENERATE, LOAD, UNLOAD, LOW_VRAM, IDLE, IMPORT = "generate", "load", "unload", "low_vram", "idle", "import"
LOW_VRAM_BUDGET_BYTES = 8 * 2**30
DEMO_NOTE = "Demo mode: a tiny model with random weights, so every image is noise."


@dataclass(eq=False)
class Job:
    kind: str
    fn: Callable[["Job"], Any]
    owner: str | None = None         # the client that asked: a browser tab's id, X-Client-Id, or the API's default
    id: int = 0
    future: Future = field(default_factory=Future)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    phase: str = "waiting"           # waiting | loading | encoding | generating | decoding | saving | done
    step: int = 0
    total_steps: int = 0
    images_done: int = 0             # this job's images decoded (while "decoding") or saved (while "saving")
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
        """Seconds left: the remaining steps at this job's measured step time, then decoding and
        saving its images at the manager's last measured figures; None while any is unknown."""
        decode, save, n = self.decode_s_per_image, self.save_s_per_image, self.images_total
        if self.phase == "done":
            return 0.0
        if self.phase == "saving":
            return None if save is None else max(0, n - self.images_done) * save
        if decode is None or save is None:
            return None
        if self.phase == "decoding":
            return max(0, n - self.images_done) * decode + n * save
        if self.phase in ("encoding", "generating") and self.step_seconds:
            return max(0, self.total_steps - self.step) * self.step_seconds + n * (decode + save)
        return None


class _CountingStore:
    """The output store, counting a job's saved images into `job.images_done` ("image 2 of 4")."""

    def __init__(self, store: OutputStore, job: Job):
        self._store, self._job = store, job

    def save(self, *args, **kwargs):
        path = self._store.save(*args, **kwargs)
        self._job.images_done += 1
        return path

    def __getattr__(self, name: str):
        return getattr(self._store, name)


def matches(job: Job, owner: str | None, user: str | None) -> bool:
    """The job belongs to `owner` and `user`, each checked only when given."""
    return (owner is None or job.owner == owner) and (user is None or job.user == user)


def settle(future: Future, outcome: Any) -> None:
    """Give `future` the outcome: an exception, a value, or (a Future) whatever that one resolves to."""
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    elif isinstance(outcome, Future):
        outcome.add_done_callback(lambda done: future.set_exception(done.exception()) if done.exception()
                                  else future.set_result(done.result()))
    else:
        future.set_result(outcome)


class PipelineManager(CacheJobs):
    def __init__(self, settings: Settings, *, placement_factory: Callable[[], Any] | None = None,
                 resolver: Callable[..., Any] | None = None, loader: Callable[..., Any] | None = None,
                 clock: Callable[[], float] = time.monotonic, idle_poll_s: float = 1.0):
        from .hub import resolve_model_dir
        from .loader import load_pipeline

        self.settings = settings
        self._placement_factory = placement_factory or self._torch_placement
        self._resolver = resolver or resolve_model_dir
        self._loader = loader or load_pipeline
        self._clock = clock
        self._idle_poll_s = idle_poll_s
        self._store = OutputStore(settings.outputs_dir)
        self._model_label = "Z-Image-Turbo (demo, random weights)" if settings.demo else "Z-Image-Turbo"

        self._lock = threading.Lock()                  # guards the fields below, never held during work
        self._wakeup = threading.Condition(self._lock)
        self._waiting: collections.deque[Job] = collections.deque()
        self._current: Job | None = None
        self._pending_generations = 0
        self._load_job: Job | None = None
        self._closed = False
        self._ids = itertools.count(1)
        self._last_activity = clock()
        self._job_seconds = 5.0                        # running mean, for Retry-After
        self._decode_s_per_image: float | None = None  # last measured VAE decode and PNG save, for Job.eta_s
        self._save_s_per_image: float | None = None
        self._low_vram = settings.low_vram
        self._budget_override: int | None = None       # a budget lowered after an out-of-memory
        self._status = Status(model=settings.model, low_vram=settings.low_vram,
                              note=DEMO_NOTE if settings.demo else "")

        # Worker-only fields: touched by the worker thread alone.
        self._pipe = None
        self._model_bytes = 0                          # weights on disk, known once the folder is resolved
        self._placement = None
        self._model_dir = None                         # the folder the loaded pipeline came from
        self._download_cancel = threading.Event()      # replaced for each download; set by cancel_download()
        self._replan = False                           # re-apply the low-VRAM plan (its budget changed)
        self._attention = "native"                     # the attention backend in use
        self._prompts = PromptCache()                  # text-encoder outputs per prompt, for this pipeline

        self._worker = threading.Thread(target=self._worker_loop, name="zimage-gpu-worker", daemon=True)
        self._saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zimage-save")   # PNG files, in order
        self._idle_thread = threading.Thread(target=self._idle_loop, name="zimage-idle", daemon=True)
        self.load_count = 0                            # completed weight loads from disk, for tests and /health

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> "PipelineManager":
        self._worker.start()
        self._idle_thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closed = True
            waiting, self._waiting = list(self._waiting), collections.deque()
            if self._current:
                self._current.cancel_event.set()
            self._wakeup.notify_all()
        for job in waiting:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(ManagerClosed())
        if self._worker.is_alive():
            self._worker.join(timeout)
        self._saver.shutdown(wait=True)           # images already made are written before we return

    # ---- reading -----------------------------------------------------------------------------
    def status(self) -> Status:
        with self._lock:
            return replace(self._status, busy=self._current is not None,
                           queue_length=self._pending_generations)

    @property
    def worker_alive(self) -> bool:
        """False once the worker thread has stopped (closed, or a bug killed it): nothing would run."""
        return self._worker.is_alive()

    @property
    def gpu_device(self) -> str | None:
        return self._placement.gpu_device if self._placement is not None else None

    # ---- operations (all return immediately with a Job; wait on job.future) -------------------
    def preload(self) -> Job:
        """Load the model (once, however many callers ask at the same time)."""
        with self._lock:
            if self._load_job is not None and not self._load_job.future.done():
                return self._load_job
            job = self._enqueue_locked(LOAD, self._run_load)
            self._load_job = job
            self._last_activity = self._clock()
            return job

    def ensure_ready(self, timeout: float | None = None) -> Status:
        self.preload().future.result(timeout)
        return self.status()

    def import_model_stack(self) -> Job:
        """Import torch and diffusers on the worker (never beside a load: diffusers' lazy module
        is not safe to import from two threads at once: "cannot import name 'ZImagePipeline'")."""
        def run(job: Job) -> None:
            from diffusers import ZImagePipeline  # noqa: F401

            from . import loader  # noqa: F401
            log.info("torch and diffusers imported in the background")
        with self._lock:
            return self._enqueue_locked(IMPORT, run)

    def unload(self, to: str = "none") -> Job:
        if to not in ("cpu", "none"):
            raise ValueError(f"unload target must be 'cpu' or 'none', got {to!r}")
        with self._lock:
            return self._enqueue_locked(UNLOAD, lambda job: self._run_unload(to))

    def set_low_vram(self, enabled: bool) -> Job:
        with self._lock:
            self._low_vram = bool(enabled)
            self._budget_override = None
            self._status = replace(self._status, low_vram=self._low_vram)
            return self._enqueue_locked(LOW_VRAM, self._run_apply_placement)

    def submit(self, req: GenerationRequest, owner: str | None = None, user: str | None = None) -> Job:
        """Queue a generation for client `owner` and login `user`. Raises QueueFull when `queue_max`
        jobs already wait."""
        req = req.with_resolved_seed()
        with self._lock:
            waiting = self._pending_generations - (1 if self._current and self._current.kind == GENERATE else 0)
            if waiting >= self.settings.queue_max:
                retry = max(1, round(self._job_seconds * (waiting + 1)))
                raise QueueFull(waiting, retry)
            self._pending_generations += 1
            self._last_activity = self._clock()
            job = self._enqueue_locked(GENERATE, lambda j: self._run_generate(j, req), owner=owner)
            job.total_steps = req.num_inference_steps
            job.request = req
            job.user = user
            return job

    def generate(self, req: GenerationRequest, owner: str | None = None,
                 timeout: float | None = None) -> GenerationResult:
        return self.submit(req, owner).future.result(timeout)

    def cancel(self, owner: str | None = None, user: str | None = None, current_only: bool = False) -> int:
        """Stop the generations matching every criterion given (`owner`, `user`; with neither, all of
        them: for close and tests, never for an HTTP caller): waiting ones are dropped, a running one
        stops after its current step. `current_only` (a skip): only the running pipeline call's
        members, so the caller's queued jobs still run. Returns how many jobs were cancelled."""
        count = 0
        with self._lock:
            running = [self._current, *self._current.riders] if self._current else []
            jobs = running if current_only else list(self._waiting) + running
            for job in jobs:
                if job.kind == GENERATE and matches(job, owner, user) and not job.cancelled:
                    job.skipped = current_only
                    job.cancel_event.set()
                    count += 1
        return count

    def current_generation(self) -> Job | None:
        """The generation running now, if any (for progress reports)."""
        with self._lock:
            job = self._current
        return job if job is not None and job.kind == GENERATE else None

    def cancel_download(self) -> bool:
        """Stop a running download (load or repair); what was fetched is kept for resuming."""
        if self._status.state != LoadState.DOWNLOADING:
            return False
        self._download_cancel.set()
        return True

    # ---- the worker --------------------------------------------------------------------------
    def _enqueue_locked(self, kind: str, fn: Callable[[Job], Any], owner: str | None = None) -> Job:
        if self._closed:
            raise ManagerClosed()
        job = Job(kind=kind, fn=fn, owner=owner, id=next(self._ids))
        self._waiting.append(job)
        self._renumber_locked()
        self._wakeup.notify_all()
        return job

    def _renumber_locked(self) -> None:
        for position, job in enumerate(self._waiting, 1):
            job.queue_position = position

    def _worker_loop(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._wakeup.wait()
                if self._closed:
                    return
                job = self._waiting.popleft()
                self._renumber_locked()
                job.queue_position = 0
                self._current = job
            started = self._clock()
            try:
                # A waiter that gives up cancels the Future (asyncio.wrap_future does when its task is
                # cancelled, e.g. a Ray Serve request cancelled by Stop): such a job is skipped, and a
                # running one's Future can no longer be cancelled; setting the result of a cancelled
                # Future would raise here and end the worker.
                if job.future.set_running_or_notify_cancel():
                    if job.kind == GENERATE and self.settings.batch_max > 1 and not job.cancelled:
                        with self._lock:
                            self._gather_riders_locked(job)
                            self._renumber_locked()
                    self._run_job(job)
            finally:
                for member in [job, *job.riders]:
                    if member.phase != "saving" or member.future.done():   # else the saver thread ends it
                        member.phase = "done"
                for rider in job.riders:
                    if not rider.settled and not rider.future.done():   # never left waiting, whatever happened to the lead
                        rider.future.set_exception(Cancelled())
                with self._lock:
                    self._current = None
                    if job.kind == GENERATE:
                        self._pending_generations -= 1 + len(job.riders)
                        self._job_seconds = 0.8 * self._job_seconds + 0.2 * (self._clock() - started)
                    if job.kind in (GENERATE, LOAD):
                        self._last_activity = self._clock()

    def _gather_riders_locked(self, lead: Job) -> None:
        """Take the waiting generations that can share `lead`'s pipeline call (same size, steps,
        guidance and negative prompt; --batch-max images in all), up to the first job of another
        kind: nothing moves ahead of an unload or a plan switch queued before it."""
        from .generate import batch_key

        images = lead.request.num_images
        for job in list(self._waiting):
            if job.kind != GENERATE:
                break
            if job.cancelled or batch_key(job.request) != batch_key(lead.request):
                continue
            if images + job.request.num_images > self.settings.batch_max:
                break
            self._waiting.remove(job)
            job.queue_position = 0
            if job.future.set_running_or_notify_cancel():
                lead.riders.append(job)
                images += job.request.num_images
            else:
                self._pending_generations -= 1    # its waiter gave up

    def _run_job(self, job: Job) -> None:
        try:
            if job.cancelled and not job.riders:    # with riders, the batch runs and only its own image is dropped
                raise Cancelled()
            settle(job.future, job.fn(job))
        except BaseException as e:   # every failure goes to the caller; the worker lives on
            if not isinstance(e, ZImageError):
                log.exception("job %s failed", job.kind)
            job.future.set_exception(e)

    # ---- state changes (worker thread only) --------------------------------------------------
    def _set(self, **changes) -> None:
        with self._lock:
            self._status = self._status.evolve(**changes)

    def _torch_placement(self):
        from .devices import TorchPlacement

        return TorchPlacement(self.settings.device, self.settings.pin_ram_gb)

    def _get_placement(self):
        if self._placement is None:
            self._placement = self._placement_factory()
        return self._placement

    def _budget_bytes(self) -> int:
        """The VRAM budget in effect: one lowered after an out-of-memory, else --vram-budget, else
        8 GB with Low VRAM, else the free VRAM."""
        if self._budget_override is not None:
            return self._budget_override
        if self.settings.vram_budget != "auto":
            return int(float(self.settings.vram_budget) * 2**30)
        if self._low_vram:
            return LOW_VRAM_BUDGET_BYTES
        return self._get_placement().vram_budget_bytes()

    def _target_state(self) -> LoadState:
        placement = self._get_placement()
        if placement.gpu_device is None:
            return LoadState.ON_CPU
        if self._low_vram or self._budget_override is not None or self._quantized():
            return LoadState.OFFLOADED
        if self._model_bytes and self._model_bytes + WORKING_BYTES > self._budget_bytes():
            return LoadState.OFFLOADED
        return LoadState.ON_GPU

    def _report_load(self, stage: LoadStage, done: int, total: int, name: str) -> None:
        self._set(state=LoadState.LOADING, stage=stage, bytes_done=done, bytes_total=total,
                  progress=(done / total) if total else 1.0, current_file=name)

    def _run_load(self, job: Job | None = None) -> Status:
        if job is not None:
            job.phase = "loading"
        try:
            if self._pipe is None:
                self._load_from_disk()
            self._run_apply_placement()
        except DownloadCancelled as e:
            self._drop_pipeline()
            self._set(state=LoadState.UNLOADED, stage=None, message=e.message, hint=e.hint, progress=0.0)
            raise
        except ZImageError as e:
            self._fail(e)
            raise
        except MemoryError as e:
            err = OutOfMemory("Not enough RAM to load the model.",
                              "Close other programs, or use a machine with more memory.")
            self._fail(err)
            raise err from e
        except Exception as e:
            log.exception("loading failed")
            err = ModelLoadFailed(f"Loading the model failed: {e.__class__.__name__}: {str(e)[:300]}",
                                  "Press Preload to retry; if it fails again, download the model again.")
            self._fail(err)
            raise err from e
        return self.status()

    def _fail(self, error: ZImageError) -> None:
        self._drop_pipeline()
        self._set(state=LoadState.ERROR, stage=None, message=error.message, hint=error.hint,
                  device=None, progress=0.0)

    def _report_download(self, p) -> None:
        self._set(state=LoadState.DOWNLOADING, stage=LoadStage.DOWNLOAD, bytes_done=p.bytes_done,
                  bytes_total=p.bytes_total, current_file=p.current_file, speed_bps=p.bytes_per_s,
                  eta_s=p.eta_s, progress=(p.bytes_done / p.bytes_total) if p.bytes_total else 0.0)

    def _start_download(self) -> None:
        self._set(state=LoadState.DOWNLOADING, stage=LoadStage.DOWNLOAD, progress=0.0, bytes_done=0,
                  bytes_total=0, speed_bps=0.0, eta_s=None, message="", hint="")

    def _load_from_disk(self) -> None:
        self._download_cancel = threading.Event()
        model_dir = self._resolver(self.settings.model, self.settings.cache_dir, on_progress=self._report_download,
                                   on_download_start=self._start_download, cancel=self._download_cancel)
        self._set(state=LoadState.LOADING, stage=LoadStage.READ, progress=0.0, bytes_done=0, bytes_total=0,
                  message="", hint="")
        if self.settings.loader == "fast":
            # The disk reads start now, while torch and diffusers are still being imported below
            # (on a cold start, the libraries those imports read go first).
            from .fastload import prefetch
            from .loader import weight_paths

            prefetch(weight_paths(model_dir), libraries_first="torch" not in sys.modules)
        from .devices import resolve_dtype
        from .loader import component_bytes, read_model_index

        self._model_bytes = sum(component_bytes(model_dir, n) for n in read_model_index(model_dir))
        placement = self._get_placement()
        target = self._target_state()
        device = placement.gpu_device if target == LoadState.ON_GPU else "cpu"
        dtype = resolve_dtype(self.settings.dtype, placement.gpu_device is not None)
        log.info("loading %s onto %s (%s loader)", model_dir, device, self.settings.loader)
        if self._quantized():
            from .quantize import load_quantized

            load = functools.partial(self._loader, on_progress=self._report_load, fast=True)
            self._pipe, note = load_quantized(
                model_dir, dtype, load, compute_device=placement.gpu_device if cuda_available() else None,
                on_quantize=lambda: self._set(state=LoadState.LOADING, stage=LoadStage.QUANTIZE, progress=0.0))
            log.info(note)
        else:
            self._pipe = self._loader(model_dir, dtype, device, on_progress=self._report_load,
                                      fast=self.settings.loader == "fast")
        self._model_dir = model_dir
        self.load_count += 1
        if device != "cpu":
            self._speed_up(warm=self.settings.warmup)
        landed = LoadState.ON_CPU if device == "cpu" else LoadState.ON_GPU
        self._set(state=landed, stage=None, device=device, progress=1.0,
                  plan="" if device == "cpu" else self._resident_plan())
        log.info("model loaded from %s onto %s", model_dir, device)

    def _quantized(self) -> bool:
        return self.settings.quantize != "none" and self._get_placement().gpu_device is not None

    def _speed_up(self, warm: bool) -> None:
        """On the GPU with the model resident: the attention backend, regional compile (when wanted),
        and the warm-up images that build the kernels before any request."""
        from . import accel
        from .generate import warm_up

        import torch

        device = self._get_placement().gpu_device
        on_cuda = device is not None and torch.cuda.is_available()
        capability = torch.cuda.get_device_capability(device) if on_cuda else None
        self._attention = accel.set_attention(self._pipe, accel.choose_attention(self.settings.attention, capability))
        compiled = accel.want_compile(self.settings.compile, on_cuda, resident=True)
        self._use_fp8(capability, compiled)
        if compiled and not accel.is_compiled(self._pipe):
            from .cache import modelscope_cache_base

            accel.compile_blocks(self._pipe, accel.compile_cache_dir(modelscope_cache_base(self.settings.cache_dir)))
        if warm:
            self._set(state=LoadState.LOADING, stage=LoadStage.WARMUP, progress=0.0, current_file="")
            for prompt in accel.WARMUP_PROMPTS[:2 if compiled else 1]:
                log.info("warm-up image in %.2f s (attention %s%s)", warm_up(self._pipe, prompt=prompt),
                         self._attention, ", compiled blocks" if compiled else "")

    def _use_fp8(self, capability: tuple[int, int] | None, compiled: bool) -> None:
        """fp8 matmuls in the blocks when asked for and this GPU and setup can run them (before the
        compile, which then traces the fp8 blocks); otherwise bf16, with a note on the page."""
        if self.settings.fp8 == "off":
            return
        from . import fp8

        use, note = fp8.choose(self.settings.fp8, capability, compiled)
        if use:
            try:
                fp8.apply(self._pipe)
            except Exception as e:
                if not is_oom(e):
                    raise
                note = "Not enough VRAM to convert the blocks to fp8 (it briefly needs 6 GB more); running bf16."
            if note:       # freed outside the except block: the traceback would keep the fp8 copies alive
                self._get_placement().free_memory()
        if note:
            log.warning(note)
        self._set(note="\n".join(filter(None, [DEMO_NOTE if self.settings.demo else "", note])))

    def _leave_fp8(self, placement) -> None:
        """Low-VRAM plans stream bf16 blocks: fp8 blocks go back to bf16 Linears first. In RAM, since
        the bf16 blocks take twice the VRAM of the fp8 ones and a plan is needed because VRAM is short."""
        if self.settings.fp8 == "off":
            return
        from . import fp8

        if fp8.is_applied(self._pipe):
            placement.move(self._pipe, "cpu")
            fp8.remove(self._pipe)

    def _resident_plan(self) -> str:
        if self.settings.fp8 != "off":
            from . import fp8

            if fp8.is_applied(self._pipe):
                return "everything on the GPU, fp8 matmuls in the transformer blocks"
        return "everything on the GPU"

    def _run_apply_placement(self, job: Job | None = None) -> Status:
        """Put the loaded pipeline where the settings say (GPU, offloaded or CPU); no disk reads."""
        if self._pipe is None:
            with self._lock:   # the low-VRAM flag is shown even before a model is loaded
                self._status = replace(self._status, low_vram=self._low_vram)
            return self.status()
        placement = self._get_placement()
        target = self._target_state()
        current = self._status.state
        if current == target and not (target == LoadState.OFFLOADED and self._replan):
            return self.status()
        self._replan = False
        if current == LoadState.OFFLOADED:
            placement.disable_offload(self._pipe)
        if target == LoadState.ON_CPU:
            placement.move(self._pipe, "cpu")
            self._set(state=LoadState.ON_CPU, stage=None, device="cpu", progress=1.0, plan="")
        elif target == LoadState.OFFLOADED:
            from .accel import uncompile_blocks

            uncompile_blocks(self._pipe)      # streaming hooks must run eagerly
            self._leave_fp8(placement)
            plan = placement.enable_offload(self._pipe, self._budget_bytes())
            self._set(state=LoadState.OFFLOADED, stage=None, device=placement.gpu_device, progress=1.0, plan=plan)
        else:
            self._set(state=LoadState.LOADING, stage=LoadStage.MOVE, progress=0.0)
            placement.move(self._pipe, placement.gpu_device, functools.partial(self._report_load, LoadStage.MOVE))
            self._speed_up(warm=self.settings.warmup and current == LoadState.OFFLOADED)
            self._set(state=LoadState.ON_GPU, stage=None, device=placement.gpu_device, progress=1.0,
                      plan=self._resident_plan())
        return self.status()

    def _run_unload(self, to: str) -> Status:
        state = self._status.state
        if to == "none" or self._pipe is None:
            self._drop_pipeline()
            self._set(state=LoadState.UNLOADED, stage=None, device=None, progress=0.0, message="", hint="",
                      bytes_done=0, bytes_total=0, current_file="")
        elif state in (LoadState.ON_GPU, LoadState.OFFLOADED):
            placement = self._get_placement()
            if state == LoadState.OFFLOADED:
                placement.disable_offload(self._pipe)
            placement.move(self._pipe, "cpu")
            self._set(state=LoadState.ON_CPU, stage=None, device="cpu")
        return self.status()

    def _drop_pipeline(self) -> None:
        pipe, self._pipe, self._model_dir = self._pipe, None, None
        self._prompts.clear()                          # its embeddings hold GPU memory and a reference
        if pipe is not None and self._status.state == LoadState.OFFLOADED:
            self._get_placement().disable_offload(pipe)
        del pipe
        if self._placement is not None:
            self._placement.release_pinned()
            self._placement.free_memory()

    def _run_generate(self, job: Job, req: GenerationRequest) -> GenerationResult:
        """The job's generation, with its riders (queued requests sharing the pipeline call), whose
        futures get their own results here; the lead's result is returned."""
        members = [job, *job.riders]
        try:
            results = self._run_generations(members)
        except BaseException as e:
            for rider in job.riders:
                rider.future.set_exception(e)
            raise
        for rider, outcome in zip(job.riders, results[1:]):
            settle(rider.future, outcome)
            rider.settled = True
        if isinstance(results[0], BaseException):
            raise results[0]
        return results[0]

    def _run_generations(self, members: list[Job]) -> list:
        lead = members[0]
        if self._status.state not in READY_STATES or self._status.state != self._target_state() or self._pipe is None:
            self._run_load(lead)
        for member in members:
            member.images_total, member.images_done = member.request.num_images, 0
            member.decode_s_per_image, member.save_s_per_image = self._decode_s_per_image, self._save_s_per_image
        batches, seconds = self._generate_once(members)
        warning = ""
        if batches is None and self._step_down():
            warning = f"The GPU ran out of memory; switched to a smaller VRAM plan ({self._status.plan}) and retried."
            log.warning(warning)
            batches, seconds = self._generate_once(members)
        if batches is None:
            req = lead.request
            raise OutOfMemory(
                f"The GPU ran out of memory at {req.width}x{req.height} x {sum(m.request.num_images for m in members)}.",
                "Turn on Low VRAM or set a smaller --vram-budget, or lower the size or the number of images.")
        peak = peak_vram_bytes(self.gpu_device)
        total = sum(len(images) for images in batches)
        with self._lock:
            self._status = replace(self._status, last_image_s=round(seconds / max(1, total), 3),
                                   last_peak_vram_bytes=peak)
        shared = total if len(members) > 1 else 0
        # Saved on the saver thread: PNG encoding (about 0.2 s an image) never holds up the next
        # generation. Each member's Future resolves once its files are written.
        outcomes = []
        for m, images in zip(members, batches):
            if len(members) > 1 and m.cancelled:
                outcomes.append(Cancelled())
                continue
            m.phase, m.images_done = "saving", 0
            outcomes.append(self._saver.submit(self._save, m, images, seconds, shared, warning, peak))
        return outcomes

    def _save(self, job: Job, images: list, seconds: float, shared: int, warning: str,
              peak: int | None) -> GenerationResult:
        try:
            started = time.perf_counter()
            result = save_result(job.request, images, seconds, _CountingStore(self._store, job),
                                 self._model_label, batch_images=shared)
            if images:
                self._save_s_per_image = (time.perf_counter() - started) / len(images)
            return replace(result, warning="\n".join(filter(None, [warning, result.warning])), peak_vram_bytes=peak)
        finally:
            job.phase = "done"

    def _generate_once(self, members: list[Job]) -> tuple[list | None, float]:
        """Run the members' requests as one pipeline call: each member's images and the seconds it
        took. (None, 0) after an out-of-memory, memory freed."""
        started = {}                  # phase -> when it began (perf_counter)
        firsts = list(itertools.accumulate([0] + [m.request.num_images for m in members]))[:-1]

        def on_phase(name: str, done: int, total: int) -> None:
            now = time.perf_counter()
            started.setdefault(name, now)
            if name == "decoding" and done == total and total:
                self._decode_s_per_image = (now - started[name]) / total
            for member, first in zip(members, firsts):
                member.phase = name
                if name == "decoding":
                    member.images_done = min(max(0, done - first), member.request.num_images)

        def on_step(step: int, total: int, latents=None) -> None:
            elapsed = time.perf_counter() - started.get("generating", time.perf_counter())
            for member in members:
                member.step, member.total_steps = step, total
                member.step_seconds = elapsed / step if step else 0.0
            if latents is not None:
                members[0].latest_latent = latents[0].detach().to("cpu", copy=True)   # for live previews

        def all_stopped() -> bool:
            return all(m.cancelled for m in members)

        reset_peak_vram(self.gpu_device)
        oom = False
        try:
            began = time.perf_counter()
            batches = run_batch(self._pipe, [m.request for m in members], all_stopped, on_step, self._prompts.embeds,
                                on_phase=on_phase)
            return batches, time.perf_counter() - began
        except ZImageError:
            raise                     # Cancelled, and the other typed errors, as they are
        except Exception as e:
            if not is_oom(e):
                log.exception("generation failed")
                raise GenerationFailed(
                    f"The generation failed: {e.__class__.__name__}: {str(e)[:300]}",
                    "Try again; if it fails again, the server log has the details (try Unload, then Preload).") from e
            oom = True
        if oom:
            # Freed outside the except block: the traceback would keep the step's tensors alive.
            self._get_placement().free_memory()
            with self._lock:
                self._status = replace(self._status, oom_count=self._status.oom_count + 1)
        return None, 0.0

    def _step_down(self) -> bool:
        """After an out-of-memory on the GPU: a budget 25% below what was in use, no disk reads."""
        placement = self._get_placement()
        if placement.gpu_device is None or self._pipe is None:
            return False
        from .planning import DoesNotFit

        current = min(self._budget_override or self._budget_bytes(), placement.vram_budget_bytes())
        self._budget_override = int(current * 0.75)
        self._replan = True
        try:
            self._run_apply_placement()
        except DoesNotFit as e:
            log.warning("no smaller plan: %s; the weights go to RAM", e.message)
            self._budget_override = None
            # The plan was refused before anything moved: the weights are where they were (on the
            # GPU when the failed call ran resident). Moved to RAM so that the state is true and the
            # VRAM is free after the out-of-memory; the next request puts them back, no disk reads.
            placement.move(self._pipe, "cpu")
            placement.free_memory()
            self._set(state=LoadState.ON_CPU, stage=None, device="cpu", plan="")
            return False
        return True

    # ---- idle unload -------------------------------------------------------------------------
    def _idle_action(self, idle_s: float) -> str | None:
        has_gpu = self._placement is not None and self._placement.gpu_device is not None
        return idle_action(self._status.state, has_gpu, idle_s, self.settings.idle_unload_s,
                           self.settings.idle_drop_s)

    def _run_idle(self, job: Job) -> Status:
        # Re-checked on the worker: a request that arrived since the check wins.
        with self._lock:
            busy = bool(self._waiting)
            idle_s = self._clock() - self._last_activity
        action = None if busy else self._idle_action(idle_s)
        if action:
            log.info("idle for %.0f s: unloading to %s", idle_s, action)
            return self._run_unload(action)
        return self.status()

    def _idle_loop(self) -> None:
        while True:
            with self._lock:
                self._wakeup.wait(self._idle_poll_s)
                if self._closed:
                    return
                quiet = self._current is None and not self._waiting
                idle_s = self._clock() - self._last_activity
                if quiet and self._idle_action(idle_s):
                    self._enqueue_locked(IDLE, self._run_idle)
