"""The History index: one row per image in the outputs folder (its `parameters` read once), kept
next to the outputs in `<outputs>/.index/history.sqlite3`, so a page of 10,000 images is one
indexed query and never a re-read of every PNG. No torch.

The PNGs are the truth and the index is derived from them: `reconcile()` (at start) adds the files
it lacks, re-reads the ones whose mtime or size changed and drops the rows whose file is gone; a
page query also drops the rows of its own page whose file vanished since. An index that cannot be
read (a torn or foreign file, confirmed by PRAGMA quick_check) is moved aside with its WAL and
rebuilt from the files; one that is only locked (another copy of the app on the same folder) is
waited for and never touched. One row that cannot be stored costs that row, never the others.

Why SQLite (the stdlib's): each save is one small transaction (WAL: a kill mid-write loses at
most that row, which the next start re-reads), and search, date and size filters, newest-first
ordering and paging are one query over an index instead of a scan of a JSON file in memory.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timedelta
from pathlib import Path

from ..errors import HistoryBusy, InvalidRequest
from ..infotext import parse_infotext
from ..lora_tags import parse_loras
from .sqlite_file import INT64_MAX, ROW_ERRORS, SqliteFile, clamp_int64, sqlite_int, sqlite_real, transaction

log = logging.getLogger(__name__)

INDEX_DIR = ".index"
INDEX_FILE = "history.sqlite3"
SCHEMA_VERSION = 1
PAGE_MAX = 200                   # rows one query may return (the page shows far fewer)
ORIENTATIONS = ("square", "landscape", "portrait")

_COLUMNS = ("path", "mtime_ns", "bytes", "width", "height", "prompt", "negative", "seed", "steps", "guidance",
            "model", "loras", "seconds", "created")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL, bytes INTEGER NOT NULL,
    width INTEGER, height INTEGER, prompt TEXT NOT NULL, fold TEXT NOT NULL, negative TEXT NOT NULL,
    seed INTEGER, steps INTEGER, guidance REAL, model TEXT NOT NULL, loras TEXT NOT NULL,
    seconds REAL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS images_newest ON images (created DESC, path DESC);
"""


@dataclass(frozen=True)
class HistoryEntry:
    path: str                    # relative to the outputs folder, with '/' ("2025-01-31/120000-42.png")
    mtime_ns: int
    bytes: int
    width: int | None
    height: int | None
    prompt: str                  # as saved, <lora:...> tags included
    negative: str = ""
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    model: str = ""
    loras: tuple[tuple[str, float], ...] = ()
    seconds: float | None = None  # seconds per image, when the app made it (not known for other files)
    created: float = 0.0         # Unix time: the file's mtime when first indexed

    @property
    def id(self) -> str:
        """What the page hands back to act on this exact file: a replaced file gets another id."""
        return entry_id(self.path, self.mtime_ns)


@dataclass(frozen=True)
class HistoryQuery:
    text: str = ""               # case-insensitive, in the prompt
    since: date | None = None    # local dates, both ends included
    until: date | None = None
    size: str = ""               # "" (any), "square", "landscape", "portrait", or "WxH"
    offset: int = 0
    limit: int = 24


@dataclass(frozen=True)
class HistoryPage:
    entries: list[HistoryEntry]
    total: int                   # rows matching the filters, over every page


@dataclass(frozen=True)
class ReconcileReport:
    added: int
    updated: int
    dropped: int
    seconds: float


def entry_id(path: str, mtime_ns: int) -> str:
    return f"{path}@{mtime_ns}"


def split_id(item: str) -> tuple[str, int] | None:
    """(relative path, mtime_ns) of an id, None when it is not one."""
    if not isinstance(item, str):
        return None
    path, sep, stamp = item.rpartition("@")
    # ASCII digits, at most 20 (an mtime_ns has 19): "²".isdigit() is true but int("²") raises
    return (path, int(stamp)) if sep and path and re.fullmatch(r"[0-9]{1,20}", stamp) else None


def parse_size_filter(size: str) -> tuple[str, list]:
    """The SQL condition (and its parameters) for a size filter; InvalidRequest naming `size`."""
    size = (size or "").strip().lower()
    if not size or size == "any":
        return "", []
    if size == "square":
        return "width = height", []
    if size == "landscape":
        return "width > height", []
    if size == "portrait":
        return "width < height", []
    w, sep, h = size.partition("x")
    if sep and re.fullmatch(r"[0-9]{1,30}", w) and re.fullmatch(r"[0-9]{1,30}", h):
        if max(len(w), len(h)) > 5:          # ASCII digits, but no image is that wide (nor SQLite's integers)
            return "0", []
        return "width = ? AND height = ?", [int(w), int(h)]
    raise InvalidRequest("size", f"must be square, landscape, portrait or WIDTHxHEIGHT, got {size!r}")


