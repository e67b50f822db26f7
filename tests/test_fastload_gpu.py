"""The fast loader's CUDA path (pinned staging, streams) and pinned idle unload. Runs on the GPU machine;
skipped elsewhere. The CPU suite covers the same logic through the CPU path (test_fastload.py)."""
from __future__ import annotations

import pytest
import torch

from zimage.engine import fastload
from zimage.engine.loader import load_pipeline

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def tensors(module) -> dict:
    return dict(module.named_parameters()) | dict(module.named_buffers())


def test_fast_cuda_load_equals_from_pretrained_and_generates_the_same(tiny_model_dir, monkeypatch):
    from diffusers import ZImagePipeline

    monkeypatch.setattr(fastload, "CHUNK_BYTES", 16384)     # many chunks: staging buffers get reused
    fast = load_pipeline(tiny_model_dir, torch.bfloat16, "cuda:0", fast=True)
    plain = ZImagePipeline.from_pretrained(str(tiny_model_dir), torch_dtype=torch.bfloat16).to("cuda:0")
    for name in ("transformer", "vae", "text_encoder"):
        a, b = tensors(getattr(fast, name)), tensors(getattr(plain, name))
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].device.type == "cuda" and torch.equal(a[k], b[k]), f"{name}.{k}"
    kw = dict(prompt="a cat", width=256, height=256, num_inference_steps=2, guidance_scale=0.0)
    one = fast(**kw, generator=torch.Generator("cpu").manual_seed(1)).images[0]
    two = plain(**kw, generator=torch.Generator("cpu").manual_seed(1)).images[0]
    assert one.tobytes() == two.tobytes()


def test_pinned_idle_unload_round_trip(tiny_model_dir):
    from zimage.engine.placement import TorchPlacement

    pipe = load_pipeline(tiny_model_dir, torch.bfloat16, "cuda:0", fast=True)
    before = {k: v.clone() for k, v in tensors(pipe.transformer).items()}
    place = TorchPlacement("cuda:0")
    place.move(pipe, "cpu")
    assert all(t.device.type == "cpu" and t.is_pinned() for t in tensors(pipe.transformer).values())
    place.move(pipe, "cuda:0")
    after = tensors(pipe.transformer)
    assert all(torch.equal(after[k], v) and after[k].device.type == "cuda" for k, v in before.items())
