"""Where the pipeline's weights live: moving them between devices and low-VRAM offload.

`TorchPlacement` is the real thing. The manager only talks to this small interface, so the
GPU-side logic of the state machine is tested on CPU with a stand-in placement (tests/).
"""
from __future__ import annotations

import gc
import logging
from typing import Callable, Protocol

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]   # bytes_done, bytes_total, component name


class Placement(Protocol):
    gpu_device: str | None     # e.g. "cuda:0"; None when there is no usable GPU

    def move(self, pipe, device: str, on_progress: Progress | None = None) -> None: ...
    def enable_offload(self, pipe) -> None: ...
    def disable_offload(self, pipe) -> None: ...
    def free_memory(self) -> None: ...


def module_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def pipeline_modules(pipe) -> list[tuple[str, object]]:
    import torch

    return [(name, c) for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)]


class TorchPlacement:
    def __init__(self, device_setting: str = "auto"):
        import torch

        if device_setting == "cpu":
            self.gpu_device = None
        elif device_setting == "auto":
            self.gpu_device = "cuda:0" if torch.cuda.is_available() else None
        else:
            if not torch.cuda.is_available():
                log.warning("device %s asked for but CUDA is not available; using the CPU", device_setting)
                self.gpu_device = None
            else:
                self.gpu_device = device_setting if ":" in device_setting else "cuda:0"

    def move(self, pipe, device: str, on_progress: Progress | None = None) -> None:
        """Move every module to `device`, reporting bytes moved after each module."""
        modules = pipeline_modules(pipe)
        total = sum(module_bytes(m) for _, m in modules)
        done = 0
        for name, module in modules:
            module.to(device)
            done += module_bytes(module)
            if on_progress:
                on_progress(done, total, name)
        if device == "cpu":
            self.free_memory()

    def enable_offload(self, pipe) -> None:
        # diffusers' whole-module offload: each component visits the GPU only while it runs.
        pipe.enable_model_cpu_offload(device=self.gpu_device)

    def disable_offload(self, pipe) -> None:
        pipe.remove_all_hooks()

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
