import dataclasses
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from zimage.engine.manager import PipelineManager
from zimage.errors import Cancelled, ModelLoadFailed, ModelUnavailable, QueueFull
from zimage.request import GenerationRequest
from zimage.state import LoadStage, LoadState

from conftest import Gate, wait_for

SMALL = {"prompt": "a cat", "width": 256, "height": 256, "num_inference_steps": 2, "seed": 3}


def req(**kw):
    return GenerationRequest.from_mapping(dict(SMALL, **kw))


class FakeGpuPlacement:
    """Stands in for CUDA on a CPU machine: records what the manager asks, keeps tensors on the CPU."""

    gpu_device = "cuda:0"

    def __init__(self):
        self.calls = []
        self.budgets = []

    def move(self, pipe, device, on_progress=None):
        self.calls.append(("move", device))
        if on_progress:
            on_progress(1, 2, "transformer")
            on_progress(2, 2, "vae")

    def vram_budget_bytes(self):
        return 80 * 2**30

    def enable_offload(self, pipe, budget_bytes):
        self.calls.append(("offload", True))
        self.budgets.append(budget_bytes)
        return f"plan for {budget_bytes // 2**30} GiB"

    def disable_offload(self, pipe):
        self.calls.append(("offload", False))

    def lora_carrier(self):
        return None                    # nothing is streamed: LoRAs are fused in place

    def free_memory(self):
        self.calls.append(("free",))

    def release_pinned(self):
        self.calls.append(("release_pinned",))


@pytest.fixture
def make_manager(settings):
    managers = []

    def make(**overrides):
        placement = overrides.pop("placement", None)
        s = dataclasses.replace(settings, **overrides)
        kw = {}
        if placement:
            kw = dict(placement_factory=lambda: placement, loader=cpu_loader)
        m = PipelineManager(s, idle_poll_s=0.05, **kw).start()
        managers.append(m)
        return m

    yield make
    for m in managers:
        m.close()


def cpu_loader(model_dir, dtype, device, on_progress=None, fast=True, quant_dir=None):
    """With the stand-in GPU the weights really stay in RAM; the manager believes they are on `device`."""
    from zimage.engine.loader import load_pipeline

    return load_pipeline(model_dir, dtype, "cpu", on_progress, fast, quant_dir=quant_dir)


