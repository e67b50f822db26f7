"""Which Z-Image files a folder holds: DiTs (single .safetensors in ComfyUI's or diffusers' layout,
bf16 or fp8, or .gguf), Qwen3 text encoders, VAEs and diffusers pipeline folders, told apart by
their headers alone (never the weights, never torch). `discover(roots)` lists what a picker shows:
name, kind (Turbo or base), format, size and path.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LoraUnreadable
from .loras import read_header
from .model_roots import RootFolders, folders_of

log = logging.getLogger(__name__)

DIT_SUFFIXES = (".safetensors", ".sft", ".gguf")
PART_SUFFIXES = (".safetensors", ".sft")
PIPELINE_CLASS = "ZImagePipeline"
MAX_FILES_PER_FOLDER = 5000          # a walk stops here: a models folder, not a disk
MAX_PIPELINE_DEPTH = 4               # hub cache: models--o--n/snapshots/<rev>/model_index.json
COMFY_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
FP8_DTYPES = ("F8_E4M3", "F8_E5M2", "F8_E4M3FN")
# Tongyi-MAI's ids: the kind decides which repo's small files (configs, tokenizer) a single file uses.
TURBO_ID = "Tongyi-MAI/Z-Image-Turbo"
BASE_ID = "Tongyi-MAI/Z-Image"


def kind_of(name: str) -> str:
    """turbo or base from a file, folder or repo name: "turbo" anywhere is Turbo; a Z-Image name
    without it (z_image_bf16, Tongyi-MAI/Z-Image, models--Tongyi-MAI--Z-Image) is the base model;
    anything else is taken for Turbo, the model most files are."""
    low = name.lower()
    if "turbo" in low:
        return "turbo"
    if re.search(r"z[-_ ]?image", low) or "base" in low.split("/")[-1]:
        return "base"
    return "turbo"


@dataclass(frozen=True)
class FileInfo:
    """What a header says: role dit | text_encoder | vae (or "" for none of ours), and the widths
    that must agree between parts: a DiT's caption width equals its text encoder's hidden size, its
    latent channels the VAE's."""
    role: str
    precision: str = ""           # bf16, fp16, fp32, fp8, or a GGUF type (Q8_0, Q4_K, ...)
    width: int = 0                # dit: caption width; text_encoder: hidden size
    latent_channels: int = 0      # dit and vae


def _dtype_name(dtypes: list[str]) -> str:
    if any(d in FP8_DTYPES for d in dtypes):
        return "fp8"
    common = max(set(dtypes), key=dtypes.count) if dtypes else ""
    return {"BF16": "bf16", "F16": "fp16", "F32": "fp32"}.get(common, common.lower())


