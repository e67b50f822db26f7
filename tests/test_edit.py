"""Image to image, inpaint and outpaint (issue 20): on the loaded model, through every API with its
real client, and malformed uploads refused naming the field."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests
from PIL import Image

from zimage.infotext import parse_infotext
from zimage.request import GenerationRequest

SIZE = 256
FAST = {"num_inference_steps": 4, "seed": 11}
# A random-weight tiny model paints noise; what must hold is where it paints. Outside the mask the
# input comes back within this many levels (PNG is lossless; the composite rounds at the blur's edge).
OUTSIDE_TOLERANCE = 1


def picture(w: int = SIZE, h: int = SIZE, seed: int = 0) -> Image.Image:
    """A smooth gradient with a little noise: something a VAE round trip would visibly change."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) * 127 // max(1, w + h - 2)], -1)
    rgb = np.clip(rgb + rng.integers(-8, 9, rgb.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def square_mask(w: int = SIZE, h: int = SIZE, box=(96, 96, 160, 160)) -> Image.Image:
    mask = Image.new("L", (w, h), 0)
    mask.paste(255, box)
    return mask


def png(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def b64(im: Image.Image) -> str:
    return base64.b64encode(png(im)).decode()


def decoded(b64_text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64_text))).convert("RGB")


def far_from_mask(mask: Image.Image, margin: int) -> np.ndarray:
    """The pixels farther than `margin` px from the mask's box (the blur reaches `margin` px)."""
    left, top, right, bottom = mask.getbbox()
    keep = np.ones((mask.height, mask.width), bool)
    keep[max(0, top - margin):bottom + margin, max(0, left - margin):right + margin] = False
    return keep


# --- engine ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_pipe(tiny_model_dir):
    import torch

    from zimage.engine.loader import load_pipeline

    return load_pipeline(tiny_model_dir, torch.float32, "cpu", None, True)


def test_strength_0_img2img_returns_the_input(tiny_pipe):
    from zimage.engine.generate import run_pipeline

    image = picture()
    req = GenerationRequest.from_mapping({"prompt": "x", "init_image": image, "strength": 0.0, **FAST})
    out = run_pipeline(tiny_pipe, req, lambda: False)
    diff = np.abs(np.asarray(out[0], int) - np.asarray(image, int))
    assert out[0].size == image.size and diff.max() <= 1


def test_img2img_at_strength_0_6_changes_the_picture_and_counts_its_steps(tiny_pipe):
    from zimage.engine.generate import run_pipeline

    image = picture()
    steps = []
    req = GenerationRequest.from_mapping({"prompt": "x", "init_image": image, "strength": 0.6,
                                          "num_inference_steps": 5, "seed": 3})
    out = run_pipeline(tiny_pipe, req, lambda: False, on_step=lambda s, t, latents=None: steps.append((s, t)))
    assert steps == [(1, 3), (2, 3), (3, 3)]          # diffusers runs 5 - int(5 - 3) = 3 of the 5 steps
    assert np.abs(np.asarray(out[0], int) - np.asarray(image, int)).mean() > 5


@pytest.mark.parametrize("full_res", [False, True])
def test_inpaint_leaves_the_pixels_outside_the_mask(tiny_pipe, full_res):
    from zimage.engine.generate import run_pipeline

    image, mask = picture(), square_mask()
    req = GenerationRequest.from_mapping({"prompt": "x", "init_image": image, "mask": mask, "strength": 1.0,
                                          "mask_blur": 4, "inpaint_full_res": full_res, **FAST})
    out = np.asarray(run_pipeline(tiny_pipe, req, lambda: False)[0], int)
    src = np.asarray(image, int)
    keep = far_from_mask(mask, margin=3 * 4)
    assert np.abs(out - src)[keep].max() <= OUTSIDE_TOLERANCE
    inside = np.asarray(mask) == 255
    assert np.abs(out - src)[inside].mean() > 5          # the masked square was painted


def test_mode_pipeline_shares_the_modules_and_keeps_their_dtype(tiny_model_dir):
    """diffusers' from_pipe would cast the shared modules to float32 (its default dtype)."""
    import torch

    from zimage.engine.edit import mode_pipeline
    from zimage.engine.loader import load_pipeline

    pipe = load_pipeline(tiny_model_dir, torch.bfloat16, "cpu", None, True)
    for mode in ("img2img", "inpaint"):
        derived = mode_pipeline(pipe, mode)
        assert derived.transformer is pipe.transformer and derived.vae is pipe.vae
        assert next(pipe.transformer.parameters()).dtype == torch.bfloat16


def test_a_stopped_inpaint_is_cancelled(tiny_pipe):
    from zimage.engine.generate import run_pipeline
    from zimage.errors import Cancelled

    req = GenerationRequest.from_mapping({"prompt": "x", "init_image": picture(), "mask": square_mask(),
                                          "strength": 1.0, **FAST})
    seen = []
    with pytest.raises(Cancelled):
        run_pipeline(tiny_pipe, req, lambda: len(seen) >= 1, on_step=lambda s, t, latents=None: seen.append(s))
    assert seen == [1]


# --- our /generate -------------------------------------------------------------------------------

def test_generate_modes_run_on_the_loaded_model_and_record_them(server):
    url = server.url
    r = requests.post(f"{url}/generate", json={"prompt": "a cat", "width": SIZE, "height": SIZE, **FAST}, timeout=120)
    assert r.status_code == 200
    loads = requests.get(f"{url}/health").json()["load_count"]
    image = b64(picture())
    r = requests.post(f"{url}/generate", json={"prompt": "a cat", "image": image, "strength": 0.5, **FAST},
                      timeout=120)
    assert r.status_code == 200, r.text
    params = parse_infotext(r.json()["info"])["params"]
    assert params["Mode"] == "img2img" and params["Denoising strength"] == "0.5"
    r = requests.post(f"{url}/generate", json={"prompt": "a cat", "image": image, "mask": b64(square_mask()),
                                               "mask_blur": 6, "inpaint_full_res": True,
                                               "inpaint_full_res_padding": 16, **FAST}, timeout=120)
    assert r.status_code == 200, r.text
    params = parse_infotext(r.json()["info"])["params"]
    assert (params["Mode"], params["Mask blur"], params["Inpaint area"], params["Masked area padding"]) == \
        ("inpaint", "6", "Only masked", "16")
    saved = Image.open(r.json()["files"][0])
    assert "Mask blur: 6" in saved.info["parameters"]
    r = requests.post(f"{url}/generate", json={"prompt": "a cat", "image": image, "mask": b64(square_mask()),
                                               "inpainting_fill": 2, "strength": 0.5, **FAST}, timeout=120)
    assert r.status_code == 200, r.text
    params = parse_infotext(r.json()["info"])["params"]      # latent noise runs at 1, and says so
    assert (params["Masked content"], params["Denoising strength"]) == ("latent noise", "1")
    r = requests.post(f"{url}/generate", json={"prompt": "a cat", "image": image, "outpaint": {"right": 64}, **FAST},
                      timeout=120)
    assert r.status_code == 200, r.text
    out = decoded(r.json()["images"][0])
    assert out.size == (SIZE + 64, SIZE)
    keep = np.zeros((SIZE, SIZE + 64), bool)
    keep[:, :SIZE - 16] = True                    # the picture's own pixels, clear of the blurred seam
    assert np.abs(np.asarray(out, int)[:, :SIZE][keep[:, :SIZE]] -
                  np.asarray(picture(), int)[keep[:, :SIZE]]).max() <= OUTSIDE_TOLERANCE
    assert requests.get(f"{url}/health").json()["load_count"] == loads       # no second model, no reload


def test_outpaint_extents_at_their_edges_run_and_past_them_are_refused_in_their_own_words(server):
    from zimage.store.images import MAX_OUTPAINT_PX, MAX_UPLOAD_SIDE

    def outpaint(image, sides):
        return requests.post(f"{server.url}/generate", timeout=120, json={
            "prompt": "a cat", "image": image, "outpaint": sides, "num_inference_steps": 1, "seed": 1})

    image = b64(picture(64, 64))
    r = outpaint(image, {"left": MAX_OUTPAINT_PX})
    assert r.status_code == 200, r.text
    for sides in ({"left": MAX_OUTPAINT_PX + 1}, {"bottom": -1}):
        error = outpaint(image, sides).json()["error"]
        assert error["field"] == "outpaint" and f"must be 0-{MAX_OUTPAINT_PX} px" in error["message"]
        assert "uploaded image" not in error["message"].lower()        # an extent, not the picture
    wide = b64(picture(MAX_UPLOAD_SIDE - 64, 64))
    error = outpaint(wide, {"right": 128}).json()["error"]
    assert error["field"] == "outpaint" and f"{MAX_UPLOAD_SIDE + 64}x64 canvas" in error["message"]


def test_the_edit_tab_with_no_side_extended_names_outpaint(settings, tmp_path):
    """All four sliders at 0 in Outpaint: was "mask: marks nothing to change", a mask the user never drew."""
    from zimage.errors import InvalidRequest
    from zimage.web.page.ui_edit import edit_request

    path = tmp_path / "in.png"
    picture(64, 64).save(path)
    value = {"background": str(path), "layers": [], "composite": str(path)}
    args = ("x", "", 0.75, 4, False, 32)
    with pytest.raises(InvalidRequest) as e:
        edit_request(value, "outpaint", *args, (0, 0, 0, 0), True, 1024, 1024, 2, 1, 1, settings)
    assert e.value.field == "outpaint" and "extends no side" in str(e.value)
    req = edit_request(value, "outpaint", *args, (0, 16, 0, 0), True, 1024, 1024, 2, 1, 1, settings)
    assert req.init_image.size == (80, 64) and req.mode == "inpaint"


# --- A1111 (webuiapi) and OpenAI (openai SDK) ----------------------------------------------------

def test_webuiapi_img2img_and_inpaint(server):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=server.settings.port)
    image, mask = picture(), square_mask()
    result = api.img2img(images=[image], prompt="a cat", denoising_strength=0.0, seed=5, steps=4,
                         width=SIZE, height=SIZE)
    assert np.abs(np.asarray(result.image.convert("RGB"), int) - np.asarray(image, int)).max() <= 1
    assert json.loads(json.dumps(result.info))["denoising_strength"] == 0.0
    result = api.img2img(images=[image], mask_image=mask, prompt="a cat", denoising_strength=1.0, seed=5, steps=4,
                         width=SIZE, height=SIZE, inpaint_full_res=False, mask_blur=4)
    out = np.asarray(result.image.convert("RGB"), int)
    keep = far_from_mask(mask, 12)
    assert np.abs(out - np.asarray(image, int))[keep].max() <= OUTSIDE_TOLERANCE
    assert "Mask blur: 4" in result.info["infotexts"][0]


