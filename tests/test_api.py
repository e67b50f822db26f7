import base64
import io
import json
import shutil
import subprocess
import threading
import time

import pytest
import requests
from PIL import Image

from zimage.state import LoadState

from conftest import break_the_pipeline, wait_for

SEED_WARMUP = '{"prompt": "warmup", "width": 512, "height": 512, "num_inference_steps": 1, "seed": 1}'


def post(srv, path, body=None, **kw):
    headers = kw.pop("headers", {"Content-Type": "application/json"})
    data = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
    return requests.post(srv.url + path, data=data, headers=headers, timeout=60, **kw)


@pytest.mark.inprocess
def test_health_names_the_server_start_so_a_page_can_tell_a_restart_from_a_late_answer(start_server, settings):
    """The page reloads itself only when /health's server_id changes (ui_offline)."""
    first = start_server(settings)
    ids = {requests.get(first.url + "/health", timeout=10).json()["server_id"] for _ in range(2)}
    assert len(ids) == 1 and len(next(iter(ids))) >= 16          # one id for the life of the server
    port = first.settings.port
    first.stop()
    again = start_server(settings, port=port)                     # the same address, restarted
    assert requests.get(again.url + "/health", timeout=10).json()["server_id"] not in ids


def test_health_goes_through_the_states_of_a_preload(server):
    h = requests.get(server.url + "/health", timeout=10).json()
    assert h["status"] == "unloaded" and h["state"] == "unloaded" and h["device"] is None
    assert {"status", "state", "device", "progress", "timestamp"} <= set(h)
    seen = set()
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            seen.add(requests.get(server.url + "/health", timeout=10).json()["status"])

    t = threading.Thread(target=poll)
    t.start()
    # Slow the read a little so the poller can see the loading state.
    real = server.manager._loader

    def slow_loader(*a, **kw):
        time.sleep(0.5)
        return real(*a, **kw)
    server.manager._loader = slow_loader
    r = post(server, "/preload", None, headers={})
    assert r.status_code == 202
    wait_for(lambda: requests.get(server.url + "/health", timeout=10).json()["status"] == "healthy", 60,
             message="healthy")
    stop.set()
    t.join()
    assert "loading" in seen
    h = requests.get(server.url + "/health", timeout=10).json()
    assert h["state"] == "on_cpu" and h["device"] == "cpu" and h["progress"] == 1.0


