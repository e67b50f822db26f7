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


class CpuPlanPlacement:
    """The stand-in GPU of test_manager whose low-VRAM plans are real: make_plan over the real
    sizes (the ControlNet's included) and a LowVramRuntime streaming blocks, on the CPU. The tiny
    model's blocks are a few KB beside the GBs of working memory, so its plans keep everything
    resident: `stream` carries out the plan with that many of the ControlNet's blocks streamed
    (and all but one transformer block), the part a budget cannot show here."""

    gpu_device = "cuda:0"
    stream: int | None = None

    def __init__(self):
        self.plans, self.runtime = [], None

    def move(self, pipe, device, on_progress=None):
        pass

    def vram_budget_bytes(self):
        return 80 * 2**30

    def enable_offload(self, pipe, budget_bytes, controlnet=None):
        from zimage.engine.offload import LowVramRuntime
        from zimage.engine.planning import make_plan, sizes_of

        plan = make_plan(sizes_of(pipe, controlnet), budget_bytes)
        if self.stream is not None and controlnet is not None:
            total = plan.control_resident + plan.control_streamed
            plan = dataclasses.replace(plan, resident_blocks=1, streamed_blocks=plan.resident_blocks - 1,
                                       control_resident=total - self.stream, control_streamed=self.stream)
        self.plans.append(plan)
        self.runtime = LowVramRuntime(pipe, plan, "cpu", controlnet)
        return plan.describe()

    def disable_offload(self, pipe):
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            runtime.remove("cpu")

    def lora_carrier(self):
        return self.runtime.lora_carrier if self.runtime is not None else None

    def free_memory(self):
        pass

    def release_pinned(self):
        pass


@pytest.fixture
def gpu_manager(settings, tiny_controlnet_dir):
    """The manager on a stand-in GPU (tensors stay in RAM; its plans really stream), the tiny
    ControlNet local."""
    from test_manager import cpu_loader

    from zimage.engine.manager import PipelineManager

    managers = []

    def make(controlnet=tiny_controlnet_dir, **overrides):
        s = dataclasses.replace(settings, controlnet=str(controlnet), warmup=False, compile="off", **overrides)
        m = PipelineManager(s, placement_factory=CpuPlanPlacement, loader=cpu_loader, idle_poll_s=0.05).start()
        managers.append(m)
        return m
    yield make
    for m in managers:
        m.close()


def control_request(weight: float = 1.0, **fields):
    from zimage.request import GenerationRequest
    from zimage.store.control_images import make_unit

    req = GenerationRequest.from_mapping({**BASE, **fields})
    return dataclasses.replace(req, control=make_unit(Image.open(io.BytesIO(square_png())), "canny", "tiny",
                                                      weight, 0.0, 1.0))


def image_of(result) -> np.ndarray:
    return np.asarray(result.images[0].image.convert("RGB"), dtype=int)


