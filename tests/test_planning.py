"""Planning: which blocks fit which budget, with bf16 and int8 sizes, VAE tiles (pure arithmetic)."""
from __future__ import annotations

import pytest

from zimage.engine.planning import VAE_WORKING_BYTES, DoesNotFit, GiB, Plan, Sizes, _best_fit, make_plan, working_bytes

# The real Z-Image-Turbo sizes (bf16): transformer 12.31 GB = 34 blocks of ~0.347 GB + ~0.5 GB of
# embedders and final layer; text encoder 8.04 GB = 36 layers of ~0.2 GB + 0.78 GB of embeddings;
# VAE 0.17 GB.
BLOCK = int(0.347e9)
REAL = Sizes(core=int(12.31e9) - 34 * BLOCK, blocks=(BLOCK,) * 34, vae=int(0.17e9),
             text_core=int(0.78e9), text_blocks=(int((8.04e9 - 0.78e9) / 36),) * 36)


def test_everything_resident_when_it_fits_or_without_budget():
    assert make_plan(REAL, None).is_resident
    plan = make_plan(REAL, 40 * GiB)
    assert plan.is_resident and plan.streamed_blocks == 0 and plan.est_peak_bytes <= 40 * GiB


@pytest.mark.parametrize("budget_gib", [20, 16, 12, 8, 6])
def test_budget_keeps_the_most_blocks_that_fit(budget_gib):
    budget = budget_gib * GiB
    plan = make_plan(REAL, budget)
    assert not plan.is_resident and not plan.text_encoder_on_gpu
    assert plan.est_peak_bytes <= budget
    if plan.resident_blocks < 34:   # one more resident block would not fit
        bigger = Plan(budget, plan.resident_blocks + 1, plan.streamed_blocks - 1, False,
                      plan.est_peak_bytes + BLOCK)
        assert bigger.est_peak_bytes > budget
    assert plan.resident_blocks + plan.streamed_blocks == 34


def test_smaller_budgets_stream_more():
    resident = [make_plan(REAL, b * GiB).resident_blocks for b in (20, 16, 12, 8, 6)]
    assert resident == sorted(resident, reverse=True) and resident[0] > resident[-1]


def test_budget_below_the_minimum_says_so():
    with pytest.raises(DoesNotFit) as e:
        make_plan(REAL, 2 * GiB)
    assert e.value.minimum_bytes > 2 * GiB and "GiB" in str(e.value) and "--quantize int8" in e.value.hint


def test_vae_tiles_only_where_they_keep_more_blocks_resident():
    assert not make_plan(REAL, 40 * GiB).vae_tiling                  # resident: the picture is untouched
    small = make_plan(REAL, 4 * GiB)                                 # fits only with a tiled decode
    assert small.vae_tiling and small.est_peak_bytes <= 4 * GiB and "VAE in tiles" in small.describe()
    twelve = make_plan(REAL, 12 * GiB)
    untiled = Plan(12 * GiB, 0, 34, False, 0)
    for resident in range(34, -1, -1):
        if REAL.peak(resident, False, VAE_WORKING_BYTES) <= 12 * GiB:
            untiled = Plan(12 * GiB, resident, 34 - resident, False, 0)
            break
    assert twelve.vae_tiling and twelve.resident_blocks > untiled.resident_blocks


