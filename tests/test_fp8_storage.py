"""An fp8 DiT file (the tiny model's DiT as ComfyUI's e4m3fn cast, and as a "scaled" file) loaded
for real through the single-file loader: its block Linears stay float8 in memory, it makes the
image the same file made when read into the load dtype, the planner counts its float8 bytes, and
what cannot work on float8 weights (LoRA fusing, --fp8 on, the compile) refuses or steps aside."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_manager import CpuAsGpuPlacement, _tiny_working_set, cpu_loader

from zimage.engine import fp8_storage, single_file, speed
from zimage.engine.planning import make_plan, sizes_of, working_bytes
from zimage.errors import LoraNeedsFullWeights
from zimage.store.model_source import ModelOptions, resolve_parts
from zimage.testing.single_files import fp8_scaled_state, write_format
from zimage.testing.tiny_comfy import DIT_FILE, make_tiny_comfy

DTYPE = torch.bfloat16       # the GPU's load dtype, so bf16 and float8 bytes compare as on the GPU
UNIT_FILE = "tiny_z_image_turbo_fp8_unit_scaled.safetensors"


@pytest.fixture(scope="module")
def fp8_root(tmp_path_factory) -> Path:
    """ComfyUI's tree with the tiny DiT as bf16, plain fp8, scaled fp8 and scaled fp8 whose scales are all 1."""
    root = tmp_path_factory.mktemp("fp8") / "ComfyUI"
    make_tiny_comfy(root)
    comfy = load_file(str(root / "models/diffusion_models" / DIT_FILE))
    write_format(comfy, "fp8", root)
    write_format(comfy, "fp8_scaled", root)
    save_file(fp8_scaled_state(comfy, unit=(".weight",)), str(root / "models/diffusion_models" / UNIT_FILE))
    return root


def dit(root: Path, name: str) -> Path:
    return root / "models/diffusion_models" / name


def load(path: Path, settings):
    return cpu_loader(resolve_parts(str(path), ModelOptions(), settings.cache_dir), DTYPE, "cpu")


def image(pipe) -> np.ndarray:
    out = pipe(prompt="a red fox", width=128, height=128, num_inference_steps=2, guidance_scale=0.0,
               generator=torch.Generator().manual_seed(7), output_type="np")
    return np.asarray(out.images[0], dtype=np.float64)


def float8_linears(transformer) -> dict[str, torch.nn.Linear]:
    return {n: m for n, m in transformer.named_modules()
            if isinstance(m, torch.nn.Linear) and m.weight.dtype == torch.float8_e4m3fn}


def test_fp8_file_stays_float8_and_makes_the_image_of_its_values_read_into_bf16(hub, settings, fp8_root, monkeypatch):
    kept = load(dit(fp8_root, "z_image_turbo_fp8_e4m3fn.safetensors"), settings)
    fp8 = float8_linears(kept.transformer)
    # every block's attention and feed-forward Linear (bias-free, float8 in the file); nothing else
    assert len(fp8) == 7 * (len(kept.transformer.layers) + len(kept.transformer.noise_refiner)
                            + len(kept.transformer.context_refiner))
    assert all(".attention." in n or ".feed_forward." in n for n in fp8)
    assert fp8_storage.is_fp8_stored(kept.transformer) and kept.transformer.dtype == DTYPE
    with monkeypatch.context() as m:          # the same file read into bf16, as before fp8_storage
        m.setattr(single_file, "keep_fp8", lambda *a: 0)
        read = load(dit(fp8_root, "z_image_turbo_fp8_e4m3fn.safetensors"), settings)
    assert not float8_linears(read.transformer) and not fp8_storage.is_fp8_stored(read.transformer)
    full = dict(read.transformer.named_modules())
    for name, linear in fp8.items():          # the same values, in half the bytes
        assert torch.equal(linear.weight.to(DTYPE), full[name].weight)
        assert linear.weight.nbytes * 2 == full[name].weight.nbytes
    saved = sum(m.weight.nbytes for m in fp8.values())
    assert sizes_of(kept).dit == sizes_of(read).dit - saved
    # the layers compute in bf16 from the same values: the same image, bit for bit
    picture = image(kept)
    assert np.array_equal(picture, image(read))
    assert all(m.weight.dtype == torch.float8_e4m3fn for m in fp8.values())     # float8 again after the call
    # and close to the bf16 file's (the fp8 rounding only), far from another seed's picture
    reference = image(load(dit(fp8_root, DIT_FILE), settings))
    assert np.abs(picture - reference).mean() < 0.02
    assert np.abs(picture - reference).mean() < np.abs(reference - np.roll(reference, 17, axis=0)).mean() / 3


