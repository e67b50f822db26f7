"""Cases in fresh processes under one command's device-time budget, for the GPU runs
(bench/gpu35_bench.py, bench/gpu34_bench.py): a case whose estimate does not fit in what is left is
skipped with a JSON line saying so, a running one is killed at the budget's end (with a line saying
so), every line is printed and appended to OUT/NAME.jsonl, progress goes to stderr.
"""
from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.runner import run_module

CPU_ESTIMATE_S = 5           # the tiny model on the CPU: a check of the paths, never skipped for time


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def ratio(a, b):
    return round(a / b, 3) if a and b else None


class Bench:
    """`a` has device, out and budget_s; `estimates`: GPU seconds per kind of case (process start,
    imports and a warm page cache included)."""

    def __init__(self, a, name: str, estimates: dict[str, float]):
        self.a, self.name, self.estimates = a, name, estimates
        self.t0 = time.monotonic()
        self.gpu = a.device.startswith("cuda")
        self.results: dict[str, dict] = {}
        self.files: dict[str, str] = {}
        self.out = Path(a.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = open(self.out / f"{name}.jsonl", "a")

    def left(self) -> float:
        return self.a.budget_s - (time.monotonic() - self.t0)

    def emit(self, line: dict) -> None:
        text = json.dumps(line)
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def say(self, message: str) -> None:
        print(f"[{self.name} +{time.monotonic() - self.t0:.0f} s, {self.left():.0f} s left] {message}",
              file=sys.stderr, flush=True)

    def need(self, estimate: str | float) -> float:
        """A case's estimate (a kind of case, or seconds) on this device."""
        seconds = self.estimates[estimate] if isinstance(estimate, str) else estimate
        return seconds if self.gpu else CPU_ESTIMATE_S

    def admit(self, item, name: str, estimate: str | float) -> float | None:
        """The seconds the case may run, or None (and a skip line) when its estimate does not fit."""
        need = self.need(estimate)
        left = self.left()
        if left < need:
            self.emit({"item": item, "case": name, "skipped": f"{left:.0f} s of --budget-s left, the case needs "
                                                              f"about {need:.0f} s"})
            self.say(f"item {item} {name}: skipped (budget)")
            return None
        timeout = max(5.0, min(4 * need, left - 5) if self.gpu else left - 5)
        self.say(f"item {item} {name}: started (about {need:.0f} s; stopped after {timeout:.0f} s)")
        return timeout

    def record(self, item, name: str, lines: list[dict], error: str, seconds: float) -> list[dict]:
        """The case's lines tagged with the case (and its error) and the item where a line has none,
        emitted; the last one kept by name."""
        lines = [{**line, "item": line.get("item", item), "case": name} for line in lines]
        lines = lines or [{"item": item, "case": name}]
        for line in lines:
            line["process_s"] = round(seconds, 2)
            if error:
                line["error"] = error
            self.emit(line)
        self.results[name] = lines[-1]
        self.say(f"item {item} {name}: {'failed' if error else 'done'} in {seconds:.0f} s")
        return lines

    def case(self, item, name: str, module: str, args: list[str], estimate: str | float,
             env: dict | None = None) -> list[dict]:
        """`python -m module *args --device D` in a fresh process (`env` added to its environment),
        within the budget."""
        timeout = self.admit(item, name, estimate)
        if timeout is None:
            return []
        lines, error, seconds = run_module(module, [*args, "--device", self.a.device], timeout, env)
        return self.record(item, name, lines, error, seconds)

    def get(self, name: str, key: str):
        return self.results.get(name, {}).get(key)
