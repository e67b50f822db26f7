"""The X/Y/Z plot's picture: cells in columns (x) and rows (y), the x labels above, the y labels
on the left; with a z axis, one such grid per z value side by side, each under its z label. Pillow
only (no torch, no gradio). A cell not made (a Stop) stays blank, so a partial grid keeps its shape.

Labels are drawn with a font that has Chinese glyphs where the system has one (a prompt S/R value
may be Chinese), else DejaVu, else Pillow's own.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)
PAD = 8                     # px around a label
GAP_Z = 24                  # px between the grids of two z values
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


@lru_cache(maxsize=8)
def label_font(size: int):
    from PIL import ImageFont

    for path in FONT_CANDIDATES:
        if Path(path).is_file():
            try:
                return ImageFont.truetype(path, size)
            except OSError:
                continue
    return ImageFont.load_default(size)


@dataclass(frozen=True)
class Layout:
    """Where everything goes, in px. `cell` is the largest cell's size (smaller ones are centred)."""
    cell: tuple[int, int]
    nx: int
    ny: int
    nz: int
    left: int               # the y labels' column (0 without a y axis)
    top: int                # the x labels' row (0 without an x axis)
    z_top: int              # the z labels' row (0 without a z axis)
    font_size: int

    @property
    def block(self) -> tuple[int, int]:
        """One z value's grid, its labels included."""
        return self.left + self.nx * self.cell[0], self.z_top + self.top + self.ny * self.cell[1]

    @property
    def size(self) -> tuple[int, int]:
        w, h = self.block
        return self.nz * w + (self.nz - 1) * GAP_Z, h

    def cell_origin(self, ix: int, iy: int, iz: int) -> tuple[int, int]:
        w, _ = self.block
        return iz * (w + GAP_Z) + self.left + ix * self.cell[0], self.z_top + self.top + iy * self.cell[1]


def layout(cell: tuple[int, int], counts: tuple[int, int, int], labels: tuple[list[str], list[str], list[str]]) -> Layout:
    """The layout for cells of at most `cell` px, (nx, ny, nz) of them, and each axis' labels ([] for none)."""
    font_size = max(14, min(48, cell[0] // 16))
    font = label_font(font_size)
    line = _line_height(font)
    left = max((_text_width(font, t) for t in labels[1]), default=0)
    left = min(left + 2 * PAD, max(cell[0], 160)) if labels[1] else 0
    top = line * _max_lines(font, labels[0], cell[0] - 2 * PAD) + 2 * PAD if labels[0] else 0
    z_top = line + 2 * PAD if labels[2] else 0
    return Layout(cell, *counts, left=left, top=top, z_top=z_top, font_size=font_size)


def draw_grid(images: dict[tuple[int, int, int], object], counts: tuple[int, int, int],
              labels: tuple[list[str], list[str], list[str]]):
    """The grid picture of the cells in `images` ((ix, iy, iz) -> PIL image; missing ones blank)."""
    from PIL import Image, ImageDraw

    sizes = [im.size for im in images.values()] or [(256, 256)]
    cell = (max(w for w, _ in sizes), max(h for _, h in sizes))
    lay = layout(cell, counts, labels)
    canvas = Image.new("RGB", lay.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = label_font(lay.font_size)
    for (ix, iy, iz), im in images.items():
        x, y = lay.cell_origin(ix, iy, iz)
        canvas.paste(im.convert("RGB"), (x + (cell[0] - im.size[0]) // 2, y + (cell[1] - im.size[1]) // 2))
    block_w, _ = lay.block
    for iz in range(lay.nz):
        x0 = iz * (block_w + GAP_Z)
        if labels[2]:
            _centred(draw, font, labels[2][iz], (x0 + lay.left, 0, x0 + block_w, lay.z_top))
        for ix, text in enumerate(labels[0]):
            left = x0 + lay.left + ix * cell[0]
            _centred(draw, font, text, (left, lay.z_top, left + cell[0], lay.z_top + lay.top))
        for iy, text in enumerate(labels[1]):
            top = lay.z_top + lay.top + iy * cell[1]
            _centred(draw, font, text, (x0, top, x0 + lay.left, top + cell[1]))
    return canvas


def _centred(draw, font, text: str, box: tuple[int, int, int, int]) -> None:
    lines = _wrap(font, text, box[2] - box[0] - 2 * PAD)
    height = _line_height(font) * len(lines)
    y = box[1] + max(PAD, (box[3] - box[1] - height) // 2)
    for line in lines:
        x = box[0] + max(PAD, (box[2] - box[0] - _text_width(font, line)) // 2)
        draw.text((x, y), line, fill=INK, font=font)
        y += _line_height(font)


def _text_width(font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def _line_height(font) -> int:
    _, top, _, bottom = font.getbbox("Ag国")
    return int(bottom - top) + 4


def _wrap(font, text: str, width: int) -> list[str]:
    """Lines of `text` at most `width` px wide (split at spaces, or anywhere in a long word or CJK)."""
    lines, line = [], ""
    for ch in text:
        if ch == "\n" or (_text_width(font, line + ch) > width and line):
            cut = line.rfind(" ")
            if ch != "\n" and 0 < cut:
                lines.append(line[:cut])
                line = line[cut + 1:]
            else:
                lines.append(line)
                line = ""
            if ch == "\n":
                continue
        line += ch
    lines.append(line)
    return lines[:4]


def _max_lines(font, texts: list[str], width: int) -> int:
    return max((len(_wrap(font, t, width)) for t in texts), default=1)
