"""The cache jobs of the pipeline manager: verifying, repairing and deleting cached models.

They run as jobs on the manager's one worker (never beside a load or a generation) and report
through its status like a load does; this mixin only keeps them out of manager.py.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from .errors import ConfirmationMismatch, DownloadCancelled, ModelInUse, ModelUnavailable, ZImageError
from .state import LoadState

if TYPE_CHECKING:
    from .hub import RepairReport, VerifyReport
    from .manager import Job

log = logging.getLogger(__name__)

CACHE = "cache"


def check_confirmed(model_id: str, confirmed_id: str | None) -> None:
    """Refuse a delete whose confirmed model is not the one named (the page's pick changed after
    the user ticked Confirm)."""
    if confirmed_id is not None and confirmed_id != model_id:
        raise ConfirmationMismatch(model_id, confirmed_id)


class CacheJobs:
    """Mixed into PipelineManager; uses its queue, status and worker-only fields."""

    def repair(self, model_id: str | None = None) -> Job:
        """Re-download only the damaged or missing files of a cached model (a worker job, so it never
        runs beside a load); its result is a hub.RepairReport."""
        mid = model_id or self.settings.model
        with self._lock:
            return self._enqueue_locked(CACHE, lambda job: self._run_repair(mid))

    def verify(self, model_id: str | None = None) -> Job:
        """Hash every file of a cached model (a worker job: never beside a load or a repair, which
        write the same files and manifest); its result is a hub.VerifyReport, its progress is the
        status' progress and current_file."""
        mid = model_id or self.settings.model
        with self._lock:
            return self._enqueue_locked(CACHE, lambda job: self._run_verify(mid))

    def delete_cached(self, model_id: str, confirmed_id: str | None = None) -> Job:
        """Delete a model from the cache; refused while it is loaded, and when `confirmed_id` (the
        model the user confirmed) is another one."""
        check_confirmed(model_id, confirmed_id)
        with self._lock:
            return self._enqueue_locked(CACHE, lambda job: self._run_delete(model_id))

    def _run_repair(self, model_id: str) -> RepairReport:
        from .hub import RepairReport, is_local_reference, repair

        if is_local_reference(model_id):
            raise ModelUnavailable(f"{model_id} is a local folder: there is no hub copy to repair it from.",
                                   "Copy the damaged files again, or use a ModelScope id.")
        if self._pipe is not None:
            raise ModelInUse("The model is loaded; repairing would change files under it.",
                             "Unload it (Free VRAM and RAM) first.")
        self._download_cancel = threading.Event()
        self._start_download()
        try:
            fixed = repair(model_id, self.settings.cache_dir, on_progress=self._report_download,
                           cancel=self._download_cancel)
        except DownloadCancelled as e:
            self._set(state=LoadState.UNLOADED, stage=None, message=e.message, hint=e.hint, progress=0.0)
            raise
        except ZImageError as e:
            self._fail(e)
            raise
        self._set(state=LoadState.UNLOADED, stage=None, progress=0.0, message="", hint="")
        return RepairReport(model_id, tuple(fixed))

    def _run_verify(self, model_id: str) -> VerifyReport:
        from .hub import is_local_reference, verify

        if is_local_reference(model_id):
            raise ModelUnavailable(f"{model_id} is a local folder, not a model in the cache.",
                                   "Verify checks models downloaded into the cache.")
        before = self._status

        def on_progress(done: int, total: int, name: str) -> None:
            self._set(progress=done / total if total else 1.0, current_file=name)
        try:
            # Reading the files is safe beside a loaded model (its weights are in memory), so a
            # loaded model is not refused; generations queued meanwhile wait for the hashing.
            return verify(model_id, self.settings.cache_dir, on_progress=on_progress)
        finally:
            self._set(progress=before.progress, current_file=before.current_file)

    def _run_delete(self, model_id: str) -> int:
        from .cache import delete_cached, modelscope_cache_base, scan_cache
        from .manifest import manifest_path

        base = modelscope_cache_base(self.settings.cache_dir)
        entries = [m for m in scan_cache(base) if m.model_id == model_id]
        if not entries:
            raise ModelUnavailable(f"{model_id} is not in the cache {base}.")
        loaded = self._model_dir.resolve() if self._model_dir is not None else None
        if loaded is not None and any(loaded.is_relative_to(m.root.resolve()) for m in entries):
            raise ModelInUse(f"{model_id} is loaded and cannot be deleted.", "Unload it (Free VRAM and RAM) first.")
        freed = sum(delete_cached(base, m) for m in entries)
        manifest_path(base, model_id).unlink(missing_ok=True)
        if self._status.state == LoadState.ERROR and model_id == self.settings.model:
            self._set(state=LoadState.UNLOADED, message="", hint="")
        log.info("deleted %s from the cache (%d bytes)", model_id, freed)
        return freed
