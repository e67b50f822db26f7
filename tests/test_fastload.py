"""The fast loader gives exactly what diffusers' from_pretrained gives, and falls back when it must."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from zimage.engine import fastload
from zimage.engine.fastload import read_shard, stream_shards, tensors_of
from zimage.engine.loader import load_pipeline
from zimage.state import LoadStage

COMPONENTS = ("transformer", "vae", "text_encoder")


def all_tensors(module) -> dict:
    out = dict(module.named_parameters())
    out.update(dict(module.named_buffers()))   # non-persistent buffers (rotary tables) included
    return out


def assert_same_pipeline(a, b):
    for name in COMPONENTS:
        ta, tb = all_tensors(getattr(a, name)), all_tensors(getattr(b, name))
        assert ta.keys() == tb.keys(), name
        for key in ta:
            assert ta[key].dtype == tb[key].dtype and torch.equal(ta[key], tb[key]), f"{name}.{key}"
        assert type(getattr(a, name)) is type(getattr(b, name))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_tensor_equals_from_pretrained(tiny_model_dir, dtype, monkeypatch):
    monkeypatch.setattr(fastload, "CHUNK_BYTES", 8192)      # many chunks per shard, across threads
    events = []
    fast = load_pipeline(tiny_model_dir, dtype, "cpu", on_progress=lambda *e: events.append(e), fast=True)
    plain = load_pipeline(tiny_model_dir, dtype, "cpu", fast=False)
    assert_same_pipeline(fast, plain)
    reads = [(done, total) for stage, done, total, _ in events if stage == LoadStage.READ]
    assert [d for d, _ in reads] == sorted(d for d, _ in reads) and len(reads) > 20
    assert reads[-1][0] == reads[-1][1] > 0
    gen = lambda: torch.Generator().manual_seed(3)   # noqa: E731
    kw = dict(prompt="a cat", width=256, height=256, num_inference_steps=2, guidance_scale=0.0)
    assert fast(**kw, generator=gen()).images[0].tobytes() == plain(**kw, generator=gen()).images[0].tobytes()


def test_component_the_fast_path_cannot_place_falls_back(model_copy, caplog):
    vae = model_copy / "vae" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file

    state = load_file(vae)
    state["decoder.unexpected_extra"] = torch.zeros(2)   # from_pretrained ignores it; exact assignment cannot
    save_file(state, vae)
    fast = load_pipeline(model_copy, torch.float32, "cpu", fast=True)
    assert "fast load could not place vae" in caplog.text
    plain = load_pipeline(model_copy, torch.float32, "cpu", fast=False)
    assert_same_pipeline(fast, plain)


def test_unaligned_offsets_are_copied_not_misviewed(tmp_path):
    tensors = {"a": torch.arange(3, dtype=torch.uint8), "b": torch.tensor([1.5, -2.25], dtype=torch.float32)}
    path = tmp_path / "x.safetensors"
    save_file(tensors, path)
    shard = read_shard(path)
    got = tensors_of(shard, stream_shards([shard], "cpu")[path])
    for key, value in tensors.items():
        assert torch.equal(got[key], value)


def test_truncated_shard_is_a_clear_error(model_copy):
    from zimage.errors import ModelLoadFailed

    shard = sorted((model_copy / "transformer").glob("*.safetensors"))[0]
    header = json.loads(shard.read_bytes()[8:8 + int.from_bytes(shard.read_bytes()[:8], "little")])
    assert header
    shard.write_bytes(shard.read_bytes()[:-64])
    with pytest.raises(ModelLoadFailed, match="Reading the weights failed"):
        load_pipeline(model_copy, torch.float32, "cpu", fast=True)
