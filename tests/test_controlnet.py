"""ControlNet end to end on the CPU: the tiny model and the tiny ControlNet, the ControlNet
downloaded from the local fake ModelScope hub on first use through the model cache, over HTTP
(/generate's `control`, A1111's alwayson_scripts with webuiapi's ControlNetUnit)."""
from __future__ import annotations

import base64
import dataclasses
import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw

from zimage.store.cache import modelscope_cache_base
from zimage.store.control_images import canny_map
from zimage.store.hub import cached_copy
from zimage.testing.fake_hub import FakeHub
from zimage.testing.tiny_controlnet import FILENAME, make_tiny_controlnet

CONTROLNET_ID = "PAI/Z-Image-Turbo-Fun-Controlnet-Union"
BASE = {"prompt": "a cat", "width": 256, "height": 256, "num_inference_steps": 2, "seed": 7}


@pytest.fixture(scope="session")
def tiny_controlnet_dir(tmp_path_factory) -> Path:
    return make_tiny_controlnet(tmp_path_factory.mktemp("controlnet") / "tiny")


@pytest.fixture
def hub(tiny_controlnet_dir, monkeypatch):
    with FakeHub({CONTROLNET_ID: tiny_controlnet_dir}) as fake:
        fake.configure_client(monkeypatch.setenv)
        yield fake


@pytest.fixture
def cn_server(start_server, settings, hub):
    return start_server(dataclasses.replace(settings, controlnet=CONTROLNET_ID, warmup=False))


def square_png(size: int = 256) -> bytes:
    img = Image.new("RGB", (size, size), "black")
    ImageDraw.Draw(img).rectangle((60, 60, 200, 200), fill="white")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pixels(body: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).convert("RGB"), dtype=int)


def post(server, body: dict) -> requests.Response:
    return requests.post(server.url + "/generate", json=body, timeout=300)


def test_downloaded_on_first_use_through_the_cache_then_reused(cn_server, hub):
    srv = cn_server
    assert post(srv, BASE).status_code == 200                 # no ControlNet asked: nothing fetched
    assert not hub.file_requests
    control = {"image": b64(square_png()), "module": "canny"}
    r = post(srv, {**BASE, "control": control})
    assert r.status_code == 200, r.text
    assert [p for p, _ in hub.file_requests] == [FILENAME]
    folder, problems = cached_copy(CONTROLNET_ID, modelscope_cache_base(srv.settings.cache_dir))
    assert folder is not None and not problems and (folder / FILENAME).stat().st_size > 0
    assert post(srv, {**BASE, "control": control}).status_code == 200
    assert len(hub.file_requests) == 1                        # cached and loaded: no second download
    health = requests.get(srv.url + "/health", timeout=10).json()
    assert health["load_count"] == 1                          # the base was never loaded again
    assert 'ControlNet 0: "Module: canny, Model: Z-Image-Turbo-Fun-Controlnet-Union, Weight: 1, ' \
           'Guidance Start: 0, Guidance End: 1"' in r.json()["info"]


def test_control_changes_the_picture_and_weight_zero_does_not(cn_server):
    plain = pixels(post(cn_server, BASE).json())
    image = b64(square_png())
    controlled = pixels(post(cn_server, {**BASE, "control": {"image": image, "module": "canny"}}).json())
    zero = pixels(post(cn_server, {**BASE, "control": {"image": image, "module": "canny", "weight": 0}}).json())
    late = pixels(post(cn_server, {**BASE, "control": {"image": image, "module": "canny",
                                                        "guidance_start": 0.5}}).json())
    assert np.abs(controlled - plain).mean() > 5              # the edges steer the picture
    assert np.array_equal(zero, plain)                        # weight 0: the picture without ControlNet
    assert not np.array_equal(late, controlled) and not np.array_equal(late, plain)   # start 0.5: last step only


def test_unload_drops_it_and_it_loads_again(cn_server):
    control = {"image": b64(square_png()), "module": "none"}
    assert post(cn_server, {**BASE, "control": control}).status_code == 200
    first = pixels(post(cn_server, {**BASE, "control": control}).json())
    cn_server.manager.unload("none").future.result(60)
    assert cn_server.manager._control.loaded is False
    again = pixels(post(cn_server, {**BASE, "control": control}).json())
    assert np.array_equal(first, again)
    assert cn_server.manager.load_count == 2


