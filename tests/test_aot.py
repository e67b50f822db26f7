"""The blocks compiled in a process of their own (issue 30 item 2; engine/aot_compile, aot_blocks):
the model worker serves eagerly while another process exports and compiles one block of each kind
with AOTInductor into a package, then swaps each block's forward to it between two images; a later
launch loads the package without compiling; a broken package leaves the blocks eager, with a log
line. On the CPU with the tiny model, for real: torch.export, AOTInductor's C++ compile (1-2
minutes on a loaded 2-core machine, once per test module), the package loaded in this process.
CUDA itself is the only stand-in (FakeGpuPlacement; `compile_process="on"` takes the CPU)."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_manager import FakeGpuPlacement, cpu_loader, req

from zimage import startup
from zimage.config import ConfigError, Settings
from zimage.config_load import load_settings
from zimage.engine import accel, aot_blocks, speed
from zimage.engine.anatomy import transformer_blocks
from zimage.engine.loader import load_pipeline
from zimage.engine.manager import PipelineManager
from zimage.state import LoadState

from conftest import wait_for

COMPILE_TIMEOUT_S = 900
LORA = req(prompt="a cat <lora:diffusers_style:1>")


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image, np.int16)


def launch(settings, cache_dir, monkeypatch, **kw) -> PipelineManager:
    """A manager that compiles (a "CUDA GPU with Triton") its blocks in a process, on the CPU."""
    startup.reset()
    monkeypatch.setattr(accel, "want_compile", lambda *a, **k: True)
    monkeypatch.setattr(speed, "COMPILE_BACKEND", "eager")       # a low-VRAM plan's in-thread compile: no codegen
    # float32: the package's fused kernels round once where eager bf16 rounds each op (on the GPU too,
    # as torch.compile's); in float32 the images match to a level, through the tiny random model's gain
    s = dataclasses.replace(settings, warmup=False, compile="on", compile_process="on", cache_dir=str(cache_dir),
                            dtype="float32", **kw)
    m = PipelineManager(s, placement_factory=FakeGpuPlacement, loader=cpu_loader, idle_poll_s=0.05).start()
    assert m.ensure_ready(120).state == LoadState.ON_GPU
    return m


def package_folder(cache_dir) -> Path:
    root = speed.compile_cache_dir(Settings(cache_dir=str(cache_dir))) / aot_blocks.AOT_DIR
    folders = [p for p in root.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


@pytest.fixture(scope="module")
def first_launch(tiny_model_dir, tmp_path_factory):
    """The first launch, with an empty cache: an image while the process compiles, the swap, an
    image after it; what it saw, and the cache folder with the package it left."""
    from zimage.testing.tiny_lora import make_tiny_loras

    cache = tmp_path_factory.mktemp("aot-cache")
    loras = tmp_path_factory.mktemp("aot-loras")
    make_tiny_loras(loras, tiny_model_dir)
    settings = Settings(model=str(tiny_model_dir), outputs_dir=str(cache / "outputs"), idle_unload_s=0,
                        idle_drop_s=0, backend="inprocess", lora_dir=str(loras))
    seen: dict = {"lora_dir": loras}
    with pytest.MonkeyPatch.context() as mp:
        spawned = []
        real_spawn = aot_blocks.PackageCompile._spawn

        def spawn(self):
            spawned.append(real_spawn(self))
            return spawned[-1]
        mp.setattr(aot_blocks.PackageCompile, "_spawn", spawn)
        m = launch(settings, cache, mp)
        try:
            wait_for(lambda: spawned, 60, message="the compile process started (queue quiet)")
            seen["process"] = spawned[0]
            seen["nice"] = wait_for(lambda: os.getpriority(os.PRIO_PROCESS, spawned[0].pid) or None, 30,
                                    message="the compile process lowered its CPU priority")
            seen["eager"] = [pixels(m.generate(req(width=w, height=h), timeout=120)) for w, h in ((256, 256), (256, 384))]
            seen["eager_lora"] = pixels(m.generate(LORA, timeout=120))
            seen["packaged_meanwhile"] = bool(aot_blocks.packaged(m._pipe.transformer))
            seen["weights_before"] = {n: t.data_ptr() for n, t in m._pipe.transformer.named_parameters()}
            wait_for(lambda: startup.COMPILED in startup.timeline_dict() or startup.COMPILE_FAILED in
                     startup.timeline_dict(), COMPILE_TIMEOUT_S, interval=0.5, message="the package swapped in")
            seen["timeline"] = startup.timeline_dict()
            seen["compiled"] = [pixels(m.generate(req(width=w, height=h), timeout=120)) for w, h in ((256, 256), (256, 384))]
            seen["weights_after"] = {n: t.data_ptr() for n, t in m._pipe.transformer.named_parameters()}
            seen["forwards"] = aot_blocks.packaged(m._pipe.transformer)
            seen["blocks"] = len(transformer_blocks(m._pipe.transformer))
        finally:
            m.close()
    return cache, seen


def test_the_blocks_compile_in_another_process_and_the_images_match_eager(first_launch):
    cache, seen = first_launch
    assert startup.COMPILED in seen["timeline"], seen["timeline"]
    assert not seen["packaged_meanwhile"]                      # the eager blocks served while it compiled
    process = seen["process"]
    assert process.pid != os.getpid() and process.poll() == 0
    assert seen["nice"] == min(19, 19 + os.getpriority(os.PRIO_PROCESS, 0))      # below the serving threads
    manifest = json.loads((package_folder(cache) / "manifest.json").read_text())
    assert manifest["pid"] == process.pid and set(manifest["kinds"]) == {"mod", "plain"}
    assert len(seen["forwards"]) == seen["blocks"]             # every block through its kind's package
    assert all(f.packaged_calls > 0 and f.eager_calls == 0 for f in seen["forwards"])
    assert seen["weights_after"] == seen["weights_before"]     # no weight copied or moved
    for eager, compiled in zip(seen["eager"], seen["compiled"]):   # two sizes: two sequence lengths
        assert np.abs(compiled - eager).max() <= 1


def test_a_second_launch_swaps_the_package_in_without_compiling(first_launch, settings, monkeypatch, caplog):
    cache, seen = first_launch
    monkeypatch.setattr(aot_blocks.PackageCompile, "_spawn", lambda self: pytest.fail("compiled again"))
    caplog.set_level(logging.INFO, logger="zimage.engine.aot_blocks")
    m = launch(settings, cache, monkeypatch)
    try:
        wait_for(lambda: startup.COMPILED in startup.timeline_dict(), 120, message="the package swapped in")
        timeline = startup.timeline_dict()
        print(f"ready -> compiled blocks in use: {timeline[startup.COMPILED] - timeline[startup.READY]:.2f} s")
        assert len(aot_blocks.packaged(m._pipe.transformer)) == seen["blocks"]
        assert "swapped in" in caplog.text
        assert np.abs(pixels(m.generate(req(), timeout=120)) - seen["eager"][0]).max() <= 1
        folder = package_folder(cache)           # the package ran: no mark says a worker died trying it
        assert not folder.with_name(folder.name + ".trying").exists() and not folder.with_name(folder.name + ".crashed").exists()
        m.set_low_vram(True).future.result(120)          # a plan keeps today's path: the packaged forwards come off
        assert not aot_blocks.packaged(m._pipe.transformer)
        startup.reset()
        m.set_low_vram(False).future.result(120)         # resident again: from the disk, between two images
        wait_for(lambda: startup.COMPILED in startup.timeline_dict(), 120, message="swapped in again")
        assert len(aot_blocks.packaged(m._pipe.transformer)) == seen["blocks"]
    finally:
        m.close()


def test_a_lora_fused_into_the_weights_is_in_the_packaged_blocks(first_launch, settings, monkeypatch):
    """A LoRA is fused into the weights in place: the package reads them at each call."""
    cache, seen = first_launch
    m = launch(dataclasses.replace(settings, lora_dir=str(first_launch[1]["lora_dir"])), cache, monkeypatch)
    try:
        wait_for(lambda: startup.COMPILED in startup.timeline_dict(), 120, message="the package swapped in")
        assert np.abs(seen["eager_lora"] - seen["eager"][0]).max() > 8        # the LoRA changes the picture
        assert np.abs(pixels(m.generate(LORA, timeout=120)) - seen["eager_lora"]).max() <= 1
        assert np.abs(pixels(m.generate(req(), timeout=120)) - seen["eager"][0]).max() <= 1   # and comes off
        assert all(f.packaged_calls > 0 and f.eager_calls == 0 for f in aot_blocks.packaged(m._pipe.transformer))
    finally:
        m.close()


def test_a_broken_package_leaves_the_blocks_eager_with_a_log_line(first_launch, settings, monkeypatch, caplog, tmp_path):
    cache, seen = first_launch
    broken = tmp_path / "cache"
    shutil.copytree(cache, broken, ignore=shutil.ignore_patterns("outputs"))
    folder = package_folder(broken)
    (folder / "mod.pt2").write_bytes(b"not a package")
    caplog.set_level(logging.INFO, logger="zimage.engine.aot_blocks")
    monkeypatch.setattr(aot_blocks.PackageCompile, "_spawn", lambda self: pytest.fail("compiled instead"))
    m = launch(settings, broken, monkeypatch)
    try:
        wait_for(lambda: startup.COMPILE_FAILED in startup.timeline_dict(), 120, message="the load failed")
        assert "unusable" in caplog.text and str(folder) in caplog.text
        assert not folder.exists()                    # the next launch compiles it afresh
        assert not aot_blocks.packaged(m._pipe.transformer)
        assert np.abs(pixels(m.generate(req(), timeout=120)) - seen["eager"][0]).max() <= 1
    finally:
        m.close()


def test_a_package_that_answers_otherwise_than_eager_is_refused_at_the_swap(first_launch, settings, monkeypatch,
                                                                          caplog, tmp_path):
    """The swap runs one small input through each kind's package and its eager block first."""
    cache, seen = first_launch
    other = tmp_path / "cache"
    shutil.copytree(cache, other, ignore=shutil.ignore_patterns("outputs"))
    folder = package_folder(other)
    monkeypatch.setattr(aot_blocks, "CHECK_TOLERANCE", -1.0)            # no answer can agree now
    monkeypatch.setattr(aot_blocks.PackageCompile, "_spawn", lambda self: pytest.fail("compiled instead"))
    caplog.set_level(logging.INFO, logger="zimage.engine.aot_blocks")
    m = launch(settings, other, monkeypatch)
    try:
        wait_for(lambda: startup.COMPILE_FAILED in startup.timeline_dict(), 120, message="the swap refused")
        assert "differs from the eager block" in caplog.text and not folder.exists()
        assert not aot_blocks.packaged(m._pipe.transformer)
        assert not folder.with_name(folder.name + ".trying").exists()   # refused, not crashed
    finally:
        m.close()