def _strip_prefix(key: str) -> str:
    for prefix in COMFY_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def _classify(shapes: dict[str, list[int]], precision: str) -> FileInfo:
    keys = {_strip_prefix(k): v for k, v in shapes.items()}
    if "cap_embedder.0.weight" in keys and any(k.startswith(("noise_refiner.", "context_refiner.")) for k in keys) \
            and not any(k.startswith("control_") for k in keys):
        x = keys.get("x_embedder.weight") or keys.get("all_x_embedder.2-1.weight") or [0, 0]
        return FileInfo("dit", precision, width=keys["cap_embedder.0.weight"][0], latent_channels=x[-1] // 4)
    for prefix in ("model.", ""):
        if f"{prefix}layers.0.self_attn.q_norm.weight" in keys and f"{prefix}embed_tokens.weight" in keys:
            return FileInfo("text_encoder", precision, width=keys[f"{prefix}embed_tokens.weight"][-1])
    for prefix in ("", "first_stage_model.", "vae."):
        conv = keys.get(f"{prefix}decoder.conv_in.weight")
        if conv is not None and f"{prefix}encoder.conv_in.weight" in keys and len(conv) == 4:
            return FileInfo("vae", precision, latent_channels=conv[1])
    return FileInfo("")


def read_info(path: Path) -> FileInfo:
    """The file's role and widths from its header; FileInfo("") for a file that is none of ours
    or cannot be read (listing never fails on someone else's file)."""
    try:
        if path.suffix == ".gguf":
            return _gguf_info(path)
        _, header = read_header(path)
    except (OSError, LoraUnreadable, ValueError) as e:
        log.debug("%s is not a readable model file (%s)", path, e)
        return FileInfo("")
    shapes = {k: v.get("shape", []) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    dtypes = [v.get("dtype", "") for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
              and len(v.get("shape", [])) >= 2]
    return _classify(shapes, _dtype_name(dtypes))


def _gguf_info(path: Path) -> FileInfo:
    """GGUF through the gguf package's reader (a memory map of the header; numpy, no torch)."""
    from gguf import GGMLQuantizationType, GGUFReader

    reader = GGUFReader(str(path))
    shapes = {t.name: [int(n) for n in reversed(t.shape.tolist())] for t in reader.tensors}
    quant = [t.tensor_type.name for t in reader.tensors
             if t.tensor_type not in (GGMLQuantizationType.F32, GGMLQuantizationType.F16)]
    precision = max(set(quant), key=quant.count) if quant else "fp32"
    return _classify(shapes, precision)


@dataclass(frozen=True)
class FoundModel:
    """One Z-Image model a picker can list (--model takes its path)."""
    name: str
    kind: str                     # turbo | base
    format: str                   # diffusers | safetensors | gguf
    precision: str
    size_bytes: int
    path: Path
    root: str = ""                # the --models-from folder it was found under

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "format": self.format, "precision": self.precision,
                "size_bytes": self.size_bytes, "path": str(self.path), "root": self.root}


@dataclass(frozen=True)
class PartFile:
    path: Path
    info: FileInfo


@dataclass
class Catalog:
    models: list[FoundModel] = field(default_factory=list)
    text_encoders: list[PartFile] = field(default_factory=list)
    vaes: list[PartFile] = field(default_factory=list)
    lora_dirs: list[Path] = field(default_factory=list)
    pipelines: list[Path] = field(default_factory=list)    # diffusers Z-Image folders


def model_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Files with these suffixes under `folder` (subfolders too, as ComfyUI lists them; links
    followed once; hidden entries skipped), at most MAX_FILES_PER_FOLDER."""
    out, seen = [], set()
    for top, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(top) / f for f in sorted(files) if f.lower().endswith(suffixes) and not f.startswith(".")]
        if len(out) >= MAX_FILES_PER_FOLDER:
            log.warning("%s holds more than %d model files: the rest are not listed", folder, MAX_FILES_PER_FOLDER)
            return out[:MAX_FILES_PER_FOLDER]
    return out


def is_pipeline_folder(folder: Path) -> bool:
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(index, dict) and index.get("_class_name") == PIPELINE_CLASS


def pipeline_folders(folder: Path, depth: int = MAX_PIPELINE_DEPTH) -> list[Path]:
    """Diffusers Z-Image folders at or under `folder` (a cache's snapshots, SD.Next's Diffusers)."""
    if is_pipeline_folder(folder):
        return [folder]
    if depth == 0:
        return []
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    return [found for child in children for found in pipeline_folders(child, depth - 1)]


def _pipeline_name(folder: Path) -> str:
    """models--Tongyi-MAI--Z-Image-Turbo/snapshots/<rev> -> Tongyi-MAI/Z-Image-Turbo; else the folder's name."""
    for part in reversed(folder.parts):
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
    if folder.parent.name == "snapshots":
        return folder.parent.parent.name.replace("--", "/")
    return folder.name


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def catalog_of(found: RootFolders, catalog: Catalog) -> None:
    for folder in found.dits:
        for path in model_files(folder, DIT_SUFFIXES):
            info = read_info(path)
            if info.role == "dit":
                catalog.models.append(FoundModel(path.stem, kind_of(path.stem), path.suffix.lstrip(".").replace(
                    "sft", "safetensors"), info.precision, path.stat().st_size, path, str(found.root)))
    for folder in found.text_encoders + found.vaes:
        for path in model_files(folder, PART_SUFFIXES):
            info = read_info(path)
            parts = catalog.text_encoders if info.role == "text_encoder" else catalog.vaes if info.role == "vae" else None
            if parts is not None and all(p.path != path for p in parts):
                parts.append(PartFile(path, info))
    for folder in found.pipelines:
        for pipe in pipeline_folders(folder):
            if pipe not in catalog.pipelines:
                catalog.pipelines.append(pipe)
                name = _pipeline_name(pipe)
                catalog.models.append(FoundModel(name, kind_of(name), "diffusers", "", folder_bytes(pipe), pipe,
                                                 str(found.root)))
    catalog.lora_dirs += [d for d in found.loras if d not in catalog.lora_dirs]


def discover(roots: list[str] | tuple[str, ...]) -> Catalog:
    """Everything Z-Image under the --models-from roots. Reads headers only; writes nothing."""
    catalog = Catalog()
    for root in roots:
        catalog_of(folders_of(Path(root)), catalog)
    return catalog
