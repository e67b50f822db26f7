"""Hostile input against the real server: hundreds of malformed requests, no server error, still serving."""
from __future__ import annotations

import collections
import json
import random

import requests

GOOD = {"prompt": "a cat", "width": 256, "height": 256, "num_inference_steps": 1, "seed": 1}
NASTY_VALUES = [None, True, False, -1, 0, 1, 7, 255, 257, 4096, -2**63, 2**64, 1e308, -1e308, 1.5, float("nan"),
                "", "512", "ten", "\x00", "\ud800", "a\udfffb", "🐈" * 10, "\u202eRTL", [], [1, 2], {}, {"a": 1},
                "x" * 5000]


def _valid(body: dict) -> bool:
    from zimage.errors import InvalidRequest
    from zimage.request import GenerationRequest

    try:
        GenerationRequest.from_mapping(json.loads(json.dumps(body, allow_nan=True)))
        return True
    except InvalidRequest:
        return False


def cases(rng: random.Random):
    # Broken bodies.
    for body in ["", "{", "}", "null", "[]", "[1,2]", '"string"', "123", "{'prompt': 1}", '{"prompt": "a",}',
                 "\xff\xfe", "{\"prompt\": \"a\"" + "]" * 100, "{" * 10000, "[" * 100_000,
                 '{"prompt": ' + "[" * 50_000]:
        yield body, {"Content-Type": "application/json"}
    # Wrong content types.
    for ctype in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "",
                  "application/jsonx", "text/json"]:
        yield json.dumps(GOOD), {"Content-Type": ctype}
    # Every field with every nasty value, plus missing fields and unknown ones.
    for field in list(GOOD) + ["guidance_scale", "negative_prompt", "num_images", "steps", "__proto__"]:
        for value in NASTY_VALUES:
            body = dict(GOOD)
            body[field] = value
            if _valid(body):
                continue   # a valid request would generate: covered by the API tests
            yield json.dumps(body, allow_nan=True), {"Content-Type": "application/json"}
        body = dict(GOOD)
        body.pop(field, None)
        if field == "prompt":
            yield json.dumps(body), {"Content-Type": "application/json"}
    # Random junk.
    for _ in range(300):
        n = rng.randint(1, 400)
        yield bytes(rng.getrandbits(8) for _ in range(n)), {"Content-Type": "application/json"}
    # Random JSON objects of the right shape with random nasty values.
    for _ in range(100):
        body = {k: rng.choice(NASTY_VALUES) for k in rng.sample(list(GOOD) + ["guidance_scale", "num_images"], 4)}
        if not _valid(body):
            yield json.dumps(body, allow_nan=True), {"Content-Type": "application/json"}
    # Huge prompts: 10 MB body.
    yield json.dumps({"prompt": "x" * 10_000_000}), {"Content-Type": "application/json"}


def test_500_malformed_requests_get_4xx_and_the_server_keeps_serving(server):
    rng = random.Random(1234)
    counts: collections.Counter = collections.Counter()
    with requests.Session() as http:
        for body, headers in cases(rng):
            r = http.post(server.url + "/generate", data=body, headers=headers, timeout=30)
            counts[r.status_code] += 1
            assert r.status_code < 500, (r.status_code, r.text[:300], str(body)[:200])
            assert 400 <= r.status_code < 500, (r.status_code, str(body)[:200])
            assert r.json()["error"]["message"]
    total = sum(counts.values())
    print(f"\nfuzz: {total} requests by status: {dict(sorted(counts.items()))}")
    assert total >= 500
    assert server.manager.load_count == 0                       # nothing bad reached the model
    ok = requests.post(server.url + "/generate", json=GOOD, timeout=60)
    assert ok.status_code == 200 and requests.get(server.url + "/health", timeout=10).json()["status"] == "healthy"


