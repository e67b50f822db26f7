"""Hires fix and upscaling over HTTP on the real server with the tiny model and the tiny random
upscalers: A1111's txt2img with enable_hr and extra-single-image through webuiapi, /generate's
`hires` object, /sdapi/v1/upscalers, and a clear 4xx naming the field for every bad value."""
from __future__ import annotations

import base64
import dataclasses
import io

import pytest
import requests
from PIL import Image

from zimage.infotext import parse_infotext
from zimage.testing.tiny_upscaler import make_tiny_upscalers


@pytest.fixture
def up_server(start_server, settings, tmp_path):
    make_tiny_upscalers(tmp_path / "upscalers")
    return start_server(dataclasses.replace(settings, upscaler_dir=str(tmp_path / "upscalers")))


@pytest.fixture
def a1111(up_server):
    import webuiapi

    return webuiapi.WebUIApi(host="127.0.0.1", port=up_server.settings.port)


def b64png(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_upscalers_lists_built_ins_and_files_with_pickles_refused(up_server):
    entries = {e["name"]: e for e in requests.get(f"{up_server.url}/sdapi/v1/upscalers", timeout=30).json()}
    assert entries["Lanczos"]["usable"] and entries["tiny-compact-2x"]["scale"] == 2
    assert entries["tiny-rrdb-4x"]["scale"] == 4
    assert entries["pickled-4x"]["usable"] is False and "pickle" in entries["pickled-4x"]["refused_reason"]
    assert "/" not in entries["tiny-rrdb-4x"]["model_path"]         # the file's name, not the server's path


def test_txt2img_enable_hr_gives_the_scaled_picture_and_a1111_parameters(a1111):
    result = a1111.txt2img(prompt="a lighthouse", width=256, height=256, steps=2, seed=7, enable_hr=True,
                           hr_scale=1.5, hr_upscaler="tiny-compact-2x", hr_second_pass_steps=2, denoising_strength=0.5)
    assert result.image.size == (384, 384)
    info = result.info["infotexts"][0]
    params = parse_infotext(info)["params"]
    assert params["Size"] == "256x256" and params["Hires upscale"] == "1.5" and params["Hires steps"] == "2"
    assert params["Hires upscaler"] == "tiny-compact-2x" and params["Denoising strength"] == "0.5"
    saved = Image.open(io.BytesIO(base64.b64decode(a1111.txt2img(
        prompt="a lighthouse", width=256, height=256, steps=2, seed=7, enable_hr=False).json["images"][0])))
    assert saved.size == (256, 256)                    # enable_hr false: no hires fields read


def test_generate_hires_object_lanczos_with_resize_and_refine(up_server):
    body = {"prompt": "a cat", "width": 256, "height": 256, "num_inference_steps": 2, "seed": 3,
            "hires": {"upscaler": "Lanczos", "resize_x": 320, "strength": 0.4, "steps": 2}}
    r = requests.post(f"{up_server.url}/generate", json=body, timeout=300)
    assert r.status_code == 200, r.text
    image = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    assert image.size == (320, 320)
    assert "Hires resize: 320x0" in r.json()["info"]
    body["hires"]["strength"] = 0                      # the upscaler alone: the refine pass changed the picture
    plain = requests.post(f"{up_server.url}/generate", json=body, timeout=300).json()
    assert Image.open(io.BytesIO(base64.b64decode(plain["images"][0]))).tobytes() != image.tobytes()


def test_extra_single_image_upscales_by_the_model_and_keeps_the_picture_parameters(a1111, up_server):
    source = a1111.txt2img(prompt="a red boat", width=256, height=256, steps=1, seed=11)
    out = a1111.extra_single_image(image=source.image, upscaler_1="tiny-rrdb-2x", upscaling_resize=2)
    assert out.image.size == (512, 512)
    info = out.json["html_info"]
    assert info.startswith("a red boat") and "Seed: 11" in info
    assert "Postprocess upscale by: 2" in info and "Postprocess upscaler: tiny-rrdb-2x" in info
    odd = a1111.extra_single_image(image=Image.new("RGB", (300, 200), "white"), upscaler_1="None",
                                   upscaling_resize=1.5)
    assert odd.image.size == (450, 300)               # the picture's own size x scale, though not a multiple of 16


def post(server, path, body):
    return requests.post(f"{server.url}{path}", json=body, timeout=300)


@pytest.mark.parametrize("hires,field", [
    ({"scale": 4.5}, "hires.scale"), ({"scale": 0.5}, "hires.scale"), ({"scale": "2"}, "hires.scale"),
    ({"upscaler": "nope"}, "hires.upscaler"), ({"upscaler": "pickled-4x"}, "hires.upscaler"),
    ({"upscaler": "../tiny-rrdb-4x"}, "hires.upscaler"), ({"strength": 1.5}, "hires.strength"),
    ({"steps": 51}, "hires.steps"), ({"steps": -1}, "hires.steps"), ({"resize_x": 5000}, "hires.resize_x"),
    ({"resize_x": 10}, "hires.resize_x"), ({"colour": 1}, "hires.colour"), ("big", "hires"),
])
def test_generate_bad_hires_values_are_422_naming_the_field(up_server, hires, field):
    r = post(up_server, "/generate", {"prompt": "x", "width": 256, "height": 256, "num_inference_steps": 1,
                                      "hires": hires})
    assert r.status_code == (404 if field == "hires.upscaler" else 422), r.text     # 404: as a LoRA not in the folder
    assert r.json()["error"]["field"] == field


def test_size_over_the_max_after_scaling_is_refused_and_the_edges_are_valid(up_server):
    r = post(up_server, "/generate", {"prompt": "x", "width": 2048, "height": 1024, "num_inference_steps": 1,
                                      "hires": {"scale": 2.5, "strength": 0}})
    assert r.status_code == 422 and r.json()["error"]["field"] == "hires.scale"
    assert "5120x2560" in r.json()["error"]["message"]
    # the edges: scale 1 and 4, strength 0 and 1, steps 0 and 50 are accepted (never a 500)
    for hires in ({"scale": 1, "strength": 1, "steps": 1}, {"scale": 4, "strength": 0, "steps": 50}):
        r = post(up_server, "/generate", {"prompt": "x", "width": 256, "height": 256, "num_inference_steps": 1,
                                          "hires": hires})
        assert r.status_code == 200, r.text
        size = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).size
        assert size == (256 * hires["scale"],) * 2


