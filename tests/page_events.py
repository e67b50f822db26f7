"""The page's Gradio events as a client sees them, read from the running app: which events there are
(/config), each one's inputs by the handler's parameter names and their defaults (/gradio_api/info).
A test names only the values it cares about (`event_data(facts, "generate", prompt="a fox",
width=256)`); every other input gets the page's own default, so a control added to an event
(batch count, Generate forever, ...) never breaks a test that sends that event.

Also the two ways a test runs an event to its end: join the queue as the browser does (run_event),
or read a /call stream (read_call_stream)."""
from __future__ import annotations

import json

import requests

API = "/gradio_api"


def page_facts(url: str, http=requests) -> dict:
    """The page's events (`deps`, the public ones in `public`, `gen` the generate event), its
    component ids and types, and each public event's parameters (`params`: api_name -> /info's list)."""
    cfg = http.get(url + "/config", timeout=10).json()
    deps = cfg["dependencies"]
    public = [d for d in deps if d.get("api_name") and d.get("api_visibility") == "public"]
    named = http.get(url + API + "/info", timeout=10).json()["named_endpoints"]
    return {"deps": deps, "public": public, "gen": next(d for d in public if d["api_name"] == "generate"),
            "block_ids": {c["id"] for c in cfg["components"]},
            "types": {c["id"]: c.get("type") for c in cfg["components"]},
            "params": {d["api_name"]: named["/" + d["api_name"]]["parameters"] for d in public}}


def input_names(facts: dict, api_name: str) -> list[str]:
    """The event's inputs in order, by its handler's parameter names (gradio_client's names)."""
    return [p["parameter_name"] for p in facts["params"][api_name]]


def event_data(facts: dict, api_name: str = "generate", **values) -> list:
    """The event's whole `data` list (what the browser sends to queue/join, and /call takes): the
    named values, the page's defaults for the rest. A name the event does not have is an error."""
    params = facts["params"][api_name]
    dep = next(d for d in facts["public"] if d["api_name"] == api_name)
    assert len(params) == len(dep["inputs"]), f"{api_name}: an input hidden from the API ({len(params)} of " \
                                              f"{len(dep['inputs'])}); send the values by position"
    names = [p["parameter_name"] for p in params]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise TypeError(f"{api_name} has no input {unknown[0]!r} (its inputs: {', '.join(names)})")
    return [values[p["parameter_name"]] if p["parameter_name"] in values else p["parameter_default"]
            for p in params]


def small_generate(facts: dict, prompt: str = "a fox", seed: int = 5, **values) -> list:
    """The generate event's data for one 256x256 image in one step (a tenth of a second on the tiny model)."""
    return event_data(facts, "generate", **{"prompt": prompt, "negative": "", "width": 256, "height": 256, "steps": 1,
                                            "seed": seed, **values})


def position(facts: dict, api_name: str, name: str) -> int:
    """Where the input `name` is in the event's data."""
    return input_names(facts, api_name).index(name)


def run_event(url: str, facts: dict, api_name: str, data: list, session: str = "fuzz-after") -> dict:
    """Join the queue the way the browser does, then read the event stream to its completion message."""
    dep = next(d for d in facts["deps"] if d.get("api_name") == api_name)
    trigger = dep["targets"][0][0]
    r = requests.post(url + API + "/queue/join", json={"data": data, "fn_index": dep["id"], "trigger_id": trigger,
                                                         "session_hash": session, "event_data": None}, timeout=10)
    assert r.status_code == 200, r.text
    with requests.get(url + API + "/queue/data", params={"session_hash": session}, stream=True, timeout=60) as s:
        for line in s.iter_lines():
            if line.startswith(b"data: "):
                msg = json.loads(line[6:])
                if msg.get("msg") == "process_completed":
                    return msg
    raise AssertionError("the event stream ended without process_completed")


def read_call_stream(url: str, path: str, event_id: str) -> tuple[str, object]:
    """The last event of a /call stream: ("complete", outputs) or ("error", message)."""
    last = ("", None)
    with requests.get(f"{url}{API}{path}/{event_id}", stream=True, timeout=60) as s:
        assert s.status_code == 200, s.text
        kind = ""
        for line in s.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind in ("complete", "error"):
                last = (kind, json.loads(line[6:]))
    return last
