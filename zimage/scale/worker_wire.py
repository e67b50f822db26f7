"""What the model worker process tells the page process (model_worker.py -> worker_backend.py):
plain frozen records, in a module of their own so that both ends unpickle them by the same name
(the worker runs as __main__)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from .. import startup
from ..state import LoadState, MemoryInfo, Status


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


def page_status(report: WorkerReport, waiting_here: int, note: str = "") -> Status:
    """The worker's status as the page shows it: its start-up timeline moved onto the page
    process's clock and merged with the page's own, the generations waiting here for a new worker
    in the queue, and while torch is still being imported, a sentence that says so."""
    s = report.status
    shift = report.started_epoch - startup.PROCESS_START_EPOCH
    events = sorted(startup.timeline() + [(name, round(t + shift, 3)) for name, t in s.startup], key=lambda e: e[1])
    changes: dict = dict(startup=tuple(events), queue_length=s.queue_length + waiting_here)
    if s.state == LoadState.UNLOADED and not s.message and s.busy and \
            not any(name == startup.MODEL_IMPORTED for name, _ in s.startup):
        changes["message"] = "The model process is importing torch and diffusers."
    if note:
        changes["note"] = "\n".join(filter(None, [s.note, note]))
    return replace(s, **changes)
