"""What the model worker process tells the page process (model_worker.py -> worker_backend.py):
plain frozen records, in a module of their own so that both ends unpickle them by the same name
(the worker runs as __main__)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..state import MemoryInfo, Status


@dataclass(frozen=True)
class JobProgress:
    """A generation's progress fields (jobs.Job), as the page's copy of the job shows them."""
    phase: str
    step: int
    total_steps: int
    images_done: int
    images_total: int
    step_seconds: float
    decode_s_per_image: float | None
    save_s_per_image: float | None
    queue_position: int
    cancelled: bool
    skipped: bool


@dataclass(frozen=True)
class WorkerReport:
    status: Status
    load_count: int
    gpu_device: str | None
    memory: MemoryInfo | None
    pid: int
    started_epoch: float                       # this process's start (startup.PROCESS_START_EPOCH)
    jobs: dict = field(default_factory=dict)   # key -> JobProgress
