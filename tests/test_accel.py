"""Attention backend and regional-compile selection, and their effect on the picture (CPU, tiny model)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_z_image import ZSingleStreamAttnProcessor

from zimage.config import ConfigError
from zimage.config_load import load_settings
from zimage.engine import accel
from zimage.engine.loader import load_pipeline

KW = dict(prompt="a cat", width=256, height=256, num_inference_steps=3, guidance_scale=0.0)


def image(pipe, seed=5) -> np.ndarray:
    with torch.inference_mode():
        return np.asarray(pipe(**KW, generator=torch.Generator().manual_seed(seed)).images[0]).astype(np.int16)


@pytest.mark.parametrize("setting, capability, fa3, expected", [
    ("auto", (9, 0), True, "_flash_3"),          # Hopper with FlashAttention 3 installed
    ("auto", (9, 0), False, "native"),           # Hopper without it: PyTorch SDPA
    ("auto", (8, 9), True, "native"),            # Ada: FA3 is Hopper-only
    ("auto", None, True, "native"),              # no GPU
    ("_native_cudnn", (9, 0), True, "_native_cudnn"),   # an explicit choice is kept
])
def test_attention_choice(setting, capability, fa3, expected):
    assert accel.choose_attention(setting, capability, lambda name: fa3 and name == "flash_attn_interface") == expected


@pytest.mark.parametrize("setting, on_cuda, triton, expected", [
    ("auto", True, True, True),                  # resident or a low-VRAM plan (compiled forwards under its hooks)
    ("auto", True, False, False),                # no Triton: inductor cannot make GPU kernels
    ("auto", False, True, False),                # CPU
    ("on", True, False, True),
    ("on", False, True, False),
    ("off", True, True, False),
])
def test_compile_choice(setting, on_cuda, triton, expected):
    assert accel.want_compile(setting, on_cuda, lambda name: triton and name == "triton") is expected


def test_settings_reject_unknown_backends_and_modes():
    assert load_settings(["--attention", "_native_cudnn", "--compile", "off"], env={}).attention == "_native_cudnn"
    with pytest.raises(ConfigError, match="attention"):
        load_settings(["--attention", "warp-speed"], env={})
    with pytest.raises(ConfigError, match="compile"):
        load_settings([], env={"ZIMAGE_COMPILE": "maybe"})


def test_default_path_matches_plain_diffusers(tiny_model_dir):
    from diffusers import ZImagePipeline

    plain = ZImagePipeline.from_pretrained(str(tiny_model_dir), torch_dtype=torch.float32)
    plain.set_progress_bar_config(disable=True)
    ours = load_pipeline(tiny_model_dir, torch.float32, "cpu")
    assert accel.set_attention(ours, accel.choose_attention("auto", None)) == "native"
    assert np.abs(image(ours) - image(plain)).max() <= 1


def test_an_unavailable_backend_falls_back_to_sdpa(tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir, torch.float32, "cpu")
    expected = image(pipe)
    if accel.module_available("flash_attn"):
        pytest.skip("flash-attn is installed here")
    assert accel.set_attention(pipe, "flash") == "native"
    assert np.array_equal(image(pipe), expected)


def test_compiled_blocks_give_the_same_picture_and_can_be_undone(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    pipe = load_pipeline(tiny_model_dir, torch.float32, "cpu")
    expected = image(pipe)
    accel.compile_blocks(pipe, tmp_path / "compile", backend="eager")   # dynamo's tracing, no code generation
    assert accel.is_compiled(pipe) and (tmp_path / "compile").is_dir()
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "compile")
    assert np.abs(image(pipe) - expected).max() <= 1
    assert {type(p).__name__ for p in processors(pipe)} == {"RealRopeAttnProcessor"}
    accel.uncompile_blocks(pipe)
    assert not accel.is_compiled(pipe)
    assert {type(p) for p in processors(pipe)} == {ZSingleStreamAttnProcessor}
    assert np.array_equal(image(pipe), expected)


def processors(pipe) -> list:
    return [m.processor for m in pipe.transformer.modules() if hasattr(m, "processor")]


def test_real_rotary_embedding_equals_the_complex_one():
    torch.manual_seed(0)
    x = torch.randn(2, 9, 4, 16, dtype=torch.bfloat16)
    freqs = torch.polar(torch.ones(2, 9, 8), torch.rand(2, 9, 8) * 6.3)        # complex64, like Z-Image's
    want = torch.view_as_real(torch.view_as_complex(x.float().reshape(2, 9, 4, 8, 2)) * freqs.unsqueeze(2)).flatten(3)
    got = accel.rotate_real(x, freqs)
    assert got.dtype == torch.bfloat16 and got.shape == x.shape
    assert torch.allclose(got.float(), want.type_as(x).float(), atol=1e-2, rtol=0)


def test_the_real_rope_processor_keeps_the_backend_and_the_picture(tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir, torch.float32, "cpu")
    expected = image(pipe)
    accel._swap_processors(pipe, accel.real_rope_processor())
    assert np.abs(image(pipe) - expected).max() <= 1
    pipe.transformer.set_attention_backend("_native_math")
    accel._swap_processors(pipe, accel.real_rope_processor())
    assert {str(p._attention_backend) for p in processors(pipe)} == {"AttentionBackendName._NATIVE_MATH"}


class GraphCounter:
    """A torch.compile backend that runs the traced graph as it is and counts the graphs made:
    dynamo's real tracing and guards, no code generation."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


