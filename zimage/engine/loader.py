"""Building a ZImagePipeline from a folder, with byte progress: the fast path, or plain diffusers.

Fast (default): every weight component is built empty and all shards of all components are
streamed at once straight to the target device (zimage.engine.fastload). Plain (fallback, and for any
component the fast path does not cover): each component's own `from_pretrained` on the CPU, then a
move to the device. Only diffusers and transformers classes named in model_index.json are built:
no remote code, no custom pipelines, safetensors only, never the network.
"""
from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path

from .. import startup
from ..errors import ModelLoadFailed
from ..state import LoadStage
from ..store.cache import weight_files
from ..store.model_source import ModelParts
from .assemble import PIPELINE_CLASS, LoadProgress, assemble_pipeline

log = logging.getLogger(__name__)

ALLOWED_LIBRARIES = ("diffusers", "transformers")


def read_model_index(model_dir: Path) -> dict[str, tuple[str, str]]:
    if isinstance(model_dir, ModelParts):     # single files: the companion names the classes
        model_dir = model_dir.companion
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
    if isinstance(model_dir, ModelParts):
        return model_dir.size_bytes() if name == "transformer" else 0
    files, _ = weight_files(model_dir / name) if (model_dir / name).is_dir() else ([], [])
    return sum(f.stat().st_size for f in files)


def weight_paths(model_dir: Path, bf16: bool = True) -> list[Path]:
    """Every safetensors file the pipeline will read (for prefetching while the imports run): the
    DiT's bf16 copy instead of its fp32 files where one exists, unless the load will not be bf16
    (`bf16=False`; the prefetch starts before the dtype is known, and a copy exists only where an
    earlier launch loaded bf16)."""
    if isinstance(model_dir, ModelParts):
        return model_dir.weight_paths()
    from . import bf16_copy

    copy = bf16_copy.usable_copy(model_dir) if bf16 else None
    paths = []
    for name in read_model_index(model_dir):
        folder = copy / name if copy is not None and name == bf16_copy.COMPONENT else model_dir / name
        if folder.is_dir():
            paths += weight_files(folder)[0]
    return paths


def _component_bases(library: str) -> tuple[type, ...]:
    """The classes a component may be: a model, a scheduler or a tokenizer. Not a pipeline (it would
    load a whole other pipeline from the folder) nor an Auto* class (it picks the class from the
    component's own config, so the check above would mean nothing)."""
    if library == "diffusers":
        from diffusers import ModelMixin, SchedulerMixin

        return ModelMixin, SchedulerMixin
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    return PreTrainedModel, PreTrainedTokenizerBase


def _component_class(library: str, class_name: str, name: str = ""):
    cls = getattr(importlib.import_module(library), class_name, None)
    if cls is None:
        raise ModelLoadFailed(f"{library} has no class {class_name}.",
                              f"Update {library} (pip install -r requirements.txt).")
    if not isinstance(cls, type) or not issubclass(cls, _component_bases(library)):
        raise ModelLoadFailed(f"model_index.json: component {name or class_name!r} is a {library}.{class_name}, "
                              "which is not supported: only model, scheduler and tokenizer classes are loaded "
                              "(no pipelines, no Auto* classes).",
                              "Use the official Z-Image-Turbo model_index.json.", component=name or class_name)
    return cls


def component_classes(spec: dict[str, tuple[str, str]]) -> dict[str, type]:
    """Every component's class, checked before a byte is read."""
    return {name: _component_class(library, class_name, name) for name, (library, class_name) in spec.items()}


def _load_plain(model_dir: Path, name: str, cls, dtype, has_weights: bool):
    kwargs = {"subfolder": name, "local_files_only": True}
    if has_weights:
        kwargs.update(dtype=dtype, use_safetensors=True)
    try:
        return cls.from_pretrained(str(model_dir), **kwargs)
    except Exception as e:   # safetensors, json, OSError, shape mismatches: all mean bad files
        log.exception("loading %s failed", name)
        raise ModelLoadFailed(f"Could not load the {name} from {model_dir}: {e.__class__.__name__}: "
                              f"{str(e)[:300]}",
                              "The files may be incomplete or corrupt: download the model again.",
                              component=name) from e


def _source_dir(model_dir: Path, name: str, quant_dir: Path | None, bf16_dir: Path | None) -> Path:
    """The folder a component's weights are read from: the int8 copy, the DiT's bf16 copy, or the model."""
    from .bf16_copy import COMPONENT
    from .quantize import COMPONENTS

    if quant_dir is not None and name in COMPONENTS:
        return quant_dir / name
    if bf16_dir is not None and name == COMPONENT:
        return bf16_dir / name
    return model_dir / name


