"""Idle unload policy (the seed's): a pure decision, so it is tested without clocks or threads."""
from __future__ import annotations

from ..state import LoadState


def idle_action(state: LoadState, has_gpu: bool, idle_s: float, unload_after_s: float,
                drop_after_s: float) -> str | None:
    """What to do after `idle_s` seconds without a request: "cpu" (leave the GPU, keep the RAM copy
    so coming back is a copy, not a disk read), "none" (drop the model) or None. 0 means never."""
    if state in (LoadState.ON_GPU, LoadState.OFFLOADED) and unload_after_s and idle_s >= unload_after_s:
        return "cpu"
    if state == LoadState.ON_CPU:
        if not has_gpu and unload_after_s and idle_s >= unload_after_s:
            return "none"    # no GPU to leave: the RAM copy is the loaded model
        if drop_after_s and idle_s >= drop_after_s:
            return "none"
    return None