def test_property_any_json_body_gets_an_answer_never_a_server_error(server):
    """Property-based: any JSON value (objects with our field names most of the time) gets 200 or a
    4xx naming the problem; never a 5xx."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                        st.text(max_size=50))
    value = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                                                inner, max_size=3),
                         max_leaves=6)
    fields = st.sampled_from(["prompt", "width", "height", "num_inference_steps", "seed", "guidance_scale",
                              "negative_prompt", "num_images", "extra"])
    bodies = st.one_of(value, st.dictionaries(fields, value, max_size=6),
                       st.fixed_dictionaries({"prompt": st.text(min_size=1, max_size=30),
                                              "width": st.sampled_from([256, 272, 300]),
                                              "height": st.sampled_from([256, 4096, -16]),
                                              "num_inference_steps": st.integers(-2, 2)},
                                             optional={"seed": st.integers(-3, 3)}))
    seen = collections.Counter()

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(bodies)
    def check(body):
        r = requests.post(server.url + "/generate", data=json.dumps(body, allow_nan=True),
                          headers={"Content-Type": "application/json"}, timeout=60)
        seen[r.status_code] += 1
        assert r.status_code == 200 or (400 <= r.status_code < 500 and r.json()["error"]["message"]), r.text[:300]

    check()
    print(f"\nproperty fuzz: {dict(sorted(seen.items()))}")
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


# Issue 36's classes of hostile values, on every JSON route: Unicode digits that pass isdigit(),
# integers past Python's 4,300-digit limit (raw JSON: json.dumps cannot write one), lone surrogates
# in any field and in key names, names over 255 bytes, counts without a bound.
BIG = "9" * 5000
HOSTILE_VALUES = ['"²"', '"٣٢٠"', '"²x³"', '"٢٥٦x٢٥٦"', BIG, "-" + BIG, "1" + "0" * 400, "1e999", '"\\ud800"',
                  '"a\\udfffb"', '["\\ud83d"]', '{"\\udc00": 1}', '"' + "n" * 300 + '"', "1000000", "-1000000"]
ROUTES = {"/generate": ["prompt", "width", "num_inference_steps", "seed", "num_images", "guidance_scale",
                        "negative_prompt", "control"],
          "/sdapi/v1/txt2img": ["prompt", "sampler_name", "batch_size", "n_iter", "steps", "seed", "styles",
                                "cfg_scale", "alwayson_scripts", "override_settings"],
          "/sdapi/v1/img2img": ["prompt", "sampler_name", "batch_size", "n_iter", "denoising_strength", "init_images",
                                "mask", "styles"],
          "/v1/images/generations": ["prompt", "n", "size", "response_format", "user"],
          "/sdapi/v1/png-info": ["image"]}


def _small_png() -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 90, 200)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def hostile_bodies():
    """(route, raw JSON body): each field of each route with each hostile value, the rest small and
    valid, so that every field's own check is what answers (a body still valid makes a tiny image)."""
    image = _small_png()
    base = {"/generate": '"width": 256, "height": 256, "num_inference_steps": 1',
            "/sdapi/v1/txt2img": '"width": 256, "height": 256, "steps": 1',
            "/sdapi/v1/img2img": '"steps": 1, "init_images": ["%s"]' % image,
            "/v1/images/generations": '"size": "256x256"', "/sdapi/v1/png-info": '"image": "%s"' % image}
    for route, fields in ROUTES.items():
        for field in fields:
            for value in HOSTILE_VALUES:
                yield route, '{"prompt": "a", %s, "%s": %s}' % (base[route], field, value)
        for key in ('"k\\ud800"', '"' + "k" * 300 + '\\udfff"'):
            yield route, '{"prompt": "a", %s, %s: 1}' % (base[route], key)
            yield route, '{"prompt": "a", %s, "override_settings": {"x": [1, {%s: "x"}]}}' % (base[route], key)


def test_issue_36_classes_on_every_json_route_never_a_server_error(server):
    import time

    started, seen = time.monotonic(), collections.Counter()
    with requests.Session() as http:
        for route, body in hostile_bodies():
            r = http.post(server.url + route, data=body.encode(), headers={"Content-Type": "application/json"},
                          timeout=30)
            seen[r.status_code] += 1
            assert r.status_code < 500, (route, r.status_code, r.text[:300], body[:160])
            assert r.json()                          # a JSON answer the client can read
            if "\\ud" in body or BIG in body:      # never valid: refused before any work
                assert 400 <= r.status_code < 500 and ("surrogate" in r.text or "digits" in r.text), \
                    (route, r.status_code, r.text[:200], body[:160])
        # Names over 255 bytes where they become file names.
        assert http.get(server.url + "/outputs/" + "a" * 300 + ".png", timeout=10).status_code == 404
        assert http.get(server.url + "/outputs/" + "é" * 200 + "/x.png", timeout=10).status_code == 404
    print(f"\nissue 36 classes: {sum(seen.values())} requests in {time.monotonic() - started:.1f} s: {dict(seen)}")
    assert seen[200] and requests.get(server.url + "/health", timeout=10).json()["status"] == "healthy"


def test_property_issue_36_values_anywhere_on_every_route_never_a_server_error(server):
    """Property-based: objects with the routes' field names or random keys (Unicode digits,
    surrogates, long names), holding values of those classes nested anywhere, never get a 5xx."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    odd_text = st.text(alphabet=st.characters(categories=["Cs", "No", "Nd", "Lo"]), max_size=8)
    names = st.sampled_from(sorted({f for fields in ROUTES.values() for f in fields})) | odd_text | \
        st.just("k" * 300)
    huge = st.sampled_from([BIG, "-" + BIG, "1" + "0" * 400, "1e999", "-1e999", "1000000"])
    leaf = st.one_of(odd_text.map(json.dumps), huge, st.integers(-2, 300).map(str))
    value = st.recursive(leaf, lambda inner: st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]") |
                         st.dictionaries(names.map(json.dumps), inner, max_size=3).map(
                             lambda d: "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"), max_leaves=5)
    bodies = st.tuples(st.sampled_from(sorted(ROUTES)), st.dictionaries(names.map(json.dumps), value, max_size=4))
    seen = collections.Counter()

    @settings(max_examples=80, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(bodies)
    def check(case):
        route, fields = case
        body = "{" + ", ".join(['"width": 256', '"height": 256', '"steps": 1', '"num_inference_steps": 1'] +
                               [f"{k}: {v}" for k, v in fields.items()]) + "}"
        r = requests.post(server.url + route, data=body.encode(), headers={"Content-Type": "application/json"},
                          timeout=60)
        seen[r.status_code] += 1
        assert r.status_code < 500 and r.json(), (route, r.status_code, r.text[:300], body[:200])

    check()
    print(f"\nissue 36 property fuzz: {dict(sorted(seen.items()))}")
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