@pytest.mark.parametrize("fields,param,words", [
    ({"prompt": b"\xff\xfe a cat"}, "prompt", "UTF-8"),                  # was a prompt garbled as latin-1
    ({"prompt": "\ud800".encode("utf-8", "surrogatepass")}, "prompt", "UTF-8"),   # a lone surrogate's bytes
    ({"n": "-1"}, "n", "between 1 and 4"), ({"n": "5"}, "n", "between 1 and 4"),   # -1 was "must be an integer"
    ({"size": "0x0"}, "size", "256-2048"),                                  # was named width
])
def test_openai_edits_form_fields_are_refused_naming_what_was_sent(server, fields, param, words):
    form = {"prompt": "a cat", "size": "256x256", **fields}
    r = requests.post(f"{server.url}/v1/images/edits", timeout=60,
                      files={"image": ("in.png", png(picture()), "image/png"),
                             **{k: (None, v) for k, v in form.items()}})
    assert r.status_code == 400, r.text[:200]
    error = r.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_openai_sdk_images_edit(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0)
    image = picture()
    mask = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (96, 96, 160, 160))            # transparent = edit, as OpenAI's
    result = client.images.edit(image=("in.png", png(image), "image/png"), mask=("mask.png", png(mask), "image/png"),
                                prompt="a cat", n=1, size=f"{SIZE}x{SIZE}", response_format="b64_json")
    out = np.asarray(decoded(result.data[0].b64_json), int)
    keep = far_from_mask(square_mask(), 12)
    assert np.abs(out - np.asarray(image, int))[keep].max() <= OUTSIDE_TOLERANCE
    assert np.abs(out - np.asarray(image, int))[np.asarray(square_mask()) == 255].mean() > 5


