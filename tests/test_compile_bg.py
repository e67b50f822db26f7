"""The background compile (issue 19): the model is ready and serves eagerly while compiled blocks
are built beside it, then the compiled blocks are swapped in between two requests, over the same
weight tensors. On the CPU torch.compile runs with the "eager" backend: dynamo's real tracing and
guards, no code generation (inductor needs a GPU here); CUDA itself is the only stand-in."""
from __future__ import annotations

import dataclasses
import threading
import types

import numpy as np
import torch
from test_accel import image
from test_manager import FakeGpuPlacement, cpu_loader, req

from zimage import startup
from zimage.engine import accel, speed
from zimage.engine.compile_bg import BackgroundCompile, artifact_key, twin_module
from zimage.engine.loader import load_pipeline
from zimage.engine.manager import PipelineManager
from zimage.state import LoadState

from conftest import wait_for


def tensors_of(module) -> dict[str, int]:
    return {name: t.data_ptr() for name, t in [*module.named_parameters(), *module.named_buffers()]}


def test_the_twin_shares_every_weight_and_compiles_on_its_own(tiny_model_dir, tmp_path):
    pipe = load_pipeline(tiny_model_dir, torch.float32, "cpu")
    expected = image(pipe)
    gate, served_meanwhile = threading.Event(), []

    def warm(twin_pipe):
        served_meanwhile.append((accel.is_compiled(pipe), image(pipe)))   # the eager pipeline, mid-compile
        gate.wait(60)
        speed.warm_compiled(twin_pipe, size=64)
    bg = BackgroundCompile(pipe, lambda t: accel.compile_transformer(t, tmp_path / "c", "eager"), warm,
                           on_done=lambda b: None, artifacts=tmp_path / "c" / "artifacts.bin",
                           compile_extras=lambda p: accel.compiled_extras(p, "eager")).start()
    wait_for(lambda: served_meanwhile, 60, message="the compile to reach its warm-up")
    compiled_meanwhile, picture = served_meanwhile[0]
    assert not compiled_meanwhile and np.array_equal(picture, expected)
    gate.set()
    assert bg.done.wait(120) and bg.error is None, bg.error
    assert accel.is_compiled(types.SimpleNamespace(transformer=bg.transformer))
    assert not accel.has_compiled_forward(pipe.vae.decoder)     # nothing changes under the serving pipeline
    before, vae_before = tensors_of(pipe.transformer), tensors_of(pipe.vae)
    assert bg.swap_into(pipe)
    assert accel.is_compiled(pipe) and tensors_of(pipe.transformer) == before      # no weight was copied
    assert accel.has_compiled_forward(pipe.vae.decoder) and tensors_of(pipe.vae) == vae_before
    assert np.abs(image(pipe) - expected).max() <= 1


def test_a_cancelled_compile_is_not_swapped_in(tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir, torch.float32, "cpu")
    bg = BackgroundCompile(pipe, lambda t: accel.compile_transformer(t, None, "eager"), lambda p: None,
                           on_done=lambda b: None)
    bg.cancel()
    bg.start().done.wait(60)
    assert not bg.swap_into(pipe) and not accel.is_compiled(pipe)


def test_twin_processors_are_its_own(tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir, torch.float32, "cpu")
    twin = twin_module(pipe.transformer)
    accel._swap_transformer_processors(twin, accel.real_rope_processor())
    names = {type(m.processor).__name__ for m in pipe.transformer.modules() if hasattr(m, "processor")}
    assert names == {"ZSingleStreamAttnProcessor"}


def test_artifacts_are_keyed_by_torch_triton_and_gpu():
    key = artifact_key("2.9.0", "3.5.0", "NVIDIA H200", (9, 0))
    assert key == artifact_key("2.9.0", "3.5.0", "NVIDIA H200", (9, 0))
    others = {artifact_key("2.9.1", "3.5.0", "NVIDIA H200", (9, 0)), artifact_key("2.9.0", "3.4.0", "NVIDIA H200", (9, 0)),
              artifact_key("2.9.0", "3.5.0", "NVIDIA H100", (9, 0)), artifact_key("2.9.0", "3.5.0", "NVIDIA H200", (8, 9))}
    assert key not in others and len(others) == 4


