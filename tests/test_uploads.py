"""Uploads through the Gradio guard (issue 18's PNG info): only the PNG info input takes an
uploaded file; every hostile upload gets a 4xx naming the field and the app keeps serving."""
from __future__ import annotations

import dataclasses
import io
import struct
import zlib
from pathlib import Path

import pytest
import requests
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from page_events import API, page_facts, read_call_stream
from test_security import file_data, the_issue_request

from zimage.infotext import infotext
from zimage.request import GenerationRequest

from conftest import wait_for

CAP = 300_000                       # a small upload cap, so "too large" needs no 20 MB body


@pytest.fixture
def srv(start_server, settings):
    return start_server(dataclasses.replace(settings, max_upload_bytes=CAP))


def png(text: str | None = "a red fox\nSteps: 7, Sampler: Euler, CFG scale: 2.5, Seed: 99, Size: 512x768",
        size=(64, 48)) -> bytes:
    meta = PngInfo()
    if text is not None:
        meta.add_text("parameters", text)
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG", pnginfo=meta)
    return buf.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(w=30000, h=30000) -> bytes:
    """A valid PNG header claiming w x h pixels, followed by one tiny IDAT (a few hundred bytes)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + \
        chunk(b"IEND", b"")


def apng() -> bytes:
    buf = io.BytesIO()
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:], duration=100)
    return buf.getvalue()


def upload(srv, name: str, data: bytes) -> str:
    r = requests.post(srv.url + API + "/upload", files={"files": (name, data)}, timeout=30)
    assert r.status_code == 200, r.text
    (path,) = r.json()
    return path


def png_info(srv, value) -> requests.Response:
    return requests.post(srv.url + API + "/call/png_info", json={"data": [value]}, timeout=30)


def assert_still_serving(srv) -> None:
    assert requests.get(srv.url + "/config", timeout=10).status_code == 200
    path = upload(srv, "ok.png", png())
    r = png_info(srv, file_data(path))
    assert r.status_code == 200, r.text
    kind, outputs = read_call_stream(srv.url, "/call/png_info", r.json()["event_id"])
    assert kind == "complete" and outputs[2] == "a red fox"


def test_our_png_is_read_back_and_the_upload_is_not_kept(srv):
    from gradio.utils import get_upload_folder

    req = GenerationRequest(prompt="a lighthouse <lora:ink:0.8>", negative_prompt="blurry", width=832, height=1216,
                            num_inference_steps=9, guidance_scale=1.0, seed=1234)
    path = upload(srv, "ours.png", png(infotext(req, 1234)))
    assert Path(path).resolve().is_relative_to(Path(get_upload_folder()).resolve())
    assert not Path(path).resolve().is_relative_to(Path(srv.settings.outputs_dir).resolve())
    r = png_info(srv, file_data(path))
    assert r.status_code == 200, r.text
    kind, outputs = read_call_stream(srv.url, "/call/png_info", r.json()["event_id"])
    assert kind == "complete", outputs
    cleared, params, prompt, negative, summary, raw = outputs[:6]
    assert cleared is None                                 # the drop zone is emptied for the next image
    assert prompt == "a lighthouse <lora:ink:0.8>" and negative == "blurry"
    assert "1234" in summary and "832x1216" in summary and "Z-Image-Turbo" in summary and "ink (0.8)" in summary
    assert raw.startswith("a lighthouse")
    assert not Path(path).exists()                          # read once, then removed from the temp folder


def test_an_upload_is_accepted_only_as_the_png_info_input(srv):
    """Gradio lists every upload in a set it trusts for any event: an uploaded file named as the
    generate event's input, or fetched back at /gradio_api/file=, is refused."""
    path = upload(srv, "a.png", png())
    facts = page_facts(srv.url)
    r = requests.post(srv.url + API + "/call/generate", json={"data": the_issue_request(facts, file_data(path))},
                      timeout=10)
    assert r.status_code == 422 and "data" in r.json()["error"]["message"]
    assert requests.get(srv.url + API + f"/file={path}", timeout=10).status_code == 404
    assert srv.manager.load_count == 0


