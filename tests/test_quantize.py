"""The int8 quantized cache: the arithmetic, the runtime that dequantizes block by block, the cache
on disk keyed by the source files' hashes, and its failure paths (CPU, tiny model)."""
from __future__ import annotations

import functools
import shutil

import numpy as np
import pytest
import torch

from zimage.engine import quantize
from zimage.engine.anatomy import transformer_blocks
from zimage.engine.loader import load_pipeline
from zimage.engine.offload import LowVramRuntime
from zimage.engine.planning import Plan, make_plan, sizes_of
from zimage.engine.quantize import (COMPONENTS, SCALE, cache_dir_for, complete, load_quantized, quantizable_linears,
                                    quantize_module, quantize_weight, repeated_blocks, save_quantized)
from zimage.errors import DiskFull, ModelLoadFailed

KW = dict(prompt="a cat", width=256, height=256, num_inference_steps=3, guidance_scale=0.0)


def image(pipe, seed=5) -> np.ndarray:
    return np.asarray(pipe(**KW, generator=torch.Generator().manual_seed(seed)).images[0])


def quantized_pipe(model_dir):
    pipe = load_pipeline(model_dir, torch.float32, "cpu")
    for name in COMPONENTS:
        assert quantize_module(name, getattr(pipe, name)) > 0
    return pipe


def test_weight_error_is_at_most_half_a_step_per_row():
    w = torch.randn(64, 300) * torch.logspace(-3, 1, 64)[:, None]      # rows of very different scales
    q, scale = quantize_weight(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and q.abs().max() <= 127
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-7).all()
    assert (q.abs().amax(dim=1) == 127).all()                           # each row uses the full range


def test_only_block_linears_become_int8(tiny_model_dir):
    pipe = quantized_pipe(tiny_model_dir)
    for name in COMPONENTS:
        module = getattr(pipe, name)
        targets = {id(m) for m in quantizable_linears(repeated_blocks(name, module))}
        assert targets
        for m in module.modules():
            if isinstance(m, torch.nn.Linear):
                assert (m.weight.dtype == torch.int8) == (id(m) in targets) == (SCALE in m._buffers)
    assert pipe.vae.dtype == torch.float32


def _dequantized_copy(model_dir, quantized):
    """The full-precision model with every quantized weight replaced by q * scale: what the
    runtime must compute, done the plain way."""
    pipe = load_pipeline(model_dir, torch.float32, "cpu")
    for name in COMPONENTS:
        mine = dict(getattr(pipe, name).named_modules())
        for path, m in getattr(quantized, name).named_modules():
            if SCALE in m._buffers:
                mine[path].weight.data = m.weight.float() * m._buffers[SCALE][:, None]
    return pipe


@pytest.mark.parametrize("resident, text_on_gpu, dense", [(4, True, 0), (1, False, 0), (0, False, 0),
                                                          (4, True, 4), (3, False, 2)])
def test_runtime_dequantizes_exactly_like_the_plain_model(tiny_model_dir, resident, text_on_gpu, dense):
    """`dense`: resident blocks dequantized once at the plan's start (planning.with_dense_blocks)."""
    pipe = quantized_pipe(tiny_model_dir)
    expected = image(_dequantized_copy(tiny_model_dir, pipe))
    runtime = LowVramRuntime(pipe, Plan(None, resident, 4 - resident, text_on_gpu, 0, quantized=True,
                                        dense_blocks=dense), "cpu")
    blocks = transformer_blocks(pipe.transformer)
    assert all(p.dtype == torch.float32 for b in blocks[:dense] for p in b.parameters())       # at rest, bf16 here
    assert all(any(p.dtype == torch.int8 for p in b.parameters()) for b in blocks[dense:])
    assert np.array_equal(image(pipe), expected)
    assert np.array_equal(image(pipe), expected)                        # second pass: the prefetch wrapped
    for block in blocks[dense:]:                                         # at rest the weights are int8 again
        assert any(p.dtype == torch.int8 for p in block.parameters())
    runtime.remove("cpu")
    for block in blocks:                                                 # and the dense ones once the plan goes
        assert any(p.dtype == torch.int8 for p in block.parameters())
    assert np.array_equal(image(_dequantized_copy(tiny_model_dir, pipe)), expected)


def test_int8_image_stays_close_to_full_precision(tiny_model_dir):
    reference = image(load_pipeline(tiny_model_dir, torch.float32, "cpu")).astype(np.float64)
    pipe = quantized_pipe(tiny_model_dir)
    runtime = LowVramRuntime(pipe, make_plan(sizes_of(pipe), None), "cpu")
    got = image(pipe).astype(np.float64)
    runtime.remove("cpu")
    psnr = 10 * np.log10(255**2 / max(((got - reference) ** 2).mean(), 1e-12))
    assert np.isfinite(got).all() and psnr > 25, psnr


