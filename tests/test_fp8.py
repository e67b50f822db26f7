"""fp8 blocks (zimage/fp8.py): when they are used, their arithmetic, and the way back to bf16 (CPU,
tiny model: torch._scaled_mm runs on the CPU too; the speed is a GPU figure, in bench/)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zimage.config import ConfigError
from zimage.config_load import load_settings
from zimage.engine import fp8
from zimage.engine.anatomy import transformer_blocks
from zimage.engine.loader import load_pipeline

KW = dict(prompt="a cat", width=256, height=256, num_inference_steps=3, guidance_scale=0.0)


@pytest.mark.parametrize("setting, capability, compiled, use, note", [
    ("off", (9, 0), True, False, ""),                      # the default: bf16, nothing said
    ("on", (9, 0), True, True, ""),                        # Hopper
    ("on", (8, 9), True, True, ""),                        # Ada
    ("on", (8, 6), True, False, "8.6"),                    # Ampere: no fp8 tensor cores
    ("on", None, True, False, "CUDA GPU"),                 # CPU
    ("on", (9, 0), False, False, "compiled"),              # eager fp8 is slower than bf16
])
def test_fp8_is_used_only_where_it_can_run_fast(setting, capability, compiled, use, note):
    got_use, got_note = fp8.choose(setting, capability, compiled)
    assert got_use is use
    assert (note in got_note) if note else got_note == ""
    if note:
        assert "running bf16" in got_note


def test_settings_take_fp8_off_or_on():
    assert load_settings([], env={}).fp8 == "off"
    assert load_settings(["--fp8", "on"], env={}).fp8 == "on"
    assert load_settings([], env={"ZIMAGE_FP8": "on"}).fp8 == "on"
    with pytest.raises(ConfigError, match="fp8"):
        load_settings([], env={"ZIMAGE_FP8": "e5m2"})


@pytest.mark.parametrize("bias", [False, True])
def test_fp8_linear_is_close_to_the_bf16_one(bias):
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48, bias=bias).to(torch.bfloat16)
    x = torch.randn(2, 7, 64, dtype=torch.bfloat16) * torch.logspace(-2, 1, 7)[None, :, None].to(torch.bfloat16)
    q = fp8.Fp8Linear.from_linear(linear)
    assert q.weight.dtype == fp8.FP8 and q.weight_scale.shape == (1, 48)
    want, got = linear(x).float(), q(x).float()
    assert got.shape == want.shape and q(x).dtype == torch.bfloat16
    rel = (got - want).norm(dim=-1) / want.norm(dim=-1)
    assert rel.max() < 0.06, rel       # e4m3 has 3 mantissa bits; every token is scaled on its own
    assert torch.isfinite(got).all()


def linears_in_blocks(pipe, kind) -> int:
    return sum(isinstance(m, kind) for b in transformer_blocks(pipe.transformer)
               for part in fp8.BLOCK_PARTS for m in getattr(b, part).modules())


def image(pipe, seed=5) -> np.ndarray:
    with torch.inference_mode():
        return np.asarray(pipe(**KW, generator=torch.Generator().manual_seed(seed)).images[0]).astype(np.int16)


def test_apply_swaps_the_block_matmuls_only_and_remove_goes_back(tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir, torch.bfloat16, "cpu")
    expected = image(pipe)
    n = linears_in_blocks(pipe, torch.nn.Linear)
    adaln = [b.adaLN_modulation[0].weight.clone() for b in transformer_blocks(pipe.transformer)
             if hasattr(b, "adaLN_modulation")]
    assert fp8.apply(pipe) == n > 0 and fp8.is_applied(pipe)
    assert linears_in_blocks(pipe, fp8.Fp8Linear) == n and fp8.apply(pipe) == 0        # once only
    kept = [b.adaLN_modulation[0].weight for b in transformer_blocks(pipe.transformer) if hasattr(b, "adaLN_modulation")]
    assert all(k.dtype == torch.bfloat16 and torch.equal(k, a) for k, a in zip(kept, adaln))   # modulation stays bf16
    assert sum(p.dtype == fp8.FP8 for p in pipe.transformer.parameters()) == n      # nothing else turned fp8
    tensors = list(pipe.transformer.parameters()) + list(pipe.transformer.buffers())
    # nothing is left viewing the loader's shard buffer, which held the bf16 weights: it is freed
    assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in tensors)
    got = image(pipe)
    assert np.abs(got - expected).mean() < 8, np.abs(got - expected).mean()    # close to bf16, not equal
    weights = [m.weight.clone() for b in transformer_blocks(pipe.transformer) for m in b.modules()
               if isinstance(m, fp8.Fp8Linear)]

    assert fp8.remove(pipe) == n and not fp8.is_applied(pipe)
    assert linears_in_blocks(pipe, torch.nn.Linear) == n
    assert all(m.weight.dtype == torch.bfloat16 for b in transformer_blocks(pipe.transformer)
               for m in b.modules() if isinstance(m, torch.nn.Linear))
    assert np.abs(image(pipe) - expected).mean() < 8       # bf16 Linears holding the fp8 values
    fp8.apply(pipe)                                        # and back: the same fp8 weights again
    again = [m.weight for b in transformer_blocks(pipe.transformer) for m in b.modules() if isinstance(m, fp8.Fp8Linear)]
    assert all(torch.equal(a.view(torch.uint8), b.view(torch.uint8)) for a, b in zip(again, weights))


def test_running_out_of_memory_while_converting_leaves_the_pipeline_bf16(tiny_model_dir, monkeypatch):
    pipe = load_pipeline(tiny_model_dir, torch.bfloat16, "cpu")
    real, made = fp8.Fp8Linear.from_linear, []

    def third_fails(linear):
        if len(made) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 150 MiB")
        made.append(1)
        return real(linear)
    monkeypatch.setattr(fp8.Fp8Linear, "from_linear", staticmethod(third_fails))
    with pytest.raises(torch.OutOfMemoryError):
        fp8.apply(pipe)
    assert not fp8.is_applied(pipe)                  # no block half converted
