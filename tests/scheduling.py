"""How the suite is spread over pytest-xdist's workers (scripts/run_tests.sh runs `-n 3`): in units,
the longest first, each worker asking for the next as it ends one.

A unit is one test; or a whole module that has a module- or class-scoped fixture (a Ray cluster, a
folder of LoRAs), which split over workers would be built once on each; or all the modules marked
`ray` together, since Ray's `auto` joins any cluster running on the machine (it looks for a GCS
process), so two at once join each other's cluster and kill each other's replica board (CI,
2026-12-07: 8 Ray tests failed when test_ray_server ran beside test_ray_backend); or one of `-n` shares of
the browser tests (tests/e2e), so that each worker starts its chromium once (tests/chromium.py) and
every worker takes part of them. Units are ordered by the measured seconds of their modules
(MODULE_SECONDS, written by a run with `--store-module-seconds`); a module not in it counts
DEFAULT_TEST_SECONDS a test.

Why: xdist's default (`--dist load`) hands each worker a first run of consecutive tests, a quarter of
its share (108 of 1,302); the 52 browser tests came first in the collection, so one worker ran all
of them, 860 s, while the others shared the rest (2026-12-07, 2-core machine). Its `--dist loadgroup`
marks cannot help: xdist 3.8 writes the group into `item._nodeid`, which pytest 9 no longer reads."""
from __future__ import annotations

import collections
import json
import os
import re
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULE_SECONDS = Path(__file__).with_name("module_seconds.json")
DEFAULT_TEST_SECONDS = 2.0
BROWSER_DIR = "tests/e2e/"
RAY_UNIT = "ray"
_SHARED_FIXTURE = re.compile(r"""scope\s*=\s*["'](module|class)["']""")
_RAY_MARK = re.compile(r"pytest\.mark\.ray\b")


def module_of(nodeid: str) -> str:
    return nodeid.split("::")[0]


@lru_cache(maxsize=None)
def _source(module: str) -> str:
    """The module's source: read, not collected, so that the controller, which collects nothing,
    decides as the workers do."""
    path = ROOT / module
    return path.read_text() if path.suffix == ".py" and path.exists() else ""


def shares_a_fixture(module: str) -> bool:
    """Whether the module defines a module- or class-scoped fixture."""
    return bool(_SHARED_FIXTURE.search(_source(module)))


def starts_ray(module: str) -> bool:
    """Whether the module is marked `ray` (it starts a Ray cluster)."""
    return bool(_RAY_MARK.search(_source(module)))


def module_unit(module: str) -> str | None:
    """The unit every test of the module belongs to, or None where each test is its own."""
    return RAY_UNIT if starts_ray(module) else module if shares_a_fixture(module) else None


def measured_seconds() -> dict[str, float]:
    return json.loads(MODULE_SECONDS.read_text()) if MODULE_SECONDS.exists() else {}


def units(nodeids: list[str], workers: int) -> tuple[dict[str, str], dict[str, float]]:
    """({test: its unit}, {unit: its estimated seconds}); the same whatever order `nodeids` come in."""
    seconds = measured_seconds()
    counts = collections.Counter(module_of(n) for n in nodeids)
    module_s = {m: seconds.get(m, DEFAULT_TEST_SECONDS * c) for m, c in counts.items()}
    # The browser modules in `workers` shares of about equal seconds, longest module first.
    shares = [0.0] * max(1, workers)
    share_of: dict[str, int] = {}
    for m in sorted((m for m in counts if m.startswith(BROWSER_DIR)), key=lambda m: (-module_s[m], m)):
        share_of[m] = shares.index(min(shares))
        shares[share_of[m]] += module_s[m]
    unit_of, unit_s = {}, collections.Counter()
    for nodeid in nodeids:
        m = module_of(nodeid)
        unit = f"browser-{share_of[m]}" if m in share_of else module_unit(m) or nodeid
        unit_of[nodeid] = unit
        unit_s[unit] += module_s[m] / counts[m]
    return unit_of, dict(unit_s)


def worker_count(config) -> int:
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or config.getoption("numprocesses", None) or 1)


def pytest_collection_modifyitems(config, items):
    """Each unit's tests together, the longest unit first (the order the controller hands them out)."""
    unit_of, unit_s = units([item.nodeid for item in items], worker_count(config))
    first = {}
    for i, item in enumerate(items):
        first.setdefault(unit_of[item.nodeid], i)
    items.sort(key=lambda item: (-unit_s[unit_of[item.nodeid]], first[unit_of[item.nodeid]]))


@pytest.hookimpl(optionalhook=True)        # a run with `-p no:xdist` has no such hook
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class LongestUnitFirst(LoadScopeScheduling):
        """xdist's scope scheduler with our units as its scopes, kept in the collection's order."""

        def schedule(self) -> None:
            if self.collection is None and self.collection_is_completed:
                collection = next(iter(self.registered_collections.values()))
                self.unit_of = units(list(collection), len(self.nodes))[0]
            super().schedule()

        def _split_scope(self, nodeid: str) -> str:
            return self.unit_of[nodeid]

    config.option.loadscopereorder = False
    return LongestUnitFirst(config, log)


class _Recorder:
    def __init__(self):
        self.seconds: collections.Counter = collections.Counter()

    def pytest_runtest_logreport(self, report):
        self.seconds[module_of(report.nodeid)] += report.duration

    def pytest_sessionfinish(self, session):
        part = MODULE_SECONDS.with_suffix(".part")
        part.write_text(json.dumps({m: round(s, 1) for m, s in sorted(self.seconds.items())}, indent=0) + "\n")
        part.replace(MODULE_SECONDS)


def pytest_addoption(parser):
    parser.addoption("--store-module-seconds", action="store_true",
                     help=f"write each module's seconds (setup, call and teardown of its tests) to {MODULE_SECONDS.name}")


def pytest_configure(config):
    # On the controller, or in a run without workers: one file, written once.
    if config.getoption("--store-module-seconds") and "PYTEST_XDIST_WORKER" not in os.environ:
        config.pluginmanager.register(_Recorder(), "zimage-module-seconds")
