"""A browser's gallery across server restarts: the saved results of each client id are recorded in
the outputs folder (store.page_memory), and a restarted server gives them back with their captions
made from the History index (the image's own settings), in the reader's language.

Before (issue 28): the gallery's last results lived only in this process (web.page_jobs), so a
restart showed an empty gallery although the images were still in outputs and History.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

from ...store.history import HistoryIndex
from ...store.page_memory import RecentResults
from .page_jobs import Result
from .ui_params import gallery_caption

log = logging.getLogger(__name__)


class KeptGalleries:
    """web.page_jobs.KeptResults over the outputs folder `root` and its History index."""

    def __init__(self, root: Path, history: HistoryIndex, per_client: int):
        self.root = Path(root).resolve()
        self.history = history
        self.recent = RecentResults(self.root, per_client)

    def record(self, client: str, results: list[Result]) -> None:
        paths = []
        for r in results:
            if r.path is not None and Path(r.path).resolve().is_relative_to(self.root):
                paths.append(Path(r.path).resolve().relative_to(self.root).as_posix())
        self.recent.record(client, paths)

    def restore(self, client: str) -> list[Result]:
        out = []
        for rel in self.recent.recent(client):
            try:
                entry = self.history.get(rel)
            except Exception as e:          # the index is derived data: without it, no captions
                log.warning("could not read %s from the history index: %s", rel, e)
                entry = None
            path = self.root / rel
            if entry is None or not path.is_file():
                continue                    # deleted since (History's Delete, or by hand)
            # called with the reader's language as its last argument (Result.caption_in)
            caption = functools.partial(gallery_caption, entry.prompt, entry.seed, entry.steps, entry.width, entry.height,
                                        entry.loras, entry.seconds)
            out.append(Result(caption=caption, path=path))
        return out

