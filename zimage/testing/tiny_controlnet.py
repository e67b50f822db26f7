"""Write a tiny random Z-Image ControlNet for the tiny pipeline, in the real repo's layout.

PAI/Z-Image-Turbo-Fun-Controlnet-Union ships one safetensors file at the top of the repo, with no
diffusers config (ComfyUI's and VideoX-Fun's layout); this writes the same, shaped for
tiny_model.DIT_TINY: a control block on each of its 2 layers, the latent's 16 channels as the
control input, the union model's (v1) layout; or (`version="2.1"`) the union 2.1's: a control
noise refiner with before_proj ahead of the shared refiner, and 33 input channels (the control
map's 16, the mask's 1, the masked picture's 16), which inpaint reads. Its hints are random, not
zero as a freshly trained ControlNet's would be, so a control image visibly changes the tiny
model's noise.
"""
from __future__ import annotations

import logging
from pathlib import Path

from .tiny_model import DIT_TINY, _random_state_dict

log = logging.getLogger(__name__)

FILENAME = "Z-Image-Turbo-Fun-Controlnet-Union.safetensors"
CONTROLNET_TINY = dict(control_layers_places=[0, 1], control_refiner_layers_places=None, control_in_dim=16,
                       add_control_noise_refiner=None, all_patch_size=DIT_TINY["all_patch_size"],
                       all_f_patch_size=DIT_TINY["all_f_patch_size"], dim=DIT_TINY["dim"],
                       n_refiner_layers=DIT_TINY["n_refiner_layers"], n_heads=DIT_TINY["n_heads"],
                       n_kv_heads=DIT_TINY["n_kv_heads"], norm_eps=DIT_TINY["norm_eps"], qk_norm=DIT_TINY["qk_norm"])
CONTROLNET_TINY_2_1 = dict(CONTROLNET_TINY, control_refiner_layers_places=[0], control_in_dim=33,
                           add_control_noise_refiner="control_noise_refiner")
VERSIONS = {"1": CONTROLNET_TINY, "2.1": CONTROLNET_TINY_2_1}


def make_tiny_controlnet(out_dir: str | Path, seed: int = 1, version: str = "1") -> Path:
    """Write the tiny ControlNet's one file into `out_dir` (created); return the folder."""
    import torch
    from diffusers import ZImageControlNetModel
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        model = ZImageControlNetModel(**VERSIONS[version])
    state = _random_state_dict(model, torch.Generator().manual_seed(seed))
    save_file(state, str(out / FILENAME), metadata={"format": "pt"})
    log.info("wrote tiny random Z-Image ControlNet to %s", out)
    return out
