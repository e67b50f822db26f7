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


@dataclass(frozen=True)
class Problem:
    path: str       # relative to the model folder
    reason: str


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
        if not files:
            problems.append(Problem(component_dir.name, "no .safetensors weights"))
    for f in files:
        if not f.exists():
            problems.append(Problem(f"{component_dir.name}/{f.name}", "missing"))
    return [f for f in files if f.exists()], problems


def quick_check(model_dir: Path) -> list[Problem]:
    """Problems that would make loading fail; empty when the folder looks complete."""
    index_path = model_dir / MODEL_INDEX
    try:
        index = json.loads(index_path.read_text())
    except FileNotFoundError:
        return [Problem(MODEL_INDEX, "missing")]
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
            problems.append(Problem(name, "missing folder"))
            continue
        if name in ("tokenizer", "scheduler"):
            continue
        files, missing = weight_files(component)
        problems += missing
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
