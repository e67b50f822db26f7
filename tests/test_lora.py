"""engine/lora.py: LoRAs read with diffusers' Z-Image converter, fused into the tiny transformer's
Linears in place, and taken out again bit for bit."""
import copy

import pytest
import torch

from zimage.errors import LoraMismatch, LoraNeedsFullWeights, LoraUnreadable


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    from zimage.engine.loader import load_pipeline

    return load_pipeline(tiny_model_dir, torch.float32, "cpu", None, True)


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model_dir):
    from zimage.testing.tiny_lora import make_tiny_loras

    return make_tiny_loras(tmp_path_factory.mktemp("loras"), tiny_model_dir)


@pytest.fixture
def state(pipe):
    from zimage.engine.lora import LoraState

    st = LoraState(pipe.transformer)
    yield st
    st.restore()


def weights_of(transformer) -> dict:
    return {n: p.detach().clone() for n, p in transformer.named_parameters()}


def same_weights(transformer, before: dict) -> bool:
    return all(torch.equal(p, before[n]) for n, p in transformer.named_parameters())


def forward(transformer) -> torch.Tensor:
    """The transformer's output on one fixed input (latent, timestep, caption features)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 1, 8, 8, generator=g)
    cap = torch.randn(7, 32, generator=g)
    with torch.inference_mode():
        return transformer([x], torch.tensor([0.4]), [cap], return_dict=False)[0][0].clone()


def read(files, kind):
    from zimage.engine.lora import read_lora

    return read_lora(files[kind])


@pytest.mark.parametrize("kind", ["diffusers", "kohya", "comfy"])
def test_each_format_changes_the_output_and_strength_zero_leaves_it_bit_identical(pipe, files, state, kind):
    base_out, base_w = forward(pipe.transformer), weights_of(pipe.transformer)
    lora = read(files, kind)
    applied = state.apply([(lora, 1.0)])
    assert applied[0].match.counts() == "56 of 56 keys match Z-Image's transformer" and applied[0].note == ""
    assert (forward(pipe.transformer) - base_out).abs().max() > 1e-2
    state.apply([(lora, 0.0)])
    assert torch.equal(forward(pipe.transformer), base_out) and same_weights(pipe.transformer, base_w)


def test_fused_weight_is_strength_times_alpha_over_rank_times_up_at_down(pipe, files, state):
    """Checked against the raw kohya file, independently of diffusers' converter: alpha 2, rank 4."""
    from safetensors.torch import load_file

    raw = load_file(str(files["kohya"]))
    module = pipe.transformer.get_submodule("layers.1.feed_forward.w2")
    before = module.weight.detach().clone()
    state.apply([(read(files, "kohya"), 0.8)])
    base = "lora_unet_layers_1_feed_forward_w2"
    up, down = raw[f"{base}.lora_up.weight"].float(), raw[f"{base}.lora_down.weight"].float()
    alpha, rank = raw[f"{base}.alpha"].item(), down.shape[0]
    assert (alpha, rank) == (2.0, 4)
    expected = before + 0.8 * (alpha / rank) * up @ down
    assert torch.allclose(module.weight, expected, atol=1e-5)


def test_two_stacked_loras_are_the_sum_of_each(pipe, files, state):
    a, b = read(files, "diffusers"), read(files, "comfy")
    base = weights_of(pipe.transformer)
    state.apply([(a, 0.7)])
    only_a = weights_of(pipe.transformer)
    state.apply([(b, -0.4)])
    only_b = weights_of(pipe.transformer)
    state.apply([(a, 0.7), (b, -0.4)])
    assert [x.lora for x in state.applied] == ["diffusers_style.safetensors", "comfy_style.safetensors"]
    changed = 0
    for n, p in pipe.transformer.named_parameters():
        expected = base[n] + (only_a[n] - base[n]) + (only_b[n] - base[n])
        assert torch.allclose(p, expected, atol=1e-5), n
        changed += not torch.equal(p, base[n])
    assert changed == 28                              # the 4 blocks' 7 attention + feed-forward Linears


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_switch_and_restore_give_bit_identical_weights_in_the_same_tensors(tiny_model_dir, files, dtype):
    """bf16 is where subtracting a delta back would not be exact; the saved copies are."""
    from zimage.engine.loader import load_pipeline
    from zimage.engine.lora import LoraState

    transformer = load_pipeline(tiny_model_dir, dtype, "cpu", None, True).transformer
    base = weights_of(transformer)
    params = {n: p for n, p in transformer.named_parameters()}
    ptrs = {n: p.data_ptr() for n, p in params.items()}
    st = LoraState(transformer)
    st.apply([(read(files, "kohya"), 1.0)])
    assert not same_weights(transformer, base)
    st.apply([(read(files, "diffusers"), 1.5)])          # switch: from the base, not on top of kohya
    switched = weights_of(transformer)
    st.restore()
    assert same_weights(transformer, base) and not st.active and st.applied == []
    fresh = LoraState(transformer)
    fresh.apply([(read(files, "diffusers"), 1.5)])
    assert same_weights(transformer, switched)           # the same as diffusers alone on the base
    fresh.apply([])                                      # an empty set is the base model
    assert same_weights(transformer, base) and not fresh.active
    assert all(p is params[n] and p.data_ptr() == ptrs[n] for n, p in transformer.named_parameters())


