"""The backend the settings ask for: the model worker process (--backend local, the default), the
PipelineManager in this process (--backend inprocess: tests and benchmarks that reach into it), or
with --backend ray the Ray Serve replicas, all behind the same Backend surface. The web server and
the CLI start here."""
from __future__ import annotations

from .config import Settings
from .jobs import Backend


def create_backend(settings: Settings) -> Backend:
    """Not started: call .start()."""
    if settings.backend == "ray":
        from .engine.demo import with_demo_model
        from .scale.ray_backend import RayBackend

        return RayBackend(with_demo_model(settings))
    if settings.backend == "inprocess":
        from .engine.demo import local_manager

        return local_manager(settings)
    from .scale.worker_backend import WorkerBackend

    return WorkerBackend(settings)
