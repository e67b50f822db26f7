"""The ControlNet on the loaded model: its one file read into a ZImageControlNetModel that shares
the transformer's embedders and refiners (ZImageControlNetModel.from_transformer, no copy), the
ZImageControlNetPipeline (text to image) or ZImageControlNetInpaintPipeline (inpaint, outpaint)
made of the loaded components, and the guidance window (start/end).

The manager owns the loaded ControlNet (worker-only field) and drops it with the model. Its own
weights (control embedder, control noise refiners, control layers) stay in the compute dtype in
every placement: int8 and fp8 quantize the transformer's blocks, which the ControlNet shares, not
its own; a low-VRAM plan counts them and streams the ones it cannot keep (planning, offload).
"""
from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

from ..errors import ModelLoadFailed
from ..request import ControlUnit
from ..store.cache import single_file_weights

log = logging.getLogger(__name__)

_LAYER = re.compile(r"^control_layers\.(\d+)\.")
_REFINER = re.compile(r"^control_noise_refiner\.(\d+)\.")


def controlnet_file(folder: Path) -> Path:
    """The one safetensors file of a ControlNet folder (the repo's layout: no diffusers config)."""
    files = single_file_weights(folder)
    if len(files) == 1:
        return files[0]
    named = [f for f in files if f.stem == folder.name or "Controlnet-Union" in f.stem and "lite" not in f.stem]
    if len(named) == 1:
        return named[0]
    raise ModelLoadFailed(f"{folder} holds {len(files)} safetensors files; a ControlNet folder needs exactly one.",
                          "Point --controlnet at a folder with one ControlNet .safetensors file.")


