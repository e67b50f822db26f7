"""The manager's load, placement and unload jobs: disk (or download) to RAM, RAM to the GPU or a
low-VRAM plan, a smaller plan after an out-of-memory, and back to RAM or nothing.

Methods of `PipelineManager` (engine/manager.py), which owns every field they touch and the lock;
they run on its worker thread only (the rule is written in worker.JobQueue).
"""
from __future__ import annotations

import functools
import logging
import sys
import threading
from dataclasses import replace

from .. import startup
from ..errors import DownloadCancelled, ModelLoadFailed, OutOfMemory, ZImageError
from ..jobs import Job
from ..state import LoadStage, LoadState, Status
from . import placing, speed
from .vram import cuda_available

log = logging.getLogger(__name__)

DEMO_NOTE = "Demo mode: a tiny model with random weights, so every image is noise."


class LoadJobs:
    """PipelineManager's load, placement and unload jobs (mixed in; the fields are the manager's)."""

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

    def _speed_up(self, warm: bool) -> None:
        demo = DEMO_NOTE if self.settings.demo else ""
        self._attention, compile_wanted = speed.speed_up(
            self._pipe, self.settings, self._get_placement(), warm=warm,
            on_fp8=lambda note: self._set(note="\n".join(filter(None, [demo, note]))),
            on_warm_up=lambda: self._set(state=LoadState.LOADING, stage=LoadStage.WARMUP, progress=0.0, current_file=""))
        if compile_wanted:
            self._compile_when_quiet(self._pipe)

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
            if speed.plan_compile_wanted(self.settings, placement, self._pipe):
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
