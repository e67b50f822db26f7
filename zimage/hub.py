"""Getting the model folder: a local path, a complete copy in the ModelScope cache, or a download.

Downloads use modelscope's own `snapshot_download` (resume, sha256 check, file locks) and only the
files the pipeline needs. A complete cached copy is used without any network call: modelscope
re-hashes every cached file on each online call, and would fail offline.
"""
from __future__ import annotations

import fnmatch
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .cache import find_complete_copy, modelscope_cache_base, quick_check
from .errors import ModelLoadFailed, ModelUnavailable, ZImageError

log = logging.getLogger(__name__)

# Only what ZImagePipeline loads: configs, tokenizer files, safetensors. No .bin/.pt/.pkl, no code.
ALLOW_PATTERNS = ["model_index.json", "*/*.json", "*/*.safetensors", "tokenizer/*.txt"]
DISK_MARGIN_BYTES = 512 * 2**20


class DiskFull(ZImageError):
    http_status = 507
    code = "disk_full"


@dataclass(frozen=True)
class DownloadProgress:
    bytes_done: int
    bytes_total: int
    current_file: str
    bytes_per_s: float


DownloadCallback = Callable[[DownloadProgress], None]


def is_local_reference(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or Path(model).expanduser().is_dir()


def needed_files(listing: list[dict]) -> list[dict]:
    return [f for f in listing if any(fnmatch.fnmatch(f["Path"], p) for p in ALLOW_PATTERNS)]


def _network_error(model_id: str, e: Exception) -> ModelUnavailable:
    return ModelUnavailable(
        f"Could not download {model_id}: {e.__class__.__name__}: {str(e)[:200]}",
        "Check your network connection (or MODELSCOPE_ENDPOINT) and press Preload to retry, "
        "or start with --model /path/to/a/downloaded/folder.")


def download(model_id: str, cache_dir: str, on_progress: DownloadCallback | None = None) -> Path:
    """Download `model_id` into the ModelScope cache with byte progress; return the snapshot folder."""
    from modelscope.hub.api import HubApi
    from modelscope.hub.snapshot_download import snapshot_download
    from modelscope_hub._download import ProgressCallback

    base = modelscope_cache_base(cache_dir)
    try:
        files = needed_files(HubApi().get_model_files(model_id, recursive=True))
    except Exception as e:  # the modelscope client raises many kinds; all mean "cannot reach the hub"
        raise _network_error(model_id, e) from e
    total = sum(int(f.get("Size") or 0) for f in files)
    base.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(base).free
    if total + DISK_MARGIN_BYTES > free:
        raise DiskFull(f"Not enough disk space for {model_id}: needs {total / 1e9:.1f} GB, "
                       f"{free / 1e9:.1f} GB free in {base}.",
                       "Free some space, or point MODELSCOPE_CACHE (or --cache-dir) at a bigger disk.")

    done = {"bytes": 0}
    started = time.monotonic()

    class _Report(ProgressCallback):
        def update(self, size: int) -> None:
            done["bytes"] += size
            if on_progress:
                elapsed = max(time.monotonic() - started, 1e-6)
                on_progress(DownloadProgress(min(done["bytes"], total), total, self.filename,
                                             done["bytes"] / elapsed))

    try:
        path = snapshot_download(model_id, cache_dir=str(base), allow_patterns=ALLOW_PATTERNS,
                                 progress_callbacks=[_Report])
    except OSError as e:
        if e.errno == 28:   # ENOSPC
            raise DiskFull(f"The disk filled up while downloading {model_id} into {base}.",
                           "Free some space and press Preload: the download resumes where it stopped.") from e
        raise _network_error(model_id, e) from e
    except Exception as e:
        raise _network_error(model_id, e) from e
    return Path(path)


def resolve_model_dir(model: str, cache_dir: str = "", on_progress: DownloadCallback | None = None,
                      on_download_start: Callable[[], None] | None = None) -> Path:
    """A folder holding a complete diffusers Z-Image pipeline, downloading it first if needed."""
    if is_local_reference(model):
        path = Path(model).expanduser().resolve()
        if not path.is_dir():
            raise ModelUnavailable(f"Model folder not found: {path}",
                                   "Check --model, or pass a ModelScope id such as Tongyi-MAI/Z-Image-Turbo.")
        _raise_if_broken(path)
        return path
    if model.count("/") != 1:
        raise ModelUnavailable(f"{model!r} is neither a folder nor a ModelScope id (owner/name).",
                               "Use e.g. --model Tongyi-MAI/Z-Image-Turbo or --model /path/to/folder.")
    cached = find_complete_copy(model, modelscope_cache_base(cache_dir))
    if cached is not None:
        log.info("using cached %s at %s (no network)", model, cached)
        return cached
    if on_download_start:
        on_download_start()
    path = download(model, cache_dir, on_progress)
    _raise_if_broken(path)
    return path


def _raise_if_broken(path: Path) -> None:
    problems = quick_check(path)
    if problems:
        listed = "; ".join(f"{p.path}: {p.reason}" for p in problems[:5])
        raise ModelLoadFailed(f"The model in {path} is incomplete or damaged ({listed}).",
                              "Download it again (delete the damaged files, then press Preload), "
                              "or point --model at a complete copy.",
                              files=[p.path for p in problems])