def fail_first_call_with_oom(manager, monkeypatch) -> dict:
    """The pipeline's first call raises CUDA's out-of-memory error (the fault injected at the
    generation call, since a CPU has no GPU memory to run out of); later calls run normally."""
    import torch

    calls = {"n": 0}
    real_call = type(manager._pipe).__call__

    def flaky(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_call(self, *a, **kw)
    monkeypatch.setattr(type(manager._pipe), "__call__", flaky)
    return calls


def test_preload_reaches_on_cpu_and_generates(make_manager):
    m = make_manager()
    assert m.status().state == LoadState.UNLOADED
    status = m.ensure_ready(60)
    assert status.state == LoadState.ON_CPU and status.device == "cpu" and status.ready
    result = m.generate(req(num_images=2), timeout=60)
    assert [i.seed for i in result.images] == [3, 4]
    assert all(i.image.size == (256, 256) and i.path.exists() for i in result.images)
    assert m.status().last_image_s > 0


def test_loading_reports_stage_and_advancing_progress(make_manager):
    m = make_manager()
    seen = []
    original = m._set

    def spy(**changes):
        original(**changes)
        s = m._status
        seen.append((s.state, s.stage, s.progress))
    m._set = spy
    m.ensure_ready(60)
    loading = [(stage.value, p) for state, stage, p in seen if state == LoadState.LOADING]
    read = [p for stage, p in loading if stage == "read weights"]
    assert read[0] == 0.0 and read[-1] == 1.0 and read == sorted(read) and len(set(read)) >= 3
    assert ("build", 1.0) in loading


def test_concurrent_requests_and_preloads_load_once(make_manager):
    m = make_manager()
    with ThreadPoolExecutor(8) as pool:
        preloads = [pool.submit(lambda: m.preload().future.result(60)) for _ in range(4)]
        gens = [pool.submit(m.generate, req(seed=i), None, 60) for i in range(4)]
        for f in preloads + gens:
            f.result()
    assert m.load_count == 1
    assert sorted(f.result().images[0].seed for f in gens) == [0, 1, 2, 3]


def test_same_seed_same_image_and_distinct_seeds_differ(make_manager):
    m = make_manager()
    a, b, c = (m.generate(req(seed=s), timeout=60).images[0].image for s in (11, 11, 12))
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()


def test_queue_is_bounded(make_manager):
    m = make_manager(queue_max=2)
    gate = Gate(m, timeout=30)
    running = m.submit(req())
    assert gate.entered.wait(30)
    waiting = [m.submit(req()) for _ in range(2)]
    with pytest.raises(QueueFull) as e:
        m.submit(req())
    assert e.value.retry_after_s >= 1 and e.value.http_status == 429
    assert m.status().queue_length == 3
    gate.release.set()
    for job in [running] + waiting:
        job.future.result(60)
    assert m.status().queue_length == 0


def test_stop_interrupts_and_is_reported_as_cancelled(make_manager):
    m = make_manager()
    gate = Gate(m, timeout=30)
    job = m.submit(req(num_inference_steps=8), owner="tab-1")
    queued = m.submit(req(), owner="tab-1")
    other = m.submit(req(), owner="tab-2")
    assert gate.entered.wait(30)
    assert m.cancel(owner="tab-1") == 2
    gate.release.set()
    with pytest.raises(Cancelled):
        job.future.result(60)
    with pytest.raises(Cancelled):
        queued.future.result(60)
    assert job.step < 8                      # stopped between steps, not run to the end
    assert other.future.result(60).images    # another tab's job is untouched
    before = len(list((m._store.root).rglob("*.png")))
    assert before == 1                       # the cancelled image was not saved


def test_a_waiter_that_gives_up_does_not_stop_the_worker(make_manager):
    """asyncio.wrap_future cancels the job's Future when the awaiting task is cancelled (a Ray Serve
    request cancelled by Stop does that): the worker must live on and keep its counts right."""
    import asyncio

    m = make_manager()
    gate = Gate(m, timeout=30)
    running = m.submit(req())
    waiting = m.submit(req())
    assert gate.entered.wait(30)

    async def give_up(job):
        task = asyncio.ensure_future(asyncio.wrap_future(job.future))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    asyncio.run(give_up(running))
    asyncio.run(give_up(waiting))
    assert not running.future.cancelled() and waiting.future.cancelled()   # a running job cannot be
    gate.release.set()
    assert running.future.result(60).images
    wait_for(lambda: m.status().queue_length == 0, 30, message="the skipped job to leave the count")
    assert m.worker_alive and m.generate(req(), timeout=60).images


def test_unload_waits_for_the_running_generation(make_manager):
    m = make_manager()
    gate = Gate(m, timeout=30)
    job = m.submit(req())
    assert gate.entered.wait(30)
    unload = m.unload("none")
    assert not unload.future.done() and m.status().state == LoadState.ON_CPU
    gate.release.set()
    assert job.future.result(60).images
    unload.future.result(30)
    assert m.status().state == LoadState.UNLOADED and m._pipe is None


def test_idle_unload_then_lazy_reload_on_cpu(make_manager):
    m = make_manager(idle_unload_s=0.3)
    m.generate(req(), timeout=60)
    wait_for(lambda: m.status().state == LoadState.UNLOADED, 10, message="idle unload")
    result = m.generate(req(seed=9), timeout=60)
    assert result.images[0].seed == 9 and m.load_count == 2
    assert m.status().state == LoadState.ON_CPU


def test_gpu_path_idle_keeps_ram_copy_then_drops(make_manager):
    gpu = FakeGpuPlacement()
    m = make_manager(placement=gpu, idle_unload_s=0.3, idle_drop_s=1.0)
    assert m.ensure_ready(60).state == LoadState.ON_GPU
    assert gpu.calls == []                 # loaded straight onto the device, nothing moved
    wait_for(lambda: m.status().state == LoadState.ON_CPU, 10, message="leave the GPU")
    assert gpu.calls[-1] == ("move", "cpu") and m._pipe is not None
    # A request now comes back from RAM, without reading the disk again.
    m.generate(req(), timeout=60)
    assert m.status().state == LoadState.ON_GPU and m.load_count == 1 and gpu.calls[-1] == ("move", "cuda:0")
    wait_for(lambda: m.status().state == LoadState.UNLOADED, 10, message="drop after idle_drop_s")
    assert m._pipe is None


def test_gpu_path_low_vram_switches_without_reloading(make_manager):
    gpu = FakeGpuPlacement()
    m = make_manager(placement=gpu)
    m.ensure_ready(60)
    m.set_low_vram(True).future.result(30)
    s = m.status()
    assert s.state == LoadState.OFFLOADED and s.low_vram and s.device == "cuda:0"
    assert gpu.calls[-1] == ("offload", True) and ("move", "cpu") not in gpu.calls   # weights taken from the GPU
    m.generate(req(), timeout=60)
    assert m.status().state == LoadState.OFFLOADED
    m.set_low_vram(False).future.result(30)
    assert m.status().state == LoadState.ON_GPU
    assert gpu.calls[-2:] == [("offload", False), ("move", "cuda:0")]
    m.unload("cpu").future.result(30)
    assert m.status().state == LoadState.ON_CPU
    assert m.load_count == 1


def test_low_vram_from_start_loads_offloaded(make_manager):
    gpu = FakeGpuPlacement()
    m = make_manager(placement=gpu, low_vram=True)
    assert m.ensure_ready(60).state == LoadState.OFFLOADED
    assert ("offload", True) in gpu.calls and ("move", "cuda:0") not in gpu.calls


def test_fp8_where_the_gpu_cannot_run_it_is_bf16_with_a_note(make_manager):
    from zimage.engine import fp8

    m = make_manager(placement=FakeGpuPlacement(), fp8="on")      # no CUDA here: no fp8 tensor cores
    m.ensure_ready(60)
    assert "fp8 needs a CUDA GPU" in m.status().note and "fp8" not in m.status().plan
    assert not fp8.is_applied(m._pipe) and m.generate(req(), timeout=60).images


def test_fp8_that_does_not_fit_while_converting_is_bf16_with_a_note(make_manager, monkeypatch):
    import torch

    from zimage.engine import fp8

    monkeypatch.setattr(fp8, "choose", lambda setting, capability, compiled: (True, ""))
    def no_room(linear):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 150 MiB")
    monkeypatch.setattr(fp8.Fp8Linear, "from_linear", staticmethod(no_room))
    m = make_manager(placement=FakeGpuPlacement(), fp8="on")
    status = m.ensure_ready(60)
    assert status.ready and "Not enough VRAM to convert" in status.note and "fp8" not in status.plan
    assert not fp8.is_applied(m._pipe) and m.generate(req(), timeout=60).images


def test_fp8_blocks_go_back_to_bf16_in_ram_before_a_low_vram_plan(make_manager, monkeypatch):
    from zimage.engine import fp8

    monkeypatch.setattr(fp8, "choose", lambda setting, capability, compiled: (setting == "on", ""))  # as on a Hopper
    gpu = FakeGpuPlacement()
    m = make_manager(placement=gpu, fp8="on")
    assert "fp8 matmuls" in m.ensure_ready(60).plan and fp8.is_applied(m._pipe)
    assert m.generate(req(), timeout=60).images
    gpu.calls.clear()
    m.set_low_vram(True).future.result(60)
    assert not fp8.is_applied(m._pipe) and m.status().state == LoadState.OFFLOADED
    assert gpu.calls.index(("move", "cpu")) < gpu.calls.index(("offload", True))   # converted in RAM, then planned
    assert m.generate(req(), timeout=60).images
    m.set_low_vram(False).future.result(60)
    assert fp8.is_applied(m._pipe) and "fp8 matmuls" in m.status().plan and m.load_count == 1


def test_missing_model_is_an_error_state_with_a_hint_and_retry_works(make_manager, tmp_path, tiny_model_dir):
    import shutil

    target = tmp_path / "later"
    m = make_manager(model=str(target))
    with pytest.raises(ModelUnavailable):
        m.ensure_ready(30)
    s = m.status()
    assert s.state == LoadState.ERROR and "not found" in s.message and s.hint
    with pytest.raises(ModelUnavailable):
        m.generate(req(), timeout=30)
    shutil.copytree(tiny_model_dir, target)
    assert m.ensure_ready(60).state == LoadState.ON_CPU and m.status().message == ""


def test_truncated_shard_names_the_file(make_manager, model_copy):
    f = sorted((model_copy / "transformer").glob("*.safetensors"))[0]
    f.write_bytes(f.read_bytes()[:1000])
    m = make_manager(model=str(model_copy))
    with pytest.raises(ModelLoadFailed) as e:
        m.ensure_ready(30)
    assert f"transformer/{f.name}" in e.value.details["files"]
    assert m.status().state == LoadState.ERROR


def test_no_network_gives_a_clear_error(make_manager, monkeypatch, tmp_path):
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("MODELSCOPE_DOWNLOAD_INTRA_CLOUD", "false")
    m = make_manager(model="Tongyi-MAI/Z-Image-Turbo")
    with pytest.raises(ModelUnavailable):
        m.ensure_ready(120)
    s = m.status()
    assert s.state == LoadState.ERROR and "Could not download" in s.message and "network" in s.hint


def test_oom_during_generation_is_reported_and_server_keeps_working(make_manager, monkeypatch):

    from zimage.errors import OutOfMemory

    m = make_manager()
    m.ensure_ready(60)
    fail_first_call_with_oom(m, monkeypatch)
    with pytest.raises(OutOfMemory) as e:
        m.generate(req(), timeout=60)
    assert "Low VRAM" in e.value.hint and m.status().oom_count == 1
    assert m.generate(req(), timeout=60).images


def test_budget_too_small_for_resident_loads_with_a_plan(make_manager):
    gpu = FakeGpuPlacement()
    m = make_manager(placement=gpu, vram_budget="2")           # 2 GiB: the model + 2.8 GiB of activations won't fit
    s = m.ensure_ready(60)
    assert s.state == LoadState.OFFLOADED and gpu.budgets == [2 * 2**30] and s.plan == "plan for 2 GiB"


def test_out_of_memory_steps_down_to_a_smaller_plan_and_retries(make_manager, monkeypatch):

    gpu = FakeGpuPlacement()
    m = make_manager(placement=gpu)
    assert m.ensure_ready(60).state == LoadState.ON_GPU
    calls = fail_first_call_with_oom(m, monkeypatch)
    result = m.generate(req(), timeout=60)
    assert result.images and "ran out of memory" in result.warning and calls["n"] == 2
    s = m.status()
    assert s.state == LoadState.OFFLOADED and gpu.budgets == [int(80 * 2**30 * 0.75)]
    assert m.load_count == 1                                     # no disk read to switch plans


def test_a_fixed_budget_the_gpu_cannot_hold_steps_down_from_what_it_can(make_manager, monkeypatch):
    gpu = FakeGpuPlacement()
    m = make_manager(placement=gpu, vram_budget="76")            # e.g. another program took VRAM since
    assert m.ensure_ready(60).state == LoadState.ON_GPU
    gpu.vram_budget_bytes = lambda: 20 * 2**30
    calls = fail_first_call_with_oom(m, monkeypatch)
    assert m.generate(req(), timeout=60).images and calls["n"] == 2
    assert gpu.budgets == [int(20 * 2**30 * 0.75)]               # not 76 GiB x 0.75: still too big


def test_plain_loader_setting_never_touches_the_fast_path(make_manager, monkeypatch):
    from zimage.engine import fastload

    def boom(*a, **kw):
        raise AssertionError("fast path used")
    monkeypatch.setattr(fastload, "stream_shards", boom)
    monkeypatch.setattr(fastload, "prefetch", boom)
    m = make_manager(loader="plain")
    assert m.ensure_ready(60).state == LoadState.ON_CPU and m.generate(req(), timeout=60).images


def record_stages(m) -> list:
    """Every load stage the manager passes through, in order."""
    stages = []
    original = m._set

    def spy(**changes):
        original(**changes)
        stages.append(m._status.stage)
    m._set = spy
    return stages


def test_warm_up_image_after_a_gpu_load_only_when_enabled(make_manager):
    for enabled in (True, False):
        m = make_manager(placement=FakeGpuPlacement(), warmup=enabled)
        stages = record_stages(m)
        m.ensure_ready(60)
        assert (LoadStage.WARMUP in stages) is enabled


def test_quantize_int8_makes_the_copy_once_and_always_runs_a_plan(make_manager, model_copy):
    from zimage.engine.quantize import cache_dir_for, complete

    for attempt in (1, 2):
        placement = FakeGpuPlacement()
        m = make_manager(placement=placement, quantize="int8", model=str(model_copy))
        stages = record_stages(m)
        status = m.ensure_ready(120)
        assert status.state == LoadState.OFFLOADED and ("offload", True) in placement.calls
        assert (LoadStage.QUANTIZE in stages) is (attempt == 1)          # made once, loaded after
        assert complete(cache_dir_for(model_copy, "int8"))
        m.close()


class CpuAsGpuPlacement:
    """The real TorchPlacement with the CPU standing in for the GPU: the manager builds real plans
    and real streaming runtimes (tests/test_offload.py checks them block by block)."""

    def __new__(cls):
        from zimage.engine.placement import TorchPlacement

        class Placement(TorchPlacement):
            def __init__(self):
                super().__init__("cpu")
                self.gpu_device = "cpu"

            def vram_budget_bytes(self):
                return 2**40

            def move(self, pipe, device, on_progress=None):
                self.move_modules(pipe, device, on_progress)     # no page-locked RAM without CUDA
        return Placement()


def _tiny_working_set(monkeypatch):
    from zimage.engine import planning

    for name in ("DENOISE_WORKING_BYTES", "VAE_WORKING_BYTES", "VAE_TILED_WORKING_BYTES"):
        monkeypatch.setattr(planning, name, 1000)     # the tiny model's activations, not a 1024x1024 image's


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_budget_plans_run_for_real_through_the_manager(make_manager, model_copy, monkeypatch, quantize):
    from zimage.engine.planning import sizes_of

    _tiny_working_set(monkeypatch)
    reference = make_manager(model=str(model_copy), warmup=False)
    expected = reference.generate(req(), timeout=120).images[0].image.tobytes()
    pipe = reference._pipe
    if quantize == "int8":
        from zimage.engine.quantize import COMPONENTS, quantize_module

        for name in COMPONENTS:
            quantize_module(name, getattr(pipe, name))
    sizes = sizes_of(pipe)
    budget_gb = (sizes.peak(len(sizes.blocks), True, 1000) - 1) / 2**30   # one byte short of everything resident
    m = make_manager(placement=CpuAsGpuPlacement(), model=str(model_copy), warmup=False, quantize=quantize, dtype="float32",
                     vram_budget=f"{budget_gb:.9f}")
    status = m.ensure_ready(120)
    assert status.state == LoadState.OFFLOADED and "streamed" in status.plan and "everything" not in status.plan
    assert ("int8 weights" in status.plan) is (quantize == "int8")
    got = m.generate(req(), timeout=120).images[0].image.tobytes()
    if quantize == "none":
        assert got == expected                          # streaming computes exactly what resident does
    m.set_low_vram(False).future.result(60)             # a budget still applies: the plan stays
    assert m.status().state == LoadState.OFFLOADED and m.load_count == 1


def _queue_behind_a_load(m, reqs, **kw):
    """Submit `reqs` while the model loads, so they wait together."""
    load = m.preload()
    jobs = [m.submit(r, **kw) for r in reqs]
    load.future.result(60)
    return jobs


def _count_pipeline_calls(monkeypatch) -> list:
    from zimage.engine import generate as gen

    calls = []
    real = gen._call

    def counting(pipe, req, prompt, per_prompt, seeds, *a, **kw):
        calls.append(list(seeds))
        return real(pipe, req, prompt, per_prompt, seeds, *a, **kw)
    monkeypatch.setattr(gen, "_call", counting)
    return calls


def test_queued_requests_of_one_size_share_a_pipeline_call(make_manager, monkeypatch):
    alone = make_manager()
    expected = {seed: alone.generate(req(seed=seed), timeout=60).images[0].image.tobytes() for seed in (11, 12)}
    calls = _count_pipeline_calls(monkeypatch)
    m = make_manager(batch_max=4)
    jobs = _queue_behind_a_load(m, [req(seed=11), req(seed=12, num_images=2), req(seed=20, width=512),
                                    req(seed=30, prompt="a dog on a much longer prompt than the others")])
    results = [j.future.result(60) for j in jobs]
    # the first image of each of the three of one size in one call, the second image of seed 12's
    # request in the next (one call per image: a Stop keeps the first), the 512 one alone
    assert calls == [[11, 12, 30], [13], [20]]
    assert [len(r.images) for r in results] == [1, 2, 1, 1]
    assert [i.seed for i in results[1].images] == [12, 13]
    import numpy as np

    for result, seed in ((results[0], 11), (results[1], 12)):   # the same prompt and seed: the picture it has alone
        got = np.frombuffer(result.images[0].image.tobytes(), np.uint8).astype(int)
        diff = np.abs(got - np.frombuffer(expected[seed], np.uint8).astype(int)).max()
        print("max pixel diff", diff)
        assert diff <= 2, diff                         # batched matmuls and the padded prompt round differently
    assert results[0].batch_images == 4 and results[0].seconds_per_image == results[0].seconds / 4
    assert all(i.path and i.path.exists() for r in results for i in r.images)
    assert m.status().queue_length == 0


def test_the_next_image_starts_while_the_last_one_is_saved_and_close_writes_it(make_manager, monkeypatch):
    """PNG files are written on the saver thread: the pipeline call for the second request runs
    while the first one's file is still being written; each caller gets its result once its file
    exists; close() returns only after the pending files are written."""
    from zimage.store.outputs import OutputStore

    calls = _count_pipeline_calls(monkeypatch)
    release, saving = threading.Event(), threading.Event()
    real_save = OutputStore.save

    def slow_save(store, image, seed, text, **kw):
        if seed == 1:
            saving.set()
            assert release.wait(30)
        return real_save(store, image, seed, text, **kw)
    monkeypatch.setattr(OutputStore, "save", slow_save)
    m = make_manager()
    first, second = m.submit(req(seed=1)), m.submit(req(seed=2))
    assert saving.wait(60)
    wait_for(lambda: len(calls) == 2 and second.phase == "saving", 60)   # made while the first one's file waits
    assert not first.future.done() and first.phase == "saving"
    release.set()
    result = first.future.result(60)
    assert result.images[0].path.exists() and result.images[0].seed == 1
    assert second.future.result(60).images[0].path.exists()

    release.clear()
    saving.clear()
    third = m.submit(req(seed=1))
    assert saving.wait(60)
    closer = threading.Thread(target=m.close)
    closer.start()
    time.sleep(0.3)
    assert closer.is_alive()               # close waits for the file
    release.set()
    closer.join(30)
    assert third.future.result(1).images[0].path.exists()


def test_batching_is_off_by_default_and_never_jumps_an_unload(make_manager, monkeypatch):
    calls = _count_pipeline_calls(monkeypatch)
    m = make_manager()
    jobs = _queue_behind_a_load(m, [req(seed=1), req(seed=2)])
    [j.future.result(60) for j in jobs]
    assert calls == [[1], [2]]
    calls.clear()
    m = make_manager(batch_max=4)
    load = m.preload()
    first = m.submit(req(seed=3))
    unload = m.unload("cpu")
    after = m.submit(req(seed=4))
    load.future.result(60)
    first.future.result(60), unload.future.result(60), after.future.result(60)
    assert calls == [[3], [4]]                         # the one after the unload did not ride along


def test_a_rider_stopped_mid_batch_is_dropped_and_the_others_finish(make_manager, monkeypatch):
    from zimage.engine import generate as gen

    m = make_manager(batch_max=4)
    real, stopped = gen._call, []

    def stop_b_at_the_first_step(pipe, rq, prompt, per_prompt, seeds, should_stop, on_step, encode=None, **kw):
        def step(*args):
            if len(seeds) == 2 and not stopped:
                stopped.append(m.cancel(owner="b"))
            on_step(*args)
        return real(pipe, rq, prompt, per_prompt, seeds, should_stop, step, encode, **kw)
    monkeypatch.setattr(gen, "_call", stop_b_at_the_first_step)
    load = m.preload()                                     # both wait behind the load: one batch
    a = m.submit(req(seed=7, num_inference_steps=3), owner="a")
    b = m.submit(req(seed=8, num_inference_steps=3), owner="b")
    load.future.result(60)
    assert a.future.result(60).images
    with pytest.raises(Cancelled):
        b.future.result(60)
    assert stopped == [1] and m.status().queue_length == 0


def count_vae_decodes(pipe) -> list:
    """Wraps the real tiny VAE's decode: one entry (the batch size) per call."""
    calls, real = [], pipe.vae.decode

    def counting(latents, *a, **kw):
        calls.append(latents.shape[0])
        return real(latents, *a, **kw)
    pipe.vae.decode = counting
    return calls


def test_a_stopped_job_is_never_decoded_and_the_worker_is_free_at_the_step(make_manager):
    m = make_manager()
    gate = Gate(m, timeout=30)
    decodes = count_vae_decodes(m._pipe)
    job = m.submit(req(num_inference_steps=8, num_images=2))
    assert gate.entered.wait(30)
    assert m.cancel() == 1
    gate.release.set()
    with pytest.raises(Cancelled):
        job.future.result(60)
    wait_for(lambda: not m.status().busy, 10, message="the worker to be idle")
    assert decodes == [] and job.step == 1 and job.phase == "done"   # the half-denoised latents: no VAE
    assert not list(m._store.root.rglob("*.png"))
    assert len(m.generate(req(num_images=2), timeout=60).images) == 2 and decodes == [1, 1]   # an unstopped one is


def test_progress_names_each_phase_with_image_counts_and_an_eta(make_manager, monkeypatch):
    from zimage.store.outputs import OutputStore

    m = make_manager()
    m.generate(req(prompt="the first image measures decoding and saving"), timeout=60)
    gate = Gate(m, timeout=30)
    ahead = m.submit(req())
    assert gate.entered.wait(30)
    job = m.submit(req(prompt="a fresh prompt", num_images=2, num_inference_steps=3))
    seen = []

    def note(*_):
        if job.phase != "waiting":
            seen.append((job.phase, job.step, job.images_done, job.images_total, (job.eta_s, job.step_seconds)))
    m._pipe.text_encoder.register_forward_pre_hook(note)
    m._pipe.transformer.register_forward_pre_hook(note)
    m._pipe.vae.decoder.register_forward_pre_hook(note)
    real_save = OutputStore.save
    monkeypatch.setattr(OutputStore, "save", lambda store, *a, **kw: (note(), real_save(store, *a, **kw))[1])
    gate.release.set()
    ahead.future.result(60)
    assert len(job.future.result(60).images) == 2
    seen = [entry for entry, _ in itertools.groupby(seen)]     # the tiny text encoder's forward runs twice
    phases = [(phase, step, done, total) for phase, step, done, total, _ in seen]
    # one pipeline call per image (the second's prompt is cached: no encoding), then both saved
    assert phases == [("encoding", 0, 0, 2), ("generating", 0, 0, 2), ("generating", 1, 0, 2),
                      ("generating", 2, 0, 2), ("decoding", 3, 0, 2),
                      ("generating", 0, 1, 2), ("generating", 1, 1, 2), ("generating", 2, 1, 2),
                      ("decoding", 3, 1, 2), ("saving", 3, 0, 2), ("saving", 3, 1, 2)]
    etas = [eta for *_, (eta, _) in seen]
    step_s = [step for *_, (_, step) in seen]                        # the mean step time then (it moves under load)
    decode, save = job.decode_s_per_image, job.save_s_per_image     # measured on the first image
    assert decode > 0 and save > 0
    assert etas[:2] == [None, None]                                  # no step timed yet
    # the steps, decodes and saves left, at the step time measured so far
    for at, (steps, decodes) in zip((2, 4, 6), ((5, 2), (3, 2), (2, 1))):
        assert step_s[at] > 0 and etas[at] == pytest.approx(steps * step_s[at] + decodes * decode + 2 * save), at
    assert etas[8] == pytest.approx(decode + 2 * save) and etas[9] == pytest.approx(2 * save)
    assert etas[10] == pytest.approx(save)                           # "image 2 of 2" being saved
    assert job.step_seconds > 0 and job.phase == "done" and job.eta_s == 0.0


def test_a_failure_that_is_not_out_of_memory_is_a_typed_error_and_the_worker_lives(make_manager, monkeypatch):
    from zimage.errors import GenerationFailed

    m = make_manager()
    m.ensure_ready(60)
    def broken(self, *a, **kw):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    monkeypatch.setattr(type(m._pipe.transformer), "forward", broken)
    with pytest.raises(GenerationFailed) as e:
        m.generate(req(), timeout=60)
    assert e.value.http_status == 500 and "RuntimeError" in e.value.message and e.value.hint
    monkeypatch.undo()
    assert m.generate(req(), timeout=60).images and m.status().oom_count == 0


@pytest.mark.parametrize("guidance", [0.1, 0.5, 1.0, 1e-300])
def test_guidance_between_0_and_1_generates(make_manager, guidance):
    m = make_manager()
    plain = m.generate(req(), timeout=60).images[0].image.tobytes()
    got = m.generate(req(guidance_scale=guidance), timeout=60).images[0].image.tobytes()
    if guidance >= 0.5:
        assert got != plain                    # guidance really ran, with the negative side


def test_out_of_memory_with_no_smaller_plan_moves_the_weights_to_ram_and_says_so(make_manager, monkeypatch):
    from zimage.engine.planning import DoesNotFit
    from zimage.errors import OutOfMemory

    gpu = FakeGpuPlacement()
    def no_plan_fits(pipe, budget_bytes):
        gpu.calls.append(("offload", True))
        raise DoesNotFit(budget_bytes, 100 * 2**30)
    gpu.enable_offload = no_plan_fits
    m = make_manager(placement=gpu)
    assert m.ensure_ready(60).state == LoadState.ON_GPU
    fail_first_call_with_oom(m, monkeypatch)
    with pytest.raises(OutOfMemory):
        m.generate(req(), timeout=60)
    s = m.status()
    assert s.state == LoadState.ON_CPU and s.device == "cpu" and s.plan == ""
    refused = gpu.calls.index(("offload", True))
    assert gpu.calls[refused + 1:] == [("move", "cpu"), ("free",)]           # the weights really left the GPU
    assert m.generate(req(), timeout=60).images                              # the next request puts it back
    assert m.status().state == LoadState.ON_GPU and gpu.calls[-1] == ("move", "cuda:0") and m.load_count == 1
