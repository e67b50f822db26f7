"""Page-locking the RAM behind streamed weights, in place (cudaHostRegister), so a low-VRAM plan's
copies from it become DMA transfers on a side stream: `HostPinner`, and which allocations it may
lock (only whole, big ones: `pinnable_storages`). offload.py's streamer and runtime use it.
"""
from __future__ import annotations

import logging
import threading

from .vram import cuda_error_code

log = logging.getLogger(__name__)

PINNABLE_BYTES = 64 * 2**20     # above glibc's largest mmap threshold (32 MB): an allocation of its own
HOST_MEMORY_ALREADY_REGISTERED = 712


class HostPinner:
    """Page-locks the RAM behind the streamed tensors in place (cudaHostRegister), one whole
    allocation at a time on a background thread, so copies from it become DMA transfers on a side
    stream. Nothing is copied: the weights stay where the loader put them. Until an allocation is
    done, copies from it are ordinary synchronous ones, still correct.

    CUDA rejects a copy from a range that is only partly registered, so only whole allocations are
    registered, and only big ones (glibc maps those on their own pages, never shared with another
    allocation): `BlockStreamer` packs blocks whose tensors sit in small allocations first. Copies
    from a host allocation take `lock`, which is held while an allocation is being registered."""

    def __init__(self, storages: list[tuple[int, int]]):
        import time

        self.ranges = sorted(set(storages))
        self.registered: list[int] = []         # what this pinner locked (and unlocks on close)
        self.locked: set[int] = set()           # every allocation found locked, by it or before it
        self.bytes_total = sum(n for _, n in self.ranges)
        self.bytes_done = 0
        self.seconds: float | None = None
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="zimage-pin", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import time

        import torch

        cudart = torch.cuda.cudart()
        for ptr, n in self.ranges:
            if self._stop.is_set():
                break
            with self.lock:
                rc = cudart.cudaHostRegister(ptr, n, 0)
            code = cuda_error_code(rc)
            if code == 0:
                self.registered.append(ptr)
            elif code != HOST_MEMORY_ALREADY_REGISTERED:     # already pinned, e.g. the idle-unload buffer: fine
                log.warning("page-locking RAM for streaming failed (%s): copies stay synchronous", rc)
                break
            self.locked.add(ptr)
            self.bytes_done += n
        self.seconds = time.perf_counter() - self._started
        log.info("page-locked %.1f GB for streaming in %.1f s", self.bytes_done / 1e9, self.seconds)

    def wait(self) -> "HostPinner":
        self._thread.join()
        return self

    def release(self, ptrs: set[int]) -> None:
        """Unlock these allocations (ones it locked) before their memory is freed: freed RAM that
        stays registered gets mapped again by a later allocation, and copies from there fail
        ("resource already mapped")."""
        import torch

        cudart = torch.cuda.cudart()
        with self.lock:
            for ptr in [p for p in self.registered if p in ptrs]:
                cudart.cudaHostUnregister(ptr)
                self.registered.remove(ptr)
                self.locked.discard(ptr)

    def close(self) -> None:
        import torch

        self._stop.set()
        self._thread.join()
        cudart = torch.cuda.cudart()
        for ptr in self.registered:
            cudart.cudaHostUnregister(ptr)
        self.registered = []


def is_pinnable(t) -> bool:
    """In RAM, in an allocation big enough to be registered whole (see HostPinner)."""
    return t.device.type == "cpu" and t.untyped_storage().nbytes() >= PINNABLE_BYTES


def big_storages(tensors) -> dict[int, object]:
    """The big RAM allocations (see is_pinnable) behind `tensors`, by address."""
    return {t.untyped_storage().data_ptr(): t.untyped_storage() for t in tensors if is_pinnable(t)}


def pipeline_tensors(pipe) -> list:
    import torch

    return [t for c in pipe.components.values() if isinstance(c, torch.nn.Module)
            for t in list(c.parameters()) + list(c.buffers())]


def address_ranges(storages: dict[int, object]) -> list[tuple[int, int]]:
    return sorted((ptr, s.nbytes()) for ptr, s in storages.items())


def pinnable_storages(pipe) -> list[tuple[int, int]]:
    """(address, bytes) of the big RAM allocations behind the pipeline's tensors."""
    return address_ranges(big_storages(pipeline_tensors(pipe)))