def read_entry(root: Path, path: Path, seconds: float | None = None, text: str | None = None,
               size: tuple[int, int] | None = None) -> HistoryEntry:
    """The entry of one PNG. Without `text`/`size`, only its chunks before the pixels are read
    (Pillow's `info`; `.text` would decode the whole image to look for chunks after it)."""
    st = os.stat(path)
    if text is None or size is None:
        from PIL import Image

        with Image.open(path) as im:
            size = im.size
            raw = im.info.get("parameters")
            text = raw if isinstance(raw, str) else ""
    info = parse_infotext(text)
    try:
        loras = parse_loras(info["prompt"])
    except InvalidRequest:       # a malformed tag in someone else's PNG: shown as text, no LoRAs
        loras = ()
    return HistoryEntry(path=path.relative_to(root).as_posix(), mtime_ns=clamp_int64(st.st_mtime_ns), bytes=st.st_size,
                        width=size[0], height=size[1], prompt=info["prompt"], negative=info["negative_prompt"],
                        seed=info.get("seed"), steps=info.get("steps"), guidance=info.get("guidance_scale"),
                        model=info.get("model", ""), loras=loras, seconds=seconds, created=st.st_mtime)


def scan_pngs(root: Path) -> dict[str, os.stat_result]:
    """relative path -> stat of every image OutputStore could have written: `<day>/<name>.png`,
    hidden folders and files (.index, .quarantine, temporaries) and symlinks left out."""
    found = {}
    try:
        days = [d for d in os.scandir(root) if not d.name.startswith(".") and d.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return found
    for day in days:
        try:
            with os.scandir(day.path) as files:
                for f in files:
                    if f.name.endswith(".png") and not f.name.startswith(".") and f.is_file(follow_symlinks=False):
                        found[f"{day.name}/{f.name}"] = f.stat(follow_symlinks=False)
        except OSError as e:
            log.warning("could not list %s: %s", day.path, e)
    return found


class HistoryIndex:
    """Owned by OutputStore (which calls `add` for each image it saves and `remove` for each it
    deletes). One connection behind a lock (sqlite_file.SqliteFile): every call is one short
    statement or transaction, from the saver thread or a page handler."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.file = self.root / INDEX_DIR / INDEX_FILE
        self._sqlite = SqliteFile(self.file, _SCHEMA, SCHEMA_VERSION, busy=HistoryBusy,
                                  drop_old="DROP TABLE IF EXISTS images",    # derived: rebuilt from the PNGs
                                  what="the history index", on_damage="rebuilding it from the images")

    def close(self) -> None:
        self._sqlite.close()

    # ---- writes ----------------------------------------------------------------------------------
    def add(self, path: Path, seconds: float | None = None, text: str | None = None,
            size: tuple[int, int] | None = None) -> HistoryEntry:
        entry = read_entry(self.root, Path(path), seconds, text, size)
        with self._sqlite.using() as db:
            db.execute(_UPSERT, _row(entry))
        return entry

    def remove(self, rel_path: str) -> None:
        with self._sqlite.using() as db:
            db.execute("DELETE FROM images WHERE path = ?", (rel_path,))

    def reconcile(self) -> ReconcileReport:
        """Bring the index in line with the folder: only files it lacks (or that changed) are read.
        One file that cannot be read or stored is left out and logged; the others are kept."""
        began = time.perf_counter()
        on_disk = scan_pngs(self.root)
        with self._sqlite.using() as db:
            known = dict(db.execute("SELECT path, mtime_ns || ':' || bytes FROM images"))
        gone = [p for p in known if p not in on_disk]
        fresh = []
        for rel, st in on_disk.items():
            was = known.get(rel)
            if was == f"{clamp_int64(st.st_mtime_ns)}:{st.st_size}":
                continue
            try:
                fresh.append((rel, was is not None, _row(read_entry(self.root, self.root / rel))))
            except Exception as e:          # not a PNG Pillow reads: left out of the history, not fatal
                log.warning("history: %s left out (%s)", rel, e)
        added = updated = dropped = 0
        with self._sqlite.using() as db, transaction(db):
            for rel in gone:
                # Looked at again: another copy of the app may have saved it since the scan.
                if not (self.root / rel).is_file():
                    dropped += db.execute("DELETE FROM images WHERE path = ?", (rel,)).rowcount
            for rel, was_known, row in fresh:
                try:
                    db.execute(_UPSERT, row)
                except ROW_ERRORS as e:     # this row only; SQLite undid just this statement
                    log.warning("history: %s left out (%s)", rel, e)
                    continue
                updated += was_known
                added += not was_known
        report = ReconcileReport(added=added, updated=updated, dropped=dropped, seconds=time.perf_counter() - began)
        if fresh or gone:
            log.info("history index: %d added, %d re-read, %d dropped in %.2f s", report.added, report.updated,
                     report.dropped, report.seconds)
        return report

    # ---- reads -----------------------------------------------------------------------------------
    def get(self, rel_path: str) -> HistoryEntry | None:
        with self._sqlite.using() as db:
            row = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM images WHERE path = ?", (rel_path,)).fetchone()
        return _entry(row) if row else None

    def query(self, q: HistoryQuery = HistoryQuery()) -> HistoryPage:
        """Newest first. Rows of this page whose file vanished (deleted by hand) are dropped and the
        page asked again: a stat per shown row, never a read of the files."""
        where, params = _where(q)
        limit, offset = max(1, min(int(q.limit), PAGE_MAX)), min(max(0, int(q.offset)), INT64_MAX)
        for _ in range(3):
            with self._sqlite.using() as db:
                total = db.execute(f"SELECT COUNT(*) FROM images{where}", params).fetchone()[0]
                rows = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM images{where} "
                                  "ORDER BY created DESC, path DESC LIMIT ? OFFSET ?",
                                  [*params, limit, offset]).fetchall()
            entries = [_entry(r) for r in rows]
            gone = [e for e in entries if not (self.root / e.path).is_file()]
            if not gone:
                break
            try:
                with self._sqlite.using() as db:
                    db.executemany("DELETE FROM images WHERE path = ?", [(e.path,) for e in gone])
            except HistoryBusy:             # housekeeping: the page is shown without them this time
                entries, total = [e for e in entries if e not in gone], total - len(gone)
                break
        return HistoryPage(entries=entries, total=total)

    def sizes(self) -> list[tuple[int, int, int]]:
        """(width, height, images) of every size in the index, the most common first."""
        with self._sqlite.using() as db:
            return [tuple(r) for r in db.execute(
                "SELECT width, height, COUNT(*) FROM images WHERE width IS NOT NULL "
                "GROUP BY width, height ORDER BY COUNT(*) DESC, width, height")]

    def count(self) -> int:
        with self._sqlite.using() as db:
            return db.execute("SELECT COUNT(*) FROM images").fetchone()[0]


_UPSERT = (f"INSERT OR REPLACE INTO images ({', '.join(_COLUMNS)}, fold) "
           f"VALUES ({', '.join('?' * (len(_COLUMNS) + 1))})")


def _row(e: HistoryEntry) -> tuple:
    """The values SQLite stores: a number from a foreign file that SQLite cannot hold (a seed above
    2**63-1, as ComfyUI writes) is stored unknown (NULL), and the image is still listed."""
    return (e.path, clamp_int64(e.mtime_ns), e.bytes, sqlite_int(e.width), sqlite_int(e.height), e.prompt, e.negative,
            sqlite_int(e.seed), sqlite_int(e.steps), sqlite_real(e.guidance), e.model,
            json.dumps([list(x) for x in e.loras]), sqlite_real(e.seconds), e.created, e.prompt.casefold())


def _entry(row) -> HistoryEntry:
    values = dict(zip(_COLUMNS, row))
    values["loras"] = tuple((str(n), float(w)) for n, w in json.loads(values["loras"]))
    return HistoryEntry(**values)


def _day_start(d: date) -> float:
    """The Unix time a local day starts; -inf/+inf for a day at the calendar's edge whose start the
    platform cannot give (0001-01-01: Python's local-time lookup looks at the day before it),
    which is before/after every file."""
    try:
        return datetime.combine(d, dtime.min).timestamp()
    except (OverflowError, ValueError, OSError):
        return -math.inf if d.year < 1970 else math.inf


def _day_after(d: date) -> float:
    """The Unix time the day after `d` starts (+inf after 9999-12-31, which has no next day)."""
    return math.inf if d == date.max else _day_start(d + timedelta(days=1))


def _where(q: HistoryQuery) -> tuple[str, list]:
    clauses, params = [], []
    text = (q.text or "").strip().casefold()
    if text:
        clauses.append("instr(fold, ?) > 0")        # instr, not LIKE: '%' and '_' in a search are text
        params.append(text)
    if q.since is not None:
        clauses.append("created >= ?")
        params.append(_day_start(q.since))
    if q.until is not None:
        clauses.append("created < ?")
        params.append(_day_after(q.until))
    size_sql, size_params = parse_size_filter(q.size)
    if size_sql:
        clauses.append(size_sql)
        params += size_params
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
