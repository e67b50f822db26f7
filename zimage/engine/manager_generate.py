"""The manager's generation job: a request and its riders in one pipeline call, loaded first when
needed, retried once on a smaller VRAM plan after an out-of-memory, then saved.

Methods of `PipelineManager` (engine/manager.py), which owns every field they touch and the lock;
they run on its worker thread only.
"""
from __future__ import annotations

import logging
from dataclasses import replace

from .. import startup
from ..jobs import Job, settle
from ..request import GenerationRequest, GenerationResult
from ..state import READY_STATES
from . import placing
from .vram import peak_vram_bytes, reset_peak_vram

log = logging.getLogger(__name__)


class GenerateJobs:
    """PipelineManager's generation jobs (mixed in; the fields are the manager's)."""

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
