"""An fp8 DiT file (ComfyUI's `*_fp8_e4m3fn.safetensors`) kept in float8 in memory: its layers'
weights stay float8 at rest (RAM, VRAM, a low-VRAM plan's slots) and are cast to the load dtype
(bf16 on a GPU, float32 on the CPU) layer by layer as each runs, by diffusers' own layerwise
casting (`ModelMixin.enable_layerwise_casting`, diffusers.hooks.layerwise_casting). The DiT then
costs its file's bytes, not twice them, and the planner (planning.sizes_of counts tensors as held)
keeps it resident where those bytes fit.

Which layers: exactly those whose every tensor is float8 in the file, so storing them in float8
again is lossless (float8 -> bf16/float32 -> float8 gives the same bits). A Linear with a float8
weight but a bf16 bias (ComfyUI's cast keeps biases, norms and pad tokens bf16) stays in the load
dtype: the hook casts a whole layer, and rounding its bias to float8 would change the model. So
do diffusers' own skips (norms, `t_embedder`, `cap_embedder`). In Z-Image that leaves the blocks'
attention and feed-forward Linears (all bias-free) in float8: almost all of the DiT's bytes.

Scaled files ("fp8_scaled": a per-tensor `scale_weight`): a weight with a scale other than 1 is
dequantized (float8 x scale) into the load dtype and stays there, as before. Storing the product in
float8 again would round it a second time: float8's 4 significant bits times an arbitrary scale is
almost never a float8 value, so every weight would move by up to 1/16 of itself on top of the
file's own rounding. Keeping the float8 values and folding the scale into the layer's output needs
a forward of our own (diffusers' hook only changes dtypes), which this module does not write. So a
scaled file costs load-dtype memory (the planner sees it so), except for its tensors scaled by
exactly 1, which are plain float8 ones. Where nothing qualifies the model is left as loaded.

What cannot work on float8-stored weights refuses or steps aside (each says so where it decides):
LoRA fusing (lora.check_full_weights: the fused sum would be rounded to float8), `--fp8 on`
(speed.use_fp8: its own float8 Linears are made from bf16 weights) and the regional compile
(speed.speed_up: the hooks change the weights' dtype inside each layer's call, not traced or
measured on a GPU here).

The load itself still makes the load-dtype copy first (diffusers' from_single_file casts every
floating tensor to `torch_dtype`), then the hooks cast each chosen layer back, one at a time: the
peak in RAM is the DiT in the load dtype, as before; what stays is the float8 one.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

FP8_HEADER_DTYPES = ("F8_E4M3", "F8_E4M3FN")     # safetensors' names for float8_e4m3fn
HOOK = "layerwise_casting"                       # diffusers.hooks.layerwise_casting._LAYERWISE_CASTING_HOOK
SCALE_SUFFIXES = (".scale_weight", ".weight_scale")  # a scaled fp8 file's per-tensor scale, beside its weight
DROPPED_KEYS = ("scaled_fp8", "lm_head.weight")     # ComfyUI's fp8 marker; the tied LM head (a text encoder's)


def fp8_modules(path: Path) -> set[str]:
    """The transformer's modules (diffusers names) whose every tensor in the file is float8
    e4m3fn with no scale or a scale of exactly 1: those can be stored in float8 losslessly.
    Read from the header and the small scale tensors only; the names come from diffusers' own
    ComfyUI converter run on meta tensors (it splits the fused qkv)."""
    import torch
    from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
        scales = {k: f.get_tensor(k) for k in keys if k.endswith(SCALE_SUFFIXES)}
        header = {k: f.get_slice(k) for k in keys if k not in scales}
        unit = {scaled_weight(k) for k, s in scales.items() if s.numel() == 1 and float(s) == 1.0}
        meta = {}
        for key, piece in header.items():
            if key.removeprefix("model.") in DROPPED_KEYS:
                continue
            fp8 = piece.get_dtype() in FP8_HEADER_DTYPES and (key in unit or _scale_of(key, scales) is None)
            meta[key] = torch.empty(piece.get_shape(), dtype=torch.float8_e4m3fn if fp8 else torch.bfloat16,
                                    device="meta")
    if not any(t.dtype == torch.float8_e4m3fn for t in meta.values()):
        return set()
    by_module: dict[str, bool] = {}
    for key, t in convert_z_image_transformer_checkpoint_to_diffusers(meta).items():
        module = key.rpartition(".")[0]
        by_module[module] = by_module.get(module, True) and t.dtype == torch.float8_e4m3fn
    return {m for m, all_fp8 in by_module.items() if all_fp8}


def scaled_weight(scale_key: str) -> str:
    """The weight a scale key (one of SCALE_SUFFIXES) scales."""
    for suffix in SCALE_SUFFIXES:
        if scale_key.endswith(suffix):
            return scale_key[: -len(suffix)] + ".weight"
    return scale_key


def _scale_of(weight_key: str, scales: dict):
    base = weight_key.removesuffix(".weight")
    return next((scales[base + s] for s in SCALE_SUFFIXES if base + s in scales), None)


def keep_fp8(transformer, modules: set[str], compute_dtype) -> int:
    """Store `modules` of `transformer` in float8 e4m3fn, computing in `compute_dtype` (diffusers'
    layerwise casting, its default skips kept); every other layer is left as loaded. Returns the
    bytes now held in float8."""
    import torch

    if not modules:
        return 0
    names = [n for n, m in transformer.named_modules() if n and not any(True for _ in m.children())]
    skip = tuple(f"^{re.escape(n)}$" for n in names if n not in modules)
    transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype,
                                         skip_modules_pattern=skip + _default_skips())
    stored = fp8_bytes(transformer)
    log.info("fp8 DiT: %.2f GiB of weights kept in float8, computed in %s", stored / 2**30, compute_dtype)
    return stored


def _default_skips() -> tuple[str, ...]:
    # Passing our own patterns replaces diffusers' defaults in enable_layerwise_casting (the
    # model's own `_skip_layerwise_casting_patterns` are still added): kept, norms included.
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    return tuple(DEFAULT_SKIP_MODULES_PATTERN)


def fp8_bytes(module) -> int:
    import torch

    return sum(p.numel() * p.element_size() for p in module.parameters() if p.dtype == torch.float8_e4m3fn)


def is_fp8_stored(module) -> bool:
    """Whether any layer of `module` keeps its weights in float8 through layerwise casting."""
    for m in module.modules():
        registry = getattr(m, "_diffusers_hook", None)
        if registry is not None and registry.get_hook(HOOK) is not None:
            return True
    return False
