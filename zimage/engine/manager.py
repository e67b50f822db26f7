"""PipelineManager: the single owner of the one shared pipeline, its state machine and its worker.

Everything that touches the pipeline (page, HTTP API, preload, unload, low-VRAM switch, idle unload)
is a Job run one at a time on one worker thread: diffusers pipelines are not thread-safe (the
scheduler keeps step state), and an unload queued behind a generation can never pull the model from
under it. Readers get an immutable `Status` snapshot without waiting for the worker.

This file holds the state, the lock and the public calls that queue jobs; each kind of job's body
lives in a module of its own, mixed into the class (they own no fields):
  manager_load      load from disk, place (GPU, low-VRAM plan, RAM), step down after an OOM, unload
  manager_compile   the background compile and a plan's compile, swapped in between requests
  manager_generate  one pipeline call for a request and its riders
  manager_adapters  the request's LoRAs fused, the ControlNet loaded and placed on first use
  manager_cache     repair, verify and delete a cached model
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any, Callable

from .. import startup
from ..config import Settings
from ..errors import Cancelled, ZImageError
from ..jobs import (CACHE, ENHANCE, GENERATE, IDLE, IMPORT, LOAD, LOW_VRAM, UNLOAD, Job, check_unload_target, matches,
                   preload_and_wait, settle)
from ..request import GenerationRequest, GenerationResult
from ..state import READY_STATES, LoadState, MemoryInfo, Status
from ..store.cache_ops import check_confirmed
from ..store.lora_folders import lora_folders
from ..store.outputs import OutputStore
from . import placing
from .controlnet import ControlNetSlot
from .idle import idle_action
from .lora_active import ActiveLoras
from .manager_adapters import AdapterJobs
from .manager_cache import CacheJobs
from .manager_compile import CompileJobs
from .manager_generate import GenerateJobs
from .manager_load import DEMO_NOTE, LoadJobs
from .prompt_cache import PromptCache
from .runner import GenerationRunner
from .worker import JobQueue

log = logging.getLogger(__name__)

__all__ = ["DEMO_NOTE", "PipelineManager"]


class PipelineManager(LoadJobs, CompileJobs, GenerateJobs, AdapterJobs, CacheJobs):
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
        self._cancel_compile()         # a compile process (aot_blocks) ends with the manager

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
        return preload_and_wait(self, timeout)

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
        check_unload_target(to)
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

    def _quantized(self) -> bool:
        return self.settings.quantize != "none" and self._get_placement().gpu_device is not None

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
