"""The speed-up policy (zimage/engine/speed.py) on the tiny model: fp8 used only where it can run,
its note for the page, the plan text, and fp8 undone in RAM before a low-VRAM plan."""
from __future__ import annotations

import pytest
import torch

from zimage.config_load import load_settings
from zimage.engine import fp8, speed
from zimage.engine.loader import load_pipeline


class Placement:
    """Records what the policy asks of the placement (no GPU here)."""

    def __init__(self):
        self.calls = []

    def free_memory(self):
        self.calls.append("free")

    def move(self, pipe, device):
        self.calls.append(("move", device))


@pytest.fixture
def pipe(tiny_model_dir):
    return load_pipeline(tiny_model_dir, torch.bfloat16, "cpu")


def test_fp8_off_touches_nothing_and_says_nothing(pipe):
    placement = Placement()
    off = load_settings([], env={})
    assert speed.use_fp8(pipe, off, placement, (9, 0), True) is None
    assert not fp8.is_applied(pipe) and placement.calls == []
    assert speed.resident_plan(pipe, off) == "everything on the GPU"


def test_fp8_on_a_gpu_that_can_run_it_converts_and_the_plan_says_so_then_leaves_in_ram(pipe):
    placement, on = Placement(), load_settings(["--fp8", "on"], env={})
    assert speed.use_fp8(pipe, on, placement, (9, 0), True) == ""
    assert fp8.is_applied(pipe) and placement.calls == []
    assert speed.resident_plan(pipe, on) == "everything on the GPU, fp8 matmuls in the transformer blocks"
    speed.leave_fp8(pipe, on, placement)
    assert not fp8.is_applied(pipe) and placement.calls == [("move", "cpu")]
    assert speed.resident_plan(pipe, on) == "everything on the GPU"


def test_fp8_asked_for_without_a_cuda_gpu_runs_bf16_with_a_note(pipe):
    placement = Placement()
    note = speed.use_fp8(pipe, load_settings(["--fp8", "on"], env={}), placement, None, True)
    assert note == "fp8 needs a CUDA GPU; running bf16." and not fp8.is_applied(pipe)


def test_no_room_for_the_fp8_copies_runs_bf16_and_frees_what_was_made(pipe, monkeypatch):
    def no_room(linear):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 150 MiB")
    monkeypatch.setattr(fp8.Fp8Linear, "from_linear", staticmethod(no_room))
    placement = Placement()
    note = speed.use_fp8(pipe, load_settings(["--fp8", "on"], env={}), placement, (9, 0), True)
    assert note.startswith("Not enough VRAM to convert the blocks to fp8") and not fp8.is_applied(pipe)
    assert placement.calls == ["free"]
