"""--demo: the tiny random pipeline in place of the real model (CPU friendly; its images are noise),
a tiny random ControlNet in place of the real one, and the local manager for the settings, demo or
not (the app and each Ray replica build it here). Both tiny models are written into the app's own
cache folder, never into the working directory."""
from __future__ import annotations

import dataclasses
import fcntl
from pathlib import Path

from ..config import Settings
from .manager import PipelineManager

DEMO_CACHE_DIR = Path("~/.cache/zimage-webui").expanduser()
DEMO_MODEL_DIR = DEMO_CACHE_DIR / "tiny-model"
DEMO_CONTROLNET_DIR = DEMO_CACHE_DIR / "tiny-controlnet"     # one folder per union version


def demo_controlnet(controlnet: str) -> str:
    """--demo's ControlNet for --controlnet: a local folder as given; a ModelScope id (the real
    weights would not fit the tiny model) becomes the tiny ControlNet of that id's union version
    (2.1 reads a mask, so inpaint works as it does with the real 2.1)."""
    from ..store.hub import is_local_reference

    if is_local_reference(controlnet):
        return controlnet
    version = "2.1" if "2.1" in controlnet else "1"
    return str(DEMO_CONTROLNET_DIR / f"union-{version}")


def demo_resolver(model: str, cache_dir: str = "", **kwargs) -> Path:
    """The tiny random pipeline or ControlNet, written on first use (a few MB, seconds); any other
    folder (a --controlnet given as a local folder) is resolved as without --demo."""
    from ..store.cache import quick_check
    from ..store.hub import resolve_model_dir
    from ..testing.tiny_controlnet import make_tiny_controlnet
    from ..testing.tiny_model import make_tiny_model

    path = Path(model)
    if path == DEMO_MODEL_DIR:
        make = make_tiny_model
    elif path.parent == DEMO_CONTROLNET_DIR:
        version = path.name.removeprefix("union-")
        make = lambda out: make_tiny_controlnet(out, version=version)    # noqa: E731
    else:
        return resolve_model_dir(model, cache_dir, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Ray replicas on one machine start together: one writes the model, the others wait for it.
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_dir() or quick_check(path):
            make(path)
    return path


def with_demo_model(settings: Settings) -> Settings:
    """The settings with --demo's model and ControlNet folders in place of the real ones (unchanged
    without --demo)."""
    if not settings.demo:
        return settings
    return dataclasses.replace(settings, model=str(DEMO_MODEL_DIR), controlnet=demo_controlnet(settings.controlnet))


def local_manager(settings: Settings) -> PipelineManager:
    """The PipelineManager for these settings (not started)."""
    from ..store.model_source import ModelOptions, make_resolver

    settings = with_demo_model(settings)
    if settings.demo:
        return PipelineManager(settings, resolver=demo_resolver)
    options = ModelOptions(settings.text_encoder, settings.vae, tuple(settings.models_from))
    return PipelineManager(settings, resolver=make_resolver(options))
