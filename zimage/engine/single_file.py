"""Building a ZImagePipeline from single files (store/model_source.ModelParts): the DiT through
diffusers' own `ZImageTransformer2DModel.from_single_file` (its ComfyUI key converter; GGUF through
`GGUFQuantizationConfig`), the VAE through `AutoencoderKL.from_single_file` (the LDM/Flux `ae`
converter), the Qwen3 text encoder from its HF-named file. Every call gets `config=` the companion
folder and `local_files_only=True`: diffusers never looks anything up on the network (its own
guess maps every Z-Image file to Tongyi-MAI/Z-Image-Turbo, wrong for the base model).

An fp8 DiT file (ComfyUI's e4m3fn) stays float8 in memory where that is lossless and computes in the
load dtype (fp8_storage.py: which layers, and why a "scaled" file's scaled weights stay in the load
dtype). fp8 text encoder and VAE files are read into the load dtype (as in crispz and InvokeAI).
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ModelFileUnsupported, ModelLoadFailed
from ..state import LoadStage
from ..store.model_source import ModelParts
from .assemble import LoadProgress, assemble_pipeline
from .fp8_storage import DROPPED_KEYS, SCALE_SUFFIXES, fp8_modules, keep_fp8, scaled_weight

log = logging.getLogger(__name__)


def read_state(path: Path, dtype) -> dict:
    """A safetensors file's tensors in `dtype`, fp8 weights multiplied by their scales."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as e:   # safetensors raises its own error types for a bad header or a short file
        raise ModelFileUnsupported(f"{path.name} cannot be read as safetensors: {str(e)[:200]}",
                                   "The file is damaged or not a safetensors file; download it again.",
                                   file=str(path)) from e
    scales = {k: state.pop(k) for k in list(state) if k.endswith(SCALE_SUFFIXES)}
    for key in DROPPED_KEYS:
        state.pop(key, None)
        state.pop("model." + key, None)
    for key, scale in scales.items():
        weight = scaled_weight(key)
        if weight in state:
            state[weight] = state[weight].to(dtype) * scale.to(dtype)
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def _guarded(what: str, path: Path, fn):
    try:
        return fn()
    except ModelLoadFailed:
        raise
    except Exception as e:   # shapes, keys, headers: the file does not fit this model
        log.exception("loading the %s from %s failed", what, path)
        raise ModelFileUnsupported(f"Could not load the {what} from {path.name}: {e.__class__.__name__}: "
                                   f"{str(e)[:300]}", "Check that the file is a complete Z-Image file.",
                                   file=str(path), component=what) from e


def load_transformer(parts: ModelParts, dtype):
    from diffusers import GGUFQuantizationConfig, ZImageTransformer2DModel

    common = dict(config=str(parts.companion), subfolder="transformer", local_files_only=True, torch_dtype=dtype)
    if parts.format == "gguf":
        return _guarded("transformer", parts.dit, lambda: ZImageTransformer2DModel.from_single_file(
            str(parts.dit), quantization_config=GGUFQuantizationConfig(compute_dtype=dtype), **common))
    def build():
        fp8 = fp8_modules(parts.dit)
        model = ZImageTransformer2DModel.from_single_file(read_state(parts.dit, dtype), **common)
        keep_fp8(model, fp8, dtype)
        return model
    return _guarded("transformer", parts.dit, build)


def load_text_encoder(parts: ModelParts, cls, dtype):
    """The Qwen3 encoder: a transformers folder through from_pretrained, a file (Comfy-Org's
    qwen_3_4b: Qwen3ForCausalLM names, `model.` prefix) into the companion's config."""
    path = parts.text_encoder
    if path.is_dir():
        return _guarded("text_encoder", path, lambda: cls.from_pretrained(str(path), dtype=dtype, local_files_only=True))

    def build():
        config = cls.config_class.from_pretrained(str(parts.companion / "text_encoder"), local_files_only=True)
        state = {k.removeprefix("model."): v for k, v in read_state(path, dtype).items()}
        expected = cls.base_model_prefix + "."
        missing = [k for k in _weight_names(cls, config) if k not in state and expected + k not in state]
        if missing:
            raise ModelFileUnsupported(f"{path.name} lacks {len(missing)} of the text encoder's weights "
                                       f"(e.g. {missing[0]}).", "Use the full Qwen3-4B text encoder file.",
                                       file=str(path))
        return cls.from_pretrained(None, config=config, state_dict=state, dtype=dtype, local_files_only=True).eval()
    return _guarded("text_encoder", path, build)


def load_vae(parts: ModelParts, cls, dtype):
    path = parts.vae
    if path.is_dir():
        return _guarded("vae", path, lambda: cls.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True))
    return _guarded("vae", path, lambda: cls.from_single_file(
        read_state(path, dtype), config=str(parts.companion), subfolder="vae", local_files_only=True,
        torch_dtype=dtype))


def load_single_file_pipeline(parts: ModelParts, classes: dict[str, type], dtype, device: str = "cpu",
                              on_progress: LoadProgress | None = None, quant_dir: Path | None = None):
    """The pipeline from the parts, on `device`; `classes`: the companion's model_index, checked
    (loader.component_classes). The tokenizer and scheduler come from the companion."""
    from .. import startup

    if quant_dir is not None:
        raise ModelFileUnsupported(f"--quantize int8 works on diffusers folders, not on {parts.dit.name}.",
                                   "Use a GGUF or fp8 file for a smaller model, or leave --quantize off.",
                                   file=str(parts.dit))
    startup.mark(startup.MODEL_IMPORTED)
    sizes = {"transformer": parts.dit.stat().st_size,
             "text_encoder": sum(p.stat().st_size for p in _part_files(parts.text_encoder)),
             "vae": sum(p.stat().st_size for p in _part_files(parts.vae))}
    total, done = sum(sizes.values()), 0
    components = {}
    for name, load in (("transformer", lambda: load_transformer(parts, dtype)),
                       ("text_encoder", lambda: load_text_encoder(parts, classes["text_encoder"], dtype)),
                       ("vae", lambda: load_vae(parts, classes["vae"], dtype))):
        if on_progress:
            on_progress(LoadStage.READ, done, total, name)
        components[name] = load()
        done += sizes[name]
    for name in ("tokenizer", "scheduler"):
        components[name] = _guarded(name, parts.companion, lambda: classes[name].from_pretrained(
            str(parts.companion), subfolder=name, local_files_only=True))
    return assemble_pipeline(components, total, device, on_progress)


def _part_files(path: Path) -> list[Path]:
    from ..store.cache import weight_files

    return [path] if path.is_file() else weight_files(path)[0]


def _weight_names(cls, config) -> list[str]:
    from accelerate import init_empty_weights

    with init_empty_weights():
        return list(cls(config).state_dict())
