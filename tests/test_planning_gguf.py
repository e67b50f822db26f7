"""A GGUF DiT under a VRAM budget, loaded for real (the tiny model's Q8_0 file) through the manager
with the CPU standing in for the GPU: the plan counts its packed bytes and keeps it resident, and
the status says which plan and why."""
from __future__ import annotations

import dataclasses

from test_manager import CpuAsGpuPlacement, _tiny_working_set, cpu_loader, req
from test_single_file import comfy_root  # noqa: F401  (fixtures)

from zimage.engine.manager import PipelineManager
from zimage.engine.planning import sizes_of
from zimage.state import LoadState
from zimage.store.model_source import ModelOptions, make_resolver, resolve_parts


def test_a_budget_that_holds_the_q8_0_dit_keeps_it_resident(hub, settings, comfy_root, monkeypatch):
    _tiny_working_set(monkeypatch)
    gguf = comfy_root / "models/diffusion_models/tiny_z_image_turbo-Q8_0.gguf"
    s = dataclasses.replace(settings, model=str(gguf), warmup=False, dtype="float32")
    parts = resolve_parts(str(gguf), ModelOptions(), s.cache_dir)
    sizes = sizes_of(cpu_loader(parts, __import__("torch").float32, "cpu"))
    assert sizes.dit_format == "Q8_0"
    # the DiT resident and the text encoder visiting fit, everything resident does not
    dit_resident, everything = sizes.peak(len(sizes.blocks), False, 1000), sizes.peak(len(sizes.blocks), True, 1000)
    assert dit_resident < everything
    budget = (dit_resident + everything) // 2
    m = PipelineManager(dataclasses.replace(s, vram_budget=f"{budget / 2**30:.12f}"), placement_factory=CpuAsGpuPlacement,
                        loader=cpu_loader, resolver=make_resolver(ModelOptions())).start()
    try:
        status = m.ensure_ready(120)
        assert status.state == LoadState.OFFLOADED
        assert status.plan.startswith("resident: Q8_0 DiT"), status.plan
        assert "text encoder visits" in status.plan and "streamed from RAM" not in status.plan
        assert m.generate(req(), timeout=120).images
    finally:
        m.close()
