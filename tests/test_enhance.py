"""The prompt enhancer: the loaded text encoder as a causal LM (shared weights), an OpenAI-compatible
endpoint (a fake one started here: a real Ollama cannot exist in the tests), Stop, the timeout,
POST /sdapi/v1/prompt-enhance over HTTP and the original prompt in the PNG parameters."""
import base64
import dataclasses
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from conftest import wait_for
from zimage.enhance_request import DEFAULT_SYSTEM_PROMPT, EnhanceRequest, clean_answer
from zimage.errors import Cancelled, EnhancerTimeout, InvalidRequest
from zimage.infotext import parse_infotext

ROUTE = "/sdapi/v1/prompt-enhance"


@pytest.fixture(scope="module")
def tiny_pipe(tiny_model_dir):
    import torch

    from zimage.engine.loader import load_pipeline

    return load_pipeline(tiny_model_dir, torch.float32, "cpu", None, True)


def test_the_head_shares_the_text_encoders_weights(tiny_pipe):
    """No second copy: the LM's body is the text encoder itself and its head is embed_tokens' tensor."""
    from zimage.engine.enhance import causal_lm

    lm = causal_lm(tiny_pipe.text_encoder)
    assert lm.model is tiny_pipe.text_encoder
    assert lm.lm_head.weight.data_ptr() == tiny_pipe.text_encoder.embed_tokens.weight.data_ptr()
    assert not any(p.is_meta for p in lm.parameters())


def test_a_rewrite_of_bounded_length_comes_back(tiny_pipe):
    from zimage.engine.enhance import enhance_local

    req = EnhanceRequest.from_mapping({"prompt": "a cat on a mat", "max_tokens": 24, "seed": 1})
    result = enhance_local(tiny_pipe, req, threading.Event(), 60)
    again = enhance_local(tiny_pipe, req, threading.Event(), 60)
    assert result.prompt and 0 < result.tokens <= 24 and result.original_prompt == "a cat on a mat"
    assert again.prompt == result.prompt           # the seed makes it reproducible


def test_stop_and_the_timeout_end_it_between_tokens(tiny_pipe):
    from zimage.engine.enhance import enhance_local

    req = EnhanceRequest.from_mapping({"prompt": "a cat", "max_tokens": 2048, "seed": 1})
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        enhance_local(tiny_pipe, req, cancel, 600)
    assert time.monotonic() - started < 20
    ticks = iter(range(10**6))
    with pytest.raises(EnhancerTimeout):
        enhance_local(tiny_pipe, req, threading.Event(), 5, clock=lambda: next(ticks))


@pytest.mark.parametrize("body,field", [
    ({"prompt": ""}, "prompt"), ({"prompt": "   "}, "prompt"), ({}, "prompt"), ({"prompt": 5}, "prompt"),
    ({"prompt": "x" * 5000}, "prompt"), ({"prompt": "a\ud800b"}, "prompt"), ({"prompt": "a", "type": "image"}, "type"),
    ({"prompt": "a", "max_tokens": 5}, "max_tokens"), ({"prompt": "a", "max_tokens": "9"}, "max_tokens"),
    ({"prompt": "a", "seed": -2}, "seed"), ({"prompt": "a", "system_prompt": ["x"]}, "system_prompt"),
    ({"prompt": "a", "nsfw": "yes"}, "nsfw"), ({"prompt": "a", "model": 3}, "model")])
def test_bad_input_is_refused_naming_the_field(body, field):
    with pytest.raises(InvalidRequest) as e:
        EnhanceRequest.from_mapping(body)
    assert e.value.field == field


def test_the_system_prompt_defaults_and_answers_are_cleaned():
    assert EnhanceRequest.from_mapping({"prompt": "a"}).system_prompt == DEFAULT_SYSTEM_PROMPT
    assert EnhanceRequest.from_mapping({"prompt": "a"}, system_prompt="mine").system_prompt == "mine"
    assert "masterpiece" in DEFAULT_SYSTEM_PROMPT and "language of the user's prompt" in DEFAULT_SYSTEM_PROMPT
    assert clean_answer('<think>hm</think>\n"A red fox."', 100) == "A red fox."
    assert clean_answer('```json\n{"revised_prompt": "一只猫"}\n```', 100) == "一只猫"
    assert clean_answer("x" * 50, 10) == "x" * 10


