"""Verify, repair and delete of a cached model as plain functions: the checks that protect the user
(a local folder has no hub copy, a loaded model's files are not changed under it, a delete acts on
exactly the model the user confirmed) and the calls into hub and cache. The manager runs them as
jobs on its worker and owns the status they report through.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

from ..errors import ConfirmationMismatch, ModelInUse, ModelUnavailable
from .hub import RepairReport, VerifyReport

log = logging.getLogger(__name__)


def check_confirmed(model_id: str, confirmed_id: str | None) -> None:
    """Refuse a delete whose confirmed model is not the one named (the page's pick changed after
    the user ticked Confirm)."""
    if confirmed_id is not None and confirmed_id != model_id:
        raise ConfirmationMismatch(model_id, confirmed_id)


def repair_model(model_id: str, cache_dir: str, *, loaded: bool, on_start: Callable[[], None],
                 on_progress: Callable, cancel: threading.Event) -> RepairReport:
    """Re-download only the damaged or missing files; refused (before `on_start`) for a local folder
    and while loaded."""
    from .hub import is_local_reference, repair

    if is_local_reference(model_id):
        raise ModelUnavailable(f"{model_id} is a local folder: there is no hub copy to repair it from.",
                               "Copy the damaged files again, or use a ModelScope id.")
    if loaded:
        raise ModelInUse("The model is loaded; repairing would change files under it.",
                         "Unload it (Free VRAM and RAM) first.")
    on_start()
    return RepairReport(model_id, tuple(repair(model_id, cache_dir, on_progress=on_progress, cancel=cancel)))


def verify_model(model_id: str, cache_dir: str, on_progress: Callable[[int, int, str], None]) -> VerifyReport:
    """Hash every file. Reading the files is safe beside a loaded model (its weights are in memory),
    so a loaded model is not refused."""
    from .hub import is_local_reference, verify

    if is_local_reference(model_id):
        raise ModelUnavailable(f"{model_id} is a local folder, not a model in the cache.",
                               "Verify checks models downloaded into the cache.")
    return verify(model_id, cache_dir, on_progress=on_progress)


def delete_model(model_id: str, cache_dir: str, loaded_dir: Path | None) -> int:
    """Delete every cached copy of `model_id` and its manifest; refused while it is the loaded one.
    Returns the bytes freed."""
    from .cache import delete_cached, modelscope_cache_base, scan_cache
    from .manifest import manifest_path

    base = modelscope_cache_base(cache_dir)
    entries = [m for m in scan_cache(base) if m.model_id == model_id]
    if not entries:
        raise ModelUnavailable(f"{model_id} is not in the cache {base}.")
    loaded = loaded_dir.resolve() if loaded_dir is not None else None
    if loaded is not None and any(loaded.is_relative_to(m.root.resolve()) for m in entries):
        raise ModelInUse(f"{model_id} is loaded and cannot be deleted.", "Unload it (Free VRAM and RAM) first.")
    freed = sum(delete_cached(base, m) for m in entries)
    manifest_path(base, model_id).unlink(missing_ok=True)
    log.info("deleted %s from the cache (%d bytes)", model_id, freed)
    return freed
