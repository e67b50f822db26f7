"""A local fake ModelScope hub on 127.0.0.1 that the real `modelscope` client downloads from.

Serves the routes that `modelscope` 1.40 / `modelscope-hub` 0.5 call for a model download:

    GET /api/v1/models/<owner>/<name>/repo/files?Revision=..&Recursive=..[&Root=..]   the file listing
    GET /api/v1/models/<owner>/<name>/repo?Revision=..&FilePath=..                     one file (Range honoured)
    GET /api/v1/models/<owner>/<name>/revisions                                        branches and tags
    GET /api/v1/models/<owner>/<name>                                                  legacy repo info
    GET /openapi/v1/models/<owner>/<name>                                              OpenAPI repo info
    GET /api/v1/repos/internalAccelerationInfo                                         "no intra-cloud region"

Anything else is answered 404 in the hub's JSON envelope, and logged as a warning
(the routes and their answers: fake_hub_routes.py).

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
import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from .fake_hub_routes import COMMITTED, make_handler, route_name

log = logging.getLogger(__name__)


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
        server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self))
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
        return Counter(route_name(path) for _, path in self.requests)

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
                "CommittedDate": COMMITTED, "CommitMessage": "upload",
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
