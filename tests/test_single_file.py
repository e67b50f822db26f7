"""--model takes a DiT file from another app's tree (ComfyUI, A1111/Forge; .safetensors in ComfyUI's
layout or .gguf): the real server loads it with diffusers' single-file loaders and makes the same
image as the diffusers folder of the same tiny model (bf16) or a close one (Q8_0). The configs and
tokenizer come from the real modelscope client against the fake hub (small files only), and the
other app's files are never changed."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from zimage.testing.fake_hub import FakeHub
from zimage.testing.tiny_comfy import DIT_FILE, TE_FILE, VAE_FILE, make_tiny_a1111, make_tiny_comfy

MODEL_ID = "Tongyi-MAI/Z-Image-Turbo"
REQUEST = {"prompt": "a red fox", "width": 256, "height": 256, "num_inference_steps": 2, "seed": 7}


@pytest.fixture(scope="session")
def comfy_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("comfy") / "ComfyUI"
    make_tiny_comfy(root, gguf_type="Q8_0")
    return root


@pytest.fixture(scope="session")
def a1111_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("a1111") / "stable-diffusion-webui-forge"
    make_tiny_a1111(root)
    return root


@pytest.fixture(scope="session")
def reference_png(tmp_path_factory, tiny_model_dir) -> np.ndarray:
    """The image the diffusers folder of the tiny model makes for REQUEST, through the real server."""
    from conftest import RunningServer
    from zimage.config import Settings

    out = tmp_path_factory.mktemp("ref")
    srv = RunningServer(Settings(model=str(tiny_model_dir), outputs_dir=str(out / "o"), cache_dir=str(out / "c"),
                                 idle_unload_s=0, idle_drop_s=0, backend="inprocess"))
    try:
        return generate(srv)
    finally:
        srv.stop()


def generate(srv, expect: int = 200, headers: dict | None = None):
    r = requests.post(srv.url + "/generate", json=REQUEST, timeout=120, headers=headers)
    assert r.status_code == expect, r.text
    if expect != 200:
        return r.json()["error"]
    import base64

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB"), dtype=np.int16)


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under root with its mtime and size: what "never written" means."""
    return {str(p.relative_to(root)): (p.lstat().st_mtime_ns, p.lstat().st_size) for p in sorted(root.rglob("*"))}


def single_file_settings(settings, model: Path, **kw):
    return dataclasses.replace(settings, model=str(model), **kw)


def test_comfyui_bf16_file_makes_the_same_image_as_the_folder(hub, start_server, settings, comfy_root, reference_png):
    before = tree_state(comfy_root)
    srv = start_server(single_file_settings(settings, comfy_root / "models/diffusion_models" / DIT_FILE))
    assert np.array_equal(generate(srv), reference_png)
    # Only the small files were fetched for the configs and tokenizer, never a weight.
    fetched = [path for path, _ in hub.file_requests]
    assert fetched and not any(p.endswith(".safetensors") for p in fetched)
    assert any(p.startswith("tokenizer/") for p in fetched)
    assert tree_state(comfy_root) == before
    health = requests.get(srv.url + "/health", timeout=10).json()
    assert health["status"] == "healthy"


def test_gguf_q8_0_makes_a_close_image(hub, start_server, settings, comfy_root, reference_png):
    gguf = comfy_root / "models/diffusion_models/tiny_z_image_turbo-Q8_0.gguf"
    srv = start_server(single_file_settings(settings, gguf))
    image = generate(srv)
    diff = np.abs(image - reference_png)
    assert diff.mean() < 4 and diff.max() < 64          # quantized weights: close, not equal
    assert srv.manager._pipe.transformer.hf_quantizer is not None   # GGUF weights stay packed


def test_a1111_tree_finds_text_encoder_and_vae_beside(hub, start_server, settings, a1111_root, reference_png):
    before = tree_state(a1111_root)
    srv = start_server(single_file_settings(settings, a1111_root / "models/Stable-diffusion" / DIT_FILE))
    assert np.array_equal(generate(srv), reference_png)
    assert tree_state(a1111_root) == before


