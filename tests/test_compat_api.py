"""The A1111 and OpenAI image APIs, driven by their unmodified published clients (webuiapi, openai)."""
from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path

import pytest
import requests
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from conftest import break_the_pipeline, wait_for


@pytest.fixture
def a1111(server):
    import webuiapi

    return webuiapi.WebUIApi(host="127.0.0.1", port=server.settings.port)


@pytest.fixture
def oai(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0)


def test_txt2img_fixed_seed_twice_gives_identical_images(a1111, server):
    kw = dict(prompt="a red fox", width=256, height=256, steps=2, seed=1234, sampler_name="Euler a")
    one, two = a1111.txt2img(**kw), a1111.txt2img(**kw)
    assert one.image.size == (256, 256) and one.image.tobytes() == two.image.tobytes()
    assert one.info["seed"] == 1234 and one.info["sampler_name"] == "Euler a"
    assert "Seed: 1234" in one.info["infotexts"][0] and "Steps: 2" in one.info["infotexts"][0]
    assert one.parameters["prompt"] == "a red fox"
    random_seed = a1111.txt2img(prompt="x", width=256, height=256, steps=1, seed=-1, batch_size=2)
    assert len(random_seed.images) == 2 and random_seed.info["seed"] >= 0
    assert random_seed.info["all_seeds"] == [random_seed.info["seed"], random_seed.info["seed"] + 1]


def test_old_client_defaults_map_to_turbo_defaults(server):
    r = requests.post(server.url + "/sdapi/v1/txt2img", json={"prompt": "x", "width": 256, "height": 256,
                                                             "steps": 20, "cfg_scale": 7, "unknown_field": 1},
                      timeout=120)
    info = __import__("json").loads(r.json()["info"])
    assert r.status_code == 200 and info["steps"] == 8 and info["cfg_scale"] == 0.0


def test_progress_advances_and_interrupt_stops_a_long_run(a1111, server):
    server.manager.ensure_ready(60)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", requests.post(
        server.url + "/sdapi/v1/txt2img", json={"prompt": "long", "width": 1024, "height": 1024, "steps": 50},
        timeout=300)))
    t.start()
    wait_for(lambda: a1111.get_progress()["state"]["sampling_step"] >= 1, 60, message="progress to advance")
    p = a1111.get_progress()
    assert 0 < p["progress"] < 1 and p["state"]["sampling_steps"] == 50
    preview = Image.open(io.BytesIO(base64.b64decode(p["current_image"])))
    assert preview.size == (128, 128)                          # the latent grid: 1/8 of 1024
    assert requests.get(server.url + "/sdapi/v1/progress?skip_current_image=true", timeout=10).json()[
        "current_image"] is None
    a1111.interrupt()
    t.join(120)
    assert result["r"].status_code == 409                     # stopped, not shown as a result
    assert a1111.get_progress()["progress"] == 0


def test_png_info_with_webuiapi_reads_back_what_txt2img_wrote(a1111, server):
    made = a1111.txt2img(prompt="a red fox\nat dusk", negative_prompt="blur", width=256, height=256, steps=2,
                         cfg_scale=1.5, seed=77)   # guidance > 0: the negative is used, so written
    saved = Image.open(sorted(Path(server.settings.outputs_dir).rglob("*.png"), key=lambda p: p.stat().st_mtime)[-1])
    read = a1111.png_info(saved)                               # webuiapi sends the image as base64 PNG
    assert read.info == made.info["infotexts"][0] == saved.text["parameters"]     # webuiapi: info, parameters
    params = read.parameters
    assert (params["Prompt"], params["Negative prompt"], params["Steps"], params["Seed"]) == \
        ("a red fox\nat dusk", "blur", "2", "77")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, "PNG")
    plain = requests.post(server.url + "/sdapi/v1/png-info", json={"image": base64.b64encode(buf.getvalue()).decode()},
                          timeout=30)
    assert plain.status_code == 200 and plain.json() == {"info": "", "items": {}, "parameters": {}}
    for odd in ("Steps: ², Seed: --5, Size: 1x1", f"Steps: 1, Seed: {'9' * 5000}, Size: {'9' * 5000}x1"):
        meta, buf = PngInfo(), io.BytesIO()                  # a foreign PNG's figures int() refuses: was a 500
        meta.add_text("parameters", f"odd figures\n{odd}")
        Image.new("RGB", (8, 8)).save(buf, "PNG", pnginfo=meta)
        r = requests.post(server.url + "/sdapi/v1/png-info", json={"image": base64.b64encode(buf.getvalue()).decode()},
                          timeout=30)
        assert r.status_code == 200 and r.json()["parameters"]["Prompt"] == "odd figures", r.text[:200]
    for body in ({}, {"image": "not base64!"}, {"image": base64.b64encode(b"GIF89a....").decode()},
                 {"image": "/etc/passwd"}, {"image": str(saved.filename)}):     # a path is never opened
        r = requests.post(server.url + "/sdapi/v1/png-info", json=body, timeout=30)
        assert r.status_code in (415, 422) and r.json()["detail"].startswith(("image:", "The uploaded image ")), r.text[:200]


