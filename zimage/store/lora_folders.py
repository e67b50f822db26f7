"""LoRAs from several folders: ours (--lora-dir) first, then the LoRA folders of the --models-from
roots (ComfyUI's models/loras, A1111's models/Lora and LyCORIS). Each file is listed once under a
unique name: a name already taken by an earlier folder gets " (2)", " (3)", ... as A1111 does for
a clash between its LoRA folders it keeps only the first, which hid the others. Nothing is written
in another app's folder.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import LoraNotFound
from .loras import LoraFile, a1111_list, resolve, scan
from .model_roots import ModelRootError, folders_of, unique_name

log = logging.getLogger(__name__)


def lora_folders(settings) -> list[Path]:
    """Ours first, then each --models-from root's LoRA folders (folder names only: cheap)."""
    out = [Path(settings.lora_folder)]
    for root in settings.models_from:
        try:
            out += [d for d in folders_of(Path(root)).loras if d not in out]
        except ModelRootError as e:
            log.warning("--models-from %s", e)
    return out


def listing(folders: list[Path], hashes: dict | None = None, hash_files: bool = True,
            described: dict | None = None) -> list[tuple[LoraFile, Path]]:
    """(file under its unique name, its folder) for every folder, earlier folders' names first."""
    out, taken = [], set()
    for folder in folders:
        for f in scan(folder, hashes, hash_files, described):
            out.append((f if f.name.lower() not in taken else _with_name(f, unique_name(f.name, taken)), folder))
            taken.add(f.name.lower())
    return out


def _with_name(f: LoraFile, name: str) -> LoraFile:
    from dataclasses import replace

    return replace(f, name=name)


def a1111_list_all(folders: list[Path], hashes: dict | None = None, hash_files: bool = True,
                   described: dict | None = None) -> list[dict]:
    """`GET /sdapi/v1/loras` over every folder (store.loras.a1111_list's entries)."""
    if len(folders) == 1:
        return a1111_list(folders[0], hashes, hash_files, described)
    out = []
    for f, _ in sorted(listing(folders, hashes, hash_files, described), key=lambda e: e[0].name.lower()):
        metadata = f.metadata if f.usable else {}
        out.append({"name": f.name, "alias": f.name, "path": str(f.path), "metadata": metadata, **f.to_dict()})
    return out


def resolve_any(folders: list[Path], name: str) -> Path:
    """The file a tag's NAME means: the first folder that has it (store.loras.resolve's checks in
    each); a renamed clash ("name (2)") is found through the listing."""
    for folder in folders:
        try:
            return resolve(folder, name)
        except LoraNotFound:
            continue
    if len(folders) > 1:
        wanted = name.strip().removesuffix(".safetensors").lower()
        for f, _ in listing(folders, hash_files=False):
            if f.name.lower() == wanted:
                return f.path
    raise LoraNotFound(name)
