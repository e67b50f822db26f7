"""Carrying out a plan on the CPU: block streaming, int8-free paths, packing, page-locking logic."""
from __future__ import annotations

import torch

from zimage.engine.anatomy import transformer_blocks
from zimage.engine.offload import LowVramRuntime
from zimage.engine.planning import Plan, sizes_of


def run(pipe, seed=5):
    kw = dict(prompt="a cat", width=256, height=256, num_inference_steps=3, guidance_scale=0.0)
    return pipe(**kw, generator=torch.Generator().manual_seed(seed)).images[0].tobytes()


def test_streamed_pipeline_gives_the_same_image(tiny_model_dir):
    from zimage.engine.loader import load_pipeline

    pipe = load_pipeline(tiny_model_dir, torch.float32, "cpu")
    expected = run(pipe)
    sizes = sizes_of(pipe)
    assert len(sizes.blocks) == len(transformer_blocks(pipe.transformer)) == 4
    streamed = transformer_blocks(pipe.transformer)[1:]
    before = [p.data_ptr() for b in streamed for p in b.parameters()]
    plan = Plan(None, 1, 3, False, 0)                       # 1 resident, 3 streamed, text encoder streamed
    runtime = LowVramRuntime(pipe, plan, "cpu")
    assert [s.slot_bytes > 0 for s in runtime.streamers] == [True, True]
    # at rest the streamed blocks are the loader's own tensors: nothing was copied to set the plan up
    assert [p.data_ptr() for b in streamed for p in b.parameters()] == before
    assert run(pipe) == expected
    assert run(pipe) == expected                             # a second pass (prefetch wraps around)
    runtime.remove("cpu")
    assert run(pipe) == expected


def test_pin_budget_setting():
    import psutil

    from zimage.engine.placement import pin_budget_bytes

    assert pin_budget_bytes(0) == 0
    assert pin_budget_bytes(1.5) == int(1.5 * 2**30)
    assert pin_budget_bytes(-1) == psutil.virtual_memory().total // 2


def test_small_allocations_are_packed_into_one_pinnable_block(tiny_model_dir):
    from zimage.engine.loader import load_pipeline
    from zimage.engine.offload import PINNABLE_BYTES, BlockStreamer

    pipe = load_pipeline(tiny_model_dir, torch.float32, "cpu")
    expected = run(pipe)
    blocks = transformer_blocks(pipe.transformer)
    streamer = BlockStreamer(blocks[2:], "cpu", torch.float32, pack_small=True)
    for block in blocks[2:]:          # the tiny model's shards are small: each block got one allocation
        storages = {p.untyped_storage().data_ptr() for p in block.parameters()}
        assert len(storages) == 1
        assert next(block.parameters()).untyped_storage().nbytes() >= PINNABLE_BYTES
    assert run(pipe) == expected
    streamer.remove("cpu")
    assert run(pipe) == expected


class _FakeCudart:
    """Records page-locking calls (the real ones need a GPU)."""

    def __init__(self, code=0):
        self.code, self.calls = code, []

    def cudaHostRegister(self, ptr, n, flags):
        self.calls.append(("register", ptr, n))
        return self.code

    def cudaHostUnregister(self, ptr):
        self.calls.append(("unregister", ptr))
        return 0


def test_registered_buffer_locks_one_whole_allocation_and_unlocks_before_it_goes():
    from zimage.engine.placement import RegisteredBuffer

    cudart = _FakeCudart()
    buf = RegisteredBuffer(100 * 2**20, cudart=cudart)
    ptr = buf.tensor.data_ptr()
    assert cudart.calls == [("register", ptr, 100 * 2**20)] and buf.registered
    assert buf.tensor.untyped_storage().nbytes() == 100 * 2**20       # no power-of-two rounding
    buf.release()
    assert cudart.calls[-1] == ("unregister", ptr) and buf.numel() == 0
    buf.release()                                                      # twice is harmless
    assert len(cudart.calls) == 2
    small = RegisteredBuffer(10, cudart=cudart)                        # small sizes get their own pages
    assert small.numel() == RegisteredBuffer.MIN_BYTES
    del small
    assert cudart.calls[-1][0] == "unregister"                         # never freed while registered


def test_registered_buffer_failure_leaves_plain_ram():
    from zimage.engine.placement import RegisteredBuffer

    cudart = _FakeCudart(code=2)
    buf = RegisteredBuffer(70 * 2**20, cudart=cudart)
    assert not buf.registered and buf.numel() == 70 * 2**20
    buf.release()
    assert [c[0] for c in cudart.calls] == ["register"]