def test_the_manager_is_ready_and_serves_eagerly_while_compiling_then_swaps(settings, monkeypatch):
    """A compile never delays readiness or a request: ready with eager blocks, a request served
    while the compile waits, the compiled blocks in use after it, the picture unchanged."""
    startup.reset()
    gate = threading.Event()
    monkeypatch.setattr(accel, "want_compile", lambda *a, **k: True)      # "a CUDA GPU with Triton"
    monkeypatch.setattr(speed, "COMPILE_BACKEND", "eager", raising=False)

    def gated_warm(pipe):
        gate.wait(120)
        real_warm(pipe, size=64)
    real_warm = getattr(speed, "warm_compiled", None)
    monkeypatch.setattr(speed, "warm_compiled", gated_warm, raising=False)
    s = dataclasses.replace(settings, warmup=False, compile="on")
    m = PipelineManager(s, placement_factory=FakeGpuPlacement, loader=cpu_loader, idle_poll_s=0.05).start()
    try:
        assert m.ensure_ready(120).state == LoadState.ON_GPU
        wait_for(lambda: startup.COMPILING in startup.timeline_dict(), 30, message="the compile started (queue quiet)")
        events = startup.timeline_dict()
        assert startup.COMPILED not in events
        assert "compiling in the background" in str(m.status().to_dict()["startup"])
        eager = m.generate(req(), timeout=120).images[0].image
        assert not accel.is_compiled(m._pipe)
        gate.set()
        wait_for(lambda: startup.COMPILED in startup.timeline_dict(), 180, message="the compiled blocks swapped in")
        compiled = m.generate(req(), timeout=120).images[0].image
        assert accel.is_compiled(m._pipe) and accel.has_compiled_forward(m._pipe.vae.decoder)
        assert np.abs(np.asarray(compiled, np.int16) - np.asarray(eager, np.int16)).max() <= 1
        m.set_low_vram(True).future.result(120)             # a plan's VAE decodes in tiles, eagerly
        assert not accel.has_compiled_forward(m._pipe.vae.decoder)
    finally:
        gate.set()
        m.close()


def test_the_compile_waits_for_a_quiet_queue(settings, monkeypatch):
    """A request queued when the model becomes ready runs first, eagerly and alone: the compile
    starts only once no generation is queued or running (its tracing slowed the first image 3.7x)."""
    startup.reset()
    monkeypatch.setattr(accel, "want_compile", lambda *a, **k: True)
    monkeypatch.setattr(speed, "COMPILE_BACKEND", "eager", raising=False)
    started = []
    s = dataclasses.replace(settings, warmup=False, compile="on")
    m = PipelineManager(s, placement_factory=FakeGpuPlacement, loader=cpu_loader, idle_poll_s=0.05).start()
    real = m._compile_in_background

    def record():
        started.append(m._queue.pending_generations)
        real()
    monkeypatch.setattr(m, "_compile_in_background", record)
    try:
        job = m.submit(req())                    # the load happens inside this generation
        job.future.result(120)
        wait_for(lambda: started, 30, message="the compile started after the request")
        assert started == [0]
        # let it finish: a compile thread still inside torch when the interpreter exits aborts it
        wait_for(lambda: startup.COMPILED in startup.timeline_dict(), 180, message="the compiled blocks swapped in")
    finally:
        m.close()


