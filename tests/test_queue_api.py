"""The kept queue over HTTP (web/http/queue_api.py on the real server): the live queue is listed with
ids and states, DELETE and run act on exactly the id given, jobs kept by an earlier run are listed
and run again with their input images, bad ids are a 4xx naming `id`, and the API login applies."""
import dataclasses
import threading

import pytest
import requests
from conftest import Gate, wait_for
from PIL import Image

from zimage.app import create_backend
from zimage.kept_queue import with_kept_queue
from zimage.request import GenerationRequest
from zimage.store.history import scan_pngs
from zimage.store.job_queue import RUNNING, JobQueue

SMALL = {"width": 256, "height": 256, "num_inference_steps": 1}


def kept_backend(settings):
    return with_kept_queue(create_backend(settings))


def listed(srv, **kw) -> list[dict]:
    r = requests.get(srv.url + "/queue", timeout=10, **kw)
    assert r.status_code == 200, r.text
    return r.json()["jobs"]


def test_the_live_queue_is_listed_and_delete_drops_exactly_the_second_of_two_waiting(start_server, settings):
    srv = start_server(settings, manager_factory=kept_backend)
    gate = Gate(srv.manager)
    answers = {}

    def post(name):
        answers[name] = requests.post(srv.url + "/generate", json={"prompt": name, **SMALL},
                                      headers={"X-Client-Id": f"client-{name}"}, timeout=120)

    threads = []
    for name in ("first", "second", "third"):
        threads.append(threading.Thread(target=post, args=(name,)))
        threads[-1].start()
        wait_for(lambda: len(listed(srv)) == len(threads), 30, message=f"{name} to be listed")
    assert gate.entered.wait(30)
    jobs = wait_for(lambda: (j := listed(srv)) and j[0]["state"] == RUNNING and j, 10, message="first running")
    assert [(j["prompt"], j["state"], j["owner"], j["size"], j["live"]) for j in jobs] == [
        ("first", "running", "client-first", "256x256", True), ("second", "waiting", "client-second", "256x256", True),
        ("third", "waiting", "client-third", "256x256", True)]
    assert all(isinstance(j["created"], float) and isinstance(j["id"], int) for j in jobs)

    r = requests.delete(f"{srv.url}/queue/{jobs[2]['id']}", timeout=10)
    assert r.status_code == 200 and r.json() == {"deleted": jobs[2]["id"]}
    assert [j["id"] for j in listed(srv)] == [jobs[0]["id"], jobs[1]["id"]]
    gate.release.set()
    for t in threads:
        t.join(120)
    assert answers["first"].status_code == 200 and answers["second"].status_code == 200
    assert answers["third"].status_code == 409 and answers["third"].json()["error"]["code"] == "cancelled"
    wait_for(lambda: listed(srv) == [], 10, message="saved jobs to leave the queue")
    assert len(scan_pngs(srv.settings.outputs_dir)) == 2


@pytest.mark.parametrize("raw", ["abc", "-1", "0", "99999999999999999999", "9223372036854775808", "1.5", "1e3",
                                 "%20%201", "%EF%BC%91"])
def test_a_bad_id_is_a_422_naming_id_and_the_app_keeps_serving(server_kept, raw):
    for method, path in (("POST", f"/queue/{raw}/run"), ("DELETE", f"/queue/{raw}")):
        r = requests.request(method, server_kept.url + path, timeout=10)
        assert r.status_code == 422, (method, raw, r.text)
        assert r.json()["error"]["field"] == "id"
    assert requests.get(server_kept.url + "/health", timeout=10).ok


def test_an_unknown_id_is_a_404(server_kept):
    for method, path in (("POST", "/queue/9223372036854775807/run"), ("DELETE", "/queue/12345")):
        r = requests.request(method, server_kept.url + path, timeout=10)
        assert r.status_code == 404 and r.json()["error"]["code"] == "queue_job_not_found"


@pytest.fixture
def server_kept(start_server, settings):
    return start_server(settings, manager_factory=kept_backend)


