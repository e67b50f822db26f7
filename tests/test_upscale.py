"""Upscaling (engine/upscale.py, engine/tiles.py, engine/esrgan_arch.py, store/upscalers.py): the
tiny random upscaler files load from safetensors, pickles are refused unread, tiles leave no seam,
and a tile that runs out of memory is halved."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zimage.engine import hires, tiles
from zimage.engine.upscale import load_net, run_net, upscale
from zimage.store import upscalers
from zimage.testing.tiny_upscaler import make_tiny_upscalers


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_tiny_upscalers(tmp_path_factory.mktemp("upscalers"))


def test_folder_lists_the_safetensors_nets_with_their_scale_and_refuses_pickles_unread(files):
    found = {f.name: f for f in upscalers.scan(files["rrdb4"].parent)}
    assert (found["tiny-rrdb-4x"].arch, found["tiny-rrdb-4x"].scale) == ("RRDBNet", 4)
    assert (found["tiny-rrdb-2x"].arch, found["tiny-rrdb-2x"].scale) == ("RRDBNet", 2)
    assert (found["tiny-compact-2x"].arch, found["tiny-compact-2x"].scale) == ("SRVGGNetCompact", 2)
    assert "pickle" in found["pickled-4x"].refused_reason          # its bytes would crash torch.load
    assert "not an ESRGAN" in found["not-esrgan"].refused_reason
    usable = upscalers.usable_paths(files["rrdb4"].parent)
    assert list(usable)[:2] == ["Lanczos", "Nearest"] and "pickled-4x" not in usable and "not-esrgan" not in usable
    assert upscalers.usable_paths(files["rrdb4"].parent / "missing") == {"Lanczos": "", "Nearest": ""}


def test_old_esrgan_key_layout_loads_as_the_same_net(files):
    from safetensors.torch import load_file

    from zimage.engine.esrgan_arch import build

    state = load_file(str(files["rrdb4"]))
    names = {"conv_first": "model.0", "conv_body": "model.1.sub.1", "conv_up1": "model.3", "conv_up2": "model.6",
             "conv_hr": "model.8", "conv_last": "model.10"}
    old = {}
    for key, value in state.items():
        stem, _, kind = key.rpartition(".")
        if stem.startswith("body."):
            _, block, rdb, conv = stem.split(".")
            old[f"model.1.sub.{block}.RDB{rdb[-1]}.{conv}.0.{kind}"] = value
        else:
            old[f"{names[stem]}.{kind}"] = value
    x = torch.rand(1, 3, 8, 8)
    with torch.inference_mode():
        assert torch.equal(build(old)(x), build(state)(x))


@pytest.mark.parametrize("kind,scale", [("compact2", 2), ("rrdb2", 2), ("rrdb4", 4)])
def test_a_constant_picture_through_tiles_has_no_seam(files, kind, scale):
    """The net's answer to a flat picture repeats every `scale` px (its pixel shuffle); tiled in
    24 px tiles it equals the one-piece answer, so no tile edge shows."""
    net = load_net(files[kind])
    flat = Image.new("RGB", (60, 44), (90, 140, 200))
    whole = np.asarray(run_net(net, flat, "cpu", tile=512)).astype(int)
    tiled = np.asarray(run_net(net, flat, "cpu", tile=24)).astype(int)
    assert tiled.shape == (44 * scale, 60 * scale, 3)
    assert np.abs(tiled - whole).max() <= 1
    assert np.abs(tiled[:, scale:] - tiled[:, :-scale]).max() <= 1       # the same across every column, seams too
    assert np.abs(tiled[scale:] - tiled[:-scale]).max() <= 1
    assert tiled.std() > 0 or kind != "compact2"                         # a real net's answer, not a blank


def test_feathered_blend_keeps_a_flat_picture_flat_and_weights_every_pixel():
    flat = np.full((70, 90, 3), 0.25, dtype=np.float32)
    out = tiles.run_tiled(flat, 32, 8, lambda part: part.copy())
    assert out.shape == flat.shape and np.allclose(out, 0.25)
    # a tile answer that differs per tile blends linearly across the overlap: no step at a seam
    seen = []

    def shade(part):
        seen.append(part.shape)
        return np.full(part.shape, len(seen) / 10, dtype=np.float32)
    stripes = tiles.run_tiled(np.zeros((16, 90, 3), np.float32), 32, 8, shade)
    row = stripes[0, :, 0]
    assert np.abs(np.diff(row)).max() < 0.1 / 8 + 1e-6       # the largest step: one tile's difference over the overlap


def test_resampler_upscale_gives_the_asked_size(files):
    image = Image.new("RGB", (40, 30), (10, 20, 30))
    assert upscale(image, (80, 60), "Lanczos", "").size == (80, 60)
    out = upscale(image, (100, 75), "tiny-compact-2x", str(files["compact2"]))    # the net's 2x, then Lanczos
    assert out.size == (100, 75)


def test_an_out_of_memory_tile_is_halved_until_it_fits(files, monkeypatch):
    """The injected seam: a tile over 16 px 'runs out of memory' (no GPU here)."""
    from zimage.engine import upscale as up

    monkeypatch.setattr(up, "MIN_MODEL_TILE_PX", 16)
    net = load_net(files["compact2"])
    image = Image.new("RGB", (40, 40), (50, 60, 70))
    tried = []

    def oom_above_16(e):
        return isinstance(e, torch.OutOfMemoryError)
    real_forward = net.forward

    def forward(x):
        tried.append(x.shape[-1])
        if x.shape[-1] > 16 + 2 * 16:         # the tile plus its context on both sides
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_forward(x)
    net.forward = forward
    out = run_net(net, image, "cpu", tile=64, is_oom_error=oom_above_16)
    assert out.size == (80, 80) and min(tried) == 16 + 32 and max(tried) > 48
    with pytest.raises(torch.OutOfMemoryError):
        tiles.halving(64, 32, lambda t: (_ for _ in ()).throw(torch.OutOfMemoryError("x")),
                      oom_above_16)


def test_refine_tiles_above_the_threshold_and_halves_on_out_of_memory(monkeypatch):
    monkeypatch.setattr(hires, "TILED_ABOVE_PX", 64 * 64)
    monkeypatch.setattr(hires, "MIN_REFINE_TILE_PX", 32)
    calls = []

    def run_part(pixels, tiled):
        calls.append((pixels.shape[:2], tiled))
        if pixels.shape[0] > 48:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return pixels
    small = Image.new("RGB", (48, 40), (1, 2, 3))
    assert hires.refine(small, run_part).tobytes() == small.tobytes()
    assert calls == [((48, 48), False)]                       # one piece (padded to 16s), prompt kept
    calls.clear()
    big = Image.new("RGB", (100, 90), (200, 100, 50))
    out = hires.refine(big, run_part, tile=96)
    assert out.size == (100, 90) and (np.asarray(out) == (200, 100, 50)).all()   # flat in, flat out across the seams
    assert calls[0] == ((96, 96), True) and all(t for _, t in calls)
    assert max(shape[0] for shape, _ in calls[1:]) == 48       # halved once
