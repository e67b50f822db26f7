"""A local fake ModelScope hub on 127.0.0.1 that the real `modelscope` client downloads from.

Serves the routes that `modelscope` 1.40 / `modelscope-hub` 0.5 call for a model download:

    GET /api/v1/models/<owner>/<name>/repo/files?Revision=..&Recursive=..[&Root=..]   the file listing
    GET /api/v1/models/<owner>/<name>/repo?Revision=..&FilePath=..                     one file (Range honoured)
    GET /api/v1/models/<owner>/<name>/revisions                                        branches and tags
    GET /api/v1/models/<owner>/<name>                                                  legacy repo info
    GET /openapi/v1/models/<owner>/<name>                                              OpenAPI repo info
    GET /api/v1/repos/internalAccelerationInfo                                         "no intra-cloud region"

Anything else is answered 404 in the hub's JSON envelope, and logged as a warning.

Usage::

    with FakeHub({"Tongyi-MAI/Z-Image-Turbo": folder}) as hub:
        hub.configure_client(monkeypatch.setenv)     # env() + drop modelscope-hub's cached config
        snapshot_download("Tongyi-MAI/Z-Image-Turbo", cache_dir=tmp)

Fault injection (all attributes may be changed while the hub runs):

* `fail_after_bytes[path] = n`: the next response for that file sends `n` body bytes, then drops the
  connection. One-shot: the entry is removed when it fires, so the following request is served normally.
* `delay_per_chunk_s`: sleep this long before each `chunk_size` block of a file body.
* `offline = True`: every request is dropped without an answer (`offline_mode = "close"`), or answered
  503 (`offline_mode = "503"`). A transfer in progress is cut at its next chunk.
* `set_sha256(model_id, path, sha)` / `set_size(...)`: make the listing lie about one file.

Bookkeeping (thread-safe; read through the properties, which return copies):
`requests` (method, path with decoded query) in arrival order, `bytes_served` per repo file path
(repos that share a path share the count),
`file_requests` (path, Range header or None) per file request.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Literal, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

_REPO_ROUTE = re.compile(r"^/(api|openapi)/v1/models/([^/]+)/([^/]+)(/.*)?$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_COMMITTED = 1_700_000_000  # a fixed, plausible commit time for every file


@dataclass
class HubFile:
    """One file of a served repo: where its bytes live and what the listing says about it."""

    path: str          # path inside the repo, "/"-separated
    local: Path
    size: int          # as announced in the listing
    sha256: str        # as announced in the listing


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _scan(folder: Path) -> dict[str, HubFile]:
    files: dict[str, HubFile] = {}
    for local in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = local.relative_to(folder).as_posix()
        files[rel] = HubFile(rel, local, local.stat().st_size, _sha256(local))
    return files


class _DropConnection(Exception):
    """Raised inside a handler to end the connection without (the rest of) an answer."""


class FakeHub:
    """A fake ModelScope hub serving `repos` ({"owner/name": folder}) over HTTP on 127.0.0.1."""

    def __init__(self, repos: Mapping[str, Path | str], *, revision: str = "master",
                 chunk_size: int = 64 * 1024) -> None:
        self.revision = revision
        self.chunk_size = chunk_size
        self.manifest: dict[str, dict[str, HubFile]] = {
            model_id: _scan(Path(folder)) for model_id, folder in repos.items()}
        # Fault injection knobs.
        self.fail_after_bytes: dict[str, int] = {}
        self.delay_per_chunk_s: float = 0.0
        self.offline: bool = False
        self.offline_mode: Literal["close", "503"] = "close"
        # Bookkeeping, guarded by _lock.
        self._lock = threading.Lock()
        self._requests: list[tuple[str, str]] = []
        self._bytes_served: Counter[str] = Counter()
        self._file_requests: list[tuple[str, str | None]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> FakeHub:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-modelscope-hub",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        log.info("fake ModelScope hub on %s serving %s", self.endpoint, ", ".join(self.manifest))
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._thread = None
        reset_client_config()     # so no later client keeps using this dead endpoint

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeHub is not started")
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment that points the modelscope client here and stops it probing other hosts."""
        return {
            "MODELSCOPE_ENDPOINT": self.endpoint,             # also makes it skip the .cn/.ai probe
            "MODELSCOPE_DOWNLOAD_INTRA_CLOUD": "false",       # no region probe / x-aliyun-region-id
            "MODELSCOPE_DOWNLOAD_INTER_CLOUD_REGIONS": "",    # no HEAD redirect probes
            "MODELSCOPE_PREFER_AI_SITE": "false",
            "MODELSCOPE_API_TOKEN": "",                       # never send a real token to the fake
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def configure_client(self, setenv: Callable[[str, str], None] | None = None) -> None:
        """Point the modelscope client of this process here.

        Sets `env()` through `setenv` (e.g. pytest's `monkeypatch.setenv`; default: `os.environ`), then
        drops modelscope-hub's process-wide config, which keeps the endpoint it read on first use.
        """
        for key, value in self.env().items():
            (setenv or os.environ.__setitem__)(key, value)
        reset_client_config()

    # ----------------------------------------------------------------- manifest overrides
    def file(self, model_id: str, path: str) -> HubFile:
        return self.manifest[model_id][path]

    def set_sha256(self, model_id: str, path: str, sha256: str) -> None:
        """Announce `sha256` for this file in the listing (its bytes stay the same)."""
        self.manifest[model_id][path].sha256 = sha256

    def set_size(self, model_id: str, path: str, size: int) -> None:
        """Announce `size` for this file in the listing (its bytes stay the same)."""
        self.manifest[model_id][path].size = size

    # ----------------------------------------------------------------- bookkeeping
    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path with decoded query) of every request, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def bytes_served(self) -> dict[str, int]:
        """File body bytes actually written to clients, per repo file path."""
        with self._lock:
            return dict(self._bytes_served)

    @property
    def file_requests(self) -> list[tuple[str, str | None]]:
        """(repo file path, Range header or None) of every file download request."""
        with self._lock:
            return list(self._file_requests)

    def route_counts(self) -> Counter[str]:
        """Request count per route name: "listing", "file", "revisions", "repo_info", ... or "unknown"."""
        return Counter(_route_name(path) for _, path in self.requests)

    def reset_counters(self) -> None:
        with self._lock:
            self._requests.clear()
            self._bytes_served.clear()
            self._file_requests.clear()

    # ----------------------------------------------------------------- used by the handler
    def _record(self, method: str, target: str) -> None:
        with self._lock:
            self._requests.append((method, target))

    def _record_file(self, path: str, range_header: str | None) -> None:
        with self._lock:
            self._file_requests.append((path, range_header))

    def _add_bytes(self, path: str, n: int) -> None:
        with self._lock:
            self._bytes_served[path] += n

    def _take_fail_after(self, path: str) -> int | None:
        with self._lock:
            return self.fail_after_bytes.pop(path, None)

    def _listing(self, model_id: str, root: str, recursive: bool) -> list[dict[str, Any]]:
        files = self.manifest[model_id]
        root = root.strip("/")
        dirs = sorted({"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)})
        entries: list[dict[str, Any]] = []
        for path in dirs + sorted(files):
            if root and not path.startswith(root + "/"):
                continue
            rest = path[len(root) + 1:] if root else path
            if not recursive and "/" in rest:
                continue
            f = files.get(path)
            entries.append({
                "Path": path, "Name": path.rsplit("/", 1)[-1],
                "Type": "blob" if f else "tree",
                "Size": f.size if f else 0,
                "Sha256": f.sha256 if f else "",
                "Revision": self.revision, "Mode": "100644" if f else "040000",
                "IsLFS": bool(f and f.path.endswith((".safetensors", ".bin", ".pt", ".pth"))),
                "CommittedDate": _COMMITTED, "CommitMessage": "upload",
            })
        return entries


def reset_client_config() -> None:
    """Make modelscope-hub re-read MODELSCOPE_* variables on its next use.

    `modelscope_hub.config.get_default_config()` builds one HubConfig per process, on first use, and
    every later `HubApi()` / `snapshot_download()` reuses its endpoint, token and cache dir, whatever
    the environment says by then.
    """
    try:
        from modelscope_hub.config import set_default_config
    except ImportError:      # an older modelscope without modelscope-hub reads the environment each time
        return
    set_default_config(None)


def _route_name(target: str) -> str:
    path = urlsplit(target).path
    if path == "/api/v1/repos/internalAccelerationInfo":
        return "acceleration_info"
    m = _REPO_ROUTE.match(path)
    if not m:
        return "unknown"
    api, rest = m.group(1), m.group(4) or ""
    if api == "openapi":
        return "openapi_repo_info" if not rest else "unknown"
    return {"": "repo_info", "/repo/files": "listing", "/repo": "file",
            "/revisions": "revisions"}.get(rest, "unknown")


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubHandler):
        pass

    Handler.hub = hub
    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("fake hub: " + format, *args)

    def do_GET(self) -> None:
        self._handle(head=False)

    def do_HEAD(self) -> None:
        self._handle(head=True)

    # ------------------------------------------------------------------ dispatch
    def _handle(self, head: bool) -> None:
        hub = self.hub
        target = unquote(self.path)
        hub._record(self.command, target)
        try:
            if hub.offline:
                if hub.offline_mode == "503":
                    self._json(503, {"Code": 503, "Success": False, "Message": "fake hub is offline"}, head)
                    return
                raise _DropConnection
            self._dispatch(head)
        except _DropConnection:
            self._drop()
        except ConnectionError:      # the client went away (cancelled, or timed out)
            self.close_connection = True

    def _dispatch(self, head: bool) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        path = unquote(url.path)
        if path == "/api/v1/repos/internalAccelerationInfo":
            self._ok({"InternalRegionQueryAddress": ""}, head)
            return
        m = _REPO_ROUTE.match(path)
        model_id = f"{m.group(2)}/{m.group(3)}" if m else ""
        if not m or model_id not in self.hub.manifest:
            self._not_found(f"no route or repo for {path}", head)
            return
        api, rest = m.group(1), m.group(4) or ""
        if api == "openapi":
            if rest:
                self._not_found(f"no route for {path}", head)
            else:
                self._json(200, {"success": True, "request_id": "fake",
                                 "data": self._repo_info(model_id, openapi=True)}, head)
        elif rest == "":
            self._ok(self._repo_info(model_id, openapi=False), head)
        elif rest == "/revisions":
            self._ok({"RevisionMap": {"Branches": [{"Revision": self.hub.revision, "CreatedAt": _COMMITTED}],
                                      "Tags": []}}, head)
        elif rest == "/repo/files":
            self._files(model_id, query, head)
        elif rest == "/repo":
            self._file(model_id, query, head)
        else:
            self._not_found(f"no route for {path}", head)

    # ------------------------------------------------------------------ routes
    def _repo_info(self, model_id: str, openapi: bool) -> dict[str, Any]:
        owner, name = model_id.split("/", 1)
        size = sum(f.size for f in self.hub.manifest[model_id].values())
        if openapi:
            return {"id": model_id, "owner": owner, "name": name, "visibility": "public",
                    "display_name": name, "file_size": size, "downloads": 0, "likes": 0,
                    "private": False, "gated": False, "login_required": False}
        return {"Id": 1, "Path": owner, "Name": name, "ChineseName": name, "Visibility": 5,
                "IsPublished": 1, "Downloads": 0, "Stars": 0, "ModelSize": size,
                "CreatedTime": _COMMITTED, "LastUpdatedTime": _COMMITTED}

    def _files(self, model_id: str, query: dict[str, str], head: bool) -> None:
        if not self._revision_ok(query, head):
            return
        recursive = query.get("Recursive", "False").lower() == "true"
        entries = self.hub._listing(model_id, query.get("Root", ""), recursive)
        if "PageSize" in query:
            size = max(int(query["PageSize"] or 0), 1)
            page = max(int(query.get("PageNumber") or 1), 1)
            entries = entries[(page - 1) * size:page * size]
        self._ok({"Files": entries, "IsTruncated": False}, head)

    def _file(self, model_id: str, query: dict[str, str], head: bool) -> None:
        if not self._revision_ok(query, head):
            return
        file_path = query.get("FilePath", "").lstrip("/")
        entry = self.hub.manifest[model_id].get(file_path)
        if entry is None:
            self._not_found(f"file {file_path!r} not in {model_id}", head)
            return
        range_header = self.headers.get("Range")
        self.hub._record_file(file_path, range_header)
        size = entry.local.stat().st_size
        start, end = 0, size - 1
        status = 200
        if range_header:
            span = _parse_range(range_header, size)
            if span is None:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = span
            status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{entry.sha256}"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            return
        self._stream(entry.local, file_path, start, length)

    def _stream(self, local: Path, file_path: str, start: int, length: int) -> None:
        hub = self.hub
        cut_after = hub._take_fail_after(file_path)
        sent = 0
        with local.open("rb") as fh:
            fh.seek(start)
            while sent < length:
                if hub.delay_per_chunk_s:
                    time.sleep(hub.delay_per_chunk_s)
                if hub.offline:
                    log.info("fake hub: went offline during %s after %d bytes", file_path, sent)
                    raise _DropConnection
                want = min(hub.chunk_size, length - sent)
                if cut_after is not None:
                    want = min(want, cut_after - sent)
                    if want <= 0:
                        log.info("fake hub: dropping %s after %d bytes (fail_after_bytes)", file_path, sent)
                        raise _DropConnection
                block = fh.read(want)
                if not block:
                    break
                self.wfile.write(block)
                sent += len(block)
                hub._add_bytes(file_path, len(block))
        self.wfile.flush()

    # ------------------------------------------------------------------ helpers
    def _revision_ok(self, query: dict[str, str], head: bool) -> bool:
        revision = query.get("Revision") or self.hub.revision
        if revision != self.hub.revision:
            self._not_found(f"no revision {revision!r}", head)
            return False
        return True

    def _ok(self, data: Any, head: bool) -> None:
        self._json(200, {"Code": 200, "Success": True, "Message": "success", "RequestId": "fake",
                         "Data": data}, head)

    def _not_found(self, message: str, head: bool) -> None:
        log.warning("fake hub: 404 for %s %s (%s)", self.command, self.path, message)
        self._json(404, {"Code": 10010205001, "Success": False, "Message": message, "RequestId": "fake"}, head)

    def _json(self, status: int, body: Any, head: bool) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if not head:
            self.wfile.write(raw)

    def _drop(self) -> None:
        """Close the connection now: the client sees a body shorter than Content-Length, or no answer."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end) inclusive for a single `bytes=` range, or None when it cannot be satisfied."""
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):                       # bytes=-N: the last N bytes
        n = int(m.group(2))
        return (max(size - n, 0), size - 1) if n > 0 and size > 0 else None
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)
