"""Our record of a verified download, and verification against it.

modelscope re-hashes every cached file on each online call (20 GB read at every start) and its
offline mode accepts any non-empty folder. So after a verified download we write a manifest
(path, size, sha256, mtime, verified_at) in our own folder of the cache, start from it offline
with size and header checks, and re-hash only on Verify or when a file's size or mtime changed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .cache import Problem, missing, safetensors_problem

log = logging.getLogger(__name__)

MANIFEST_DIR = ".zimage-manifests"
HASH_CHUNK_BYTES = 8 * 2**20


@dataclass
class FileRecord:
    size: int
    sha256: str
    mtime: float = 0.0
    verified_at: float = 0.0


@dataclass
class Manifest:
    model_id: str
    folder: str
    files: dict[str, FileRecord] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(r.size for r in self.files.values())

    def to_json(self) -> str:
        return json.dumps({"model_id": self.model_id, "folder": self.folder,
                           "files": {k: asdict(v) for k, v in sorted(self.files.items())}}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        data = json.loads(text)
        return cls(model_id=data["model_id"], folder=data["folder"],
                   files={k: FileRecord(**v) for k, v in data["files"].items()})


def manifest_path(base: Path, model_id: str) -> Path:
    return base / MANIFEST_DIR / (model_id.replace("/", "--") + ".json")


def load_manifest(base: Path, model_id: str) -> Manifest | None:
    path = manifest_path(base, model_id)
    try:
        return Manifest.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring unreadable manifest %s: %s", path, e)
        return None


def save_manifest(base: Path, manifest: Manifest) -> Path:
    """Atomic write (temp file + rename), so a crash never leaves half a manifest."""
    path = manifest_path(base, manifest.model_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        fh.write(manifest.to_json())
    os.replace(tmp, path)
    return path


def manifest_from_listing(model_id: str, folder: Path, listing: list[dict]) -> Manifest:
    """After the client verified a download: sizes and sha256 from the hub, mtimes from disk."""
    now = time.time()
    files = {}
    for item in listing:
        path = folder / item["Path"]
        st = path.stat()
        files[item["Path"]] = FileRecord(size=int(item["Size"]), sha256=str(item.get("Sha256") or ""),
                                         mtime=st.st_mtime, verified_at=now)
    return Manifest(model_id=model_id, folder=str(folder), files=files)


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(HASH_CHUNK_BYTES):
            digest.update(block)
            if on_bytes:
                on_bytes(len(block))
    return digest.hexdigest()


def check_against_manifest(folder: Path, manifest: Manifest, full: bool = False,
                           on_progress: Callable[[int, int, str], None] | None = None) -> list[Problem]:
    """Problems with the files the manifest lists. `full` re-hashes everything; otherwise only files
    whose size or mtime changed since they were verified are re-hashed. Passing files get a fresh
    verified_at (the caller saves the manifest)."""
    problems: list[Problem] = []
    to_hash = []
    for rel, rec in manifest.files.items():
        path = folder / rel
        try:
            st = path.stat()
        except FileNotFoundError:
            problems.append(missing(rel))
            continue
        if st.st_size != rec.size:
            problems.append(Problem(rel, f"size {st.st_size} bytes, expected {rec.size}"))
            continue
        if rel.endswith(".safetensors"):
            reason = safetensors_problem(path)
            if reason:
                problems.append(Problem(rel, reason))
                continue
        if rec.sha256 and (full or abs(st.st_mtime - rec.mtime) > 1e-3):
            to_hash.append((rel, path, rec))
    total = sum(rec.size for _, _, rec in to_hash)
    done = 0
    for rel, path, rec in to_hash:
        def advance(n: int, rel=rel) -> None:
            nonlocal done
            done += n
            if on_progress:
                on_progress(done, total, rel)
        if sha256_file(path, advance) != rec.sha256:
            problems.append(Problem(rel, "sha256 mismatch (corrupt)"))
        else:
            rec.mtime, rec.verified_at = path.stat().st_mtime, time.time()
    return problems
