"""The bf16 copy of a DiT stored in fp32: made once beside the model, read by every later bf16 load.

Z-Image-Turbo's official repo keeps its transformer in fp32 (24.6 GB), and every bf16 load casts it
down after reading it: twice the bytes the load needs. After a bf16 load from such files, a
background thread writes the cast weights to `<model>/.zimage-bf16/<key>/transformer/` (safetensors
shards, their index and the model's config.json); later launches stream those instead (loader.py
picks them, `weight_paths` prefetches them while the imports run).

Why in the background after the load, not during it: the copy reads the fp32 files again (from
the page cache, just read by the load), hashes them for the key and writes half their size; on the
2-core CPU box it took about as long as the load itself (docs/BENCHMARKS.md, bench/bf16_copy_bench.py),
so doing it inline would have doubled the time to the first image of the first launch. It is a
file-to-file transform, never taken from the live pipeline (fp8, LoRA fusing and offload change
those weights later), and it rounds exactly as the loader's own `.to(bfloat16)` does.

Like the int8 cache (quantize.py), the folder is keyed by the source files' sha256 (recorded with
size and mtime, so a launch finds its key without reading 25 GB; a changed file means no copy until
it is made again). Written into a temporary folder renamed at the end; `copy.json` (written last)
lists every file with its size, and a copy whose files disagree with it or whose safetensors
headers do not match their sizes is deleted and made again. `zimage cache clear-derived` removes it.

Importing this module does not import torch (the prefetch asks it which files to read first).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable

from ..store.cache import safetensors_problem, weight_files
from ..store.model_source import ModelParts

log = logging.getLogger(__name__)

COPY_DIR = ".zimage-bf16"
COMPONENT = "transformer"
RECORDS = "sources.json"
DONE = "copy.json"
STEM = "diffusion_pytorch_model"
SHARD_BYTES = 2 * 2**30        # save_file holds one shard in RAM (twice, while serializing): 4 GB peak
FREE_MARGIN_BYTES = 2**30
TMP_PREFIX = ".tmp-"

_running: dict[Path, threading.Thread] = {}
_running_lock = threading.Lock()    # guards _running only: one copy per model folder per process


def copy_root(model_dir: Path) -> Path:
    return model_dir / COPY_DIR


def _is_folder_model(model_dir) -> bool:
    return isinstance(model_dir, Path) and not isinstance(model_dir, ModelParts) and (model_dir / COMPONENT).is_dir()


def is_bf16(dtype) -> bool:
    return str(dtype).rsplit(".", 1)[-1] == "bfloat16"


def fp32_on_disk(model_dir: Path) -> bool:
    """Whether the DiT's files are mostly fp32 (by bytes, read from the safetensors headers)."""
    from .fastload import FastLoadUnsupported, read_shard

    if not _is_folder_model(model_dir):
        return False
    files, problems = weight_files(model_dir / COMPONENT)
    if problems or not files:
        return False
    fp32 = total = 0
    try:
        for f in files:
            for t in read_shard(f).tensors:
                total += t.end - t.begin
                fp32 += (t.end - t.begin) if t.dtype == "float32" else 0
    except (OSError, ValueError, KeyError, FastLoadUnsupported):
        return False
    return total > 0 and fp32 * 2 > total


def _key(model_dir: Path, recorded_only: bool, on_bytes: Callable[[int], None] | None = None) -> str | None:
    from .quantize import source_key

    return source_key(model_dir, copy_root(model_dir) / RECORDS, on_bytes, components=(COMPONENT,),
                      recorded_only=recorded_only)


def damage(copy_dir: Path) -> str | None:
    """Why the copy in `copy_dir` cannot be used, or None. O(headers)."""
    try:
        done = json.loads((copy_dir / DONE).read_text())
        files = done["files"]
    except FileNotFoundError:
        return f"{DONE} missing (an unfinished copy)"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{DONE} unreadable ({e.__class__.__name__})"
    listed, problems = weight_files(copy_dir / COMPONENT)
    if problems:
        return f"{problems[0].path}: {problems[0].reason}"
    if sorted(p.name for p in listed) != sorted(n for n in files if n.endswith(".safetensors")):
        return "its files differ from those listed in " + DONE
    for name, size in files.items():
        path = copy_dir / COMPONENT / name
        if not path.is_file() or path.stat().st_size != size:
            return f"{name}: {path.stat().st_size if path.is_file() else 'no'} bytes on disk, {size} written"
        if name.endswith(".safetensors") and (why := safetensors_problem(path)):
            return f"{name}: {why}"
    return None


def usable_copy(model_dir: Path) -> Path | None:
    """The copy's folder (it holds transformer/) when a complete one for the current source files
    exists; found from the recorded hashes, without reading the sources. A damaged one is deleted
    (made again after this load)."""
    if not _is_folder_model(model_dir) or not copy_root(model_dir).is_dir():
        return None
    key = _key(model_dir, recorded_only=True)
    if key is None:
        return None
    copy_dir = copy_root(model_dir) / key
    if not copy_dir.is_dir():
        return None
    why = damage(copy_dir)
    if why is None:
        return copy_dir
    log.warning("the bf16 copy %s is damaged (%s): it is deleted and made again", copy_dir, why)
    shutil.rmtree(copy_dir, ignore_errors=True)
    return None


def select(model_dir: Path, dtype) -> Path | None:
    """Where a load at `dtype` reads the DiT from instead of the model's fp32 files, or None."""
    return usable_copy(model_dir) if is_bf16(dtype) else None


def wanted(model_dir: Path, dtype) -> bool:
    """Whether a load at `dtype` from these files should leave a bf16 copy behind."""
    return is_bf16(dtype) and fp32_on_disk(model_dir)


