"""Faults a user meets: a full disk under the outputs folder, a config file with bad values, a damaged
model_index.json. Each is told in words, in the page and the API alike; nothing crashes, nothing is
overwritten. (The page's status panel for these is shown in a real browser: tests/e2e/test_browser.py.)"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import page_client

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"prompt": "a full disk", "width": 256, "height": 256, "num_inference_steps": 1, "seed": 3}


def test_full_disk_returns_the_image_with_a_warning_and_leaves_no_partial_file(start_server, settings, small_disk):
    out = small_disk / "outputs"
    out.mkdir()
    keep = out / "earlier.png"
    keep.write_bytes(b"an earlier image")
    srv = start_server(dataclasses.replace(settings, outputs_dir=str(out)))
    r = requests.post(srv.url + "/generate", json=SMALL, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["images"]) == 1 and body["files"] == []
    assert "No space left on device" in body["warning"] and "not saved" in body["warning"]
    # The page says the same, and still shows the image.
    gallery, info = page_client(srv.url).predict("a full disk", "", 256, 256, 1, 0.0, 4, 1, [],
                                                           api_name="/generate")
    assert len(gallery) == 1 and "No space left on device" in info
    # No half-written PNG is left behind, and the earlier file is untouched.
    assert sorted(p.relative_to(out) for p in out.rglob("*")
                  if p.is_file() and ".index" not in p.parts) == [Path("earlier.png")]   # the history index aside
    assert keep.read_bytes() == b"an earlier image"
    # Once there is room again, images are saved again.
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_disk)], check=True)
    again = requests.post(srv.url + "/generate", json=dict(SMALL, seed=5), timeout=60).json()
    assert "warning" not in again and len(again["files"]) == 1 and Path(again["files"][0]).stat().st_size > 1000


@pytest.mark.parametrize("toml,fragment", [
    ('port = "seventy"\n', "port from {path}: 'seventy' is not a valid int"),
    ("queue_max = 0\n", "queue_max must be >= 1, got 0 (from {path})"),
    ('colour = "red"\n', "config file {path}: unknown settings ['colour']"),
    ("port = = 1\n", "config file {path} is not valid TOML"),
    ('host = "0.0.0.0"\n', "exposes the app to your network: set --auth user:password too. (from {path})"),
])
def test_config_file_with_a_bad_value_stops_the_start_with_one_clear_line(tmp_path, toml, fragment):
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    done = subprocess.run([sys.executable, "webui.py", "--config", str(config)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: ") and fragment.format(path=config) in done.stderr
    assert "Traceback" not in done.stderr


def damaged_index(model: Path, kind: str) -> str:
    """Damage model_index.json one way; return what the message must say."""
    index = model / "model_index.json"
    if kind == "not json":
        index.write_text('{"_class_name": "ZImagePipeline", ')
        return "model_index.json: unreadable"
    data = json.loads(index.read_text())
    if kind == "other pipeline":
        data["_class_name"] = "StableDiffusionPipeline"
        index.write_text(json.dumps(data))
        return "not a ZImagePipeline"
    data["transformer"] = ["my_custom_code", "Transformer"]
    index.write_text(json.dumps(data))
    return "only diffusers and transformers classes are loaded"


@pytest.mark.parametrize("kind", ["not json", "other pipeline", "custom code"])
def test_damaged_model_index_is_a_clear_error_and_the_server_keeps_serving(start_server, settings, model_copy,
                                                                          kind):
    says = damaged_index(model_copy, kind)
    srv = start_server(dataclasses.replace(settings, model=str(model_copy)))
    r = requests.post(srv.url + "/generate", json=SMALL, timeout=60)
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "model_load_failed" and says in err["message"] and err["hint"]
    health = requests.get(srv.url + "/health", timeout=10).json()
    assert health["status"] == "error" and says in health["message"] and health["hint"]
    # The page's own call gets the same words (the status panel is checked in the browser test).
    with pytest.raises(Exception, match=says.split(":")[0]):
        page_client(srv.url).predict("x", "", 256, 256, 1, 0.0, 1, 1, [], api_name="/generate")
    assert srv.manager.load_count == 0

