"""Wildcards and {a|b} choices: the picks (explore.wildcards) and the routes that take them, on
the real server over HTTP; batch count on /generate."""
import base64
import dataclasses
import io
import json

import pytest
import requests
from PIL import Image

from zimage.errors import InvalidRequest
from zimage.explore.wildcards import Wildcards, expand
from zimage.infotext import parse_infotext

BASE = {"width": 256, "height": 256, "num_inference_steps": 1}


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "wildcards"
    (root / "style").mkdir(parents=True)
    (root / "animal.txt").write_text("fox\n# a comment\ncat\nowl\nheron\n\n")
    (root / "style" / "ink.txt").write_text("ink wash\nsumi-e\n水墨\n")
    return root


def test_picks_follow_the_seed_and_nest(folder):
    w = Wildcards(folder)
    text = "a {red|{pale|deep} blue} __animal__, __style/ink__, {2$$x|y|z}"
    picks = {seed: expand(text, seed, w) for seed in range(40)}
    assert all(expand(text, seed, Wildcards(folder)) == picks[seed] for seed in range(40))     # reproducible
    assert len(set(picks.values())) > 5
    for out in picks.values():
        assert "__" not in out and "{" not in out and "|" not in out
        assert any(a in out for a in ("fox", "cat", "owl", "heron")) and "comment" not in out
    assert {p.split(", ")[-2:][0] + ", " + p.split(", ")[-1] for p in picks.values()} <= {
        f"{a}, {b}" for a in "xyz" for b in "xyz" if a != b}
    assert expand("plain {json} text", 1, w) == "plain {json} text"


@pytest.mark.parametrize("name, why", [("../secret", "leaves"), ("/etc/passwd", "absolute"),
                                       ("style/../../x", "leaves"), ("x" * 200, "at most"), ("nope", "no file")])
def test_bad_or_missing_names_are_refused_naming_them(folder, name, why):
    (folder.parent / "secret.txt").write_text("leaked")
    with pytest.raises(InvalidRequest) as e:
        expand(f"a __{name}__", 1, Wildcards(folder))
    assert e.value.field == "prompt" and why in e.value.message


def test_a_link_out_of_the_folder_and_a_huge_file_are_refused(folder):
    (folder.parent / "outside.txt").write_text("leaked")
    (folder / "link.txt").symlink_to(folder.parent / "outside.txt")
    (folder / "big.txt").write_bytes(b"a\n" * 600_000)
    for name, why in (("link", "leaves the wildcards folder"), ("big", "bytes; at most")):
        with pytest.raises(InvalidRequest, match=why):
            expand(f"__{name}__", 1, Wildcards(folder))


@pytest.fixture
def wild_server(start_server, settings, folder):
    return start_server(dataclasses.replace(settings, wildcards_dir=str(folder)))


def saved_parameters(path) -> dict:
    with Image.open(path) as im:
        return parse_infotext(im.info["parameters"]) | {"raw": im.info["parameters"]}


def test_generate_saves_the_expanded_prompt_and_a_seed_repeats_it(wild_server):
    body = {**BASE, "prompt": "a __animal__ in {snow|rain}", "seed": 77}
    first = requests.post(wild_server.url + "/generate", json=body, timeout=60)
    again = requests.post(wild_server.url + "/generate", json=body, timeout=60)
    assert first.status_code == again.status_code == 200, first.text
    one, two = saved_parameters(first.json()["files"][0]), saved_parameters(again.json()["files"][0])
    assert one["prompt"] == two["prompt"] and "__" not in one["prompt"] and "{" not in one["prompt"]
    assert one["params"]["Wildcard prompt"] == body["prompt"]
    # a random seed: the saved seed makes the same prompt again
    rnd = requests.post(wild_server.url + "/generate", json={**body, "seed": -1}, timeout=60).json()
    saved = saved_parameters(rnd["files"][0])
    again = requests.post(wild_server.url + "/generate", json={**body, "seed": saved["seed"]}, timeout=60).json()
    assert saved_parameters(again["files"][0])["prompt"] == saved["prompt"]


def test_a1111_txt2img_takes_wildcards(wild_server):
    r = requests.post(wild_server.url + "/sdapi/v1/txt2img", json={"prompt": "__style/ink__", "seed": 3,
                                                                  "width": 256, "height": 256, "steps": 1}, timeout=60)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["prompt"] in ("ink wash", "sumi-e", "水墨")
    assert parse_infotext(info["infotexts"][0])["params"]["Wildcard prompt"] == "__style/ink__"
    with Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))) as im:
        assert parse_infotext(im.info["parameters"])["prompt"] == info["prompt"]


@pytest.mark.parametrize("prompt, named", [("a __missing__", "missing"), ("a __../x__", "leaves"),
                                           ("a __/etc/hosts__", "absolute")])
def test_a_missing_or_escaping_wildcard_is_a_422_naming_it(wild_server, prompt, named):
    for path, body in (("/generate", {**BASE, "prompt": prompt}),
                       ("/sdapi/v1/txt2img", {"prompt": prompt, "width": 256, "height": 256})):
        r = requests.post(wild_server.url + path, json=body, timeout=30)
        assert r.status_code == 422, r.text
        assert named in r.text and "prompt" in r.text
    assert requests.get(wild_server.url + "/health", timeout=10).ok


def test_batch_count_3_of_2_images_makes_six_with_seeds_following_on(server):
    r = requests.post(server.url + "/generate", json={**BASE, "prompt": "a fox", "seed": 100, "num_images": 2,
                                                      "batch_count": 3}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seeds"] == list(range(100, 106)) and len(body["files"]) == len(body["images"]) == 6
    assert [saved_parameters(f)["seed"] for f in body["files"]] == list(range(100, 106))
    assert Image.open(io.BytesIO(base64.b64decode(body["images"][5]))).size == (256, 256)
    for bad in (0, 101, "3"):
        r = requests.post(server.url + "/generate", json={**BASE, "prompt": "x", "batch_count": bad}, timeout=30)
        assert r.status_code == 422 and r.json()["error"]["field"] == "batch_count"
