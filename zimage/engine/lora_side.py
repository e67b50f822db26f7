"""LoRAs on a GGUF DiT's layers, as an added low-rank path: y = GGUFLinear(x) + up @ (down @ x).

A GGUF weight stays packed (Q8_0, Q4_K...) and diffusers' GGUFLinear dequantizes it per call, so
there is no bf16 weight to fuse into: W + up @ down rounded back to the quant grid would lose most
of a LoRA's small delta (as with fp8, see manager._lora_refusal), and re-quantizing could not be
undone. The side path leaves the packed weight untouched: a forward hook adds the two small matmuls
(rank r: r x (in + out) multiply-adds a token, 2 x 16 x 3840 beside 3840^2 for a rank-16 LoRA on a
3840-wide layer, under 1 %), and taking the LoRA away is removing the hook. Resident or streamed
blocks alike: the hook runs wherever the block runs, with its terms on the compute device.
"""
from __future__ import annotations

import functools

import torch


def is_packed(module) -> bool:
    """Whether `module`'s weight is a packed GGUF tensor (diffusers' GGUFParameter)."""
    return getattr(getattr(module, "weight", None), "quant_type", None) is not None


def weight_shape(module) -> tuple[int, int]:
    """(out, in) of a Linear's weight as it computes: a GGUF weight's shape is its packed bytes'."""
    w = module.weight
    return tuple(getattr(w, "quant_shape", w.shape))


def compute_dtype(module, default):
    """The dtype a GGUF layer computes in (GGUFQuantizationConfig's compute_dtype)."""
    return getattr(module, "compute_dtype", None) or default


def _add_low_rank(module, args, output, up: torch.Tensor, down: torch.Tensor):
    x = args[0]
    return output + torch.nn.functional.linear(torch.nn.functional.linear(x.to(down.dtype), down), up).to(output.dtype)


class SidePaths:
    """The LoRA terms hooked onto packed layers now; `set` replaces them all, `clear` takes them off."""

    def __init__(self):
        self._handles: list = []

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def set(self, pairs: dict) -> None:
        """{module: (up [out, R], down [R, in])}, on the device the module computes on."""
        self.clear()
        for module, (up, down) in pairs.items():
            self._handles.append(module.register_forward_hook(functools.partial(_add_low_rank, up=up, down=down)))

    def clear(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
