"""--mcp: Gradio's MCP server with the tools generate, grid, status, preload, unload and enhance_prompt
(tests/test_enhance.py), driven by the official `mcp` Python client (streamable HTTP) against the
real server on the tiny model."""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json

import httpx
import pytest
import requests
from PIL import Image

mcp = pytest.importorskip("mcp", reason="the mcp client is not installed (pip install -r requirements-dev.txt)")
from mcp import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

MCP_URL = "/gradio_api/mcp/"
TOOLS = ["enhance_prompt", "generate", "grid", "preload", "status", "unload"]
GRID_BASE = {"prompt": "a fox", "width": 256, "height": 256, "num_inference_steps": 2}


async def _session_calls(url: str, calls: list[tuple[str, dict]], auth=None, headers=None) -> tuple[list[str], list]:
    """(tool names, results of `calls` in order) over one MCP session."""
    async with httpx.AsyncClient(auth=auth, headers=headers, timeout=httpx.Timeout(60, read=300)) as http:
        async with streamable_http_client(url, http_client=http) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                names = [t.name for t in (await session.list_tools()).tools]
                results = [await session.call_tool(name, args) for name, args in calls]
    return names, results


def run_mcp(url: str, calls: list[tuple[str, dict]] = (), auth=None, headers=None):
    return asyncio.run(_session_calls(url, list(calls), auth, headers))


def _text(result) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


def test_mcp_lists_the_tools_and_runs_them(start_server, settings):
    srv = start_server(dataclasses.replace(settings, mcp=True))
    names, (status, preload, generate, unload, bad) = run_mcp(srv.url + MCP_URL, [
        ("status", {}), ("preload", {"wait": True}),
        ("generate", {"prompt": "a red fox", "width": 256, "height": 320, "num_inference_steps": 2, "seed": 7}),
        ("unload", {}), ("generate", {"prompt": "x", "width": 250})])
    assert sorted(names) == TOOLS
    assert json.loads(_text(status))["state"] == "unloaded"
    assert not preload.isError and json.loads(_text(preload))["status"] == "healthy"

    assert not generate.isError, _text(generate)
    images = [c for c in generate.content if c.type == "image"]
    assert len(images) == 1 and images[0].mimeType == "image/png", generate.content
    assert Image.open(io.BytesIO(base64.b64decode(images[0].data))).size == (256, 320)
    info = json.loads(_text(generate).split("\n")[-1])
    assert info["seed"] == 7 and (info["width"], info["height"]) == (256, 320)
    saved = requests.get(info["url"], timeout=10)       # the outputs route serves the same file
    assert saved.status_code == 200 and Image.open(io.BytesIO(saved.content)).size == (256, 320)

    assert json.loads(_text(unload))["state"] == "unloaded"
    assert bad.isError and "width" in _text(bad) and "invalid_request" in _text(bad)
    # The page's private events stay private, and the page's own generate event is not a tool.
    info = requests.get(srv.url + "/gradio_api/info", timeout=10).json()["named_endpoints"]
    assert "/generate" in info and not any("preload" in name and "mcp" not in name for name in info)


def test_mcp_is_off_by_default(server):
    assert requests.post(server.url + MCP_URL, json={}, timeout=10).status_code == 404
    assert requests.get(server.url + "/gradio_api/mcp/sse", timeout=10).status_code == 404


def test_mcp_with_auth_needs_the_api_login(start_server, settings):
    srv = start_server(dataclasses.replace(settings, mcp=True, auth="me:secret"))
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    for path in (MCP_URL, "/gradio_api/mcp", "/gradio_api/mcp/sse", "/gradio_api/mcp/schema",
                 "/gradio_api/mcp/messages/?session_id=x"):
        r = requests.post(srv.url + path, json=init, headers=headers, timeout=10)
        assert r.status_code == 401, (path, r.status_code, r.text[:200])
        assert requests.get(srv.url + path, headers=headers, timeout=10).status_code == 401, path
    with pytest.raises(Exception):
        run_mcp(srv.url + MCP_URL, auth=("me", "wrong"))
    names, (status, bad) = run_mcp(srv.url + MCP_URL, [("status", {}), ("generate", {"prompt": "x", "width": 250})],
                                   auth=("me", "secret"), headers={"Accept-Language": "zh-CN"})
    assert sorted(names) == TOOLS
    assert json.loads(_text(status))["state"] == "unloaded"
    assert bad.isError and "invalid_request: width: 必须在 256 到 2048 之间" in _text(bad)   # the request's language


def _call(name: str, arguments: str, ident: str = "7") -> str:
    return ('{"jsonrpc": "2.0", "id": %s, "method": "tools/call", "params": {"name": "%s", "arguments": %s}}'
            % (ident, name, arguments))