def test_verify_finds_a_damaged_controlnet_and_repair_fetches_only_it(cn_server, hub):
    control = {"image": b64(square_png()), "module": "canny"}
    assert post(cn_server, {**BASE, "control": control}).status_code == 200
    folder, _ = cached_copy(CONTROLNET_ID, modelscope_cache_base(cn_server.settings.cache_dir))
    path = folder / FILENAME
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF                                        # same size, one byte flipped: only a hash sees it
    path.write_bytes(bytes(data))
    report = cn_server.manager.verify(CONTROLNET_ID).future.result(60)
    assert [p.path for p in report.problems] == [FILENAME] and report.how == "sha256"
    cn_server.manager.unload("none").future.result(60)
    hub.reset_counters()
    fixed = cn_server.manager.repair(CONTROLNET_ID).future.result(60)
    assert list(fixed) == [FILENAME] and [p for p, _ in hub.file_requests] == [FILENAME]
    assert not cn_server.manager.verify(CONTROLNET_ID).future.result(60).problems
    assert post(cn_server, {**BASE, "control": control}).status_code == 200


def test_a1111_alwayson_controlnet_with_webuiapi(cn_server):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=cn_server.settings.port)
    control = Image.open(io.BytesIO(square_png()))
    unit = webuiapi.ControlNetUnit(image=control, module="canny", model="control_zimage_union", weight=0.8,
                                   guidance_start=0.0, guidance_end=0.5)
    result = api.txt2img(prompt="a cat", width=256, height=256, steps=2, seed=7, controlnet_units=[unit],
                         alwayson_scripts={})
    entry = ('ControlNet 0: "Module: canny, Model: Z-Image-Turbo-Fun-Controlnet-Union, Weight: 0.8, '
             'Guidance Start: 0, Guidance End: 0.5"')
    assert entry in result.info["infotexts"][0]
    saved = sorted(Path(cn_server.settings.outputs_dir).rglob("*.png"))[-1]
    assert entry in Image.open(saved).text["parameters"]      # the PNG records the unit as A1111 writes it
    # alwayson_scripts given each time: webuiapi's default for it is one dict it writes the units into,
    # so a later call without units would send the last call's units again
    plain = api.txt2img(prompt="a cat", width=256, height=256, steps=2, seed=7, alwayson_scripts={})
    off = api.txt2img(prompt="a cat", width=256, height=256, steps=2, seed=7, alwayson_scripts={},
                      controlnet_units=[webuiapi.ControlNetUnit(image=control, module="canny", enabled=False)])
    assert "ControlNet" not in off.info["infotexts"][0]
    assert np.array_equal(np.asarray(off.image), np.asarray(plain.image))
    assert not np.array_equal(np.asarray(result.image), np.asarray(plain.image))


def png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


@pytest.mark.parametrize("image, status, field", [
    ("not base64 !!", 422, "control.image"),
    (b64(b""), 422, "control.image"),
    (b64(b"GIF89a" + b"\0" * 40), 415, "control.image"),
    (b64(square_png()[:200]), 422, "control.image"),          # truncated
    (b64(png_header(30000, 30000)), 422, "control.image"),    # a bomb's header: refused before decoding
])
def test_bad_control_images_are_refused_naming_the_field(cn_server, hub, image, status, field):
    r = post(cn_server, {**BASE, "control": {"image": image, "module": "canny"}})
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field
    assert not hub.file_requests                              # refused before the ControlNet was fetched


@pytest.mark.parametrize("control, field", [
    ({"module": "canny"}, "control.image"),
    ({"image": b64(square_png()), "module": "depth"}, "control.module"),
    ({"image": b64(square_png()), "weight": 3}, "control.weight"),
    ({"image": b64(square_png()), "guidance_start": 0.8, "guidance_end": 0.2}, "control.guidance_end"),
    ({"image": b64(square_png()), "strength": 1}, "control.strength"),
])
def test_bad_control_values_are_refused_naming_the_field(cn_server, control, field):
    r = post(cn_server, {**BASE, "control": control})
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text


def test_a1111_units_refused_naming_the_field(cn_server):
    unit = {"input_image": b64(square_png()), "module": "canny"}
    body = {"prompt": "a cat", "width": 256, "height": 256, "steps": 2}
    r = requests.post(cn_server.url + "/sdapi/v1/txt2img", timeout=60,
                      json={**body, "alwayson_scripts": {"controlnet": {"args": [unit, unit]}}})
    assert r.status_code == 422 and "alwayson_scripts.controlnet.args" in r.text
    r = requests.post(cn_server.url + "/sdapi/v1/txt2img", timeout=60,
                      json={**body, "alwayson_scripts": {"controlnet": {"args": [{**unit, "module": "openpose"}]}}})
    assert r.status_code == 422 and "alwayson_scripts.controlnet.args[0].module" in r.text
    r = requests.post(cn_server.url + "/sdapi/v1/txt2img", timeout=60,
                      json={**body, "alwayson_scripts": {"controlnet": {"args": [{**unit, "input_image": "%%"}]}}})
    assert r.status_code == 422 and "alwayson_scripts.controlnet.args[0].input_image" in r.text


