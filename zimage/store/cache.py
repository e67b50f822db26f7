"""Where a model lives on disk and whether a local copy is complete (a quick check, no hashing).

The quick check reads only model_index.json, the shard indexes and each safetensors header: a
truncated shard is caught because its header's largest data offset no longer matches the file size.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

MODEL_INDEX = "model_index.json"
MAX_HEADER_BYTES = 100 * 2**20
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class Problem:
    path: str       # relative to the model folder
    reason: str
    kind: str = "corrupt"    # "missing" (a download can fill it in) or "corrupt" (needs a repair)

    @property
    def missing(self) -> bool:
        return self.kind == "missing"


def missing(path: str, reason: str = "missing") -> Problem:
    return Problem(path, reason, kind="missing")


def modelscope_cache_base(cache_dir: str = "") -> Path:
    """The cache root modelscope itself would use: --cache-dir, else MODELSCOPE_CACHE, else its default."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("MODELSCOPE_CACHE") or "~/.cache/modelscope").expanduser()


def candidate_dirs(model_id: str, base: Path) -> list[Path]:
    """Every layout modelscope has used for this id, newest first (existing downloads are reused)."""
    owner, _, name = model_id.partition("/")
    legacy_name = name.replace(".", "___")
    candidates = []
    snapshots = base / "models" / f"{owner}--{name}" / "snapshots"
    if snapshots.is_dir():
        candidates += sorted((p for p in snapshots.iterdir() if p.is_dir()),
                             key=lambda p: p.stat().st_mtime, reverse=True)
    candidates += [base / "models" / owner / legacy_name, base / "hub" / "models" / owner / legacy_name,
                   base / "hub" / owner / name]    # the seed article's ~/.cache/modelscope/hub/Tongyi-MAI/...
    return candidates


