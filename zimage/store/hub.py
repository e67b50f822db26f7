"""Getting the model folder: a local path, a healthy copy in the ModelScope cache, or a download.

Downloads use modelscope's own `snapshot_download` (resume with HTTP Range, sha256 check before
an atomic rename, per-file locks between processes) and fetch only the files the pipeline needs.
A cached copy that our manifest (or, for older downloads, the quick header check) finds complete
is used without any network call.
"""
from __future__ import annotations

import fnmatch
import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import CacheCorrupt, DiskFull, DownloadCancelled, ModelLoadFailed, ModelUnavailable, NotAModelId
from .cache import Problem, candidate_dirs, classify, modelscope_cache_base
from .manifest import check_against_manifest, load_manifest, manifest_from_listing, save_manifest

log = logging.getLogger(__name__)

# Only what ZImagePipeline loads: configs, tokenizer files, safetensors. No .bin/.pt/.pkl, no code.
ALLOW_PATTERNS = ["model_index.json", "*/*.json", "*/*.safetensors", "tokenizer/*.txt", "tokenizer/*.jinja",
                  "tokenizer/*.model", "tokenizer/*.tiktoken"]
DISK_MARGIN_BYTES = 512 * 2**20


@dataclass(frozen=True)
class DownloadProgress:
    bytes_done: int
    bytes_total: int
    current_file: str
    bytes_per_s: float

    @property
    def eta_s(self) -> float | None:
        left = self.bytes_total - self.bytes_done
        return left / self.bytes_per_s if self.bytes_per_s > 0 else None


DownloadCallback = Callable[[DownloadProgress], None]
FreeBytes = Callable[[Path], int]


def disk_free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def is_local_reference(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or Path(model).expanduser().is_dir()


# ModelScope's owner/name: letters, digits, "-", "_" and "." (not "." or ".." alone, which would make
# the cache paths built from the id leave the cache: "a/.." is the cache's own folder).
MODEL_ID_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def require_model_id(model: str) -> None:
    """Refuse anything but a ModelScope id (owner/name) before a cache path is made from it."""
    parts = model.split("/") if isinstance(model, str) else []
    if len(parts) != 2 or not all(MODEL_ID_PART.fullmatch(p) and ".." not in p for p in parts):
        raise NotAModelId(f"{model!r} is neither a folder nor a ModelScope id (owner/name).",
                          "Use e.g. --model Tongyi-MAI/Z-Image-Turbo or --model /path/to/folder.")


def needed_files(listing: list[dict], patterns: list[str] = ALLOW_PATTERNS) -> list[dict]:
    files = [f for f in listing if f.get("Type", "blob") != "tree"]
    if not any(f["Path"] == "model_index.json" for f in files):
        # A one-file repo (the ControlNet): its top-level safetensors only, not its sample images
        return [f for f in files if "/" not in f["Path"] and f["Path"].endswith(".safetensors")]
    return [f for f in files if any(fnmatch.fnmatch(f["Path"], p) for p in patterns)]


def _network_error(model_id: str, e: Exception) -> ModelUnavailable:
    return ModelUnavailable(
        f"Could not download {model_id}: {e.__class__.__name__}: {str(e)[:200]}",
        "Check your network connection (or MODELSCOPE_ENDPOINT) and press Preload to retry: "
        "finished files are kept and a partial file resumes. Or start with --model /path/to/folder.")


def list_remote(model_id: str) -> list[dict]:
    """The hub's file list (Path, Size, Sha256) for the files we need."""
    from modelscope.hub.api import HubApi
    from modelscope_hub.api import HubApi as RawApi

    try:
        raw = RawApi().legacy.list_repo_files(repo_id=model_id, repo_type="model", revision="master",
                                               recursive=True)
    except AttributeError:   # a client without the raw listing: sizes only
        raw = HubApi().get_model_files(model_id, recursive=True)
    except Exception as e:   # the client raises many kinds; all mean "cannot reach the hub"
        raise _network_error(model_id, e) from e
    return needed_files([{"Path": f.get("Path") or f.get("Name"), "Size": int(f.get("Size") or 0),
                          "Sha256": f.get("Sha256") or "", "Type": f.get("Type", "blob")} for f in raw])


class _Transfer:
    """Byte progress over all files of one snapshot_download, shared by the per-file callbacks."""

    def __init__(self, total: int, on_progress: DownloadCallback | None, cancel: threading.Event | None):
        from tqdm import tqdm

        self.total, self.done, self.on_progress, self.cancel = total, 0, on_progress, cancel
        self.started = time.monotonic()
        self.lock = threading.Lock()
        # disable=False explicitly: the entry point sets TQDM_DISABLE to silence the client's own
        # per-file bars (and the loaders' bars), so the terminal shows this one bar.
        self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="Downloading",
                        disable=False)

    def update(self, filename: str, n: int) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise DownloadCancelled()
        with self.lock:
            self.done = min(self.done + n, self.total)
            self.bar.update(n)
            rate = self.done / max(time.monotonic() - self.started, 1e-6)
            progress = DownloadProgress(self.done, self.total, filename, rate)
        if self.on_progress:
            self.on_progress(progress)

    def close(self) -> None:
        self.bar.close()


