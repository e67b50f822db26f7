"""The model's load state machine and the immutable snapshot that the page and the API read."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from enum import Enum

from .errors import IllegalTransition


class LoadState(str, Enum):
    UNLOADED = "unloaded"
    DOWNLOADING = "downloading"
    LOADING = "loading"
    ON_CPU = "on_cpu"
    ON_GPU = "on_gpu"
    OFFLOADED = "offloaded"      # low-VRAM mode: weights in RAM, modules visit the GPU in turn
    ERROR = "error"


class LoadStage(str, Enum):
    DOWNLOAD = "download"
    READ = "read weights"
    BUILD = "build"
    MOVE = "move to device"
    QUANTIZE = "quantize (once)"
    WARMUP = "warm up"


READY_STATES = frozenset({LoadState.ON_CPU, LoadState.ON_GPU, LoadState.OFFLOADED})
ALLOWED: dict[LoadState, frozenset[LoadState]] = {
    LoadState.UNLOADED: frozenset({LoadState.DOWNLOADING, LoadState.LOADING, LoadState.ERROR}),
    LoadState.DOWNLOADING: frozenset({LoadState.LOADING, LoadState.ERROR, LoadState.UNLOADED}),
    LoadState.LOADING: frozenset(READY_STATES | {LoadState.ERROR, LoadState.UNLOADED}),
    LoadState.ON_CPU: frozenset({LoadState.LOADING, LoadState.ON_GPU, LoadState.OFFLOADED,
                                 LoadState.UNLOADED, LoadState.ERROR}),
    LoadState.ON_GPU: frozenset({LoadState.ON_CPU, LoadState.OFFLOADED, LoadState.UNLOADED, LoadState.ERROR}),
    LoadState.OFFLOADED: frozenset({LoadState.ON_GPU, LoadState.ON_CPU, LoadState.LOADING,
                                    LoadState.UNLOADED, LoadState.ERROR}),
    LoadState.ERROR: frozenset({LoadState.DOWNLOADING, LoadState.LOADING, LoadState.UNLOADED}),
}


def check_transition(src: LoadState, dst: LoadState) -> None:
    """Raise IllegalTransition unless src -> dst is allowed. Staying in a state is always allowed."""
    if src != dst and dst not in ALLOWED[src]:
        raise IllegalTransition(f"Cannot go from {src.value} to {dst.value}.")


@dataclass(frozen=True)
class Status:
    """What the page and /health show. Built only by the PipelineManager, read by everyone."""
    state: LoadState = LoadState.UNLOADED
    model: str = ""
    stage: LoadStage | None = None
    progress: float = 0.0            # 0-1 within the current download or load
    bytes_done: int = 0
    bytes_total: int = 0
    current_file: str = ""
    speed_bps: float = 0.0           # download speed, bytes per second
    eta_s: float | None = None       # download time left
    device: str | None = None        # where the weights are: "cuda:0", "cpu", None when unloaded
    low_vram: bool = False
    message: str = ""                # the error, when state is error
    hint: str = ""                   # what the user can do about an error
    busy: bool = False               # a job is running on the worker
    queue_length: int = 0            # generation jobs waiting or running
    last_image_s: float | None = None
    note: str = ""                   # standing remark, e.g. "demo model: images are noise"
    plan: str = ""                   # where the weights are placed, e.g. "12 blocks resident, 22 streamed"
    last_peak_vram_bytes: int | None = None
    oom_count: int = 0               # generations that ran out of GPU memory since start
    replicas: tuple = ()             # with --backend ray: one ReplicaStatus (zimage.scale.replicas) per replica
    startup: tuple = ()              # (event, s since the process started), zimage.startup's timeline
    updated_at: float = field(default_factory=time.time)

    @property
    def ready(self) -> bool:
        return self.state in READY_STATES

    @property
    def health(self) -> str:
        """The seed's /health vocabulary."""
        if self.ready:
            return "healthy"
        if self.state in (LoadState.DOWNLOADING, LoadState.LOADING):
            return "loading"
        return self.state.value   # "unloaded" or "error"

    def evolve(self, **changes) -> "Status":
        new_state = changes.get("state", self.state)
        check_transition(self.state, new_state)
        return replace(self, updated_at=time.time(), **changes)

    def to_dict(self) -> dict:
        out = {
            "state": self.state.value, "model": self.model,
            "stage": self.stage.value if self.stage else None,
            "progress": round(self.progress, 4), "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total, "current_file": self.current_file,
            "speed_bps": round(self.speed_bps), "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "device": self.device, "low_vram": self.low_vram, "message": self.message,
            "hint": self.hint, "busy": self.busy, "queue_length": self.queue_length,
            "last_image_s": self.last_image_s, "note": self.note, "plan": self.plan,
            "last_peak_vram_bytes": self.last_peak_vram_bytes, "oom_count": self.oom_count,
        }
        out["startup"] = {}
        for name, t in self.startup:
            out["startup"].setdefault(name, t)
        if self.replicas:
            out["replicas"] = [r.to_dict() for r in self.replicas]
        return out


@dataclass(frozen=True)
class MemoryInfo:
    process_rss_bytes: int
    ram_total_bytes: int
    ram_available_bytes: int
    vram_allocated_bytes: int | None = None   # by this process's torch allocator
    vram_used_bytes: int | None = None        # on the whole device (nvml)
    vram_total_bytes: int | None = None
