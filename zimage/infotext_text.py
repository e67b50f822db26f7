"""The text rules of A1111's `parameters` infotext that make a value read back as it was written:
quoting a parameter's value, and keeping a prompt line from passing for the negative prompt's.
Pure, stdlib only; infotext.infotext writes with them, infotext.parse_infotext reads with them.

Quoting is A1111's own (modules/infotext_utils.py `quote`/`unquote`): a value holding a `,`, `:`
or a newline is written as a JSON string (its parser takes `"..."` whole and json-loads it). We
also quote a value holding `"`, which A1111 leaves bare: a bare value that starts with a quote is
cut at its next quote by every reader's pattern.

A prompt line that starts with "Negative prompt:" is read by A1111, Forge and SD.Next (and was by
us) as the start of the negative prompt. Those readers strip each line first, so a leading space
does not hide it, and a zero-width character would stay in the prompt they read. We write such a
line with a backslash in front ("\\Negative prompt: ..."): every A1111-style reader keeps it in the
prompt, and A1111's prompt parser reads `\\N` as a plain `N` (a backslash escapes the next
character), so the prompt it generates from is the one written. Our reader removes the backslash.
A line that already starts with backslashes before "Negative prompt:" gets one more, so removing
one always gives the line back.
"""
from __future__ import annotations

import functools
import json
import re

NEGATIVE = "Negative prompt:"
_NEEDS_QUOTES = re.compile(r'[,:"\n]')
_ESCAPABLE = re.compile(r"^(\s*)(\\*Negative prompt:)")      # what our writer escapes
_ESCAPED = re.compile(r"^(\s*)\\(\\*Negative prompt:)")       # what our reader unescapes


def quote(value: object) -> str:
    """A parameter's value as A1111 writes it: bare, or a JSON string when it holds , : " or a newline."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if _NEEDS_QUOTES.search(text) else text


def unquote(raw: str) -> str:
    """A parameter's value as read by the `Key: value` pattern: a quoted one json-loaded (A1111's
    `unquote`), or its quotes dropped where it is not valid JSON (text by older writers)."""
    raw = raw.strip()
    if len(raw) < 2 or raw[0] != '"' or raw[-1] != '"':
        return raw
    try:
        value = json.loads(raw)
    except ValueError:
        return raw[1:-1].strip()
    return value if isinstance(value, str) else raw[1:-1].strip()


def escape_prompt(prompt: str) -> str:
    """The prompt with each line that would read as the negative prompt's start escaped."""
    return "\n".join(_ESCAPABLE.sub(r"\1\\\2", line) for line in prompt.split("\n"))


def is_negative_start(line: str) -> bool:
    """The line starts the negative prompt (as A1111 tests it: after stripping the line)."""
    return line.strip().startswith(NEGATIVE)


def unescape_line(line: str) -> str:
    """A prompt line as it was before escape_prompt."""
    return _ESCAPED.sub(r"\1\2", line)


@functools.cache
def version_text() -> str:
    """A1111's closing `Version:` entry, naming what made the image: ", Version: diffusers 0.42.1"
    (read from the installed package's metadata: no import of diffusers)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f", Version: diffusers {version('diffusers')}"
    except PackageNotFoundError:
        return ""
