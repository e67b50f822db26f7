"""Whose generations /sdapi/v1/interrupt and /skip stop: only the caller's. Two client ids, two
logged-in users, a browser tab's job (submitted as the page does), the real webuiapi client."""
from __future__ import annotations

import dataclasses
import threading

import pytest
import requests

from zimage.request import GenerationRequest

from conftest import Gate, wait_for

SMALL = {"prompt": "a fox", "width": 256, "height": 256, "steps": 2}


class Call:
    """A txt2img request answered in the background."""

    def __init__(self, url: str, **kw):
        self.response: requests.Response | None = None
        self._thread = threading.Thread(target=self._run, args=(url, kw), daemon=True)
        self._thread.start()

    def _run(self, url, kw):
        self.response = requests.post(url + "/sdapi/v1/txt2img", json=SMALL, timeout=120, **kw)

    def status(self) -> int:
        self._thread.join(120)
        return self.response.status_code


def client(srv, user=None, password=None):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=srv.settings.port)
    if user:
        api.set_auth(user, password)
    return api


def test_interrupt_stops_only_the_callers_jobs_never_a_browser_tab(server):
    m = server.manager
    gate = Gate(m)
    tab = m.submit(GenerationRequest.from_mapping({"prompt": "tab", "width": 256, "height": 256,
                                                   "num_inference_steps": 2}), owner="browser-session-hash")
    assert gate.entered.wait(30)
    a = Call(server.url, headers={"X-Client-Id": "client-a"})
    b = Call(server.url, headers={"X-Client-Id": "client-b"})
    anonymous = Call(server.url)
    wait_for(lambda: m.status().queue_length == 4, 30, message="three API jobs waiting behind the tab's")
    assert requests.post(server.url + "/sdapi/v1/interrupt", headers={"X-Client-Id": "client-a"},
                         timeout=10).status_code == 200
    client(server).interrupt()          # webuiapi sends no client id: the API's anonymous jobs only
    state = requests.get(server.url + "/sdapi/v1/progress", timeout=10).json()["state"]
    assert state["interrupted"] is False and state["skipped"] is False     # the tab's job runs on
    gate.release.set()
    assert tab.future.result(60).images                  # the browser tab's image is made
    assert a.status() == 409 and anonymous.status() == 409
    assert b.status() == 200 and len(b.response.json()["images"]) == 1


def test_skip_ends_the_callers_running_image_and_its_queued_job_still_runs(server):
    m = server.manager
    gate = Gate(m)
    running = Call(server.url, headers={"X-Client-Id": "client-a"})
    assert gate.entered.wait(30)
    queued = Call(server.url, headers={"X-Client-Id": "client-a"})
    other = Call(server.url, headers={"X-Client-Id": "client-b"})
    wait_for(lambda: m.status().queue_length == 3, 30, message="two jobs waiting behind the running one")
    # client-b runs nothing now: its skip stops nothing, its queued job included.
    assert requests.post(server.url + "/sdapi/v1/skip", headers={"X-Client-Id": "client-b"}, timeout=10).ok
    assert m.current_generation().cancelled is False
    assert requests.post(server.url + "/sdapi/v1/skip", headers={"X-Client-Id": "client-a"}, timeout=10).ok
    state = requests.get(server.url + "/sdapi/v1/progress", timeout=10).json()["state"]
    assert state["skipped"] is True and state["interrupted"] is False     # still held at the gate
    gate.release.set()
    assert running.status() == 409
    assert queued.status() == 200 and other.status() == 200


def test_with_auth_interrupt_stops_only_the_logged_in_users_jobs(start_server, settings):
    srv = start_server(dataclasses.replace(settings, api_auth="alice:a-key,bob:b-key"))
    gate = Gate(srv.manager)
    alice_running = Call(srv.url, auth=("alice", "a-key"))
    assert gate.entered.wait(30)
    bob_waiting = Call(srv.url, auth=("bob", "b-key"))
    alice_waiting = Call(srv.url, auth=("alice", "a-key"))
    wait_for(lambda: srv.manager.status().queue_length == 3, 30, message="both users' jobs queued")
    # Same client id as nobody else's, but another user: the login decides.
    client(srv, "bob", "b-key").interrupt()
    gate.release.set()
    assert bob_waiting.status() == 409
    assert alice_running.status() == 200 and alice_waiting.status() == 200


def test_a_malformed_client_id_is_refused_naming_the_header(server):
    r = requests.post(server.url + "/sdapi/v1/interrupt", headers={"X-Client-Id": "a b"}, timeout=10)
    assert r.status_code == 422 and "X-Client-Id" in r.json()["detail"]
    r = requests.post(server.url + "/generate", json={"prompt": "x"}, headers={"X-Client-Id": "x" * 129}, timeout=10)
    assert r.status_code == 422 and r.json()["error"]["field"] == "X-Client-Id"


@pytest.mark.parametrize("route", ["/sdapi/v1/interrupt", "/sdapi/v1/skip", "/sdapi/v1/unload-checkpoint",
                                   "/sdapi/v1/reload-checkpoint"])
def test_a1111_post_routes_take_json_or_nothing(server, route):
    server.manager.ensure_ready(60)
    url = server.url + route
    for body, ctype in (("x", "text/plain"), ("a=1", "application/x-www-form-urlencoded"),
                        ("--x\r\n\r\n--x--", "multipart/form-data; boundary=x"), ("{}", None)):
        headers = {"Content-Type": ctype} if ctype else {}
        r = requests.post(url, data=body, headers=headers, timeout=60)
        assert r.status_code == 415 and r.json()["detail"], (body, ctype, r.text[:200])
    assert server.manager.status().ready                   # a refused unload-checkpoint unloaded nothing
    assert requests.post(url, json={}, timeout=120).status_code == 200
    assert requests.post(url, timeout=120).status_code == 200      # no body, no Content-Type: webuiapi's call


def test_with_auth_progress_shows_the_preview_only_to_its_own_user(start_server, settings):
    """/sdapi/v1/progress showed the running preview (current_image) to any logged-in user."""
    srv = start_server(dataclasses.replace(settings, api_auth="alice:a-key,bob:b-key"))
    srv.manager.ensure_ready(60)
    alice, bob = client(srv, "alice", "a-key"), client(srv, "bob", "b-key")
    running = threading.Thread(target=lambda: requests.post(
        srv.url + "/sdapi/v1/txt2img", json={"prompt": "long", "width": 1024, "height": 1024, "steps": 50},
        auth=("alice", "a-key"), timeout=300), daemon=True)
    running.start()
    own = wait_for(lambda: (p := alice.get_progress())["current_image"] and p, 60, message="alice's preview")
    assert own["state"]["sampling_steps"] == 50
    theirs = bob.get_progress()
    assert theirs["current_image"] is None                        # bob sees that it runs, not what it shows
    assert theirs["state"]["sampling_steps"] == 50 and theirs["progress"] > 0
    alice.interrupt()
    running.join(120)