def test_models_samplers_options_unload_reload(a1111, server):
    assert [n.rsplit(" [", 1)[0] for n in a1111.util_get_model_names()] == ["tiny"]   # the tiny model's folder name
    assert a1111.util_get_sampler_names() == ["Euler (flow match)"]
    assert a1111.get_options()["sd_model_checkpoint"] == a1111.util_get_model_names()[0]
    a1111.txt2img(prompt="x", width=256, height=256, steps=1, seed=1)
    # webuiapi has no unload/reload helpers: the routes are called as A1111 documents them.
    assert requests.post(server.url + "/sdapi/v1/unload-checkpoint", timeout=60).ok
    assert requests.get(server.url + "/health", timeout=10).json()["state"] == "unloaded"
    assert requests.post(server.url + "/sdapi/v1/reload-checkpoint", timeout=120).ok
    assert requests.get(server.url + "/health", timeout=10).json()["status"] == "healthy"
    assert server.manager.load_count == 2


def test_a1111_bad_request_gets_its_error_shape(a1111):
    with pytest.raises(RuntimeError) as e:
        a1111.txt2img(prompt="x", width=264, height=256, steps=1)
    assert e.value.args[0] == 422 and "multiple of 16" in e.value.args[1]


def test_openai_client_b64_and_url(oai, server):
    assert [m.id for m in oai.models.list().data] == ["z-image-turbo"]
    r = oai.images.generate(model="z-image-turbo", prompt="a lighthouse", n=2, size="256x320",
                            response_format="b64_json")
    assert len(r.data) == 2
    for item in r.data:
        img = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
        assert img.size == (256, 320) and "Size: 256x320" in img.text["parameters"]
    u = oai.images.generate(model="z-image-turbo", prompt="a lighthouse", size="256x256", response_format="url")
    got = requests.get(u.data[0].url, timeout=10)
    assert got.status_code == 200 and Image.open(io.BytesIO(got.content)).size == (256, 256)
    assert requests.get(server.url + "/outputs/../../etc/passwd", timeout=10).status_code == 404


def test_openai_bad_request_gets_the_openai_error_shape(oai):
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        oai.images.generate(model="z-image-turbo", prompt="x", size="100x100")
    assert e.value.status_code == 400 and e.value.body["param"] == "size" and "256-2048" in e.value.message
    with pytest.raises(openai.BadRequestError):
        oai.images.generate(model="z-image-turbo", prompt="x", size="big")


@pytest.mark.parametrize("patch,field", [
    ({"size": "²x256"}, "size"),            # was a 500: "²".isdigit() but int("²") raises
    ({"size": "9" * 5000 + "x256"}, "size"),   # was a 500: int() refuses 4301+ digits
    ({"size": False}, "size"), ({"size": ""}, "size"), ({"size": []}, "size"),   # were a 1024x1024 image
    ({"response_format": ""}, "response_format"), ({"response_format": False}, "response_format"),
    ({"size": "0x0"}, "size"), ({"size": "256x4096"}, "size"),     # were named width / height, not sent
    ({"n": 0}, "n"), ({"n": 5}, "n"), ({"n": "2"}, "n"),              # were named num_images
])
def test_openai_fields_found_by_the_schema_fuzz(server, patch, field):
    r = requests.post(server.url + "/v1/images/generations", json={"prompt": "x", **patch}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text[:200]
    assert server.manager.load_count == 0


@pytest.mark.parametrize("route,patch,field", [
    ("txt2img", {"steps": 0}, "steps"), ("txt2img", {"steps": 51}, "steps"),      # were num_inference_steps
    ("txt2img", {"cfg_scale": 30}, "cfg_scale"),                                    # was guidance_scale
    ("txt2img", {"batch_size": 3, "n_iter": 2}, "batch_size"),                     # was num_images
    ("img2img", {"denoising_strength": 1.5}, "denoising_strength"),                # was strength
])
def test_a1111_refusals_name_the_field_the_caller_sent(server, route, patch, field):
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (256, 256), "gray").save(buf, "PNG")
    body = {"prompt": "x", "width": 256, "height": 256, "steps": 2, **patch}
    if route == "img2img":
        body["init_images"] = [base64.b64encode(buf.getvalue()).decode()]
    r = requests.post(f"{server.url}/sdapi/v1/{route}", json=body, timeout=60)
    assert r.status_code == 422 and r.json()["detail"].startswith(f"{field}: "), r.text[:200]


