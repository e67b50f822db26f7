"""The fake ModelScope hub's HTTP side (fake_hub.py owns the repos, the fault settings and the
counters): which route a request names, the handler that answers each route the `modelscope`
client calls (listing, file with Range, revisions, repo info), and the faults it plays (a dropped
connection mid-body, a slow chunk, an offline hub).
"""
from __future__ import annotations

import json
import logging
import re
import socket
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

_REPO_ROUTE = re.compile(r"^/(api|openapi)/v1/models/([^/]+)/([^/]+)(/.*)?$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
COMMITTED = 1_700_000_000  # a fixed, plausible commit time for every file


class _DropConnection(Exception):
    """Raised inside a handler to end the connection without (the rest of) an answer."""


def route_name(target: str) -> str:
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


def make_handler(hub) -> type[BaseHTTPRequestHandler]:
    """A handler class bound to `hub`, the fake_hub.FakeHub whose repos and faults it serves."""
    class Handler(_HubHandler):
        pass

    Handler.hub = hub
    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    hub: Any                  # the fake_hub.FakeHub (not imported: it imports this module)
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
            self._ok({"RevisionMap": {"Branches": [{"Revision": self.hub.revision, "CreatedAt": COMMITTED}],
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
                "CreatedTime": COMMITTED, "LastUpdatedTime": COMMITTED}

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