def test_compiled_forwards_under_streaming_hooks_give_the_eager_plans_pixels_and_compile_once(tiny_model_dir):
    """Low-VRAM plans (issue 21): each block's forward compiled, the streaming hooks eager around it.
    The graphs are made once for all blocks (resident and streamed, whose weights point at a slot
    for each call) and reused by another plan, an int8 plan and a LoRA added in the slot."""
    from zimage.engine.offload import LowVramRuntime
    from zimage.engine.planning import Plan
    from zimage.engine.quantize import COMPONENTS, quantize_module

    torch._dynamo.reset()
    pipe = load_pipeline(tiny_model_dir, torch.float32, "cpu")
    runtime = LowVramRuntime(pipe, Plan(None, 1, 3, False, 0), "cpu")       # 1 resident, 3 streamed
    eager = image(pipe)
    counter = GraphCounter()
    accel.compile_block_forwards(pipe.transformer, None, counter)
    assert accel.is_compiled(pipe)
    assert np.abs(image(pipe) - eager).max() <= 1
    made = counter.graphs
    # 4 blocks of two kinds (modulated, context refiner); the modulated kind turns dynamic once
    assert 0 < made <= 3
    assert np.abs(image(pipe, seed=6) - image(pipe, seed=6)).max() == 0 and counter.graphs == made

    runtime.remove("cpu")                                                    # another plan, no compile
    runtime = LowVramRuntime(pipe, Plan(None, 3, 1, True, 0), "cpu")
    assert np.abs(image(pipe) - eager).max() <= 1 and counter.graphs == made

    carrier = runtime.lora_carrier                                           # a LoRA added in the slot
    linear = next(m for m in transformer_blocks(pipe.transformer)[3].modules()
                  if isinstance(m, torch.nn.Linear) and carrier.carries(m))
    g = torch.Generator().manual_seed(1)
    up = torch.randn(linear.out_features, 2, generator=g) * 0.5
    down = torch.randn(2, linear.in_features, generator=g) * 0.5
    carrier.set_loras({linear: (up, down)})
    with_lora = image(pipe)
    assert np.abs(with_lora - eager).max() > 1 and counter.graphs == made
    accel.uncompile_blocks(pipe)
    assert not accel.is_compiled(pipe)
    assert np.abs(image(pipe) - with_lora).max() <= 1                        # the same LoRA, eagerly
    runtime.remove("cpu")

    q = load_pipeline(tiny_model_dir, torch.float32, "cpu")                  # int8: dequantized into the slot
    for name in COMPONENTS:
        quantize_module(name, getattr(q, name))
    runtime = LowVramRuntime(q, Plan(None, 1, 3, False, 0, quantized=True), "cpu")
    int8_eager = image(q)
    accel.compile_block_forwards(q.transformer, None, counter)
    assert np.abs(image(q) - int8_eager).max() <= 1 and counter.graphs == made
    runtime.remove("cpu")


def transformer_blocks(transformer):
    from zimage.engine.anatomy import transformer_blocks as blocks

    return blocks(transformer)
