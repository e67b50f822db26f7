"""The LoRA set fused into the loaded pipeline now, switched between pipeline calls on the worker.

A request's `<lora:NAME:w>` set is resolved in the LoRA folder (store.loras.resolve: always inside
it), read once per file version (store.loras.file_key) and fused with engine.lora.LoraState. The same
set as the last call costs nothing; another set restores the base weights and fuses the new one; a
request without LoRAs restores. No disk reads of the model: switching never reloads it.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LoraModeUnsupported
from ..store.lora_folders import a1111_list_all, resolve_any
from ..store.loras import autov3_hash, file_key

if TYPE_CHECKING:     # engine.lora imports torch (1.1 s here): not on the path of the page's start
    from .lora import LoraState, LoraWeights

log = logging.getLogger(__name__)

# Read LoRA files kept in RAM (fp32 up/down pairs; a rank-32 LoRA over every block Linear of
# Z-Image-Turbo is ~0.3 GB): enough to switch back and forth between a few without re-reading.
MAX_CACHED_FILES = 4


def _version(path: Path) -> tuple:
    return file_key(path)


class ActiveLoras:
    """Owned by the manager; `prepare`, `restore` and `drop` run on its worker only. The file caches
    are also read by `listing` from request threads, hence their lock."""

    def __init__(self, folder: Path | list[Path]):
        self.folders = [Path(f) for f in folder] if isinstance(folder, (list, tuple)) else [Path(folder)]
        self._lock = threading.Lock()
        self._weights: OrderedDict[tuple, LoraWeights] = OrderedDict()   # file_key -> read file
        self._hashes: dict[tuple, str] = {}                              # file_key -> autov3
        self._described: dict = {}               # path -> its header's reading (store.loras.describe)
        self._state: LoraState | None = None
        self._key: tuple = ()                    # the (name, strength, file version) set fused now
        self._result: tuple[dict[str, str], list[str]] = ({}, [])

    def prepare(self, pipe, loras: tuple, refusal: tuple[str, str] | None = None, carrier=None,
                backup_room=None) -> tuple[dict[str, str], list[str]]:
        """Fuse `loras` ((name, strength), ...) into `pipe`'s transformer, replacing the set fused
        now; () restores the base weights. Returns (name -> A1111 hash, notes on partial matches).
        `refusal` = (mode, hint) when the pipeline is in a mode LoRAs do not support: a
        LoraModeUnsupported then, never a silent picture without them. `carrier`: the low-VRAM
        plan's block streamer (engine.lora.LoraState). Any error leaves the base weights in place."""
        loras = tuple(loras)
        if not loras:
            self.restore()
            return {}, []
        if refusal is not None:
            self.restore()
            raise LoraModeUnsupported(loras[0][0], *refusal)
        if self._state is not None and (self._state.transformer is not pipe.transformer
                                        or self._state.carrier is not carrier):
            self.drop()                          # another pipeline or plan: its LoraState went with the old one
        try:
            paths = [resolve_any(self.folders, name) for name, _ in loras]
            # the files' versions are part of the key: a file replaced under the same name is read again
            key = tuple((name, strength, _version(path)) for (name, strength), path in zip(loras, paths))
        except BaseException:
            self.restore()
            raise
        if key == self._key:
            return self._result
        try:
            items, hashes = [], {}
            for (name, strength), path in zip(loras, paths):
                weights, digest = self._read(path)
                items.append((weights, strength))
                hashes[name] = digest
            if self._state is None:
                from .lora import LoraState

                self._state = LoraState(pipe.transformer, carrier, backup_room)
            applied = self._state.apply(items)
        except BaseException:
            self.restore()
            raise
        self._key = key
        self._result = (hashes, [a.note for a in applied if a.note])
        return self._result

    def _read(self, path: Path) -> tuple[LoraWeights, str]:
        key = _version(path)
        with self._lock:
            weights = self._weights.get(key)
            digest = self._hashes.get(key)
            if weights is not None:
                self._weights.move_to_end(key)
        if weights is None:
            from .lora import read_lora

            weights = read_lora(path)
        if digest is None:
            digest = autov3_hash(path)
        with self._lock:
            self._weights[key] = weights
            self._hashes[key] = digest
            while len(self._weights) > MAX_CACHED_FILES:
                self._weights.popitem(last=False)
        return weights, digest

    def restore(self) -> None:
        """The base weights back (bit for bit); the state and its copies are kept for the next set."""
        if self._state is not None and self._state.active:
            self._state.restore()
        self._key = ()
        self._result = ({}, [])

    def drop(self) -> None:
        """Before the pipeline is unloaded, moved, re-planned or converted (fp8, int8): restored,
        and the LoraState let go (it holds the transformer)."""
        try:
            if self._state is not None:
                self._state.release()
        finally:
            self._state = None
            self._key = ()
            self._result = ({}, [])

    def listing(self, refresh: bool = False, hash_files: bool = True) -> list[dict]:
        """`GET /sdapi/v1/loras`. A header is read once per file version (file_key); `refresh`
        forgets the cached headers, hashes and read files, so every file is read again;
        `hash_files=False` lists from the headers alone (hashes known already are still given)."""
        with self._lock:
            if refresh:
                self._hashes.clear()
                self._weights.clear()
                self._described.clear()
            hashes, described = dict(self._hashes), dict(self._described)
        found = a1111_list_all(self.folders, hashes, hash_files, described)
        with self._lock:
            self._hashes.update(hashes)
            self._described = described
        return found
