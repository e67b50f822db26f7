"""The replica board (--backend ray): how Preload, Unload and the other model commands reach every
replica, and how the app sees every replica's status.

A Serve deployment handle sends each call to one replica of its choice; there is no public call that
reaches all of them. So the app runs this one small Ray actor, and every replica talks to it every
REPORT_PERIOD_S: it hands in its status (and the outcome of the commands it finished) and takes the
commands posted since it last asked. The app posts a command once and reads the outcome when every
replica that was live when it was posted has answered. Plain Python here; ray_backend wraps the class
with `ray.remote`, so an actor runs one method at a time and needs no lock.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .replicas import FORGET_AFTER_S, LOST_AFTER_S, ReplicaStatus

# Commands a replica applies to its PipelineManager (the names of its methods).
COMMANDS = frozenset({"preload", "unload", "set_low_vram", "cancel_download", "repair", "verify", "delete_cached",
                      "import_model_stack"})


@dataclass(frozen=True)
class Command:
    seq: int
    name: str
    args: tuple = ()


@dataclass(frozen=True)
class Outcome:
    """What each replica answered to one command; `complete` once every expected replica did."""
    seq: int
    complete: bool
    results: dict          # replica_id -> (ok, value or ZImageError)


@dataclass(frozen=True)
class BoardSnapshot:
    replicas: tuple        # ReplicaStatus, alive and seen_s_ago filled in
    outcomes: tuple        # Outcome for each asked seq


class ReplicaBoard:
    def __init__(self, want_loaded: bool = False, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._seq = 0
        self._want_loaded = want_loaded          # new replicas load at once (after Preload), or wait
        self._reports: dict[str, ReplicaStatus] = {}
        self._joined_at_seq: dict[str, int] = {}
        self._seen: dict[str, float] = {}
        self._commands: list[Command] = []
        self._results: dict[int, dict[str, tuple[bool, Any]]] = {}

    # ---- the app's side -----------------------------------------------------------------------
    def post(self, name: str, *args) -> int:
        if name not in COMMANDS:
            raise ValueError(f"unknown replica command {name!r}")
        self._seq += 1
        self._commands.append(Command(self._seq, name, args))
        self._results[self._seq] = {}
        if name == "preload":
            self._want_loaded = True
        elif name == "unload":
            self._want_loaded = False
        return self._seq

    def snapshot(self, seqs: tuple = ()) -> BoardSnapshot:
        self._forget_old()
        now = self._clock()
        replicas = tuple(replace(r, alive=now - self._seen[rid] <= LOST_AFTER_S, seen_s_ago=now - self._seen[rid])
                         for rid, r in self._reports.items())
        return BoardSnapshot(replicas=replicas, outcomes=tuple(self._outcome(seq) for seq in seqs))

    def forget_outcome(self, seq: int) -> None:
        self._results.pop(seq, None)

    # ---- the replicas' side ---------------------------------------------------------------------
    def join(self, report: ReplicaStatus) -> tuple[int, bool]:
        """A new replica: it starts after the last command (it follows the wanted state instead)."""
        rid = report.replica_id
        self._reports[rid] = report
        self._seen[rid] = self._clock()
        self._joined_at_seq[rid] = self._seq
        return self._seq, self._want_loaded

    def sync(self, report: ReplicaStatus, after_seq: int, done: dict) -> list[Command]:
        """Store the replica's status and finished commands; hand it the commands after `after_seq`."""
        rid = report.replica_id
        if rid not in self._joined_at_seq:         # the board was replaced: take the replica as new
            self._joined_at_seq[rid] = after_seq
        self._reports[rid] = report
        self._seen[rid] = self._clock()
        for seq, answer in done.items():
            if seq in self._results:
                self._results[seq][rid] = answer
        return [c for c in self._commands if c.seq > after_seq]

    def leave(self, replica_id: str) -> None:
        """A replica shut down on purpose (scaled down, app deleted)."""
        for table in (self._reports, self._seen, self._joined_at_seq):
            table.pop(replica_id, None)

    # ---- internals ------------------------------------------------------------------------------
    def _outcome(self, seq: int) -> Outcome:
        results = dict(self._results.get(seq, {}))
        now = self._clock()
        expected = [rid for rid, joined in self._joined_at_seq.items()
                    if joined < seq and now - self._seen[rid] <= LOST_AFTER_S]
        return Outcome(seq, all(rid in results for rid in expected), results)

    def _forget_old(self) -> None:
        now = self._clock()
        for rid in [rid for rid, seen in self._seen.items() if now - seen > LOST_AFTER_S + FORGET_AFTER_S]:
            self.leave(rid)
        if len(self._commands) > 200:     # a replica syncs every REPORT_PERIOD_S: never that far behind
            self._commands = self._commands[-200:]
