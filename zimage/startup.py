"""The start-up timeline: what the process has done since it started (imports, weights read,
modules built, on the device, first image, compile in the background), in seconds since the
process itself started, for the status panel, /health and bench/startup_bench.py.

Stdlib only, and cheap: `mark()` is called from the worker and the main thread while they race
through start-up; the list only grows, and readers get a copy.
"""
from __future__ import annotations

import os
import sys
import threading
import time

# The phases in the order a launch goes through them (a phase may be skipped: no compile on the CPU).
IMPORTS_STARTED = "imports started"
CUDA_READY = "CUDA ready"             # the primary context made while the imports ran (cuda_context.py)
WEB_IMPORTED = "web imported"
MODEL_IMPORTED = "model code imported"
READING = "reading weights"
READ = "weights read"
BUILT = "modules built"
ON_DEVICE = "on device"
READY = "ready"
PAGE_UP = "page up"
FIRST_IMAGE = "first image"
COMPILING = "compiling in the background"
COMPILED = "compiled blocks in use"
COMPILE_FAILED = "compile failed"


def _process_start_epoch() -> float:
    """When this process started (wall clock), from /proc: the interpreter's own start-up (0.1-0.3 s)
    belongs to the launch a user waits for. The start is in clock ticks since boot, compared with
    CLOCK_BOOTTIME (/proc/stat's btime is whole seconds: up to 1 s off). Falls back to now."""
    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])           # field 22 of stat(5), counted after the ")"
        age_s = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - max(0.0, age_s)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time()


PROCESS_START_EPOCH = _process_start_epoch()
_lock = threading.Lock()       # guards _events; never held while anything else runs
_events: list[tuple[str, float]] = []


def since_start_s() -> float:
    return time.time() - PROCESS_START_EPOCH


def mark(event: str, once: bool = True) -> float:
    """Record `event` now; with `once` a repeated event (a second load) keeps its first time."""
    t = round(since_start_s(), 3)
    with _lock:
        if once and any(name == event for name, _ in _events):
            return t
        _events.append((event, t))
    return t


def timeline() -> list[tuple[str, float]]:
    with _lock:
        return list(_events)


def timeline_dict() -> dict[str, float]:
    """{event: seconds since process start}, the first time of each event (for JSON)."""
    out: dict[str, float] = {}
    for name, t in timeline():
        out.setdefault(name, t)
    return out


def imported(name: str):
    """The module `name` once it is fully imported, else None (never imports it). The worker
    imports torch while the page is being built: a module that is still initialising has no
    `torch.cuda` yet ("partially initialized module 'torch' has no attribute 'cuda'")."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    if module is None or getattr(spec, "_initializing", False):
        return None
    return module


def reset() -> None:
    """For tests that start several managers in one process."""
    with _lock:
        _events.clear()
