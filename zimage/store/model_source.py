"""What `--model` names, made concrete before a byte of weights is read: a diffusers folder or a
ModelScope id (store/hub.py, as before), or a DiT file (.safetensors in ComfyUI's layout, bf16 or
fp8, or .gguf) with its text encoder and VAE and a `companion`: a diffusers Z-Image folder whose
small files (model_index, component configs, tokenizer, scheduler) diffusers is given, so nothing is
looked up on the network. The text encoder and VAE are, in this order: named by --text-encoder and
--vae; beside the DiT in its app's tree (ComfyUI's models/text_encoders and models/vae, A1111/Forge's
models/text_encoder and models/VAE); found under --models-from; the companion's own weights. The
companion is a complete-enough Z-Image folder already on disk (--models-from, the ModelScope
cache), else its small files (a few MB, no weights) are downloaded once into the cache.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ModelFileUnsupported, ModelPartMissing, ModelUnavailable
from .cache import candidate_dirs, modelscope_cache_base, weight_files
from .model_files import (BASE_ID, DIT_SUFFIXES, PART_SUFFIXES, TURBO_ID, Catalog, FileInfo, PartFile, discover,
                          is_pipeline_folder, kind_of, model_files, read_info)

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
# Beside a DiT: its folder's name -> the sibling folders its app keeps the other parts in.
SIBLINGS = {"diffusion_models": (("text_encoders", "clip"), ("vae",)), "unet": (("text_encoders", "clip"), ("vae",)),
            "checkpoints": (("text_encoders", "clip"), ("vae",)),
            "Stable-diffusion": (("text_encoder", "Text-encoder"), ("VAE",)), "UNET": (("Text-encoder",), ("VAE",))}
SMALL_FILE_SUFFIXES = (".json", ".txt", ".jinja", ".model", ".tiktoken")


@dataclass(frozen=True)
class ModelParts:
    """Where the files come from and what they are; Path-like enough for logs (str())."""
    dit: Path
    format: str                    # safetensors | gguf
    precision: str
    kind: str                      # turbo | base
    text_encoder: Path             # a file, or a transformers folder (config.json + weights)
    vae: Path                      # a file, or a diffusers folder
    companion: Path                # a diffusers Z-Image folder: configs, tokenizer, scheduler

    @property
    def name(self) -> str:
        return self.dit.stem

    def weight_paths(self) -> list[Path]:
        out = [self.dit]
        for part in (self.text_encoder, self.vae):
            out += [part] if part.is_file() else weight_files(part)[0]
        return out

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.weight_paths())

    def __str__(self) -> str:
        return str(self.dit)


@dataclass(frozen=True)
class ModelOptions:
    text_encoder: str = ""
    vae: str = ""
    models_from: tuple[str, ...] = ()


def is_model_file(model: str) -> bool:
    path = Path(model).expanduser()
    return path.suffix.lower() in DIT_SUFFIXES + PICKLE_SUFFIXES or path.is_file()


def _check_dit(path: Path) -> FileInfo:
    if not path.is_file():
        raise ModelUnavailable(f"Model file not found: {path}", "Check --model (a .safetensors or .gguf file).")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelFileUnsupported(f"{path.name} is a pickle file, which can run code when loaded: it is never loaded.",
                                   "Use the .safetensors or .gguf version of the model.", file=str(path))
    info = read_info(path)
    if info.role != "dit":
        what = {"text_encoder": "a text encoder", "vae": "a VAE"}.get(info.role, "not a Z-Image DiT")
        raise ModelFileUnsupported(f"{path.name} is {what}, not a Z-Image diffusion model (DiT).",
                                   "Point --model at the Z-Image DiT file (e.g. ComfyUI's "
                                   "models/diffusion_models/z_image_turbo_bf16.safetensors).", file=str(path))
    return info


def _fits(role: str, dit: FileInfo, info: FileInfo) -> bool:
    if info.role != role:
        return False
    return info.width == dit.width if role == "text_encoder" else info.latent_channels == dit.latent_channels


def _pick(candidates: list[PartFile], role: str, dit: FileInfo) -> Path | None:
    """A fitting file; full precision before fp8, then by name."""
    fitting = [c for c in candidates if _fits(role, dit, c.info)]
    fitting.sort(key=lambda c: (c.info.precision == "fp8", c.path.name))
    return fitting[0].path if fitting else None


def _named_part(flag: str, value: str, role: str, dit: FileInfo) -> Path:
    """--text-encoder / --vae: a file that fits the DiT, or a folder with config.json (or one fitting file)."""
    path = Path(value).expanduser().resolve()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    if path.is_dir():
        found = _pick([PartFile(p, read_info(p)) for p in model_files(path, PART_SUFFIXES)], role, dit)
        if found is None:
            raise ModelPartMissing(f"{flag} {path} holds no {role.replace('_', ' ')} file that fits this model.",
                                   f"Name the file itself with {flag}.", part=role)
        return found
    if not path.is_file():
        raise ModelPartMissing(f"{flag} {path} does not exist.", f"Check {flag}.", part=role)
    info = read_info(path)
    if info.role != role:
        raise ModelFileUnsupported(f"{flag} {path.name} is not a {role.replace('_', ' ')} for Z-Image.",
                                   f"Check {flag}.", file=str(path))
    if not _fits(role, dit, info):
        have, need = (info.width, dit.width) if role == "text_encoder" else (info.latent_channels, dit.latent_channels)
        raise ModelFileUnsupported(f"{flag} {path.name} does not fit this model ({have} wide, the DiT needs {need}).",
                                   f"Check {flag}.", file=str(path))
    return path


def _beside(dit_path: Path, role: str) -> list[PartFile]:
    siblings = SIBLINGS.get(dit_path.parent.name)
    folders = [dit_path.parent]
    if siblings is not None:
        folders += [dit_path.parent.parent / name for name in siblings[0 if role == "text_encoder" else 1]]
    return [PartFile(p, read_info(p)) for folder in folders if folder.is_dir()
            for p in model_files(folder, PART_SUFFIXES) if p != dit_path]


def _has_weights(folder: Path) -> bool:
    files, problems = weight_files(folder) if folder.is_dir() else ([], [None])
    return bool(files) and not problems


def _small_files_ready(folder: Path) -> bool:
    return is_pipeline_folder(folder) and (folder / "tokenizer").is_dir() and all(
        (folder / c / "config.json").is_file() for c in ("transformer", "vae", "text_encoder"))


def find_companion(kind: str, catalog: Catalog, cache_dir: str,
                   download_small: Callable[[str], Path] | None = None) -> Path:
    """A diffusers Z-Image folder of this kind (any kind when none of it is on disk) for configs and
    tokenizer; downloaded as small files only when none is on disk."""
    model_id = BASE_ID if kind == "base" else TURBO_ID
    base = modelscope_cache_base(cache_dir)
    on_disk = [f for f in catalog.pipelines if _small_files_ready(f)]
    on_disk += [f for mid in (model_id, TURBO_ID, BASE_ID) for f in candidate_dirs(mid, base) if _small_files_ready(f)]
    same_kind = [f for f in on_disk if kind_of(str(f)) == kind]
    if same_kind or on_disk:
        return (same_kind or on_disk)[0]
    if download_small is None:
        raise ModelPartMissing(f"No Z-Image configs and tokenizer on this computer for {model_id}.",
                               "Connect once to the internet (a few MB are downloaded), or add a folder "
                               "holding the diffusers model with --models-from.", part="tokenizer")
    return download_small(model_id)


def download_small_files(model_id: str, cache_dir: str, cancel: threading.Event | None = None) -> Path:
    """The repo's configs, tokenizer and scheduler (no weights) into the ModelScope cache."""
    from .hub import download, list_remote

    small = [f["Path"] for f in list_remote(model_id) if f["Path"].endswith(SMALL_FILE_SUFFIXES)]
    log.info("downloading %d small files of %s (configs, tokenizer)", len(small), model_id)
    return download(model_id, cache_dir, only=small, cancel=cancel)


