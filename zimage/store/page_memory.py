"""What the page remembers of each browser across a server restart, next to the History index in
`<outputs>/.index/` (a hidden folder: never served, gradio_files.servable_file):

- `page_secret()`: the key Gradio's BrowserState encrypts the browser's values with (the page's
  client id, its saved settings). Gradio makes a random one per process, so after a restart the
  browser's values no longer decrypted and the page came back with default settings and a new
  client id, its results gone from the gallery although the browser still held them.
- `RecentResults`: which images each browser's gallery showed (its client id -> the images'
  paths, newest first), so a restarted server gives a browser its last results back. The images'
  settings come from the History index, not from here. No torch.
"""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

INDEX_DIR = ".index"                 # the History index's folder (store.history.INDEX_DIR)
SECRET_FILE = "page-secret"
RESULTS_FILE = "page-results.sqlite3"
MAX_CLIENTS = 256                    # browsers remembered, as web.page_jobs keeps in memory
_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (client TEXT NOT NULL, path TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS results_client ON results (client, at DESC);
"""


def page_secret(root: str | Path) -> str:
    """The outputs folder's BrowserState secret: made once (readable by this user only), then read."""
    folder = Path(root) / INDEX_DIR
    path = folder / SECRET_FILE
    try:
        value = path.read_text().strip()
        if len(value) >= 32:
            return value
    except OSError:
        pass
    value = secrets.token_urlsafe(32)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
    except OSError as e:      # the page still works; its browsers' values last until the next restart
        log.warning("could not keep the page's secret in %s: %s", path, e)
    return value


class RecentResults:
    """Thread-safe: the page's done callbacks record, its loads read. A failure to read or write is
    logged and costs only the memory across restarts (the gallery in memory is unaffected)."""

    def __init__(self, root: str | Path, per_client: int, max_clients: int = MAX_CLIENTS):
        self.path = Path(root) / INDEX_DIR / RESULTS_FILE
        self.per_client = per_client
        self.max_clients = max_clients
        self._lock = threading.Lock()       # one transaction at a time from this process's threads

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One transaction on a connection of its own, closed after it (under the lock)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, contextlib.closing(sqlite3.connect(self.path, timeout=5)) as conn, conn:
            conn.executescript(_SCHEMA)
            yield conn

    def record(self, client: str, paths: list[str]) -> None:
        """`paths` (relative to the outputs folder, newest first) joined `client`'s gallery now."""
        if not paths:
            return
        now = time.time()
        rows = [(client, p, now + (len(paths) - i) * 1e-6) for i, p in enumerate(paths)]   # keeps their order
        try:
            with self._connect() as conn:
                conn.executemany("INSERT INTO results VALUES (?, ?, ?)", rows)
                conn.execute("DELETE FROM results WHERE client = ? AND rowid NOT IN (SELECT rowid FROM results "
                             "WHERE client = ? ORDER BY at DESC LIMIT ?)", (client, client, self.per_client))
                conn.execute("DELETE FROM results WHERE client NOT IN (SELECT client FROM results GROUP BY client "
                             "ORDER BY MAX(at) DESC LIMIT ?)", (self.max_clients,))
        except (sqlite3.Error, OSError) as e:
            log.warning("could not remember the results of a browser in %s: %s", self.path, e)

    def recent(self, client: str) -> list[str]:
        """`client`'s recorded paths, newest first."""
        if not self.path.is_file():
            return []
        try:
            with self._connect() as conn:
                rows = conn.execute("SELECT path FROM results WHERE client = ? ORDER BY at DESC LIMIT ?",
                                    (client, self.per_client)).fetchall()
        except (sqlite3.Error, OSError) as e:
            log.warning("could not read the results of a browser in %s: %s", self.path, e)
            return []
        return [r[0] for r in rows]
