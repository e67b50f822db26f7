"""Placement policy: the VRAM budget in effect, where the pipeline should live for it, and the
smaller budget to retry with after an out-of-memory. Pure decisions over plain values, so they
are tested without a GPU; the manager applies them and keeps the state changes.
"""
from __future__ import annotations

from typing import Callable

from ..errors import OutOfMemory
from ..state import LoadState
from .planning import WORKING_BYTES

LOW_VRAM_BUDGET_BYTES = 8 * 2**30
OOM_BUDGET_FACTOR = 0.75     # after an out-of-memory: a budget 25% below what was in use


def budget_bytes(override: int | None, vram_budget: str, low_vram: bool, free_vram: Callable[[], int]) -> int:
    """The VRAM budget in effect: `override` (one lowered after an out-of-memory), else
    --vram-budget (GiB), else 8 GB with Low VRAM, else the free VRAM (`free_vram()`, asked only then)."""
    if override is not None:
        return override
    if vram_budget != "auto":
        return int(float(vram_budget) * 2**30)
    if low_vram:
        return LOW_VRAM_BUDGET_BYTES
    return free_vram()


def target_state(*, has_gpu: bool, low_vram: bool, lowered: bool, quantized: bool, model_bytes: int,
                 budget: Callable[[], int]) -> LoadState:
    """Where the pipeline belongs: on the CPU without a GPU; offloaded (a low-VRAM plan) with Low
    VRAM, a budget `lowered` after an out-of-memory, quantized weights, or weights of
    `model_bytes` that with the working memory exceed `budget()`; else resident on the GPU.
    `model_bytes` is 0 until the model's folder is known, and then the budget is not asked."""
    if not has_gpu:
        return LoadState.ON_CPU
    if low_vram or lowered or quantized:
        return LoadState.OFFLOADED
    if model_bytes and model_bytes + WORKING_BYTES > budget():
        return LoadState.OFFLOADED
    return LoadState.ON_GPU


def budget_after_oom(in_use_bytes: int, gpu_free_bytes: int) -> int:
    """The budget to retry with after an out-of-memory: 25% below the smaller of the budget that was
    in use and what the GPU can hold now (a fixed --vram-budget may exceed it: another program took VRAM)."""
    return int(min(in_use_bytes, gpu_free_bytes) * OOM_BUDGET_FACTOR)


def out_of_memory(width: int, height: int, images: int) -> OutOfMemory:
    """The error once the retry on a smaller plan ran out of memory too (or there was none)."""
    return OutOfMemory(f"The GPU ran out of memory at {width}x{height} x {images}.",
                       "Turn on Low VRAM or set a smaller --vram-budget, or lower the size or the number of images.")