def test_jobs_kept_by_an_earlier_run_are_listed_and_the_second_runs_with_its_image(start_server, settings):
    """An img2img job (its image kept as a file) and a text one left by the last run: listed, not
    run until asked; Run of the second makes its image; Delete of the first removes only it."""
    out = settings.outputs_dir
    earlier = JobQueue(out)
    image = Image.linear_gradient("L").resize((256, 256)).convert("RGB")
    first = earlier.add(GenerationRequest(prompt="kept text job", seed=5, **SMALL), owner="tab-a")
    second = earlier.add(GenerationRequest(prompt="kept edit job", seed=6, mode="img2img", init_image=image,
                                           strength=0.5, **SMALL), owner="tab-b")
    earlier.mark(second, RUNNING)                          # it was running when the app died
    earlier.close()

    srv = start_server(settings, manager_factory=kept_backend)
    jobs = listed(srv)
    assert [(j["id"], j["state"], j["prompt"], j["owner"], j["mode"], j["live"]) for j in jobs] == [
        (first, "waiting", "kept text job", "tab-a", "txt2img", False),
        (second, "interrupted", "kept edit job", "tab-b", "img2img", False)]
    assert scan_pngs(out) == {}                            # nothing ran by itself

    r = requests.post(f"{srv.url}/queue/{second}/run", json={"wait": True}, timeout=120)
    assert r.status_code == 200, r.text
    [made] = r.json()["files"]
    with Image.open(made) as im:
        assert im.size == (256, 256) and "Mode: img2img" in im.info["parameters"] and "Seed: 6" in im.info["parameters"]
    wait_for(lambda: [j["id"] for j in listed(srv)] == [first], 10, message="the run job to leave the queue")

    assert requests.delete(f"{srv.url}/queue/{first}", timeout=10).json() == {"deleted": first}
    assert listed(srv) == [] and len(scan_pngs(out)) == 1
    assert requests.post(f"{srv.url}/queue/{first}/run", timeout=10).status_code == 404
    assert Image.open(made).size == (256, 256)            # the saved image is untouched


def test_run_refuses_a_job_already_queued_and_answers_202_without_wait(start_server, settings):
    srv = start_server(settings, manager_factory=kept_backend)
    gate = Gate(srv.manager)
    held = srv.manager.submit(GenerationRequest(prompt="holds the worker", **SMALL))
    assert gate.entered.wait(30)
    earlier_id = srv.manager.kept.add(GenerationRequest(prompt="as if from before", **SMALL))
    r = requests.post(f"{srv.url}/queue/{earlier_id}/run", timeout=10)
    assert r.status_code == 202 and r.json()["job"]["id"] == earlier_id and r.json()["job"]["live"]
    again = requests.post(f"{srv.url}/queue/{earlier_id}/run", timeout=10)
    assert again.status_code == 409 and again.json()["error"]["code"] == "queue_job_active"
    gate.release.set()
    held.future.result(60)
    wait_for(lambda: listed(srv) == [], 60, message="both jobs saved")
    assert len(scan_pngs(srv.settings.outputs_dir)) == 2


def test_the_queue_routes_need_the_api_login_and_show_each_user_their_own(start_server, settings):
    srv = start_server(dataclasses.replace(settings, api_auth="alice:a-key,bob:b-key"), manager_factory=kept_backend)
    alices = srv.manager.kept.add(GenerationRequest(prompt="alice's", **SMALL), user="alice")
    for method, path in (("GET", "/queue"), ("POST", f"/queue/{alices}/run"), ("DELETE", f"/queue/{alices}")):
        assert requests.request(method, srv.url + path, timeout=10).status_code == 401
    assert [j["id"] for j in listed(srv, auth=("alice", "a-key"))] == [alices]
    assert listed(srv, auth=("bob", "b-key")) == []
    assert requests.delete(f"{srv.url}/queue/{alices}", auth=("bob", "b-key"), timeout=10).status_code == 404
    assert requests.delete(f"{srv.url}/queue/{alices}", auth=("alice", "a-key"), timeout=10).status_code == 200
