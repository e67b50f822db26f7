"""Optional float8 matmuls in the transformer blocks (`--fp8 on`; off by default).

Each Linear of the blocks' attention (q, k, v, out) and feed-forward (w1, w2, w3) becomes an
`Fp8Linear`: the weight in float8 e4m3 with one float32 scale per output row, the input scaled per
token at run time, and one `torch._scaled_mm` with a bf16 result. That is the arithmetic of
torchao's Float8DynamicActivationFloat8Weight with PerRow granularity, written with plain tensors
and one PyTorch op: regional compile fuses the input scaling into the neighbouring kernels and
compiles in seconds, where torchao's tensor subclasses had not compiled after 330 s. The adaLN
modulation, the embedders and the final layer stay bf16 (one token, or small).

Eager, the extra scaling kernels make fp8 slower than bf16 (1.95 s against 1.55 s an image on the
H100), so it runs only with compiled blocks, on a GPU with fp8 tensor cores (Ada, Hopper or newer),
with the model resident. The transformer's weights take half the VRAM. Low-VRAM plans stream bf16
blocks: `remove` turns the blocks back into bf16 Linears (from the fp8 values, so a later `apply`
gives the same fp8 weights again) before a plan goes on.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max
MIN_CAPABILITY = (8, 9)                    # Ada; Hopper is 9.0
BLOCK_PARTS = ("attention", "feed_forward")


def choose(setting: str, capability: tuple[int, int] | None, compiled: bool) -> tuple[bool, str]:
    """(use fp8?, a note for the user when it was asked for and cannot be used)."""
    if setting != "on":
        return False, ""
    if capability is None:
        return False, "fp8 needs a CUDA GPU; running bf16."
    if tuple(capability) < MIN_CAPABILITY:
        return False, (f"fp8 needs a GPU with fp8 tensor cores (Ada, Hopper or newer; compute capability 8.9+), "
                       f"this one is {capability[0]}.{capability[1]}; running bf16.")
    if not compiled:
        return False, "fp8 runs only with compiled blocks (it is slower than bf16 without); running bf16."
    return True, ""


def _row_scale(x: torch.Tensor) -> torch.Tensor:
    """float32 scale per row so that the row's largest magnitude maps to FP8_MAX."""
    return (x.abs().amax(dim=-1, keepdim=True).float() / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)


def _to_fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)


class Fp8Linear(nn.Module):
    """A bias-free or biased Linear whose weight is float8 e4m3 with a per-output-row scale."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)        # [out, in], float8
        self.register_buffer("weight_scale", scale)                    # [1, out], float32
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Fp8Linear:
        w = linear.weight.detach()
        scale = _row_scale(w)                                          # [out, 1]
        bias = None if linear.bias is None else linear.bias.detach()
        return cls(_to_fp8(w, scale), scale.t().contiguous(), bias)

    def to_linear(self, dtype: torch.dtype) -> nn.Linear:
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight.device, dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(self.weight.float() * self.weight_scale.t())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        linear.requires_grad_(False)
        return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        scale = _row_scale(rows)                                       # per token
        out = torch._scaled_mm(_to_fp8(rows, scale), self.weight.t(), scale_a=scale, scale_b=self.weight_scale,
                               bias=self.bias, out_dtype=x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)


def _targets(pipe, kind: type) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, module) for every `kind` module inside the blocks' attention and feed-forward."""
    from .anatomy import transformer_blocks

    found = []
    for block in transformer_blocks(pipe.transformer):
        for part in BLOCK_PARTS:
            for parent in getattr(block, part).modules():
                for name, child in parent.named_children():
                    if type(child) is kind and (kind is Fp8Linear or child.weight.is_floating_point()):
                        found.append((parent, name, child))
    return found


def apply(pipe) -> int:
    """Swap the blocks' Linears for Fp8Linear in place (on the weights' device); returns how many
    were swapped (0 when they already are). All fp8 weights are made before any swap: an
    out-of-memory while making them leaves the pipeline bf16 as it was. The conversion briefly
    needs the fp8 copy (half the transformer) on top of the bf16 one."""
    targets = _targets(pipe, nn.Linear)
    with torch.no_grad():
        made = [Fp8Linear.from_linear(linear) for _, _, linear in targets]
        for (parent, name, _), fp8 in zip(targets, made):
            setattr(parent, name, fp8)
        _own_storage(pipe.transformer)
    if targets:
        log.info("fp8: %d block Linears now float8", len(targets))
    return len(targets)


def _own_storage(module: nn.Module) -> None:
    """Give tensors that are views into a bigger allocation (the fast loader's one buffer per shard)
    their own, so the allocation, which still holds the replaced bf16 weights, is freed."""
    for m in module.modules():
        for table in (m._parameters, m._buffers):
            for name, t in table.items():
                if t is not None and t.untyped_storage().nbytes() > t.numel() * t.element_size():
                    if isinstance(t, nn.Parameter):
                        t.data = t.data.clone()
                    else:
                        table[name] = t.clone()


def remove(pipe) -> int:
    """Back to bf16 Linears holding the fp8 values; returns how many were swapped back."""
    dtype = next(p.dtype for p in pipe.transformer.parameters() if p.dtype != FP8)
    targets = _targets(pipe, Fp8Linear)
    for parent, name, fp8 in targets:
        setattr(parent, name, fp8.to_linear(dtype))
    return len(targets)


def is_applied(pipe) -> bool:
    return bool(_targets(pipe, Fp8Linear))
