"""The status panel's refresh route (zimage/web/page/ui_status_feed.py), over HTTP on the real server."""
from __future__ import annotations

import dataclasses
import threading

import pytest
import requests
from page_events import API, input_names, page_facts, read_call_stream, small_generate

from conftest import Gate, wait_for
from zimage.web.page.page_jobs import new_client_id
from zimage.web.page.ui_status_feed import STATUS_PATH


def status(url: str, client: str = "", http=requests, **headers) -> requests.Response:
    return http.get(url + STATUS_PATH, params={"client": client}, headers=headers, timeout=10)


def test_the_panel_and_whether_this_browser_has_something_to_stop(server):
    client, other = new_client_id(), new_client_id()
    idle = status(server.url, client)
    assert idle.status_code == 200 and idle.headers["cache-control"] == "no-store"
    assert idle.json()["mine"] is False and idle.json()["downloading"] is False
    assert "Model:" in idle.json()["html"], idle.json()["html"]
    gate = Gate(server.manager)
    facts = page_facts(server.url)
    data = small_generate(facts, "x", 1)
    data[input_names(facts, "generate").index("client")] = client
    first = requests.post(server.url + API + "/call/generate", json={"data": data}, timeout=10)
    threading.Thread(target=read_call_stream, args=(server.url, "/call/generate", first.json()["event_id"]),
                     daemon=True).start()
    assert gate.entered.wait(30)
    assert status(server.url, client).json()["mine"] is True           # its job runs
    assert status(server.url, other).json()["mine"] is False            # another browser's does not count
    gate.release.set()
    wait_for(lambda: status(server.url, client).json()["mine"] is False, 30, message="the job to end")


def test_the_panel_speaks_the_pages_language(server):
    zh = status(server.url, new_client_id(), **{"Accept-Language": "zh-CN,zh;q=0.9"}).json()["html"]
    en = status(server.url, new_client_id(), **{"Accept-Language": "en-US"}).json()["html"]
    assert zh != en and any("\u4e00" <= ch <= "\u9fff" for ch in zh)


@pytest.mark.parametrize("query", ["", "client=", "client=short", "client=" + "x" * 65, "client=..%2F..%2Fetc%2Fpasswd",
                                   "client=" + "a" * 100_000, "client=" + "%ED%B3%BF" * 20, "client=%FF%FE",
                                   "client=a&client=b", "client=" + "a" * 16, "client=" + "a" * 64])
def test_any_client_value_is_an_answer_never_a_server_error(server, query):
    """Odd ones (a lone surrogate's bytes, bytes that are no UTF-8, a path, a repeat) and the edges
    of a valid id (16 and 64 characters), sent as the raw query."""
    r = requests.get(f"{server.url}{STATUS_PATH}?{query}", timeout=10)
    assert r.status_code == 200 or 400 <= r.status_code < 500, r.status_code      # a 100 kB URL: uvicorn's 400
    if r.status_code == 200:
        assert r.json()["mine"] is False


def test_behind_a_login_only_a_logged_in_page_reads_it(start_server, settings):
    srv = start_server(dataclasses.replace(settings, auth="me:secret"))
    refused = status(srv.url, new_client_id())
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized", refused.text
    login = requests.Session()
    assert login.post(srv.url + "/login", data={"username": "me", "password": "secret"}, timeout=10).ok
    r = status(srv.url, new_client_id(), http=login)
    assert r.status_code == 200 and r.json()["mine"] is False
