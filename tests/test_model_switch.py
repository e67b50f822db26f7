"""The model picker's APIs on the real server over HTTP: A1111's sd-models, options and
override_settings (with webuiapi), the seed /generate's "model", per-model defaults, the PNG's
Model, Model hash and Version, and a switch queued behind a running generation."""
from __future__ import annotations

import base64
import dataclasses
import io
import json
import threading

import pytest
import requests
from PIL import Image

from conftest import Gate, wait_for
from zimage.request import GenerationRequest
from zimage.web.model_choice import model_choice

BASE = "Z-Image-base-tiny"       # "z-image" without "turbo": the base model's kind and defaults


@pytest.fixture(scope="session")
def other_root(tmp_path_factory, tiny_model_dir):
    """A --models-from folder (ComfyUI's layout) holding a second tiny model (another seed) and a LoRA."""
    import shutil

    from zimage.testing.tiny_lora import make_tiny_loras
    from zimage.testing.tiny_model import make_tiny_model

    root = tmp_path_factory.mktemp("other")
    make_tiny_model(root / "models" / "diffusers" / BASE, seed=1)
    made = make_tiny_loras(tmp_path_factory.mktemp("loras"), tiny_model_dir)
    (root / "models" / "loras").mkdir(parents=True)
    shutil.copy(made["diffusers"], root / "models" / "loras" / "far_style.safetensors")
    return root


@pytest.fixture
def two_models(settings, other_root):
    return dataclasses.replace(settings, models_from=(str(other_root),))


def a1111(srv):
    import webuiapi

    return webuiapi.WebUIApi(host="127.0.0.1", port=srv.settings.port)


def png_info(item_b64: str) -> str:
    return Image.open(io.BytesIO(base64.b64decode(item_b64))).info["parameters"]


def test_sd_models_lists_both_and_webuiapi_switches(start_server, two_models, other_root):
    srv = start_server(two_models)
    models = requests.get(srv.url + "/sdapi/v1/sd-models", timeout=30).json()
    by_name = {m["model_name"]: m for m in models}
    assert set(by_name) == {"tiny", BASE}
    for m in models:
        assert set(m) >= {"title", "model_name", "hash", "sha256", "filename", "config"}
        assert m["title"] == f"{m['model_name']} [{m['hash']}]" and len(m["hash"]) == 10
    index = next((other_root / "models/diffusers" / BASE / "transformer").glob("*.safetensors*"))
    assert by_name[BASE]["filename"] == str(other_root / "models/diffusers" / BASE)
    assert index.exists()

    api = a1111(srv)
    assert sorted(api.util_get_model_names()) == sorted(m["title"] for m in models)
    assert api.util_get_current_model() == by_name["tiny"]["title"]
    api.util_set_model(by_name[BASE]["title"])
    assert api.util_get_current_model() == by_name[BASE]["title"]
    assert requests.get(srv.url + "/health", timeout=10).json()["model"] == str(other_root / "models/diffusers" / BASE)

    # no steps, no cfg_scale: the base model's own defaults (30 steps, guidance 4, its negative prompt)
    r = requests.post(srv.url + "/sdapi/v1/txt2img", json={"prompt": "a fox", "width": 256, "height": 256}, timeout=120)
    assert r.status_code == 200, r.text
    text = png_info(r.json()["images"][0])
    assert "Steps: 30," in text and "CFG scale: 4," in text and "Negative prompt: blurry" in text
    assert f"Model hash: {by_name[BASE]['hash']}, Model: {BASE}" in text
    assert ", Version: diffusers 0." in text


def test_generate_model_field_and_unknown_name(start_server, two_models):
    srv = start_server(two_models)
    r = requests.post(srv.url + "/generate", json={"prompt": "x", "width": 256, "height": 256, "model": "nope"}, timeout=30)
    err = r.json()["error"]
    assert r.status_code == 422 and err["field"] == "model" and "nope" in err["message"]
    assert requests.get(srv.url + "/health", timeout=10).status_code == 200

    r = requests.post(srv.url + "/generate", json={"prompt": "x", "width": 256, "height": 256, "model": BASE}, timeout=120)
    assert r.status_code == 200, r.text
    assert f"Model: {BASE}" in r.json()["info"] and r.json()["num_inference_steps"] == 30
    # what the caller set wins over the model's defaults
    r = requests.post(srv.url + "/generate", json={"prompt": "x", "width": 256, "height": 256, "model": "tiny",
                                                    "num_inference_steps": 3}, timeout=120)
    assert r.status_code == 200 and "Model: tiny" in r.json()["info"] and r.json()["num_inference_steps"] == 3
    assert "Model hash: " in r.json()["info"]


