import json

from zimage.store.cache import candidate_dirs, find_complete_copy, quick_check, safetensors_problem


def shard(model):
    return sorted((model / "transformer").glob("*.safetensors"))[0]


def test_complete_model_has_no_problems(model_copy):
    assert quick_check(model_copy) == []


def test_truncated_shard_is_found_by_its_header(model_copy):
    f = shard(model_copy)
    data = f.read_bytes()
    f.write_bytes(data[:-100])
    problems = quick_check(model_copy)
    assert [p.path for p in problems] == [f"transformer/{f.name}"]
    assert "truncated" in problems[0].reason


def test_missing_shard_and_missing_component(model_copy):
    shard(model_copy).unlink()
    problems = quick_check(model_copy)
    assert any(p.reason == "missing" for p in problems)
    (model_copy / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    assert any(p.path == "vae" for p in quick_check(model_copy))


def test_corrupt_model_index(model_copy):
    (model_copy / "model_index.json").write_text("{not json")
    assert quick_check(model_copy)[0].path == "model_index.json"


def test_garbage_header(tmp_path):
    f = tmp_path / "x.safetensors"
    f.write_bytes(b"\xff" * 64)
    assert safetensors_problem(f)


def test_finds_modelscope_layouts_new_and_legacy(tmp_path, tiny_model_dir):
    import shutil

    base = tmp_path / "cache"
    legacy = base / "hub" / "models" / "Tongyi-MAI" / "Z-Image-Turbo"
    assert legacy in candidate_dirs("Tongyi-MAI/Z-Image-Turbo", base)
    assert find_complete_copy("Tongyi-MAI/Z-Image-Turbo", base) is None
    shutil.copytree(tiny_model_dir, legacy)
    assert find_complete_copy("Tongyi-MAI/Z-Image-Turbo", base) == legacy
    new = base / "models" / "Tongyi-MAI--Z-Image-Turbo" / "snapshots" / "master"
    shutil.copytree(tiny_model_dir, new)
    assert find_complete_copy("Tongyi-MAI/Z-Image-Turbo", base) == new
    # An incomplete new-layout copy is skipped in favour of a complete older one.
    json.dump({"_class_name": "ZImagePipeline", "vae": ["diffusers", "AutoencoderKL"]},
              open(new / "model_index.json", "w"))
    (new / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    assert find_complete_copy("Tongyi-MAI/Z-Image-Turbo", base) == legacy


def test_pickle_weights_are_refused_with_a_reason(model_copy):
    vae = model_copy / "vae" / "diffusion_pytorch_model.safetensors"
    vae.rename(vae.with_suffix(".bin"))
    problems = quick_check(model_copy)
    assert [p.path for p in problems] == ["vae/diffusion_pytorch_model.bin"]
    assert "pickle" in problems[0].reason and not problems[0].missing
