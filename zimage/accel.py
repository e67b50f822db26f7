"""Speed on the GPU without changing the picture: the attention backend and regional compilation.

- Attention goes through diffusers' dispatcher. `auto` takes FlashAttention 3 on Hopper when its
  package is installed, else PyTorch's SDPA ("native"), which picks flash / cuDNN / memory-efficient
  kernels itself and runs everywhere (on the H100, native and cuDNN measured the same).
- `torch.compile` of the repeated transformer blocks (diffusers' `compile_repeated_blocks`, one graph
  for all blocks of a kind) with inductor's caches in a folder that outlives the process, so later
  starts reuse the kernels (22 s cold, ~7 s from the cache on the H100). The compile happens in the
  load's warm-up images, one per prompt length, so the shapes turn dynamic there and no request
  waits for a compile. Only while the model is resident on a CUDA GPU: low-VRAM streaming swaps
  weights in hooks, which compiled graphs must not trace, so those plans run the blocks eagerly.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

KNOWN_BACKENDS = ("native", "_native_flash", "_native_cudnn", "_native_efficient", "_native_math", "flash",
                  "_flash_3", "sage")
COMPILE_DIR = ".zimage-compile"
WARMUP_PROMPTS = ("warm-up", "a warm-up prompt of a different length, so that the compiled blocks take "
                             "any prompt length without compiling again")


def module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def choose_attention(setting: str, capability: tuple[int, int] | None,
                     available: Callable[[str], bool] = module_available) -> str:
    """The backend to use: the setting when it names one; on `auto`, FlashAttention 3 on Hopper
    (compute capability 9.x) when `flash_attn_interface` is installed, else PyTorch SDPA."""
    if setting != "auto":
        return setting
    if capability is not None and capability[0] == 9 and available("flash_attn_interface"):
        return "_flash_3"
    return "native"


def want_compile(setting: str, on_cuda: bool, resident: bool,
                 available: Callable[[str], bool] = module_available) -> bool:
    """Compile the blocks? `off` never; otherwise only on a CUDA GPU with the model resident, and on
    `auto` only when Triton (inductor's GPU code generator) is installed."""
    if setting == "off" or not (on_cuda and resident):
        return False
    return setting == "on" or available("triton")


def set_attention(pipe, backend: str) -> str:
    """Apply `backend` to the transformer; a backend that cannot run here falls back to native."""
    if backend == "native":
        return backend
    try:
        pipe.transformer.set_attention_backend(backend)
        return backend
    except Exception as e:   # a missing package or an unsupported GPU: diffusers raises plain errors
        log.warning("attention backend %s unavailable (%s): using PyTorch SDPA", backend, e)
        pipe.transformer.set_attention_backend("native")
        return "native"


def compile_cache_dir(cache_base: Path) -> Path:
    return cache_base / COMPILE_DIR


def compile_blocks(pipe, cache_dir: Path | None, backend: str = "inductor") -> None:
    """Regional compile; the kernels are built lazily, by the warm-up images."""
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir))
    pipe.transformer.compile_repeated_blocks(fullgraph=True, backend=backend)


def is_compiled(pipe) -> bool:
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in pipe.transformer.modules())


def uncompile_blocks(pipe) -> None:
    """Back to eager blocks (before low-VRAM hooks go on); compiling again reuses the cache."""
    for m in pipe.transformer.modules():
        if getattr(m, "_compiled_call_impl", None) is not None:
            m._compiled_call_impl = None
