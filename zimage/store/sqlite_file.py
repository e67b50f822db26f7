"""Keeping a derived SQLite index safe beside other programs: values a foreign file may carry that
SQLite cannot hold, transactions that always end, and a "locked" never taken for damage. No torch.

What went wrong without these (issue 36): a PNG whose `Seed:` was above 2**63-1 made the binding
raise OverflowError inside the start-up transaction, which was left open, so no later save was ever
committed; a second copy of the app then waited on that lock, read "database is locked" as a damaged
file, moved the live index aside and deleted its WAL.
"""
from __future__ import annotations

import math
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
# How long a statement waits for another connection's write lock before "database is locked". A
# start-up reconcile of 10,000 new PNGs is one transaction of well under a second of writes (the
# files are read before it), so 10 s is a long margin; tests shorten it to make "locked" happen.
BUSY_TIMEOUT_S = 10.0
_BUSY_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_DAMAGE_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
# Errors of one row's values (a type or value SQLite cannot bind, a constraint): that row is left
# out. Anything else (busy, disk full, I/O) is the file's or the lock's and ends the transaction.
ROW_ERRORS = (OverflowError, ValueError, TypeError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
              sqlite3.IntegrityError, sqlite3.DataError)


class DamagedIndex(sqlite3.DatabaseError):
    """PRAGMA quick_check confirmed that the file is not a sound SQLite database."""


def sqlite_int(value: int | None) -> int | None:
    """An integer SQLite can store (64-bit signed), else None: a seed or step count read from a
    foreign file (ComfyUI writes seeds up to 2**64-1) is left unknown rather than failing its row."""
    return value if value is None or INT64_MIN <= value <= INT64_MAX else None


def sqlite_real(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def clamp_int64(value: int) -> int:
    """A file's mtime in ns past the year 2262 (a bad clock, an archive) clamped into SQLite's range;
    compared clamped too, so the file keeps one identity."""
    return min(max(value, INT64_MIN), INT64_MAX)


def _code(e: BaseException) -> int | None:
    code = getattr(e, "sqlite_errorcode", None)          # extended codes keep the primary in the low byte
    return code & 0xFF if isinstance(e, sqlite3.Error) and isinstance(code, int) else None


def is_busy(e: BaseException) -> bool:
    """Another connection holds the lock: the file is in use, not damaged."""
    return _code(e) in _BUSY_CODES


def is_damage(e: BaseException) -> bool:
    """SQLite's own word that the file is damaged or no database ("malformed", "file is not a
    database"), or our quick_check's; never a lock, a full disk or a permission."""
    return isinstance(e, DamagedIndex) or _code(e) in _DAMAGE_CODES


def connect(file: Path) -> sqlite3.Connection:
    """Autocommit (transactions are explicit, see `transaction`), WAL, and a busy wait."""
    db = sqlite3.connect(file, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    try:
        db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")   # WAL + NORMAL: consistent after a kill; a lost row is re-read
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise DamagedIndex("quick_check failed")
    except BaseException:
        db.close()
        raise
    return db


def confirmed_damage(file: Path) -> bool:
    """A second, fresh look before anything is moved: quick_check on a new connection."""
    try:
        db = sqlite3.connect(file, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as e:
        return is_damage(e)
    try:
        return db.execute("PRAGMA quick_check").fetchone()[0] != "ok"
    except sqlite3.Error as e:
        return is_damage(e)
    finally:
        db.close()


def move_aside(file: Path, suffix: str = ".unreadable") -> None:
    """Move a damaged database and its WAL and shared-memory files aside together (never deleted:
    a WAL left behind would be replayed into the new file of the same name)."""
    for extra in ("", "-wal", "-shm"):
        src = Path(f"{file}{extra}")
        if src.exists():
            os.replace(src, Path(f"{file}{suffix}{extra}"))


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE (the write lock taken at once, under the busy wait) ... COMMIT, or ROLLBACK
    on any error: the connection is never left inside a transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    try:
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
