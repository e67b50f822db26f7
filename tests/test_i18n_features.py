"""Every refusal that came with hires fix and Upscale, Variety, the prompt enhancer, the X/Y/Z grid,
wildcards and batch count reads in Chinese: each is made by the code that raises it (the validators,
the grid planner, the wildcards folder, the enhancer's endpoint client against a local HTTP server,
the upscaler loader), then its Chinese must come from a pattern (Chinese, and not the English text
after the code's sentence), its hint too. Plus the page's and the API's answers in Chinese."""
from __future__ import annotations

import dataclasses
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from PIL import Image

from zimage.config import Settings
from zimage.enhance_request import EnhanceRequest
from zimage.errors import InvalidRequest, ZImageError
from zimage.explore.batches import batch_count_of
from zimage.explore.grid import plan_grid
from zimage.hires_request import parse_hires
from zimage.i18n import status_text
from zimage.request import GenerationRequest
from zimage.store.history import parse_size_filter
from zimage.variety import variety_field
from zimage.web import hires_fields

CJK = re.compile(r"[\u4e00-\u9fff]")
ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}


def refusal(call) -> ZImageError:
    with pytest.raises(ZImageError) as caught:
        call()
    return caught.value


def assert_chinese(err: ZImageError) -> None:
    message, hint = err.text("zh")
    english = err.message.split(": ", 1)[1] if isinstance(err, InvalidRequest) else err.message
    assert CJK.search(message) and english not in message, (err.message, message)
    if isinstance(err, InvalidRequest):
        assert message.startswith(err.field + ": "), message      # the field stays as it was sent
    assert not err.hint or (CJK.search(hint) and hint != err.hint), (err.hint, hint)


def _hires(data, width=1024, height=1024):
    return lambda: parse_hires(data, width, height, {"Lanczos": "", "Nearest": ""})


def _hires_fields(fn: str, *args):
    req = GenerationRequest.from_mapping({"prompt": "x", "width": 256, "height": 256})
    settings = Settings()
    calls = {"with_hires": lambda: hires_fields.with_hires(req, args[0], settings),
             "a1111": lambda: hires_fields.a1111_hires(req, args[0], settings),
             "extras": lambda: hires_fields.extras_fields(args[0]),
             "extras_image": lambda: hires_fields.decode_extras_image(args[0], 10**6, 10**7)}
    return calls[fn]


def _grid(body, max_cells=16):
    return lambda: plan_grid(body, Path("/nonexistent-wildcards"), max_cells, 4000)