def test_what_the_package_does_not_cover_runs_eagerly(first_launch, tiny_model_dir):
    """An attention mask, grad mode, another dtype: the block's own forward; the batch and the
    sequence length are dynamic. Outputs match the eager block's at each."""
    cache, _ = first_launch
    pipe = load_pipeline(tiny_model_dir, torch.float32, "cpu")
    transformer = pipe.transformer
    assert aot_blocks.swap_in(transformer, package_folder(cache)) == len(transformer_blocks(transformer))
    block = transformer.layers[0]
    forward = block.forward
    dim, pairs = transformer.config.dim, transformer.config.dim // transformer.config.n_heads // 2
    g = torch.Generator().manual_seed(0)

    def inputs(batch, seq):
        x = torch.randn(batch, seq, dim, generator=g)
        freqs = torch.polar(torch.ones(batch, seq, pairs), torch.randn(batch, seq, pairs, generator=g))
        return x, freqs, torch.randn(batch, min(dim, 256), generator=g)

    with torch.no_grad():
        for batch, seq in ((1, 40), (3, 77)):
            x, freqs, adaln = inputs(batch, seq)
            before = forward.packaged_calls
            got, want = block(x, None, freqs, adaln), type(block).forward(block, x, None, freqs, adaln)
            assert forward.packaged_calls == before + 1 and (got - want).abs().max() < 1e-4
        x, freqs, adaln = inputs(2, 33)
        mask = torch.ones(2, 33, dtype=torch.bool)
        mask[1, 20:] = False
        eager = forward.eager_calls
        assert torch.equal(block(x, mask, freqs, adaln), type(block).forward(block, x, mask, freqs, adaln))
        assert forward.eager_calls == eager + 1
        q = block.attention.to_q
        contiguous = q.weight.data
        q.weight.data = contiguous.t().contiguous().t()          # the same values, moved and strided
        assert torch.equal(block(x, None, freqs, adaln), type(block).forward(block, x, None, freqs, adaln))
        assert forward.eager_calls == eager + 2
        q.weight.data = contiguous
        block(x, None, freqs, adaln)
        assert forward.eager_calls == eager + 2
    with torch.enable_grad():
        block(x, None, freqs, adaln)
    assert forward.eager_calls == eager + 3