def test_options_unknown_checkpoint_is_4xx_naming_the_field(start_server, two_models):
    srv = start_server(two_models)
    r = requests.post(srv.url + "/sdapi/v1/options", json={"sd_model_checkpoint": "missing-model"}, timeout=30)
    assert r.status_code == 422 and "sd_model_checkpoint" in r.text
    r = requests.post(srv.url + "/sdapi/v1/txt2img", json={"prompt": "x", "width": 256, "height": 256,
                                                            "override_settings": {"sd_model_checkpoint": 5}}, timeout=30)
    assert r.status_code == 422 and "override_settings.sd_model_checkpoint" in r.text
    # names no file can have (a NUL byte, a lone surrogate, over NAME_MAX) were a 500 from the path lookup
    for name in ("a\x00b", "a\ud8e6b", "x" * 5000, "/tmp/\x00"):
        body = json.dumps({"sd_model_checkpoint": name})            # ensure_ascii: the surrogate as an escape
        r = requests.post(srv.url + "/sdapi/v1/options", data=body, headers={"Content-Type": "application/json"},
                          timeout=30)
        assert r.status_code == 422 and "sd_model_checkpoint" in r.text, (name[:20], r.status_code, r.text[:200])
        r = requests.post(srv.url + "/generate", data=json.dumps({"prompt": "x", "model": name}), timeout=30,
                          headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["field"] == "model", (name[:20], r.text[:200])


def test_refresh_checkpoints_takes_nothing_or_an_object(server):
    """A1111's action routes take no fields: an empty body or an object (ignored); anything else is
    refused as the other actions refuse it (it was read by no one and answered 200)."""
    import webuiapi

    assert webuiapi.WebUIApi(host="127.0.0.1", port=server.settings.port).refresh_checkpoints() == {}
    url = server.url + "/sdapi/v1/refresh-checkpoints"
    assert requests.post(url, json={"any": 1}, timeout=30).json() == {}
    for body in ("[1]", "null", "5", "\x00"):
        r = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
        assert 400 <= r.status_code < 500 and "body" in r.json()["detail"], (body, r.status_code, r.text[:200])


def test_override_settings_uses_the_model_then_puts_it_back(start_server, two_models):
    srv = start_server(two_models)
    r = requests.post(srv.url + "/sdapi/v1/txt2img", json={
        "prompt": "x", "width": 256, "height": 256, "steps": 2,
        "override_settings": {"sd_model_checkpoint": BASE}}, timeout=120)
    assert r.status_code == 200, r.text
    assert f"Model: {BASE}" in png_info(r.json()["images"][0])
    wait_for(lambda: requests.get(srv.url + "/sdapi/v1/options", timeout=10).json()["sd_model_checkpoint"]
             .startswith("tiny ["), 60, message="the model put back")


@pytest.mark.inprocess
def test_an_image_saved_after_a_switch_names_the_model_it_was_made_on(start_server, two_models):
    """The PNG is written on the saver thread while the worker goes on to the next job: a switch
    queued behind a generation (override_settings' put-back) can run before that image is saved.
    Its PNG named the model switched to (a full run, 2026-12-07: "Model: tiny" for BASE's image).
    Here the saver thread is held, as a slow PNG before it would, until the switch back is done."""
    srv = start_server(dataclasses.replace(two_models, backend="inprocess"))
    choice = model_choice(srv.manager)
    choice.switch(BASE).future.result(60)
    switched = threading.Event()
    held = srv.manager._runner._saver.submit(switched.wait, 60)
    job = srv.manager.submit(GenerationRequest.from_mapping({"prompt": "x", "width": 256, "height": 256,
                                                             "num_inference_steps": 2}))
    choice.switch("tiny").future.result(60)
    assert srv.manager.settings.model.endswith("tiny") and not job.future.done()
    switched.set()
    assert held.result(10)
    result = job.future.result(60)
    with Image.open(result.images[0].path) as png:
        assert f"Model: {BASE}," in png.info["parameters"] + ","
    assert f"Model: {BASE}" in result.images[0].infotext


@pytest.mark.inprocess
def test_switch_waits_for_the_running_generation(start_server, two_models):
    """The switch is queued behind the running generation: that one finishes on its own model."""
    srv = start_server(dataclasses.replace(two_models, backend="inprocess"))
    gate = Gate(srv.manager)
    out = {}
    worker = threading.Thread(target=lambda: out.update(r=requests.post(
        srv.url + "/generate", json={"prompt": "x", "width": 256, "height": 256, "num_inference_steps": 2}, timeout=120)))
    worker.start()
    assert gate.entered.wait(30)
    switched = {}
    switcher = threading.Thread(target=lambda: switched.update(r=requests.post(
        srv.url + "/sdapi/v1/options", json={"sd_model_checkpoint": BASE}, timeout=120)))
    switcher.start()
    wait_for(lambda: model_choice(srv.manager)._selected.endswith(BASE), 10, message="the switch asked")
    assert srv.manager.load_count == 1 and "tiny" in srv.manager.settings.model
    gate.release.set()
    worker.join(60)
    switcher.join(60)
    assert out["r"].status_code == 200 and "Model: tiny" in out["r"].json()["info"]
    assert switched["r"].status_code == 200
    assert srv.manager.load_count == 2 and srv.manager.settings.model.endswith(BASE)


def test_loras_from_models_from_join_the_list(start_server, two_models, other_root):
    srv = start_server(two_models)
    names = [x["name"] for x in requests.get(srv.url + "/sdapi/v1/loras", timeout=30).json()]
    assert "far_style" in names
    r = requests.post(srv.url + "/generate", json={"prompt": "x <lora:far_style:0.5>", "width": 256, "height": 256,
                                                    "num_inference_steps": 2}, timeout=120)
    assert r.status_code == 200, r.text
    assert "far_style" in r.json()["info"]
    assert not any(p.name.endswith((".tmp", ".json")) for p in (other_root / "models" / "loras").iterdir())


@pytest.mark.inprocess
def test_the_same_pick_twice_at_once_queues_one_switch_and_both_wait_for_it(start_server, two_models):
    """The page's picker sends its input event twice for one pick, and the two calls run at once: the
    second queued a second load, or answered "is the model in use" while the load had not run yet
    (the page then said so instead of "Switching to"). Both get the one queued switch now."""
    srv = start_server(dataclasses.replace(two_models, backend="inprocess"))
    gate = Gate(srv.manager)
    held = srv.manager.submit(GenerationRequest.from_mapping({"prompt": "x", "width": 256, "height": 256,
                                                              "num_inference_steps": 1}))
    assert gate.entered.wait(30)                     # the switch waits behind this generation
    choice, jobs = model_choice(srv.manager), []
    pickers = [threading.Thread(target=lambda: jobs.append(choice.switch(BASE))) for _ in range(2)]
    for t in pickers:
        t.start()
    for t in pickers:
        t.join(30)
    assert len(jobs) == 2 and jobs[0] is not None and jobs[0] is jobs[1]
    assert choice.switch(BASE) is jobs[0]           # asked again while it waits: the same switch
    gate.release.set()
    held.future.result(60)
    jobs[0].future.result(60)
    assert srv.manager.load_count == 2 and srv.manager.settings.model.endswith(BASE)
    assert choice.switch(BASE) is None              # loaded: nothing to do


def test_a_model_axis_runs_each_models_cells_together_and_puts_the_model_back(start_server, two_models):
    """X/Y/Z with a model axis (issue 33): each cell made by its model (its PNG says so), the cells of
    one model in a row (one switch there, one back: not one per cell), the model before in use after."""
    srv = start_server(two_models)
    health = lambda: requests.get(srv.url + "/health", timeout=10).json()      # noqa: E731
    assert requests.post(srv.url + "/generate", json={"prompt": "x", "width": 256, "height": 256},
                         timeout=120).status_code == 200                            # tiny in use
    before = health()["load_count"]
    r = requests.post(srv.url + "/grid", json={"base": {"prompt": "a fox", "width": 256, "height": 256,
                                                         "num_inference_steps": 2, "seed": 5},
                                                "x": {"field": "model", "values": ["tiny", BASE]},
                                                "y": {"field": "seed", "values": [1, 2]}}, timeout=300)
    assert r.status_code == 200, r.text
    cells = r.json()["cells"]
    assert len(cells) == 4 and {(c["values"]["x"], c["values"]["y"]) for c in cells} == {
        ("tiny", 1), ("tiny", 2), (BASE, 1), (BASE, 2)}
    for c in cells:
        with Image.open(c["file"]) as im:
            assert f"Model: {c['values']['x']}," in im.info["parameters"] and c["model"] == c["values"]["x"]
    r = requests.post(srv.url + "/generate", json={"prompt": "x", "width": 256, "height": 256}, timeout=120)
    assert r.status_code == 200 and "Model: tiny," in r.json()["info"]              # the model before came back
    assert health()["load_count"] - before == 2     # to the base model once and back (cell by cell: 4)
    r = requests.post(srv.url + "/grid", json={"base": {"prompt": "a fox", "width": 256, "height": 256},
                                                "x": {"field": "model", "values": ["tiny", "nope"]}}, timeout=30)
    assert r.status_code == 422 and r.json()["error"]["field"] == "x.values" and "nope" in r.text