def test_the_planner_keeps_the_fp8_dit_resident_where_its_float8_bytes_fit(hub, settings, fp8_root, monkeypatch):
    _tiny_working_set(monkeypatch)
    kept = load(dit(fp8_root, "z_image_turbo_fp8_e4m3fn.safetensors"), settings)
    with monkeypatch.context() as m:
        m.setattr(single_file, "keep_fp8", lambda *a: 0)
        read = load(dit(fp8_root, "z_image_turbo_fp8_e4m3fn.safetensors"), settings)
    small, big = sizes_of(kept), sizes_of(read)
    assert small.dit_format == "fp8" and big.dit_format == "bf16"
    n = len(small.blocks)
    budget = small.peak(n, True, working_bytes(False))        # everything resident, fp8 DiT
    assert big.peak(n, True, working_bytes(False)) > budget
    plan = make_plan(small, budget)
    assert plan.is_resident and plan.dit_bytes == small.dit
    assert plan.describe().startswith("everything on the GPU: fp8 DiT") and "fp8 weights" in plan.describe()
    assert not make_plan(big, budget).is_resident             # the same file read into bf16 does not fit


def test_through_the_manager_plans_streaming_unload_and_reload_keep_it_float8(hub, settings, fp8_root, monkeypatch):
    from test_manager import req

    from zimage.engine.manager import PipelineManager
    from zimage.engine.planning import minimum_bytes
    from zimage.state import LoadState

    _tiny_working_set(monkeypatch)
    path = dit(fp8_root, "z_image_turbo_fp8_e4m3fn.safetensors")
    sizes = sizes_of(load(path, settings))
    base = dataclasses.replace(settings, model=str(path), warmup=False, dtype="bfloat16")
    resident_budget = sizes.peak(len(sizes.blocks), True, working_bytes(False))
    pictures = []
    for budget in (resident_budget, minimum_bytes(sizes)):
        m = PipelineManager(dataclasses.replace(base, vram_budget=f"{(budget + 4096) / 2**30:.12f}"),
                            placement_factory=CpuAsGpuPlacement, loader=cpu_loader,
                            resolver=lambda *a, **k: resolve_parts(str(path), ModelOptions(), settings.cache_dir)).start()
        try:
            status = m.ensure_ready(120)
            assert status.state == LoadState.OFFLOADED
            if budget == resident_budget:
                assert "fp8 DiT" in status.plan and "streamed from RAM" not in status.plan, status.plan
            else:
                assert "streamed from RAM" in status.plan and "fp8 weights" in status.plan, status.plan
            pictures.append(np.asarray(m.generate(req(), timeout=120).images[0].image))
            m.unload(to="cpu")
            assert m.ensure_ready(120).state == LoadState.OFFLOADED
            assert float8_linears(m._pipe.transformer)
            m.unload(to="none")
            m.ensure_ready(120)
            assert float8_linears(m._pipe.transformer)
            again = np.asarray(m.generate(req(), timeout=120).images[0].image)
            assert np.array_equal(again, pictures[-1])
        finally:
            m.close()
    assert np.array_equal(pictures[0], pictures[1])     # streamed = resident