BASE = {"prompt": "a fox", "width": 256, "height": 256, "num_inference_steps": 2, "seed": 1}
CASES = {
    "hires scale text": _hires({"scale": "big"}),
    "hires scale range": _hires({"scale": 9}),
    "hires steps": _hires({"steps": 1.5}),
    "hires steps range": _hires({"steps": 999}),
    "hires upscaler": _hires({"upscaler": "gone"}),
    "hires too big": _hires({"scale": 4}, 2048, 2048),
    "hires not an object": _hires([1]),
    "/generate hires shape": _hires_fields("with_hires", [1]),
    "/generate hires key": _hires_fields("with_hires", {"scal": 2}),
    "enable_hr": _hires_fields("a1111", {"enable_hr": "yes"}),
    "extras resize_mode": _hires_fields("extras", {"resize_mode": 2}),
    "extras size": _hires_fields("extras", {"resize_mode": 1, "upscaling_resize_w": 0}),
    "extras image": _hires_fields("extras_image", {}),
    "variety type": lambda: variety_field({"variety": "a lot"}),
    "variety range": lambda: variety_field({"variety": 2}),
    "subseed_strength": lambda: variety_field({"subseed_strength": -1}, "subseed_strength"),
    "enhance type": lambda: EnhanceRequest.from_mapping({"prompt": "a", "type": "image"}),
    "enhance tokens": lambda: EnhanceRequest.from_mapping({"prompt": "a", "max_tokens": 5}),
    "enhance nsfw": lambda: EnhanceRequest.from_mapping({"prompt": "a", "nsfw": "yes"}),
    "grid body": _grid([]),
    "grid key": _grid({"base": BASE, "w": 1}),
    "grid base": _grid({"base": 3}),
    "grid base field": _grid({"base": dict(BASE, width=250), "x": {"field": "seed", "values": [1]}}),
    "grid num_images": _grid({"base": dict(BASE, num_images=2)}),
    "grid y without x": _grid({"base": BASE, "y": {"field": "seed", "values": [1]}}),
    "grid too many": _grid({"base": BASE, "x": {"field": "seed", "values": "1-5"}, "y": {"field": "steps",
                                                                                       "values": "1-5"}}),
    "axis shape": _grid({"base": BASE, "x": [1]}),
    "axis field": _grid({"base": BASE, "x": {"field": "colour", "values": [1]}}),
    "axis values type": _grid({"base": BASE, "x": {"field": "seed", "values": 3}}),
    "axis no values": _grid({"base": BASE, "x": {"field": "seed", "values": ""}}),
    "axis values too long": _grid({"base": BASE, "x": {"field": "seed", "values": "1," * 3000}}),
    "axis over the limit": _grid({"base": BASE, "x": {"field": "seed", "values": list(range(20))}}),
    "axis text": _grid({"base": BASE, "x": {"field": "prompt_sr", "values": ["fox", 3]}}),
    "axis size": _grid({"base": BASE, "x": {"field": "size", "values": "big"}}),
    "axis int": _grid({"base": BASE, "x": {"field": "steps", "values": "two"}}),
    "axis step": _grid({"base": BASE, "x": {"field": "steps", "values": "1-5 (-1)"}}),
    "axis int range": _grid({"base": BASE, "x": {"field": "seed", "values": "1-400"}}),
    "axis float": _grid({"base": BASE, "x": {"field": "guidance", "values": [float("inf")]}}),
    "axis float text": _grid({"base": BASE, "x": {"field": "guidance", "values": "lots"}}),
    "axis float step": _grid({"base": BASE, "x": {"field": "guidance", "values": "0-1 (-0.5)"}}),
    "axis float range": _grid({"base": BASE, "x": {"field": "variety", "values": "0-1 (+0.001)"}}),
    "axis count": _grid({"base": BASE, "x": {"field": "variety", "values": "0-1 [99]"}}),
    "axis lora": _grid({"base": BASE, "x": {"field": "lora_strength", "values": [0.5]}}),
    "axis prompt S/R": _grid({"base": BASE, "x": {"field": "prompt_sr", "values": ["cat", "dog"]}}),
    "axis value out of range": _grid({"base": BASE, "x": {"field": "steps", "values": [2, 80]}}),
    "axis variety out of range": _grid({"base": BASE, "x": {"field": "variety", "values": [0.5, 3]}}),
    "batch count type": lambda: batch_count_of("many"),
    "batch count range": lambda: batch_count_of(101),
    "history size filter": lambda: parse_size_filter("round"),
}


@pytest.mark.parametrize("make", CASES.values(), ids=CASES.keys())
def test_the_refusal_reads_in_chinese(make):
    assert_chinese(refusal(make))