# --- malformed uploads ---------------------------------------------------------------------------

def _bomb_header() -> bytes:
    """A PNG whose header says 30000x30000 (900 M pixels); no pixel data follows."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + \
        struct.pack(">I", zlib.crc32(kind + data))        # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _animated() -> bytes:
    buf = io.BytesIO()
    frames = [picture(seed=i) for i in range(3)]
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:])
    return buf.getvalue()


MALFORMED = {
    "truncated": png(picture())[:400],
    "wrong magic": b"GIF89a" + png(picture())[6:],
    "1x1": png(Image.new("RGB", (1, 1))),
    "30000x30000 header": _bomb_header(),
    "animated": _animated(),
    "zero-byte": b"",
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_images_are_refused_naming_the_field_on_every_route(server, case):
    bad = MALFORMED[case]
    text = base64.b64encode(bad).decode()
    url = server.url
    good = b64(picture())
    answers = [
        ("image", requests.post(f"{url}/generate", json={"prompt": "x", "image": text}, timeout=60)),
        ("mask", requests.post(f"{url}/generate", json={"prompt": "x", "image": good, "mask": text}, timeout=60)),
        ("init_images[0]", requests.post(f"{url}/sdapi/v1/img2img", json={"prompt": "x", "init_images": [text]},
                                         timeout=60)),
        # A1111 reads an empty mask ("") as none (`if mask:`), so webuiapi-era clients that send one keep working
        *([] if not bad else [("mask", requests.post(f"{url}/sdapi/v1/img2img", json={
            "prompt": "x", "init_images": [good], "mask": text}, timeout=60))]),
        ("image", requests.post(f"{url}/v1/images/edits", data={"prompt": "x"},
                                files={"image": ("a.png", bad, "image/png")}, timeout=60)),
        ("mask", requests.post(f"{url}/v1/images/edits", data={"prompt": "x"},
                               files={"image": ("a.png", png(picture()), "image/png"),
                                      "mask": ("m.png", bad, "image/png")}, timeout=60)),
    ]
    for field, r in answers:
        assert 400 <= r.status_code < 500, (case, r.request.url, r.status_code, r.text)
        assert field in r.text, (case, field, r.text)


def test_a_body_over_the_upload_cap_is_413_and_one_under_it_is_read(start_server, settings):
    import dataclasses

    srv = start_server(dataclasses.replace(settings, max_upload_bytes=64 * 1024))
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8), "RGB")
    big = base64.b64encode(png(noise)).decode()              # ~197 KB of PNG: over the 64 KB cap
    assert len(big) * 3 // 4 > 64 * 1024
    r = requests.post(f"{srv.url}/generate", json={"prompt": "x", "image": big}, timeout=60)
    assert r.status_code == 413 and "image" in r.text
    r = requests.post(f"{srv.url}/sdapi/v1/img2img", json={"prompt": "x", "init_images": ["A" * 400_000]}, timeout=60)
    assert r.status_code == 413
    r = requests.post(f"{srv.url}/v1/images/edits", data={"prompt": "x"},
                      files={"image": ("a.png", png(noise), "image/png")}, timeout=60)
    assert r.status_code == 413


@pytest.mark.parametrize("mode", ["RGBA", "P", "I;16", "CMYK", "LA"])
def test_colour_modes_are_converted_explicitly(mode):
    from zimage.store.images import load_image

    src = picture(128, 96)
    if mode == "RGBA":
        im = src.convert("RGBA")
        im.putalpha(0)                 # fully transparent: white, as a page shows it
        expected = np.full((96, 128, 3), 255)
    elif mode == "I;16":
        im = Image.fromarray((np.asarray(src.convert("L"), np.uint16) * 257), "I;16")
        expected = np.repeat(np.asarray(src.convert("L"), int)[..., None], 3, -1)
    elif mode == "LA":
        im = src.convert("LA")
        expected = np.repeat(np.asarray(src.convert("L"), int)[..., None], 3, -1)
    else:
        im = src.convert(mode)
        expected = np.asarray(im.convert("RGB"), int)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = load_image(png(im, fmt), "image", 10**7, 10**7)
    assert out.mode == "RGB" and out.size == (128, 96)
    tolerance = 12 if fmt == "JPEG" else 1
    assert np.abs(np.asarray(out, int) - (expected if fmt == "PNG" else np.asarray(
        Image.open(io.BytesIO(png(im, fmt))).convert("RGB"), int))).max() <= tolerance


def test_exif_rotation_is_applied():
    from zimage.store.images import load_image

    src = picture(128, 64)
    exif = Image.Exif()
    exif[0x0112] = 6                   # "rotate 90 CW to view"
    buf = io.BytesIO()
    src.save(buf, format="JPEG", exif=exif.tobytes())
    assert load_image(buf.getvalue(), "image", 10**7, 10**7).size == (64, 128)


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_every_mode_runs_on_the_loaded_model_without_a_reload(settings, quantize):
    """The manager's own model, resident or int8: the modes share its modules (load count unchanged)."""
    import dataclasses

    from zimage.engine.manager import PipelineManager

    manager = PipelineManager(dataclasses.replace(settings, quantize=quantize)).start()
    try:
        image, mask = picture(), square_mask()
        manager.generate(GenerationRequest.from_mapping({"prompt": "x", "width": SIZE, "height": SIZE, **FAST}),
                         timeout=300)
        loads = manager.load_count
        manager.generate(GenerationRequest.from_mapping({"prompt": "x", "init_image": image, "strength": 0.6,
                                                         **FAST}), timeout=300)
        result = manager.generate(GenerationRequest.from_mapping({"prompt": "x", "init_image": image, "mask": mask,
                                                                  "strength": 1.0, **FAST}), timeout=300)
        out = np.asarray(result.images[0].image, int)
        assert np.abs(out - np.asarray(image, int))[far_from_mask(mask, 12)].max() <= OUTSIDE_TOLERANCE
        assert manager.load_count == loads
    finally:
        manager.close()