def _load_fast(model_dir: Path, spec: dict, sizes: dict, dtype, device: str, total: int,
               on_progress: LoadProgress | None, quant_dir: Path | None = None, bf16_dir: Path | None = None) -> dict:
    """Weight components through the fast path; the ones it cannot take are left out (plain later).

    The shards start streaming to the device first (only torch is needed for that), and the
    modules are built while the bytes arrive."""
    from .fastload import FastLoadUnsupported, assign_weights, component_shards, start_streaming, tensors_of
    from .quantize import keep_dtype, prepare_for_quantized_keys

    def source(name: str) -> Path:
        return _source_dir(model_dir, name, quant_dir, bf16_dir)

    plans = {}
    for name in spec:
        if sizes[name]:
            try:
                plans[name] = component_shards(source(name))
            except (FastLoadUnsupported, ValueError, OSError) as e:
                log.warning("fast load does not cover %s (%s): plain diffusers path", name, e)
    names = ", ".join(plans)
    log.info("streaming %d shards to %s", sum(len(v) for v in plans.values()), device)
    streaming = start_streaming([s for shards in plans.values() for s in shards], device,
                                on_bytes=lambda done, _t: on_progress and on_progress(LoadStage.READ, done, total, names))
    empty = {}
    for name in plans:
        library, class_name = spec[name]
        try:
            empty[name] = _build_empty(library, class_name, model_dir / name)
            if quant_dir is not None and source(name).parent == quant_dir:
                prepare_for_quantized_keys(empty[name], [t.name for s in plans[name] for t in s.tensors])
        except (FastLoadUnsupported, ValueError, TypeError, OSError) as e:
            log.warning("fast load cannot build %s (%s): plain diffusers path", name, e)
    log.info("modules built (%s); waiting for the bytes", names)
    try:
        buffers = streaming.result()
        log.info("all bytes on %s", device)
    except OSError as e:
        raise ModelLoadFailed(f"Reading the weights failed: {e}", "Check the disk, then press Preload.") from e
    loaded = {}
    for name, module in empty.items():
        tensors = {}
        for shard in plans[name]:
            tensors.update(tensors_of(shard, buffers[shard.path]))
        try:
            assign_weights(module, tensors, dtype, device, keep=keep_dtype)
            loaded[name] = module
        except FastLoadUnsupported as e:
            log.warning("fast load could not place %s (%s): plain diffusers path", name, e)
    return loaded


def _build_empty(library: str, class_name: str, component_dir: Path):
    from .fastload import build_empty

    return build_empty(library, _component_class(library, class_name), component_dir)


def load_pipeline(model_dir: Path, dtype, device: str = "cpu", on_progress: LoadProgress | None = None,
                  fast: bool = True, quant_dir: Path | None = None):
    """Load every component onto `device` and assemble the pipeline. With `quant_dir` (a complete
    quantized cache, quantize.py) the transformer and text encoder come from there. Single files
    (store/model_source.ModelParts) go through single_file.py."""
    if isinstance(model_dir, ModelParts):
        from .single_file import load_single_file_pipeline

        return load_single_file_pipeline(model_dir, component_classes(read_model_index(model_dir)), dtype, device,
                                         on_progress, quant_dir)
    from . import bf16_copy

    spec = read_model_index(model_dir)
    component_classes(spec)
    startup.mark(startup.MODEL_IMPORTED)
    bf16_dir = bf16_copy.select(model_dir, dtype) if quant_dir is None else None
    if bf16_dir is not None:
        log.info("the transformer is read from its bf16 copy %s", bf16_dir)
    sizes = {name: component_bytes(_source_dir(model_dir, name, quant_dir, bf16_dir).parent, name) for name in spec}
    total = sum(sizes.values())
    components = (_load_fast(model_dir, spec, sizes, dtype, device, total, on_progress, quant_dir, bf16_dir)
                  if fast or quant_dir else {})
    if quant_dir is not None:
        from .quantize import COMPONENTS

        broken = [n for n in COMPONENTS if n in spec and n not in components]
        if broken:
            raise ModelLoadFailed(f"The quantized copy in {quant_dir} could not be loaded ({', '.join(broken)}).",
                                  "It is rebuilt from the model on the next load.", component=broken[0])
    done = sum(sizes[n] for n in components)
    for name, (library, class_name) in spec.items():
        if name in components:
            continue
        if on_progress:
            on_progress(LoadStage.READ, done, total, name)
        components[name] = _load_plain(_source_dir(model_dir, name, None, bf16_dir).parent, name,
                                       _component_class(library, class_name), dtype, bool(sizes[name]))
        done += sizes[name]
    pipe = assemble_pipeline(components, total, device, on_progress)
    if bf16_dir is None and quant_dir is None and bf16_copy.wanted(model_dir, dtype):
        bf16_copy.start_copy(model_dir)      # after the load: never in the way of the first image
    return pipe
