"""What the page's callers may leave on this server between an upload and the event that reads it.

Gradio keeps what `/gradio_api/upload` writes (its temporary folder, on disk) and what an image
editor's `accept_blobs` sends (the component's memory, `blob_storage`) until an event reads it, and
an upload no event read stayed until Gradio's sweep: 20 uploads of 19 MB were written in 2.9 s and
kept a day, and every editor id nobody sent an event for stayed in memory until exit. Here:
- each client (its address) may hold `per_client_bytes` of unread and not yet deleted uploads and
  editor images, and all clients together `total_bytes`; past that an upload is a 429 saying so
  (before Gradio writes a byte), with Retry-After the time until its oldest unread upload goes;
- an upload or editor image no event has taken within `unread_keep_s` is deleted (a timer runs
  while any is waiting). One an event took (the guard checked it for that event, which may wait in
  the queue) is left to the event, which deletes it once read, and to Gradio's hourly sweep.
Bookkeeping only: the guard (gradio_guard) calls reserve before Gradio runs and settle after.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from ..errors import ZImageError
from .gradio_uploads import discard

log = logging.getLogger(__name__)


class UploadQuotaExceeded(ZImageError):
    http_status = 429
    code = "upload_quota"

    def __init__(self, whose: str, cap_bytes: int, retry_after_s: int):
        super().__init__(f"Too many uploads waiting: {whose} may keep {cap_bytes / 2**20:g} MB of images "
                         "that no event has read yet.",
                         f"Use or remove the images already uploaded, or try again in {retry_after_s} s.",
                         field="files", retry_after_s=retry_after_s)
        self.retry_after_s = retry_after_s


@dataclass
class _Held:
    client: str
    size: int
    at: float
    read: bool = False


def editor_instances(blocks, component_ids: Iterable[int]) -> list:
    """The image editors whose `blob_storage` accept_blobs fills: the page's, and the copies Gradio
    keeps per browser session once an event updated the editor (component_server uses those)."""
    ids = list(component_ids)
    found = [blocks.blocks[i] for i in ids if i in blocks.blocks]
    holder = getattr(blocks, "state_holder", None)
    for state in list(getattr(holder, "session_data", {}).values()):
        found += [b for i in ids if (b := state.blocks_config.blocks.get(i)) is not None
                  and all(b is not f for f in found)]
    return [b for b in found if isinstance(getattr(b, "blob_storage", None), dict)]


class UploadBudget:
    """One per page. Thread-safe: the guard runs on the event loop, the timer on its own thread."""

    def __init__(self, per_client_bytes: int, total_bytes: int, unread_keep_s: float,
                 editors: Callable[[], list] = list, clock: Callable[[], float] = time.monotonic):
        self.per_client_bytes = per_client_bytes
        self.total_bytes = total_bytes
        self.unread_keep_s = unread_keep_s
        self.editors = editors           # the editors whose blob_storage holds accept_blobs images
        self.clock = clock
        self._files: dict[str, _Held] = {}          # upload path -> who sent it
        self._blobs: dict[str, _Held] = {}          # editor blob id -> who sent it (all its parts)
        self._pending: dict[int, _Held] = {}        # reserved while Gradio writes
        self._tokens = itertools.count()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def reserve(self, client: str, size: int) -> int:
        """Room for `size` bytes from `client`, or UploadQuotaExceeded; returns a token for settle."""
        self.sweep()
        with self._lock:
            held = [*self._files.values(), *self._blobs.values(), *self._pending.values()]
            mine = [h for h in held if h.client == client]
            if sum(h.size for h in mine) + size > self.per_client_bytes:
                raise UploadQuotaExceeded("one client", self.per_client_bytes, self._retry_after_s(mine))
            if sum(h.size for h in held) + size > self.total_bytes:
                raise UploadQuotaExceeded("all clients together", self.total_bytes, self._retry_after_s(held))
            token = next(self._tokens)
            self._pending[token] = _Held(client, size, self.clock())
            return token

    def settle(self, token: int, paths: Iterable[str] = (), blob_id: str | None = None) -> None:
        """Gradio answered: the files it wrote (sizes from disk) or the editor blob it stored; nothing
        when it refused the request (the reservation is dropped)."""
        with self._lock:
            pending = self._pending.pop(token, None)
            if pending is None:
                return
            now = self.clock()
            for path in paths:
                try:
                    size = os.stat(path).st_size
                except OSError:
                    continue
                self._files[path] = _Held(pending.client, size, now)
            if blob_id is not None:
                held = self._blobs.setdefault(blob_id, _Held(pending.client, 0, now))
                held.size += pending.size
                held.at = now
        self._arm()

    def mark_read(self, path: str | None = None, blob_id: str | None = None) -> None:
        """An event took this upload (or editor image): it is the event's to delete, not the sweep's."""
        with self._lock:
            held = self._files.get(path) if path is not None else self._blobs.get(blob_id)
            if held is not None:
                held.read = True

    def sweep(self) -> None:
        """Forget what is gone; delete what no event took within unread_keep_s."""
        now = self.clock()
        stored: dict[str, list[dict]] = {}
        for editor in self.editors():
            for blob_id in list(editor.blob_storage):
                stored.setdefault(blob_id, []).append(editor.blob_storage)
        expired_files: list[str] = []
        with self._lock:
            for path, held in list(self._files.items()):
                if not os.path.exists(path):
                    del self._files[path]
                elif not held.read and now - held.at >= self.unread_keep_s:
                    del self._files[path]
                    expired_files.append(path)
            for blob_id, held in list(self._blobs.items()):
                if blob_id not in stored:            # the event read it (Gradio pops it)
                    del self._blobs[blob_id]
                elif not held.read and now - held.at >= self.unread_keep_s:
                    del self._blobs[blob_id]
                    for storage in stored[blob_id]:
                        storage.pop(blob_id, None)
                    log.info("dropped an image editor's unread images (%d bytes)", held.size)
        for path in expired_files:
            discard(path)
            log.info("deleted an upload no event read in %g s: %s", self.unread_keep_s, path)

    def held_bytes(self, client: str | None = None) -> int:
        with self._lock:
            return sum(h.size for h in [*self._files.values(), *self._blobs.values(), *self._pending.values()]
                       if client is None or h.client == client)

    def _retry_after_s(self, held: list[_Held]) -> int:
        unread = [h.at for h in held if not h.read]
        if not unread:
            return max(1, math.ceil(self.unread_keep_s))
        return max(1, math.ceil(min(unread) + self.unread_keep_s - self.clock()))

    def _arm(self) -> None:
        """A timer for the next unread item's deadline, while any is waiting (none runs otherwise)."""
        with self._lock:
            unread = [h.at for h in [*self._files.values(), *self._blobs.values()] if not h.read]
            if not unread or self._timer is not None:
                return
            delay = max(0.05, min(unread) + self.unread_keep_s - self.clock())
            self._timer = threading.Timer(delay, self._tick)
            self._timer.daemon = True
            self._timer.start()

    def _tick(self) -> None:
        with self._lock:
            self._timer = None
        try:
            self.sweep()
        except Exception:                 # a sweep must never kill the timer thread silently
            log.exception("the upload sweep failed")
        self._arm()


def client_of(scope) -> str:
    return (scope.get("client") or ("?",))[0]


async def kept_upload(app, scope, receive, send, budget: UploadBudget, size: int, blob_id: str | None = None) -> None:
    """Run Gradio's /upload (or an editor's accept_blobs, `blob_id`) inside the budget: refused
    (UploadQuotaExceeded, raised before Gradio runs) past it, else recorded from Gradio's answer
    (the paths it wrote: a JSON list)."""
    token = budget.reserve(client_of(scope), size)
    status, body = 0, bytearray()

    async def capture(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and status == 200 and blob_id is None:
            body.extend(message.get("body", b""))
        await send(message)
    paths: list[str] = []
    try:
        await app(scope, receive, capture)
        if status == 200 and blob_id is None:
            try:
                paths = [p for p in json.loads(bytes(body)) if isinstance(p, str)]
            except (ValueError, TypeError):
                pass
    finally:
        budget.settle(token, paths, blob_id if status == 200 else None)
