"""Dynamic prompts: `__name__` picks a line of the wildcards folder's `name.txt` (subfolders as
`__style/ink__`), `{a|b|c}` picks one choice, `{2$$a|b|c}` two different ones joined by ", " (the
dynamic-prompts extension's syntax, which A1111, Forge and SwarmUI users write). Choices nest, and a
picked line is expanded in turn.

Picks are seeded (random.Random of the seed and the field: the same seed gives the same text on
every run and machine), so a saved image's seed makes its prompt again. Stdlib only: the folder is
read here, with the name checked first (no absolute path, no `..`, nothing outside the folder once
links are followed) and each file's size capped.

A `{` without a `|` inside is left as written (JSON-like text in a prompt is not a choice).
"""
from __future__ import annotations

import random
import re
from pathlib import Path

from ..errors import InvalidRequest

MAX_NAME_CHARS = 128
MAX_FILE_BYTES = 1 * 2**20       # a wildcard list of a few thousand lines is ~100 KB
MAX_DEPTH = 12                   # nested choices and wildcards inside picked lines
MAX_EXPANDED_CHARS = 64 * 1024   # the request's own max_prompt_chars refuses a long result after this
_NAME = re.compile(r"__([\w\-./]{1,1000}?)__")    # longer names are matched, then refused by name_problem
_COUNT = re.compile(r"\s*(\d{1,3})\s*\$\$")


def is_dynamic(text: str) -> bool:
    """The text has a wildcard or a choice to expand."""
    return bool(_NAME.search(text)) or _has_choice(text)


def _has_choice(text: str) -> bool:
    start = text.find("{")
    while start != -1:
        end = _closing(text, start)
        if end is not None and _split(text[start + 1:end])[1:]:
            return True
        start = text.find("{", start + 1)
    return False


class Wildcards:
    """The files of one wildcards folder. `field` names the request field in refusals."""

    def __init__(self, folder: Path):
        self.folder = Path(folder).expanduser()
        self._lines: dict[str, list[str]] = {}

    def lines(self, name: str, field: str) -> list[str]:
        if name not in self._lines:
            self._lines[name] = self._read(name, field)
        return self._lines[name]

    def _read(self, name: str, field: str) -> list[str]:
        why = name_problem(name)
        if why:
            raise InvalidRequest(field, f"the wildcard __{name}__ is refused: {why}")
        root = self.folder.resolve()
        path = (root / f"{name}.txt")
        try:
            real = path.resolve()
            if not real.is_relative_to(root):
                raise InvalidRequest(field, f"the wildcard __{name}__ is refused: it leaves the wildcards folder")
            if not real.is_file():
                raise InvalidRequest(field, f"the wildcard __{name}__ has no file {name}.txt in the wildcards folder")
            size = real.stat().st_size
            if size > MAX_FILE_BYTES:
                raise InvalidRequest(field, f"the wildcard file {name}.txt is {size} bytes; at most {MAX_FILE_BYTES}")
            text = real.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidRequest(field, f"the wildcard file {name}.txt is not UTF-8 text") from None
        except OSError as e:
            raise InvalidRequest(field, f"the wildcard file {name}.txt cannot be read: {e.strerror or e}") from None
        found = [line.strip() for line in text.splitlines()]
        found = [line for line in found if line and not line.startswith("#")]
        if not found:
            raise InvalidRequest(field, f"the wildcard file {name}.txt has no lines")
        return found


def name_problem(name: str) -> str:
    """Why a wildcard name may not be looked up, or ''."""
    if len(name) > MAX_NAME_CHARS:
        return f"a name has at most {MAX_NAME_CHARS} characters"
    if name.startswith("/") or "\\" in name or ":" in name:
        return "it is an absolute path"
    parts = name.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return "it leaves the wildcards folder"
    return ""


def expand(text: str, seed: int, wildcards: Wildcards, field: str = "prompt") -> str:
    """`text` with every choice and wildcard replaced by a seeded pick. Text with neither comes back as it is."""
    if not is_dynamic(text):
        return text
    rng = random.Random(f"{seed}:{field}")
    out = _expand(text, rng, wildcards, field, 0)
    if len(out) > MAX_EXPANDED_CHARS:
        raise InvalidRequest(field, f"expands to more than {MAX_EXPANDED_CHARS} characters")
    return out


def _expand(text: str, rng: random.Random, wildcards: Wildcards, field: str, depth: int) -> str:
    if depth > MAX_DEPTH:
        raise InvalidRequest(field, f"nests choices or wildcards more than {MAX_DEPTH} levels deep")
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "{":
            end = _closing(text, i)
            options = _split(text[i + 1:end]) if end is not None else []
            if len(options) > 1 or (end is not None and _COUNT.match(text, i + 1)):
                out.append(_choose(options, rng, wildcards, field, depth))
                i = end + 1
                continue
        elif text.startswith("__", i):
            m = _NAME.match(text, i)
            if m:
                out.append(_expand(rng.choice(wildcards.lines(m[1], field)), rng, wildcards, field, depth + 1))
                i = m.end()
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def _choose(options: list[str], rng: random.Random, wildcards: Wildcards, field: str, depth: int) -> str:
    count = 1
    m = _COUNT.match(options[0])
    if m:
        count, options[0] = int(m[1]), options[0][m.end():]
    count = max(0, min(count, len(options)))
    picked = rng.sample(options, count)
    return ", ".join(_expand(p.strip() if count > 1 else p, rng, wildcards, field, depth + 1) for p in picked)


def _closing(text: str, start: int) -> int | None:
    """The index of the `}` that closes the `{` at `start`, or None."""
    level = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            level += 1
        elif text[i] == "}":
            level -= 1
            if level == 0:
                return i
    return None


def _split(inner: str) -> list[str]:
    """The top-level `|`-separated options of a choice's inside."""
    parts, level, last = [], 0, 0
    for i, ch in enumerate(inner):
        if ch == "{":
            level += 1
        elif ch == "}":
            level -= 1
        elif ch == "|" and level == 0:
            parts.append(inner[last:i])
            last = i + 1
    parts.append(inner[last:])
    return parts