@pytest.mark.parametrize("kind, counts", [("other_model", "0 of 6 keys match Z-Image's transformer"),
                                          ("wrong_shape", "0 of 56 keys match Z-Image's transformer")])
def test_a_lora_for_another_model_is_refused_and_the_model_keeps_its_weights(pipe, files, state, kind, counts):
    state.apply([(read(files, "diffusers"), 1.0)])
    before = weights_of(pipe.transformer)
    with pytest.raises(LoraMismatch) as err:
        state.apply([(read(files, kind), 1.0)])
    assert files[kind].name in err.value.message and counts in err.value.message
    assert err.value.http_status == 422 and err.value.lora == files[kind].name
    if kind == "wrong_shape":
        assert "other shapes" in err.value.message
    assert same_weights(pipe.transformer, before)
    assert [a.lora for a in state.applied] == ["diffusers_style.safetensors"]


def test_a_corrupt_file_is_a_typed_error_naming_it(files):
    with pytest.raises(LoraUnreadable) as err:
        read(files, "corrupt")
    assert "corrupt.safetensors" in err.value.message and err.value.http_status == 422


def test_a_pickle_file_is_refused_without_being_opened(files, monkeypatch):
    import builtins

    from zimage.engine.lora import read_lora

    with pytest.raises(Exception):
        torch.load(files["pickle"], weights_only=False)         # the bytes would crash an unpickler
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    with pytest.raises(LoraUnreadable) as err:
        read_lora(files["pickle"])
    assert "pickle files can run code" in err.value.message and str(files["pickle"]) not in opened


def test_non_finite_numbers_are_refused(files, tmp_path):
    from safetensors.torch import load_file, save_file

    from zimage.engine.lora import read_lora

    tensors = load_file(str(files["diffusers"]))
    key = next(iter(tensors))
    tensors[key][0, 0] = float("nan")
    save_file(tensors, str(tmp_path / "nan.safetensors"))
    with pytest.raises(LoraUnreadable, match="non-finite"):
        read_lora(tmp_path / "nan.safetensors")


def test_a_half_matching_lora_applies_what_fits_and_says_how_much_did_not(pipe, files, state):
    base_out, base = forward(pipe.transformer), weights_of(pipe.transformer)
    applied = state.apply([(read(files, "half_match"), 1.0)])
    note = applied[0].note
    assert "half_match.safetensors" in note and "28 of 56 keys match Z-Image's transformer" in note
    assert "single_blocks.0.attn.to_q" in note and state.notes() == [note]
    changed = {n for n, p in pipe.transformer.named_parameters() if not torch.equal(p, base[n])}
    assert len(changed) == 14 and changed == {f"{m}.weight" for m in applied[0].match.fits}
    assert not torch.equal(forward(pipe.transformer), base_out)


def test_the_picture_changes_with_a_lora_and_comes_back_after_restore(pipe, files, state):
    def image():
        with torch.inference_mode():
            return pipe(prompt="a cat", width=64, height=64, num_inference_steps=2, guidance_scale=0.0,
                        generator=torch.Generator("cpu").manual_seed(5)).images[0].tobytes()

    base = image()
    state.apply([(read(files, "kohya"), 1.0)])
    assert image() != base
    state.restore()
    assert image() == base


def _int8(transformer):
    from zimage.engine.quantize import quantize_module

    quantize_module("transformer", transformer)


def _fp8(transformer):
    from types import SimpleNamespace

    from zimage.engine import fp8

    fp8.apply(SimpleNamespace(transformer=transformer))


@pytest.mark.parametrize("quantize, kind", [(_int8, "int8"), (_fp8, "fp8")])
def test_quantized_transformers_are_refused_clearly_and_left_alone(pipe, files, quantize, kind):
    from zimage.engine.lora import LoraState

    transformer = copy.deepcopy(pipe.transformer)
    quantize(transformer)
    before = {n: t.clone() for n, t in transformer.state_dict().items()}
    with pytest.raises(LoraNeedsFullWeights) as err:
        LoraState(transformer).apply([(read(files, "kohya"), 1.0)])
    assert kind in err.value.message and "kohya_style.safetensors" in err.value.message
    assert err.value.http_status == 409
    assert all(torch.equal(t, before[n]) for n, t in transformer.state_dict().items())


