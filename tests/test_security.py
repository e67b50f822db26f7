"""Hostile requests from issue 15 against the real server over HTTP: files out of the page's events
and /gradio_api/file=, unauthenticated streams, shutdown with streams open, Host/Origin/CORS,
odd /outputs names, and the Retry-After of every refusal for load."""
from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path

import pytest
import requests
from page_events import API, page_facts, read_call_stream, run_event, small_generate

from zimage.web.server import mounted_gradio_app

from conftest import wait_for

PASSWD = Path("/etc/passwd").read_bytes()
SOURCE = Path(__file__).resolve().parents[1] / "zimage" / "web" / "server.py"


def file_data(path: str | None = None, url: str | None = None) -> dict:
    out = {"meta": {"_type": "gradio.FileData"}}
    if path is not None:
        out["path"] = path
    if url is not None:
        out["url"] = url
    return out


def gallery_item(fd: dict) -> dict:
    return {"image": fd, "caption": None}


def leaked_copies(srv) -> list[str]:
    """Files Gradio copied for this page whose bytes are /etc/passwd's."""
    demo = mounted_gradio_app(srv.app).get_blocks()
    return [p for names in demo.temp_file_sets for p in list(names)
            if os.path.isfile(p) and Path(p).read_bytes() == PASSWD]


def the_issue_request(facts: dict, fd: dict) -> list:
    """The request quoted in issue 15 (the gallery last), fitted to the page's generate inputs."""
    n = len(facts["gen"]["inputs"])
    values = ["cat", "", 256, 256, 1, 0.0, 1, 1][:n]
    return values + [[gallery_item(fd)]] * (n - len(values))


def assert_refused_without_leak(srv, r: requests.Response) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert "data" in r.json()["error"]["message"]
    if r.status_code == 200:                                  # never: but if it were, read what it would leak
        read_call_stream(srv.url, "/call/generate", r.json()["event_id"])
    assert leaked_copies(srv) == []


@pytest.fixture
def outputs_link(server) -> Path:
    """A symlink inside the outputs folder that points out of it."""
    link = Path(server.settings.outputs_dir).resolve() / "link.png"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to("/etc/passwd")
    return link


@pytest.mark.parametrize("target", ["/etc/passwd", "/proc/self/environ", str(SOURCE), "zimage/web/server.py",
                                    "link", "url", "url-only"])
def test_the_issue_request_for_any_file_is_refused_and_leaks_nothing(server, outputs_link, target):
    fd = {"link": file_data(str(outputs_link)),
          "url": file_data(str(outputs_link), url=f"{server.url}{API}/file=/etc/passwd"),
          "url-only": file_data(url="file:///etc/passwd")}.get(target) or file_data(target)
    facts = page_facts(server.url)
    r = requests.post(server.url + API + "/call/generate", json={"data": the_issue_request(facts, fd)}, timeout=10)
    assert_refused_without_leak(server, r)
    assert server.manager.load_count == 0


def test_a_file_in_any_input_of_any_event_is_refused_naming_the_field(server):
    """Every event of the page, by fn_index (the page's route) and by name: a file in any position,
    at any depth, gets a 422 naming where it is."""
    facts = page_facts(server.url)
    passwd = file_data("/etc/passwd")
    for dep in facts["deps"]:
        n = len(dep["inputs"])
        for i in range(n):
            for value in (passwd, [gallery_item(passwd)], [[{"x": [passwd]}]]):
                data = [None] * n
                data[i] = value
                r = requests.post(server.url + API + "/queue/join", timeout=10, json={
                    "data": data, "fn_index": dep["id"], "session_hash": "fz", "trigger_id": None})
                assert r.status_code == 422, (dep.get("api_name"), i, r.status_code, r.text[:200])
                assert r.json()["error"]["field"].startswith(f"data[{i}]"), r.text
    for dep in facts["public"]:
        n = len(dep["inputs"])
        r = requests.post(f"{server.url}{API}/call/{dep['api_name']}", json={"data": [passwd] * n}, timeout=10)
        # the Edit tab's image editor input is checked as an editor value first, naming data[0]
        where = "data[0]" if dep["api_name"] == "edit" else ".path"
        assert r.status_code == 422 and r.json()["error"]["field"].endswith(where), r.text
    r = requests.post(server.url + API + "/call/v2/generate", json={"prompt": "a", "gallery": [gallery_item(passwd)]},
                      timeout=10)
    assert r.status_code == 422 and "/etc/passwd" in r.json()["error"]["message"]
    assert leaked_copies(server) == [] and server.manager.load_count == 0