# ---- making the copy ----------------------------------------------------------------------------

def _out_bytes(spec) -> int:
    """A tensor's bytes in the copy (every floating tensor becomes bf16; the rest is kept)."""
    n = spec.end - spec.begin
    return n // {"float32": 2, "float64": 4}.get(spec.dtype, 1)


def _plan(files: list[Path]) -> list[list[tuple[Path, str]]]:
    """The copy's shards: (source file, tensor name) in source order, about SHARD_BYTES each."""
    from .fastload import read_shard

    shards, current, size = [], [], 0
    for f in files:
        for t in read_shard(f).tensors:
            out = _out_bytes(t)
            if current and size + out > SHARD_BYTES:
                shards.append(current)
                current, size = [], 0
            current.append((f, t.name))
            size += out
    if current:
        shards.append(current)
    return shards


def _bf16_bytes(files: list[Path]) -> int:
    from .fastload import read_shard

    return sum(_out_bytes(t) for f in files for t in read_shard(f).tensors)


def _clear_leftovers(root: Path) -> None:
    """Temporary folders of copies whose process died mid-write."""
    import psutil

    for tmp in root.glob(TMP_PREFIX + "*"):
        try:
            pid = int(tmp.name[len(TMP_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not psutil.pid_exists(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def _write(files: list[Path], src_dir: Path, out_dir: Path, key: str) -> dict[str, int]:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    out_dir.mkdir()
    shards = _plan(files)
    weight_map, written, total = {}, {}, 0
    opened = {}
    try:
        for i, part in enumerate(shards):
            name = f"{STEM}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            tensors = {}
            for f, tname in part:
                if f not in opened:
                    opened[f] = safe_open(str(f), framework="pt")
                t = opened[f].get_tensor(tname)
                # The loader casts every floating tensor to the load dtype (fastload.assign_weights).
                tensors[tname] = t.to(torch.bfloat16) if t.is_floating_point() else t
                weight_map[tname] = name
            save_file(tensors, str(out_dir / name), metadata={"format": "pt", "zimage_bf16_of": key})
            total += sum(t.numel() * t.element_size() for t in tensors.values())
            written[name] = (out_dir / name).stat().st_size
            del tensors
    finally:
        opened.clear()
    index = out_dir / f"{STEM}.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    written[index.name] = index.stat().st_size
    for cfg in sorted(src_dir.glob("*.json")):
        if not cfg.name.endswith(".index.json"):
            shutil.copy2(cfg, out_dir / cfg.name)
            written[cfg.name] = (out_dir / cfg.name).stat().st_size
    return written


def make_copy(model_dir: Path, on_bytes: Callable[[int], None] | None = None) -> Path | None:
    """Write the bf16 copy of the model's fp32 DiT (if not there yet); returns its folder, or None
    where it could not be written (full disk, read-only folder: said in the log, the model loads
    from its own files as before). Older copies under other keys are removed."""
    if not fp32_on_disk(model_dir):
        return None
    root = copy_root(model_dir)
    files, _ = weight_files(model_dir / COMPONENT)
    tmp = None
    try:
        root.mkdir(exist_ok=True)
        key = _key(model_dir, recorded_only=False, on_bytes=on_bytes)
        dest = root / key
        if dest.is_dir() and damage(dest) is None:
            return dest
        _clear_leftovers(root)
        need, free = _bf16_bytes(files), shutil.disk_usage(root).free
        if free < need + FREE_MARGIN_BYTES:
            log.warning("no bf16 copy of %s: %.1f GB needed, %.1f GB free in %s; loads keep reading the "
                        "fp32 files", model_dir, need / 1e9, free / 1e9, root)
            return None
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=root))
        written = _write(files, model_dir / COMPONENT, tmp / COMPONENT, key)
        (tmp / DONE).write_text(json.dumps({"source_key": key, "files": written}, indent=1))
        if dest.exists():                                    # a damaged one
            shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        tmp = None
        for old in root.iterdir():
            if old.is_dir() and old != dest and not old.name.startswith(TMP_PREFIX):
                shutil.rmtree(old, ignore_errors=True)
    except OSError as e:        # read-only folder, full disk mid-write, another process's rename won
        log.warning("bf16 copy of %s not written: %s", model_dir, e)
        return None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("bf16 copy of the transformer written: %s (%.1f GB)", dest, need / 1e9)
    return dest


def start_copy(model_dir: Path) -> threading.Thread:
    """make_copy on a daemon thread (one per model folder at a time); returns the thread."""
    key = Path(model_dir).resolve()
    with _running_lock:
        running = _running.get(key)
        if running is not None and running.is_alive():
            return running

        def run() -> None:
            _lower_priority()
            try:
                make_copy(model_dir)
            except Exception:                       # a bug here must never take the model down
                log.exception("making the bf16 copy of %s failed", model_dir)

        thread = threading.Thread(target=run, name="zimage-bf16-copy", daemon=True)
        _running[key] = thread
        thread.start()
    return thread


def wait_for_copy(model_dir: Path, timeout_s: float | None = None) -> bool:
    """Wait for this process's background copy of `model_dir` (tests, benchmarks); True when none runs."""
    with _running_lock:
        thread = _running.get(Path(model_dir).resolve())
    if thread is not None:
        thread.join(timeout_s)
    return thread is None or not thread.is_alive()


def _lower_priority() -> None:
    """Nice this thread (Linux: a thread is a task), so a generation's Python side wins the CPU."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (OSError, AttributeError) as e:
        log.debug("bf16 copy keeps its priority: %s", e)
