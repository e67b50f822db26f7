"""Where images land: the outputs folder (never overwritten, never half-written), saving a
request's images with their infotext, and the PNG bytes an API answer carries. No torch.
"""
from __future__ import annotations

import errno
import logging
import os
import secrets
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:                     # Windows
    fcntl = None

from ..errors import HistoryItemChanged, HistoryItemNotFound, HistoryPathRefused
from ..infotext import MODEL_LABEL, infotext
from ..request import GeneratedImage, GenerationRequest, GenerationResult
from .history import HistoryEntry, HistoryIndex, split_id
from .sqlite_file import clamp_int64

log = logging.getLogger(__name__)


PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"    # the IEND chunk every complete PNG ends with
TEMP_SUFFIX = ".part"                               # ".<final name>.<random>.part" while being written
QUARANTINE_DIR = ".quarantine"
# Test seam (tests/test_generate.py): the path of a file to create once half a PNG is written, after
# which the write blocks, so a test can kill the process mid-write.
BLOCK_WRITE_ENV = "ZIMAGE_TEST_BLOCK_PNG_WRITE"


class OutputStore:
    """Saves images under one folder and nowhere else; never overwrites an existing file; a file
    under its final name is always a complete PNG (written to a temporary name, fsynced, then linked)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.history = HistoryIndex(self.root)      # updated here for every image saved or deleted
        self.recover()
        if self.root.is_dir():
            try:
                self.history.reconcile()
            except Exception:       # the history is derived data: without it, images are still saved
                log.exception("the history index of %s could not be brought up to date", self.root)

    def recover(self) -> None:
        """Clean what a killed process left: temporary files are removed; a final-named PNG without
        its end chunk (written by a version before the temporary names, or by hand) moves to
        .quarantine/ as .png.partial, out of the page's and /outputs' way but not destroyed: it is
        the user's folder. Only the last 12 bytes of each PNG are read (10,000 images in well
        under a second), not a full decode. A day folder another process is saving into (a second
        copy of the app on this folder: it holds the folder's lock, _folder_lock) is left alone:
        its temporary file is a save in progress, which this clean-up deleted (the image was lost)."""
        if not self.root.is_dir():
            return
        for day in sorted(p for p in self.root.iterdir() if p.is_dir()):
            with _folder_lock(day, exclusive=True) as held:
                if held:
                    self._recover_day(day)
                else:
                    log.info("%s is being saved into by another process; not cleaned now", day)

    def _recover_day(self, day: Path) -> None:
        for temp in day.glob(f".*{TEMP_SUFFIX}"):
            log.info("removing %s, left by an interrupted save", temp)
            try:
                temp.unlink(missing_ok=True)
            except OSError as e:          # Windows: a file another process has open cannot be deleted
                log.warning("could not remove %s: %s", temp, e)
        for png in day.glob("*.png"):
            try:
                with open(png, "rb") as fh:
                    size = fh.seek(0, 2)
                    fh.seek(max(0, size - len(PNG_END)))
                    complete = fh.read() == PNG_END
                if complete:
                    continue
                target = self.root / QUARANTINE_DIR / png.parent.name / f"{png.name}.partial"
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(png, target)
                log.warning("moved the incomplete image %s to %s", png, target)
            except OSError as e:
                log.warning("could not check %s: %s", png, e)

    def save(self, image, seed: int, text: str, seconds: float | None = None) -> Path:
        """`seconds`: what the image took, for the History view."""
        path = self._write(seed, encode_png(image, text))
        self._index(path, seconds, text, image.size)
        return path

    def save_png(self, data: bytes, seed: int, seconds: float | None = None) -> Path:
        """Save an encoded PNG as it is (one made by a Ray replica, metadata included)."""
        path = self._write(seed, data)
        self._index(path, seconds)
        return path

    def _index(self, path: Path, seconds: float | None, text: str | None = None,
               size: tuple[int, int] | None = None) -> None:
        try:
            self.history.add(path, seconds, text, size)
        except Exception as e:      # the image is saved; the next start's reconcile indexes it
            log.warning("could not add %s to the history index: %s", path, e)

    def delete(self, item: str) -> HistoryEntry:
        """Delete the one image the History view listed as `item` (`entry.id`) and its index row.
        Refused (typed) when it names a path outside the outputs folder's images, or a file that
        changed or went since it was listed: the user confirmed that file and no other."""
        parsed = split_id(item)
        if parsed is None:
            raise HistoryPathRefused(str(item)[:200], "it is not an item of the History list")
        rel, mtime_ns = parsed
        parts = rel.split("/")
        if ("\x00" in rel or rel.startswith("/") or len(parts) != 2 or any(p in ("", ".", "..") for p in parts)
                or any(p.startswith(".") for p in parts) or not parts[1].endswith(".png")):
            raise HistoryPathRefused(rel[:200], "it is not an image in the outputs folder")
        path = self.root / parts[0] / parts[1]
        if path.is_symlink() or not path.parent.resolve().parent == self.root:
            raise HistoryPathRefused(rel, "it leads out of the outputs folder")
        entry = self.history.get(rel)
        if entry is None:
            raise HistoryItemNotFound(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.history.remove(rel)
            raise HistoryItemChanged(rel, "was removed") from None
        if clamp_int64(st.st_mtime_ns) != mtime_ns or entry.mtime_ns != mtime_ns:     # as the index keeps it
            raise HistoryItemChanged(rel, "was replaced or changed")
        path.unlink()
        self.history.remove(rel)
        log.info("deleted %s from the outputs (History)", rel)
        return entry

    def _write(self, seed: int, data: bytes) -> Path:
        day = self.root / datetime.now().strftime("%Y-%m-%d")
        day.mkdir(parents=True, exist_ok=True)
        with _folder_lock(day, exclusive=False):      # another copy's start-up clean-up waits for this save
            return self._write_in(day, seed, data)

    def _write_in(self, day: Path, seed: int, data: bytes) -> Path:
        stamp = datetime.now().strftime("%H%M%S")
        temp = day / f".{stamp}-{seed}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            # "xb": exclusive create. The bytes reach the disk before any final name points at them,
            # so a kill -9 or a full disk leaves only a temporary file (removed here or at start).
            with open(temp, "xb") as fh:
                _write_bytes(fh, data)
                fh.flush()
                os.fsync(fh.fileno())
            for n in range(10_000):
                path = day / f"{stamp}-{seed}{'-' + str(n) if n else ''}.png"
                try:
                    _link(temp, path)
                    return path
                except FileExistsError:
                    continue
            raise OSError(f"no free file name in {day}")
        finally:
            temp.unlink(missing_ok=True)

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))


@contextmanager
def _folder_lock(folder: Path, exclusive: bool) -> Iterator[bool]:
    """flock on a day folder: every save holds it shared, recover() takes it exclusive without
    waiting (yields False when a save holds it). Released by the system when a process dies, so a
    killed save's leftovers are cleaned at the next start. Without flock (Windows, a filesystem that
    refuses it) saves go unlocked and recover() goes ahead (Windows refuses to delete an open file)."""
    if fcntl is None:
        yield True
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
        except BlockingIOError:
            yield False
            return
        except OSError as e:              # ENOLCK, EINVAL: no locks on this filesystem
            log.debug("no lock on %s: %s", folder, e)
        yield True
    finally:
        os.close(fd)


def _link(temp: Path, path: Path) -> None:
    """Give the written file its final name; FileExistsError if that name is taken (never overwrites)."""
    try:
        os.link(temp, path)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        # No hard links here (FAT/exFAT drives, some network shares): claim the name, then swap the
        # bytes in. A kill between the two leaves an empty file, which recover() quarantines.
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        os.replace(temp, path)


def _write_bytes(fh, data: bytes) -> None:
    marker = os.environ.get(BLOCK_WRITE_ENV)
    if not marker:
        fh.write(data)
        return
    fh.write(data[:len(data) // 2])
    fh.flush()
    Path(marker).touch()
    threading.Event().wait()          # until the test kills this process


def save_result(req: GenerationRequest, images: list, seconds: float, store: OutputStore,
                model_label: str = MODEL_LABEL, batch_images: int = 0,
                lora_hashes: dict[str, str] | None = None, model_hash: str = "") -> GenerationResult:
    """Save a request's images (with their infotext: `lora_hashes` are the fused LoRAs' A1111 hashes)
    and make its result."""
    results, warning = [], ""
    per_image_s = seconds / max(1, batch_images or len(images))     # as GenerationResult.seconds_per_image
    for image, seed in zip(images, req.seeds()):
        text = infotext(req, seed, model_label, lora_hashes, model_hash)
        path = None
        if not warning:
            try:
                path = store.save(image, seed, text, seconds=per_image_s)
            except OSError as e:
                warning = unsaved_warning(store, e)
        results.append(GeneratedImage(image=image, seed=seed, infotext=text, path=path))
    return GenerationResult(request=req, images=results, seconds=seconds, warning=warning, batch_images=batch_images)


def unsaved_warning(store: OutputStore, e: OSError) -> str:
    log.warning("saving output failed: %s", e)
    return (f"Could not save to {store.root}: {e.strerror or e}. "
            "The image is shown but not saved; free disk space or pick another --outputs folder.")


def png_bytes(item: GeneratedImage) -> bytes:
    """The PNG as saved (metadata included); re-encoded only when saving failed."""
    if item.path is not None and item.path.exists():
        return item.path.read_bytes()
    return encode_png(item.image, item.infotext)


# zlib level 1: a 1024x1024 image with a photo's grain encodes in 0.14 s instead of 0.40 s (level 6,
# Pillow's default) for a file 15% bigger; the user waits for the file before the image shows (on
# the H200 the save was 0.25-0.45 s of a 1.2-1.4 s image: bench.profile_bench, png_save_s).
PNG_COMPRESS_LEVEL = 1


def encode_png(image, text: str) -> bytes:
    """The image as PNG with the A1111-style `parameters` text chunk."""
    import io

    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    meta.add_text("parameters", text)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=meta, compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()