def test_with_auth_a_logged_in_user_cannot_take_files_either(start_server, settings):
    srv = start_server(dataclasses.replace(settings, auth="me:secret"))
    login = requests.Session()
    assert login.post(srv.url + "/login", data={"username": "me", "password": "secret"}, timeout=10).ok
    facts = page_facts(srv.url, login)
    body = {"data": the_issue_request(facts, file_data("/etc/passwd"))}
    assert requests.post(srv.url + API + "/call/generate", json=body, timeout=10).status_code == 401
    r = login.post(srv.url + API + "/call/generate", json=body, timeout=10)
    assert 400 <= r.status_code < 500 and leaked_copies(srv) == []
    assert login.get(srv.url + API + "/file=/etc/passwd", timeout=10).status_code == 404


def test_gradio_itself_refuses_event_files_outside_its_allowed_paths(server):
    """Behind the guard: Gradio's own check (blocks.has_launched) holds, so a file named in an event
    that slipped past the guard would still not be copied out."""
    from gradio import processing_utils
    from gradio.context import LocalContext
    from gradio.exceptions import InvalidPathError

    demo = mounted_gradio_app(server.app).get_blocks()
    gallery = next(b for b in demo.blocks.values() if type(b).__name__ == "Gallery")
    token = LocalContext.blocks.set(demo)
    try:
        with pytest.raises(InvalidPathError):
            processing_utils.move_files_to_cache([gallery_item(file_data("/etc/passwd"))], gallery,
                                                 check_in_upload_folder=True)
    finally:
        LocalContext.blocks.reset(token)


def test_file_route_serves_only_this_pages_images(server, outputs_link):
    facts = page_facts(server.url)
    data = small_generate(facts, "a fox", 5)
    done = run_event(server.url, facts, "generate", data)
    assert done["success"], done
    shown = done["output"]["data"][0][0]["image"]                  # the gallery's first image, as the page gets it
    r = requests.get(shown["url"], timeout=10)
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    saved = next(p for p in Path(server.settings.outputs_dir).rglob("*.png") if not p.is_symlink())
    assert requests.get(f"{server.url}{API}/file={saved.resolve()}", timeout=10).status_code == 200
    # The History index beside the images (prompts of every image, in one file) is not an image.
    index = Path(server.settings.outputs_dir) / ".index" / "history.sqlite3"
    assert index.is_file()
    assert requests.get(f"{server.url}{API}/file={index.resolve()}", timeout=10).status_code == 404
    # (No event takes the gallery back as an input: tests/test_ui.py checks that no event takes a file.)
    # A file in Gradio's upload folder that this page did not make (another app's, an old copy).
    from gradio.utils import get_upload_folder

    stranger = Path(get_upload_folder()) / "zimage-test-stranger" / "secret.txt"
    stranger.parent.mkdir(parents=True, exist_ok=True)
    stranger.write_text("not yours")
    for target in ["/etc/passwd", "/proc/self/environ", str(SOURCE), "zimage/web/server.py", str(outputs_link),
                   str(stranger), "http://127.0.0.1:1/x", "%2Fetc%2Fpasswd", "/etc/passwd%00.png", "x" * 5000]:
        for route in ("/file=", "/file/"):
            r = requests.get(f"{server.url}{API}{route}{target}", timeout=10)
            assert r.status_code in (403, 404), (route, target[:80], r.status_code)
            assert b"root:" not in r.content and b"not yours" not in r.content


@pytest.mark.parametrize("name", ["%00", "a%00.png", "x" * 5000, "x" * 5000 + ".png", "a/" * 3000 + "b.png"])
def test_odd_outputs_names_are_404_not_500(server, name):
    r = requests.get(f"{server.url}/outputs/{name}", timeout=10)
    assert r.status_code == 404, (r.status_code, r.text[:200])
    assert "Traceback" not in r.text


