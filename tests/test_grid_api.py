"""POST /grid (the X/Y/Z plot) on the real server over HTTP, with the tiny model."""
import base64
import dataclasses
import io
import threading

import pytest
import requests
from PIL import Image

from conftest import wait_for
from zimage.explore.grid_image import layout
from zimage.infotext import parse_infotext

BASE = {"prompt": "a fox", "width": 256, "height": 256, "num_inference_steps": 2}


def grid(server, body, **kw):
    return requests.post(server.url + "/grid", json=body, timeout=120, **kw)


def test_a_2x2_grid_saves_four_cells_with_their_own_seeds_and_a_labelled_picture(server):
    r = grid(server, {"base": BASE, "x": {"field": "seed", "values": [11, 12]},
                      "y": {"field": "steps", "values": "1-2"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stopped"] is False and body["cells_total"] == 4 and len(body["cells"]) == 4
    seen = set()
    for cell in body["cells"]:
        with Image.open(cell["file"]) as im:
            info = parse_infotext(im.info["parameters"])
        assert info["seed"] == cell["values"]["x"] == cell["seed"]
        assert info["steps"] == cell["values"]["y"] == cell["num_inference_steps"]
        seen.add((info["seed"], info["steps"]))
    assert seen == {(11, 1), (12, 1), (11, 2), (12, 2)}
    picture = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    lay = layout((256, 256), (2, 2, 1), (["Seed: 11", "Seed: 12"], ["Steps: 1", "Steps: 2"], []))
    assert lay.left > 0 and lay.top > 0
    assert picture.size == (2 * 256 + lay.left, 2 * 256 + lay.top) == lay.size
    assert "X/Y/Z plot" in picture.info["parameters"]
    # the cell at (1, 0) is the seed-12, 1-step image, pasted where the layout says
    cell = next(c for c in body["cells"] if c["x"] == 1 and c["y"] == 0)
    x, y = lay.cell_origin(1, 0, 0)
    with Image.open(cell["file"]) as im:
        assert picture.crop((x, y, x + 256, y + 256)).tobytes() == im.convert("RGB").tobytes()
    assert requests.get(server.url + body["url"], timeout=10).status_code == 200


def test_bad_axis_values_and_a_grid_over_the_limit_are_422_naming_them(start_server, settings):
    srv = start_server(dataclasses.replace(settings, grid_max_cells=4))
    cases = [({"base": BASE, "x": {"field": "steps", "values": [2, 80]}}, "x.values", "80"),
             ({"base": BASE, "x": {"field": "seed", "values": "1-3"}, "y": {"field": "seed", "values": "1-2"}},
              "grid", "6 cells"),
             ({"base": BASE, "x": {"field": "colour", "values": [1]}}, "x.field", "colour"),
             ({"base": BASE, "x": {"field": "seed", "values": "0-4294967295"}}, "x.values", "0-4294967295"),
             ({"base": BASE, "x": {"field": "size", "values": ["256x256", "250x256"]}}, "x.values", "250x256"),
             ({"base": BASE, "x": {"field": "prompt_sr", "values": "dog, cat"}}, "x.values", "dog"),
             ({"base": {**BASE, "width": 100}, "x": {"field": "seed", "values": [1]}}, "base.width", "100"),
             ({"base": BASE, "x": {"field": "variety", "values": [0, 1.5]}}, "x.values", "1.5")]
    for body, field, named in cases:
        r = grid(srv, body)
        assert r.status_code == 422, (body, r.text)
        error = r.json()["error"]
        assert error["field"] == field and named in error["message"], error
    assert srv.manager.load_count == 0          # nothing ran, nothing loaded
    assert requests.get(srv.url + "/health", timeout=10).ok


@pytest.mark.inprocess         # it holds the pipeline mid-cell (manager._pipe): the manager in this process
def test_stop_mid_grid_keeps_the_finished_cells_and_their_partial_grid(server):
    manager = server.manager
    manager.ensure_ready(60)
    hold, entered = threading.Event(), threading.Event()

    def hook(*_):
        job = manager.current_generation()
        if job is not None and job.request.seed == 22:      # the second cell
            entered.set()
            assert hold.wait(60)
    handle = manager._pipe.transformer.register_forward_pre_hook(hook)
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(r=grid(server, {
        "base": BASE, "x": {"field": "seed", "values": [21, 22, 23, 24]}})))
    thread.start()
    try:
        assert entered.wait(60)
        stop = requests.post(server.url + "/sdapi/v1/interrupt", timeout=10)
        assert stop.status_code == 200
    finally:
        hold.set()
    thread.join(120)
    handle.remove()
    r = answer["r"]
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stopped"] is True and body["cells_total"] == 4
    assert [c["seed"] for c in body["cells"]] == [21]
    with Image.open(body["cells"][0]["file"]) as im:
        assert parse_infotext(im.info["parameters"])["seed"] == 21
    picture = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    assert picture.size[0] == 4 * 256 and picture.size[1] > 256     # the grid's shape kept, 3 cells blank
    assert picture.getpixel((3 * 256 + 128, picture.size[1] - 128)) == (255, 255, 255)
    wait_for(lambda: manager.current_generation() is None, 30, message="the queue to empty")
    assert requests.post(server.url + "/generate", json={**BASE, "seed": 5}, timeout=60).status_code == 200


def test_a_variety_axis_gives_each_cell_its_variety():
    from zimage.explore.axes import apply, parse_axis

    axis = parse_axis("x", {"field": "variety", "values": "0, 0.5"}, 64)
    bodies = [apply({"prompt": "a fox", "seed": 3}, axis, v) for v in axis.values]
    assert [b["variety"] for b in bodies] == [0.0, 0.5] and all(b["seed"] == 3 for b in bodies)