def test_loras_are_refused_resident_and_streamed(hub, settings, fp8_root, tiny_model_dir, tmp_path, monkeypatch):
    from zimage.engine.lora import LoraState, read_lora
    from zimage.engine.planning import minimum_bytes
    from zimage.testing.tiny_lora import make_tiny_loras

    _tiny_working_set(monkeypatch)
    lora = read_lora(make_tiny_loras(tmp_path / "loras", tiny_model_dir)["kohya"])
    pipe = load(dit(fp8_root, "z_image_turbo_fp8_e4m3fn.safetensors"), settings)
    before = {n: t.clone() for n, t in pipe.transformer.state_dict().items()}
    with pytest.raises(LoraNeedsFullWeights) as err:
        LoraState(pipe.transformer).apply([(lora, 1.0)])
    assert "fp8" in err.value.message and "fp8" in err.value.hint and err.value.http_status == 409
    placement = CpuAsGpuPlacement()
    placement.enable_offload(pipe, minimum_bytes(sizes_of(pipe)))      # every block streamed: LoRAs carried
    try:
        with pytest.raises(LoraNeedsFullWeights):
            LoraState(pipe.transformer, placement.lora_carrier()).apply([(lora, 1.0)])
    finally:
        placement.disable_offload(pipe)
    assert all(torch.equal(t, before[n]) for n, t in pipe.transformer.state_dict().items())


def test_scaled_fp8_stays_in_the_load_dtype_unless_its_scales_are_one(hub, settings, fp8_root):
    scaled = load(dit(fp8_root, "z_image_turbo_fp8_scaled.safetensors"), settings)
    assert not float8_linears(scaled.transformer) and not fp8_storage.is_fp8_stored(scaled.transformer)
    assert sizes_of(scaled).dit_format == "bf16"
    reference = image(load(dit(fp8_root, DIT_FILE), settings))
    assert np.abs(image(scaled) - reference).mean() < 0.02          # the scales were applied
    unit = load(dit(fp8_root, UNIT_FILE), settings)
    plain = load(dit(fp8_root, "z_image_turbo_fp8_e4m3fn.safetensors"), settings)
    assert set(float8_linears(unit.transformer)) == set(float8_linears(plain.transformer))


def test_fp8_on_and_the_compile_step_aside_with_a_note(hub, settings, fp8_root):
    from zimage.config_load import load_settings

    pipe = load(dit(fp8_root, "z_image_turbo_fp8_e4m3fn.safetensors"), settings)
    on = load_settings(["--fp8", "on"], env={})
    assert speed.use_fp8(pipe, on, CpuAsGpuPlacement(), (9, 0), True) == ""
    assert float8_linears(pipe.transformer) and fp8_storage.is_fp8_stored(pipe.transformer)
    note = speed.fp8_stored_note(pipe, on, compile_wanted=True)
    assert "fp8" in note and "compiled blocks" in note and "--fp8 on" in note
    assert speed.fp8_stored_note(pipe, load_settings([], env={}), compile_wanted=False) == ""
    assert not speed.plan_compile_wanted(load_settings(["--compile", "on"], env={}), CpuAsGpuPlacement(), pipe)
    assert speed.resident_plan(pipe, on).endswith("fp8 weights in the transformer (cast per layer as they run)")


def test_a_controlnet_runs_on_the_fp8_dit_and_leaves_it_float8(hub, settings, fp8_root, tmp_path):
    """The ControlNet shares the transformer's refiners (their hooks come along) and keeps its own
    weights in the load dtype: it runs; nothing of the DiT is upcast."""
    from PIL import Image

    from zimage.engine.controlnet import control_pipeline, load_controlnet
    from zimage.testing.tiny_controlnet import make_tiny_controlnet

    pipe = load(dit(fp8_root, "z_image_turbo_fp8_e4m3fn.safetensors"), settings)
    stored = set(float8_linears(pipe.transformer))
    cn = load_controlnet(Path(make_tiny_controlnet(tmp_path / "cn", version="2.1")), pipe.transformer, DTYPE, "cpu")
    out = control_pipeline(pipe, cn)(prompt="a fox", control_image=Image.new("RGB", (128, 128), (90, 30, 200)),
                                     width=128, height=128, num_inference_steps=2, guidance_scale=0.0,
                                     generator=torch.Generator().manual_seed(1), output_type="np")
    assert np.isfinite(out.images[0]).all() and out.images[0].std() > 0
    assert set(float8_linears(pipe.transformer)) == stored
