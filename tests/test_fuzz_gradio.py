"""Hostile input against Gradio's own routes of our page (queue/join, call, run, queue/data, upload,
file=, config, info): every malformed request gets a 4xx or a harmless answer, never a 5xx, never a
stream cut short, never a traceback in the server log; the page and the API keep working after."""
from __future__ import annotations

import collections
import json
import logging
import random
import time
from dataclasses import dataclass, field

import pytest
import requests

from page_events import API, page_facts, position, read_call_stream, run_event, small_generate

from conftest import wait_for

JSON = {"Content-Type": "application/json"}
NASTY = [None, True, -1, 0, 2**31, 2**63, -2**63, 1.5, float("nan"), "", "0", "x", "🐈", [], [1], {}, {"a": 1}]
TEN_MB = 10_000_000
TINY_PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                         "1f15c4890000000d49444154789c6300010000000500010d0a2db40000000049454e44ae426082")


@dataclass
class Case:
    method: str
    path: str
    kwargs: dict = field(default_factory=dict)
    must_refuse: bool = True          # an event route must say no (4xx) to this; others may answer 200


def json_case(path: str, body, must_refuse: bool = True) -> Case:
    return Case("POST", path, {"data": json.dumps(body, allow_nan=True), "headers": JSON}, must_refuse)


# Values of the wrong type for an input, by the component type the page's config names (issue 36:
# each was a traceback in the log, or a 500, once Gradio's preprocess met it).
WRONG_TYPED = {
    "slider": ["abc", {"a": 1}, [1], None, True, float("nan"), float("inf")],
    "number": ["abc", {"a": 1}, [1], True, float("nan")],
    "textbox": [5, 1.5, {"a": 1}, [], True],
    "checkbox": ["yes", 1, {"a": 1}, []],
    "dropdown": [{"a": 1}, [[1]], float("nan")],
    "radio": [{"a": 1}, [], float("inf")],
}


def wrong_typed(facts: dict, dep: dict):
    """(position, value) pairs: one input of `dep` given a value of a type its component refuses."""
    for i, cid in enumerate(dep["inputs"]):
        for value in WRONG_TYPED.get(facts["types"].get(cid), []):
            yield i, value


def broken_bodies(rng: random.Random) -> list[tuple[bytes | str, dict]]:
    """Bodies that are not a JSON object, or not JSON at all, or not sent as JSON."""
    out: list[tuple[bytes | str, dict]] = [
        (text, JSON) for text in ["", "{", "}", "null", "[]", "[1,2]", '"x"', "123", "{'data': []}",
                                  '{"data": [],}', "\xff\xfe", '{"data": [' + "[" * 5000, "{" * 10_000]]
    good = json.dumps({"data": [], "fn_index": 0, "session_hash": "s"})
    out += [(good, {"Content-Type": c}) for c in ["text/plain", "application/x-www-form-urlencoded",
                                                   "multipart/form-data; boundary=x", "", "application/jsonx"]]
    out += [(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))), JSON) for _ in range(12)]
    return out