@pytest.mark.parametrize("target", ["../../../../etc/passwd", "/etc/passwd", "outputs", "upload-dotdot", "url"])
def test_a_path_that_is_not_an_upload_is_refused(srv, target):
    from gradio.utils import get_upload_folder

    real = upload(srv, "a.png", png())
    outputs = Path(srv.settings.outputs_dir)
    outputs.mkdir(parents=True, exist_ok=True)
    (outputs / "mine.png").write_bytes(png())
    value = {"outputs": file_data(str(outputs / "mine.png")),
             "upload-dotdot": file_data(f"{Path(real).parent}/../{Path(real).parent.name}/{Path(real).name}"),
             "url": file_data(real, url=f"{srv.url}{API}/file=/etc/passwd"),
             }.get(target) or file_data(str(Path(get_upload_folder()) / target) if target.startswith("..") else target)
    r = png_info(srv, value)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"].startswith("data[0]")
    assert_still_serving(srv)


def test_an_oversized_upload_is_refused_before_it_is_read(srv):
    big = png() + b"\0" * (CAP + 70_000)
    r = requests.post(srv.url + API + "/upload", files={"files": ("big.png", big)}, timeout=30)
    assert r.status_code == 413 and "larger than" in r.json()["error"]["message"]

    def stream():                   # no Content-Length: refused once the streamed bytes pass the cap
        boundary = b"--xx\r\nContent-Disposition: form-data; name=\"files\"; filename=\"s.png\"\r\n\r\n"
        yield boundary
        for _ in range(40):
            yield b"\0" * 10_000
        yield b"\r\n--xx--\r\n"
    r = requests.post(srv.url + API + "/upload", data=stream(), timeout=30,
                      headers={"Content-Type": "multipart/form-data; boundary=xx"})
    assert r.status_code == 413
    assert_still_serving(srv)