def _wildcards(tmp_path):
    from zimage.explore.wildcards import MAX_FILE_BYTES, Wildcards, expand

    folder = tmp_path / "wildcards"
    folder.mkdir()
    (folder / "big.txt").write_text("x\n" * (MAX_FILE_BYTES // 2 + 1))
    (folder / "latin.txt").write_bytes(b"caf\xe9\n")
    (folder / "empty.txt").write_text("# only a comment\n\n")
    (folder / "loop.txt").write_text("__loop__\n")
    (folder / "long.txt").write_text("x" * 9000 + "\n")
    cards = Wildcards(folder)
    return [lambda text=text: expand(text, 1, cards) for text in (
        "__nope__", "__" + "n" * 300 + "__", "__/etc/x__", "__../x__", "__big__", "__latin__", "__empty__",
        "__loop__", "__long__ __long__ __long__ __long__ __long__ __long__ __long__ __long__ __long__")]


def test_every_wildcard_refusal_reads_in_chinese(tmp_path):
    seen = set()
    for make in _wildcards(tmp_path):
        err = refusal(make)
        assert_chinese(err)
        seen.add(err.message.split(":")[1].split("__")[0])
    assert len(seen) >= 3


class Endpoint(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that answers wrongly in the way its path says."""

    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        if self.path.startswith("/missing"):
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b'{"error": "model not found"}')
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        if self.path.startswith("/garbage"):
            self.wfile.write(b"data: {\"nope\": 1}\n\n")
        elif self.path.startswith("/slow"):
            for _ in range(20):
                self.wfile.write(b'data: {"choices": [{"delta": {"content": "a "}}]}\n\n')
                self.wfile.flush()
                time.sleep(0.2)
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("path,code", [("/missing/v1", "enhancer_failed"), ("/garbage/v1", "enhancer_failed"),
                                       ("/empty/v1", "enhancer_failed"), ("/slow/v1", "enhancer_timeout"),
                                       (None, "enhancer_failed")])
def test_the_enhancer_endpoints_failures_read_in_chinese(endpoint, path, code):
    from zimage.engine.enhance_remote import enhance_remote

    url = endpoint + path if path else "http://127.0.0.1:9/v1"
    req = EnhanceRequest.from_mapping({"prompt": "a fox", "seed": 1})
    err = refusal(lambda: enhance_remote(url, "m", req, threading.Event(), 1.0))
    assert err.code == code
    assert_chinese(err)


def test_the_text_encoders_empty_answer_reads_in_chinese(tiny_model_dir, monkeypatch):
    import torch

    from zimage.engine import enhance
    from zimage.engine.loader import load_pipeline

    pipe = load_pipeline(tiny_model_dir, torch.float32, "cpu", None, True)
    monkeypatch.setattr(enhance, "clean_answer", lambda text, n: "")       # the model said nothing usable
    req = EnhanceRequest.from_mapping({"prompt": "a fox", "max_tokens": 16, "seed": 1})
    assert_chinese(refusal(lambda: enhance.enhance_local(pipe, req, threading.Event(), 60)))


def test_enhance_without_a_local_backend_and_a_gone_upscaler_read_in_chinese(tmp_path):
    from zimage.engine.upscale import upscale
    from zimage.scale.ray_backend import RayBackend

    job = RayBackend.enhance_prompt(SimpleNamespace(settings=Settings()), EnhanceRequest.from_mapping({"prompt": "a"}))
    assert_chinese(job.future.exception(5))
    gone = tmp_path / "4x-gone.safetensors"
    assert_chinese(refusal(lambda: upscale(Image.new("RGB", (8, 8)), (16, 16), "4x-gone", str(gone))))


def test_the_grids_save_warning_reads_in_chinese():
    from zimage.explore.grid import GridPlan, GridRun, save_grid
    from zimage.request import GeneratedImage

    class FullDisk:
        def save(self, *args):
            raise OSError(28, "No space left on device")

    run = GridRun(GridPlan((None, None, None), ()), done=[(SimpleNamespace(at=(0, 0, 0)), GeneratedImage(
        image=Image.new("RGB", (8, 8)), seed=1, path=None, infotext="x"))])
    assert save_grid(run, FullDisk()) is None
    message, _ = status_text(run.warnings[0], "", "zh")
    assert message.startswith("无法保存网格图") and "No space" in message


def test_a_grid_refusal_over_http_in_chinese(start_server, settings):
    """POST /grid answers an axis value's refusal in Chinese, the inner field's words included."""
    srv = start_server(dataclasses.replace(settings, grid_max_cells=16))
    r = httpx.post(srv.url + "/grid", json={"base": BASE, "x": {"field": "steps", "values": [2, 80]}}, headers=ZH,
                   timeout=30)
    err = r.json()["error"]
    assert r.status_code == 422 and err["field"] == "x.values"
    assert err["message"] == "x.values: 'Steps: 80'：num_inference_steps: 必须在 1 到 50 之间，收到的是 80"
    r = httpx.post(srv.url + "/grid", json={"base": BASE, "x": {"field": "seed", "values": "1-5"},
                                            "y": {"field": "seed", "values": "1-5"}}, headers=ZH, timeout=30)
    assert r.json()["error"]["message"] == "grid: 有 25 格（5 x 5 x 1）；最多 16 格（--grid-max-cells）"
    assert srv.manager.load_count == 0

