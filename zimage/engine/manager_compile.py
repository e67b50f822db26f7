"""The manager's compile jobs: the resident model's background compile (compile_bg) swapped in
between requests, and a low-VRAM plan's compile one warm-up piece per job. Never in the way of
readiness or a request.

Methods of `PipelineManager` (engine/manager.py), which owns every field they touch and the lock;
the `_run_*` ones run on its worker thread, `_compile_finished` on the compile's thread (it only queues).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from .. import startup
from ..jobs import COMPILE
from ..state import LoadState
from . import speed

log = logging.getLogger(__name__)

QUIET_POLL_S = 0.5              # how often a deferred background compile looks for a quiet queue


class CompileJobs:
    """PipelineManager's compile jobs (mixed in; the fields are the manager's)."""

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

    def _compile_in_background(self, in_process: bool | None = None) -> None:
        """The blocks compiled in a process of their own (aot_blocks: a package swapped in, from the
        disk when a launch before made it) where `compile_process` wants it and the blocks are plain;
        else (or `in_process=False`) compiled on a thread of this process, beside the serving (compile_bg)."""
        from . import aot_blocks
        from .accel import compile_transformer, compiled_extras
        from .compile_bg import BackgroundCompile, artifact_path

        if self._compiling is not None and self._compiling.pipe is self._pipe and not self._compiling.cancelled.is_set():
            return
        cache = speed.compile_cache_dir(self.settings)
        if in_process is None:
            in_process = aot_blocks.wanted(self.settings.compile_process, self._pipe.transformer)
        if in_process:
            self._compiling = aot_blocks.PackageCompile(self._pipe, cache, self._compile_finished)
            startup.mark(startup.COMPILING)
            self._compiling.start()
            return
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
        resident = self._status.state == LoadState.ON_GPU and self._pipe is bg.pipe
        if getattr(bg, "process_failed", False):       # the compile process: today's in-thread compile instead
            log.warning("compiling in a process failed (%s): compiling in this process instead", bg.error)
            if resident:
                self._compile_in_background(in_process=False)
            return False
        if bg.error is not None:
            startup.mark(startup.COMPILE_FAILED)
            log.warning("background compile failed (%s): the eager blocks keep serving", bg.error)
            return False
        if not resident:
            return False
        if getattr(bg, "replaces_transformer", True):
            self._loras.drop()           # the base weights under the twin too (shared tensors); fused again on use
        swapped = bg.swap_into(self._pipe)
        if swapped:
            startup.mark(startup.COMPILED)
            log.info("compiled blocks in use%s", " (from the saved cache artifacts)" if bg.loaded_artifacts else "")
        elif bg.error is not None:       # a package that would not load (aot_blocks removed it; the log says why)
            startup.mark(startup.COMPILE_FAILED)
        return swapped

    def _cancel_compile(self) -> None:
        if self._compiling is not None:
            self._compiling.cancel()
            self._compiling = None