def test_generate_returns_png_of_the_asked_size_with_metadata(server):
    r = post(server, "/generate", {"prompt": "a red fox", "width": 320, "height": 256,
                                   "num_inference_steps": 2, "seed": 42, "num_images": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seeds"] == [42, 43] and body["seed"] == 42 and body["width"] == 320
    for b64 in body["images"]:
        img = Image.open(io.BytesIO(base64.b64decode(b64)))
        assert img.format == "PNG" and img.size == (320, 256)
        assert "Seed: 4" in img.text["parameters"] and img.text["parameters"].startswith("a red fox")
    assert len(body["files"]) == 2 and body["seconds"] > 0
    assert body["seconds_per_image"] == pytest.approx(body["seconds"] / 2, abs=1e-3)
    assert body["peak_vram_bytes"] is None                  # no GPU here; the GPU figure is bench/speed_probe's


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_seed_article_curl_warmup_verbatim(server):
    cmd = ["curl", "-s", "-X", "POST", f"http://localhost:{server.settings.port}/generate",
           "-H", "Content-Type: application/json", "-d", SEED_WARMUP]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    body = json.loads(out.stdout)
    assert body["seed"] == 1 and (body["width"], body["height"]) == (512, 512)
    assert Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).size == (512, 512)
    assert requests.get(server.url + "/health", timeout=10).json()["status"] == "healthy"


@pytest.mark.parametrize("body,headers,status,field", [
    ("not json", {"Content-Type": "application/json"}, 400, None),
    ("[" * 100_000, {"Content-Type": "application/json"}, 400, None),      # was a 500 (RecursionError)
    (SEED_WARMUP, {"Content-Type": "text/plain"}, 415, None),
    ("prompt=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415, None),
    ('["prompt"]', {"Content-Type": "application/json"}, 422, "body"),
    ('{"width": 512}', {"Content-Type": "application/json"}, 422, "prompt"),
    ('{"prompt": "x", "width": 500}', {"Content-Type": "application/json"}, 422, "width"),
    ('{"prompt": "x", "height": 4096}', {"Content-Type": "application/json"}, 422, "height"),
    ('{"prompt": "x", "num_inference_steps": "ten"}', {"Content-Type": "application/json"}, 422,
     "num_inference_steps"),
    ('{"prompt": "x", "num_inference_steps": 0}', {"Content-Type": "application/json"}, 422,
     "num_inference_steps"),
    ('{"prompt": "x", "seed": 1e30}', {"Content-Type": "application/json"}, 422, "seed"),
    ('{"prompt": "' + "y" * 5000 + '"}', {"Content-Type": "application/json"}, 422, "prompt"),
])
def test_bad_input_gets_4xx_naming_the_field(server, body, headers, status, field):
    r = post(server, "/generate", body, headers=headers)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"]
    if field:
        assert err["field"] == field
    assert server.manager.load_count == 0            # nothing was started


def test_huge_body_is_refused_quickly(server):
    started = time.perf_counter()
    r = post(server, "/generate", json.dumps({"prompt": "x" * 10_000_000}))
    assert r.status_code == 413 and time.perf_counter() - started < 5
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


def test_foreign_origin_and_rebinding_host_are_refused(server):
    r = post(server, "/generate", SEED_WARMUP,
             headers={"Content-Type": "application/json", "Origin": "http://evil.test"})
    assert r.status_code == 403
    r = post(server, "/generate", SEED_WARMUP, headers={"Content-Type": "application/json", "Origin": "null"})
    assert r.status_code == 403
    r = requests.get(server.url + "/health", headers={"Host": "evil.test"}, timeout=10)
    assert r.status_code == 403
    r = requests.get(server.url + "/", headers={"Host": "evil.test:7860"}, timeout=10)
    assert r.status_code == 403
    same = post(server, "/unload", None, headers={"Origin": server.url})
    assert same.status_code == 200
    assert server.manager.load_count == 0


def test_queue_full_gives_429_with_retry_after(start_server, settings):
    import dataclasses

    srv = start_server(dataclasses.replace(settings, queue_max=1, backend="inprocess"))    # a hook on the pipe
    m = srv.manager
    m.ensure_ready(60)
    release = threading.Event()
    entered = threading.Event()

    def hold(*_):
        entered.set()
        release.wait(30)
    handle = m._pipe.transformer.register_forward_pre_hook(hold)
    results = []
    threads = [threading.Thread(target=lambda: results.append(post(srv, "/generate", SEED_WARMUP)))]
    threads[0].start()
    assert entered.wait(30)
    threads.append(threading.Thread(target=lambda: results.append(post(srv, "/generate", SEED_WARMUP))))
    threads[1].start()
    wait_for(lambda: m.status().queue_length == 2, 10, message="second job queued")
    r = post(srv, "/generate", SEED_WARMUP)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["code"] == "queue_full"
    handle.remove()
    release.set()
    for t in threads:
        t.join(60)
    assert [x.status_code for x in results] == [200, 200]


def test_four_concurrent_requests_cause_one_load(server):
    out = []
    threads = [threading.Thread(target=lambda i=i: out.append(
        post(server, "/generate", {"prompt": "p", "width": 256, "height": 256, "num_inference_steps": 1, "seed": i})))
        for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(r.status_code for r in out) == [200] * 4
    assert server.manager.load_count == 1
    assert requests.get(server.url + "/health", timeout=10).json()["load_count"] == 1


def test_idle_unload_then_lazy_reload_over_http(start_server, settings):
    import dataclasses

    srv = start_server(dataclasses.replace(settings, idle_unload_s=0.5))
    assert post(srv, "/generate", SEED_WARMUP).status_code == 200
    wait_for(lambda: requests.get(srv.url + "/health", timeout=10).json()["status"] == "unloaded", 15,
             message="idle unload")
    r = post(srv, "/generate", SEED_WARMUP)
    assert r.status_code == 200 and srv.manager.load_count == 2


def test_unload_and_preload_routes(server):
    r = post(server, "/preload", {"wait": True})
    assert r.status_code == 200 and r.json()["state"] == "on_cpu"
    r = post(server, "/unload", {"to": "sideways"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "to"
    r = post(server, "/unload", {"to": "none"})
    assert r.status_code == 200 and r.json()["state"] == "unloaded"
    assert server.manager.status().state == LoadState.UNLOADED


def test_model_error_is_a_clear_503_and_the_server_keeps_serving(start_server, settings, tmp_path):
    import dataclasses

    srv = start_server(dataclasses.replace(settings, model=str(tmp_path / "nowhere")))
    r = post(srv, "/generate", SEED_WARMUP)
    assert r.status_code == 503
    err = r.json()["error"]
    assert "not found" in err["message"] and err["hint"]
    h = requests.get(srv.url + "/health", timeout=10).json()
    assert h["status"] == "error" and h["message"] and h["hint"]


def test_unwritable_outputs_still_return_the_image(start_server, settings, tmp_path):
    import dataclasses

    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    srv = start_server(dataclasses.replace(settings, outputs_dir=str(tmp_path / "out"), backend="inprocess"))
    srv.manager._store.root = blocker / "sub"      # the folder becomes impossible to create
    r = post(srv, "/generate", SEED_WARMUP)
    assert r.status_code == 200
    body = r.json()
    assert body["images"] and body["files"] == [] and "not saved" in body["warning"]
    assert blocker.read_text() == "keep me"


def test_basic_auth_protects_api_routes(start_server, settings):
    import dataclasses

    users = settings.outputs_dir + ".users"
    with open(users, "w") as fh:
        fh.write("ann:from-file\n")
    srv = start_server(dataclasses.replace(settings, auth="me:secret", auth_file=users))
    assert requests.get(srv.url + "/health", timeout=10).status_code == 401
    assert requests.get(srv.url + "/health", auth=("me", "wrong"), timeout=10).status_code == 401
    assert requests.get(srv.url + "/health", auth=("me", "secret"), timeout=10).status_code == 200
    assert requests.get(srv.url + "/health", auth=("ann", "from-file"), timeout=10).status_code == 200
    r = requests.post(srv.url + "/generate", data=SEED_WARMUP, headers={"Content-Type": "application/json"},
                      timeout=30)
    assert r.status_code == 401 and srv.manager.load_count == 0
    # The page itself asks for the login (Gradio's auth), and its API refuses anonymous calls.
    assert requests.get(srv.url + "/config", timeout=10).status_code == 401
    login = requests.Session()
    assert login.post(srv.url + "/login", data={"username": "me", "password": "secret"}, timeout=10).ok
    assert login.get(srv.url + "/config", timeout=10).status_code == 200


def test_pickle_weights_folder_is_refused_with_a_message(start_server, settings, model_copy):
    import dataclasses

    vae = model_copy / "vae" / "diffusion_pytorch_model.safetensors"
    vae.rename(vae.with_suffix(".bin"))
    srv = start_server(dataclasses.replace(settings, model=str(model_copy)))
    r = post(srv, "/generate", SEED_WARMUP)
    assert r.status_code == 503 and "pickle" in r.json()["error"]["message"]
    assert (model_copy / "vae" / "diffusion_pytorch_model.bin").exists()      # nothing deleted
    assert requests.get(srv.url + "/health", timeout=10).json()["status"] == "error"


@pytest.mark.inprocess
def test_a_generation_that_fails_is_a_json_500_and_the_server_keeps_serving(server, monkeypatch):
    break_the_pipeline(server.manager, monkeypatch)
    r = post(server, "/generate", {"prompt": "a fox", "width": 256, "height": 256, "num_inference_steps": 1})
    assert r.status_code == 500 and r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == "generation_failed" and "RuntimeError" in err["message"] and "illegal memory" in err["message"]
    assert err["hint"]
    monkeypatch.undo()
    r = post(server, "/generate", {"prompt": "a fox", "width": 256, "height": 256, "num_inference_steps": 1})
    assert r.status_code == 200 and r.json()["images"]


@pytest.mark.parametrize("guidance", [0.1, 0.5, 1.0, 1e-300])
def test_generate_accepts_guidance_between_0_and_1(server, guidance):
    r = post(server, "/generate", {"prompt": "a fox", "width": 256, "height": 256, "num_inference_steps": 1,
                                   "guidance_scale": guidance, "seed": 2})
    assert r.status_code == 200, r.text
    assert r.json()["guidance_scale"] == guidance
