"""The names a prompt can write in `<lora:NAME:w>`, and the checks a name gets before it touches
the filesystem.

A file's listed name is its path inside the LoRA folder without `.safetensors`. Some file names
cannot be written in a tag: `>` ends it, the first `:` starts the strength, `\\` is read as a
folder separator, outer spaces are trimmed, control characters cannot be typed, and a name that
itself ends in `.safetensors` or `.pt` is read as naming that suffix. Such a file is listed under an
alias with each of those characters as `_` (`<lora:style_v2:1>` for `style:v2.safetensors`), unique
in the folder, and the lookup maps the alias back to the file: an A1111 user picks it from the list
and writes it as any other name.
"""
from __future__ import annotations

import os
import re
import unicodedata

from ..errors import LoraNameRefused

# Linux's NAME_MAX and PATH_MAX, in bytes: a longer name is ENAMETOOLONG from any call on it.
NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 4096
_SHOWN_CHARS = 80                   # a refused name is echoed cut to this (it may be kilobytes long)
_UNTAGGABLE = re.compile(r"[>:\\]")
SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".pt", ".ckpt", ".bin", ".pth")


def shown(name: str) -> str:
    return name if len(name) <= _SHOWN_CHARS else name[:_SHOWN_CHARS] + "…"


def check_length(name: str, rel: str) -> None:
    """LoraNameRefused for a name that cannot name a file: too long for the filesystem, or text
    that has no bytes (a lone surrogate). Checked before any filesystem call, which would raise
    OSError with the server's path in it."""
    try:
        parts = [os.fsencode(p) for p in rel.split("/")]
    except UnicodeEncodeError:
        raise LoraNameRefused(shown(name), "the name is not valid text") from None
    longest = max(len(p) for p in parts)
    if longest > NAME_MAX_BYTES:
        raise LoraNameRefused(shown(name), f"the name is too long ({longest} bytes; a file name has at most "
                                           f"{NAME_MAX_BYTES})")
    total = sum(len(p) + 1 for p in parts)
    if total > PATH_MAX_BYTES:
        raise LoraNameRefused(shown(name), f"the name is too long ({total} bytes; a path has at most {PATH_MAX_BYTES})")


def taggable(name: str) -> str:
    """`name` as it can be written inside `<lora:...>` (itself when it already can)."""
    out = _UNTAGGABLE.sub("_", "".join("_" if unicodedata.category(c) == "Cc" else c for c in name))
    if out != out.strip():
        out = out.strip() or "_"
    lower = out.lower()
    for suffix in (SUFFIX, *PICKLE_SUFFIXES):
        if lower.endswith(suffix):
            out = out[: -len(suffix)] + "_" + out[-len(suffix) + 1:]
            break
    return out


def aliases(names: list[str]) -> dict[str, str]:
    """{file's name -> the name to list and write in a tag} for every name of the folder: itself
    when taggable, else a taggable alias unique among all of them (`_2`, `_3`... on a clash).
    Deterministic for the same set of names, so the lookup finds what the listing showed."""
    taken = {n for n in names if taggable(n) == n}
    out = {n: n for n in taken}
    for name in sorted(n for n in names if n not in out):
        base = alias = taggable(name)
        i = 2
        while alias in taken:
            alias, i = f"{base}_{i}", i + 1
        taken.add(alias)
        out[name] = alias
    return out