def download(model_id: str, cache_dir: str = "", on_progress: DownloadCallback | None = None,
             cancel: threading.Event | None = None, only: list[str] | None = None,
             free_bytes: FreeBytes = disk_free_bytes) -> Path:
    """Download `model_id` (or just the files in `only`) into the ModelScope cache; write our manifest.

    Checks free disk space against what is still missing before the first byte is written.
    """
    from modelscope.hub.snapshot_download import snapshot_download
    from modelscope_hub._download import ProgressCallback

    require_model_id(model_id)
    base = modelscope_cache_base(cache_dir)
    listing = list_remote(model_id)
    if not listing:
        raise ModelUnavailable(f"{model_id} has no model files on the hub.", "Check the model id.")
    wanted = [f for f in listing if only is None or f["Path"] in only]
    folder = next((c for c in candidate_dirs(model_id, base) if c.is_dir()), None)
    present = sum(min((folder / f["Path"]).stat().st_size, f["Size"]) for f in wanted
                  if folder is not None and (folder / f["Path"]).is_file()) if only is None else 0
    need = sum(f["Size"] for f in wanted) - present
    base.mkdir(parents=True, exist_ok=True)
    free = free_bytes(base)
    if need + DISK_MARGIN_BYTES > free:
        raise DiskFull(f"Not enough disk space for {model_id}: {need / 1e9:.2f} GB still to download, "
                       f"{free / 1e9:.2f} GB free in {base}.",
                       "Free some space, or move the cache to a bigger disk: set MODELSCOPE_CACHE "
                       "(or --cache-dir) to a folder there and restart.", need_bytes=need, free_bytes=free)

    transfer = _Transfer(sum(f["Size"] for f in wanted), on_progress, cancel)

    class _Report(ProgressCallback):
        def update(self, size: int) -> None:
            transfer.update(self.filename, size)

    one_file = not any(f["Path"] == "model_index.json" for f in listing)
    patterns = [f["Path"] for f in wanted] if only is not None or one_file else ALLOW_PATTERNS
    try:
        path = Path(snapshot_download(model_id, cache_dir=str(base), allow_patterns=patterns,
                                      progress_callbacks=[_Report]))
    except BaseException as e:
        if (cancel is not None and cancel.is_set()) or _caused_by(e, DownloadCancelled):
            raise DownloadCancelled() from e
        if getattr(_caused_by(e, OSError), "errno", None) == 28:   # ENOSPC
            raise DiskFull(f"The disk filled up while downloading {model_id} into {base}.",
                           "Free some space and press Preload: the download resumes where it stopped.") from e
        if isinstance(e, Exception):
            raise _network_error(model_id, e) from e
        raise
    finally:
        transfer.close()
    fresh = manifest_from_listing(model_id, path, listing if only is None else wanted)
    manifest = load_manifest(base, model_id)
    if only is not None and manifest is not None and manifest.folder == str(path):
        manifest.files.update(fresh.files)     # a repair: keep what we knew about the other files
    else:
        manifest = fresh
    save_manifest(base, manifest)
    return path


