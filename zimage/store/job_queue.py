"""The generation queue kept on disk, so jobs outlive a restart: one row per job in
`<outputs>/.index/queue.sqlite3` (beside the History index), its input images (an edit's image and
mask, a ControlNet map) as PNGs in `<outputs>/.index/queue-files/<token>/`, never among the outputs'
images. No torch.

A job is recorded `waiting` when submitted, marked `running` when the backend starts it, and its
row and files are removed once its result is saved (or it failed or was cancelled: the user saw
that). At the next start `open()` marks the rows still `running` as `interrupted` (the app died
while they ran) and removes file folders no row names (a kill between writing them and the row).

SQLite habits as history.py: WAL, BEGIN IMMEDIATE, a busy wait; a lock held past the wait is
QueueBusy (the file is in use, never moved); a file SQLite calls damaged, confirmed by a fresh
quick_check, is moved aside and the queue starts empty; one row that cannot be read costs that row.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import QueueBusy
from ..hires_request import HiresSpec
from ..lora_tags import parse_loras
from ..request import ControlUnit, GenerationRequest
from .sqlite_file import INT64_MAX, SqliteFile, transaction

log = logging.getLogger(__name__)

INDEX_DIR = ".index"                  # history.INDEX_DIR: the folder scan_pngs leaves out
QUEUE_FILE = "queue.sqlite3"
FILES_DIR = "queue-files"
SCHEMA_VERSION = 1
WAITING, RUNNING, INTERRUPTED = "waiting", "running", "interrupted"
STATES = (WAITING, RUNNING, INTERRUPTED)
MAX_ID = INT64_MAX                    # SQLite's rowid range: a larger id names no job

# AUTOINCREMENT: an id is never given twice, so a page or client acting on a stale id can never hit
# a newer job that took the number of a deleted one.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, state TEXT NOT NULL, prompt TEXT NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL, created REAL NOT NULL, owner TEXT, user TEXT,
    params TEXT NOT NULL, files TEXT NOT NULL)
"""
# The request's fields kept as JSON: every field but the images (files) and the LoRAs (the prompt's tags).
_SKIP = {"init_image", "mask", "control", "loras"}


@dataclass(frozen=True)
class KeptJob:
    id: int
    state: str                        # waiting, running or interrupted
    prompt: str
    width: int
    height: int
    created: float                    # Unix time it was submitted
    owner: str | None
    user: str | None
    params: dict                      # the request's fields (request_params)
    files: str                        # its image folder's name under queue-files/, "" without images

    def to_dict(self) -> dict:
        return {"id": self.id, "state": self.state, "prompt": self.prompt, "width": self.width, "height": self.height,
                "size": f"{self.width}x{self.height}", "created": self.created, "owner": self.owner,
                "mode": self.params.get("mode", "txt2img"), "num_images": self.params.get("num_images", 1),
                "seed": self.params.get("seed")}


def request_params(req: GenerationRequest) -> dict:
    params = {f.name: getattr(req, f.name) for f in fields(req) if f.name not in _SKIP}
    params = {k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in params.items()}   # JSON has no sets
    if req.hires is not None:
        params["hires"] = dataclasses.asdict(req.hires)
    if req.control is not None:
        c = req.control
        params["control"] = {"module": c.module, "digest": c.digest, "model": c.model, "weight": c.weight,
                             "guidance_start": c.guidance_start, "guidance_end": c.guidance_end}
    return params


