"""Reading the GPU's memory for the manager: peak allocation per generation, out-of-memory errors."""
from __future__ import annotations

import sys


def _torch_with_cuda():
    torch = sys.modules.get("torch")      # never imported just to answer: the page runs before torch
    return torch if torch is not None and torch.cuda.is_available() else None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def reset_peak_vram(device: str | None) -> None:
    torch = _torch_with_cuda()
    if torch is not None and device:
        torch.cuda.reset_peak_memory_stats(device)


def peak_vram_bytes(device: str | None) -> int | None:
    """The peak allocation since the last reset, or None without a GPU."""
    torch = _torch_with_cuda()
    if torch is not None and device:
        return int(torch.cuda.max_memory_allocated(device))
    return None


def allocated_vram_bytes(device: str | None) -> int:
    """What this process holds in tensors on `device` now (0 without a GPU)."""
    torch = _torch_with_cuda()
    if torch is not None and device:
        return int(torch.cuda.memory_allocated(device))
    return 0


def cuda_error_code(rc) -> int:
    """The number in a CUDA runtime result (torch.cuda.cudart() returns an enum): 0 is success."""
    return int(getattr(rc, "value", rc))


def is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()
