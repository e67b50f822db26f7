"""The CUDA context made while the imports run (engine/cuda_context.py, issue 19): without a driver
it starts nothing and imports nothing; with one it marks "CUDA ready" and lets Python run while
the driver works; a failing driver call is one log line, never an exception. The driver is a real
shared library loaded by ctypes' own path search: a stand-in libcuda.so.1 built with the C compiler
and found through LD_LIBRARY_PATH, in a fresh process (the loader reads that variable at start)."""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zimage import startup
from zimage.engine.cuda_context import DRIVER_LIBRARY, device_ordinal, start_cuda_context
from zimage.state import Status
from zimage.web.page.ui_startup import startup_html

ROOT = Path(__file__).resolve().parent.parent

# The three driver calls; the codes come from the environment so one build serves every case.
FAKE_DRIVER = r"""
#include <stdlib.h>
#include <unistd.h>
static int code(const char *name) { const char *v = getenv(name); return v ? atoi(v) : 0; }
int cuInit(unsigned int flags) { return code("FAKE_CUINIT_RC"); }
int cuDeviceGet(int *dev, int ordinal) {
    if (ordinal >= code("FAKE_DEVICES")) return 101;            /* CUDA_ERROR_INVALID_DEVICE */
    *dev = ordinal; return 0;
}
int cuDevicePrimaryCtxRetain(void **ctx, int dev) {
    usleep(code("FAKE_RETAIN_MS") * 1000);                      /* making a context takes seconds */
    *ctx = (void *)0x1; return code("FAKE_RETAIN_RC");
}
"""

PROBE = """
import json, logging, sys, threading, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from zimage import startup
from zimage.engine.cuda_context import start_cuda_context
last = time.monotonic()
t = start_cuda_context(sys.argv[1])
spins, gap = 0, time.monotonic() - last
last = time.monotonic()
while t is not None and t.is_alive():      # Python work (an import) while the driver call runs
    spins += 1
    sum(range(1000))
    now = time.monotonic()
    gap, last = max(gap, now - last), now
if t is not None:
    t.join()
print(json.dumps({"thread": t is not None, "spins": spins, "longest_gap_s": gap, "timeline": startup.timeline_dict(),
                  "torch": "torch" in sys.modules}))
"""


@pytest.fixture(scope="module")
def driver_dir(tmp_path_factory) -> Path:
    if not shutil.which("cc"):
        pytest.skip("no C compiler to build the stand-in driver")
    out = tmp_path_factory.mktemp("driver")
    (out / "fake.c").write_text(FAKE_DRIVER)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(out / DRIVER_LIBRARY), str(out / "fake.c")], check=True)
    return out


def probe(device: str, lib_dir: Path | None, **codes: int) -> tuple[dict, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT),
               **{f"FAKE_{k.upper()}": str(v) for k, v in {"devices": 1, "retain_ms": 300, **codes}.items()})
    if lib_dir is not None:
        env["LD_LIBRARY_PATH"] = str(lib_dir)
    done = subprocess.run([sys.executable, "-c", PROBE, device], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_without_a_driver_nothing_starts_and_torch_is_not_imported():
    try:
        ctypes.CDLL(DRIVER_LIBRARY)
        pytest.skip("this machine has a CUDA driver")
    except OSError:
        pass
    out, _ = probe("auto", None)
    cost_s = out.pop("longest_gap_s")          # the call itself: a failed dlopen
    assert out == {"thread": False, "spins": 0, "timeline": {}, "torch": False} and cost_s < 0.05, cost_s


def test_the_cpu_device_never_touches_the_driver(driver_dir):
    out, err = probe("cpu", driver_dir)
    assert not out["thread"] and startup.CUDA_READY not in out["timeline"], err
    calls = []
    assert start_cuda_context("cpu", load=lambda name: calls.append(name)) is None and calls == []


def test_the_context_is_made_on_a_thread_that_lets_python_run(driver_dir):
    out, err = probe("cuda:0", driver_dir, retain_ms=600)
    assert out["thread"] and startup.CUDA_READY in out["timeline"], err
    # The driver sat 600 ms in the retain call; the main thread never waited that long for the GIL
    # (a call through ctypes.PyDLL, which keeps the GIL, stalls it for the whole 600 ms).
    assert out["spins"] > 100 and out["longest_gap_s"] < 0.3 and not out["torch"], out


@pytest.mark.parametrize("device,codes,says", [
    ("auto", {"cuinit_rc": 100}, "cuInit returned 100"),                    # CUDA_ERROR_NO_DEVICE
    ("cuda:2", {}, "cuDeviceGet(2) returned 101"),                          # fewer GPUs than asked for
    ("cuda", {"retain_rc": 2}, "cuDevicePrimaryCtxRetain returned 2"),       # out of memory
])
def test_a_failing_driver_call_is_one_log_line_and_no_mark(driver_dir, device, codes, says):
    out, err = probe(device, driver_dir, retain_ms=0, **codes)
    assert out["thread"] and startup.CUDA_READY not in out["timeline"], out
    assert says in err and "torch makes it at its first CUDA call" in err and "Traceback" not in err, err


def test_a_library_without_the_driver_calls_is_one_log_line(tmp_path):
    (tmp_path / "empty.c").write_text("int nothing_here(void) { return 0; }\n")
    if not shutil.which("cc"):
        pytest.skip("no C compiler")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(tmp_path / DRIVER_LIBRARY), str(tmp_path / "empty.c")],
                   check=True)
    out, err = probe("auto", tmp_path)
    assert out["thread"] and startup.CUDA_READY not in out["timeline"], out
    assert "AttributeError" in err and "cuInit" in err and "Traceback" not in err, err


def test_device_settings_map_to_the_ordinal_torch_uses():
    assert [device_ordinal(d) for d in ("auto", "cuda", "cuda:0", "cuda:3", "cpu")] == [0, 0, 0, 3, None]


def test_the_panel_shows_when_cuda_was_ready():
    status = Status(startup=((startup.CUDA_READY, 3.1), (startup.MODEL_IMPORTED, 9.4)))
    assert "CUDA ready 3.1 s" in startup_html(status) and "CUDA 就绪 3.1 秒" in startup_html(status, "zh")


LOAD = """
import json, sys
from zimage import startup
from zimage.config import Settings
from zimage.engine.manager import PipelineManager
m = PipelineManager(Settings(model=sys.argv[1], outputs_dir=sys.argv[2], device=sys.argv[3], idle_unload_s=0,
                             idle_drop_s=0)).start()
m.ensure_ready(timeout=300)
print(json.dumps({"device": m.status().device, "timeline": startup.timeline_dict()}))
m.close()
"""


@pytest.mark.skipif(__import__("torch").version.cuda is not None,
                    reason="a CUDA build of torch would load the stand-in driver itself")
@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_a_load_makes_the_context_before_the_model_code_is_imported(driver_dir, tiny_model_dir, tmp_path, device):
    env = dict(os.environ, PYTHONPATH=str(ROOT), LD_LIBRARY_PATH=str(driver_dir), FAKE_DEVICES="1",
               FAKE_RETAIN_MS="50")
    done = subprocess.run([sys.executable, "-c", LOAD, str(tiny_model_dir), str(tmp_path / "out"), device], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    timeline = out["timeline"]
    assert out["device"] == "cpu" and startup.READY in timeline, out      # the CPU build of torch: no GPU
    if device == "cpu":
        assert startup.CUDA_READY not in timeline, timeline
    else:
        assert timeline[startup.CUDA_READY] < timeline[startup.MODEL_IMPORTED], timeline
