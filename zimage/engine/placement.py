"""Where the pipeline's weights live: moving them between devices and low-VRAM offload.

`TorchPlacement` is the real thing. The manager only talks to this small interface, so the
GPU-side logic of the state machine is tested on CPU with a stand-in placement (tests/).
"""
from __future__ import annotations

import gc
import logging
from typing import Callable, Protocol

import psutil

from .vram import cuda_error_code

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]   # bytes_done, bytes_total, component name
VRAM_MARGIN_BYTES = 2**30


class Placement(Protocol):
    gpu_device: str | None     # e.g. "cuda:0"; None when there is no usable GPU

    def move(self, pipe, device: str, on_progress: Progress | None = None) -> None: ...
    def vram_budget_bytes(self) -> int: ...
    def enable_offload(self, pipe, budget_bytes: int, controlnet=None) -> str: ...
    def disable_offload(self, pipe) -> None: ...
    def lora_carrier(self): ...                     # the plan's transformer BlockStreamer, or None
    def free_memory(self) -> None: ...
    def release_pinned(self) -> None: ...


def module_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def pipeline_modules(pipe) -> list[tuple[str, object]]:
    import torch

    return [(name, c) for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)]


class RegisteredBuffer:
    """Plain RAM page-locked in place (cudaHostRegister on one whole allocation) instead of torch's
    pinned allocator, which rounds up to a power of two (a 20.5 GB model took a 32 GB block) and
    took 22 s for the first idle unload in the GPU VM. Registering the loader's 10-20 GB in place took
    0.35-0.9 s there (low-VRAM bench, pages already in memory); here the pages are new, so the kernel
    also has to zero them: the idle-unload figure is not measured yet. Unregistered before the
    memory can be freed."""

    MIN_BYTES = 64 * 2**20   # its own mmap'd pages (see host_pin.HostPinner)

    def __init__(self, nbytes: int, cudart=None):
        import torch

        self.tensor = torch.empty(max(nbytes, self.MIN_BYTES), dtype=torch.uint8)
        self._cudart = cudart or torch.cuda.cudart()
        rc = self._cudart.cudaHostRegister(self.tensor.data_ptr(), self.tensor.numel(), 0)
        self.registered = cuda_error_code(rc) == 0
        if not self.registered:
            log.warning("page-locking %.1f GB failed (%s): idle unload copies will be slower", nbytes / 1e9, rc)

    def numel(self) -> int:
        return self.tensor.numel() if self.tensor is not None else 0

    def release(self) -> None:
        if self.registered:
            self._cudart.cudaHostUnregister(self.tensor.data_ptr())
            self.registered = False
        self.tensor = None

    def __del__(self):
        if getattr(self, "registered", False):
            try:
                self.release()
            except Exception:   # interpreter shutdown: CUDA may already be gone, and the process with it
                pass


def pin_budget_bytes(setting_gb: float) -> int:
    """How much pinned RAM idle unload may use: the setting, or half the machine's RAM (auto, -1)."""
    if setting_gb < 0:
        return psutil.virtual_memory().total // 2
    return int(setting_gb * 2**30)


