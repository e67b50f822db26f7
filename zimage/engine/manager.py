"""PipelineManager: the single owner of the one shared pipeline, its state machine and its worker.

Everything that touches the pipeline (page, HTTP API, preload, unload, low-VRAM switch, idle unload)
is a Job run one at a time on one worker thread: diffusers pipelines are not thread-safe (the
scheduler keeps step state), and an unload queued behind a generation can never pull the model from
under it. Readers get an immutable `Status` snapshot without waiting for the worker.
"""
from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from dataclasses import replace
from typing import Any, Callable

from .. import startup
from ..config import Settings
from ..errors import Cancelled, ControlNetRefused, DownloadCancelled, ModelLoadFailed, OutOfMemory, ZImageError
from ..jobs import CACHE, COMPILE, ENHANCE, GENERATE, IDLE, IMPORT, LOAD, LOW_VRAM, UNLOAD, Job, matches, settle
from ..request import GenerationRequest, GenerationResult
from ..state import READY_STATES, LoadStage, LoadState, MemoryInfo, Status
from ..store.cache_ops import check_confirmed, delete_model, repair_model, verify_model
from ..store.lora_folders import lora_folders
from ..store.outputs import OutputStore
from . import placing, speed
from .controlnet import ControlNetSlot
from .idle import idle_action
from .lora_active import ActiveLoras
from .prompt_cache import PromptCache
from .runner import GenerationRunner
from .vram import allocated_vram_bytes, cuda_available, peak_vram_bytes, reset_peak_vram
from .worker import JobQueue

log = logging.getLogger(__name__)

QUIET_POLL_S = 0.5              # how often a deferred background compile looks for a quiet queue

DEMO_NOTE = "Demo mode: a tiny model with random weights, so every image is noise."