def test_mcp_refuses_huge_numbers_deep_nesting_and_lone_surrogates_with_json_rpc_errors(start_server, settings):
    """A 5000-digit integer or 10,000 nested lists in a tool's arguments were a 500 from the mcp library."""
    srv = start_server(dataclasses.replace(settings, mcp=True))
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    big, deep, nested = "9" * 5000, "[" * 10_000 + "]" * 10_000, "[" * 900 + "]" * 900
    cases = [(_call("generate", '{"prompt": "x", "width": %s}' % big), -32700, "4300 digits"),
             (_call("status", "{}", ident=big), -32700, "4300 digits"),
             (_call("generate", '{"prompt": %s}' % deep), -32700, "nested too deeply"),
             (_call("generate", '{"prompt": "x", "seed": %s}' % nested), -32602, "params: nests more than"),
             (_call("generate", '{"prompt": "x\\ud800", "width": 256}'), -32602, "params.arguments.prompt: "),
             (_call("generate", '{"prompt": "x", "\\udfff": 1}'), -32602, "params.arguments: the key name"),
             ("[" + _call("status", "{}") + ', {"id": "\\ud800"}]', -32602, "[1].id: ")]
    for body, code, words in cases:
        r = requests.post(srv.url + MCP_URL, data=body, headers=headers, timeout=30)
        assert r.status_code == 400, (words, r.status_code, r.text[:300])
        error = r.json()["error"]
        assert error["code"] == code and words in error["message"], (words, error)
    assert r.json()["id"] is None               # the id of a batch is not one request's
    r = requests.post(srv.url + MCP_URL, data=_call("generate", '{"prompt": "x\\ud800"}'), headers=headers, timeout=30)
    assert r.json()["id"] == 7
    _, (status,) = run_mcp(srv.url + MCP_URL, [("status", {})])      # still serving, the real client too
    assert json.loads(_text(status))["state"] == "unloaded"
    assert srv.manager.load_count == 0


def _image(result) -> Image.Image:
    images = [c for c in result.content if c.type == "image"]
    assert len(images) == 1 and images[0].mimeType == "image/png", result.content
    return Image.open(io.BytesIO(base64.b64decode(images[0].data)))


def test_mcp_generate_takes_variety_with_the_apis_checks(start_server, settings):
    srv = start_server(dataclasses.replace(settings, mcp=True))
    one = {"prompt": "a fox", "width": 256, "height": 256, "num_inference_steps": 2, "seed": 3}
    _, results = run_mcp(srv.url + MCP_URL, [("generate", dict(one, variety=0.4)), ("generate", dict(one, variety=2)),
                                             ("generate", dict(one, variety=-0.1)), ("generate", dict(one, variety=True))])
    made, *refused, typed = results
    assert not made.isError, _text(made)
    assert typed.isError and "not of type 'number'" in _text(typed)     # the tool's schema, checked by the mcp library
    info = json.loads(_text(made).split("\n")[-1])
    assert info["variety"] == 0.4 and "Variety: 0.4" in info["parameters"]
    with Image.open(info["file"]) as im:
        assert "Variety: 0.4" in im.info["parameters"]
    for bad, value in zip(refused, (2, -0.1)):            # /generate's words for the same values
        answer = requests.post(srv.url + "/generate", json=dict(one, variety=value), timeout=30).json()["error"]
        assert bad.isError and f"invalid_request: {answer['message']}" in _text(bad), (_text(bad), answer)


def test_mcp_grid_makes_the_grid_as_post_grid_does(start_server, settings):
    srv = start_server(dataclasses.replace(settings, mcp=True, grid_max_cells=4))
    body = {"base": GRID_BASE, "x": {"field": "seed", "values": [11, 12]}, "y": {"field": "variety", "values": "0, 0.5"}}
    _, (made,) = run_mcp(srv.url + MCP_URL, [("grid", body)])
    assert not made.isError, _text(made)
    answer = json.loads(_text(made).split("\n")[-1])
    assert answer["cells_total"] == 4 and len(answer["cells"]) == 4 and answer["stopped"] is False
    assert "image" not in answer                           # the picture is the image content, not base64 text
    picture = _image(made)
    with Image.open(answer["file"]) as saved_grid:
        assert saved_grid.size == picture.size and "Script: X/Y/Z plot" in saved_grid.info["parameters"]
        assert picture.convert("RGB").tobytes() == saved_grid.convert("RGB").tobytes()
    assert requests.get(answer["url"], timeout=10).status_code == 200
    seen = set()
    for cell in answer["cells"]:
        with Image.open(cell["file"]) as im:
            params = im.info["parameters"]
        assert f"Seed: {cell['values']['x']}" in params
        assert (f"Variety: {cell['values']['y']:g}" in params) == (cell["values"]["y"] > 0)
        seen.add((cell["values"]["x"], cell["values"]["y"]))
        assert requests.get(cell["url"], timeout=10).status_code == 200
    assert seen == {(11, 0.0), (12, 0.0), (11, 0.5), (12, 0.5)}


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_mcp_grid_refuses_what_post_grid_refuses_in_the_same_words(start_server, settings, lang):
    srv = start_server(dataclasses.replace(settings, mcp=True, grid_max_cells=4))
    bodies = [{"base": GRID_BASE, "x": {"field": "steps", "values": [2, 80]}},
              {"base": GRID_BASE, "x": {"field": "seed", "values": "1-3"}, "y": {"field": "seed", "values": "1-2"}},
              {"base": GRID_BASE, "x": {"field": "colour", "values": [1]}},
              {"base": {**GRID_BASE, "width": 100}, "x": {"field": "seed", "values": [1]}},
              {"base": GRID_BASE, "x": {"field": "variety", "values": [0, 1.5]}},
              {"base": {**GRID_BASE, "num_images": 2}, "x": {"field": "seed", "values": [1]}},
              {"base": GRID_BASE, "x": {"field": "seed", "values": [1]}, "z": {"field": "seed", "values": 5}}]
    headers = {"Accept-Language": "zh-CN"} if lang == "zh" else {}
    _, results = run_mcp(srv.url + MCP_URL, [("grid", b) for b in bodies], headers=headers)
    for body, result in zip(bodies, results):
        error = requests.post(srv.url + "/grid", json=body, headers=headers, timeout=30).json()["error"]
        assert result.isError and f"{error['code']}: {error['message']}" in _text(result), (_text(result), error)
    assert srv.manager.load_count == 0                     # refused before any cell ran