def test_with_auth_heartbeat_reset_cancel_need_the_login(start_server, settings):
    srv = start_server(dataclasses.replace(settings, auth="me:secret"))
    with requests.get(srv.url + API + "/heartbeat/x", stream=True, timeout=10) as r:
        assert r.status_code == 401
    for path in ["/reset", "/cancel"]:
        r = requests.post(srv.url + API + path, json={"session_hash": "x", "fn_index": 0, "event_id": "y"}, timeout=10)
        assert r.status_code == 401, (path, r.status_code)
    login = requests.Session()
    assert login.post(srv.url + "/login", data={"username": "me", "password": "secret"}, timeout=10).ok
    with login.get(srv.url + API + "/heartbeat/x", stream=True, timeout=10) as r:
        assert r.status_code == 200


def test_an_open_heartbeat_does_not_keep_the_server_from_stopping(start_server, settings):
    srv = start_server(settings)
    ended = threading.Event()
    opened = threading.Event()

    def listen():
        with requests.get(srv.url + API + "/heartbeat/page", stream=True, timeout=30) as r:
            for _ in r.iter_lines():
                opened.set()
        ended.set()
    threading.Thread(target=listen, daemon=True).start()
    assert opened.wait(10)
    srv.server.should_exit = True
    srv.thread.join(5)
    assert not srv.thread.is_alive(), "the server was still up 5 s after should_exit"
    assert ended.wait(1), "the heartbeat stream did not end"


def test_malformed_host_headers_are_refused(server):
    port = server.settings.port
    for host in [f"127.0.0.1:{port} evil.com", f"127.0.0.1:{port}\tevil.com", "127.0.0.1:x", "127.0.0.1:99999",
                 f"127.0.0.1:{port}/evil", f"user@127.0.0.1:{port}"]:
        r = requests.get(server.url + "/health", headers={"Host": host}, timeout=10)
        assert r.status_code == 400, (host, r.status_code)
    assert requests.get(server.url + "/health", headers={"Host": f"localhost:{port}"}, timeout=10).ok


def test_origin_check_follows_scheme_and_allows_loopback_aliases(server):
    port = server.settings.port

    def unload(origin):
        return requests.post(server.url + "/unload", headers={"Origin": origin}, timeout=30).status_code
    assert unload(f"http://localhost:{port}") == 200         # the page opened as localhost, the app on 127.0.0.1
    assert unload(f"http://127.0.0.1:{port}") == 200
    assert unload(f"https://127.0.0.1:{port}") == 403        # another scheme is another origin
    assert unload(f"http://localhost:{port + 1}") == 403      # another local web app
    assert unload("null") == 403


@pytest.mark.parametrize("path", ["/config", API + "/info", API + "/file=/etc/passwd", "/health"])
def test_cors_headers_only_for_the_pages_own_origin(server, path):
    foreign = {"Origin": "http://localhost:3000"}
    r = requests.get(server.url + path, headers=foreign, timeout=10)
    assert not [k for k in r.headers if k.lower().startswith("access-control-")], dict(r.headers)
    pre = requests.options(server.url + path, timeout=10, headers={
        **foreign, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "content-type"})
    assert "access-control-allow-origin" not in {k.lower() for k in pre.headers}, dict(pre.headers)


@pytest.fixture
def held(start_server, settings):
    """A server with queue_max=1 whose first generation holds inside the transformer until released."""
    srv = start_server(dataclasses.replace(settings, queue_max=1))
    srv.manager.ensure_ready(60)
    release, entered = threading.Event(), threading.Event()

    def hold(*_):
        entered.set()
        release.wait(30)
    handle = srv.manager._pipe.transformer.register_forward_pre_hook(hold)
    yield srv, entered
    handle.remove()
    release.set()


def test_openai_429_says_when_to_come_back(held):
    srv, entered = held
    body = {"prompt": "x", "size": "256x256"}
    url = srv.url + "/v1/images/generations"
    threads = [threading.Thread(target=requests.post, args=(url,), kwargs={"json": body, "timeout": 60})
               for _ in range(2)]
    threads[0].start()
    assert entered.wait(30)
    threads[1].start()
    wait_for(lambda: srv.manager.status().queue_length == 2, 10, message="second job queued")
    r = requests.post(url, json=body, timeout=10)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, (r.status_code, dict(r.headers))
    assert r.json()["error"]["code"] == "queue_full"