def _caused_by(e: BaseException | None, kind: type) -> BaseException | None:
    """The first exception of `kind` in e's cause/context chain or, for the client's
    FileDownloadError, in its per-file `failed_files` (it collects each file's error there)."""
    seen: set[int] = set()
    todo = [e]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        if isinstance(e, kind):
            return e
        seen.add(id(e))
        todo += [e.__cause__, e.__context__] + list((getattr(e, "failed_files", None) or {}).values())
    return None


def cached_copy(model_id: str, base: Path, full: bool = False,
                on_progress: Callable[[int, int, str], None] | None = None) -> tuple[Path | None, list[Problem]]:
    """The cached folder for `model_id` (manifest's folder first) and its problems, without network."""
    manifest = load_manifest(base, model_id)
    folders = candidate_dirs(model_id, base)
    if manifest is not None:
        folders = [Path(manifest.folder)] + [f for f in folders if str(f) != manifest.folder]
    for folder in folders:
        if not folder.is_dir() or not any(folder.iterdir()):
            continue
        extra = []
        if manifest is not None and manifest.folder == str(folder):
            extra = check_against_manifest(folder, manifest, full=full, on_progress=on_progress)
            save_manifest(base, manifest)     # records fresh verified_at / mtimes
        _, problems = classify(folder, extra)
        return folder, _dedupe(problems)
    return None, []


def _dedupe(problems) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        if p.path not in seen:
            seen.add(p.path)
            out.append(p)
    return out


def corrupt_error(folder: Path, problems: list[Problem]) -> CacheCorrupt:
    listed = "; ".join(f"{p.path}: {p.reason}" for p in problems[:5])
    return CacheCorrupt(f"The model in {folder} is damaged ({listed}).",
                        "Press Repair (Model cache panel) or run `python -m zimage cache repair` to "
                        "download only the damaged files again.",
                        files=[p.path for p in problems])


def resolve_model_dir(model: str, cache_dir: str = "", on_progress: DownloadCallback | None = None,
                      on_download_start: Callable[[], None] | None = None,
                      cancel: threading.Event | None = None) -> Path:
    """A folder holding a complete diffusers Z-Image pipeline (or a one-file model such as the
    ControlNet), downloading (or resuming) if needed."""
    if is_local_reference(model):
        path = Path(model).expanduser().resolve()
        if not path.is_dir():
            raise ModelUnavailable(f"Model folder not found: {path}",
                                   "Check --model, or pass a ModelScope id such as Tongyi-MAI/Z-Image-Turbo.")
        _, problems = classify(path)
        if problems:
            listed = "; ".join(f"{p.path}: {p.reason}" for p in problems[:5])
            raise ModelLoadFailed(f"The model in {path} is incomplete or damaged ({listed}).",
                                  "Point --model at a complete copy, or copy the damaged files again.",
                                  files=[p.path for p in problems])
        return path
    require_model_id(model)
    base = modelscope_cache_base(cache_dir)
    folder, problems = cached_copy(model, base)
    if folder is not None and not problems and not any(folder.rglob("*.incomplete")):
        log.info("using cached %s at %s (no network)", model, folder)
        return folder
    if any(not p.missing for p in problems):
        raise corrupt_error(folder, problems)
    if on_download_start:
        on_download_start()
    path = download(model, cache_dir, on_progress, cancel)
    folder, problems = cached_copy(model, base)
    if problems:
        raise corrupt_error(folder or path, problems)
    return path