def test_sizes_of_a_quantized_pipeline_count_int8_and_bf16_slots(tiny_model_dir):
    plain, pipe = sizes_of(load_pipeline(tiny_model_dir, torch.float32, "cpu")), sizes_of(quantized_pipe(tiny_model_dir))
    assert not plain.quantized and pipe.quantized
    assert sum(pipe.blocks) < sum(plain.blocks) / 2                    # fp32 -> int8 (+ scales)
    assert pipe.block_slots == plain.blocks and pipe.text_slots == plain.text_blocks


def load(model_dir, dtype, device, quant_dir=None):
    return load_pipeline(model_dir, dtype, device, quant_dir=quant_dir)


def test_cache_saved_once_then_loaded_with_the_same_pictures(model_copy):
    calls = []
    pipe, note = load_quantized(model_copy, torch.float32, load, on_quantize=lambda: calls.append(1))
    assert calls == [1] and "made and saved" in note
    cache = cache_dir_for(model_copy, "int8")
    assert complete(cache) and cache.parent == model_copy / ".zimage-quant"
    runtime = LowVramRuntime(pipe, make_plan(sizes_of(pipe), None), "cpu")
    first = image(pipe)
    runtime.remove("cpu")

    again, note = load_quantized(model_copy, torch.float32, load, on_quantize=lambda: calls.append(2))
    assert calls == [1] and "loaded from" in note                        # no second quantization
    for name in COMPONENTS:
        for (k, a), b in zip(getattr(again, name).state_dict().items(), getattr(pipe, name).state_dict().values()):
            assert a.dtype == b.dtype and torch.equal(a, b), k
    runtime = LowVramRuntime(again, make_plan(sizes_of(again), None), "cpu")
    assert np.array_equal(image(again), first)
    runtime.remove("cpu")


def test_cache_key_follows_the_source_hashes_without_rehashing_unchanged_files(model_copy, monkeypatch):
    hashed = []
    real = quantize.sha256_file
    monkeypatch.setattr(quantize, "sha256_file", lambda p, on_bytes=None: hashed.append(p.name) or real(p, on_bytes))
    key = cache_dir_for(model_copy, "int8")
    n = len(hashed)
    assert n >= 2 and cache_dir_for(model_copy, "int8") == key and len(hashed) == n     # recorded: not re-read
    shard = sorted((model_copy / "transformer").glob("*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF                                                     # same size, new content
    shard.write_bytes(bytes(data))
    assert cache_dir_for(model_copy, "int8") != key and hashed[n:] == [shard.name]


def test_full_disk_keeps_the_model_usable_and_says_so(model_copy, monkeypatch):
    monkeypatch.setattr(quantize.shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    pipe, note = load_quantized(model_copy, torch.float32, load)
    assert "not saved" in note and "disk space" in note
    assert not complete(cache_dir_for(model_copy, "int8"))
    assert any(p.dtype == torch.int8 for p in pipe.transformer.parameters())
    with pytest.raises(DiskFull):
        save_quantized(pipe, cache_dir_for(model_copy, "int8"), "int8")


def test_a_damaged_copy_is_made_again(model_copy):
    load_quantized(model_copy, torch.float32, load)
    cache = cache_dir_for(model_copy, "int8")
    target = cache / "transformer" / "model.safetensors"
    with open(target, "r+b") as fh:                                      # valid header, keys renamed
        head = fh.read(4096)
        i = head.index(b"weight_scale")
        fh.seek(i)
        fh.write(b"weight_scalX")
    with pytest.raises(ModelLoadFailed):
        load(model_copy, torch.float32, "cpu", quant_dir=cache)
    calls = []
    pipe, note = load_quantized(model_copy, torch.float32, load, on_quantize=lambda: calls.append(1))
    assert calls == [1] and "made and saved" in note and complete(cache)


def test_quantized_copy_is_not_a_second_model_in_the_cache_listing(model_copy):
    from zimage.store.cache import quick_check

    load_quantized(model_copy, torch.float32, functools.partial(load))
    assert quick_check(model_copy) == []


def test_an_unwritable_model_folder_still_gets_an_int8_model(model_copy, monkeypatch):
    # Where the cache should go is not a folder (as on a read-only mount: nothing can be written there).
    monkeypatch.setattr(quantize, "quant_root", lambda model_dir: model_dir / "model_index.json" / ".zimage-quant")
    pipe, note = load_quantized(model_copy, torch.float32, load)
    assert "not saved" in note and any(p.dtype == torch.int8 for p in pipe.transformer.parameters())
