"""Tiling for the upscaler and the refine pass: overlapping tiles blended with a linear feather
(no visible seam), and the tile halved after an out-of-memory (ComfyUI's upscaler does the same:
512 px tiles, halved down to 128, research turn3-models.md section 7).

Pure numpy on HxWxC float arrays; what a tile goes through is the caller's `run`.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


def spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) spans of at most `tile` covering 0..length, neighbours overlapping by at least
    `overlap`; the last one ends at `length` (so it overlaps more rather than being a sliver)."""
    if length <= tile:
        return [(0, length)]
    step = max(1, tile - overlap)
    starts = list(range(0, length - tile, step)) + [length - tile]
    return [(s, s + tile) for s in starts]


def boxes(width: int, height: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(left, top, right, bottom) of the tiles covering a width x height image."""
    return [(x0, y0, x1, y1) for y0, y1 in spans(height, tile, overlap) for x0, x1 in spans(width, tile, overlap)]


def _ramp(length: int, before: int, after: int) -> np.ndarray:
    """1 in the middle, rising linearly over `before` values at the start and falling over
    `after` at the end; never 0, so every pixel has weight."""
    w = np.ones(length, dtype=np.float32)
    if before:
        w[:before] = np.minimum(w[:before], (np.arange(before, dtype=np.float32) + 1) / (before + 1))
    if after:
        w[length - after:] = np.minimum(w[length - after:], (np.arange(after, 0, -1, dtype=np.float32)) / (after + 1))
    return w


def feather(box: tuple[int, int, int, int], width: int, height: int, overlap: int) -> np.ndarray:
    """The tile's (h, w) blend weights: feathered over `overlap` on each side that has a neighbour,
    full weight against the image's own border."""
    left, top, right, bottom = box
    fx = _ramp(right - left, overlap if left > 0 else 0, overlap if right < width else 0)
    fy = _ramp(bottom - top, overlap if top > 0 else 0, overlap if bottom < height else 0)
    return fy[:, None] * fx[None, :]


def run_tiled(image: np.ndarray, tile: int, overlap: int, run: Callable[[np.ndarray], np.ndarray],
              scale: int = 1, context: int = 0) -> np.ndarray:
    """`run` applied tile by tile to an (H, W, C) float image, each output `scale` times its tile,
    blended into one (H*scale, W*scale, C) image. `context`: pixels of the neighbours (the image's
    border repeated at its edges) each tile is run with and that are cropped off its output, so a
    network's zero padding never falls inside the picture."""
    height, width, channels = image.shape
    overlap = min(overlap, tile // 2)          # a feather fits in each half of a tile
    padded = np.pad(image, ((context, context), (context, context), (0, 0)), mode="edge") if context else image
    out = np.zeros((height * scale, width * scale, channels), dtype=np.float32)
    weight = np.zeros((height * scale, width * scale, 1), dtype=np.float32)
    s_overlap = overlap * scale
    for left, top, right, bottom in boxes(width, height, tile, overlap):
        result = run(padded[top:bottom + 2 * context, left:right + 2 * context])
        c = context * scale
        result = result[c:result.shape[0] - c, c:result.shape[1] - c] if c else result
        box = (left * scale, top * scale, right * scale, bottom * scale)
        w = feather(box, width * scale, height * scale, s_overlap)[:, :, None]
        out[box[1]:box[3], box[0]:box[2]] += result * w
        weight[box[1]:box[3], box[0]:box[2]] += w
    return out / weight


def halving(start: int, minimum: int, attempt: Callable[[int], np.ndarray | object],
            is_oom: Callable[[BaseException], bool], after_oom: Callable[[], None] = lambda: None):
    """attempt(tile) for tile = start, start/2, ... while it runs out of memory, down to `minimum`;
    the last out-of-memory is raised when even `minimum` does not fit."""
    tile = start
    while True:
        try:
            return attempt(tile)
        except Exception as e:
            if not is_oom(e) or tile <= minimum:
                raise
            log.warning("out of memory with %d px tiles; trying %d px", tile, max(minimum, tile // 2))
        after_oom()                         # outside the except: its traceback no longer holds the tensors
        tile = max(minimum, tile // 2)