def test_blocks_a_package_cannot_run_keep_the_in_thread_compile(tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir, torch.float32, "cpu")
    assert aot_blocks.unpackable(pipe.transformer) is None
    assert aot_blocks.wanted("on", pipe.transformer)
    assert not aot_blocks.wanted("auto", pipe.transformer)          # auto: a CUDA GPU only
    assert not aot_blocks.wanted("off", pipe.transformer)
    handle = pipe.transformer.layers[0].attention.to_q.register_forward_hook(lambda *a: None)   # a LoRA side path
    assert "hooks" in aot_blocks.unpackable(pipe.transformer)
    handle.remove()

    class Fp8Linear(torch.nn.Linear):
        pass
    pipe.transformer.layers[0].feed_forward.w1 = Fp8Linear(1, 1)
    assert "Fp8Linear" in aot_blocks.unpackable(pipe.transformer)


def test_a_cancelled_compile_ends_its_process(tiny_model_dir, tmp_path):
    """Unload or a plan while it compiles: the process group is killed, nothing is swapped."""
    pipe = load_pipeline(tiny_model_dir, torch.float32, "cpu")
    done = []
    bg = aot_blocks.PackageCompile(pipe, tmp_path, done.append).start()
    assert bg.process is not None and bg.process.poll() is None
    bg.cancel()
    wait_for(lambda: done, 30, message="the process ended")
    assert bg.process.returncode == -9 and bg.error is None and not bg.swap_into(pipe)