# The same model with int8 block weights: half the bytes stored, bf16-sized slots.
REAL_Q = Sizes(core=REAL.core, blocks=(BLOCK // 2,) * 34, vae=REAL.vae, text_core=REAL.text_core,
               text_blocks=tuple(b // 2 for b in REAL.text_blocks), block_slots=REAL.blocks,
               text_slots=REAL.text_blocks)


@pytest.mark.parametrize("budget_gib", [16, 12, 8, 6, 4])
def test_int8_keeps_more_blocks_resident_within_the_budget(budget_gib):
    plan, bf16 = make_plan(REAL_Q, budget_gib * GiB), make_plan(REAL, budget_gib * GiB)
    assert plan.quantized and not plan.is_resident and plan.est_peak_bytes <= budget_gib * GiB
    if budget_gib >= 6:          # at 4 GiB the int8 staging areas cost about one block
        assert plan.resident_blocks >= bf16.resident_blocks
    if budget_gib in (8, 12):
        assert plan.resident_blocks > bf16.resident_blocks


def test_int8_everything_on_the_gpu_still_needs_the_runtime():
    plan = make_plan(REAL_Q, 40 * GiB)
    assert plan.streamed_blocks == 0 and plan.text_encoder_on_gpu and plan.quantized
    assert not plan.is_resident and "int8 weights" in plan.describe()


def test_plan_description_is_readable():
    text = make_plan(REAL, 12 * GiB).describe()
    assert "streamed from RAM" in text and "streamed while encoding" in text and "12.0 GiB" in text


# The union ControlNet 2.1's own weights (bf16): 15 control layers and 2 control noise refiners of
# a transformer block's size plus their after_proj (3840 x 3840, and before_proj on the first of each).
CONTROL_BLOCK = BLOCK + int(29.5e6)
REAL_CN = Sizes(core=REAL.core, blocks=REAL.blocks, vae=REAL.vae, text_core=REAL.text_core,
                text_blocks=REAL.text_blocks, control_core=int(1.0e6), control_blocks=(CONTROL_BLOCK,) * 17)


def test_the_controlnet_is_counted_in_every_plan():
    from zimage.engine.planning import CONTROL_WORKING_BYTES, minimum_bytes

    roomy = make_plan(REAL_CN, 40 * GiB)
    assert roomy.is_resident and roomy.control_resident == 17 and "ControlNet resident" in roomy.describe()
    assert roomy.est_peak_bytes - make_plan(REAL, 40 * GiB).est_peak_bytes >= 17 * CONTROL_BLOCK
    eight = make_plan(REAL_CN, 8 * GiB)
    assert eight.est_peak_bytes <= 8 * GiB and eight.control_streamed == 17 - eight.control_resident > 0
    assert "ControlNet: " in eight.describe() and eight.resident_blocks < make_plan(REAL, 8 * GiB).resident_blocks
    assert minimum_bytes(REAL_CN) >= minimum_bytes(REAL) + 2 * CONTROL_BLOCK + CONTROL_WORKING_BYTES - GiB


@pytest.mark.parametrize("budget_gib", [24, 20, 16, 12, 8])
def test_the_controlnet_streams_before_the_transformer(budget_gib):
    """Its blocks run only for a control request: they are streamed before any transformer block,
    so text to image keeps the most resident blocks the budget allows with it loaded."""
    plan = make_plan(REAL_CN, budget_gib * GiB)
    assert plan.est_peak_bytes <= budget_gib * GiB
    if plan.streamed_blocks:
        assert plan.control_resident == 0
    from zimage.engine.planning import working_bytes

    work = working_bytes(plan.vae_tiling, control=True)
    assert REAL_CN.peak(plan.resident_blocks, plan.text_encoder_on_gpu, work, plan.control_resident) == \
        plan.est_peak_bytes
    if plan.control_resident < 17:     # one more ControlNet block would not fit
        more = REAL_CN.peak(plan.resident_blocks, plan.text_encoder_on_gpu, work, plan.control_resident + 1)
        assert more > budget_gib * GiB


def test_int8_with_the_controlnet_keeps_its_blocks_bf16_sized():
    q = Sizes(core=REAL_Q.core, blocks=REAL_Q.blocks, vae=REAL_Q.vae, text_core=REAL_Q.text_core,
              text_blocks=REAL_Q.text_blocks, block_slots=REAL_Q.block_slots, text_slots=REAL_Q.text_slots,
              control_blocks=REAL_CN.control_blocks)
    plan = make_plan(q, 8 * GiB)
    assert plan.quantized and plan.est_peak_bytes <= 8 * GiB and plan.control_resident + plan.control_streamed == 17


def test_no_plan_fits_the_controlnet_below_its_minimum():
    from zimage.engine.planning import minimum_bytes

    with pytest.raises(DoesNotFit) as e:
        make_plan(REAL_CN, minimum_bytes(REAL_CN) - 1)
    assert e.value.minimum_bytes == minimum_bytes(REAL_CN)


@pytest.mark.parametrize("budget_gib", [40, 16, 12, 8, 6, 4])
def test_int8_keeps_resident_blocks_in_bf16_with_the_room_left(budget_gib):
    """Issue 21: the room an int8 plan leaves holds resident blocks dequantized once (no dequantize
    each step), never at the cost of a resident block, within the budget; at 8 GiB there is no
    room for one (26 int8 blocks resident, as before)."""
    plan = make_plan(REAL_Q, budget_gib * GiB)
    before = _best_fit(REAL_Q, budget_gib * GiB, plan.vae_tiling)
    assert plan.resident_blocks == before.resident_blocks and plan.est_peak_bytes <= budget_gib * GiB
    assert plan.est_peak_bytes == REAL_Q.peak(plan.resident_blocks, plan.text_encoder_on_gpu,
                                              working_bytes(plan.vae_tiling), dense=plan.dense_blocks)
    one_more = REAL_Q.peak(plan.resident_blocks, plan.text_encoder_on_gpu, working_bytes(plan.vae_tiling),
                           dense=plan.dense_blocks + 1)
    assert plan.dense_blocks == plan.resident_blocks or one_more > budget_gib * GiB
    assert {40: 34, 8: 0, 4: 0}.get(budget_gib, plan.dense_blocks) == plan.dense_blocks
    if budget_gib in (16, 12):
        assert 0 < plan.dense_blocks < plan.resident_blocks


def test_all_dense_and_nothing_streamed_needs_no_slots():
    all_int8 = REAL_Q.peak(34, True, 0)
    all_dense = REAL_Q.peak(34, True, 0, dense=34)
    assert all_dense - all_int8 == sum(REAL_Q.block_slots) - sum(REAL_Q.blocks) - 2 * max(REAL_Q.block_slots)


# Z-Image-Turbo's DiT by its real shapes (diffusers' ZImageTransformer2DModel defaults: dim 3840,
# feed-forward 10240, 30 heads; 2 noise refiners and 30 layers with adaLN 256 -> 4 x 3840, 2 context
# refiners without): the 2-D weights and the 1-D norms and biases of each block, the rest in bf16.
_ATTN, _FFN, _ADALN = 4 * 3840 * 3840, 3 * 3840 * 10240, 256 * 4 * 3840
_MOD_2D, _MOD_1D = _ATTN + _FFN + _ADALN, 2 * 128 + 4 * 3840 + 4 * 3840
_CTX_2D, _CTX_1D = _ATTN + _FFN, 2 * 128 + 4 * 3840
_CORE_PARAMS = 6_154_908_736 - 32 * (_MOD_2D + _MOD_1D) - 2 * (_CTX_2D + _CTX_1D)


def dit_sizes(bytes_per_weight: float, fmt: str) -> Sizes:
    """The real model with its DiT's 2-D weights at `bytes_per_weight` (Q8_0: 34 bytes a block of
    32), norms and biases in float32, embedders in bf16; the text encoder and VAE as REAL."""
    mod = int(_MOD_2D * bytes_per_weight) + 4 * _MOD_1D
    ctx = int(_CTX_2D * bytes_per_weight) + 4 * _CTX_1D
    blocks = (mod, mod, ctx, ctx) + (mod,) * 30
    return Sizes(core=2 * _CORE_PARAMS, blocks=blocks, vae=REAL.vae, text_core=REAL.text_core,
                 text_blocks=REAL.text_blocks, dit_format=fmt)


def test_the_real_shapes_add_up_to_the_real_model():
    assert 32 * (_MOD_2D + _MOD_1D) + 2 * (_CTX_2D + _CTX_1D) + _CORE_PARAMS == 6_154_908_736
    assert 0 < _CORE_PARAMS < 20e6                          # embedders and final layer: small
    assert abs(dit_sizes(2, "bf16").dit - 12.31e9) < 0.05e9  # the bf16 file's 12.31 GB


def test_an_8_gib_budget_keeps_a_q8_0_dit_resident_and_says_why():
    q8 = dit_sizes(34 / 32, "Q8_0")
    plan = make_plan(q8, 8 * GiB)
    assert plan.streamed_blocks == 0 and plan.resident_blocks == 34 and not plan.text_encoder_on_gpu
    assert plan.est_peak_bytes <= 8 * GiB and plan.vae_tiling
    text = plan.describe()
    assert text.startswith(f"resident: Q8_0 DiT {q8.dit / GiB:.1f} GiB + text encoder visits"), text
    assert "VAE in tiles fit the 8.0 GiB budget" in text and "streamed from RAM" not in text


def test_an_8_gib_budget_streams_a_bf16_dit_and_says_why():
    bf16 = dit_sizes(2, "bf16")
    plan = make_plan(bf16, 8 * GiB)
    assert 0 < plan.resident_blocks < 34 and plan.streamed_blocks == 34 - plan.resident_blocks
    text = plan.describe()
    assert f"{plan.streamed_blocks} streamed from RAM" in text
    assert text.endswith(f"the bf16 DiT {bf16.dit / GiB:.1f} GiB does not fit whole beside the rest"), text


def test_the_text_encoders_visit_is_not_counted_beside_the_denoise():
    """Its layers' slots exist only while the prompt is encoded: the peak is the larger phase,
    not their sum (the sum would stream a Q8_0 DiT's blocks at 8 GiB)."""
    q8 = dit_sizes(34 / 32, "Q8_0")
    work = working_bytes(True)
    resident = q8.core + sum(q8.blocks) + q8.vae + q8.text_core
    assert q8.peak(34, False, work) == resident + work
    assert q8.peak(34, False, 0) == resident + 2 * max(q8.text_blocks)


def test_everything_on_the_gpu_names_the_dit_format():
    plan = make_plan(dit_sizes(34 / 32, "Q8_0"), 40 * GiB)
    assert plan.is_resident and plan.describe().startswith("everything on the GPU: Q8_0 DiT 6.1 GiB")
