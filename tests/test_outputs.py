"""store/outputs.py: images saved under the outputs folder, never overwritten, never half-written."""
from pathlib import Path

import pytest
from PIL import Image

from zimage.store.outputs import OutputStore


def test_output_store_never_overwrites_and_keeps_metadata(tmp_path):
    store = OutputStore(tmp_path / "out")
    img = Image.new("RGB", (16, 16), "red")
    paths = [store.save(img, 5, "params") for _ in range(3)]
    assert len(set(paths)) == 3
    for p in paths:
        assert p.is_relative_to(store.root)
        assert Image.open(p).text["parameters"] == "params"


def test_output_store_reports_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = OutputStore(blocker / "out")
    with pytest.raises(OSError):
        store.save(Image.new("RGB", (8, 8)), 1, "x")
    assert blocker.read_text() == "not a folder"


def test_save_png_keeps_the_bytes_and_never_overwrites(tmp_path):
    """Images made on a Ray replica arrive encoded; the app's outputs folder gets them byte for byte."""
    from zimage.store.outputs import OutputStore

    store = OutputStore(tmp_path / "out")
    first = store.save_png(b"\x89PNG first", 7)
    second = store.save_png(b"\x89PNG second", 7)
    assert first != second and first.parent.parent == store.root
    assert first.read_bytes() == b"\x89PNG first" and second.read_bytes() == b"\x89PNG second"


def test_output_store_disk_full_mid_write_leaves_no_partial_file(tmp_path, monkeypatch):
    """ENOSPC half-way through the PNG (tests/test_faults.py does it on a real 32 KB tmpfs where it can mount)."""
    import errno

    def fill_up(self, fh, *args, **kwargs):
        fh.write(b"\x89PNG half an image")
        raise OSError(errno.ENOSPC, "No space left on device")
    store = OutputStore(tmp_path / "out")
    kept = store.save(Image.new("RGB", (8, 8)), 1, "x")
    monkeypatch.setattr(Image.Image, "save", fill_up)
    with pytest.raises(OSError) as e:
        store.save(Image.new("RGB", (8, 8)), 2, "x")
    assert e.value.errno == errno.ENOSPC
    assert list(store.root.rglob("*.png")) == [kept] and Image.open(kept).size == (8, 8)


def test_a_kill_mid_write_leaves_no_partial_png_and_a_restart_cleans_up(tmp_path):
    """kill -9 while a PNG is written (held half-way by the store's test seam) leaves nothing under a
    final name; the next OutputStore removes the temporary file and quarantines an old truncated PNG."""
    import os
    import signal
    import subprocess
    import sys

    from zimage.store.history import INDEX_DIR
    from zimage.store.outputs import BLOCK_WRITE_ENV, QUARANTINE_DIR

    from conftest import wait_for

    root, marker = tmp_path / "out", tmp_path / "half-written"
    script = ("import sys; from PIL import Image; from zimage.store.outputs import OutputStore; "
              "OutputStore(sys.argv[1]).save(Image.effect_noise((512, 512), 64).convert('RGB'), 7, 'params')")
    env = {**os.environ, BLOCK_WRITE_ENV: str(marker),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", script, str(root)], env=env)
    try:
        wait_for(lambda: marker.exists() or child.poll() is not None, 60, message="the write to be half done")
        assert child.poll() is None, "the child finished without pausing mid-write"
        OutputStore(root).history.close()                 # another copy of the app starts beside the live save
        assert len(list(root.glob("*/.*.part"))) == 1     # and leaves the file being written alone
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert list(root.rglob("*.png")) == []                           # no partial image under a final name
    leftovers = [p for p in root.rglob("*") if p.is_file() and INDEX_DIR not in p.parts]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0   # the half-written temporary file
    day = leftovers[0].parent
    truncated = day / "120000-9.png"                                  # as the old direct write left them
    whole = OutputStore(tmp_path / "elsewhere").save(Image.new("RGB", (8, 8)), 1, "x")
    truncated.write_bytes(whole.read_bytes()[:40])
    kept = day / "120001-9.png"
    kept.write_bytes(whole.read_bytes())
    store = OutputStore(root)                                         # the restart
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and INDEX_DIR not in p.parts) == sorted(
        [kept.relative_to(root).as_posix(), f"{QUARANTINE_DIR}/{day.name}/120000-9.png.partial"])
    assert Image.open(kept).size == (8, 8) and store.save(Image.new("RGB", (8, 8)), 2, "x").exists()
