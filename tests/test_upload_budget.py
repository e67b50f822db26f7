"""What one request may leave on the server (issue 36): the image editor's accept_blobs `index`, the
bytes of unread uploads per client and in total, and how long an upload or editor image no event
takes is kept. Through the real server over HTTP."""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
import requests
from PIL import Image
from page_events import API, read_call_stream
from test_security import file_data
from test_uploads import png, png_info, upload

from zimage.web.server import mounted_gradio_app

from conftest import wait_for


def small_png(color=(10, 20, 30, 255)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (64, 64), color).save(buf, format="PNG")
    return buf.getvalue()


def noisy_png(seed: int) -> bytes:
    """A PNG of ~120 KB (noise does not compress), each seed its own bytes."""
    import numpy as np

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def blocks_of(srv):
    return mounted_gradio_app(srv.app).get_blocks()


def the_editor(srv):
    blocks = blocks_of(srv)
    fn = next(fn for fn in blocks.fns.values() if fn.api_name == "edit")
    return fn.inputs[0]


def accept_blobs(srv, fields: dict, data: bytes | None = None) -> requests.Response:
    form = {"id": "blob1", "type": "layer", "index": "0", "fn_name": "accept_blobs",
            "component_id": str(the_editor(srv)._id), "session_hash": "s1"}
    form.update(fields)
    form = {k: v for k, v in form.items() if v is not None}
    return requests.post(srv.url + API + "/component_server", timeout=30, data=form,
                         files={"file": ("blob.png", data or small_png(), "image/png")})


@pytest.mark.parametrize("fields", [
    {"index": "100000000"},                  # the report's: 762 MB held by a 900-byte request
    {"index": "1"},                          # our editor has one layer
    {"index": "-1"}, {"index": "abc"}, {"index": "0.5"}, {"index": "１"}, {"index": ""}, {"index": None},
    {"type": "background", "index": "5"},
])
def test_an_editor_index_it_cannot_have_is_refused_and_nothing_is_kept(server, fields):
    editor = the_editor(server)
    r = accept_blobs(server, fields)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "index"
    assert editor.blob_storage == {}
    # the editor's real calls still work: its one layer, and the background by "null"
    assert accept_blobs(server, {"index": "0"}).status_code == 200
    assert accept_blobs(server, {"type": "background", "index": "null"}).status_code == 200
    assert len(editor.blob_storage["blob1"].layers) == 1


def test_an_editor_image_no_event_takes_is_dropped(start_server, settings):
    srv = start_server(dataclasses.replace(settings, upload_unread_keep_s=1))
    editor = the_editor(srv)
    assert accept_blobs(srv, {"id": "left"}).status_code == 200
    assert "left" in editor.blob_storage
    wait_for(lambda: "left" not in editor.blob_storage, 20, message="the unread editor image to be dropped")


def test_uploads_past_a_clients_budget_get_a_429_and_space_comes_back_as_they_are_read(start_server, settings):
    one = len(noisy_png(0))
    srv = start_server(dataclasses.replace(settings, upload_client_bytes=int(3.5 * one),
                                           upload_total_bytes=10 * one))
    paths = [upload(srv, f"{i}.png", noisy_png(i)) for i in range(3)]
    r = requests.post(srv.url + API + "/upload", files={"files": ("4.png", noisy_png(4))}, timeout=30)
    assert r.status_code == 429, r.text
    assert "Too many uploads" in r.json()["error"]["message"] and int(r.headers["retry-after"]) >= 1
    # reading one (png_info deletes it) frees its room
    r = png_info(srv, file_data(paths[0]))
    assert read_call_stream(srv.url, "/call/png_info", r.json()["event_id"])[0] == "complete"
    upload(srv, "5.png", noisy_png(5))


def test_uploads_past_the_total_budget_get_a_429(start_server, settings):
    one = len(noisy_png(0))
    srv = start_server(dataclasses.replace(settings, upload_client_bytes=10 * one,
                                           upload_total_bytes=int(2.5 * one)))
    upload(srv, "1.png", noisy_png(1))
    upload(srv, "2.png", noisy_png(2))
    r = requests.post(srv.url + API + "/upload", files={"files": ("3.png", noisy_png(3))}, timeout=30)
    assert r.status_code == 429 and "all clients together" in r.json()["error"]["message"]


def test_an_upload_no_event_reads_is_deleted_soon(start_server, settings):
    srv = start_server(dataclasses.replace(settings, upload_unread_keep_s=1))
    left = Path(upload(srv, "left.png", png()))
    wait_for(lambda: not left.exists(), 20, message="the unread upload to be deleted")
    taken = Path(upload(srv, "taken.png", png()))     # read at once: the event deletes it, not the sweep
    r = png_info(srv, file_data(str(taken)))
    assert read_call_stream(srv.url, "/call/png_info", r.json()["event_id"])[0] == "complete"


def test_the_budget_settings_are_checked():
    from zimage.config import ConfigError, Settings

    for name in ("upload_unread_keep_s", "upload_client_bytes", "upload_total_bytes"):
        with pytest.raises(ConfigError, match=name):
            Settings(**{name: 0}).validate()
    assert Settings().upload_unread_keep_s <= 3600 and Settings().upload_keep_s <= 3600


@pytest.mark.parametrize("name", ["a.txt", "noext", "a.exe", ".png"])
def test_a_png_under_a_name_that_is_no_image_is_refused_and_never_served(server, name):
    path = upload(server, name, png())
    r = png_info(server, file_data(path))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "data[0]" and ".png" in r.json()["error"]["message"]
    assert not Path(path).exists()
    assert requests.get(server.url + API + f"/file={path}", timeout=10).status_code == 404


def test_an_upload_gradio_listed_for_a_component_is_still_not_served(server):
    """Gradio lists an upload among the copies of the component its event named, even when that event
    refused it: the listing must not make it servable (nor nameable by another event)."""
    path = upload(server, "a.png", png())
    blocks = blocks_of(server)
    fn = next(fn for fn in blocks.fns.values() if fn.api_name == "png_info")
    fn.inputs[0].temp_files.add(path)           # what Gradio's preprocess does before gr.File refuses
    assert requests.get(server.url + API + f"/file={path}", timeout=10).status_code == 404
