"""Where other apps keep their models: the folders of a ComfyUI root (and its extra_model_paths.yaml),
an A1111/Forge/SD.Next root, the Hugging Face hub cache and the ModelScope cache (--models-from).

Only folder names are worked out here; model_files.py reads the files. Nothing under a root is ever
written, renamed or deleted: the other app owns it.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

EXTRA_PATHS_FILE = "extra_model_paths.yaml"
# ComfyUI's folder names (folder_paths.py, extra_model_paths.yaml.example) -> ours. `checkpoints`
# is where the a111 section maps models/Stable-diffusion, so Z-Image DiTs are looked for there too.
COMFY_KEYS = {"diffusion_models": "dits", "unet": "dits", "checkpoints": "dits", "text_encoders": "text_encoders",
              "clip": "text_encoders", "vae": "vaes", "loras": "loras", "diffusers": "pipelines"}
COMFY_DEFAULTS = {"dits": ("models/diffusion_models", "models/unet"),
                  "text_encoders": ("models/text_encoders", "models/clip"), "vaes": ("models/vae",),
                  "loras": ("models/loras",), "pipelines": ("models/diffusers",)}
# A1111 and Forge (Forge Neo: Z-Image's DiT in Stable-diffusion, its Qwen3 in text_encoder), SD.Next's names
A1111_DEFAULTS = {"dits": ("models/Stable-diffusion", "models/UNET"),
                  "text_encoders": ("models/text_encoder", "models/Text-encoder"), "vaes": ("models/VAE",),
                  "loras": ("models/Lora", "models/LyCORIS"), "pipelines": ("models/Diffusers", "models/diffusers")}


class ModelRootError(ValueError):
    """A --models-from folder, or its extra_model_paths.yaml, cannot be read."""


@dataclass
class RootFolders:
    """The folders of one root, per part. `pipelines`: folders that may hold diffusers pipelines
    (caches are searched a few levels down)."""
    root: Path
    layout: str                          # comfyui | a1111 | hf-cache | modelscope-cache | folder
    dits: list[Path] = field(default_factory=list)
    text_encoders: list[Path] = field(default_factory=list)
    vaes: list[Path] = field(default_factory=list)
    loras: list[Path] = field(default_factory=list)
    pipelines: list[Path] = field(default_factory=list)

    def add(self, part: str, folder: Path) -> None:
        folders = getattr(self, part)
        if folder.is_dir() and folder not in folders:
            folders.append(folder)


def _expand(text: str) -> str:
    return os.path.expandvars(os.path.expanduser(text.strip()))


def read_extra_model_paths(path: Path) -> dict[str, list[Path]]:
    """ComfyUI's extra_model_paths.yaml (utils/extra_config.py's reading): each top-level section
    has an optional base_path (relative to the yaml's folder; ~ and $VARS expanded) and
    `folder_name: path` entries, several paths one per line. Read with yaml.safe_load: no tags, no code."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ModelRootError(f"{path} cannot be read: {e.__class__.__name__}: {str(e)[:200]}") from None
    out: dict[str, list[Path]] = {}
    if data is None:
        return out
    if not isinstance(data, dict):
        raise ModelRootError(f"{path} is not a mapping of sections (ComfyUI's extra_model_paths.yaml layout)")
    for section in data.values():
        if not isinstance(section, dict):
            continue
        base = path.parent
        if isinstance(section.get("base_path"), str):
            base = path.parent / _expand(section["base_path"])
        for key, value in section.items():
            part = COMFY_KEYS.get(key)
            if part is None or not isinstance(value, str):
                continue
            for line in value.splitlines():
                if line.strip():
                    out.setdefault(part, []).append((base / _expand(line)).resolve())
    return out


def _is_hf_cache(root: Path) -> bool:
    return any(p.name.startswith("models--") for p in _children(root))


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []


def folders_of(root: Path) -> RootFolders:
    """Which app's tree `root` is, and its model folders (those that exist)."""
    root = root.expanduser()
    if not root.is_dir():
        raise ModelRootError(f"{root} is not a folder")
    models = root / "models"
    if (models / "Stable-diffusion").is_dir():
        found = RootFolders(root, "a1111")
        defaults = A1111_DEFAULTS
    elif any((root / p).is_dir() for paths in COMFY_DEFAULTS.values() for p in paths) \
            or (root / EXTRA_PATHS_FILE).is_file():
        found = RootFolders(root, "comfyui")
        defaults = COMFY_DEFAULTS
    else:
        layout = "hf-cache" if _is_hf_cache(root) or _is_hf_cache(root / "hub") else \
            "modelscope-cache" if (root / "models").is_dir() or (root / "hub").is_dir() else "folder"
        found = RootFolders(root, layout)
        found.add("pipelines", root)
        # A plain folder of files: every part may be in it.
        if layout == "folder":
            for part in ("dits", "text_encoders", "vaes"):
                found.add(part, root)
        return found
    for part, rels in defaults.items():
        for rel in rels:
            found.add(part, root / rel)
    if found.layout == "comfyui" and (root / EXTRA_PATHS_FILE).is_file():
        for part, folders in read_extra_model_paths(root / EXTRA_PATHS_FILE).items():
            for folder in folders:
                found.add(part, folder)
    return found


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or "name (2)", "name (3)" ... when another root already gave one (compared without
    case, as the pickers and A1111's lists match names); the name returned is added to `taken`."""
    out, n = name, 2
    while out.lower() in taken:
        out, n = f"{name} ({n})", n + 1
    taken.add(out.lower())
    return out
