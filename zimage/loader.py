"""Building a ZImagePipeline from a folder, one component at a time, with byte progress.

This is the plain diffusers path (each component's own `from_pretrained`), split per component so
the `loading` state can report which part is being read and how many bytes are done.
Only diffusers and transformers classes named in model_index.json are built: no remote code,
no custom pipelines, safetensors only, never the network.
"""
from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Callable

from .cache import weight_files
from .errors import ModelLoadFailed
from .state import LoadStage

log = logging.getLogger(__name__)

ALLOWED_LIBRARIES = ("diffusers", "transformers")
PIPELINE_CLASS = "ZImagePipeline"
LoadProgress = Callable[[LoadStage, int, int, str], None]   # stage, bytes_done, bytes_total, component


def read_model_index(model_dir: Path) -> dict[str, tuple[str, str]]:
    try:
        index = json.loads((model_dir / "model_index.json").read_text())
    except FileNotFoundError:
        raise ModelLoadFailed(f"{model_dir} has no model_index.json: it is not a diffusers pipeline folder.",
                              "Point --model at a Z-Image-Turbo folder or a ModelScope id.") from None
    except (OSError, ValueError) as e:
        raise ModelLoadFailed(f"{model_dir}/model_index.json is unreadable ({e}).",
                              "Re-download the model.") from e
    if not isinstance(index, dict) or index.get("_class_name") != PIPELINE_CLASS:
        found = index.get("_class_name") if isinstance(index, dict) else type(index).__name__
        raise ModelLoadFailed(f"{model_dir} holds a {found!r}, not a {PIPELINE_CLASS}.",
                              "Point --model at a Z-Image-Turbo folder.")
    components = {}
    for name, spec in index.items():
        if name.startswith("_"):
            continue
        if (not isinstance(spec, list) or len(spec) != 2 or spec[0] not in ALLOWED_LIBRARIES
                or not isinstance(spec[1], str)):
            raise ModelLoadFailed(f"model_index.json: component {name!r} is {spec!r}; only diffusers and "
                                  "transformers classes are loaded (no custom code).", "Use the official model.")
        components[name] = (spec[0], spec[1])
    return components


def component_bytes(model_dir: Path, name: str) -> int:
    files, _ = weight_files(model_dir / name) if (model_dir / name).is_dir() else ([], [])
    return sum(f.stat().st_size for f in files)


def _component_class(library: str, class_name: str):
    cls = getattr(importlib.import_module(library), class_name, None)
    if cls is None:
        raise ModelLoadFailed(f"{library} has no class {class_name}.",
                              f"Update {library} (pip install -r requirements.txt).")
    return cls


def load_pipeline(model_dir: Path, dtype, on_progress: LoadProgress | None = None):
    """Load every component on the CPU and assemble the pipeline."""
    import diffusers

    components_spec = read_model_index(model_dir)
    sizes = {name: component_bytes(model_dir, name) for name in components_spec}
    total = sum(sizes.values())
    done = 0
    components = {}
    for name, (library, class_name) in components_spec.items():
        if on_progress:
            on_progress(LoadStage.READ, done, total, name)
        cls = _component_class(library, class_name)
        kwargs = {"subfolder": name, "local_files_only": True}
        if sizes[name]:
            kwargs.update(dtype=dtype, use_safetensors=True)
        try:
            components[name] = cls.from_pretrained(str(model_dir), **kwargs)
        except Exception as e:   # safetensors, json, OSError, shape mismatches: all mean bad files
            log.exception("loading %s failed", name)
            raise ModelLoadFailed(f"Could not load the {name} from {model_dir}: {e.__class__.__name__}: "
                                  f"{str(e)[:300]}",
                                  "The files may be incomplete or corrupt: download the model again.",
                                  component=name) from e
        done += sizes[name]
        if on_progress:
            on_progress(LoadStage.READ, done, total, name)
    if on_progress:
        on_progress(LoadStage.BUILD, total, total, PIPELINE_CLASS)
    pipe = getattr(diffusers, PIPELINE_CLASS)(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe
