"""--models-from: the Z-Image files of a ComfyUI root (and its extra_model_paths.yaml), an A1111/Forge
root, the Hugging Face hub cache and the ModelScope cache, told apart by their headers, listed for a
picker (name, kind, format, size, path), and never written."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from zimage.config import ConfigError
from zimage.config_load import load_settings
from zimage.store.model_files import discover, kind_of
from zimage.store.model_roots import ModelRootError, folders_of
from zimage.testing.tiny_comfy import DIT_FILE, TE_FILE, VAE_FILE, make_tiny_a1111, make_tiny_comfy


@pytest.fixture(scope="module")
def trees(tmp_path_factory, tiny_model_dir):
    base = tmp_path_factory.mktemp("apps")
    make_tiny_comfy(base / "ComfyUI", gguf_type="Q8_0")
    make_tiny_a1111(base / "forge")
    (base / "forge/models/Stable-diffusion/sdxl_like.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    snap = base / "hf/hub/models--Tongyi-MAI--Z-Image/snapshots/0123abc"
    shutil.copytree(tiny_model_dir, snap)
    shutil.copytree(tiny_model_dir, base / "modelscope/models/Tongyi-MAI/Z-Image-Turbo")
    return base


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_mtime_ns, p.lstat().st_size) for p in sorted(root.rglob("*"))}


def test_each_app_tree_lists_its_models_for_a_picker(trees):
    before = tree_state(trees)
    catalog = discover([str(trees / "ComfyUI"), str(trees / "forge"), str(trees / "hf/hub"), str(trees / "modelscope")])
    listed = {(m.name, m.kind, m.format, m.precision) for m in catalog.models}
    assert listed == {("tiny_z_image_turbo_bf16", "turbo", "safetensors", "bf16"),      # ComfyUI and Forge
                      ("tiny_z_image_turbo-Q8_0", "turbo", "gguf", "Q8_0"),
                      ("Tongyi-MAI/Z-Image", "base", "diffusers", ""),
                      ("Z-Image-Turbo", "turbo", "diffusers", "")}
    assert len(catalog.models) == 5 and all(m.size_bytes == m.path.stat().st_size for m in catalog.models
                                            if m.format != "diffusers")
    row = next(m for m in catalog.models if m.format == "gguf").to_dict()
    assert set(row) == {"name", "kind", "format", "precision", "size_bytes", "path", "root"}
    assert {p.path.name for p in catalog.text_encoders} == {TE_FILE} and len(catalog.text_encoders) == 2
    assert {p.path.name for p in catalog.vaes} == {VAE_FILE}
    assert catalog.lora_dirs == [trees / "ComfyUI/models/loras", trees / "forge/models/Lora"]
    assert tree_state(trees) == before


def test_layouts_are_told_apart(trees):
    assert folders_of(trees / "ComfyUI").layout == "comfyui"
    assert folders_of(trees / "forge").layout == "a1111"
    assert folders_of(trees / "hf").layout == "hf-cache"
    assert folders_of(trees / "modelscope").layout == "modelscope-cache"
    with pytest.raises(ModelRootError):
        folders_of(trees / "nowhere")


def test_extra_model_paths_yaml_is_read_safely(tmp_path, trees):
    root = tmp_path / "ComfyUI"
    root.mkdir()
    (root / "extra_model_paths.yaml").write_text(
        "a111:\n  base_path: " + str(trees / "forge") + "\n  checkpoints: models/Stable-diffusion\n"
        "  vae: models/VAE\n  loras: |\n    models/Lora\n    models/LyCORIS\n"
        "comfy:\n  base_path: ../elsewhere\n  is_default: true\n  text_encoders: models/text_encoders\n")
    found = folders_of(root)
    assert found.dits == [trees / "forge/models/Stable-diffusion"] and found.loras == [trees / "forge/models/Lora"]
    assert found.text_encoders == []      # ../elsewhere does not exist: left out, not an error
    (root / "extra_model_paths.yaml").write_text("x: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ModelRootError, match="extra_model_paths.yaml cannot be read"):
        folders_of(root)


@pytest.mark.parametrize("name,kind", [("z_image_turbo_bf16", "turbo"), ("z_image_bf16", "base"),
                                       ("Tongyi-MAI/Z-Image", "base"), ("models--Tongyi-MAI--Z-Image-Turbo", "turbo"),
                                       ("my_finetune", "turbo"), ("z-image-Q8_0", "base")])
def test_kind_from_the_name(name, kind):
    assert kind_of(name) == kind


def test_models_from_setting_from_flags_toml_and_env(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    s = load_settings(["--models-from", str(a), "--models-from", str(b)], env={}, default_config=None)
    assert s.models_from == (str(a), str(b))
    toml = tmp_path / "c.toml"
    toml.write_text(f'models_from = ["{a}", "{b}"]\ntext_encoder = "/x/qwen.safetensors"\n')
    s = load_settings(["--config", str(toml)], env={}, default_config=None)
    assert s.models_from == (str(a), str(b)) and s.text_encoder == "/x/qwen.safetensors"
    s = load_settings([], env={"ZIMAGE_MODELS_FROM": f"{a}{os.pathsep}{b}"}, default_config=None)
    assert s.models_from == (str(a), str(b))
    with pytest.raises(ConfigError, match="models_from: .*missing is not a folder"):
        load_settings(["--models-from", str(tmp_path / "missing")], env={}, default_config=None)
    toml.write_text("models_from = [1, 2]\n")
    with pytest.raises(ConfigError, match="a list of folders"):
        load_settings(["--config", str(toml)], env={}, default_config=None)