def repair(model_id: str, cache_dir: str = "", on_progress: DownloadCallback | None = None,
           cancel: threading.Event | None = None) -> list[str]:
    """Re-download only the damaged or missing files (found with a full hash check); return them."""
    require_model_id(model_id)
    base = modelscope_cache_base(cache_dir)
    folder, problems = cached_copy(model_id, base, full=True)
    if folder is None:
        download(model_id, cache_dir, on_progress, cancel)
        return ["(all files)"]
    broken = [p.path for p in problems if p.path.count("/") <= 1 and "." in p.path.rsplit("/", 1)[-1]]
    if not broken and not problems:
        return []
    for rel in broken:
        target = (folder / rel).resolve()
        if target.is_relative_to(folder.resolve()) and target.is_file():
            target.unlink()
    download(model_id, cache_dir, on_progress, cancel, only=broken or None)
    return broken or ["(all files)"]


@dataclass(frozen=True)
class VerifyReport:
    folder: Path | None
    problems: list[Problem]
    checked: int
    how: str            # "sha256" or "sizes and headers (no hashes recorded)"
    model_id: str = ""  # the model checked


@dataclass(frozen=True)
class RepairReport:
    """What a repair job did: the model it checked and the files it downloaded again ("(all
    files)" for a model that was not cached; empty when nothing needed it). Iterates and counts
    like the list of files, which callers read before the report named its model."""
    model_id: str
    fixed: tuple[str, ...] = ()

    def __iter__(self):
        return iter(self.fixed)

    def __len__(self) -> int:
        return len(self.fixed)


def verify(model_id: str, cache_dir: str = "",
           on_progress: Callable[[int, int, str], None] | None = None) -> VerifyReport:
    """Full check of a cached model: sha256 of every file when hashes are known (our manifest, or
    the hub's list when reachable: then a manifest is recorded), sizes and headers otherwise."""
    require_model_id(model_id)
    base = modelscope_cache_base(cache_dir)
    if load_manifest(base, model_id) is None:
        _adopt_hub_hashes(model_id, base)
    folder, problems = cached_copy(model_id, base, full=True, on_progress=on_progress)
    manifest = load_manifest(base, model_id)
    if folder is None:
        return VerifyReport(None, [], 0, "", model_id)
    if manifest is not None and manifest.folder == str(folder):
        return VerifyReport(folder, problems, len(manifest.files), "sha256", model_id)
    checked = sum(1 for p in folder.rglob("*") if p.is_file())
    return VerifyReport(folder, problems, checked, "sizes and headers (no hashes recorded)", model_id)


def merge_verify_reports(reports: list[VerifyReport]) -> VerifyReport:
    """One report from several (--backend ray: each replica checks its node's cache): every problem
    any of them found, once; the first folder found."""
    found = [r for r in reports if r.folder is not None] or reports[:1]
    first = found[0]
    problems = _dedupe([p for r in found for p in r.problems])
    return VerifyReport(first.folder, problems, max(r.checked for r in found), first.how, first.model_id)


def _adopt_hub_hashes(model_id: str, base: Path) -> None:
    """For a copy made by another tool (e.g. the seed's old cache): take the hub's sha256 list as
    the reference so Verify can hash. Offline, verification falls back to sizes and headers."""
    folder = next((c for c in candidate_dirs(model_id, base) if (c / "model_index.json").exists()), None)
    if folder is None:
        return
    try:
        listing = list_remote(model_id)
    except ModelUnavailable as e:
        log.info("no hashes for %s (offline): %s", model_id, e.message)
        return
    from .manifest import FileRecord, Manifest

    files = {f["Path"]: FileRecord(size=f["Size"], sha256=f["Sha256"]) for f in listing}
    save_manifest(base, Manifest(model_id=model_id, folder=str(folder), files=files))
