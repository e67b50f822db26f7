"""Joining the Ray cluster and the Serve deployment's options: the names, the per-replica request
limits, the health checks and the autoscaling target every replica starts with, and the errors by
which Ray says a replica is gone. ray_backend.py drives the app with them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import BackendUnavailable

log = logging.getLogger(__name__)

NAMESPACE = "zimage"
APP_NAME = "zimage"
BOARD_NAME = "zimage-replica-board"
# One image runs on a replica while one more waits there, so its GPU never waits for a round trip;
# the rest wait in the handle's queue, where any replica that frees up takes them.
MAX_ONGOING_PER_REPLICA = 2
# Autoscaling target: more than one request per replica (something is waiting) asks for more.
TARGET_ONGOING_PER_REPLICA = 1


def replica_deployment_options(settings: Settings, gpus: float, runtime_env: dict | None = None,
                               extra: dict | None = None) -> dict:
    """The Serve deployment options for these settings (pure, so tests read them without Ray)."""
    actor = {"num_gpus": gpus}
    if runtime_env:
        actor["runtime_env"] = runtime_env
    opts: dict[str, Any] = {
        "name": "ZImageReplica", "ray_actor_options": actor,
        "max_ongoing_requests": MAX_ONGOING_PER_REPLICA,
        # A hung replica is replaced within ~10 s; a dead one at once (Ray tells the controller).
        "health_check_period_s": 2.0, "health_check_timeout_s": 10.0,
        "graceful_shutdown_timeout_s": 5.0,
    }
    if settings.ray_autoscaling:
        opts["autoscaling_config"] = {"min_replicas": settings.ray_min_replicas,
                                      "max_replicas": settings.ray_max_replicas,
                                      "target_ongoing_requests": TARGET_ONGOING_PER_REPLICA}
    else:
        opts["num_replicas"] = settings.ray_replicas
    opts.update(extra or {})
    return opts


def connect_ray(address: str = "auto") -> None:
    """Join the Ray cluster at `address` (auto: a running one, else start a local one). The app's
    zimage package travels with the job (Ray uploads it), so every node runs this very code; Serve
    replicas inherit the job's runtime_env."""
    import ray

    job_env = {"py_modules": [str(Path(__file__).resolve().parent.parent)]}   # the zimage package
    try:
        ray.init(address=address, namespace=NAMESPACE, runtime_env=job_env)
    except ConnectionError:
        if address != "auto":
            raise BackendUnavailable(f"No Ray cluster answers at {address}.",
                                     "Start one with `ray start --head` or check --ray-address.") from None
        log.info("no Ray cluster running: starting a local one")
        ray.init(namespace=NAMESPACE, runtime_env=job_env, include_dashboard=False)


def death_errors() -> tuple[type[BaseException], ...]:
    """Ray's ways of saying that the replica running a request is gone."""
    from ray import exceptions as rx
    from ray.serve.exceptions import ReplicaUnavailableError

    return (rx.RayActorError, rx.WorkerCrashedError, rx.NodeDiedError, rx.OutOfMemoryError,
            rx.LocalRayletDiedError, ReplicaUnavailableError)