def test_gradio_queue_full_503_says_when_to_come_back(held, monkeypatch):
    """Gradio's own queue fills only while every "gpu" slot is busy: one runs (held), one waits in ours, and
    the third slot's refusal (our QueueFull) is held until the test ends, so the fourth event waits in
    Gradio's queue (max_size 1) and the fifth is refused there, every run alike."""
    srv, entered = held
    refusing, done = threading.Event(), threading.Event()
    submit = srv.manager.submit

    def held_refusal(*args, **kwargs):
        try:
            return submit(*args, **kwargs)
        except Exception:
            refusing.set()
            done.wait(30)
            raise
    monkeypatch.setattr(srv.manager, "submit", held_refusal)
    data = small_generate(page_facts(srv.url), "x", 1)

    def post():
        return requests.post(srv.url + API + "/call/generate", json={"data": data}, timeout=10)
    try:
        first = post()
        assert first.status_code == 200
        threading.Thread(target=read_call_stream, args=(srv.url, "/call/generate", first.json()["event_id"]),
                         daemon=True).start()
        assert entered.wait(30)
        assert post().status_code == 200
        wait_for(lambda: srv.manager.status().queue_length == 2, 10, message="the second job waits in our queue")
        assert post().status_code == 200
        assert refusing.wait(10), "the third event did not reach our queue's refusal"
        assert post().status_code == 200                      # waits in Gradio's queue: every slot is busy
        r = post()
        assert r.status_code == 503, r.status_code
        assert int(r.headers["Retry-After"]) >= 1, dict(r.headers)
        assert json.loads(r.text)["detail"]
    finally:
        done.set()


def test_an_open_event_stream_of_a_running_generation_does_not_keep_the_server_up(held):
    srv, entered = held
    data = small_generate(page_facts(srv.url), "x", 1)
    first = requests.post(srv.url + API + "/call/generate", json={"data": data}, timeout=10)
    ended = threading.Event()

    def listen():
        try:
            read_call_stream(srv.url, "/call/generate", first.json()["event_id"])
        except requests.RequestException:
            pass
        ended.set()
    threading.Thread(target=listen, daemon=True).start()
    assert entered.wait(30)                    # the generation runs (held), its stream is open
    srv.server.should_exit = True
    srv.thread.join(5)
    assert not srv.thread.is_alive(), "the server was still up 5 s after should_exit"
    assert ended.wait(1)


def test_sigterm_stops_a_server_with_an_open_page_heartbeat(tiny_model_dir, tmp_path):
    import signal
    import subprocess
    import sys

    from conftest import free_port

    port = free_port()
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, str(root / "webui.py"), "--model", str(tiny_model_dir),
                             "--outputs", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                             "--port", str(port)], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"

        def up():
            try:
                return requests.get(url + "/health", timeout=2).ok
            except requests.ConnectionError:
                return proc.poll() is not None        # died: stop waiting, the assert below says so
        wait_for(up, 90, interval=0.2, message="the server to start")
        assert proc.poll() is None
        opened = threading.Event()

        def listen():
            try:
                with requests.get(url + API + "/heartbeat/page", stream=True, timeout=30) as r:
                    for _ in r.iter_lines():
                        opened.set()
            except requests.RequestException:
                pass
        threading.Thread(target=listen, daemon=True).start()
        assert opened.wait(10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=8) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_servable_file_resolves_links_and_refuses_the_rest(tmp_path):
    from zimage.web.gradio_files import servable_file

    out = tmp_path / "outputs"
    (out / "day").mkdir(parents=True)
    (out / "day" / "a.png").write_bytes(b"png")
    (out / "out.png").symlink_to("/etc/passwd")
    (out / "dir.png").symlink_to(tmp_path)
    (tmp_path / "secret.png").write_bytes(b"s")
    assert servable_file(str(out / "day" / "a.png"), out)
    assert servable_file(str(out / "day" / ".." / "day" / "a.png"), out)
    for path in [str(out / "out.png"), str(out / "dir.png"), str(out / "day"), str(out / ".." / "secret.png"),
                 str(tmp_path / "secret.png"), "/etc/passwd", "/proc/self/environ", "", None, 5, ["/etc/passwd"],
                 str(out / "day" / "a.png") + "\x00", "x" * 5000, "file://" + str(out / "day" / "a.png")]:
        assert not servable_file(path, out), path
    # A copy Gradio made counts only while it lies in Gradio's upload folder.
    assert not servable_file(str(tmp_path / "secret.png"), out, [{str(tmp_path / "secret.png")}])


