"""--demo: the tiny random pipeline in place of the real model (CPU friendly; its images are noise),
and the local manager for the settings, demo or not (the app and each Ray replica build it here)."""
from __future__ import annotations

import dataclasses
import fcntl
from pathlib import Path

from ..config import Settings
from .manager import PipelineManager

DEMO_MODEL_DIR = Path("~/.cache/zimage-webui/tiny-model").expanduser()


def demo_resolver(model: str, cache_dir: str = "", **_) -> Path:
    """The tiny random pipeline, written on first use (a few MB, seconds)."""
    from ..store.cache import quick_check
    from ..testing.tiny_model import make_tiny_model

    path = Path(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Ray replicas on one machine start together: one writes the model, the others wait for it.
    with open(path.parent / ".tiny-model.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if quick_check(path):
            make_tiny_model(path)
    return path


def with_demo_model(settings: Settings) -> Settings:
    """The settings with --demo's model folder in place of the model (unchanged without --demo)."""
    return dataclasses.replace(settings, model=str(DEMO_MODEL_DIR)) if settings.demo else settings


def local_manager(settings: Settings) -> PipelineManager:
    """The PipelineManager for these settings (not started)."""
    from ..store.model_source import ModelOptions, make_resolver

    settings = with_demo_model(settings)
    if settings.demo:
        return PipelineManager(settings, resolver=demo_resolver)
    options = ModelOptions(settings.text_encoder, settings.vae, tuple(settings.models_from))
    return PipelineManager(settings, resolver=make_resolver(options))
