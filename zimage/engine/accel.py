"""Speed on the GPU without changing the picture: the attention backend and regional compilation.

- Attention goes through diffusers' dispatcher. `auto` takes FlashAttention 3 on Hopper when its
  package is installed, else PyTorch's SDPA ("native"), which picks flash / cuDNN / memory-efficient
  kernels itself and runs everywhere (on the H100, native and cuDNN measured the same).
- `torch.compile` of the repeated transformer blocks (diffusers' `compile_repeated_blocks`, one graph
  for all blocks of a kind) with inductor's caches in a folder that outlives the process, so later
  starts reuse the kernels (22 s cold, ~7 s from the cache on the H100). The compile happens in the
  load's warm-up images, one per prompt length, so the shapes turn dynamic there and no request
  waits for a compile. The compiled blocks compute the rotary embedding in real arithmetic
  (`rotate_real`), which inductor fuses instead of leaving complex multiplies to eager kernels.
- Low-VRAM plans (offload.py) swap each streamed block's weights in forward hooks, which a compiled
  `_call_impl` would trace; there each block's `forward` is compiled instead (`compile_block_forwards`),
  so the hooks stay eager around a compiled body. One compiled function serves every block of a kind:
  with torch's inline_inbuilt_nn_modules the parameters are graph inputs, so a weight pointed at a GPU
  slot (`.data`) does not recompile, nor does a plan change (tests/test_accel.py counts the graphs).
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import types
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

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


def want_compile(setting: str, on_cuda: bool, available: Callable[[str], bool] = module_available) -> bool:
    """Compile the blocks (resident, or under a low-VRAM plan's hooks)? `off` never; otherwise only on
    a CUDA GPU, and on `auto` only when Triton (inductor's GPU code generator) is installed."""
    if setting == "off" or not on_cuda:
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


def rotate_real(x_in, freqs):
    """Z-Image's rotary embedding (diffusers' `apply_rotary_emb`: x viewed as complex pairs times
    `freqs_cis`) in real arithmetic, which inductor fuses; it leaves complex multiplies to eager
    kernels ("Torchinductor does not support code generation for complex operators")."""
    import torch

    return rotate_pairs(x_in, torch.view_as_real(freqs))


def rotate_pairs(x_in, pairs):
    """rotate_real with the rotation given as real (cos, sin) pairs, [batch, seq, pairs, 2]: the
    packaged blocks (aot_compile) take it so, since an exported program takes no complex input."""
    import torch

    x = x_in.float().reshape(*x_in.shape[:-1], -1, 2)
    f = pairs.unsqueeze(2)                                 # [batch, seq, 1, pairs, (cos, sin)]
    cos, sin = f[..., 0], f[..., 1]
    re, im = x[..., 0], x[..., 1]
    return torch.stack((re * cos - im * sin, re * sin + im * cos), dim=-1).flatten(3).type_as(x_in)


@functools.cache
def real_rope_processor():
    """diffusers' ZSingleStreamAttnProcessor with `rotate_real` in place of the complex rotation;
    everything else is its code path: projections, q/k norms, the attention dispatcher, output."""
    from diffusers.models.attention_dispatch import dispatch_attention_fn
    from diffusers.models.transformers.transformer_z_image import ZSingleStreamAttnProcessor

    class RealRopeAttnProcessor(ZSingleStreamAttnProcessor):
        rotate = staticmethod(rotate_real)          # aot_compile's subclass takes real pairs

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, freqs_cis=None):
            query, key, value = (proj(hidden_states).unflatten(-1, (attn.heads, -1))
                                 for proj in (attn.to_q, attn.to_k, attn.to_v))
            if attn.norm_q is not None:
                query = attn.norm_q(query)
            if attn.norm_k is not None:
                key = attn.norm_k(key)
            if freqs_cis is not None:
                query, key = self.rotate(query, freqs_cis), self.rotate(key, freqs_cis)
            if attention_mask is not None and attention_mask.ndim == 2:
                attention_mask = attention_mask[:, None, None, :]
            out = dispatch_attention_fn(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
                                        backend=self._attention_backend, parallel_config=self._parallel_config)
            out = attn.to_out[0](out.flatten(2, 3).to(query.dtype))
            return attn.to_out[1](out) if len(attn.to_out) > 1 else out

    return RealRopeAttnProcessor


def _swap_processors(pipe, make) -> None:
    """Give every block attention a new processor from `make`, keeping its attention backend."""
    _swap_transformer_processors(pipe.transformer, make)


def _swap_transformer_processors(transformer, make) -> None:
    from diffusers.models.transformers.transformer_z_image import ZSingleStreamAttnProcessor

    for module in transformer.modules():
        old = getattr(module, "processor", None)
        if isinstance(old, ZSingleStreamAttnProcessor):
            new = make()
            new._attention_backend, new._parallel_config = old._attention_backend, old._parallel_config
            module.processor = new


def compile_blocks(pipe, cache_dir: Path | None, backend: str = "inductor") -> None:
    """Regional compile, with the rotary embedding in real arithmetic; the kernels are built lazily,
    by the warm-up images."""
    compile_transformer(pipe.transformer, cache_dir, backend)


def _use_cache_dir(cache_dir: Path | None) -> None:
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir))


