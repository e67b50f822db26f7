"""A Z-Image diffusers folder's DiT written as the single files people download for other apps, in
ComfyUI's tree (OUT/models/diffusion_models): bf16 and fp8 (e4m3fn) .safetensors in ComfyUI's key
layout, and .gguf files (Q8_0, Q4_K, ...) as ComfyUI-GGUF's. The same converters as the tiny
model's files (tiny_comfy: dit_to_comfy, write_gguf), for any size: the benchmarks write the
full-scale random checkpoint's files with it on the GPU machine (bench/gpu35_bench.py), where the
tensors are converted and quantized on the GPU.

The fp8 file is the plain cast ComfyUI's `*_fp8_e4m3fn` files are (every 2-D weight in
float8_e4m3fn, no scales; norms, biases and pad tokens bf16): plain diffusers' `from_single_file`
reads it too. The GGUF files quantize every 2-D weight whose rows fit the type's blocks (Q4_K:
rows of 256), the rest F32: a uniform Q4_K, not the Q4_K_M mix of Q4_K and Q6_K that llama.cpp's
tools write. The text encoder and VAE are not written: the folder's own serve both sides of a
benchmark.

Each file is written under a temporary name and renamed when complete, so a file that exists is whole.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from .tiny_comfy import GGUF_TYPES, dit_to_comfy, write_gguf

log = logging.getLogger(__name__)

DIT_DIR = Path("models") / "diffusion_models"
SAFETENSORS_FORMATS = ("bf16", "fp8", "fp8_scaled")
FORMATS = SAFETENSORS_FORMATS + GGUF_TYPES
# bytes per weight on disk, for a disk-space check before writing (GGUF: the block's bytes / values)
BYTES_PER_PARAM = {"bf16": 2.0, "fp8": 1.0, "fp8_scaled": 1.0, "Q8_0": 34 / 32, "Q5_0": 22 / 32, "Q4_0": 18 / 32, "BF16": 2.0,
                   "Q4_K": 144 / 256}


def file_name(fmt: str) -> str:
    if fmt == "bf16":
        return "z_image_turbo_bf16.safetensors"
    if fmt == "fp8":
        return "z_image_turbo_fp8_e4m3fn.safetensors"
    if fmt == "fp8_scaled":
        return "z_image_turbo_fp8_scaled.safetensors"
    if fmt in GGUF_TYPES:
        return f"z_image_turbo-{fmt}.gguf"
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def file_path(out_dir: str | Path, fmt: str) -> Path:
    return Path(out_dir) / DIT_DIR / file_name(fmt)


def read_comfy_dit(folder: str | Path, device: str = "cpu") -> dict:
    """The folder's transformer (sharded safetensors, any float dtype) in ComfyUI's layout, on `device`."""
    from safetensors.torch import load_file

    from ..store.cache import weight_files

    files, problems = weight_files(Path(folder) / "transformer")
    if problems or not files:
        raise FileNotFoundError(f"{folder}/transformer holds no complete safetensors weights ({problems})")
    state = {}
    for f in files:
        state.update(load_file(str(f), device=device))
    return dit_to_comfy(state)


def param_count(comfy: dict) -> int:
    return sum(v.numel() for v in comfy.values())


def _fp8_state(comfy: dict) -> dict:
    import torch

    return {k: (v.to(torch.float8_e4m3fn) if v.ndim == 2 and k.endswith(".weight") else v.to(torch.bfloat16))
            .contiguous().cpu() for k, v in comfy.items()}


def fp8_scaled_state(comfy: dict, unit: tuple[str, ...] = ()) -> dict:
    """ComfyUI's "scaled" fp8 layout: every 2-D weight divided by a per-tensor float32
    `scale_weight` (its largest magnitude over e4m3's 448) and cast, the `scaled_fp8` marker; the
    weights whose names end with one of `unit` get a scale of exactly 1 (a plain cast)."""
    import torch

    out = {}
    for k, v in comfy.items():
        if v.ndim == 2 and k.endswith(".weight"):
            scale = torch.ones((), dtype=torch.float32) if k.endswith(unit) else \
                (v.float().abs().max() / torch.finfo(torch.float8_e4m3fn).max).clamp(min=1e-12).reshape(())
            out[k] = (v.float() / scale).to(torch.float8_e4m3fn).contiguous().cpu()
            out[k.removesuffix(".weight") + ".scale_weight"] = scale.cpu()
        else:
            out[k] = v.to(torch.bfloat16).contiguous().cpu()
    out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out


def write_format(comfy: dict, fmt: str, out_dir: str | Path) -> Path:
    """One file of `fmt` from the ComfyUI-layout state; its path."""
    import torch
    from safetensors.torch import save_file

    path = file_path(out_dir, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.unlink(missing_ok=True)
    if fmt == "bf16":
        save_file({k: v.to(torch.bfloat16).contiguous().cpu() for k, v in comfy.items()}, str(tmp))
    elif fmt == "fp8":
        save_file(_fp8_state(comfy), str(tmp))
    elif fmt == "fp8_scaled":
        save_file(fp8_scaled_state(comfy), str(tmp))
    elif fmt in GGUF_TYPES:
        write_gguf(tmp, comfy, fmt)
    else:
        file_name(fmt)          # raises with the known formats
    tmp.rename(path)
    return path


def write_single_files(folder: str | Path, out_dir: str | Path, formats=FORMATS,
                       device: str = "cpu") -> dict[str, Path]:
    """Every format's file (already whole ones kept); {format: path}."""
    todo = [f for f in formats if not file_path(out_dir, f).is_file()]
    out = {f: file_path(out_dir, f) for f in formats}
    if todo:
        comfy = read_comfy_dit(folder, device)
        for fmt in todo:
            started = time.perf_counter()
            write_format(comfy, fmt, out_dir)
            log.info("wrote %s in %.1f s", out[fmt], time.perf_counter() - started)
    return out
