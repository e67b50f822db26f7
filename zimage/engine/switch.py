"""Switching the model without a restart: a LOAD job on the manager's one queue, so it runs after
the generations queued before it (never pulling a model from under one) and before those queued
after it, which then run on the new model.

Chosen over restarting the worker process with new Settings: the queue already orders every job
(page, A1111 API, seed API), and the in-process backend gets the same behaviour. The old pipeline is
dropped first (`unload to "none"`: its weights and the GPU cache freed) so two models are never held;
the worker process's own RSS (torch's libraries) stays, as after any unload.
"""
from __future__ import annotations

import dataclasses
import logging

from ..state import LoadStage, LoadState, Status

log = logging.getLogger(__name__)


def run_switch(manager, model: str, name: str, job) -> Status:
    """On the manager's worker thread: drop the loaded pipeline, take `model` (--model's value),
    load it (its progress in the status as any load). A failed load leaves the status in error,
    naming the model; the next switch or Preload tries again."""
    job.phase = "loading"
    log.info("switching model: %s -> %s", manager.settings.model, model)
    manager._run_unload("none")
    manager.settings = dataclasses.replace(manager.settings, model=model)
    manager._runner.identify(model, manager.settings.cache_dir, name)
    manager._set(model=model, state=LoadState.LOADING, stage=LoadStage.READ, progress=0.0, message="", hint="")
    return manager._run_load(job)