def _save_png(image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load_png(path: Path, mode: str):
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return im if im.mode == mode else im.convert(mode)


class JobQueue:
    """One connection behind a lock (sqlite_file.SqliteFile), as HistoryIndex. Thread-safe; every call
    is one short statement or transaction."""

    def __init__(self, outputs: str | Path):
        self.root = Path(outputs).expanduser().resolve()
        self.file = self.root / INDEX_DIR / QUEUE_FILE
        self.files_dir = self.root / INDEX_DIR / FILES_DIR
        self._sqlite = SqliteFile(self.file, _SCHEMA, SCHEMA_VERSION, busy=QueueBusy,
                                  what="the kept queue", on_damage="moved aside, the queue starts empty")

    def close(self) -> None:
        self._sqlite.close()

    def open(self) -> list[KeptJob]:
        """At start: the rows still `running` become `interrupted` (this process runs nothing yet),
        image folders no row names are removed. Returns the kept jobs, oldest first."""
        with self._sqlite.using() as db, transaction(db):
            db.execute("UPDATE jobs SET state = ? WHERE state = ?", (INTERRUPTED, RUNNING))
            named = {r[0] for r in db.execute("SELECT files FROM jobs")}
        try:
            folders = list(os.scandir(self.files_dir))
        except FileNotFoundError:
            folders = []
        for entry in folders:
            if entry.name not in named:
                shutil.rmtree(entry.path, ignore_errors=True)
        return self.list()

    # ---- writes ----------------------------------------------------------------------------------
    def add(self, req: GenerationRequest, owner: str | None = None, user: str | None = None,
            created: float | None = None) -> int:
        """Record a submitted job as waiting; its images are written (and synced) before its row."""
        images = {"init_image": req.init_image, "mask": req.mask,
                  "control": req.control.image if req.control is not None else None}
        token = ""
        if any(v is not None for v in images.values()):
            token = secrets.token_hex(8)
            folder = self.files_dir / token
            folder.mkdir(parents=True)
            try:
                for name, image in images.items():
                    if image is not None:
                        _save_png(image, folder / f"{name}.png")
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        params = {**request_params(req), "images": [name for name, image in images.items() if image is not None]}
        row = (WAITING, req.prompt, req.width, req.height, time.time() if created is None else created, owner, user,
               json.dumps(params), token)
        try:
            with self._sqlite.using() as db:
                return db.execute("INSERT INTO jobs (state, prompt, width, height, created, owner, user, params, files) "
                                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row).lastrowid
        except BaseException:
            if token:
                shutil.rmtree(self.files_dir / token, ignore_errors=True)
            raise

    def mark(self, job_id: int, state: str) -> bool:
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        with self._sqlite.using() as db:
            return db.execute("UPDATE jobs SET state = ? WHERE id = ?", (state, job_id)).rowcount > 0

    def remove(self, job_id: int) -> bool:
        """Drop exactly this job's row, then its images; False when no such job is kept."""
        with self._sqlite.using() as db:
            row = db.execute("SELECT files FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        if row[0]:
            shutil.rmtree(self.files_dir / row[0], ignore_errors=True)
        return True

    # ---- reads -----------------------------------------------------------------------------------
    def get(self, job_id: int) -> KeptJob | None:
        with self._sqlite.using() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _kept(row) if row is not None else None

    def list(self) -> list[KeptJob]:
        """Every kept job, oldest first; a row that cannot be read is left out and logged."""
        with self._sqlite.using() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY id").fetchall()
        return [job for job in map(_kept, rows) if job is not None]

    def request_of(self, job: KeptJob) -> GenerationRequest:
        """The job's request as it was submitted, its images read back from its folder. Raises
        OSError when an image file is gone, ValueError/TypeError when the params are not a request."""
        params = dict(job.params)
        control = params.pop("control", None)
        saved = params.pop("images", [])
        folder = self.files_dir / job.files
        for name, mode in (("init_image", "RGB"), ("mask", "L")):
            if name in saved:
                params[name] = _load_png(folder / f"{name}.png", mode)
        unit = None
        if control is not None:
            unit = ControlUnit(image=_load_png(folder / "control.png", "RGB"), **control)
        known = {f.name for f in fields(GenerationRequest)} - _SKIP
        if isinstance(params.get("defaulted"), list):           # the fields left to the model's defaults
            params["defaulted"] = frozenset(params["defaulted"])
        if isinstance(params.get("hires"), dict):
            params["hires"] = HiresSpec(**params["hires"])
        return GenerationRequest(**{k: v for k, v in params.items() if k in known | {"init_image", "mask"}},
                                 loras=parse_loras(params["prompt"]), control=unit)


_COLUMNS = "id, state, prompt, width, height, created, owner, user, params, files"


def _kept(row) -> KeptJob | None:
    try:
        params = json.loads(row[8])
        if not isinstance(params, dict):
            raise ValueError("params is not an object")
        return KeptJob(id=int(row[0]), state=str(row[1]), prompt=str(row[2]), width=int(row[3]), height=int(row[4]),
                       created=float(row[5]), owner=row[6], user=row[7], params=params, files=str(row[9] or ""))
    except (ValueError, TypeError) as e:
        log.warning("kept queue: job %r left out (%s)", row[0] if row else None, e)
        return None