def test_canny_map_is_white_edges_on_black():
    edges = np.asarray(canny_map(Image.open(io.BytesIO(square_png()))))
    assert edges.shape == (256, 256, 3)
    assert edges[57:64, 100].max() == 255 and edges[130, 130].max() == 0 and edges[10, 10].max() == 0
    assert edges[:, :, 0].astype(bool).sum() < 0.05 * 256 * 256      # edges only, not the filled square


def test_make_tiny_model_controlnet_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "zimage", "make-tiny-model", str(tmp_path / "cn"), "--controlnet"],
                         capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    header = json.loads((tmp_path / "cn" / FILENAME).read_bytes()[8:8 + struct.unpack(
        "<Q", (tmp_path / "cn" / FILENAME).read_bytes()[:8])[0]])
    assert "control_layers.0.before_proj.weight" in header and "control_all_x_embedder.2-1.weight" in header


@pytest.fixture
def gpu_manager(settings, tiny_controlnet_dir):
    """The manager on the stand-in GPU of test_manager (tensors stay in RAM), the tiny ControlNet local."""
    from test_manager import FakeGpuPlacement, cpu_loader

    from zimage.engine.manager import PipelineManager

    managers = []

    def make(**overrides):
        s = dataclasses.replace(settings, controlnet=str(tiny_controlnet_dir), warmup=False, compile="off",
                                **overrides)
        m = PipelineManager(s, placement_factory=FakeGpuPlacement, loader=cpu_loader, idle_poll_s=0.05).start()
        managers.append(m)
        return m
    yield make
    for m in managers:
        m.close()


def control_request(weight: float = 1.0):
    from zimage.request import GenerationRequest
    from zimage.store.control_images import make_unit

    req = GenerationRequest.from_mapping(BASE)
    return dataclasses.replace(req, control=make_unit(Image.open(io.BytesIO(square_png())), "canny", "tiny",
                                                      weight, 0.0, 1.0))


def test_refused_in_a_low_vram_plan_and_the_plain_image_still_runs(gpu_manager):
    from zimage.errors import ControlNetRefused
    from zimage.state import LoadState

    m = gpu_manager(low_vram=True)
    assert m.ensure_ready(60).state == LoadState.OFFLOADED
    with pytest.raises(ControlNetRefused) as e:
        m.generate(control_request(), timeout=60)
    assert e.value.http_status == 409 and "Low VRAM" in e.value.hint
    assert not m._control.loaded
    assert m.generate(dataclasses.replace(control_request(), control=None), timeout=60).images
    m.set_low_vram(False).future.result(30)
    assert m.status().state == LoadState.ON_GPU
    assert m.generate(control_request(), timeout=60).images          # resident: it runs, no reload
    assert m.load_count == 1
    m.set_low_vram(True).future.result(30)
    assert not m._control.loaded                                      # a low-VRAM plan drops it


def test_the_budget_counts_the_controlnet(gpu_manager, tiny_model_dir, tiny_controlnet_dir):
    from zimage.engine.loader import component_bytes, read_model_index
    from zimage.engine.planning import WORKING_BYTES
    from zimage.errors import ControlNetRefused
    from zimage.state import LoadState

    model = sum(component_bytes(tiny_model_dir, n) for n in read_model_index(tiny_model_dir))
    extra = (tiny_controlnet_dir / FILENAME).stat().st_size
    fits_model_only = (model + WORKING_BYTES + extra // 2) / 2**30
    m = gpu_manager(vram_budget=f"{fits_model_only:.12f}")
    assert m.ensure_ready(60).state == LoadState.ON_GPU
    with pytest.raises(ControlNetRefused) as e:
        m.generate(control_request(), timeout=60)
    assert "does not fit in the VRAM budget" in e.value.message and not m._control.loaded
    roomy = gpu_manager(vram_budget=f"{(model + WORKING_BYTES + 2 * extra) / 2**30:.12f}")
    assert roomy.generate(control_request(), timeout=60).images


def test_control_with_an_edit_mode_is_refused_naming_control(cn_server, hub):
    """ControlNet's pipeline takes no init image or mask: an img2img request with a control unit
    is a clear 422, not an image that silently ignores one of them."""
    r = post(cn_server, {**BASE, "image": b64(square_png()), "control": {"image": b64(square_png()), "module": "canny"}})
    assert r.status_code == 422 and r.json()["error"]["field"] == "control", r.text
    assert "text to image only" in r.json()["error"]["message"]
    assert post(cn_server, {**BASE, "image": b64(square_png())}).status_code == 200
