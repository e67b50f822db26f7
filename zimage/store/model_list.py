"""The Z-Image models a picker offers: the configured one (--model), the ModelScope cache's and what
--models-from roots hold (model_files.discover), each once, under a unique name, with A1111's fields
(`/sdapi/v1/sd-models`). Reads headers and small files only; writes nothing beside a model.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .cache import candidate_dirs, modelscope_cache_base, scan_cache
from .model_files import FoundModel, discover, is_pipeline_folder, kind_of, read_info
from .model_hash import sha256_listing, short
from .model_roots import ModelRootError, unique_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListedModel:
    name: str                     # unique in the list: what `model` and `sd_model_checkpoint` take
    kind: str                     # turbo | base
    format: str                   # diffusers | safetensors | gguf
    precision: str
    size_bytes: int
    source: str                   # what --model is given to load it: a path, or a ModelScope id
    sha256: str = ""              # "" until a big file has been hashed (model_hash.hash_later)

    @property
    def hash(self) -> str:
        return short(self.sha256)

    @property
    def title(self) -> str:
        """A1111's title: the name, and its short hash in brackets once known."""
        return f"{self.name} [{self.hash}]" if self.hash else self.name

    def a1111(self) -> dict:
        return {"title": self.title, "model_name": self.name, "hash": self.hash or None,
                "sha256": self.sha256 or None, "filename": self.source, "config": None}

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "kind": self.kind, "format": self.format,
                "precision": self.precision, "size_bytes": self.size_bytes, "source": self.source,
                "hash": self.hash or None}


def _same(a: str, b: str) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, ValueError):      # ValueError: a NUL byte, or a lone surrogate no file name can hold
        return a == b


def _configured(model: str, cache_base: Path) -> FoundModel:
    """--model as a listing entry: a file, a folder, or a ModelScope id (its cached folder, if any)."""
    path = Path(model).expanduser()
    if path.is_file():
        info = read_info(path)
        fmt = "gguf" if path.suffix.lower() == ".gguf" else "safetensors"
        return FoundModel(path.stem, kind_of(path.stem), fmt, info.precision, path.stat().st_size, path.resolve())
    if path.is_dir():
        return FoundModel(path.name, kind_of(path.name), "diffusers", "", _bytes(path), path.resolve())
    name = model.rstrip("/").split("/")[-1]
    folder = next((d for d in candidate_dirs(model, cache_base) if is_pipeline_folder(d)), None)
    return FoundModel(name, kind_of(model), "diffusers", "", _bytes(folder) if folder else 0, folder or Path(model))


def hash_dir_of(outputs_dir: str | Path) -> Path:
    """Where model hashes are kept: the app's own `<outputs>/.index/`, never a model's folder."""
    return Path(outputs_dir).expanduser() / ".index"


def name_and_path(model: str, cache_dir: str) -> tuple[str, Path]:
    """--model's name as the list gives it first (the configured entry) and the file or folder it is."""
    path = Path(model).expanduser()
    if path.is_file():
        return path.stem, path.resolve()
    if path.is_dir():
        return path.name, path.resolve()
    folder = next((d for d in candidate_dirs(model, modelscope_cache_base(cache_dir)) if is_pipeline_folder(d)), None)
    return model.rstrip("/").split("/")[-1], folder or path


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def list_models(model: str, cache_dir: str, roots: tuple[str, ...] | list[str], hash_dir: Path) -> list[ListedModel]:
    """The configured model first, then the cache's, then the roots'; one entry per file or folder."""
    cache_base = modelscope_cache_base(cache_dir)
    found: list[tuple[FoundModel, str]] = [(_configured(model, cache_base), model)]
    for cached in scan_cache(cache_base) if cache_base.is_dir() else []:
        if cached.status == "complete" and is_pipeline_folder(cached.folder):
            name = cached.model_id.split("/")[-1]
            found.append((FoundModel(name, kind_of(cached.model_id), "diffusers", "", cached.size_bytes,
                                     cached.folder), str(cached.folder)))
    for root in roots:
        try:
            catalog = discover([root])
        except ModelRootError as e:
            log.warning("--models-from %s", e)
            continue
        found += [(m, str(m.path)) for m in catalog.models]
    out: list[ListedModel] = []
    taken: set[str] = set()
    seen: list[str] = []
    for m, source in found:
        where = str(m.path)
        if any(_same(where, s) for s in seen):
            continue
        seen.append(where)
        digest = sha256_listing(m.path, hash_dir) if m.path.exists() else ""
        out.append(ListedModel(unique_name(m.name, taken), m.kind, m.format, m.precision, m.size_bytes, source, digest))
    return out


def find_model(models: list[ListedModel], wanted: str) -> ListedModel | None:
    """By name, title, the name before its " [hash]", the file's name or its path (A1111's
    checkpoint lookup takes a title or a name); case-insensitive."""
    low = wanted.strip().lower()
    bare = low.rsplit(" [", 1)[0] if low.endswith("]") else low
    for m in models:
        if low in (m.name.lower(), m.title.lower()) or bare == m.name.lower():
            return m
    for m in models:
        if low == Path(m.source).name.lower() or _same(wanted, m.source):
            return m
    return None