def test_the_compiled_vae_decoder_takes_any_size_and_batch_without_compiling_again(tiny_model_dir):
    """Warmed at two batch sizes and two sizes, the decoder's graph is dynamic: other sizes and
    batches reuse it (no new frame compiled), and it decodes what the eager decoder does. (Latents
    under 16*h*w = 20480, images under ~180x180, take a graph of their own: a guard of the conv.)"""
    from torch._dynamo.utils import counters

    pipe = load_pipeline(tiny_model_dir, torch.float32, "cpu")
    vae = pipe.vae
    torch._dynamo.reset()
    forward = accel.compiled_vae_decoder(vae, "eager")
    compiled_frames = counters["stats"]["unique_graphs"]
    accel.use_forward(vae.decoder, forward)
    channels = vae.config.latent_channels
    with torch.inference_mode():
        for shape in ((1, channels, 40, 48), (1, channels, 48, 48), (3, channels, 40, 40), (2, channels, 36, 44)):
            z = torch.randn(shape)
            ours = vae.decode(z, return_dict=False)[0]
            accel.use_forward(vae.decoder, None)
            eager = vae.decode(z, return_dict=False)[0]
            accel.use_forward(vae.decoder, forward)
            assert torch.allclose(ours, eager, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == compiled_frames


def test_a_low_vram_plan_compiles_between_requests_and_no_request_compiles(settings, monkeypatch):
    """Issue 21: a plan's blocks are compiled (forwards under its streaming hooks) by warm-up images
    queued on a quiet worker, one per prompt length. A request that arrives meanwhile waits only
    for the warm-up under way and runs eagerly, compiling nothing; once the plan is compiled, a
    request compiles nothing either and gives the eager plan's picture."""
    from test_accel import GraphCounter
    from test_lora_wire import CpuStreaming

    torch._dynamo.reset()
    counter = GraphCounter()
    monkeypatch.setattr(accel, "want_compile", lambda *a, **k: True)       # "a CUDA GPU with Triton"
    monkeypatch.setattr(speed, "COMPILE_BACKEND", counter)
    gates = [threading.Event(), threading.Event()]
    seen = {}
    real_piece = speed.warm_plan_piece

    def piece(pipe, k, size=1024):
        seen[f"start{k}"] = counter.graphs
        gates[k].wait(120)
        last = real_piece(pipe, k, size=256)           # the size of the requests below (test_manager.SMALL)
        seen[f"end{k}"] = counter.graphs
        return last
    monkeypatch.setattr(speed, "warm_plan_piece", piece)
    s = dataclasses.replace(settings, warmup=False, compile="on", low_vram=True)
    eager_manager = PipelineManager(dataclasses.replace(s, compile="off"), placement_factory=CpuStreaming,
                                    loader=cpu_loader).start()
    try:
        eager = np.asarray(eager_manager.generate(req(prompt="a much longer prompt: a cat on a mat"), timeout=120)
                           .images[0].image, np.int16)
    finally:
        eager_manager.close()
    m = PipelineManager(s, placement_factory=CpuStreaming, loader=cpu_loader, idle_poll_s=0.05).start()
    try:
        assert m.ensure_ready(120).state == LoadState.OFFLOADED
        wait_for(lambda: "start0" in seen, 30, message="the plan's first warm-up image (queue quiet)")
        job = m.submit(req(num_images=2))               # a batch: compiled blocks would compile for it
        gates[0].set()
        assert len(job.future.result(120).images) == 2
        wait_for(lambda: "start1" in seen, 30, message="the second warm-up image, after the request")
        assert seen["end0"] > 0 and seen["start1"] == seen["end0"]          # the request compiled nothing
        gates[1].set()
        wait_for(lambda: "compiled blocks" in m.status().plan, 120, message="the plan's compiled blocks in use")
        made = counter.graphs
        compiled = np.asarray(m.generate(req(prompt="a much longer prompt: a cat on a mat"), timeout=120)
                              .images[0].image, np.int16)
        assert accel.is_compiled(m._pipe) and counter.graphs == made
        assert np.abs(compiled - eager).max() <= 1
        m.unload("cpu").future.result(120)                               # leaving the plan: eager blocks
        assert not accel.forwards_compiled(m._pipe.transformer)
    finally:
        for g in gates:
            g.set()
        m.close()
