"""Sizes as people read them: GiB for memory, decimal units for disks (as they are sold)."""
from __future__ import annotations


def gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.1f} GiB"


def human_bytes(n: int) -> str:
    """1.23 GB / 45.6 MB / 789 KB: sizes people read (decimal units, as disks are sold)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"
