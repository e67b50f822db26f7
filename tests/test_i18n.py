"""Accept-Language for API errors: English codes, Chinese messages and hints when the request
prefers zh; the catalog covers every error class and the messages the app raises."""
from __future__ import annotations

import ast
import dataclasses
import importlib
import re
from pathlib import Path

import pytest
import requests

from zimage import errors, i18n
from zimage.errors import ZImageError
from zimage.request import GenerationRequest

PACKAGE = Path(__file__).resolve().parent.parent / "zimage"
CJK = re.compile(r"[\u4e00-\u9fff]")
ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}


def error_classes() -> set[type]:
    """Every ZImageError subclass in the package: the modules that define one are found by their
    source (a class whose base is a known error class), imported, then the subclasses walked."""
    names, modules = {"ZImageError"}, set()
    trees = {p: ast.parse(p.read_text()) for p in PACKAGE.rglob("*.py")}
    grown = True
    while grown:
        grown = False
        for path, tree in trees.items():
            for node in ast.walk(tree):
                bases = {getattr(b, "id", getattr(b, "attr", None)) for b in getattr(node, "bases", [])}
                if isinstance(node, ast.ClassDef) and bases & names and node.name not in names:
                    names.add(node.name)
                    modules.add(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
                    grown = True
    for module in modules:
        importlib.import_module(module)
    found, todo = set(), [ZImageError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo += cls.__subclasses__()
    assert {c.__name__ for c in found} >= names
    return found


def test_every_error_class_has_a_chinese_sentence():
    classes = error_classes()
    assert len(classes) > 25
    missing = sorted(f"{c.__module__}.{c.__name__} ({c.code})" for c in classes if c.code not in i18n.ERROR_ZH)
    assert not missing, f"no zh text in i18n.ERROR_ZH for: {missing}"
    assert all(CJK.search(text) for text in i18n.ERROR_ZH.values())


def _fixed_errors() -> list[ZImageError]:
    """The errors whose text is built inside the class, one of each."""
    from zimage.engine.planning import DoesNotFit
    from zimage.web.gradio_files import FileNotServed
    from zimage.web.gradio_guard import LoginRequired, UploadsRefused

    return [errors.QueueFull(3, 5), errors.ManagerClosed(), errors.Cancelled(), errors.DownloadCancelled(),
            errors.ConfirmationMismatch("a/b", "c/d"), errors.LoraNameRefused("../x", "it leaves the LoRA folder"),
            errors.LoraNotFound("fox"), errors.LoraAmbiguous("fox", ["a/fox", "b/fox"]),
            UploadsRefused(), LoginRequired(), FileNotServed(), DoesNotFit(2 * 2**30, 3 * 2**30)]


@pytest.mark.parametrize("err", _fixed_errors(), ids=lambda e: type(e).__name__)
def test_errors_built_in_their_class_read_fully_in_chinese(err):
    message, hint = err.text("zh")
    assert CJK.search(message) and err.message not in message, message     # a pattern, not the fallback
    assert not err.hint or (CJK.search(hint) and hint != err.hint), hint
    assert err.to_dict("zh")["code"] == err.code and err.to_dict("en")["message"] == err.message


@pytest.mark.parametrize("body", [
    {}, {"prompt": " "}, {"prompt": 3}, {"prompt": "x" * 5000}, {"prompt": "a\x00b"}, {"prompt": "\ud800"},
    {"prompt": "x", "width": 250}, {"prompt": "x", "width": 260}, {"prompt": "x", "width": "big"},
    {"prompt": "x", "num_inference_steps": 0}, {"prompt": "x", "guidance_scale": float("nan")},
    {"prompt": "x", "guidance_scale": 99}, {"prompt": "x", "seed": -2}, {"prompt": "x", "colour": 1},
    {"prompt": "x", "num_images": 9}, {"prompt": "<lora::1>"}, {"prompt": "<lora:a:1:2>"}, {"prompt": "<lora:a:big>"},
    {"prompt": "<lora:a:9>"}, {"prompt": "<lora:a:1"}, [],
], ids=repr)
def test_every_validation_message_has_a_chinese_pattern(body):
    with pytest.raises(errors.InvalidRequest) as e:
        GenerationRequest.from_mapping(body, 4000)
    message = e.value.text("zh")[0]
    detail = e.value.message.split(": ", 1)[1]
    assert message.startswith(e.value.field + ": ") and CJK.search(message) and detail not in message, message


def test_a_message_without_pattern_is_the_codes_sentence_then_the_english():
    err = errors.ModelUnavailable("Download from hub.example failed: HTTP 502.", "Check your network.")
    message, hint = err.text("zh")
    assert message == "找不到或无法下载模型。（Download from hub.example failed: HTTP 502.）"
    assert hint == "Check your network."          # an unknown hint stays as written: it is an action


@pytest.mark.parametrize("header,lang", [
    (None, "en"), ("", "en"), ("en", "en"), ("en-US,en;q=0.9", "en"), ("zh", "zh"), ("zh-CN", "zh"),
    ("zh-Hans-CN", "zh"), ("ZH-cn", "zh"), ("zh-CN,zh;q=0.9,en;q=0.8", "zh"), ("en;q=0.5, zh;q=0.8", "zh"),
    ("en, zh", "en"), ("zh;q=0, en", "en"), ("fr, zh;q=0.3", "zh"), ("fr, de", "en"), ("*", "en"),
    ("zh;q=bad", "en"), ("\x00garbage;;,", "en"),
])
def test_language_of_reads_accept_language(header, lang):
    assert i18n.language_of(header) == lang


def _error(r) -> dict:
    return r.json()["error"]


def test_generate_errors_in_chinese_when_asked(server):
    url = server.url + "/generate"
    r = requests.post(url, json={"prompt": "x", "width": 250}, headers=ZH, timeout=10)
    err = _error(r)
    assert r.status_code == 422 and err["code"] == "invalid_request" and err["field"] == "width"
    assert err["message"] == "width: 必须在 256 到 2048 之间，收到的是 250"
    assert r.headers["Content-Language"] == "zh"
    r = requests.post(url, data=b"{oops", headers={**ZH, "Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and _error(r)["code"] == "bad_body" and _error(r)["message"].startswith("请求体不是有效的 JSON")
    r = requests.post(url, data="x", headers={**ZH, "Content-Type": "text/plain"}, timeout=10)
    err = _error(r)
    assert r.status_code == 415 and err["code"] == "unsupported_media_type"
    assert CJK.search(err["message"]) and CJK.search(err["hint"])
    for headers in ({}, {"Accept-Language": "en"}, {"Accept-Language": "en-GB, zh;q=0.5"}):
        r = requests.post(url, json={"prompt": "x", "width": 250}, headers=headers, timeout=10)
        assert _error(r)["message"] == "width: must be between 256 and 2048, got 250"


def test_gradio_route_404_in_chinese(server):
    r = requests.post(server.url + "/gradio_api/call/no_such_event", json={"data": []}, headers=ZH, timeout=10)
    assert r.status_code == 404 and _error(r)["code"] == "not_found"
    assert _error(r)["message"] == "此页面没有名为 'no_such_event' 的 API 端点。"
    assert _error(r)["hint"] == "端点列表见 /gradio_api/info。" and CJK.search(r.json()["detail"])
    r = requests.post(server.url + "/gradio_api/call/no_such_event", json={"data": []}, timeout=10)
    assert _error(r)["message"] == "This page has no API endpoint named 'no_such_event'."


def test_a1111_and_openai_errors_in_chinese_keep_their_shapes(server):
    r = requests.post(server.url + "/sdapi/v1/txt2img", json={"prompt": "x", "width": 264}, headers=ZH, timeout=10)
    body = r.json()
    assert r.status_code == 422 and body["error"] == "invalid_request" and set(body) == {"error", "detail", "errors"}
    assert body["errors"] == "width: 必须是 16 的倍数，收到的是 264" and body["detail"] == body["errors"]
    r = requests.post(server.url + "/v1/images/generations", json={"prompt": "x", "size": "big"}, headers=ZH,
                      timeout=10)
    err = _error(r)
    assert r.status_code == 400 and err["code"] == "invalid_request" and err["param"] == "size"
    assert err["type"] == "invalid_request_error" and err["message"] == "size: 格式应为 1024x1024 或 auto，收到的是 'big'"
    r = requests.post(server.url + "/v1/images/generations", json={"prompt": "x", "size": "big"}, timeout=10)
    assert _error(r)["message"] == "size: must look like 1024x1024 or auto, got 'big'"


def test_login_refusal_in_chinese(start_server, settings):
    srv = start_server(dataclasses.replace(settings, auth="me:secret"))
    r = requests.get(srv.url + "/health", headers=ZH, timeout=10)
    assert r.status_code == 401 and _error(r) == {"code": "unauthorized",
                                                  "message": "请用 HTTP Basic 登录（--auth 的 用户名:密码）。"}
    r = requests.get(srv.url + "/health", timeout=10)
    assert _error(r)["message"] == "Log in with HTTP Basic (the --auth user:password)."


@pytest.mark.parametrize("field,words,zh", [
    ("size", "each side must be 256-2048 px, got 0x0", "每边必须在 256-2048 像素之间"),
    ("batch_size", "(batch_size x n_iter) must be between 1 and 4, got 6", "（batch_size x n_iter）必须在 1 到 4 之间"),
    ("prompt", "is not valid UTF-8 text", "不是有效的 UTF-8 文本"),
    ("outpaint", "extends no side (give left, right, top or bottom in px)", "没有扩展任何一边"),
    ("outpaint", "left must be 0-1024 px, got 1025", "left 必须在 0-1024 像素之间"),
    ("outpaint", "would make a 8256x64 canvas; at most 8192x8192", "会得到 8256x64 的画布"),
])
def test_the_new_field_refusals_in_chinese(field, words, zh):
    from zimage.errors import InvalidRequest

    message, _ = InvalidRequest(field, words).text("zh")
    assert message.startswith(f"{field}: ") and zh in message and "must" not in message
