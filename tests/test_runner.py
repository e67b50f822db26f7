"""engine/runner + generate.run_per_image: one pipeline call per image (A1111's batch count), so a
Stop keeps every image finished before it (saved, returned, listed) and the progress names the
image really being made."""
from __future__ import annotations

import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from PIL import Image

from tests.conftest import wait_for
from zimage.web.page.ui_preview import job_progress

BODY = {"prompt": "four foxes", "width": 256, "height": 256, "num_inference_steps": 3, "seed": 100,
        "num_images": 4}


def test_stop_during_the_second_image_keeps_the_first_saved_returned_and_listed(server):
    m = server.manager
    m.ensure_ready(60)
    stopped, texts = threading.Event(), []

    def at_each_step(*_):
        job = m.current_generation()
        texts.append(job_progress(job, m.status())[1].split(" · about")[0])
        if job.images_done == 1:          # the second image is being made: held until Stop was sent
            assert stopped.wait(30)
    m._pipe.transformer.register_forward_pre_hook(at_each_step)

    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(requests.post, server.url + "/generate", json=BODY, timeout=120)
        wait_for(lambda: (job := m.current_generation()) is not None and job.images_done == 1
                 and job.phase == "generating", 60, message="the first image to be finished")
        assert requests.post(server.url + "/sdapi/v1/interrupt", timeout=10).status_code == 200
        stopped.set()
        r = answer.result(60)

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seeds"] == [100] and len(body["images"]) == 1           # the finished image, returned
    assert body["warning"] == "Stopped after 1 of 4 images; the finished ones were kept."
    saved = [Path(f) for f in body["files"]]
    outputs = Path(server.settings.outputs_dir).resolve()
    assert len(saved) == 1 and saved[0].is_file() and saved[0].resolve().is_relative_to(outputs)   # saved
    assert list(outputs.rglob("*.png")) == [saved[0].resolve()]
    assert Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).size == (256, 256)
    assert "Seed: 100," in Image.open(saved[0]).text["parameters"]
    listed = m._store.history.query().entries                            # the History tab's list
    assert [(e.seed, e.prompt) for e in listed] == [(100, "four foxes")]
    # what the progress said is what ran: three steps of image 1, then image 2 until the Stop
    assert texts == ["Image 1 of 4 · Step 0 of 3", "Image 1 of 4 · Step 1 of 3", "Image 1 of 4 · Step 2 of 3",
                     "Image 2 of 4 · Step 0 of 3"]


def test_a_stop_before_any_image_is_finished_keeps_nothing_and_says_so(server):
    m = server.manager
    m.ensure_ready(60)
    release = threading.Event()

    def hold(*_):
        assert release.wait(30)
    m._pipe.transformer.register_forward_pre_hook(hold)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(requests.post, server.url + "/generate", json=BODY, timeout=120)
        wait_for(lambda: (job := m.current_generation()) is not None and job.phase == "generating", 60,
                 message="the first image to start")
        requests.post(server.url + "/sdapi/v1/interrupt", timeout=10)
        release.set()
        r = answer.result(60)
    assert r.status_code == 409 and r.json()["error"]["code"] == "cancelled", r.text
    assert not list(Path(server.settings.outputs_dir).rglob("*.png"))
    assert m._store.history.query().entries == []