def test_comfyui_root_whose_models_live_elsewhere(hub, start_server, settings, tmp_path, comfy_root, reference_png):
    """extra_model_paths.yaml points at folders of another layout; only --models-from finds them."""
    elsewhere = tmp_path / "store"
    for part, name in (("diffusion_models", DIT_FILE), ("text_encoders", TE_FILE), ("vae", VAE_FILE)):
        (elsewhere / f"my-{part}").mkdir(parents=True)
        shutil.copy(comfy_root / "models" / part / name, elsewhere / f"my-{part}" / name)
    root = tmp_path / "ComfyUI"
    root.mkdir()
    (root / "extra_model_paths.yaml").write_text(
        "mine:\n  base_path: ../store\n  diffusion_models: my-diffusion_models\n"
        "  text_encoders: |\n    my-text_encoders\n    missing-folder\n  vae: my-vae\n")
    before = tree_state(elsewhere)
    dit = elsewhere / "my-diffusion_models" / DIT_FILE
    alone = start_server(single_file_settings(settings, dit))
    err = generate(alone, 503)
    assert err["code"] == "model_part_missing" and "text encoder" in err["message"] and "--text-encoder" in err["hint"]
    srv = start_server(single_file_settings(settings, dit, models_from=(str(root),),
                                            cache_dir=str(tmp_path / "cache2")))
    assert np.array_equal(generate(srv), reference_png)
    assert tree_state(elsewhere) == before


def test_named_text_encoder_and_vae_flags(hub, start_server, settings, tmp_path, comfy_root, reference_png):
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(comfy_root / "models/diffusion_models" / DIT_FILE, lone / DIT_FILE)
    srv = start_server(single_file_settings(settings, lone / DIT_FILE,
                                            text_encoder=str(comfy_root / "models/text_encoders" / TE_FILE),
                                            vae=str(comfy_root / "models/vae")))
    assert np.array_equal(generate(srv), reference_png)


def test_what_cannot_load_says_why_in_english_and_chinese(hub, start_server, settings, tmp_path, comfy_root):
    te = comfy_root / "models/text_encoders" / TE_FILE
    srv = start_server(single_file_settings(settings, te))
    err = generate(srv, 422)
    assert err["code"] == "model_file_unsupported"
    assert err["message"] == f"{TE_FILE} is a text encoder, not a Z-Image diffusion model (DiT)."
    zh = generate(srv, 422, headers={"Accept-Language": "zh-CN"})
    assert zh["message"].startswith(f"{TE_FILE} 不是 Z-Image 扩散模型")
    pickle = tmp_path / "z_image_turbo.ckpt"
    pickle.write_bytes(b"\x80\x04not loaded")
    srv2 = start_server(single_file_settings(settings, pickle))
    err = generate(srv2, 422)
    assert "pickle" in err["message"] and ".safetensors or .gguf" in err["hint"]
    assert requests.get(srv2.url + "/health", timeout=10).json()["status"] == "error"
    wrong_vae = start_server(single_file_settings(settings, comfy_root / "models/diffusion_models" / DIT_FILE,
                                                  vae=str(te)))
    err = generate(wrong_vae, 422)
    assert err["message"] == f"--vae {TE_FILE} is not a vae for Z-Image."


def test_offline_without_configs_says_what_to_do(start_server, settings, tmp_path, comfy_root, monkeypatch):
    with FakeHub({MODEL_ID: comfy_root}) as fake:     # a hub that is down
        fake.configure_client(monkeypatch.setenv)
        fake.offline = True
        srv = start_server(single_file_settings(settings, comfy_root / "models/diffusion_models" / DIT_FILE))
        err = generate(srv, 503)
    assert err["code"] == "model_unavailable"
    assert requests.get(srv.url + "/health", timeout=10).json()["status"] == "error"