@pytest.mark.parametrize("name,data,status,words", [
    ("gif.png", b"GIF89a" + b"\0" * 100, 415, "not a PNG, JPEG or WebP"),
    ("a.png", b"\0" * 2_000, 415, "not a PNG, JPEG or WebP"),
    ("../../../etc/x.txt", b"hi", 415, "not a PNG, JPEG or WebP"),
    ("empty.png", b"", 422, "empty"),
])
def test_a_file_that_is_no_image_is_refused_at_the_upload(srv, name, data, status, words):
    """Refused by its first bytes before Gradio writes it into its upload folder."""
    from gradio.utils import get_upload_folder

    before = set(Path(get_upload_folder()).rglob("*"))
    r = requests.post(srv.url + API + "/upload", files={"files": (name, data)}, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["field"] == "files" and words in error["message"], error
    assert set(Path(get_upload_folder()).rglob("*")) == before
    assert_still_serving(srv)


@pytest.mark.parametrize("kwargs", [
    {"files": [("files", ("a.png", png())), ("files", ("b.png", png()))]},   # one image at a time
    {"files": {"other": ("a.png", png())}},
    {"data": b"--x\r\nbroken", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
    {"data": b"junk", "headers": {"Content-Type": "multipart/form-data"}},
    {"data": png(), "headers": {"Content-Type": "image/png"}},
])
def test_a_malformed_upload_form_is_refused(srv, kwargs):
    r = requests.post(srv.url + API + "/upload", timeout=30, **kwargs)
    assert 400 <= r.status_code < 500 and r.json()["error"]["message"], r.text


@pytest.mark.parametrize("name,data,words", [
    ("bomb.png", bomb_png(), "pixels"),
    ("big.png", bomb_png(9000, 9000), "9000x9000 pixels"),
    ("cut.png", png(size=(256, 256))[:400], "could not be read"),
    ("anim.png", apng(), "animated"),
])
def test_a_hostile_image_is_refused_at_the_upload_in_the_pages_words(srv, name, data, words):
    """An image by its first bytes, refused by its header (before any decode) or its one decode,
    when it is uploaded (a broken image dropped on the page was refused only at the event that read
    it); the message names "the uploaded image", the field stays `files` for API callers; in
    Chinese in a Chinese page, and nothing is written to the upload folder."""
    from gradio.utils import get_upload_folder

    before = set(Path(get_upload_folder()).rglob("*"))
    r = requests.post(srv.url + API + "/upload", files={"files": (name, data)}, timeout=30)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "files" and words in error["message"], error
    assert error["message"].startswith("The uploaded image ") and "(files)" not in error["message"]
    assert set(Path(get_upload_folder()).rglob("*")) == before
    zh = requests.post(srv.url + API + "/upload", files={"files": (name, data)}, timeout=30,
                       cookies={"zimage-lang": "zh"}, headers={"Accept-Language": "en"})
    assert zh.json()["detail"].startswith("上传的图片"), zh.text          # the page switch's cookie wins
    assert_still_serving(srv)


def test_call_v2_keywords_take_the_upload_and_only_as_that_input(srv):
    params = requests.get(srv.url + API + "/info", timeout=10).json()["named_endpoints"]["/png_info"]["parameters"]
    (name,) = [p["parameter_name"] for p in params]
    path = upload(srv, "a.png", png())
    r = requests.post(srv.url + API + "/call/v2/png_info", json={name: file_data(path)}, timeout=10)
    assert r.status_code == 200, r.text
    assert read_call_stream(srv.url, "/call/png_info", r.json()["event_id"])[0] == "complete"
    r = requests.post(srv.url + API + "/call/v2/png_info", json={name: file_data("/etc/passwd")}, timeout=10)
    assert r.status_code == 422 and r.json()["error"]["field"] == f"body.{name}.path"


def test_the_upload_caps_and_keep_time_are_settings():
    from zimage.config import ConfigError, Settings

    for name in ("max_upload_bytes", "max_upload_pixels", "upload_keep_s"):
        with pytest.raises(ConfigError, match=name):
            Settings(**{name: 0}).validate()
    assert Settings().max_upload_bytes == 20 * 2**20


def test_an_outputs_folder_holding_gradios_upload_folder_stops_the_start(settings, tmp_path, monkeypatch):
    """Uploads land in Gradio's temporary folder; one inside outputs would be served and listed."""
    from zimage.config import ConfigError
    from zimage.web.server import outputs_dir_checked

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(Path(settings.outputs_dir) / "gradio"))
    with pytest.raises(ConfigError, match="upload folder"):
        outputs_dir_checked(settings)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-temp"))
    assert outputs_dir_checked(settings) == Path(settings.outputs_dir).resolve()


def test_uploads_left_in_the_temp_folder_are_swept_and_all_go_at_exit(start_server, settings):
    """An upload no event read (an image left in the Edit tab's editor, a dropped file) is deleted
    once older than upload_keep_s, and every one left is deleted when the app stops."""
    srv = start_server(dataclasses.replace(settings, upload_keep_s=2))
    swept = Path(upload(srv, "left.png", png()))
    assert swept.exists()
    wait_for(lambda: not swept.exists(), 30, message="the sweep of uploads older than 2 s")
    srv_keep = start_server(settings)
    kept = Path(upload(srv_keep, "kept.png", png()))
    assert kept.exists()
    srv_keep.stop()
    assert not kept.exists()


CRAFTED_TEXTS = ["a cat\nSteps: ², Seed: ³, Size: ²x³, Sampler: Euler", "a cat\nSteps: " + "9" * 5000 + ", Seed: 1, Size: 1x1"]
CRAFTED_COMFY = '{"1": {"class_type": ["KSampler"], "inputs": {}}, "3": {"class_type": "KSampler", ' \
                '"inputs": {"steps": 4, "seed": ' + "9" * 5000 + '}}}'


def comfy_png(prompt: str) -> bytes:
    meta = PngInfo()
    meta.add_text("prompt", prompt, zip=True)
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, format="PNG", pnginfo=meta)
    return buf.getvalue()


def test_crafted_metadata_is_read_on_the_page_and_by_png_info_and_no_upload_is_kept(srv):
    """Unicode digits, a 5000-digit number and a ComfyUI class_type list were 500s, and the page's
    refused upload stayed in the upload folder."""
    import base64

    for data in [png(t) for t in CRAFTED_TEXTS] + [comfy_png(CRAFTED_COMFY)]:
        r = requests.post(srv.url + "/sdapi/v1/png-info", json={"image": base64.b64encode(data).decode()}, timeout=30)
        assert r.status_code == 200, r.text[:300]
        answer = r.json()
        assert answer["parameters"].get("Prompt") == "a cat" or "comfyui" in answer["items"], answer
        path = upload(srv, "crafted.png", data)
        r = png_info(srv, file_data(path))
        assert r.status_code == 200, r.text
        kind, outputs = read_call_stream(srv.url, "/call/png_info", r.json()["event_id"])
        assert kind == "complete", outputs
        assert outputs[2] == "a cat" or "| 4 |" in outputs[4], outputs[:5]
        assert not Path(path).exists()
    assert_still_serving(srv)