def test_peft_metadata_alpha_and_alpha_pattern_scale_the_fused_delta(pipe, files, state, tmp_path):
    """A diffusers/PEFT file saved by save_lora_weights carries lora_alpha (and per-module
    alpha_pattern) in `lora_adapter_metadata`: scale alpha / rank, as PEFT's forward uses."""
    import json

    from safetensors.torch import load_file, save_file

    from zimage.engine.lora import read_lora

    raw = load_file(str(files["diffusers"]))
    meta = {"format": "pt", "lora_adapter_metadata": json.dumps(
        {"transformer.r": 4, "transformer.lora_alpha": 8, "transformer.alpha_pattern": {"layers.0.attention.to_q": 2}})}
    save_file(raw, str(tmp_path / "peft.safetensors"), metadata=meta)
    base = weights_of(pipe.transformer)
    state.apply([(read_lora(tmp_path / "peft.safetensors"), 1.0)])
    for module, scale in [("layers.1.feed_forward.w2", 8 / 4), ("layers.0.attention.to_q", 2 / 4)]:
        up, down = raw[f"transformer.{module}.lora_B.weight"], raw[f"transformer.{module}.lora_A.weight"]
        got = pipe.transformer.get_submodule(module).weight
        assert torch.allclose(got, base[f"{module}.weight"] + scale * up @ down, atol=1e-5), module


def test_restore_refuses_when_fp8_swapped_the_modules_under_fused_weights(tiny_model_dir, files):
    """The manager must restore before fp8 / int8: copying bf16 originals into fp8 modules would
    be garbage, so restore says so instead."""
    from types import SimpleNamespace

    from zimage.engine import fp8
    from zimage.engine.loader import load_pipeline
    from zimage.engine.lora import LoraState
    from zimage.errors import IllegalTransition

    transformer = load_pipeline(tiny_model_dir, torch.bfloat16, "cpu", None, True).transformer
    st = LoraState(transformer)
    st.apply([(read(files, "kohya"), 1.0)])
    fp8.apply(SimpleNamespace(transformer=transformer))
    with pytest.raises(IllegalTransition, match="changed while LoRAs were fused"):
        st.restore()


def test_a_failure_half_way_through_fusing_leaves_the_base_model(pipe, files, state, monkeypatch):
    """An out-of-memory on the 10th of 28 weights: the 9 already fused are put back."""
    from zimage.engine import lora as lora_mod

    base = weights_of(pipe.transformer)
    calls = []
    real = lora_mod.terms

    def failing(*args):
        calls.append(1)
        if len(calls) == 10:
            raise RuntimeError("CUDA out of memory (injected)")
        return real(*args)

    monkeypatch.setattr(lora_mod, "terms", failing)
    with pytest.raises(RuntimeError, match="injected"):
        state.apply([(read(files, "kohya"), 1.0)])
    assert len(calls) == 10 and same_weights(pipe.transformer, base) and not state.active


@pytest.mark.parametrize("strength", [float("nan"), float("inf")])
def test_a_non_finite_strength_is_refused_before_anything_changes(pipe, files, state, strength):
    from zimage.errors import InvalidRequest

    base = weights_of(pipe.transformer)
    with pytest.raises(InvalidRequest, match="diffusers_style.safetensors"):
        state.apply([(read(files, "diffusers"), strength)])
    assert same_weights(pipe.transformer, base)


def test_a_fused_qkv_lora_is_split_over_to_q_to_k_to_v(pipe, files, state):
    """Kohya keys of Z-Image's original tree (attention.qkv): diffusers' converter splits them."""
    from safetensors.torch import load_file

    raw = load_file(str(files["fused_qkv"]))
    base = weights_of(pipe.transformer)
    applied = state.apply([(read(files, "fused_qkv"), 1.0)])
    assert applied[0].note == "" and len(applied[0].match.fits) == 12        # 4 blocks x q, k, v
    key = "lora_unet_layers_1_attention_qkv"                                  # alpha = rank: scale 1
    up, down = raw[f"{key}.lora_up.weight"], raw[f"{key}.lora_down.weight"]
    for i, proj in enumerate("qkv"):
        module = f"layers.1.attention.to_{proj}"
        got = pipe.transformer.get_submodule(module).weight
        assert torch.allclose(got, base[f"{module}.weight"] + up[32 * i:32 * (i + 1)] @ down, atol=1e-5)


def test_switching_reuses_the_kept_copies_and_release_frees_them(tiny_model_dir, files):
    """The first set copies the base weights once; a switch restores from those copies and fuses
    the next set without copying again (what keeps a switch under a second on the full model)."""
    from zimage.engine.loader import load_pipeline
    from zimage.engine.lora import LoraState

    transformer = load_pipeline(tiny_model_dir, torch.bfloat16, "cpu", None, True).transformer
    base = weights_of(transformer)
    st = LoraState(transformer)
    st.apply([(read(files, "kohya"), 1.0)])
    copies = dict(st._saved)
    assert st.saved_bytes > 0
    st.apply([(read(files, "diffusers"), 0.5)])
    st.restore()
    assert st._saved == copies and all(st._saved[n] is t for n, t in copies.items())
    assert same_weights(transformer, base) and not st.active
    st.apply([(read(files, "comfy"), 1.0)])
    st.release()
    assert st._saved == {} and same_weights(transformer, base)
