"""The manager's use of adapters in a generation: the request's LoRA set fused (or refused), and
the ControlNet downloaded, loaded and placed on first use.

Methods of `PipelineManager` (engine/manager.py), which owns every field they touch and the lock;
they run on its worker thread only.
"""
from __future__ import annotations

import logging

from ..errors import ControlNetRefused
from ..request import GenerationRequest
from ..state import LoadStage, LoadState
from .vram import allocated_vram_bytes

log = logging.getLogger(__name__)


class AdapterJobs:
    """PipelineManager's LoRA and ControlNet jobs (mixed in; the fields are the manager's)."""

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