def infer_config(shapes: dict[str, tuple[int, ...]], transformer_config) -> dict:
    """ZImageControlNetModel's config from the file's tensor names and shapes and the base
    transformer's config (the file carries none). The control blocks sit evenly over the
    transformer's layers: 6 blocks on 30 layers are 0, 5, ..., 25 (the union model v1), 15 are
    0, 2, ..., 28 (2.0 and 2.1)."""
    layers = sorted({int(m.group(1)) for k in shapes if (m := _LAYER.match(k))})
    refiners = sorted({int(m.group(1)) for k in shapes if (m := _REFINER.match(k))})
    patch, f_patch = transformer_config.all_patch_size[0], transformer_config.all_f_patch_size[0]
    embed = shapes.get(f"control_all_x_embedder.{patch}-{f_patch}.weight")
    if not layers or embed is None:
        raise ModelLoadFailed("The ControlNet file has no control blocks or no control embedder: it is not a "
                              "Z-Image ControlNet.", "Use the Z-Image-Turbo Fun ControlNet Union weights.")
    n_layers = transformer_config.n_layers
    step = max(1, n_layers // len(layers))
    if any(k.startswith("control_noise_refiner.") and ".before_proj." in k for k in shapes):
        mode, refiner_places = "control_noise_refiner", list(range(len(refiners)))
    else:
        mode, refiner_places = None, None
    return dict(control_layers_places=[i * step for i in range(len(layers))],
                control_refiner_layers_places=refiner_places,
                control_in_dim=embed[1] // (patch * patch * f_patch), add_control_noise_refiner=mode,
                all_patch_size=tuple(transformer_config.all_patch_size),
                all_f_patch_size=tuple(transformer_config.all_f_patch_size), dim=transformer_config.dim,
                n_refiner_layers=max(1, len(refiners)) if refiners else transformer_config.n_refiner_layers,
                n_heads=transformer_config.n_heads, n_kv_heads=transformer_config.n_kv_heads,
                norm_eps=transformer_config.norm_eps, qk_norm=transformer_config.qk_norm)


def load_controlnet(folder: Path, transformer, dtype, device: str):
    """The ControlNet from `folder`, on `device` in `dtype`, sharing `transformer`'s modules."""
    import torch
    from diffusers import ZImageControlNetModel
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = controlnet_file(folder)
    try:
        with safe_open(str(path), "pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        config = infer_config(shapes, transformer.config)
        with torch.device("meta"):
            model = ZImageControlNetModel(**config)
        state = load_file(str(path), device="cpu")
        model.load_state_dict(state, strict=True, assign=True)
    except ModelLoadFailed:
        raise
    except Exception as e:          # a wrong shape, a missing tensor, a damaged file
        log.exception("loading the ControlNet failed")
        raise ModelLoadFailed(f"Could not load the ControlNet from {path}: {e.__class__.__name__}: {str(e)[:300]}",
                              "Check --controlnet, or download the ControlNet again (Model cache: Repair).") from e
    model = model.to(device=device, dtype=dtype).eval()
    return ZImageControlNetModel.from_transformer(model, transformer)


def own_bytes(controlnet) -> int:
    """The ControlNet's own weights (the shared transformer modules not counted twice)."""
    shared = {id(p) for name in ("t_embedder", "all_x_embedder", "cap_embedder", "noise_refiner", "context_refiner")
              for p in getattr(controlnet, name).parameters()}
    return sum(p.numel() * p.element_size() for p in controlnet.parameters() if id(p) not in shared)


def takes_inpaint(controlnet, transformer) -> bool:
    """Whether the ControlNet reads a mask and a masked image beside the control map (the union
    2.0 and 2.1: 33 input channels); the v1 union reads the 16 latent channels only, and diffusers'
    ZImageControlNetInpaintPipeline refuses it."""
    return controlnet.config.control_in_dim != transformer.in_channels


def control_pipeline(pipe, controlnet, mode: str = "txt2img"):
    """The ControlNet pipeline for `mode` (txt2img; inpaint, which outpaint is) made of the loaded
    pipeline's own modules and the ControlNet: no weight is copied or read again. Not from_pipe:
    it casts shared modules to float32 (engine/edit.py). Built per call (a few attribute sets), so
    a transformer swapped since (the background compile's twin) is the one used and shared."""
    from diffusers import ZImageControlNetInpaintPipeline, ZImageControlNetPipeline  # both share (from_transformer)

    c = pipe.components
    cls = ZImageControlNetInpaintPipeline if mode == "inpaint" else ZImageControlNetPipeline
    out = cls(scheduler=c["scheduler"], vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"],
              transformer=c["transformer"], controlnet=controlnet)
    out.set_progress_bar_config(disable=True)
    return out


@contextlib.contextmanager
def guidance_window(controlnet, unit: ControlUnit, steps: int):
    """Scale the ControlNet's hints to 0 outside [start, end] of the steps, as A1111's ControlNet
    extension does with guidance start/end: the pipeline passes one scale for every step, so a
    pre-hook on the ControlNet (called once per step, the guidance batch included) sets it."""
    calls = 0

    def hook(_module, args, kwargs):
        nonlocal calls
        fraction = calls / max(1, steps)
        calls += 1
        inside = unit.guidance_start <= fraction and (fraction < unit.guidance_end or unit.guidance_end >= 1.0)
        kwargs["conditioning_scale"] = unit.weight if inside else 0.0
        return args, kwargs

    handle = controlnet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


class ControlNetSlot:
    """The loaded ControlNet and the pipeline built around it. Owned by the manager and touched
    by its worker alone (no lock): loaded on first use, moved with the model, dropped with it."""

    def __init__(self) -> None:
        self.model = None
        self.folder: Path | None = None
        self.file_bytes = 0

    @property
    def loaded(self) -> bool:
        return self.model is not None

    @property
    def fit_bytes(self) -> int:
        """What it adds beside the resident model: its file and its pass's working memory."""
        from .planning import CONTROL_WORKING_BYTES

        return self.file_bytes + CONTROL_WORKING_BYTES if self.loaded else 0

    def load(self, folder: Path, transformer, dtype, device: str) -> None:
        """On `device` in the compute `dtype` (a low-VRAM plan places it from RAM)."""
        self.model = load_controlnet(folder, transformer, dtype, device)
        self.folder = folder
        self.file_bytes = controlnet_file(folder).stat().st_size
        log.info("ControlNet loaded from %s onto %s (%.1f MB of its own weights)", folder, device,
                 own_bytes(self.model) / 2**20)

    def pipeline(self, pipe, mode: str = "txt2img"):
        return control_pipeline(pipe, self.model, mode)

    def follow(self, transformer) -> None:
        """Move the ControlNet's own weights to where the transformer went (the shared ones moved
        with it): placement moves the pipeline's components, and the ControlNet is not one. In a
        low-VRAM plan the plan places it instead (offload.LowVramRuntime)."""
        if self.model is not None:
            device = next(transformer.parameters()).device
            from .planning import controlnet_own_modules

            for module in controlnet_own_modules(self.model):
                module.to(device)

    def drop(self) -> None:
        self.model, self.folder, self.file_bytes = None, None, 0
