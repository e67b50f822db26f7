"""Make CUDA's primary context while Python imports torch and diffusers.

Creating the context (cuInit, then the device's primary context) took 2.8-4.2 s on the H200 and
torch does it only at its first CUDA call, after its imports (8-17 s there): one after the other.
Here a thread calls the driver API through ctypes, which releases the GIL for the whole call, so
the imports go on meanwhile; torch's runtime later retains the same primary context instead of
making one. Without a driver (this CPU machine: no libcuda.so.1) nothing is started and nothing
imported: ctypes only, never torch.
"""
from __future__ import annotations

import ctypes
import logging
import re
import threading
from typing import Callable

from .. import startup

log = logging.getLogger(__name__)

DRIVER_LIBRARY = "libcuda.so.1"          # the driver's own soname; the unversioned name ships with the toolkit only
_DEVICE = re.compile(r"cuda(?::(\d+))?")


def device_ordinal(device_setting: str) -> int | None:
    """The device the load will use (Settings.device: auto, cuda, cuda:N, cpu), None for the CPU.
    auto and cuda mean cuda:0, as TorchPlacement decides; the ordinal is counted among the visible
    devices, as torch counts it (the driver reads CUDA_VISIBLE_DEVICES too)."""
    if device_setting == "auto":
        return 0
    m = _DEVICE.fullmatch(device_setting)
    return int(m.group(1) or 0) if m else None


def retain_primary_context(ordinal: int, load: Callable[[str], object] = ctypes.CDLL) -> str:
    """cuInit, then retain device `ordinal`'s primary context (kept for the process's life: torch
    retains it too, and releasing ours first would destroy it). Returns "" on success, else why not.
    Never raises: the context is only made early, torch makes it anyway if this fails."""
    try:
        cuda = load(DRIVER_LIBRARY)
    except OSError as e:
        return f"no CUDA driver ({e})"
    try:
        rc = cuda.cuInit(0)
        if rc != 0:
            return f"cuInit returned {rc}"
        dev = ctypes.c_int(0)
        rc = cuda.cuDeviceGet(ctypes.byref(dev), ordinal)
        if rc != 0:
            return f"cuDeviceGet({ordinal}) returned {rc}"
        ctx = ctypes.c_void_p()
        rc = cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev)
        if rc != 0:
            return f"cuDevicePrimaryCtxRetain returned {rc}"
    except (AttributeError, OSError, ctypes.ArgumentError) as e:   # a library without these symbols
        return f"{e.__class__.__name__}: {e}"
    return ""


def start_cuda_context(device_setting: str, load: Callable[[str], object] = ctypes.CDLL) -> threading.Thread | None:
    """Start making the context on a daemon thread and mark "CUDA ready" on the timeline when it is
    made. None (nothing started) for the CPU or when there is no driver library to load: checked
    here, since dlopen of a missing library is a path search (well under 1 ms), not worth a thread."""
    ordinal = device_ordinal(device_setting)
    if ordinal is None:
        return None
    try:
        load(DRIVER_LIBRARY)         # dlopen keeps the handle: the thread's load is a lookup
    except OSError:
        log.debug("no %s: the CUDA context is left to torch", DRIVER_LIBRARY)
        return None

    def run() -> None:
        why = retain_primary_context(ordinal, load)
        if why:
            log.info("CUDA context not made early (%s): torch makes it at its first CUDA call", why)
        else:
            startup.mark(startup.CUDA_READY)
    t = threading.Thread(target=run, name="zimage-cuda-context", daemon=True)
    t.start()
    return t
