"""What the page and /health show of many replicas (--backend ray): one `ReplicaStatus` per replica and
the one aggregated `Status` built from them. Pure values and functions: no Ray, tested directly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from ..state import LoadState, Status

# A replica reports every REPORT_PERIOD_S; one silent for LOST_AFTER_S is shown as lost (Ray Serve
# replaces a dead replica by itself) and forgotten FORGET_AFTER_S later.
REPORT_PERIOD_S = 0.5
LOST_AFTER_S = 4.0
FORGET_AFTER_S = 30.0

BUSY_STATES = (LoadState.DOWNLOADING, LoadState.LOADING)


@dataclass(frozen=True)
class JobProgress:
    """One generation on a replica, keyed by the id the app gave it (for the page's progress bar)."""
    key: str
    phase: str                 # waiting | loading | generating | done
    step: int = 0
    total_steps: int = 0
    queue_position: int = 0


@dataclass(frozen=True)
class ReplicaStatus:
    replica_id: str
    node: str = ""                       # host name and the start of Ray's node id
    node_id: str = ""
    pid: int = 0
    gpu_ids: tuple = ()                  # the GPUs Ray gave this replica ("cuda:0" inside it is the first)
    status: Status = field(default_factory=Status)    # the replica's own PipelineManager status
    load_count: int = 0
    last_image_at: float | None = None   # wall-clock time of the last finished image
    jobs: tuple = ()                     # JobProgress of the generations it holds
    reported_at: float = 0.0             # the replica's clock when it made this report
    alive: bool = True                   # reported within LOST_AFTER_S (set by the board)
    seen_s_ago: float = 0.0

    @property
    def phase(self) -> str:
        """ready, loading, unloaded, error, or lost (stopped reporting: dead, Ray replaces it)."""
        if not self.alive:
            return "lost"
        state = self.status.state
        if state in BUSY_STATES:
            return "loading"
        if self.status.ready:
            return "ready"
        if state == LoadState.ERROR:
            return "error"
        return "unloaded"

    def to_dict(self) -> dict:
        return {"replica_id": self.replica_id, "node": self.node, "node_id": self.node_id, "pid": self.pid,
                "gpu_ids": list(self.gpu_ids), "phase": self.phase, "alive": self.alive,
                "state": self.status.state.value, "stage": self.status.stage.value if self.status.stage else None,
                "progress": round(self.status.progress, 4), "device": self.status.device,
                "queue_length": self.status.queue_length, "busy": self.status.busy,
                "last_image_s": self.status.last_image_s, "last_image_at": self.last_image_at,
                "load_count": self.load_count, "message": self.status.message,
                "seen_s_ago": round(self.seen_s_ago, 1)}


def aggregate(replicas: tuple[ReplicaStatus, ...] | list[ReplicaStatus], model: str, note: str = "") -> Status:
    """One Status for the whole deployment. It is ready when any live replica is ready (requests go
    there), loading when none is ready but one loads, error when every live one failed; queue and
    OOM counts add up; the last image time is that of the most recent image anywhere."""
    replicas = tuple(replicas)
    live = [r for r in replicas if r.alive]
    ready = [r for r in live if r.status.ready]
    loading = [r for r in live if r.status.state in BUSY_STATES]
    failed = [r for r in live if r.status.state == LoadState.ERROR]
    lead = (ready or loading or (failed if len(failed) == len(live) else []) or [None])[0]
    base = lead.status if lead is not None else Status(model=model)
    if loading and not ready:
        base = replace(base, progress=sum(r.status.progress for r in loading) / len(loading))
    latest = max((r for r in replicas if r.last_image_at), key=lambda r: r.last_image_at, default=None)
    lost = len(replicas) - len(live)
    message, hint = base.message, base.hint
    if base.state != LoadState.ERROR:
        message, hint = "", ""
        if not live:
            message = "No replica is running yet: Ray Serve is starting them."
        elif lost:
            message = f"{lost} replica(s) stopped answering; Ray Serve replaces them and requests go to the others."
    return replace(
        base, model=model, message=message, hint=hint,
        busy=any(r.status.busy for r in live),
        queue_length=sum(r.status.queue_length for r in live),
        oom_count=sum(r.status.oom_count for r in replicas),
        last_image_s=latest.status.last_image_s if latest else None,
        last_peak_vram_bytes=latest.status.last_peak_vram_bytes if latest else None,
        note="  ".join(filter(None, [base.note, note])),
        replicas=replicas, updated_at=time.time())
