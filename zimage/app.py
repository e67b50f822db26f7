"""The backend the settings ask for: the local PipelineManager (the default), or with --backend ray
the Ray Serve replicas behind the same Backend surface. The web server and the CLI start here."""
from __future__ import annotations

from .config import Settings
from .engine.demo import local_manager, with_demo_model
from .jobs import Backend


def create_backend(settings: Settings) -> Backend:
    """Not started: call .start()."""
    if settings.backend == "ray":
        from .scale.ray_backend import RayBackend

        return RayBackend(with_demo_model(settings))
    return local_manager(settings)
