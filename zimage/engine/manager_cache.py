"""The manager's cache jobs: repair, verify and delete a cached model, on the worker so that they
never run beside a load, a generation or each other (they write the files a load reads).

Methods of `PipelineManager` (engine/manager.py), which owns every field they touch and the lock;
they run on its worker thread only.
"""
from __future__ import annotations

import threading

from ..errors import DownloadCancelled, ZImageError
from ..state import LoadState
from ..store.cache_ops import delete_model, repair_model, verify_model


class CacheJobs:
    """PipelineManager's cache jobs (mixed in; the fields are the manager's)."""

    def _run_repair(self, model_id: str):
        self._download_cancel = threading.Event()
        started = threading.Event()                # refusals come before it: they leave the state as it is

        def on_start() -> None:
            started.set()
            self._start_download()
        try:
            report = repair_model(model_id, self.settings.cache_dir, loaded=self._pipe is not None, on_start=on_start,
                                  on_progress=self._report_download, cancel=self._download_cancel)
        except DownloadCancelled as e:
            self._set(state=LoadState.UNLOADED, stage=None, message=e.message, hint=e.hint, progress=0.0)
            raise
        except ZImageError as e:
            if started.is_set():
                self._fail(e)
            raise
        self._set(state=LoadState.UNLOADED, stage=None, progress=0.0, message="", hint="")
        return report

    def _run_verify(self, model_id: str):
        before = self._status

        def on_progress(done: int, total: int, name: str) -> None:
            self._set(progress=done / total if total else 1.0, current_file=name)
        try:
            return verify_model(model_id, self.settings.cache_dir, on_progress)
        finally:
            self._set(progress=before.progress, current_file=before.current_file)

    def _run_delete(self, model_id: str) -> int:
        freed = delete_model(model_id, self.settings.cache_dir, self._model_dir)
        if self._status.state == LoadState.ERROR and model_id == self.settings.model:
            self._set(state=LoadState.UNLOADED, message="", hint="")
        return freed