@pytest.mark.parametrize("origin,host,ok", [
    ("http://127.0.0.1:7860", "127.0.0.1:7860", True),
    ("http://localhost:7860", "127.0.0.1:7860", True),
    ("http://[::1]:7860", "localhost:7860", True),
    ("https://127.0.0.1:7860", "127.0.0.1:7860", False),
    ("http://localhost:3000", "127.0.0.1:7860", False),
    ("http://box.lan", "box.lan:80", True),
    ("http://evil.lan:7860", "box.lan:7860", False),
    ("http://localhost:7860", "box.lan:7860", False),
    ("null", "127.0.0.1:7860", False),
    ("http://127.0.0.1:7860/path", "127.0.0.1:7860", False),
])
def test_origin_allowed(origin, host, ok):
    from zimage.web.security import origin_allowed

    assert origin_allowed(origin, host) is ok


def test_origin_of_a_tls_proxy_in_front_is_same_origin(server):
    port = server.settings.port
    r = requests.post(server.url + "/unload", timeout=30,
                      headers={"Origin": f"https://127.0.0.1:{port}", "X-Forwarded-Proto": "https"})
    assert r.status_code == 200


def _basic(raw: bytes) -> dict:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def test_a_non_ascii_login_works_and_hostile_basic_headers_are_401(start_server, settings):
    """secrets.compare_digest raised TypeError on a non-ASCII str: every API and MCP route was a 500."""
    import httpx
    import webuiapi

    srv = start_server(dataclasses.replace(settings, mcp=True, api_auth="jürgen:pässwörd,用户:密码🔑"))
    with httpx.Client(timeout=10) as http:      # httpx sends UTF-8 (RFC 7617), as browsers and curl do
        assert http.get(srv.url + "/health", auth=("用户", "密码🔑")).status_code == 200
        assert http.get(srv.url + "/v1/models", auth=("jürgen", "pässwörd")).status_code == 200
        assert http.get(srv.url + "/v1/models", auth=("jürgen", "passwörd")).status_code == 401
    client = webuiapi.WebUIApi(host="127.0.0.1", port=srv.settings.port)
    client.set_auth("jürgen", "pässwörd")       # requests sends Latin-1
    assert [n.rsplit(" [", 1)[0] for n in client.util_get_model_names()] == ["tiny"]
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    mcp_headers = {"Accept": "application/json, text/event-stream"}
    ok = requests.post(srv.url + "/gradio_api/mcp/", json=init, timeout=10,
                       headers={**mcp_headers, **_basic("用户:密码🔑".encode())})
    assert ok.status_code == 200, ok.text[:200]
    hostile = [_basic("用户:wrong🔑".encode()), _basic(b"\xff\xfe:\x80"), _basic("jürgen".encode()),
               _basic(b"j\xfcrgen:p\xe4ssw\xf6rd\x00"), {"Authorization": "Basic !!!not base64"},
               {"Authorization": "Basic YQ"}, {"Authorization": "Basic"}, {"Authorization": "Basic  "},
               {"Authorization": "Basic " + "用户".encode().decode("latin-1")}, {"Authorization": "Bearer abc"},
               {"Authorization": "basic " + "\u00e9" * 10}]
    for headers in hostile:
        for path in ("/health", "/sdapi/v1/sd-models", "/v1/models"):
            r = requests.get(srv.url + path, headers=headers, timeout=10)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", (headers, path, r.text[:200])
        r = requests.post(srv.url + "/gradio_api/mcp/", json=init, headers={**mcp_headers, **headers}, timeout=10)
        assert r.status_code == 401, (headers, r.status_code, r.text[:200])
    assert requests.get(srv.url + "/health", headers=_basic("jürgen:pässwörd".encode()), timeout=10).ok
