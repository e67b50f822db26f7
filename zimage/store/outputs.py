"""Where images land: the outputs folder (never overwritten, never half-written), saving a
request's images with their infotext, and the PNG bytes an API answer carries. No torch.
"""
from __future__ import annotations

import errno
import logging
import os
import secrets
import threading
from datetime import datetime
from pathlib import Path

from ..request import MODEL_LABEL, GeneratedImage, GenerationRequest, GenerationResult, infotext

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
        self.recover()

    def recover(self) -> None:
        """Clean what a killed process left: temporary files are removed; a final-named PNG without
        its end chunk (written by a version before the temporary names, or by hand) moves to
        .quarantine/ as .png.partial, out of the page's and /outputs' way but not destroyed: it is
        the user's folder. Only the last 12 bytes of each PNG are read (10,000 images in well
        under a second), not a full decode."""
        if not self.root.is_dir():
            return
        for temp in self.root.glob(f"*/.*{TEMP_SUFFIX}"):
            log.info("removing %s, left by an interrupted save", temp)
            temp.unlink(missing_ok=True)
        for png in self.root.glob("*/*.png"):
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

    def save(self, image, seed: int, text: str) -> Path:
        import io

        from PIL.PngImagePlugin import PngInfo

        meta = PngInfo()
        meta.add_text("parameters", text)
        buf = io.BytesIO()
        image.save(buf, format="PNG", pnginfo=meta)
        return self._write(seed, buf.getvalue())

    def save_png(self, data: bytes, seed: int) -> Path:
        """Save an encoded PNG as it is (one made by a Ray replica, metadata included)."""
        return self._write(seed, data)

    def _write(self, seed: int, data: bytes) -> Path:
        day = self.root / datetime.now().strftime("%Y-%m-%d")
        day.mkdir(parents=True, exist_ok=True)
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
                lora_hashes: dict[str, str] | None = None) -> GenerationResult:
    """Save a request's images (with their infotext: `lora_hashes` are the fused LoRAs' A1111 hashes)
    and make its result."""
    results, warning = [], ""
    for image, seed in zip(images, req.seeds()):
        text = infotext(req, seed, model_label, lora_hashes)
        path = None
        if not warning:
            try:
                path = store.save(image, seed, text)
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
    import io

    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    meta.add_text("parameters", item.infotext)
    buf = io.BytesIO()
    item.image.save(buf, format="PNG", pnginfo=meta)
    return buf.getvalue()