def test_runs_in_a_low_vram_plan_that_counts_and_streams_it(gpu_manager, monkeypatch):
    """Low VRAM: the ControlNet joins the plan (its blocks counted, streamed when they do not
    fit) instead of a refusal; the picture is the resident one; no reload across plan changes."""
    from zimage.state import LoadState

    resident = gpu_manager()
    expected = image_of(resident.generate(control_request(), timeout=120))
    monkeypatch.setattr(CpuPlanPlacement, "stream", 2)
    m = gpu_manager(low_vram=True)
    assert m.ensure_ready(60).state == LoadState.OFFLOADED
    out = m.generate(control_request(), timeout=120)
    plan = m._placement.plans[-1]
    assert m._control.loaded and (plan.control_resident, plan.control_streamed, plan.streamed_blocks) == (1, 2, 3)
    assert "ControlNet: 1 of 3 blocks resident" in m.status().plan
    from zimage.engine.anatomy import controlnet_blocks

    streamed = [s.blocks for s in m._placement.runtime.streamers]
    assert controlnet_blocks(m._control.model)[1:] in streamed     # its own streamer, beside the transformer's
    assert np.array_equal(image_of(out), expected)
    assert np.array_equal(image_of(m.generate(control_request(), timeout=120)), expected)   # prefetch wraps
    assert m.load_count == 1
    monkeypatch.setattr(CpuPlanPlacement, "stream", None)
    roomy = gpu_manager(low_vram=True)                             # 8 GiB: everything resident in the plan
    assert np.array_equal(image_of(roomy.generate(control_request(), timeout=120)), expected)
    assert roomy._placement.plans[-1].control_resident == 3
    roomy.set_low_vram(False).future.result(60)                   # resident again: the same ControlNet
    assert roomy.status().state == LoadState.ON_GPU and roomy._control.loaded
    assert np.array_equal(image_of(roomy.generate(control_request(), timeout=120)), expected)
    roomy.set_low_vram(True).future.result(60)                    # and back into a plan, kept
    assert roomy._control.loaded and roomy._placement.plans[-1].control_resident == 3
    assert np.array_equal(image_of(roomy.generate(control_request(), timeout=120)), expected)
    assert roomy.load_count == 1
    roomy.unload("none").future.result(60)
    assert not roomy._control.loaded and roomy._control.fit_bytes == 0


def test_int8_weights_take_it_too(gpu_manager, model_copy):
    """int8: the transformer's quantized blocks (dequantized into slots) are shared with the
    ControlNet, whose own blocks stay in the compute dtype; the picture is near the bf16 one."""
    from zimage.state import LoadState

    expected = image_of(gpu_manager().generate(control_request(), timeout=120))
    m = gpu_manager(quantize="int8", model=str(model_copy))    # the int8 copy goes beside the model: a copy
    out = m.generate(control_request(), timeout=120)
    assert m.status().state == LoadState.OFFLOADED and m._control.loaded and m._placement.plans[-1].quantized
    assert np.abs(image_of(out) - expected).mean() < 8                # int8 rounding, not another picture
    plain = image_of(m.generate(dataclasses.replace(control_request(), control=None), timeout=120))
    assert np.abs(image_of(out) - plain).mean() > 5                   # the ControlNet still steers it


def test_a_budget_without_room_beside_the_model_gets_a_plan(gpu_manager, tiny_model_dir, tiny_controlnet_dir):
    """A resident model whose budget has no room for the ControlNet goes to a plan with it
    (counted) rather than refusing; a budget no plan fits is refused naming --vram-budget."""
    from zimage.engine.loader import component_bytes, read_model_index
    from zimage.engine.planning import CONTROL_WORKING_BYTES, WORKING_BYTES
    from zimage.errors import ControlNetRefused
    from zimage.state import LoadState

    model = sum(component_bytes(tiny_model_dir, n) for n in read_model_index(tiny_model_dir))
    m = gpu_manager(vram_budget=f"{(model + WORKING_BYTES + CONTROL_WORKING_BYTES // 2) / 2**30:.12f}")
    assert m.ensure_ready(60).state == LoadState.ON_GPU
    assert m.generate(control_request(), timeout=120).images
    assert m.status().state == LoadState.OFFLOADED and m._control.loaded and m.load_count == 1
    # 2 GiB: the model's smallest plan fits (1 GiB of working memory with the VAE in tiles), the
    # ControlNet's pass needs 1.5 GiB more beside the denoise
    tight = gpu_manager(vram_budget="2", low_vram=True)
    tight.ensure_ready(60)
    with pytest.raises(ControlNetRefused) as e:
        tight.generate(control_request(), timeout=120)
    assert e.value.http_status == 409 and "does not fit in the" in e.value.message
    assert "--vram-budget to at least" in e.value.hint and not tight._control.loaded
    assert tight.generate(dataclasses.replace(control_request(), control=None), timeout=120).images