def compile_transformer(transformer, cache_dir: Path | None, backend: str = "inductor") -> None:
    """compile_blocks for a transformer of its own (the background compile's twin, compile_bg)."""
    _use_cache_dir(cache_dir)
    _swap_transformer_processors(transformer, real_rope_processor())
    transformer.compile_repeated_blocks(fullgraph=True, backend=backend)


# Latent shapes the compiled VAE decoder is warmed with: batch 1 and 2, height and width unequal
# (dynamo specializes a size of 1, and equal sizes share one symbol), so the graphs are dynamic in
# height and width and no request compiles again (a test checks other sizes and batches).
VAE_WARM_LATENTS = ((1, 64, 48), (2, 40, 72))


def use_forward(module, forward) -> None:
    """`forward` (a compiled forward of `module`) serves the module's calls; None gives back its own."""
    if forward is None:
        module.__dict__.pop("forward", None)
    else:
        module.forward = forward


def has_compiled_forward(module) -> bool:
    return "forward" in module.__dict__


def compiled_vae_decoder(vae, backend: str = "inductor"):
    """The VAE decoder's forward compiled with dynamic shapes and warmed, not yet in use
    (`use_forward` puts it in). Compiled, the decode of a 1024x1024 image took 49 ms instead
    of 99 ms on the H200 (GroupNorm and SiLU fused: `python3 -m bench.profile_bench DIR 1024
    --only=ours`, vae_decode_ms, before and after). Made beside a serving pipeline: it only reads
    the decoder's weights."""
    import torch

    weight = next(vae.decoder.parameters())
    compiled = torch.compile(vae.decoder.forward, dynamic=True, fullgraph=True, backend=backend)
    with torch.inference_mode():
        for batch, h, w in VAE_WARM_LATENTS:
            compiled(torch.zeros(batch, vae.config.latent_channels, h, w, device=weight.device, dtype=weight.dtype))
    return compiled


def compiled_extras(pipe, backend: str = "inductor") -> list[tuple[object, object]]:
    """(module, compiled forward) for the background compile to put in with the blocks: the VAE
    decoder. Not the text encoder: compiled (transformers' output capturing breaks its graph three
    times), a new prompt's encode went from 39 to 25 ms on the H200, while the background compile
    from an empty cache took 305 s instead of 58 s with both it and the VAE decoder added (the split
    not measured): minutes of slower requests beside it, for 14 ms a new prompt."""
    return [(pipe.vae.decoder, compiled_vae_decoder(pipe.vae, backend))]


@functools.cache
def _compiled_forward(block_type: type, backend):
    """One compiled `forward` per block class and backend for the whole process: dynamo's cache
    hangs on this one function, so every block of the kind, in every plan, reuses its graphs."""
    import torch

    return torch.compile(block_type.forward, fullgraph=True, backend=backend)


def compile_block_forwards(transformer, cache_dir: Path | None, backend="inductor") -> None:
    """Compile each repeated block's `forward` (not `_call_impl`): a low-VRAM plan's pre- and post-
    hooks (slot copies, CUDA events) run eagerly around the compiled body. Graphs are built lazily,
    by the warm-up images (the manager's plan compile)."""
    from .anatomy import transformer_blocks

    _use_cache_dir(cache_dir)
    _swap_transformer_processors(transformer, real_rope_processor())
    for block in transformer_blocks(transformer):
        block.forward = types.MethodType(_compiled_forward(type(block), backend), block)


def forwards_compiled(transformer) -> bool:
    from .anatomy import transformer_blocks

    return any("forward" in b.__dict__ for b in transformer_blocks(transformer))


def is_compiled(pipe) -> bool:
    return (forwards_compiled(pipe.transformer)
            or any(getattr(m, "_compiled_call_impl", None) is not None for m in pipe.transformer.modules()))


def uncompile_blocks(pipe) -> None:
    """Back to eager blocks and diffusers' own attention processor (before low-VRAM hooks go on,
    or a plan's compiled forwards come off); compiling again reuses the cache."""
    from diffusers.models.transformers.transformer_z_image import ZSingleStreamAttnProcessor

    from .anatomy import transformer_blocks

    for m in pipe.transformer.modules():
        if getattr(m, "_compiled_call_impl", None) is not None:
            m._compiled_call_impl = None
    for block in transformer_blocks(pipe.transformer):
        use_forward(block, None)
    _swap_processors(pipe, ZSingleStreamAttnProcessor)
    use_forward(pipe.vae.decoder, None)
