"""The History index beside foreign files and other programs (issue 36): numbers SQLite cannot
hold cost nothing, one bad row costs one row, a locked index is waited for and never moved aside,
and two processes saving into one outputs folder lose nothing."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from test_history import HUGE, _foreign_png, save

from zimage.store.history import INDEX_DIR, INDEX_FILE, HistoryQuery
from zimage.store.outputs import OutputStore

ROOT = Path(__file__).resolve().parent.parent


def test_a_foreign_png_with_numbers_sqlite_cannot_hold_costs_nothing(tmp_path):
    """Issue 36: one PNG with `Seed: 99999999999999999999` left the start-up transaction open and
    no image saved after it reached the index; now it is listed (its seed unknown) and so is everything after."""
    root = tmp_path / "out"
    store = OutputStore(root)
    own = save(store, "made here", 5)
    store.history.close()
    day = root / "2021-03-04"
    _foreign_png(day / "comfy.png", f"a comfy castle\nNegative prompt: fog\nSteps: {HUGE}, Sampler: Euler, "
                                    f"CFG scale: 1e999, Seed: {HUGE}, Size: {HUGE}x{HUGE}, Model: comfy")
    _foreign_png(day / "negative.png", f"a deep sea\nSteps: -{HUGE}, CFG scale: -1e308, Seed: -{HUGE}, Size: 1x1")
    _foreign_png(day / "odd.png", "odd digits\nSteps: ², Seed: --5, CFG scale: nan, Size: ²x³")
    _foreign_png(day / "long.png", f"long figures\nSteps: {'9' * 5000}, Seed: 1, Size: {'9' * 5000}x1")
    future = _foreign_png(day / "future.png", "a file from 2300\nSteps: 4, Seed: 7, Size: 40x24")
    os.utime(future, ns=(2**63 + 10**18, 2**63 + 10**18))        # an mtime past SQLite's ns range

    store = OutputStore(root)                                          # restart: the reindex
    listed = {e.path: e for e in store.history.query(HistoryQuery(limit=50)).entries}
    assert set(listed) == {own.relative_to(root).as_posix()} | {f"2021-03-04/{n}.png" for n in
                                                                 ("comfy", "negative", "odd", "long", "future")}
    comfy = listed["2021-03-04/comfy.png"]
    assert (comfy.prompt, comfy.negative, comfy.seed, comfy.steps, comfy.guidance, comfy.model, comfy.width) == \
        ("a comfy castle", "fog", None, None, None, "comfy", 40)
    assert listed["2021-03-04/negative.png"].guidance == -1e308 and listed["2021-03-04/negative.png"].seed is None
    assert listed["2021-03-04/future.png"].seed == 7
    assert store.history.query(HistoryQuery(text="comfy castle")).total == 1

    new = [save(store, f"after the foreign one {i}", 20 + i) for i in range(3)]      # the normal save path
    assert store.history.count() == 9
    store.history.close()
    store = OutputStore(root)                                          # and another restart
    paths = {e.path for e in store.history.query(HistoryQuery(limit=50)).entries}
    assert {p.relative_to(root).as_posix() for p in new} <= paths and len(paths) == 9
    assert store.history.reconcile().added == 0                        # nothing re-read: all of it was stored
    assert store.delete(store.history.get("2021-03-04/future.png").id).path == "2021-03-04/future.png"
    assert not future.exists() and store.history.count() == 8


def test_one_row_that_cannot_be_stored_costs_only_that_row(tmp_path, monkeypatch):
    """Any value SQLite refuses (here a type it cannot bind, past the sanitising) fails one row, and the
    reindex commits the others: the index is never left inside a transaction."""
    from zimage.store import history

    root = tmp_path / "out"
    for i in range(4):
        _foreign_png(root / "2022-01-01" / f"{i}.png", f"picture {i}\nSteps: 4, Seed: {i}, Size: 40x24")
    real_row = history._row
    monkeypatch.setattr(history, "_row", lambda e: (*real_row(e)[:7], object(), *real_row(e)[8:])
                        if e.prompt == "picture 2" else real_row(e))
    store = OutputStore(root)
    assert sorted(e.prompt for e in store.history.query().entries) == ["picture 0", "picture 1", "picture 3"]
    assert not store.history._sqlite.db.in_transaction
    monkeypatch.undo()
    save(store, "saved after", 9)
    store.history.close()
    assert sorted(e.prompt for e in OutputStore(root).history.query().entries) == \
        ["picture 0", "picture 1", "picture 2", "picture 3", "saved after"]


HOLDER = """
import sqlite3, sys
from PIL import Image
from zimage.store.outputs import OutputStore
root, index = sys.argv[1], sys.argv[2]
store = OutputStore(root)                        # a second copy of the app on the same folder
db = sqlite3.connect(index, isolation_level=None)
db.execute("BEGIN IMMEDIATE")                    # holds the write lock, as a long save would
print("held", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
db.close()
for i in range(int(sys.argv[3])):
    store.save(Image.new("RGB", (32, 32)), 500 + i, f"from the other copy {i}\\nSteps: 2, Seed: {500 + i}, Size: 32x32")
print("saved", flush=True)
"""


def _other_copy(root: Path, saves: int):
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(root), str(root / INDEX_DIR / INDEX_FILE), str(saves)],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)


def test_a_locked_index_is_waited_for_never_moved_aside(tmp_path, monkeypatch):
    """Issue 36: a second instance took "database is locked" for damage, moved the live index aside and
    deleted its WAL. Now a lock held past the wait is HistoryBusy: nothing moved, no row lost."""
    from zimage.errors import HistoryBusy
    from zimage.store import sqlite_file

    root = tmp_path / "out"
    first = OutputStore(root)
    before = [save(first, f"before {i}", i) for i in range(2)]
    monkeypatch.setattr(sqlite_file, "BUSY_TIMEOUT_S", 0.3)
    other = _other_copy(root, saves=2)
    try:
        assert other.stdout.readline().strip() == "held"
        _foreign_png(root / "2023-05-06" / "copied.png", "copied in while the other copy runs\nSteps: 3, Seed: 8, Size: 40x24")
        second = OutputStore(root)                  # its reindex meets the lock: logged, the store still works
        during = save(first, "saved while locked", 3)                 # on disk; its row waits for a restart
        with pytest.raises(HistoryBusy) as err:
            second.history.add(during)
        assert err.value.http_status == 503 and "in use" in err.value.message
        index_dir = root / INDEX_DIR
        assert sorted(p.name for p in index_dir.iterdir() if "unreadable" in p.name) == []
        assert (index_dir / f"{INDEX_FILE}-wal").is_file() and (index_dir / f"{INDEX_FILE}-shm").is_file()
        assert second.history.count() == 2                            # reads go on under the lock (WAL)
        other.stdin.write("go\n")
        other.stdin.flush()
        assert other.stdout.readline().strip() == "saved"
        assert other.wait(timeout=60) == 0
    finally:
        if other.poll() is None:          # only when the test failed before the other copy ended
            other.kill()
            other.wait(timeout=30)
    assert second.history.reconcile().added == 2                      # the copied PNG and the one saved while locked
    first.history.close()
    second.history.close()
    restarted = OutputStore(root)
    prompts_now = sorted(e.prompt for e in restarted.history.query(HistoryQuery(limit=50)).entries)
    assert prompts_now == sorted(["before 0", "before 1", "copied in while the other copy runs", "saved while locked",
                                  "from the other copy 0", "from the other copy 1"])
    assert all((root / e.path).is_file() for e in restarted.history.query(HistoryQuery(limit=50)).entries)
    assert not list((root / INDEX_DIR).glob("*unreadable*")) and len(before) == 2


SAVER = """
import sys
from PIL import Image
from zimage.store.outputs import OutputStore
store = OutputStore(sys.argv[1])
for i in range(int(sys.argv[2])):
    store.save(Image.new("RGB", (32, 32)), 700 + i, f"process two {i}\\nSteps: 2, Seed: {700 + i}, Size: 32x32")
"""


def test_two_processes_saving_into_one_folder_lose_nothing(tmp_path):
    """Two copies of the app (two processes, two History objects) save at the same time into one
    outputs folder; after a restart every image of both is listed and nothing was moved aside."""
    root = tmp_path / "out"
    here = OutputStore(root)
    other = subprocess.Popen([sys.executable, "-c", SAVER, str(root), "15"], cwd=ROOT)
    mine = [save(here, f"process one {i}", 600 + i) for i in range(15)]
    assert other.wait(timeout=120) == 0
    also_here = OutputStore(root)                 # a third History object on the same folder, meanwhile
    assert also_here.history.count() == 30
    here.history.close()
    also_here.history.close()
    restarted = OutputStore(root)
    listed = restarted.history.query(HistoryQuery(limit=50))
    assert listed.total == 30 and len(mine) == 15
    assert sorted(e.prompt for e in listed.entries) == sorted([f"process one {i}" for i in range(15)] +
                                                              [f"process two {i}" for i in range(15)])
    assert not list((root / INDEX_DIR).glob("*unreadable*"))