def test_a1111_bad_hires_fields_are_named_as_a1111_names_them(up_server):
    base = {"prompt": "x", "width": 256, "height": 256, "steps": 1, "enable_hr": True}
    for extra, field in (({"hr_scale": 9}, "hr_scale"), ({"hr_upscaler": "Latent"}, "hr_upscaler"),
                         ({"denoising_strength": -0.1}, "denoising_strength"),
                         ({"hr_second_pass_steps": 99}, "hr_second_pass_steps"), ({"enable_hr": "yes"}, "enable_hr")):
        r = post(up_server, "/sdapi/v1/txt2img", {**base, **extra})
        assert r.status_code == (404 if field == "hr_upscaler" else 422), r.text
        assert field in r.json()["detail"]
    image = b64png(Image.new("RGB", (256, 256), "red"))
    for extra, field in (({"upscaling_resize": 5}, "upscaling_resize"), ({"upscaler_1": "x/../../y"}, "upscaler_1"),
                         ({"resize_mode": 3}, "resize_mode"), ({"image": "not base64!"}, "image"), ({"image": None}, "image"),
                         ({"upscaling_resize": 4, "image": b64png(Image.new("RGB", (1100, 300)))}, "upscaling_resize")):
        r = post(up_server, "/sdapi/v1/extra-single-image", {"image": image, **extra})
        assert r.status_code in (400, 404, 413, 422), r.text
        assert field in r.json()["detail"], r.text
    r = requests.get(f"{up_server.url}/health", timeout=10)
    assert r.status_code == 200                        # still serving


def test_hires_fields_are_checked_with_enable_hr_off_but_not_used(up_server):
    base = {"prompt": "x", "width": 256, "height": 256, "steps": 1, "enable_hr": False}
    r = post(up_server, "/sdapi/v1/txt2img", {**base, "hr_second_pass_steps": 51})
    assert r.status_code == 422 and "hr_second_pass_steps" in r.json()["detail"]
    # webuiapi's own defaults with hires off (hr_upscaler "Latent", hr_scale 2): a plain 256x256
    r = post(up_server, "/sdapi/v1/txt2img", {**base, "hr_upscaler": "Latent", "hr_scale": 2, "denoising_strength": 0.7})
    assert r.status_code == 200
    assert Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).size == (256, 256)
