"""Upscaling a picture: a built-in resampler (Lanczos, Nearest) or an ESRGAN-family model file from
the upscaler folder, run in tiles on the pipeline's device.

The model is read from its safetensors file for each call and dropped after it: the largest common
one (RRDBNet, 64 features, 23 blocks) is 67 MB, read in well under a second, and nothing stays in
VRAM beside the diffusion model between requests. Its tiles start at 512 px with 32 px of overlap
and 16 px of context and halve after an out-of-memory down to 128 (ComfyUI's figures; research
turn3-models.md section 7). A model's scale that differs from the one asked for (a 4x model for
2x) is made up with Lanczos, as A1111 does when the model's scale overshoots.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UpscalerFailed
from ..store import upscalers
from . import tiles
from .vram import is_oom

log = logging.getLogger(__name__)

MODEL_TILE_PX, MIN_MODEL_TILE_PX = 512, 128
MODEL_OVERLAP_PX, MODEL_CONTEXT_PX = 32, 16
PAD_MULTIPLE = 4            # RRDBNet x1 pixel-unshuffles by 4, x2 by 2


def resample(image, size: tuple[int, int], name: str):
    from PIL import Image

    method = Image.Resampling.NEAREST if name == upscalers.NEAREST else Image.Resampling.LANCZOS
    return image.convert("RGB").resize(size, method)


def load_net(path: Path):
    """The network of an upscaler file (safetensors only), in eval mode on the CPU."""
    from safetensors.torch import load_file

    from .esrgan_arch import build

    return build(load_file(str(path), device="cpu"))


def run_net(net, image, device, tile: int = MODEL_TILE_PX,
            is_oom_error: Callable[[BaseException], bool] = is_oom):
    """The net's output for a PIL image (its own scale), tiled, tiles halved on out-of-memory."""
    import torch
    from PIL import Image

    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    h, w = pixels.shape[:2]
    ph, pw = -h % PAD_MULTIPLE, -w % PAD_MULTIPLE
    pixels = np.pad(pixels, ((0, ph), (0, pw), (0, 0)), mode="edge")
    net = net.to(device)
    scale = net.scale

    def one_tile(part: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(part.transpose(2, 0, 1)))[None].to(device)
        with torch.inference_mode():
            y = net(x).clamp_(0, 1)
        return y[0].permute(1, 2, 0).float().cpu().numpy()

    def attempt(size: int) -> np.ndarray:
        return tiles.run_tiled(pixels, size, MODEL_OVERLAP_PX, one_tile, scale=scale, context=MODEL_CONTEXT_PX)

    def free() -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    try:
        out = tiles.halving(tile, MIN_MODEL_TILE_PX, attempt, is_oom_error, free)
    finally:
        net.to("cpu")
    out = out[: h * scale, : w * scale]
    return Image.fromarray(np.round(out * 255).astype(np.uint8), "RGB")


def upscale(image, size: tuple[int, int], name: str, path: str, device="cpu"):
    """`image` at `size` through the upscaler `name` (a built-in, or the model file at `path`,
    both checked when the request was: store.upscalers.usable_paths)."""
    if name in upscalers.BUILT_IN:
        return resample(image, size, name)
    try:
        net = load_net(Path(path))
    except (OSError, ValueError) as e:      # gone or replaced since the request was checked
        raise UpscalerFailed(f"The upscaler {name!r} can no longer be read: {str(e)[:200]}",
                             "Pick it again from the list (Refresh), or use Lanczos.") from e
    out = run_net(net, image, device)
    return out if out.size == size else resample(out, size, upscalers.LANCZOS)
