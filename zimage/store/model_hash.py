"""A model's A1111-style hash for `/sdapi/v1/sd-models` and the PNG's "Model hash: <10 hex>".

- A single file (.safetensors, .gguf): the sha256 of the whole file, its first 10 hex digits: what
  A1111 writes as `Model hash` and Civitai matches. Reading 12 GB costs seconds, so a digest is kept
  in a small JSON file of ours (keyed by path, size and mtime), never beside the model (other apps'
  folders are read only), and a listing hashes big files on a background thread (`hash_later`).
- A diffusers folder: the sha256 of its transformer's shard index (`*.safetensors.index.json`:
  every tensor's name and shard, a few kB), else of a manifest of its transformer's weight files'
  names and sizes. Cheap (no weights read) and stable while the files stay; it is ours, not A1111's
  (A1111 has no hash for a folder).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SHORT = 10                               # A1111's shorthash length
HASH_NOW_BYTES = 256 * 1024 ** 2         # files up to this are hashed while listing (~0.2 s); bigger ones later
CHUNK = 8 * 1024 ** 2
_lock = threading.Lock()                 # one reader and writer of the JSON file per process
_pending: set[str] = set()


def _cache_file(cache_dir: Path) -> Path:
    return cache_dir / "model-hashes.json"


def _key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _read(cache_dir: Path) -> dict:
    try:
        data = json.loads(_cache_file(cache_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(cache_dir: Path, key: str, digest: str) -> None:
    with _lock:
        data = _read(cache_dir)
        data[key] = digest
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = _cache_file(cache_dir).with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data), encoding="utf-8")
            os.replace(tmp, _cache_file(cache_dir))
        except OSError as e:              # a read-only home: the hash is computed again next time
            log.debug("model hash cache not written: %s", e)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_digest(folder: Path) -> str:
    """A diffusers folder's hash: its transformer's shard index, else its weight files' names and sizes."""
    transformer = folder / "transformer"
    digest = hashlib.sha256()
    indexes = sorted(transformer.glob("*.safetensors.index.json"))
    if indexes:
        digest.update(indexes[0].read_bytes())
    else:
        for p in sorted(transformer.glob("*.safetensors")):
            digest.update(f"{p.name}\t{p.stat().st_size}\n".encode())
    return digest.hexdigest()


def sha256_of(path: Path, cache_dir: Path, compute: bool = True) -> str:
    """The model's full sha256 (a folder's: folder_digest), or "" when not known and not `compute`."""
    try:
        if path.is_dir():
            return folder_digest(path)
        key = _key(path)
    except OSError:
        return ""
    known = _read(cache_dir).get(key, "")
    if known or not compute:
        return known
    try:
        digest = file_sha256(path)
    except OSError as e:
        log.warning("could not hash %s: %s", path, e)
        return ""
    _remember(cache_dir, key, digest)
    return digest


def sha256_listing(path: Path, cache_dir: Path) -> str:
    """For a listing: known or cheap now; a big file's digest is computed on a background thread
    and shows in a later listing."""
    try:
        big = path.is_file() and path.stat().st_size > HASH_NOW_BYTES
    except OSError:
        return ""
    if not big:
        return sha256_of(path, cache_dir)
    known = sha256_of(path, cache_dir, compute=False)
    if not known:
        hash_later(path, cache_dir)
    return known


def hash_later(path: Path, cache_dir: Path) -> None:
    with _lock:
        if str(path) in _pending:
            return
        _pending.add(str(path))

    def run() -> None:
        try:
            sha256_of(path, cache_dir)
        finally:
            with _lock:
                _pending.discard(str(path))
    threading.Thread(target=run, name="zimage-model-hash", daemon=True).start()


def short(sha256: str) -> str:
    return sha256[:SHORT]