class PipelineManager:
    def __init__(self, settings: Settings, *, placement_factory: Callable[[], Any] | None = None,
                 resolver: Callable[..., Any] | None = None, loader: Callable[..., Any] | None = None,
                 clock: Callable[[], float] = time.monotonic, idle_poll_s: float = 1.0):
        from ..store.hub import resolve_model_dir
        from .loader import load_pipeline

        self.settings = settings
        self._placement_factory = placement_factory or self._torch_placement
        self._resolver = resolver or resolve_model_dir
        self._loader = loader or load_pipeline
        self._store = OutputStore(settings.outputs_dir)
        self._model_label = "Z-Image-Turbo (demo, random weights)" if settings.demo else "Z-Image-Turbo"

        # The queue, the worker and the idle loop; its lock is the manager's one lock (the rule is
        # written in worker.JobQueue): it guards the queue and the fields below, never held during work.
        self._queue = JobQueue(self._run_job, batch_max=settings.batch_max, clock=clock, idle_poll_s=idle_poll_s,
                               on_quiet_locked=self._on_quiet_locked)
        self._lock = self._queue.lock
        self._load_job: Job | None = None
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
        self._loras = ActiveLoras(lora_folders(settings))   # the LoRA set fused into the transformer now
        self._control = ControlNetSlot()               # the ControlNet, loaded on first use
        self._compiling = None                         # the BackgroundCompile under way (compile_bg)
        self._placement_epoch = 0                      # bumped at each placement change: a plan compile's pieces check it
        self._cuda_context_asked = False               # the early CUDA context is tried on the first load only

        self._runner = GenerationRunner(self._store, self._model_label,
                                        None if settings.demo else (settings.model, settings.cache_dir))   # the pipeline call, PNG saving
        self._enhancing: set[Job] = set()              # endpoint enhancements running beside the queue (lock)
        self.load_count = 0                            # completed weight loads from disk, for tests and /health

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> "PipelineManager":
        self._queue.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        self._queue.close(timeout)
        self._runner.close()           # images already made are written before we return

    # ---- reading -----------------------------------------------------------------------------
    def status(self) -> Status:
        with self._lock:
            return replace(self._status, busy=self._queue.current is not None,
                           queue_length=self._queue.pending_generations, startup=tuple(startup.timeline()))

    @property
    def worker_alive(self) -> bool:
        """False once the worker thread has stopped (closed, or a bug killed it): nothing would run."""
        return self._queue.alive

    @property
    def gpu_device(self) -> str | None:
        return self._placement.gpu_device if self._placement is not None else None

    def preview_png(self, job: Job) -> bytes | None:
        """A small PNG of the job's latest latent (no VAE run), None before its first step."""
        from .generate import latent_preview_png

        latent = job.latest_latent
        return latent_preview_png(latent) if latent is not None else None

    def loras(self, refresh: bool = False, hash_files: bool = True) -> list[dict]:
        """The LoRA folder's files (A1111's list entries, refused ones with their reason). Reads
        only file headers (and hashes a new file once), so it runs on the caller's thread."""
        return self._loras.listing(refresh, hash_files)

    def memory(self) -> MemoryInfo:
        """RAM and VRAM in use now (cheap: the status panel reads it every second)."""
        from .memory import memory_info

        return memory_info(self.gpu_device)

    # ---- operations (all return immediately with a Job; wait on job.future) -------------------
    def preload(self) -> Job:
        """Load the model (once, however many callers ask at the same time)."""
        with self._lock:
            if self._load_job is not None and not self._load_job.future.done():
                return self._load_job
            job = self._enqueue_locked(LOAD, self._run_load)
            self._load_job = job
            self._queue.touch_locked()
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

    def switch_model(self, model: str, name: str = "") -> Job:
        """Load another model (--model's value) after the jobs queued before this (engine/switch.py)."""
        from .switch import run_switch

        with self._lock:
            self._load_job = self._enqueue_locked(LOAD, lambda job: run_switch(self, model, name, job))
            return self._load_job

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
            self._queue.admit_generation_locked(self.settings.queue_max)
            self._queue.touch_locked()
            job = self._enqueue_locked(GENERATE, lambda j: self._run_generate(j, req), owner=owner)
            job.total_steps = req.num_inference_steps
            job.request = req
            job.user = user
            return job

    def generate(self, req: GenerationRequest, owner: str | None = None,
                 timeout: float | None = None) -> GenerationResult:
        return self.submit(req, owner).future.result(timeout)

    def enhance_prompt(self, req, owner: str | None = None, user: str | None = None) -> Job:
        """Rewrite a prompt (an EnhanceRequest; the result an EnhanceResult): on --enhancer-url's
        endpoint beside the queue, else a worker job on the loaded text encoder (engine/enhance_job.py)."""
        from .enhance_job import remote_job, run_local

        if self.settings.enhancer_url:
            def done(job: Job) -> None:
                with self._lock:
                    self._enhancing.discard(job)
            job = remote_job(self.settings, req, owner, user, on_done=done)
            with self._lock:
                if not job.future.done():
                    self._enhancing.add(job)
            return job

        def ensure_loaded(job: Job) -> None:
            if self._status.state not in READY_STATES or self._status.state != self._target_state() or \
                    self._pipe is None:
                self._run_load(job)
        with self._lock:
            self._queue.touch_locked()
            job = self._enqueue_locked(ENHANCE, lambda j: run_local(j, req, ensure_loaded, lambda: self._pipe,
                                                                     self.settings.enhancer_timeout_s), owner=owner)
            job.user = user
            return job

    def cancel(self, owner: str | None = None, user: str | None = None, current_only: bool = False) -> int:
        """Stop the generations matching every criterion given (`owner`, `user`; with neither, all of
        them: for close and tests, never for an HTTP caller): waiting ones are dropped, a running one
        stops after its current step. `current_only` (a skip): only the running pipeline call's
        members, so the caller's queued jobs still run. Returns how many jobs were cancelled."""
        count = 0
        with self._lock:
            running = self._queue.running_locked()
            jobs = running if current_only else list(self._queue.waiting) + running + list(self._enhancing)
            for job in jobs:
                if job.kind in (GENERATE, ENHANCE) and matches(job, owner, user) and not job.cancelled:
                    job.skipped = current_only
                    job.cancel_event.set()
                    count += 1
        return count

    def current_generation(self) -> Job | None:
        """The generation running now, if any (for progress reports)."""
        with self._lock:
            job = self._queue.current
        return job if job is not None and job.kind == GENERATE else None

    def cancel_download(self) -> bool:
        """Stop a running download (load or repair); what was fetched is kept for resuming."""
        if self._status.state != LoadState.DOWNLOADING:
            return False
        self._download_cancel.set()
        return True

    # ---- the worker --------------------------------------------------------------------------
    def _enqueue_locked(self, kind: str, fn: Callable[[Job], Any], owner: str | None = None) -> Job:
        return self._queue.put_locked(Job(kind=kind, fn=fn, owner=owner))

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
        from .placement import TorchPlacement

        return TorchPlacement(self.settings.device, self.settings.pin_ram_gb)

    def _get_placement(self):
        if self._placement is None:
            self._placement = self._placement_factory()
        return self._placement

    def _budget_bytes(self) -> int:
        return placing.budget_bytes(self._budget_override, self.settings.vram_budget, self._low_vram,
                                    lambda: self._get_placement().vram_budget_bytes())

    def _target_state(self) -> LoadState:
        return placing.target_state(has_gpu=self._get_placement().gpu_device is not None, low_vram=self._low_vram,
                                    lowered=self._budget_override is not None, quantized=self._quantized(),
                                    model_bytes=self._model_bytes + self._control.fit_bytes, budget=self._budget_bytes)

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
        if not self._cuda_context_asked:
            # Made on its own thread while the imports below run (2.8-4.2 s on the H200); a no-op
            # without a CUDA driver.
            from .cuda_context import start_cuda_context

            self._cuda_context_asked = True
            start_cuda_context(self.settings.device)
        model_dir = self._resolver(self.settings.model, self.settings.cache_dir, on_progress=self._report_download,
                                   on_download_start=self._start_download, cancel=self._download_cancel)
        self._set(state=LoadState.LOADING, stage=LoadStage.READ, progress=0.0, bytes_done=0, bytes_total=0,
                  message="", hint="")
        startup.mark(startup.READING)
        if self.settings.loader == "fast":
            # The disk reads start now, while torch and diffusers are still being imported below
            # (on a cold start, the libraries those imports read go first).
            from .fastload import prefetch
            from .loader import weight_paths

            prefetch(weight_paths(model_dir), libraries_first="torch" not in sys.modules)
        from .loader import component_bytes, read_model_index
        from .placement import resolve_dtype

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
                  plan="" if device == "cpu" else speed.resident_plan(self._pipe, self.settings))
        startup.mark(startup.READY)
        log.info("model loaded from %s onto %s", model_dir, device)

    def _quantized(self) -> bool:
        return self.settings.quantize != "none" and self._get_placement().gpu_device is not None

    def _speed_up(self, warm: bool) -> None:
        demo = DEMO_NOTE if self.settings.demo else ""
        self._attention, compile_wanted = speed.speed_up(
            self._pipe, self.settings, self._get_placement(), warm=warm,
            on_fp8=lambda note: self._set(note="\n".join(filter(None, [demo, note]))),
            on_warm_up=lambda: self._set(state=LoadState.LOADING, stage=LoadStage.WARMUP, progress=0.0, current_file=""))
        if compile_wanted:
            self._compile_when_quiet(self._pipe)

    # ---- the background compile (compile_bg): never in the way of readiness or a request -----
    def _compile_when_quiet(self, pipe, run: Callable[[], Any] | None = None) -> None:
        """Start the compile (or `run`, a plan compile's next piece) once no generation is queued or
        running. Beside a compile's tracing the first image after ready took 7.7 s instead of 2.1 s
        eager (H200, warm page cache, bench/startup_bench.py): both want the GIL. Checked every
        0.5 s; the start is a job, so it runs on the worker between requests."""
        run = run or (lambda: self._run_start_compile(pipe))

        def check() -> None:
            with self._lock:
                if not self._queue.alive or self._pipe is not pipe:
                    return
                if self._queue.pending_generations == 0:
                    self._enqueue_locked(COMPILE, lambda job: run())
                    return
            timer = threading.Timer(QUIET_POLL_S, check)
            timer.daemon = True
            timer.start()
        check()

    def _run_start_compile(self, pipe) -> bool:
        if self._pipe is not pipe or self._status.state != LoadState.ON_GPU:
            return False
        self._compile_in_background()
        return True

    def _run_plan_compile(self, pipe, epoch: int, piece: int = 0) -> bool:
        """A low-VRAM plan's compile, one warm-up image per job on the worker (speed.warm_plan_piece).
        Not compile_bg's twin: a twin would share the plan's streaming hooks, slots and copies in
        flight with the requests served meanwhile, and a second set of slots breaks the budget. So a
        request that arrives meanwhile waits for at most the one warm-up image under way (its graphs'
        compile: seconds from the inductor cache), never for the whole compile, and between two pieces
        the blocks run eagerly, so no request compiles a graph (a new prompt length would)."""
        from . import accel

        if self._pipe is not pipe or self._status.state != LoadState.OFFLOADED or epoch != self._placement_epoch:
            return False
        accel.compile_block_forwards(pipe.transformer, speed.compile_cache_dir(self.settings), speed.COMPILE_BACKEND)
        try:
            last = speed.warm_plan_piece(pipe, piece)
        except Exception as e:            # the eager blocks keep serving; the log says why
            log.warning("compiling the plan's blocks failed (%s): its blocks run eagerly", e)
            startup.mark(startup.COMPILE_FAILED)
            accel.uncompile_blocks(pipe)
            self._get_placement().free_memory()
            return False
        if not last:
            accel.uncompile_blocks(pipe)
            self._compile_when_quiet(pipe, lambda: self._run_plan_compile(pipe, epoch, piece + 1))
            return False
        self._set(plan=f"{self._status.plan}, compiled blocks")
        log.info("compiled blocks in use under the low-VRAM plan")
        return True

    def _compile_in_background(self) -> None:
        from .accel import compile_transformer, compiled_extras
        from .compile_bg import BackgroundCompile, artifact_path

        if self._compiling is not None and self._compiling.pipe is self._pipe and not self._compiling.cancelled.is_set():
            return
        cache = speed.compile_cache_dir(self.settings)
        backend = speed.COMPILE_BACKEND
        self._compiling = BackgroundCompile(self._pipe, lambda twin: compile_transformer(twin, cache, backend),
                                            speed.warm_compiled, self._compile_finished,
                                            artifacts=artifact_path(cache, self.gpu_device),
                                            compile_extras=lambda pipe: compiled_extras(pipe, backend)).start()
        startup.mark(startup.COMPILING)
        log.info("compiling the transformer blocks in the background; eager blocks serve meanwhile")

    def _compile_finished(self, bg) -> None:
        """From the compile's thread: the swap is queued, so it happens between two requests."""
        with self._lock:
            if self._queue.alive:
                self._enqueue_locked(COMPILE, lambda job: self._run_swap_compiled(bg))

    def _run_swap_compiled(self, bg) -> bool:
        if bg is not self._compiling:
            return False
        self._compiling = None
        if bg.cancelled.is_set():
            return False
        if bg.error is not None:
            startup.mark(startup.COMPILE_FAILED)
            log.warning("background compile failed (%s): the eager blocks keep serving", bg.error)
            return False
        if self._status.state != LoadState.ON_GPU or self._pipe is not bg.pipe:
            return False
        self._loras.drop()               # the base weights under the twin too (shared tensors); fused again on use
        swapped = bg.swap_into(self._pipe)
        if swapped:
            startup.mark(startup.COMPILED)
            log.info("compiled blocks in use%s", " (from the saved cache artifacts)" if bg.loaded_artifacts else "")
        return swapped

    def _cancel_compile(self) -> None:
        if self._compiling is not None:
            self._compiling.cancel()
            self._compiling = None

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
        self._placement_epoch += 1
        self._loras.drop()            # base weights before a move, a plan or an fp8 switch; fused again on use
        if current == LoadState.OFFLOADED:
            from .accel import uncompile_blocks

            uncompile_blocks(self._pipe)       # the plan's compiled forwards (bound to these blocks) come off
            placement.disable_offload(self._pipe)
        if target == LoadState.ON_CPU:
            self._cancel_compile()
            placement.move(self._pipe, "cpu")
            self._set(state=LoadState.ON_CPU, stage=None, device="cpu", progress=1.0, plan="")
        elif target == LoadState.OFFLOADED:
            from .accel import uncompile_blocks

            self._cancel_compile()
            uncompile_blocks(self._pipe)      # a resident compile traced `_call_impl`: hooks inside its graph
            speed.leave_fp8(self._pipe, self.settings, placement)
            plan = self._enable_offload(placement)
            self._set(state=LoadState.OFFLOADED, stage=None, device=placement.gpu_device, progress=1.0, plan=plan)
            if speed.plan_compile_wanted(self.settings, placement):
                epoch, pipe = self._placement_epoch, self._pipe
                self._compile_when_quiet(pipe, lambda: self._run_plan_compile(pipe, epoch))
        else:
            self._set(state=LoadState.LOADING, stage=LoadStage.MOVE, progress=0.0)
            placement.move(self._pipe, placement.gpu_device, functools.partial(self._report_load, LoadStage.MOVE))
            self._speed_up(warm=self.settings.warmup and current == LoadState.OFFLOADED)
            self._set(state=LoadState.ON_GPU, stage=None, device=placement.gpu_device, progress=1.0,
                      plan=speed.resident_plan(self._pipe, self.settings))
        if target != LoadState.OFFLOADED:            # a plan places it itself
            self._control.follow(self._pipe.transformer)
        return self.status()

    def _enable_offload(self, placement) -> str:
        """The plan for the budget, with the loaded ControlNet counted and placed by it (the
        keyword only then: placements and test doubles without a ControlNet keep their signature)."""
        if self._control.loaded:
            return placement.enable_offload(self._pipe, self._budget_bytes(), controlnet=self._control.model)
        return placement.enable_offload(self._pipe, self._budget_bytes())

    def _run_unload(self, to: str) -> Status:
        state = self._status.state
        if to == "none" or self._pipe is None:
            self._drop_pipeline()
            self._set(state=LoadState.UNLOADED, stage=None, device=None, progress=0.0, message="", hint="",
                      bytes_done=0, bytes_total=0, current_file="")
        elif state in (LoadState.ON_GPU, LoadState.OFFLOADED):
            self._cancel_compile()
            self._loras.drop()
            placement = self._get_placement()
            if state == LoadState.OFFLOADED:
                from .accel import uncompile_blocks

                uncompile_blocks(self._pipe)
                placement.disable_offload(self._pipe)
            placement.move(self._pipe, "cpu")
            self._control.follow(self._pipe.transformer)
            self._set(state=LoadState.ON_CPU, stage=None, device="cpu")
        return self.status()

    def _drop_pipeline(self) -> None:
        self._cancel_compile()
        try:
            self._loras.drop()
        except ZImageError as e:      # a restore that no longer fits: the weights are dropped anyway
            log.warning("LoRA restore before unloading: %s", e.message)
        self._control.drop()
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
        hashes, notes = self._use_loras(lead.request)
        pipe = self._control_pipeline(lead.request.mode) if lead.request.control is not None else self._pipe
        self._runner.start(members)
        batches, seconds = self._generate_once(members, pipe)
        warning = ""
        if batches is None and self._step_down():
            warning = f"The GPU ran out of memory; switched to a smaller VRAM plan ({self._status.plan}) and retried."
            log.warning(warning)
            hashes, notes = self._use_loras(lead.request)      # the new plan restored them
            pipe = self._control_pipeline(lead.request.mode) if lead.request.control is not None else self._pipe
            batches, seconds = self._generate_once(members, pipe)
        if batches is None:
            req = lead.request
            raise placing.out_of_memory(req.width, req.height, sum(m.request.num_images for m in members))
        peak = peak_vram_bytes(self.gpu_device)
        total = sum(len(images) for images in batches)
        with self._lock:
            self._status = replace(self._status, last_image_s=round(seconds / max(1, total), 3),
                                   last_peak_vram_bytes=peak)
        warning = "\n".join(filter(None, [warning, *notes]))
        saved = self._runner.save(members, batches, seconds, warning, peak, hashes)
        startup.mark(startup.FIRST_IMAGE)
        return saved

    def _use_loras(self, req: GenerationRequest) -> tuple[dict[str, str], list[str]]:
        """The request's LoRA set fused (riders share it: batch_key); the base model when it has none.
        In a low-VRAM plan the streamed (and int8) blocks carry them (placement.lora_carrier)."""
        placement = self._get_placement()
        carrier = placement.lora_carrier() if self._status.state == LoadState.OFFLOADED else None
        refusal = self._lora_refusal() if req.loras else None     # it walks the blocks' modules
        return self._loras.prepare(self._pipe, req.loras, refusal, carrier, self._lora_backup_room)

    def _lora_refusal(self) -> tuple[str, str] | None:
        """(mode, hint) when LoRAs cannot be fused correctly: fp8 weights. Rounding W + delta back
        to e4m3 leaves an error 1.45x the delta itself for a LoRA 2% the size of the weight (0.12x in
        bf16), measured on a 3840x3840 Linear: the LoRA would be mostly noise."""
        from . import fp8

        if self._pipe is not None and fp8.is_applied(self._pipe):
            return "--fp8 on", "Start with --fp8 off (bf16 weights) to use LoRAs."
        return None

    def _lora_backup_room(self, nbytes: int) -> bool:
        """Whether exact copies of `nbytes` of weights fit on the GPU beside the model and a
        generation's working memory, within the VRAM budget (else they go to pinned RAM)."""
        placement = self._get_placement()
        if placement.gpu_device is None:
            return False
        from .planning import working_bytes

        return allocated_vram_bytes(placement.gpu_device) + nbytes + working_bytes(False) <= self._budget_bytes()

    def _generate_once(self, members: list[Job], pipe) -> tuple[list | None, float]:
        """One pipeline call for the members; (None, 0) after an out-of-memory, memory freed."""
        reset_peak_vram(self.gpu_device)
        batches, seconds = self._runner.call(pipe, members, self._prompts.embeds)
        if batches is None:
            # Freed once the exception is gone: its traceback would keep the step's tensors alive.
            self._get_placement().free_memory()
            with self._lock:
                self._status = replace(self._status, oom_count=self._status.oom_count + 1)
        return batches, seconds

    def _control_pipeline(self, mode: str):
        """The ControlNet pipeline for `mode` on the loaded components; the ControlNet downloaded
        (through the cache, verified as the model is) and loaded on first use, then counted by
        the plans: resident beside the model when it fits, else in a low-VRAM plan that keeps
        or streams its blocks (as it does with int8). Refused only where no plan fits it, or
        for inpaint with a ControlNet that reads no mask."""
        if not self._control.loaded:
            self._load_control()
        from .controlnet import takes_inpaint

        if mode == "inpaint" and not takes_inpaint(self._control.model, self._pipe.transformer):
            raise ControlNetRefused(
                "This ControlNet (the union v1) reads no mask, so it cannot inpaint or outpaint.",
                "Use --controlnet PAI/Z-Image-Turbo-Fun-Controlnet-Union-2.1 for ControlNet with inpaint "
                "and outpaint, or untick Use ControlNet.")
        return self._control.pipeline(self._pipe, mode)

    def _load_control(self) -> None:
        folder = self._resolver(self.settings.controlnet, self.settings.cache_dir,
                                on_progress=self._report_control_download, cancel=self._download_cancel)
        from .planning import DoesNotFit, make_plan, sizes_of

        placement = self._get_placement()
        state = self._status.state
        dtype = self._pipe.vae.dtype               # the compute dtype (the VAE is never quantized)
        # Into RAM first: it reaches the GPU only through a placement that counted it.
        self._set(stage=LoadStage.READ, current_file="ControlNet")
        try:
            self._control.load(folder, self._pipe.transformer, dtype, "cpu")
        finally:
            self._set(stage=None, current_file="", progress=1.0)
        if placement.gpu_device is not None:
            try:
                make_plan(sizes_of(self._pipe, self._control.model), self._budget_bytes())
            except DoesNotFit as e:
                self._control.drop()
                raise ControlNetRefused(
                    f"The ControlNet does not fit in the {e.budget_bytes / 2**30:.1f} GiB VRAM budget beside the "
                    f"model, even with every block streamed (it needs {e.minimum_bytes / 2**30:.1f} GiB).",
                    f"Set --vram-budget to at least {e.minimum_bytes / 2**30:.1f} (GB), or use --quantize int8.") from e
        # From now on the placements count it (_target_state, the plans): resident beside the model
        # when it fits, else a plan; a plan in effect is made again with it.
        self._replan = self._target_state() == LoadState.OFFLOADED
        log.info("ControlNet loaded into RAM; placing it (the model was %s)", state)
        self._run_apply_placement()
        if self._status.state != LoadState.OFFLOADED:
            self._control.follow(self._pipe.transformer)

    def _report_control_download(self, p) -> None:
        # The model stays ready while the ControlNet downloads: progress without a state change.
        self._set(stage=LoadStage.DOWNLOAD, bytes_done=p.bytes_done, bytes_total=p.bytes_total,
                  current_file=f"ControlNet: {p.current_file}", speed_bps=p.bytes_per_s, eta_s=p.eta_s,
                  progress=(p.bytes_done / p.bytes_total) if p.bytes_total else 0.0)

    def _step_down(self) -> bool:
        """After an out-of-memory on the GPU: a smaller budget's plan (placing.budget_after_oom), no disk reads."""
        placement = self._get_placement()
        if placement.gpu_device is None or self._pipe is None:
            return False
        from .planning import DoesNotFit

        self._budget_override = placing.budget_after_oom(self._budget_override or self._budget_bytes(),
                                                         placement.vram_budget_bytes())
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
            self._control.follow(self._pipe.transformer)
            placement.free_memory()
            self._set(state=LoadState.ON_CPU, stage=None, device="cpu", plan="")
            return False
        return True

    # ---- cache jobs (on the worker: never beside a load, a generation or each other) ------------
    def repair(self, model_id: str | None = None) -> Job:
        """Re-download only the damaged or missing files of a cached model; its result is a
        hub.RepairReport."""
        mid = model_id or self.settings.model
        with self._lock:
            return self._enqueue_locked(CACHE, lambda job: self._run_repair(mid))

    def verify(self, model_id: str | None = None) -> Job:
        """Hash every file of a cached model (never beside a load or a repair, which write the same
        files and manifest); its result is a hub.VerifyReport, its progress the status' progress."""
        mid = model_id or self.settings.model
        with self._lock:
            return self._enqueue_locked(CACHE, lambda job: self._run_verify(mid))

    def delete_cached(self, model_id: str, confirmed_id: str | None = None) -> Job:
        """Delete a model from the cache; refused while it is loaded, and when `confirmed_id` (the
        model the user confirmed) is another one."""
        check_confirmed(model_id, confirmed_id)
        with self._lock:
            return self._enqueue_locked(CACHE, lambda job: self._run_delete(model_id))

    def _run_repair(self, model_id: str):
        self._download_cancel = threading.Event()
        started = threading.Event()                # refusals come before it: they leave the state as it is

        def on_start() -> None:
            started.set()
            self._start_download()
        try:
            report = repair_model(model_id, self.settings.cache_dir, loaded=self._pipe is not None, on_start=on_start,
                                  on_progress=self._report_download, cancel=self._download_cancel)
        except DownloadCancelled as e:
            self._set(state=LoadState.UNLOADED, stage=None, message=e.message, hint=e.hint, progress=0.0)
            raise
        except ZImageError as e:
            if started.is_set():
                self._fail(e)
            raise
        self._set(state=LoadState.UNLOADED, stage=None, progress=0.0, message="", hint="")
        return report

    def _run_verify(self, model_id: str):
        before = self._status

        def on_progress(done: int, total: int, name: str) -> None:
            self._set(progress=done / total if total else 1.0, current_file=name)
        try:
            return verify_model(model_id, self.settings.cache_dir, on_progress)
        finally:
            self._set(progress=before.progress, current_file=before.current_file)

    def _run_delete(self, model_id: str) -> int:
        freed = delete_model(model_id, self.settings.cache_dir, self._model_dir)
        if self._status.state == LoadState.ERROR and model_id == self.settings.model:
            self._set(state=LoadState.UNLOADED, message="", hint="")
        return freed

    # ---- idle unload -------------------------------------------------------------------------
    def _idle_action(self, idle_s: float) -> str | None:
        has_gpu = self._placement is not None and self._placement.gpu_device is not None
        return idle_action(self._status.state, has_gpu, idle_s, self.settings.idle_unload_s,
                           self.settings.idle_drop_s)

    def _run_idle(self, job: Job) -> Status:
        # Re-checked on the worker: a request that arrived since the check wins.
        with self._lock:
            busy = bool(self._queue.waiting)
            idle_s = self._queue.idle_s_locked()
        action = None if busy else self._idle_action(idle_s)
        if action:
            log.info("idle for %.0f s: unloading to %s", idle_s, action)
            return self._run_unload(action)
        return self.status()

    def _on_quiet_locked(self, idle_s: float) -> None:
        """The idle loop's poll with nothing queued or running (lock held)."""
        if self._idle_action(idle_s):
            self._enqueue_locked(IDLE, self._run_idle)