def resolve_parts(model: str, options: ModelOptions, cache_dir: str = "",
                  catalog: Catalog | None = None, cancel: threading.Event | None = None) -> ModelParts:
    """The DiT file and everything it needs, or a typed error saying what is missing and why."""
    dit_path = Path(model).expanduser().resolve()
    dit = _check_dit(dit_path)
    catalog = catalog if catalog is not None else discover(options.models_from)
    kind = kind_of(dit_path.stem)
    companion = find_companion(kind, catalog, cache_dir, lambda mid: download_small_files(mid, cache_dir, cancel))
    parts = {}
    for role, flag, value, found in (("text_encoder", "--text-encoder", options.text_encoder, catalog.text_encoders),
                                     ("vae", "--vae", options.vae, catalog.vaes)):
        if value:
            parts[role] = _named_part(flag, value, role, dit)
            continue
        picked = _pick(_beside(dit_path, role), role, dit) or _pick(found, role, dit)
        if picked is None and _has_weights(companion / role):
            picked = companion / role
        if picked is None:
            where = "models/text_encoders" if role == "text_encoder" else "models/vae"
            raise ModelPartMissing(
                f"No {role.replace('_', ' ')} found for {dit_path.name} ({dit.width if role == 'text_encoder' else dit.latent_channels} wide).",
                f"Put it in {where} beside the model, name it with {flag} FILE, or add its app's folder with --models-from.",
                part=role)
        parts[role] = picked
    fmt = "gguf" if dit_path.suffix.lower() == ".gguf" else "safetensors"
    log.info("%s: text encoder %s, VAE %s, configs from %s", dit_path.name, parts["text_encoder"], parts["vae"], companion)
    return ModelParts(dit_path, fmt, dit.precision, kind, parts["text_encoder"], parts["vae"], companion)


def make_resolver(options: ModelOptions):
    """The manager's resolver: a DiT file becomes ModelParts, anything else goes to store.hub as before."""
    from .hub import resolve_model_dir

    def resolve(model: str, cache_dir: str = "", on_progress=None, on_download_start=None,
                cancel: threading.Event | None = None):
        if is_model_file(model):
            return resolve_parts(model, options, cache_dir, cancel=cancel)
        return resolve_model_dir(model, cache_dir, on_progress=on_progress, on_download_start=on_download_start,
                                 cancel=cancel)
    return resolve
