"""GGUF block quantization in torch, on any device: Q8_0 (bit for bit what gguf-py's numpy code and
ggml's reference give) and Q4_K, which gguf-py 0.19 only reads. For writing the full-scale random
checkpoint's GGUF files in seconds on the GPU machine (a 6B DiT through gguf-py's numpy Q8_0 takes
about a minute; its Q4_K raises NotImplementedError).

`quantize(tensor, type_name)` returns the tensor's rows as ggml blocks, a uint8 numpy array of shape
(rows, bytes per row), which `gguf.GGUFWriter.add_tensor(..., raw_dtype=...)` takes as it is. Q4_K
here is the plain min/max fit per 32-value sub-block (ggml's reference searches a little around it):
the layout and the arithmetic a reader dequantizes are ggml's, the rounding error somewhat larger.
Other types go to gguf-py's own quantizer.
"""
from __future__ import annotations

import numpy as np

QK_K = 256                      # a K-quant super-block
Q8_0_BLOCK = 32
TORCH_TYPES = ("Q8_0", "Q4_K")


def _roundf(x):
    """ggml's roundf (half away from zero), as gguf-py's np_roundf computes it."""
    import torch

    a = x.abs()
    floored = torch.floor(a)
    return torch.sign(x) * (floored + torch.floor(2 * (a - floored)))


def _fp16_bytes(x):
    import torch

    return x.to(torch.float16).contiguous().view(torch.uint8).reshape(x.shape[0], 2)


def q8_0(tensor):
    """(rows, cols) -> uint8 blocks of 34 bytes per 32 values: fp16 scale, then 32 int8."""
    import torch

    rows = tensor.shape[0]
    blocks = tensor.float().reshape(-1, Q8_0_BLOCK)
    d = blocks.abs().amax(dim=1, keepdim=True) / 127
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    qs = _roundf(blocks * inv).to(torch.int8).view(torch.uint8)
    return torch.cat([_fp16_bytes(d), qs], dim=1).reshape(rows, -1)


def q4_k(tensor):
    """(rows, cols) -> uint8 blocks of 144 bytes per 256 values: fp16 d and dmin, 12 bytes of 6-bit
    scales and mins for the 8 sub-blocks, 128 bytes of 4-bit values; x = d*sc*q - dmin*m."""
    import torch

    rows = tensor.shape[0]
    x = tensor.float().reshape(-1, 8, 32)                       # super-blocks, sub-blocks, values
    low = torch.clamp(x.amin(dim=2), max=0.0)                   # a sub-block's offset: min(x, 0)
    scale = (x.amax(dim=2) - low) / 15
    mins = -low
    d = scale.amax(dim=1, keepdim=True) / 63
    dmin = mins.amax(dim=1, keepdim=True) / 63
    d16, dmin16 = d.to(torch.float16).float(), dmin.to(torch.float16).float()
    sc = torch.where(d16 > 0, torch.round(scale / torch.where(d16 > 0, d16, 1)), 0).clamp(0, 63).to(torch.uint8)
    m = torch.where(dmin16 > 0, torch.round(mins / torch.where(dmin16 > 0, dmin16, 1)), 0).clamp(0, 63).to(torch.uint8)
    step = (d16 * sc.float()).unsqueeze(2)
    offset = (dmin16 * m.float()).unsqueeze(2)
    q = torch.where(step > 0, torch.round((x + offset) / torch.where(step > 0, step, 1)), 0).clamp(0, 15)
    q = q.to(torch.uint8)
    # scales: bytes 0-3 sc[0:4] with sc[4:8]'s top 2 bits, 4-7 m[0:4] with m[4:8]'s, 8-11 the low nibbles
    packed = torch.cat([sc[:, :4] | ((sc[:, 4:] >> 4) << 6), m[:, :4] | ((m[:, 4:] >> 4) << 6),
                        (sc[:, 4:] & 0x0F) | ((m[:, 4:] & 0x0F) << 4)], dim=1)
    # values: 4 chunks of 32 bytes, sub-block 2c in the low nibbles, 2c+1 in the high ones
    qs = q.reshape(-1, 4, 2, 32)
    qs = (qs[:, :, 0] | (qs[:, :, 1] << 4)).reshape(-1, 128)
    out = torch.cat([_fp16_bytes(d), _fp16_bytes(dmin), packed, qs], dim=1)
    return out.reshape(rows, -1)


def block_size(type_name: str) -> int:
    import gguf

    return gguf.GGML_QUANT_SIZES[getattr(gguf.GGMLQuantizationType, type_name)][0]


def quantize(tensor, type_name: str) -> np.ndarray:
    """A 2-D torch tensor (any float dtype, any device) as `type_name` blocks, uint8 (rows, bytes)."""
    if type_name == "Q8_0":
        return q8_0(tensor).cpu().numpy()
    if type_name == "Q4_K":
        return q4_k(tensor).cpu().numpy()
    import gguf
    from gguf import quants

    return quants.quantize(tensor.float().cpu().numpy(), getattr(gguf.GGMLQuantizationType, type_name))