class TorchPlacement:
    def __init__(self, device_setting: str = "auto", pin_ram_gb: float = -1):
        import torch

        self.pin_budget = pin_budget_bytes(pin_ram_gb)
        self._pinned: RegisteredBuffer | None = None   # page-locked RAM, kept for the next idle unload
        self._runtime = None  # the LowVramRuntime while a low-VRAM plan is in effect
        if device_setting == "cpu":
            self.gpu_device = None
        elif device_setting == "auto":
            self.gpu_device = "cuda:0" if torch.cuda.is_available() else None
        elif not torch.cuda.is_available():
            log.warning("device %s asked for but CUDA is not available; using the CPU", device_setting)
            self.gpu_device = None
        else:
            self.gpu_device = device_setting if ":" in device_setting else "cuda:0"

    @staticmethod
    def move_modules(pipe, device: str, on_progress: Progress | None = None) -> None:
        """Move every module to `device`, reporting bytes moved after each module."""
        import torch

        modules = pipeline_modules(pipe)
        total = sum(module_bytes(m) for _, m in modules)
        done = 0
        for name, module in modules:
            module.to(device, non_blocking=True)   # async only where the source is pinned
            done += module_bytes(module)
            if on_progress:
                on_progress(done, total, name)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)

    def move(self, pipe, device: str, on_progress: Progress | None = None) -> None:
        if device == "cpu" and self.gpu_device is not None and self._fits_pinned(pipe):
            self._to_pinned_ram(pipe)
        else:
            self.move_modules(pipe, device, on_progress)
        if device == "cpu":
            self.free_memory()

    def _fits_pinned(self, pipe) -> bool:
        need = sum(module_bytes(m) for _, m in pipeline_modules(pipe))
        return need <= min(self.pin_budget, psutil.virtual_memory().available - 2 * 2**30)

    def _to_pinned_ram(self, pipe) -> None:
        """Idle unload keeps the weights in page-locked RAM: coming back is a DMA copy at ~50 GB/s
        (0.37 s for the whole model on an H100) instead of a pageable copy or a disk read.

        One flat buffer holds every tensor (pinning per tensor took 24 s for the 20.5 GB model on
        the GPU machine); it is kept and reused by later unloads until the model is dropped."""
        import torch

        modules = [m for _, m in pipeline_modules(pipe)]
        align = 64
        need = sum(-(-t.numel() * t.element_size() // align) * align
                   for m in modules for t in list(m.parameters()) + list(m.buffers()) if t.device.type != "cpu")
        if self._pinned is None or self._pinned.numel() < need:
            self.release_pinned()
            self._pinned = RegisteredBuffer(need)
        buffer = self._pinned.tensor
        offset = 0

        def to_pinned(t):
            nonlocal offset
            if t.device.type == "cpu":
                return t
            n = t.numel() * t.element_size()
            view = buffer[offset:offset + n].view(t.dtype).view(t.shape)
            offset += -(-n // align) * align
            view.copy_(t, non_blocking=True)
            return view
        for module in modules:
            module._apply(to_pinned)    # nn.Module's own walk over parameters and buffers (what .to uses)
        torch.cuda.synchronize()

    def release_pinned(self) -> None:
        if self._pinned is not None:
            self._pinned.release()
        self._pinned = None

    def vram_budget_bytes(self) -> int:
        """What the model may use when no budget is set: the device's free memory plus what this
        process already holds, less a margin for the display and other programs."""
        import torch

        free, total = torch.cuda.mem_get_info(self.gpu_device)
        budget = free + torch.cuda.memory_reserved(self.gpu_device) - VRAM_MARGIN_BYTES
        fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
        if fraction is not None:      # a cap set with set_per_process_memory_fraction (by us or a host app)
            budget = min(budget, int(fraction(self.gpu_device) * total) - VRAM_MARGIN_BYTES)
        return budget

    def enable_offload(self, pipe, budget_bytes: int, controlnet=None) -> str:
        """Run under the fastest plan that fits `budget_bytes` (a loaded `controlnet` counted and
        placed by it); returns the plan's description."""
        from .offload import LowVramRuntime
        from .planning import make_plan, sizes_of

        self.free_memory()             # what an earlier plan or an out-of-memory left in the allocator's cache
        plan = make_plan(sizes_of(pipe, controlnet), budget_bytes)
        self._runtime = LowVramRuntime(pipe, plan, self.gpu_device, controlnet)
        log.info("low-VRAM plan: %s", plan.describe())
        return plan.describe()

    def lora_carrier(self):
        """What adds LoRAs to the blocks a low-VRAM plan streams (engine.lora); None when resident."""
        return self._runtime.lora_carrier if self._runtime is not None else None

    def disable_offload(self, pipe) -> None:
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.remove("cpu")

    def free_memory(self) -> None:
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def resolve_dtype(setting: str, on_gpu: bool):
    import torch

    if setting == "auto":
        return torch.bfloat16 if on_gpu else torch.float32
    return getattr(torch, setting)
