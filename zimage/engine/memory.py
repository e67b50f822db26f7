"""RAM and VRAM facts for the status panel (psutil, nvidia-ml-py, torch when already imported)."""
from __future__ import annotations

import logging

import psutil

from .. import startup
from ..state import MemoryInfo

log = logging.getLogger(__name__)


def _cuda_index(device: str | None) -> int | None:
    if not device or not device.startswith("cuda"):
        return None
    _, _, idx = device.partition(":")
    return int(idx) if idx else 0


def memory_info(gpu_device: str | None = None) -> MemoryInfo:
    """Cheap enough to call every second. Never imports torch (the page must not wait for it)."""
    vm = psutil.virtual_memory()
    info = dict(process_rss_bytes=psutil.Process().memory_info().rss,
                ram_total_bytes=vm.total, ram_available_bytes=vm.available)
    index = _cuda_index(gpu_device)
    if index is not None:
        torch = startup.imported("torch")
        if torch is not None and torch.cuda.is_available():
            info["vram_allocated_bytes"] = torch.cuda.memory_allocated(index)
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            info["vram_used_bytes"], info["vram_total_bytes"] = int(mem.used), int(mem.total)
        except Exception as e:  # no driver, no permission: the panel shows what torch knows
            log.debug("nvml unavailable: %s", e)
    return MemoryInfo(**info)