def test_a1111_options_and_negative_prompt_refusals_keep_its_error_shape(server):
    r = requests.post(server.url + "/sdapi/v1/options", data="x", headers={"Content-Type": "text/plain"}, timeout=10)
    assert r.status_code == 415 and r.json()["detail"]          # was a 500 (the error escaped the route)
    r = requests.post(server.url + "/sdapi/v1/options", data="[" * 100_000,
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and r.json()["detail"]
    r = requests.post(server.url + "/sdapi/v1/txt2img", json={"prompt": "x", "negative_prompt": False}, timeout=10)
    assert r.status_code == 422 and "negative_prompt" in r.json()["detail"]


def test_api_auth_protects_the_api_routes_only(start_server, settings):
    import dataclasses

    import webuiapi

    srv = start_server(dataclasses.replace(settings, api_auth="bot:key"))
    assert requests.get(srv.url + "/sdapi/v1/sd-models", timeout=10).status_code == 401
    assert requests.get(srv.url + "/v1/models", timeout=10).status_code == 401
    client = webuiapi.WebUIApi(host="127.0.0.1", port=srv.settings.port)
    client.set_auth("bot", "key")
    assert [n.rsplit(" [", 1)[0] for n in client.util_get_model_names()] == ["tiny"]
    assert requests.get(srv.url + "/config", timeout=10).status_code == 200     # the page needs --auth


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_a_lone_surrogate_is_refused_naming_the_field_on_every_route(server, field):
    """JSON's "\\ud800" escape decodes to a lone UTF-16 surrogate, which the tokenizer raised on (a 500)."""
    def body(extra: dict) -> bytes:
        return json.dumps({"prompt": "a fox", **extra, field: "cat \ud800"}).encode()     # ensure_ascii: \\ud800
    headers = {"Content-Type": "application/json"}
    r = requests.post(server.url + "/generate", data=body({"width": 256, "height": 256}), headers=headers, timeout=30)
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text[:200]
    r = requests.post(server.url + "/sdapi/v1/txt2img", data=body({"width": 256, "height": 256}), headers=headers,
                      timeout=30)
    assert r.status_code == 422 and r.json()["detail"].startswith(f"{field}:"), r.text[:200]
    if field == "prompt":       # OpenAI's images API has no negative prompt
        r = requests.post(server.url + "/v1/images/generations", data=body({"size": "256x256"}), headers=headers,
                          timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt", r.text[:200]
    assert server.manager.load_count == 0


# Every string txt2img and img2img echo back (`parameters` is the body, `info` names sampler_name),
# key names included: (the body's change, the field the refusal names).
ECHOED = [({"sampler_name": "Euler \ud800"}, "sampler_name"), ({"styles": ["a", "b\udfff"]}, "styles[1]"),
          ({"made_up_field": "x\ud800"}, "made_up_field"), ({"bad\ud800key": 1}, "body"),
          ({"override_settings": {"CLIP_stop_at_last_layers": "\udc00"}}, "override_settings.CLIP_stop_at_last_layers"),
          ({"override_settings": {"k\udc00": 1}}, "override_settings"), ({"script_args": [[1, "\ud83d"]]}, "script_args[0][1]"),
          ({"alwayson_scripts": {"controlnet": {"args": [{"module": "canny\ud800"}]}}},
           "alwayson_scripts.controlnet.args[0].module"), ({"seed": 1, "negative_prompt": "\ud800"}, "negative_prompt")]


@pytest.mark.parametrize("route", ["txt2img", "img2img"])
def test_a_lone_surrogate_anywhere_in_an_a1111_body_is_refused_before_any_work(server, route):
    """The image was made and saved, then the answer echoing "\\ud800" could not be written: a 500."""
    import webuiapi

    base = {"prompt": "a fox", "width": 256, "height": 256, "steps": 1}
    if route == "img2img":
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, format="PNG")
        base["init_images"] = [base64.b64encode(buf.getvalue()).decode()]
    for change, field in ECHOED:
        body = json.dumps({**base, **change})          # ensure_ascii: the surrogate travels as \\ud800
        r = requests.post(f"{server.url}/sdapi/v1/{route}", data=body, headers={"Content-Type": "application/json"},
                          timeout=30)
        assert r.status_code == 422 and r.json()["detail"].startswith(f"{field}: "), (change, r.status_code, r.text[:300])
        assert "surrogate" in r.json()["detail"]
    zh = requests.post(f"{server.url}/sdapi/v1/{route}", data=json.dumps({**base, "k\ud800": 1}),
                       headers={"Content-Type": "application/json", "Accept-Language": "zh"}, timeout=30)
    assert zh.status_code == 422 and "键名 'k\\\\ud800' 必须是有效的 Unicode 文本" in zh.json()["detail"], zh.text
    client = webuiapi.WebUIApi(host="127.0.0.1", port=server.settings.port)
    with pytest.raises(RuntimeError, match="sampler_name"):
        client.txt2img(prompt="a fox", width=256, height=256, steps=1, sampler_name="Euler \ud800")
    assert server.manager.load_count == 0 and not any(Path(server.settings.outputs_dir).rglob("*.png"))
    # The same check on the other JSON routes (one shared check, read_json's).
    r = requests.post(server.url + "/v1/images/generations", data=json.dumps({"prompt": "x", "user": "\ud800"}),
                      headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "user", r.text[:300]
    r = requests.post(server.url + "/generate", data=json.dumps({"prompt": "x", "control": {"\udfff": 1}}),
                      headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 422 and r.json()["error"]["field"] == "control", r.text[:300]


def test_an_answer_holding_a_lone_surrogate_is_still_written():
    from zimage.web.json_text import SafeJSONResponse

    body = SafeJSONResponse({"sampler_name": "Euler \ud800", "prompt": "猫"}).body
    assert json.loads(body) == {"sampler_name": "Euler \ud800", "prompt": "猫"}
    assert SafeJSONResponse({"prompt": "猫"}).body == '{"prompt":"猫"}'.encode()     # UTF-8 as before


@pytest.mark.inprocess
def test_a_failed_txt2img_is_a_json_500_and_the_next_one_works(server, monkeypatch):
    break_the_pipeline(server.manager, monkeypatch)
    body = {"prompt": "a fox", "width": 256, "height": 256, "steps": 1}
    r = requests.post(server.url + "/sdapi/v1/txt2img", json=body, timeout=120)
    assert r.status_code == 500 and r.json()["error"] == "generation_failed"
    assert "RuntimeError" in r.json()["detail"] and "illegal memory" in r.json()["errors"]
    monkeypatch.undo()
    assert requests.post(server.url + "/sdapi/v1/txt2img", json=body, timeout=120).json()["images"]


@pytest.mark.inprocess
def test_a_failed_openai_generation_is_a_server_error_and_the_next_one_works(oai, server, monkeypatch):
    import openai

    break_the_pipeline(server.manager, monkeypatch)
    with pytest.raises(openai.InternalServerError) as e:
        oai.images.generate(prompt="a fox", size="256x256")
    assert e.value.status_code == 500
    err = e.value.body
    assert err["code"] == "generation_failed" and err["type"] == "server_error" and "RuntimeError" in err["message"]
    monkeypatch.undo()
    assert oai.images.generate(prompt="a fox", size="256x256").data[0].b64_json


@pytest.mark.parametrize("cfg", [0.1, 0.5, 1.0, 1e-300])
def test_txt2img_accepts_cfg_scale_between_0_and_1(server, cfg):
    r = requests.post(server.url + "/sdapi/v1/txt2img", json={"prompt": "a fox", "width": 256, "height": 256,
                                                             "steps": 1, "cfg_scale": cfg}, timeout=120)
    assert r.status_code == 200, r.text
    assert __import__("json").loads(r.json()["info"])["cfg_scale"] == cfg


def test_progress_eta_is_the_jobs_own_estimate(a1111, server):
    from zimage.request import GenerationRequest

    m = server.manager
    m.generate(GenerationRequest.from_mapping({"prompt": "measures decode and save", "width": 256, "height": 256,
                                              "num_inference_steps": 1}), timeout=120)
    t = threading.Thread(target=lambda: requests.post(
        server.url + "/sdapi/v1/txt2img", json={"prompt": "long", "width": 1024, "height": 1024, "steps": 50},
        timeout=300))
    t.start()
    wait_for(lambda: a1111.get_progress()["state"]["sampling_step"] >= 2, 60, message="two steps timed")
    p = a1111.get_progress()
    job = m.current_generation()
    assert job is not None and job.eta_s is not None
    # Both read the same job a moment apart: within a step of each other, and many steps' worth left.
    assert abs(p["eta_relative"] - job.eta_s) <= 2 * job.step_seconds + 0.2
    assert p["eta_relative"] >= 40 * job.step_seconds
    a1111.interrupt()
    t.join(120)
