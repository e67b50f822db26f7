"""The page's per-browser registry: which jobs a browser has running and its recent results.

A browser keeps a random client id in its localStorage, so its jobs and results outlive the Gradio
session of one tab: a reloaded page finds its running job and its gallery here. The gallery is
built from these server-side entries only, never from paths a client sends back. With a `kept`
memory (web.page_gallery) the saved results also outlive the server: a browser the registry does
not know yet gets its results back from there.
"""
from __future__ import annotations

import collections
import logging
import re
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

log = logging.getLogger(__name__)

# token_urlsafe(18) makes 24 characters; anything else the client sends is not one of ours.
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
MAX_CLIENTS = 256       # browsers remembered; the oldest is forgotten first (a client id costs nothing to make)
MAX_RESULTS = 48        # the page's gallery size


def new_client_id() -> str:
    return secrets.token_urlsafe(18)


def valid_client_id(value: Any) -> str | None:
    """`value` when it is a client id this page could have made, else None."""
    return value if isinstance(value, str) and CLIENT_ID.fullmatch(value) else None


@dataclass(frozen=True)
class Result:
    # The caption, or what writes it in the reader's language (a gallery made in English showed
    # English captions after the switch to Chinese).
    caption: str | Callable[[str], str]
    path: Path | None = None       # the saved PNG under outputs
    image: Any = None              # the image itself when saving failed

    def caption_in(self, lang: str) -> str:
        return self.caption if isinstance(self.caption, str) else self.caption(lang)

    def gallery_item(self, lang: str = "en") -> tuple[Any, str] | None:
        if self.path is not None:
            return (str(self.path), self.caption_in(lang)) if self.path.is_file() else None
        return (self.image, self.caption_in(lang)) if self.image is not None else None


class KeptResults(Protocol):
    """Where a browser's saved results are kept across restarts (web.page_gallery)."""
    def record(self, client: str, results: list[Result]) -> None: ...
    def restore(self, client: str) -> list[Result]: ...


@dataclass
class _Client:
    results: collections.deque
    running: list = field(default_factory=list)      # jobs submitted and not finished, oldest first


class PageJobs:
    """Thread-safe; the generate handlers, the done callbacks and the timer all reach it."""

    def __init__(self, max_clients: int = MAX_CLIENTS, max_results: int = MAX_RESULTS,
                 kept: KeptResults | None = None):
        self._max_clients = max_clients
        self._max_results = max_results
        self._kept = kept
        self._lock = threading.Lock()
        self._clients: collections.OrderedDict[str, _Client] = collections.OrderedDict()

    def _client_locked(self, client: str) -> _Client:
        entry = self._clients.get(client)
        if entry is None:
            # A browser first seen since the start: its results from before a restart, if kept.
            restored = self._kept.restore(client) if self._kept is not None else []
            entry = _Client(collections.deque(restored, maxlen=self._max_results))
            self._clients[client] = entry
            while len(self._clients) > self._max_clients:
                # Forget an idle browser first; one with a running job only when all are busy.
                idle = next((k for k, c in self._clients.items() if not c.running and k != client), None)
                self._clients.pop(idle if idle is not None else next(iter(self._clients)))
        self._clients.move_to_end(client)
        return entry

    def start(self, client: str, job: Any) -> None:
        with self._lock:
            self._client_locked(client).running.append(job)

    def finish(self, client: str, job: Any, results: list[Result]) -> None:
        """`job` ended; its results (newest first in the gallery) join the client's."""
        with self._lock:
            entry = self._client_locked(client)
            if job in entry.running:
                entry.running.remove(job)
            for r in reversed(results):
                entry.results.appendleft(r)
        if self._kept is not None:
            self._kept.record(client, results)

    def running(self, client: str | None) -> list:
        with self._lock:
            entry = self._clients.get(client) if client else None
            return list(entry.running) if entry else []

    def results(self, client: str | None) -> list[Result]:
        with self._lock:
            if client and self._kept is not None:
                return list(self._client_locked(client).results)
            entry = self._clients.get(client) if client else None
            return list(entry.results) if entry else []

    def gallery(self, client: str | None, lang: str = "en") -> list[tuple[Any, str]]:
        """The client's recent results as gallery items, captioned in `lang`; files deleted since are left out."""
        return [item for item in (r.gallery_item(lang) for r in self.results(client)) if item is not None]


class PageRuns:
    """The page's runs of several jobs under way (Batch count, Generate forever), by owner (the
    browser's client id, else its session): Stop stays on between their jobs, and a Stop ends the
    run even in the instant when none of its jobs is in the backend's queue (explore/in_turn.py).
    Thread-safe: the generate handlers, Stop and the timer reach it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._stops: dict[str | None, list[threading.Event]] = {}

    def begin(self, owner: str | None) -> threading.Event:
        """A run starts; the event it gets is set by `stop`."""
        event = threading.Event()
        with self._lock:
            self._stops.setdefault(owner, []).append(event)
        return event

    def end(self, owner: str | None, event: threading.Event) -> None:
        with self._lock:
            runs = self._stops.get(owner, [])
            if event in runs:
                runs.remove(event)
            if not runs:
                self._stops.pop(owner, None)

    def stop(self, owner: str | None) -> int:
        """Stop the owner's runs; how many there were."""
        with self._lock:
            runs = list(self._stops.get(owner, []))
        for event in runs:
            event.set()
        return len(runs)

    def active(self, owner: str | None) -> bool:
        with self._lock:
            return bool(self._stops.get(owner))
