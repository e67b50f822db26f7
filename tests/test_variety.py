"""Variety (zimage/variety.py, engine/variety.py): seeded noise on the prompt embeddings' first steps."""
import base64
import io

import httpx
import pytest

from zimage.errors import InvalidRequest
from zimage.infotext import infotext, parse_infotext
from zimage.request import GenerationRequest
from zimage.variety import noisy_steps

OK = {"prompt": "a red fox in snow", "width": 256, "height": 256, "num_inference_steps": 4, "seed": 11}


@pytest.fixture(scope="module")
def tiny_pipe(tiny_model_dir):
    import torch

    from zimage.engine.loader import load_pipeline

    return load_pipeline(tiny_model_dir, torch.float32, "cpu", None, True)


@pytest.mark.parametrize("value", [-0.01, 1.01, float("nan"), float("inf"), "0.3", True, [0.3], {}])
def test_a_bad_variety_is_refused_naming_the_field(value):
    with pytest.raises(InvalidRequest) as e:
        GenerationRequest.from_mapping(dict(OK, variety=value))
    assert e.value.field == "variety"


@pytest.mark.parametrize("value", [0, 0.0, 1, 1.0, 0.3, None])
def test_the_range_edges_are_accepted(value):
    assert GenerationRequest.from_mapping(dict(OK, variety=value)).variety == float(value or 0)


def test_variety_is_in_the_infotext_and_read_back():
    req = GenerationRequest.from_mapping(dict(OK, variety=0.35))
    text = infotext(req, 11)
    assert ", Variety: 0.35" in text.splitlines()[-1]
    assert parse_infotext(text)["variety"] == 0.35
    off = infotext(GenerationRequest.from_mapping(OK), 11)
    assert "Variety" not in off and "variety" not in parse_infotext(off)


@pytest.mark.parametrize("raw", ["abc", "2", "-1", "nan", "1" * 40])
def test_a_foreign_variety_value_is_left_out(raw):
    assert "variety" not in parse_infotext(f"p\nSteps: 4, Seed: 1, Size: 256x256, Variety: {raw}")


def test_noisy_steps_are_the_first_quarter_at_least_one():
    assert [noisy_steps(n) for n in (1, 2, 4, 8, 9, 50)] == [1, 1, 1, 2, 2, 12]


def test_requests_of_different_variety_never_share_a_call():
    from zimage.request import batch_key

    a, b = (GenerationRequest.from_mapping(dict(OK, variety=v)) for v in (0.0, 0.3))
    assert batch_key(a) != batch_key(b)


def _pixels(images):
    return [im.tobytes() for im in images]


def test_variety_changes_the_picture_reproducibly_and_restores_clean_embeddings(tiny_pipe):
    """Off: the picture of before. On: another picture, the same each time for the same seed; the
    clean embeddings go back in at the switch step (the pipeline receives them from the callback)."""
    from zimage.engine.generate import run_pipeline

    seen = []
    real = tiny_pipe.transformer.forward

    def spy(x, t, cap_feats, *a, **kw):
        seen.append([c.detach().clone() for c in cap_feats])
        return real(x, t, cap_feats, *a, **kw)

    off = GenerationRequest.from_mapping(OK)
    on = GenerationRequest.from_mapping(dict(OK, variety=0.5))
    base = _pixels(run_pipeline(tiny_pipe, off, lambda: False))
    tiny_pipe.transformer.forward = spy
    try:
        first = _pixels(run_pipeline(tiny_pipe, on, lambda: False))
    finally:
        tiny_pipe.transformer.forward = real
    again = _pixels(run_pipeline(tiny_pipe, on, lambda: False))
    assert first == again and first != base
    switch = noisy_steps(on.num_inference_steps)
    assert len(seen) == on.num_inference_steps
    clean = tiny_pipe.encode_prompt([on.prompt], do_classifier_free_guidance=False)[0][0]
    assert not seen[0][0].equal(clean)                               # noisy first steps
    assert all(s[0].equal(clean) for s in seen[switch:])             # clean afterwards
    assert all(not s[0].equal(clean) for s in seen[:switch])


def test_each_image_of_a_batch_is_its_seed_alone(tiny_pipe):
    """Image k of a 2-image request is the picture its seed gives in a 1-image request (up to the
    last-level rounding batched convolutions make; a different seed's noise would be far off)."""
    import numpy as np

    from zimage.engine.generate import run_pipeline

    def arrays(req):
        return [np.asarray(im, dtype=np.float64) for im in run_pipeline(tiny_pipe, req, lambda: False)]

    pair = arrays(GenerationRequest.from_mapping(dict(OK, variety=0.4, num_images=2)))
    alone = arrays(GenerationRequest.from_mapping(dict(OK, variety=0.4, seed=12)))[0]
    clean = arrays(GenerationRequest.from_mapping(dict(OK, seed=12)))[0]
    assert np.abs(pair[1] - alone).mean() < 0.05
    assert np.abs(alone - clean).mean() > 0.5 and np.abs(pair[0] - pair[1]).mean() > 5


def test_generate_over_http_records_variety_in_the_png(server):
    from PIL import Image

    r = httpx.post(f"{server.url}/generate", json=dict(OK, variety=0.25), timeout=120)
    assert r.status_code == 200, r.text
    png = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    assert parse_infotext(png.info["parameters"])["variety"] == 0.25
    bad = httpx.post(f"{server.url}/generate", json=dict(OK, variety="lots"), timeout=30)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "variety"


def test_a1111_subseed_strength_maps_to_variety(server):
    body = {"prompt": "a fox", "width": 256, "height": 256, "steps": 4, "seed": 3, "subseed_strength": 0.2}
    r = httpx.post(f"{server.url}/sdapi/v1/txt2img", json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert ", Variety: 0.2" in __import__("json").loads(r.json()["info"])["infotexts"][0]
    bad = httpx.post(f"{server.url}/sdapi/v1/txt2img", json=dict(body, subseed_strength=2), timeout=30)
    assert bad.status_code == 422 and "subseed_strength" in bad.json()["detail"]
