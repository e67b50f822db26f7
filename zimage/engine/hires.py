"""Hires fix and the Upscale action, after a request's pass: each picture upscaled (upscale.py),
then refined by an img2img pass at the request's low strength on the loaded model (the same
components and path as img2img: generate.run_pipeline with mode img2img).

Above TILED_ABOVE_PX the refine runs in overlapping tiles blended with a linear feather, each
with an empty prompt: the scene's prompt makes the model paint the subject again inside every
tile (crispz's finding, research turn3-models.md section 7). A refine that runs out of memory is
tried again in tiles half the size, down to MIN_REFINE_TILE_PX.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable

import numpy as np

from ..errors import Cancelled
from ..request import GenerationRequest
from . import tiles
from .upscale import upscale
from .vram import is_oom

log = logging.getLogger(__name__)

TILED_ABOVE_PX = 1280 * 1280          # ~1.6 MP: crispz tiles its refine above 1664 px a side, ~1.6 MP at 4:3
REFINE_TILE_PX = 1024                 # the model's native size
MIN_REFINE_TILE_PX = 256              # the request's MIN_SIZE: smaller tiles lose the picture's context
REFINE_OVERLAP_PX = 64                # crispz's refine overlap
MULTIPLE = 16                         # the VAE's 8 x the transformer's 2x2 patches


def _pad(pixels: np.ndarray, multiple: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    return np.pad(pixels, ((0, -h % multiple), (0, -w % multiple), (0, 0)), mode="edge")


def refine(image, run_part: Callable[[np.ndarray, bool], np.ndarray], tile: int | None = None,
           is_oom_error: Callable[[BaseException], bool] = is_oom, after_oom: Callable[[], None] = lambda: None):
    """`image` refined by `run_part(pixels, tiled) -> pixels` (float HxWx3 in 0..1, sides multiples
    of 16): in one piece up to TILED_ABOVE_PX, else (or with `tile`) in blended tiles, halved after
    an out-of-memory."""
    from PIL import Image

    width, height = image.size
    pixels = _pad(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0, MULTIPLE)
    whole = max(pixels.shape[:2])
    start = tile or (whole if width * height <= TILED_ABOVE_PX else min(whole, REFINE_TILE_PX))

    def attempt(size: int) -> np.ndarray:
        size = max(MULTIPLE, size // MULTIPLE * MULTIPLE)
        tiled = size < whole
        return tiles.run_tiled(pixels, size, REFINE_OVERLAP_PX if tiled else 0, lambda part: run_part(part, tiled))

    out = tiles.halving(start, MIN_REFINE_TILE_PX, attempt, is_oom_error, after_oom)[:height, :width]
    return Image.fromarray(np.round(np.clip(out, 0, 1) * 255).astype(np.uint8), "RGB")


def apply(pipe, req: GenerationRequest, images: list, should_stop: Callable[[], bool],
          on_step=None, encode=None, on_phase=None) -> list:
    """The request's finished pictures upscaled and refined (req.hires). A Stop keeps the ones
    done before it: Cancelled only when none was."""
    from .generate import run_pipeline

    spec = req.hires
    device = getattr(pipe, "_execution_device", "cpu")
    steps = spec.refine_steps(req.num_inference_steps)
    out = []
    for image, seed in zip(images, req.seeds()):
        try:
            if should_stop():
                raise Cancelled()
            big = upscale(image, spec.target(*image.size), spec.upscaler, spec.path, device)
            if spec.strength <= 0:
                out.append(big)
                continue

            def run_part(pixels: np.ndarray, tiled: bool, seed=seed) -> np.ndarray:
                from PIL import Image

                h, w = pixels.shape[:2]
                part = Image.fromarray(np.round(pixels * 255).astype(np.uint8), "RGB")
                sub = replace(req, prompt="" if tiled else req.prompt, mode="img2img", init_image=part, mask=None,
                              width=w, height=h, strength=spec.strength, num_inference_steps=steps, num_images=1,
                              seed=seed, control=None, resize_mode=0, hires=None)
                done = run_pipeline(pipe, sub, should_stop, on_step, encode, on_phase)[0]
                return np.asarray(done.convert("RGB"), dtype=np.float32) / 255.0

            out.append(refine(big, run_part, after_oom=_free_cuda))
        except Cancelled:
            if not out:
                raise
            break
    return out


def _free_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