def test_v1_controlnet_with_inpaint_is_refused_naming_the_one_that_can(gpu_manager):
    from zimage.errors import ControlNetRefused

    m = gpu_manager()
    with pytest.raises(ControlNetRefused) as e:
        m.generate(control_request(init_image=picture(), mask=square_mask()), timeout=120)
    assert "reads no mask" in e.value.message and "Union-2.1" in e.value.hint


def png_of(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def picture() -> Image.Image:
    return Image.open(io.BytesIO(square_png())).convert("RGB")


def square_mask(box=(96, 96, 160, 160)) -> Image.Image:
    mask = Image.new("L", (256, 256), 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


def test_control_with_img2img_is_refused_naming_control(cn_server, hub):
    """diffusers has no ControlNet image-to-image pipeline for Z-Image: an img2img request with a
    control unit is a clear 422 naming the modes that take one, not an image that ignores it."""
    r = post(cn_server, {**BASE, "image": b64(square_png()), "control": {"image": b64(square_png()), "module": "canny"}})
    assert r.status_code == 422 and r.json()["error"]["field"] == "control", r.text
    assert "text to image, inpaint and outpaint, not with image to image" in r.json()["error"]["message"]
    zh = requests.post(cn_server.url + "/generate", timeout=60, headers={"Accept-Language": "zh-CN"},
                       json={**BASE, "image": b64(square_png()), "control": {"image": b64(square_png())}})
    assert "不能用于图生图" in zh.json()["error"]["message"]
    assert post(cn_server, {**BASE, "image": b64(square_png())}).status_code == 200
    assert not hub.file_requests                              # refused before the ControlNet was fetched


@pytest.fixture(scope="session")
def tiny_controlnet21_dir(tmp_path_factory) -> Path:
    return make_tiny_controlnet(tmp_path_factory.mktemp("controlnet21") / "tiny", version="2.1")


@pytest.fixture
def cn21_server(start_server, settings, tiny_controlnet21_dir, monkeypatch):
    with FakeHub({CONTROLNET_ID: tiny_controlnet21_dir}) as fake:
        fake.configure_client(monkeypatch.setenv)
        yield start_server(dataclasses.replace(settings, controlnet=CONTROLNET_ID, warmup=False))


def photo(size: int = 256) -> Image.Image:
    """A picture with detail everywhere, so pixels kept or changed show."""
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), "RGB")


MASK_BOX = (96, 96, 160, 160)


def outside(box, margin: int, size: int = 256) -> np.ndarray:
    """Pixels farther than `margin` from `box` (the mask's blur reaches that far)."""
    keep = np.ones((size, size), dtype=bool)
    keep[max(0, box[1] - margin):box[3] + margin, max(0, box[0] - margin):box[2] + margin] = False
    return keep


def test_inpaint_with_controlnet_keeps_the_outside_and_loads_nothing_again(cn21_server):
    srv = cn21_server
    source = photo()
    control = {"image": b64(square_png()), "module": "canny"}
    body = {**BASE, "image": b64(png_of(source)), "mask": b64(png_of(square_mask(MASK_BOX))), "strength": 1.0}
    plain = post(srv, body)
    assert plain.status_code == 200, plain.text
    r = post(srv, {**body, "control": control})
    assert r.status_code == 200, r.text
    out, before = pixels(r.json()), np.asarray(source, dtype=int)
    keep = outside(MASK_BOX, 12)
    assert np.abs(out[keep] - before[keep]).max() <= 2                 # outside the mask: the input
    inner = ~outside(MASK_BOX, -8)
    assert np.abs(out[inner] - before[inner]).mean() > 10              # inside: painted
    assert np.abs(out[inner] - pixels(plain.json())[inner]).mean() > 3   # and steered by the ControlNet
    info = r.json()["info"]
    assert 'ControlNet 0: "Module: canny' in info and "Mask blur: 4" in info
    saved = [Image.open(p).text["parameters"] for p in Path(srv.settings.outputs_dir).rglob("*.png")]
    assert sum('ControlNet 0: "Module: canny' in text and "Mode: inpaint" in text for text in saved) == 1
    assert requests.get(srv.url + "/health", timeout=10).json()["load_count"] == 1


