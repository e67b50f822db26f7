"""The Edit tab's image editor through the Gradio guard: exactly its input takes uploads and
blobs, each checked as an upload; anything else it names is refused naming the field."""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import requests
from PIL import Image
from page_events import API, event_data, page_facts, read_call_stream
from test_security import file_data
from test_uploads import bomb_png, upload

CAP = 300_000


@pytest.fixture
def srv(start_server, settings):
    return start_server(dataclasses.replace(settings, max_upload_bytes=CAP))


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def editor_id(srv) -> int:
    facts = page_facts(srv.url)
    dep = next(d for d in facts["deps"] if d.get("api_name") == "edit")
    return dep["inputs"][0]


def edit_data(srv, value, mode="Inpaint (draw the mask)") -> list:
    """The edit event's values (event_data: the page's defaults for every input not named here)."""
    return event_data(page_facts(srv.url), "edit", value=value, mode_label=mode, prompt="a red square", negative="",
                      strength=1.0, width=1024, height=1024, steps=2, seed=5)


def blob(srv, data: bytes, component: int | None = None, kind="background") -> requests.Response:
    return requests.post(srv.url + API + "/component_server", files={"file": ("blob.png", data, "image/png")},
                         data={"id": "abc123", "type": kind, "index": "null", "fn_name": "accept_blobs",
                               "component_id": str(editor_id(srv) if component is None else component),
                               "session_hash": "s1"}, timeout=30)


def test_the_editors_blobs_are_checked_as_uploads(srv):
    good = png(Image.new("RGBA", (128, 128), (10, 20, 30, 255)))
    assert blob(srv, good).status_code == 200
    r = blob(srv, b"GIF89a" + good[6:])
    assert r.status_code == 415 and "file" in r.text
    r = blob(srv, bomb_png())
    assert r.status_code == 422 and "pixels" in r.text
    # named as the page names the picture, the field kept for API callers
    assert r.json()["error"]["message"].startswith("The Edit image has") and r.json()["error"]["field"] == "file"
    r = blob(srv, good, component=editor_id(srv) + 1000)
    assert r.status_code == 422 and "component_id" in r.text
    r = blob(srv, good, kind="script")
    assert r.status_code == 422 and "type" in r.text


def test_the_edit_event_takes_an_uploaded_image_and_mask_and_nothing_else(srv):
    image = Image.new("RGB", (256, 256), (200, 80, 40))
    layer = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), (96, 96, 160, 160))
    bg, mask = upload(srv, "in.png", png(image)), upload(srv, "layer.png", png(layer))
    value = {"background": file_data(bg), "layers": [file_data(mask)], "composite": file_data(bg)}
    r = requests.post(srv.url + API + "/call/edit", json={"data": edit_data(srv, value)}, timeout=30)
    assert r.status_code == 200, r.text
    kind, outputs = read_call_stream(srv.url, "/call/edit", r.json()["event_id"])
    assert kind == "complete", outputs
    files = sorted(p for p in __import__("pathlib").Path(srv.settings.outputs_dir).rglob("*.png"))
    out = np.asarray(Image.open(files[-1]).convert("RGB"), int)
    assert np.abs(out - np.asarray(image, int))[:64].max() <= 1       # far from the painted square
    assert np.abs(out - np.asarray(image, int))[104:152, 104:152].mean() > 5    # the painted square changed
    for bad, field in ((file_data("/etc/passwd"), "data[0].background.path"),
                       ({"background": file_data("/etc/passwd"), "layers": []}, "data[0].background.path"),
                       ({"script": "x"}, "data[0]")):
        payload = bad if "meta" not in bad else {"background": bad, "layers": [], "composite": None}
        r = requests.post(srv.url + API + "/call/edit", json={"data": edit_data(srv, payload)}, timeout=30)
        assert r.status_code == 422 and r.json()["error"]["field"].startswith(field), r.text
    # a hostile image is refused when it is uploaded, before any event can name it
    r = requests.post(srv.url + API + "/upload", files={"files": ("bomb.png", bomb_png())}, timeout=30)
    assert r.status_code == 422 and "pixels" in r.text


def test_an_editor_id_of_unicode_or_5000_digits_is_refused_naming_it(srv):
    """"²".isdigit() is true and int("²") raises, as int() does past 4,300 digits: both were 500s."""
    good = png(Image.new("RGBA", (64, 64), (10, 20, 30, 255)))
    for component in ("²", "٣", "9" * 5000):
        r = blob(srv, good, component=component)
        assert r.status_code == 422 and "component_id" in r.text, (component[:5], r.status_code, r.text[:200])
    assert blob(srv, good).status_code == 200