def test_a_closed_manager_leaves_no_compile_process(settings, monkeypatch, tmp_path):
    spawned = []
    real_spawn = aot_blocks.PackageCompile._spawn
    monkeypatch.setattr(aot_blocks.PackageCompile, "_spawn", lambda self: spawned.append(real_spawn(self)) or spawned[-1])
    m = launch(settings, tmp_path / "cache", monkeypatch)
    try:
        wait_for(lambda: spawned, 60, message="the compile process started")
    finally:
        m.close()
    assert spawned[0].wait(30) == -9


def test_a_package_that_killed_a_worker_is_never_loaded_again(first_launch, settings, monkeypatch, caplog, tmp_path):
    """A worker that died loading or first running the package (SIGSEGV in torch 2.11's CUDA loader,
    H100) left its `.trying` mark: the next worker neither loads the package (a crash loop) nor
    compiles it again; the in-thread compile serves, in this launch and the next."""
    cache, seen = first_launch
    crashed_cache = tmp_path / "cache"
    shutil.copytree(cache, crashed_cache, ignore=shutil.ignore_patterns("outputs"))
    folder = package_folder(crashed_cache)
    folder.with_name(folder.name + ".trying").write_text("12345")       # as the dead worker left it
    monkeypatch.setattr(aot_blocks.PackageCompile, "_spawn", lambda self: pytest.fail("compiled in a process again"))
    monkeypatch.setattr(aot_blocks, "swap_in", lambda *a, **k: pytest.fail("loaded the package again"))
    real_warm = speed.warm_compiled
    monkeypatch.setattr(speed, "warm_compiled", lambda pipe: real_warm(pipe, size=64))
    caplog.set_level(logging.WARNING)
    for _ in range(2):                                                  # this launch and the next
        m = launch(settings, crashed_cache, monkeypatch)
        try:
            wait_for(lambda: startup.COMPILED in startup.timeline_dict() or startup.COMPILE_FAILED in
                     startup.timeline_dict(), 300, interval=0.2, message="the in-thread compile swapped in")
            assert startup.COMPILED in startup.timeline_dict()
            assert accel.is_compiled(m._pipe) and not aot_blocks.packaged(m._pipe.transformer)
            assert np.abs(pixels(m.generate(req(), timeout=120)) - seen["eager"][0]).max() <= 1
        finally:
            m.close()
        assert not folder.exists() and folder.with_name(folder.name + ".crashed").exists()
    assert caplog.text.count("died while loading") == 1


def test_the_setting():
    assert load_settings([], env={}, default_config=None).compile_process == "off"
    assert load_settings(["--compile-process", "auto"], env={}, default_config=None).compile_process == "auto"
    assert load_settings(["--compile-process", "off"], env={}, default_config=None).compile_process == "off"
    assert load_settings([], env={"ZIMAGE_COMPILE_PROCESS": "on"}, default_config=None).compile_process == "on"
    with pytest.raises(ConfigError, match="compile_process"):
        load_settings([], env={"ZIMAGE_COMPILE_PROCESS": "sometimes"}, default_config=None)


def test_a_failed_compile_process_falls_back_to_the_in_thread_compile(settings, monkeypatch, caplog, tmp_path):
    """Whatever the process cannot compile (an attention backend torch.export refuses, say), the
    worker compiles on its thread as before: compiled blocks either way, the log says why."""
    import subprocess
    import sys

    def failing(self):
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen([sys.executable, "-c", "import sys; print('export refused'); sys.exit(1)"],
                                stdin=subprocess.PIPE, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)
    monkeypatch.setattr(aot_blocks.PackageCompile, "_spawn", failing)
    real_warm = speed.warm_compiled
    monkeypatch.setattr(speed, "warm_compiled", lambda pipe: real_warm(pipe, size=64))
    caplog.set_level(logging.WARNING, logger="zimage.engine.manager_compile")
    m = launch(settings, tmp_path / "cache", monkeypatch)
    try:
        wait_for(lambda: startup.COMPILED in startup.timeline_dict() or startup.COMPILE_FAILED in
                 startup.timeline_dict(), 300, interval=0.2, message="the in-thread compile swapped in")
        assert startup.COMPILED in startup.timeline_dict()
        assert "compiling in a process failed" in caplog.text and "export refused" in caplog.text
        assert accel.is_compiled(m._pipe) and not aot_blocks.packaged(m._pipe.transformer)   # compile_bg's twin
    finally:
        m.close()