def cases(facts: dict, rng: random.Random):
    deps, gen = facts["deps"], facts["gen"]
    n_gen = len(gen["inputs"])
    ids = [d["id"] for d in deps]
    bad_fn = [-1, -2**31, 2**31, 2**63, 10**9, max(ids) + 1, len(ids) + 50]
    join = API + "/queue/join"

    # queue/join: fn_index, trigger_id, session_hash and data each wrong on its own.
    for fn_index in bad_fn + ["0", "x", 1.5, [], {}, True]:
        yield json_case(join, {"data": [None] * n_gen, "fn_index": fn_index, "session_hash": "fz"})
        yield json_case(join, {"data": [], "fn_index": fn_index, "session_hash": "fz", "trigger_id": None})
    yield json_case(join, {"data": [], "fn_index": -1})                                # the known 500
    yield json_case(join, {"data": [None] * n_gen, "session_hash": "fz"})              # no fn_index
    yield json_case(join, {"data": [None] * n_gen, "fn_index": None, "session_hash": "fz"})
    for trigger in [-1, 10**9, 2**63, "x", 1.5, [], {}, max(facts["block_ids"]) + 1]:
        yield json_case(join, {"data": [None] * n_gen, "fn_index": gen["id"], "session_hash": "fz",
                               "trigger_id": trigger})
    for session in [None, "", 0, 1.5, [], {}, "s" * 10_000]:
        yield json_case(join, {"data": [None] * n_gen, "fn_index": gen["id"], "session_hash": session})
    yield json_case(join, {"data": [None] * n_gen, "fn_index": gen["id"]})              # no session_hash
    for dep in deps:
        n = len(dep["inputs"])
        for data in [None, "x", 1, {}, {"0": 1}, [None] * (n + 1), [None] * (n + 7), [[None] * 200] * 200]:
            yield json_case(join, {"data": data, "fn_index": dep["id"], "session_hash": "fz"})
        if n:
            yield json_case(join, {"data": [], "fn_index": dep["id"], "session_hash": "fz"})
        yield json_case(join, {"fn_index": dep["id"], "session_hash": "fz"})             # no data
    for body, headers in broken_bodies(rng):
        yield Case("POST", join, {"data": body, "headers": headers})
    not_an_event = [v for v in NASTY if not (isinstance(v, int) and v in ids)] + bad_fn
    for _ in range(60):                              # random mixes, the fn_index always wrong or missing
        body = {k: rng.choice(NASTY) for k in rng.sample(["data", "session_hash", "trigger_id", "event_data"], 3)}
        if rng.random() < 0.8:
            body["fn_index"] = rng.choice(not_an_event)
        yield json_case(join, body)
    yield json_case(join, {"data": ["x" * TEN_MB], "fn_index": gen["id"], "session_hash": "fz"})

    # Direct calls by name: /call (queued), /call/v2 (keywords), /run and /api (no queue).
    names = [d["api_name"] for d in facts["public"]]
    private = [d["api_name"] for d in deps if d.get("api_name") and d.get("api_visibility") != "public"]
    n_inputs = {d["api_name"]: len(d["inputs"]) for d in facts["public"]}
    for name in names + ["nope", "predict", "generate_", "%2e%2e", "x" * 2000, "🐈"] + private[:4]:
        known = name in names
        n_ev = n_inputs.get(name, n_gen)                  # each event's own count (png_info takes 1)
        for prefix in ["/call/", "/run/", "/api/"]:
            path = API + prefix + name
            if known:
                for data in [None, "x", 1, {}, [], [None] * (n_ev - 1), [None] * (n_ev + 1)]:
                    yield json_case(path, {"data": data})
                for _ in range(12):                  # random values, never the right count
                    n = rng.choice([k for k in range(20) if k != n_ev])
                    yield json_case(path, {"data": [rng.choice(NASTY) for _ in range(n)]})
                yield json_case(path, {"fn_index": 10**9, "data": [None] * n_ev}) if prefix != "/call/" else \
                    json_case(path, {"datum": []})
                for body, headers in broken_bodies(rng)[:10]:
                    yield Case("POST", path, {"data": body, "headers": headers})
                yield json_case(path, {"data": ["x" * TEN_MB]})
            else:
                yield json_case(path, {"data": [None] * n_gen})
                yield json_case(path, {"data": []})
        v2 = API + "/call/v2/" + name
        if known:
            for body in [{}, [], "x", None, {"prompt": "a", "nope": 1}, {"nope": 1}, {"prompt": "a", "oauth_token": 5}]:
                yield json_case(v2, body)
        else:
            yield json_case(v2, {"prompt": "a"})

    # Wrong-typed values, one input at a time, the others None (by name and by fn_index).
    for dep in facts["public"]:
        for i, value in wrong_typed(facts, dep):
            data = [None] * len(dep["inputs"])
            data[i] = value
            yield json_case(API + "/call/" + dep["api_name"], {"data": data})
            yield json_case(join, {"data": data, "fn_index": dep["id"], "session_hash": "fz"})

    # The image editor's accept_blobs with a layer index it cannot have (a list that long was kept).
    editors = [d["inputs"][0] for d in facts["public"] if d["api_name"] == "edit"]
    for index in ["100000000", "1", "-1", "x", "", "1e9", None]:
        form = {"id": "fz", "type": "layer", "fn_name": "accept_blobs", "component_id": str(editors[0]),
                "session_hash": "fz", **({"index": index} if index is not None else {})}
        yield Case("POST", API + "/component_server", {"data": form, "files": {"file": ("b.png", TINY_PNG)}})

    # Predict by fn_index (what the browser sends for events that skip the queue).
    for fn_index in bad_fn + ["x", None]:
        yield json_case(API + "/run/predict", {"data": [], "fn_index": fn_index, "session_hash": "fz"})
    for dep in deps:
        yield json_case(API + "/run/predict", {"data": [None] * (len(dep["inputs"]) + 3), "fn_index": dep["id"],
                                               "session_hash": "fz"})

    # Streams of events nobody joined.
    for query in ["", "?session_hash=", "?session_hash=nope", "?session_hash=" + "s" * 5000,
                  "?session_hash=a&session_hash=b", "?session_hash=%00", "?session_hash=fz"]:
        yield Case("GET", API + "/queue/data" + query)
    for name in names + ["nope"]:
        for event_id in ["nope", "0" * 32, "%2e%2e", "x" * 3000]:
            yield Case("GET", f"{API}/call/{name}/{event_id}")

    # Uploads: only one PNG/JPEG/WebP image at a time (PNG info), so every one of these is refused.
    upload = API + "/upload"
    yield Case("POST", upload)
    yield Case("POST", upload, {"files": {"wrong": ("a.txt", b"hi")}})
    yield Case("POST", upload, {"data": "files=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}})
    yield Case("POST", upload, {"data": b"--x\r\nbroken", "headers": {"Content-Type": "multipart/form-data; boundary=x"}})
    yield Case("POST", upload, {"data": b"junk", "headers": {"Content-Type": "multipart/form-data"}})
    yield Case("POST", upload, {"files": {"files": ("a.bin", b"0" * 2_000_000)}})
    yield Case("POST", upload, {"files": [("files", (f"{i}.bin", b"0" * 300_000)) for i in range(5)]})
    yield Case("POST", upload + "?upload_id=" + "x" * 3000, {"files": {"files": ("a.txt", b"hi")}})
    yield Case("POST", upload, {"files": {"files": ("../../../etc/x.txt", b"hi")}})

    # Files: only the outputs folder and Gradio's cache are served.
    for target in ["/etc/passwd", "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd",
                   "/proc/self/environ", "~/.ssh/id_rsa", "/root", "", "%00", "/etc/passwd%00.png",
                   "http://127.0.0.1:1/x", "file:///etc/passwd", "C:\\Windows\\win.ini", "\\\\host\\share\\x",
                   "x" * 5000, "/tmp", "//etc/passwd"]:
        yield Case("GET", API + "/file=" + target, must_refuse=False)

    # Page metadata with odd queries and methods.
    for path in ["/config", API + "/info", "/", API + "/info?all_endpoints=x", "/config?page=../../x",
                 "/config?deep_link=%00", API + "/info?serialize=0&" + "a=1&" * 500]:
        yield Case("GET", path, must_refuse=False)
        yield Case("DELETE", path, must_refuse=False)
    yield Case("POST", "/config", {"data": "{}", "headers": JSON}, must_refuse=False)

    # Cancel and component server with junk.
    for body in [{}, {"session_hash": "x", "fn_index": 10**9, "event_id": "y"}, {"session_hash": [], "fn_index": "x"}]:
        yield json_case(API + "/cancel", body, must_refuse=False)
    for body in [{}, {"session_hash": "x", "component_id": 10**9, "fn_name": "x", "data": None},
                 {"session_hash": "x", "component_id": gen["inputs"][0], "fn_name": "__class__", "data": []},
                 {"session_hash": "x", "component_id": gen["outputs"][0], "fn_name": "preprocess", "data": [1]}]:
        yield json_case(API + "/component_server", body, must_refuse=False)


EVENT_ROUTES = (API + "/queue/join", API + "/call/", API + "/run/", API + "/api/")
STRICT = EVENT_ROUTES + (API + "/upload", API + "/component_server")   # every case there gets our 4xx JSON error
FAMILIES = EVENT_ROUTES + (API + "/queue/data", API + "/upload", API + "/file=", API + "/info", API + "/cancel",
                           API + "/component_server", "/config")


class Recorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def server_errors():
    """Errors uvicorn logs for requests that blew up (after the status line went out, too)."""
    recorder = Recorder()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(recorder)
    yield recorder.records
    logger.removeHandler(recorder)


def error_message(r: requests.Response) -> str:
    try:
        return r.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return ""


class StreamDidNotEnd(requests.RequestException):
    pass


def send(url: str, case: Case, limit_s: float = 10.0) -> requests.Response:
    """The whole answer, read to its end within `limit_s` (an event stream nobody joined must end).
    A connection of its own each time: a reset after one answer must not be blamed on the next."""
    started = time.monotonic()
    with requests.request(case.method, url + case.path, timeout=(5, limit_s), stream=True, **case.kwargs) as r:
        body = bytearray()
        for chunk in r.iter_content(65536):          # a stream cut short raises here
            body += chunk
            if time.monotonic() - started > limit_s:
                raise StreamDidNotEnd(f"still streaming after {limit_s} s: {bytes(body[:200])!r}")
        r._content = bytes(body)
    return r


def test_malformed_gradio_requests_get_4xx_and_the_page_keeps_working(server, server_errors, capfd):
    facts = page_facts(server.url)
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures = []
    for case in cases(facts, random.Random(7)):
        family = next((p for p in FAMILIES if case.path.startswith(p)), case.path)
        try:
            r = send(server.url, case)
        except requests.RequestException as e:
            failures.append((case.method, case.path[:80], str(case.kwargs)[:120], f"broken: {e}"))
            counts[family]["broken"] += 1
            continue
        counts[family][r.status_code] += 1
        refused = 400 <= r.status_code < 500
        if r.status_code >= 500 or (case.must_refuse and family in STRICT and not refused):
            failures.append((case.method, case.path[:80], str(case.kwargs)[:120], r.status_code, r.text[:200]))
        elif family in STRICT and refused and not error_message(r):
            failures.append((case.method, case.path[:80], str(case.kwargs)[:120], r.status_code,
                             f"not our JSON error: {r.text[:200]}"))
    total = sum(sum(c.values()) for c in counts.values())
    by_status = collections.Counter()
    for c in counts.values():
        by_status.update(c)
    server_log = capfd.readouterr().err
    print(f"\ngradio fuzz: {total} requests by status: {dict(sorted(by_status.items(), key=str))}")
    for family, c in sorted(counts.items()):
        print(f"  {family}: {dict(sorted(c.items(), key=str))}")
    assert not failures, "\n".join(map(str, failures[:40])) + f"\n({len(failures)} failures)"
    assert total >= 500
    # Nothing blew up inside the server, even where the status line had already gone out.
    assert not [r.getMessage() for r in server_errors]
    assert "Traceback" not in server_log
    # Still serving: the API, and the page's own event path (join, then read the stream to the end).
    assert requests.get(server.url + "/health", timeout=10).json()["status"] in ("unloaded", "healthy")
    assert server.manager.load_count == 0                     # no malformed event reached the model
    assert run_event(server.url, facts, "generate", small_generate(facts, "a fox", 5))["success"]
    assert server.manager.load_count == 1


@pytest.mark.parametrize("path,body", [
    ("/queue/join", {"data": [], "fn_index": -1, "session_hash": "abc"}),
    ("/queue/join", {"data": [], "fn_index": 10**9, "session_hash": "abc"}),
    ("/call/nope", {"data": []}),
    ("/call/v2/generate", {}),
    ("/call/v2/nope", {}),
    ("/run/generate", {"data": []}),
    ("/api/predict", {"data": []}),
])
def test_requests_that_gradio_answered_with_500_get_a_4xx_naming_the_problem(server, path, body):
    r = requests.post(server.url + API + path, json=body, timeout=10)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.json()["error"]["message"]


def test_stream_of_an_unknown_session_is_a_404_not_a_cut_stream(server, server_errors):
    for path in ["/queue/data?session_hash=nope", "/call/generate/no-such-event"]:
        r = requests.get(server.url + API + path, timeout=10)
        assert r.status_code == 404 and r.json()["error"]["message"]
    assert not server_errors


def test_well_formed_calls_by_name_pass_the_guard_and_complete(server, caplog):
    caplog.set_level(logging.INFO, logger="zimage.web.gradio_guard")
    data = small_generate(page_facts(server.url), "a lighthouse", 11)
    r = requests.post(server.url + API + "/call/generate", json={"data": data}, timeout=10)
    assert r.status_code == 200, r.text
    kind, outputs = read_call_stream(server.url, "/call/generate", r.json()["event_id"])
    assert kind == "complete" and "seeds 11" in outputs[1]
    r = requests.post(server.url + API + "/call/v2/generate",
                      json={"prompt": "a fox", "negative": "", "width": 256, "height": 256, "steps": 1, "seed": 12},
                      timeout=10)
    assert r.status_code == 200, r.text
    kind, outputs = read_call_stream(server.url, "/call/v2/generate", r.json()["event_id"])
    assert kind == "complete" and "seeds 12" in outputs[1]
    assert [r.getMessage() for r in caplog.records if r.name == "zimage.web.gradio_guard"] == []
    # And the refusals are logged (so the browser tests can tell the page's own requests all passed).
    requests.post(server.url + API + "/call/nope", json={"data": []}, timeout=10)
    assert any("nope" in r.getMessage() for r in caplog.records if r.name == "zimage.web.gradio_guard")


def test_with_auth_events_still_need_the_login(start_server, settings):
    import dataclasses

    srv = start_server(dataclasses.replace(settings, auth="me:secret"))
    login = requests.Session()
    assert login.post(srv.url + "/login", data={"username": "me", "password": "secret"}, timeout=10).ok
    facts = page_facts(srv.url, login)
    gen = facts["gen"]
    good = {"data": small_generate(facts, "a cat", 3), "fn_index": gen["id"], "session_hash": "auth"}
    anonymous = requests.post(srv.url + API + "/queue/join", json=good, timeout=10)
    assert anonymous.status_code == 401
    bad = requests.post(srv.url + API + "/queue/join", json=dict(good, fn_index=-1), timeout=10)
    assert bad.status_code == 401                                      # the login comes first, even for bad input
    bad = login.post(srv.url + API + "/queue/join", json=dict(good, fn_index=-1), timeout=10)
    assert bad.status_code == 422 and "fn_index" in bad.text            # logged in: the guard's own answer
    assert login.post(srv.url + API + "/queue/join", json=good, timeout=10).status_code == 200
    wait_for(lambda: srv.manager.load_count == 1, 60, message="the logged-in event to run")


def test_wrong_typed_values_are_refused_naming_the_field(server, server_errors, capfd):
    """A value of the wrong type for one input of a well-formed event: a 422 naming that input, by
    queue/join, call and call/v2, never a traceback, never queued."""
    facts = page_facts(server.url)
    gen = facts["gen"]
    good = small_generate(facts, "a fox", 5)
    pairs = list(wrong_typed(facts, gen))
    assert {type(v) for _, v in pairs} >= {str, dict, list, bool, float, type(None)}
    # the controls added since (batch count, Generate forever) are checked like the first ones
    assert {position(facts, "generate", name) for name in ("batch_count", "forever")} <= {i for i, _ in pairs}
    for i, value in pairs:
        data = list(good)
        data[i] = value
        body = json.dumps({"data": data}, allow_nan=True)
        r = requests.post(server.url + API + "/call/generate", data=body, headers=JSON, timeout=10)
        assert r.status_code == 422, (i, value, r.text)
        assert r.json()["error"]["field"] == f"data[{i}]", r.text
        join = json.dumps({"data": data, "fn_index": gen["id"], "session_hash": "wt"}, allow_nan=True)
        r = requests.post(server.url + API + "/queue/join", data=join, headers=JSON, timeout=10)
        assert r.status_code == 422 and r.json()["error"]["field"] == f"data[{i}]", (i, value, r.text)
    r = requests.post(server.url + API + "/call/v2/generate",
                      json={"prompt": "a fox", "negative": "", "width": "wide", "height": 256, "steps": 1, "seed": 1},
                      timeout=10)
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.width", r.text
    assert "must be a number" in r.json()["error"]["message"]
    assert server.manager.load_count == 0
    assert not server_errors and "Traceback" not in capfd.readouterr().err
    assert run_event(server.url, facts, "generate", small_generate(facts, "a fox", 5))["success"]
