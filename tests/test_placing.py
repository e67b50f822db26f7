"""The placement policy: the budget in effect, where the pipeline belongs, the budget after an OOM."""
from __future__ import annotations

import pytest

from zimage.engine.placing import LOW_VRAM_BUDGET_BYTES, budget_after_oom, budget_bytes, out_of_memory, target_state
from zimage.engine.planning import WORKING_BYTES
from zimage.state import LoadState

GiB = 2**30


def never() -> int:
    raise AssertionError("the free VRAM was asked for although the decision did not need it")


def test_budget_prefers_the_lowered_one_then_the_setting_then_low_vram_then_free_vram():
    assert budget_bytes(3 * GiB, "20", True, never) == 3 * GiB
    assert budget_bytes(None, "1.5", True, never) == int(1.5 * GiB)
    assert budget_bytes(None, "auto", True, never) == LOW_VRAM_BUDGET_BYTES == 8 * GiB
    assert budget_bytes(None, "auto", False, lambda: 70 * GiB) == 70 * GiB


def test_without_a_gpu_the_pipeline_stays_on_the_cpu():
    assert target_state(has_gpu=False, low_vram=True, lowered=True, quantized=True, model_bytes=GiB,
                        budget=never) == LoadState.ON_CPU


@pytest.mark.parametrize("flag", ["low_vram", "lowered", "quantized"])
def test_low_vram_a_lowered_budget_or_quantized_weights_mean_a_plan(flag):
    flags = {**dict(low_vram=False, lowered=False, quantized=False), flag: True}
    assert target_state(has_gpu=True, model_bytes=GiB, budget=never, **flags) == LoadState.OFFLOADED


def test_weights_that_do_not_fit_the_budget_with_working_memory_are_offloaded():
    weights = 20 * GiB
    fits = dict(has_gpu=True, low_vram=False, lowered=False, quantized=False, model_bytes=weights)
    assert target_state(**fits, budget=lambda: weights + WORKING_BYTES) == LoadState.ON_GPU
    assert target_state(**fits, budget=lambda: weights + WORKING_BYTES - 1) == LoadState.OFFLOADED


def test_before_the_weights_are_known_the_budget_is_not_asked():
    assert target_state(has_gpu=True, low_vram=False, lowered=False, quantized=False, model_bytes=0,
                        budget=never) == LoadState.ON_GPU


def test_after_an_oom_the_budget_is_a_quarter_below_the_smaller_of_in_use_and_what_the_gpu_holds():
    assert budget_after_oom(16 * GiB, 40 * GiB) == 12 * GiB
    assert budget_after_oom(76 * GiB, 20 * GiB) == 15 * GiB     # a fixed budget above what the GPU has now


def test_the_oom_error_names_the_size_and_count_and_says_what_to_change():
    e = out_of_memory(1024, 768, 3)
    assert e.message == "The GPU ran out of memory at 1024x768 x 3."
    assert "Low VRAM" in e.hint and "--vram-budget" in e.hint