def test_big_ram_allocations_behind_a_pipeline_are_found_once(tiny_model_dir):
    from zimage.engine.loader import load_pipeline
    from zimage.engine.host_pin import PINNABLE_BYTES, pinnable_storages

    pipe = load_pipeline(tiny_model_dir, torch.float32, "cpu")
    assert pinnable_storages(pipe) == []                       # the tiny model's shards are all small
    big = torch.zeros(PINNABLE_BYTES // 4)                      # one allocation shared by two parameters
    block = transformer_blocks(pipe.transformer)[0]
    params = [p for p in block.parameters()][:2]
    offset = 0
    for p in params:
        p.data = big[offset:offset + p.numel()].view(p.shape)
        offset += p.numel()
    assert pinnable_storages(pipe) == [(big.untyped_storage().data_ptr(), PINNABLE_BYTES)]


def test_host_pinner_locks_what_it_can_and_unlocks_only_its_own(monkeypatch):
    from zimage.engine.host_pin import HostPinner

    class Cudart(_FakeCudart):
        def cudaHostRegister(self, ptr, n, flags):
            super().cudaHostRegister(ptr, n, flags)
            return {2000: 712, 3000: 1}.get(ptr, 0)        # 2000 was locked before; 3000 fails
    cudart = Cudart()
    monkeypatch.setattr(torch.cuda, "cudart", lambda: cudart)
    pinner = HostPinner([(1000, 10), (2000, 20), (3000, 30), (4000, 40), (1000, 10)]).wait()
    assert [c[1] for c in cudart.calls] == [1000, 2000, 3000]    # each allocation once; stops at a failure
    assert pinner.locked == {1000, 2000} and pinner.registered == [1000] and pinner.bytes_done == 30
    pinner.close()
    assert cudart.calls[-1] == ("unregister", 1000) and len(cudart.calls) == 4


def test_host_pinner_release_unlocks_only_what_it_locked():
    from zimage.engine.host_pin import HostPinner

    class Cudart(_FakeCudart):
        def cudaHostRegister(self, ptr, n, flags):
            super().cudaHostRegister(ptr, n, flags)
            return 712 if ptr == 2000 else 0                # 2000 was locked by someone else
    cudart = Cudart()
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.cuda, "cudart", lambda: cudart)
        pinner = HostPinner([(1000, 10), (2000, 20), (3000, 30)]).wait()
        pinner.release({1000, 2000})
        assert ("unregister", 1000) in cudart.calls and ("unregister", 2000) not in cudart.calls
        assert pinner.registered == [3000] and pinner.locked == {2000, 3000}
        pinner.close()
        assert cudart.calls[-1] == ("unregister", 3000)


def _big(param) -> torch.Tensor:
    """`param`'s values moved into an allocation of its own that is big enough to be page-locked."""
    from zimage.engine.host_pin import PINNABLE_BYTES

    big = torch.zeros(PINNABLE_BYTES // param.element_size(), dtype=param.dtype)
    big[:param.numel()] = param.detach().flatten()
    return big[:param.numel()].view(param.shape)


def test_plan_setup_unlocks_ram_whose_tensors_moved_before_it_is_freed(tiny_model_dir, monkeypatch):
    """RAM that was page-locked for the setup and whose tensors then went to the GPU is unlocked
    (freed RAM that stays registered breaks later copies: "resource already mapped"); RAM the
    streamed blocks still read stays locked until the plan is removed."""
    from zimage.engine import offload
    from zimage.engine.loader import load_pipeline

    pipe = load_pipeline(tiny_model_dir, torch.float32, "cpu")
    expected = run(pipe)
    streamed_param = next(transformer_blocks(pipe.transformer)[3].parameters())
    vae_param = next(pipe.vae.parameters())
    streamed_param.data, vae_param.data = _big(streamed_param), _big(vae_param)
    kept, moved = (p.untyped_storage().data_ptr() for p in (streamed_param, vae_param))
    cudart = _FakeCudart()
    monkeypatch.setattr(torch.cuda, "cudart", lambda: cudart)
    monkeypatch.setattr(offload, "torch_device_is_cuda", lambda device: True)   # the page-locking path
    real_move = offload._move_own_tensors

    def move_to_gpu(module, device, skip):        # stands in for the copy to the GPU: new memory
        real_move(module, device, skip)
        if module is pipe.vae:
            vae_param.data = vae_param.data.clone()
    monkeypatch.setattr(offload, "_move_own_tensors", move_to_gpu)
    runtime = LowVramRuntime(pipe, Plan(None, 1, 3, True, 0), "cpu")
    registered = [c[1] for c in cudart.calls if c[0] == "register"]
    assert kept in registered and moved in registered
    assert ("unregister", moved) in cudart.calls and ("unregister", kept) not in cudart.calls
    assert run(pipe) == expected
    runtime.remove("cpu")
    assert ("unregister", kept) in cudart.calls
    assert run(pipe) == expected


def test_a_streamed_controlnet_gives_the_same_image(tiny_model_dir, tmp_path):
    """The ControlNet's own blocks in a plan: the first resident, the others streamed by their own
    streamer, between the transformer's streamed shared refiners; the picture is the resident one,
    for text to image and inpaint, and again after the plan is removed."""
    from PIL import Image

    from zimage.engine.controlnet import ControlNetSlot
    from zimage.engine.loader import load_pipeline
    from zimage.testing.tiny_controlnet import make_tiny_controlnet

    pipe = load_pipeline(tiny_model_dir, torch.float32, "cpu")
    slot = ControlNetSlot()
    slot.load(make_tiny_controlnet(tmp_path / "cn", version="2.1"), pipe.transformer, torch.float32, "cpu")
    control = Image.new("RGB", (256, 256), "white")

    def call(mode):
        kw = dict(prompt="a cat", width=256, height=256, num_inference_steps=2, guidance_scale=0.0,
                  control_image=control, generator=torch.Generator().manual_seed(3))
        if mode == "inpaint":
            kw.update(image=Image.new("RGB", (256, 256), "red"), mask_image=Image.new("L", (256, 256), 255))
        return slot.pipeline(pipe, mode)(**kw).images[0].tobytes()

    expected = {mode: call(mode) for mode in ("txt2img", "inpaint")}
    sizes = sizes_of(pipe, slot.model)
    assert len(sizes.control_blocks) == 3 and sizes.control_core > 0
    runtime = LowVramRuntime(pipe, Plan(None, 1, 3, False, 0, control_resident=1, control_streamed=2), "cpu",
                             slot.model)
    assert len(runtime.streamers) == 3
    assert call("txt2img") == expected["txt2img"] and call("txt2img") == expected["txt2img"]
    assert call("inpaint") == expected["inpaint"]
    runtime.remove("cpu")
    assert call("txt2img") == expected["txt2img"]