def test_the_route_over_http_and_the_original_prompt_in_the_png(server):
    r = httpx.post(server.url + ROUTE, json={"prompt": "a red fox", "max_tokens": 20, "seed": 3}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["prompt"] and body["seed"] == 3 and body["original_prompt"] == "a red fox"
    assert body["tokens"] <= 20 and body["backend"] == "text-encoder"
    for bad, field in (({"prompt": ""}, "prompt"), ({"prompt": "a", "max_tokens": 1e9}, "max_tokens"),
                       ({"prompt": "a", "type": "video"}, "type")):
        refused = httpx.post(server.url + ROUTE, json=bad, timeout=30)
        assert refused.status_code == 422 and field in refused.json()["detail"]
    assert httpx.post(server.url + ROUTE, content=b"[1]", headers={"content-type": "application/json"},
                      timeout=30).status_code == 422
    from PIL import Image

    original = 'a red fox, "quoted": yes\nsecond line'
    gen = httpx.post(server.url + "/generate", json={"prompt": body["prompt"][:200] or "x", "original_prompt": original,
                                                     "width": 256, "height": 256, "num_inference_steps": 2}, timeout=120)
    assert gen.status_code == 200, gen.text
    png = Image.open(io.BytesIO(base64.b64decode(gen.json()["images"][0])))
    assert parse_infotext(png.info["parameters"])["original_prompt"] == original


def test_stop_over_http_ends_an_enhancement(server):
    """/sdapi/v1/interrupt stops the caller's enhancement: a 409 cancelled, the worker free again."""
    out = {}

    def call():
        out["r"] = httpx.post(server.url + ROUTE, json={"prompt": "a cat", "max_tokens": 2048, "seed": 1},
                              headers={"X-Client-Id": "me"}, timeout=300)
    t = threading.Thread(target=call)
    t.start()
    wait_for(lambda: server.manager.status().busy, 60, message="the enhancement to start")
    time.sleep(0.5)
    assert httpx.post(server.url + "/sdapi/v1/interrupt", headers={"X-Client-Id": "me"}, timeout=30).status_code == 200
    t.join(60)
    assert out["r"].status_code == 409 and out["r"].json()["error"] == "cancelled"


class FakeOpenAI(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible chat endpoint: streams the words of its answer, slowly on request."""
    answer = "A red fox sits in fresh snow, low evening sun from the left, soft blue shadows."
    delay_s = 0.0
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        FakeOpenAI.seen.append((self.path, body))
        if body.get("model") != "fake-model":
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b'{"error": "model not found"}')
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for word in self.answer.split(" "):
            chunk = {"choices": [{"delta": {"content": word + " "}}]}
            try:
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return
            time.sleep(self.delay_s)
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_endpoint():
    FakeOpenAI.seen, FakeOpenAI.delay_s = [], 0.0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_the_endpoint_path_with_a_fake_openai_server(start_server, settings, fake_endpoint):
    srv = start_server(dataclasses.replace(settings, enhancer_url=fake_endpoint, enhancer_model="fake-model",
                                           enhancer_system_prompt="Be brief."))
    r = httpx.post(srv.url + ROUTE, json={"prompt": "a fox", "seed": 5}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["prompt"] == FakeOpenAI.answer and r.json()["backend"] == "fake-model"
    path, body = FakeOpenAI.seen[-1]
    assert path == "/v1/chat/completions" and body["stream"] is True and body["seed"] == 5
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a fox"}]
    assert srv.manager.load_count == 0          # the model was never loaded for it

    FakeOpenAI.delay_s = 0.3                    # Stop while it streams
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", httpx.post(
        srv.url + ROUTE, json={"prompt": "a fox"}, headers={"X-Client-Id": "me"}, timeout=60)))
    t.start()
    time.sleep(1.0)
    httpx.post(srv.url + "/sdapi/v1/interrupt", headers={"X-Client-Id": "me"}, timeout=30)
    t.join(30)
    assert out["r"].status_code == 409


def test_the_endpoints_timeout_and_errors(start_server, settings, fake_endpoint):
    srv = start_server(dataclasses.replace(settings, enhancer_url=fake_endpoint, enhancer_model="fake-model",
                                           enhancer_timeout_s=1.0))
    FakeOpenAI.delay_s = 0.4
    r = httpx.post(srv.url + ROUTE, json={"prompt": "a fox"}, timeout=60)
    assert r.status_code == 504 and r.json()["error"] == "enhancer_timeout"
    wrong = start_server(dataclasses.replace(settings, enhancer_url=fake_endpoint, enhancer_model="nope"))
    r = httpx.post(wrong.url + ROUTE, json={"prompt": "a fox"}, timeout=60)
    assert r.status_code == 502 and "404" in r.json()["detail"]
    down = start_server(dataclasses.replace(settings, enhancer_url="http://127.0.0.1:9/v1", enhancer_model="m"))
    r = httpx.post(down.url + ROUTE, json={"prompt": "a fox"}, timeout=60)
    assert r.status_code == 502 and r.json()["error"] == "enhancer_failed"


def test_the_mcp_tool_enhances(start_server, settings):
    from test_mcp import MCP_URL, _text, run_mcp

    srv = start_server(dataclasses.replace(settings, mcp=True, enhancer_max_tokens=16))
    _, (ok, bad) = run_mcp(srv.url + MCP_URL, [("enhance_prompt", {"prompt": "a fox", "seed": 2}),
                                               ("enhance_prompt", {"prompt": " "})])
    assert not ok.isError, _text(ok)
    info = json.loads(_text(ok))
    assert info["original_prompt"] == "a fox" and info["prompt"] and info["tokens"] <= 16
    assert bad.isError and "prompt" in _text(bad)