def safetensors_problem(path: Path) -> str | None:
    """Return why a safetensors file is unusable, or None. O(header), not O(file)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                return "file too short"
            header_len = struct.unpack("<Q", raw)[0]
            if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                return "header damaged or file truncated"
            header = json.loads(fh.read(header_len))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return f"unreadable header ({e.__class__.__name__})"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    expected = 8 + header_len + (max(ends) if ends else 0)
    if expected != size:
        return f"truncated or padded: {size} bytes on disk, header says {expected}"
    return None


def weight_files(component_dir: Path) -> tuple[list[Path], list[Problem]]:
    """The safetensors files a component needs (from its index when sharded) and what is missing."""
    problems: list[Problem] = []
    indexes = sorted(component_dir.glob("*.safetensors.index.json"))
    if indexes:
        try:
            weight_map = json.loads(indexes[0].read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as e:
            rel = f"{component_dir.name}/{indexes[0].name}"
            return [], [Problem(rel, f"shard index unreadable ({e.__class__.__name__})")]
        files = [component_dir / f for f in sorted(set(weight_map.values()))]
    else:
        files = sorted(component_dir.glob("*.safetensors"))
        pickles = sorted(p.name for ext in PICKLE_SUFFIXES for p in component_dir.glob(f"*{ext}"))
        if not files and pickles:
            problems.append(Problem(f"{component_dir.name}/{pickles[0]}",
                                    "pickle weights are never loaded (they can run code): use .safetensors"))
        elif not files:
            problems.append(missing(component_dir.name, "no .safetensors weights"))
    for f in files:
        if not f.exists():
            problems.append(missing(f"{component_dir.name}/{f.name}"))
    return [f for f in files if f.exists()], problems


def single_file_weights(model_dir: Path) -> list[Path]:
    """The safetensors files at the top of a folder without model_index.json: a one-file model such
    as the Z-Image ControlNet (ComfyUI's and VideoX-Fun's layout, no diffusers config)."""
    if not model_dir.is_dir() or (model_dir / MODEL_INDEX).exists():
        return []
    return sorted(p for p in model_dir.glob("*.safetensors") if p.is_file())


def quick_check(model_dir: Path) -> list[Problem]:
    """Problems that would make loading fail; empty when the folder looks complete."""
    index_path = model_dir / MODEL_INDEX
    try:
        index = json.loads(index_path.read_text())
    except FileNotFoundError:
        singles = single_file_weights(model_dir)
        if singles:                  # a one-file repo (the ControlNet): its files' headers are the check
            return [Problem(f.name, reason) for f in singles if (reason := safetensors_problem(f))]
        return [missing(MODEL_INDEX)]
    except (OSError, ValueError) as e:
        return [Problem(MODEL_INDEX, f"unreadable ({e.__class__.__name__})")]
    if not isinstance(index, dict):
        return [Problem(MODEL_INDEX, "not a JSON object")]
    problems: list[Problem] = []
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list):
            continue
        component = model_dir / name
        if not component.is_dir():
            problems.append(missing(name, "missing folder"))
            continue
        if name in ("tokenizer", "scheduler"):
            continue
        files, absent = weight_files(component)
        problems += absent
        for f in files:
            reason = safetensors_problem(f)
            if reason:
                problems.append(Problem(f"{name}/{f.name}", reason))
    return problems


def find_complete_copy(model_id: str, base: Path) -> Path | None:
    for candidate in candidate_dirs(model_id, base):
        if (candidate / MODEL_INDEX).exists() and not quick_check(candidate):
            return candidate
    return None


# ---- what is in the cache, and removing it ------------------------------------------------------

@dataclass(frozen=True)
class CachedModel:
    model_id: str
    folder: Path                 # the snapshot folder diffusers loads
    layout: str                  # "modelscope" (models/o--n/snapshots/rev) | "legacy" | "seed"
    root: Path                   # what Delete removes
    size_bytes: int
    status: str                  # complete | incomplete | corrupt
    problems: tuple[Problem, ...] = ()


def folder_bytes(folder: Path) -> int:
    total = 0
    for p in folder.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            continue
    return total


def classify(folder: Path, extra: list[Problem] | None = None) -> tuple[str, tuple[Problem, ...]]:
    problems = quick_check(folder) + list(extra or [])
    partial = any(folder.rglob("*.incomplete"))
    if any(not p.missing for p in problems):
        return "corrupt", tuple(problems)
    if problems or partial:
        return "incomplete", tuple(problems)
    return "complete", ()


def _legacy_id(owner: str, name: str) -> str:
    return f"{owner}/{name.replace('___', '.')}"


def _model_folders(base: Path) -> list[tuple[str, Path, str, Path]]:
    """(model_id, folder, layout, root) for every model-looking folder under the cache root."""
    found = []
    models = base / "models"
    if models.is_dir():
        for repo in sorted(p for p in models.iterdir() if p.is_dir()):
            if "--" in repo.name:
                owner, _, name = repo.name.partition("--")
                for snap in sorted(p for p in (repo / "snapshots").glob("*") if p.is_dir()):
                    found.append((f"{owner}/{name}", snap, "modelscope", repo))
            else:
                for sub in sorted(p for p in repo.iterdir() if p.is_dir()):
                    found.append((_legacy_id(repo.name, sub.name), sub, "legacy", sub))
    for owner_dir, layout in ((base / "hub" / "models", "legacy"), (base / "hub", "seed")):
        if not owner_dir.is_dir():
            continue
        for owner in sorted(p for p in owner_dir.iterdir() if p.is_dir() and p.name != "models"):
            for sub in sorted(p for p in owner.iterdir() if p.is_dir()):
                found.append((_legacy_id(owner.name, sub.name), sub, layout, sub))
    # Only folders that are (or are becoming) a diffusers pipeline.
    return [f for f in found if (f[1] / MODEL_INDEX).exists() or any(f[1].iterdir())]


def scan_cache(base: Path) -> list[CachedModel]:
    out = []
    for model_id, folder, layout, root in _model_folders(base):
        status, problems = classify(folder)
        out.append(CachedModel(model_id, folder, layout, root, folder_bytes(root), status, problems))
    return out


class UnsafeDelete(ValueError):
    """Refused: the path is not a model folder inside the cache."""


def delete_cached(base: Path, model: CachedModel) -> int:
    """Remove one model's folder; returns the bytes freed. Never touches anything outside `base`."""
    import shutil

    base_r = base.resolve()
    root_r = model.root.resolve()
    if root_r == base_r or not root_r.is_relative_to(base_r) or model.root.is_symlink():
        raise UnsafeDelete(f"{model.root} is not a model folder inside the cache {base}")
    if root_r not in {m.root.resolve() for m in scan_cache(base)}:
        raise UnsafeDelete(f"{model.root} is not a model in the cache {base}")
    freed = folder_bytes(root_r)
    shutil.rmtree(root_r)
    return freed


# Caches the app derives from a model; safe to delete, made again when needed.
# The first two live in each model's folder (engine/quantize.py, engine/bf16_copy.py), the last beside them.
MODEL_DERIVED = ((".zimage-quant", "int8 copy (--quantize)"), (".zimage-bf16", "bf16 copy of the fp32 transformer"))
DERIVED = (*MODEL_DERIVED, (".zimage-compile", "compiled kernels (--compile)"))


def derived_caches(base: Path, models: list[CachedModel]) -> list[tuple[str, Path, int]]:
    """(what, folder, bytes) for each derived cache: a model's int8 and bf16 copies, the compile cache."""
    compiled = DERIVED[-1]
    found = [(f"{what} of {m.model_id}", m.folder / sub) for m in models for sub, what in MODEL_DERIVED]
    found.append((compiled[1], base / compiled[0]))
    return [(what, path, folder_bytes(path)) for what, path in found if path.is_dir() and not path.is_symlink()]