def test_inpaint_with_controlnet_makes_several_images_in_one_call(cn21_server):
    """Two or more images were a 500: diffusers' ControlNet inpaint repeats its picture and map to
    the batch but not its mask (torch.cat: "Expected size 2 but got size 1")."""
    source = photo()
    body = {**BASE, "image": b64(png_of(source)), "mask": b64(png_of(square_mask(MASK_BOX))), "num_images": 3,
            "control": {"image": b64(square_png()), "module": "canny"}}
    r = post(cn21_server, body)
    assert r.status_code == 200, r.text[:300]
    images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(i))).convert("RGB"), dtype=int)
              for i in r.json()["images"]]
    keep, before = outside(MASK_BOX, 12), np.asarray(source, dtype=int)
    assert len(images) == 3 and all(np.abs(out[keep] - before[keep]).max() <= 2 for out in images)
    assert np.abs(images[0] - images[1]).max() > 0                      # seeds s and s+1


def test_outpaint_with_controlnet_keeps_the_picture(cn21_server):
    source = photo(192)
    body = {**BASE, "image": b64(png_of(source)), "outpaint": {"left": 64, "right": 0, "top": 0, "bottom": 64},
            "control": {"image": b64(square_png()), "module": "canny"}}
    r = post(cn21_server, body)
    assert r.status_code == 200, r.text
    out = pixels(r.json())
    assert out.shape == (256, 256, 3)
    kept = out[0:180, 76:256]                                           # the original, away from the seam's blur
    assert np.abs(kept - np.asarray(source, dtype=int)[0:180, 12:192]).max() <= 2
    assert out[200:, :50].std() > 5                                    # the new corner is painted


def test_a1111_img2img_with_mask_and_alwayson_controlnet(cn21_server):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=cn21_server.settings.port)
    unit = webuiapi.ControlNetUnit(image=Image.open(io.BytesIO(square_png())), module="canny", weight=0.8)
    source = photo()
    result = api.img2img(images=[source], mask_image=square_mask(MASK_BOX), prompt="a cat", width=256, height=256,
                         steps=2, seed=7, denoising_strength=0.75, controlnet_units=[unit], alwayson_scripts={})
    info = result.info["infotexts"][0]
    assert 'ControlNet 0: "Module: canny, Model: Z-Image-Turbo-Fun-Controlnet-Union, Weight: 0.8' in info
    # asked 0.75; diffusers' ControlNet inpaint has no strength: what ran (1) is what is recorded
    assert "Denoising strength: 1," in info and result.info["denoising_strength"] == 1.0
    out, before = np.asarray(result.image.convert("RGB"), dtype=int), np.asarray(source, dtype=int)
    keep = outside(MASK_BOX, 12)
    assert np.abs(out[keep] - before[keep]).max() <= 2
    plain = requests.post(cn21_server.url + "/sdapi/v1/img2img", timeout=120, json={
        "init_images": [b64(png_of(source))], "prompt": "a cat", "steps": 2,
        "alwayson_scripts": {"controlnet": {"args": [{"input_image": b64(square_png()), "module": "canny"}]}}})
    assert plain.status_code == 422 and "control" in plain.text               # no mask: img2img, no ControlNet


