"""store/lora_names.py and the lookup's refusals: the names a tag can write (aliases for files whose
own names it cannot hold, end to end), and a name that cannot name a file refused as a 4xx on every
route that takes LoRAs, with no server path in the message (issue 36)."""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import os
import shutil

import numpy as np
import pytest
import requests
from PIL import Image

from zimage.config import Settings
from zimage.errors import LoraNameRefused
from zimage.store import loras
from zimage.store.lora_names import aliases, taggable
from zimage.testing.tiny_lora import make_tiny_loras
from conftest import page_client

LONG = "a" * 300                                    # over NAME_MAX (255 bytes): ENAMETOOLONG on any call


@pytest.fixture(scope="module")
def folder(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("lora-names")
    paths = make_tiny_loras(root / "made", tiny_model_dir)
    lora_dir = root / "loras"
    lora_dir.mkdir()
    shutil.copy(paths["comfy"], lora_dir / "style:v2.safetensors")      # ':' would start the strength
    shutil.copy(paths["comfy"], lora_dir / "style_v2.safetensors")      # the alias's first choice, taken
    shutil.copy(paths["diffusers"], lora_dir / "ink>wash.safetensors")  # '>' would end the tag
    return lora_dir


@pytest.fixture
def settings(settings, folder) -> Settings:
    """conftest's (the model in the test's process), on this folder of LoRAs."""
    return dataclasses.replace(settings, lora_dir=str(folder))


# ---- names --------------------------------------------------------------------------------------
def test_a_taggable_name_is_itself_and_the_others_get_a_unique_taggable_alias():
    names = ["a:b", "a_b", "x>y", "dir:1/f", " sp ", "n.safetensors", "p.PT", "w\\v", "ok", "tab\there"]
    got = aliases(names)
    assert got == {"a:b": "a_b_2", "a_b": "a_b", "x>y": "x_y", "dir:1/f": "dir_1/f", " sp ": "sp",
                   "n.safetensors": "n_safetensors", "p.PT": "p_PT", "w\\v": "w_v", "ok": "ok", "tab\there": "tab_here"}
    assert all(taggable(a) == a for a in got.values()) and len(set(got.values())) == len(got)


def test_the_listing_offers_a_file_whose_name_a_tag_cannot_hold_under_its_alias(folder):
    listed = {f.name: f for f in loras.scan(folder)}
    assert set(listed) == {"style_v2", "style_v2_2", "ink_wash"}
    assert listed["style_v2_2"].file_name == "style:v2.safetensors" and listed["style_v2_2"].usable
    assert listed["ink_wash"].to_dict()["file_name"] == "ink>wash.safetensors"
    assert loras.resolve(folder, "style_v2_2") == (folder / "style:v2.safetensors").resolve()
    assert loras.resolve(folder, "ink_wash.safetensors") == (folder / "ink>wash.safetensors").resolve()
    assert loras.resolve(folder, "style_v2") == (folder / "style_v2.safetensors").resolve()


@pytest.mark.parametrize("name, words", [(LONG, "too long"), ("d/" * 2100 + "x", "too long"),
                                         ("bad\ud800name", "not valid text")])
def test_a_name_that_cannot_name_a_file_is_refused_before_the_filesystem_sees_it(folder, name, words):
    with pytest.raises(LoraNameRefused) as err:
        loras.resolve(folder, name)
    assert err.value.http_status == 400 and words in err.value.message
    assert str(folder) not in json.dumps(err.value.to_dict()) and len(err.value.message) < 300


def test_a_lookup_the_filesystem_refuses_is_refused_without_the_server_path(tmp_path):
    os.symlink("loop.safetensors", tmp_path / "loop.safetensors")      # a link to itself
    with pytest.raises(LoraNameRefused) as err:                        # was RuntimeError naming the path
        loras.resolve(tmp_path, "loop")
    assert str(tmp_path) not in json.dumps(err.value.to_dict())
    assert [f.usable for f in loras.scan(tmp_path)] in ([], [False])    # the listing keeps going


# ---- every route that takes LoRAs ---------------------------------------------------------------
def _png_b64() -> str:
    out = io.BytesIO()
    Image.new("RGB", (256, 256), (90, 120, 200)).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def _json(path: str, body: dict):
    return lambda url: requests.post(url + path, json=body, timeout=300)


def _routes(prompt: str) -> dict:
    return {
        "/generate": _json("/generate", {"prompt": prompt, "width": 256, "height": 256, "num_inference_steps": 2}),
        "/sdapi/v1/txt2img": _json("/sdapi/v1/txt2img", {"prompt": prompt, "width": 256, "height": 256, "steps": 2}),
        "/sdapi/v1/img2img": _json("/sdapi/v1/img2img", {"prompt": prompt, "init_images": [_png_b64()], "steps": 2,
                                                          "width": 256, "height": 256, "denoising_strength": 0.5}),
        "/v1/images/generations": _json("/v1/images/generations", {"prompt": prompt, "size": "256x256",
                                                                    "response_format": "b64_json"}),
        "/v1/images/edits": lambda url: requests.post(
            url + "/v1/images/edits", data={"prompt": prompt, "size": "256x256", "response_format": "b64_json"},
            files={"image": ("in.png", base64.b64decode(_png_b64()), "image/png")}, timeout=300),
    }


@pytest.mark.parametrize("route", list(_routes("")))
def test_a_lora_name_too_long_is_a_4xx_without_a_server_path(server, folder, route):
    r = _routes(f"a cat <lora:{LONG}:1>")[route](server.url)
    assert 400 <= r.status_code < 500 and "too long" in r.text, (r.status_code, r.text[:500])
    assert str(folder) not in r.text and server.settings.outputs_dir not in r.text
    ok = _routes("a cat")[route](server.url)                    # the app keeps serving
    assert ok.status_code == 200, ok.text[:500]


def test_the_page_says_a_name_is_too_long_without_a_server_path(server, folder):
    client = page_client(server.url)
    with pytest.raises(Exception) as err:
        client.predict(f"a cat <lora:{LONG}:1>", "", 256, 256, 2, 0.0, 7, 1, [], api_name="/generate")
    assert "too long" in str(err.value) and str(folder) not in str(err.value)


def test_mcp_says_a_name_is_too_long_without_a_server_path(start_server, settings, folder):
    pytest.importorskip("mcp", reason="the mcp client is not installed")
    import httpx
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    srv = start_server(dataclasses.replace(settings, mcp=True))

    async def call():
        async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=300)) as http:
            async with streamable_http_client(srv.url + "/gradio_api/mcp/", http_client=http) as (read, write, _):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    return await session.call_tool("generate", {"prompt": f"a cat <lora:{LONG}:1>", "width": 256,
                                                                "height": 256, "num_inference_steps": 2})

    result = asyncio.run(call())
    text = "\n".join(c.text for c in result.content if c.type == "text")
    assert result.isError and "too long" in text and str(folder) not in text, text


