"""LoRAs on a GGUF DiT (Q8_0): the packed layers get the LoRA as an added low-rank path, the
others fused as usual; through the real server on the tiny model's .gguf, against the diffusers
folder of the same weights with the same LoRA."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_single_file import REQUEST, comfy_root, generate  # noqa: F401  (fixtures)

from zimage.engine.lora_side import SidePaths, is_packed, weight_shape
from zimage.testing.tiny_lora import make_tiny_loras

LORA = "<lora:diffusers_style:1>"


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    make_tiny_loras(folder, tiny_model_dir)
    return folder


def with_prompt(srv, prompt: str) -> np.ndarray:
    import base64
    import io

    import requests
    from PIL import Image

    r = requests.post(srv.url + "/generate", json={**REQUEST, "prompt": prompt}, timeout=120)
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB"), dtype=np.int16)


def test_a_lora_on_a_gguf_dit_runs_beside_its_packed_layers(hub, start_server, settings, comfy_root, lora_dir):
    folder = start_server(dataclasses.replace(settings, lora_dir=str(lora_dir)))
    want = with_prompt(folder, "a red fox " + LORA)            # bf16 weights, the LoRA fused
    folder_base = with_prompt(folder, "a red fox")
    gguf = comfy_root / "models/diffusion_models/tiny_z_image_turbo-Q8_0.gguf"
    srv = start_server(dataclasses.replace(settings, model=str(gguf), lora_dir=str(lora_dir)))
    base = with_prompt(srv, "a red fox")
    got = with_prompt(srv, "a red fox " + LORA)
    assert np.abs(got - base).mean() > 4 * np.abs(base - folder_base).mean()   # the LoRA took effect...
    assert np.abs(got - want).mean() < 4 and np.abs(got - want).max() < 64     # ...as it does on bf16
    assert np.array_equal(with_prompt(srv, "a red fox"), base)                 # and comes off exactly


def test_side_paths_add_the_low_rank_term_and_come_off():
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4, bias=False)
    x, up, down = torch.randn(3, 8), torch.randn(4, 2), torch.randn(2, 8)
    base = layer(x)
    side = SidePaths()
    side.set({layer: (up, down)})
    assert side.active and torch.allclose(layer(x), x @ (layer.weight + up @ down).T, atol=1e-5)
    side.clear()
    assert not side.active and torch.equal(layer(x), base)
    assert not is_packed(layer) and weight_shape(layer) == (4, 8)