def test_a1111_control_maps_of_any_size_under_the_upload_cap_are_read_by_txt2img_and_img2img(cn21_server):
    """A ControlNet map is an image like an init image: a 600x600 photo's map (over 1 MB of base64)
    passes the body cap of both A1111 routes (it was refused as a body "larger than 256 KB")."""
    from zimage.web.http.api import MAX_BODY_BYTES

    big = b64(png_of(photo(600)))
    assert len(big) > 4 * MAX_BODY_BYTES
    unit = {"input_image": big, "module": "canny", "weight": 0.7}
    body = {"prompt": "a cat", "width": 256, "height": 256, "steps": 2, "seed": 3,
            "alwayson_scripts": {"ControlNet": {"args": [unit, {"enabled": False}]}}}
    txt = requests.post(cn21_server.url + "/sdapi/v1/txt2img", json=body, timeout=120)
    assert txt.status_code == 200, txt.text[:300]
    assert 'ControlNet 0: "Module: canny' in json.loads(txt.json()["info"])["infotexts"][0]
    masked = {**body, "init_images": [b64(png_of(photo()))], "mask": b64(png_of(square_mask(MASK_BOX))),
              "alwayson_scripts": {"controlnet": {"args": [{"image": {"image": big, "mask": None}, "module": "canny"}]}}}
    img = requests.post(cn21_server.url + "/sdapi/v1/img2img", json=masked, timeout=120)
    assert img.status_code == 200, img.text[:300]
    # the rest of the body keeps its own cap: a prompt-sized field over it is still refused
    padded = {**body, "negative_prompt": "x" * (MAX_BODY_BYTES + 10)}
    assert requests.post(cn21_server.url + "/sdapi/v1/txt2img", json=padded, timeout=60).status_code == 413


def test_a_control_image_path_too_long_for_the_filesystem_is_refused_naming_the_field(tmp_path):
    """is_file() on a name over 255 bytes raised OSError (ENAMETOOLONG, the path in its text)
    before the read's own refusal could answer."""
    from zimage.store.control_images import load_image
    from zimage.store.pnginfo import ImageRefused

    with pytest.raises(ImageRefused) as err:
        load_image(tmp_path / ("a" * 300 + ".png"), 10**7, 10**7, "control_image")
    assert str(tmp_path) not in err.value.user_text() and "control_image" in json.dumps(err.value.to_dict())


@pytest.mark.parametrize("cli_server", ["empty-cwd"], indirect=True)
def test_the_demo_runs_a_controlnet_out_of_the_box_and_writes_nothing_where_it_started(cli_server, tmp_path):
    """`python webui.py --demo` with no --controlnet: the tiny ControlNet is written into the app's
    cache (beside the tiny model), never into the working folder (it was written there as a tiny
    pipeline under PAI/..., then refused: "holds 0 safetensors files")."""
    url, terminal = cli_server
    r = requests.post(url + "/generate", json={**BASE, "control": {"image": b64(square_png()), "module": "canny"}},
                      timeout=300)
    assert r.status_code == 200, (r.text, terminal()[-2000:])
    assert len(r.json()["images"]) == 1 and 'ControlNet 0: "Module: canny' in r.json()["info"]
    assert list((tmp_path / "cwd").iterdir()) == []
    cached = tmp_path / "home" / ".cache" / "zimage-webui" / "tiny-controlnet"
    assert [p.name for p in cached.glob("*/*.safetensors")] == [FILENAME]


def test_the_demo_maps_each_controlnet_id_to_its_tiny_version_and_keeps_a_local_folder(tmp_path):
    from zimage.config import Settings
    from zimage.engine.demo import DEMO_CONTROLNET_DIR, DEMO_MODEL_DIR, demo_resolver, with_demo_model

    demo = with_demo_model(Settings(demo=True))
    assert Path(demo.model) == DEMO_MODEL_DIR and Path(demo.controlnet) == DEMO_CONTROLNET_DIR / "union-1"
    v21 = with_demo_model(Settings(demo=True, controlnet="PAI/Z-Image-Turbo-Fun-Controlnet-Union-2.1"))
    assert Path(v21.controlnet) == DEMO_CONTROLNET_DIR / "union-2.1"
    assert with_demo_model(v21) == v21                       # Ray replicas apply it again
    local = make_tiny_controlnet(tmp_path / "mine")
    mine = with_demo_model(Settings(demo=True, controlnet=str(local)))
    assert mine.controlnet == str(local) and demo_resolver(mine.controlnet) == local.resolve()