def test_a_listed_alias_works_in_a_generation_request(server, folder):
    listed = {e["name"]: e for e in requests.get(server.url + "/sdapi/v1/loras", timeout=60).json()}
    alias = next(n for n, e in listed.items() if e["file_name"] == "style:v2.safetensors")
    assert alias == "style_v2_2" and listed[alias]["usable"]
    body = {"width": 256, "height": 256, "num_inference_steps": 2, "seed": 3}
    base = requests.post(server.url + "/generate", json={"prompt": "a cat", **body}, timeout=300).json()
    r = requests.post(server.url + "/generate", json={"prompt": f"a cat <lora:{alias}:1>", **body}, timeout=300)
    assert r.status_code == 200, r.text
    assert f'Lora hashes: "{alias}: {listed[alias]["autov3"]}"' in r.json()["info"]

    def pixels(b64_png: str) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64_png))).convert("RGB"), dtype=np.int16)

    assert np.abs(pixels(r.json()["images"][0]) - pixels(base["images"][0])).max() > 0


def test_the_page_is_built_and_served_without_reading_a_lora_file(start_server, settings, monkeypatch):
    """Issue 36: the page read every LoRA's metadata while it was built, before the server listened
    (one file with 200,000 tags: 226 s without a page). Now the folder is listed when a page opens."""
    import threading

    calls, release = [], threading.Event()
    real_read = loras.read_header

    def held(path):
        calls.append(path)
        release.wait(5)
        return real_read(path)

    monkeypatch.setattr(loras, "read_header", held)
    try:
        srv = start_server(settings)
        assert calls == [], "the page build read a LoRA header"
        assert requests.get(srv.url + "/", timeout=30).status_code == 200
    finally:
        release.set()
