"""Keeping a derived SQLite index safe beside other programs: values a foreign file may carry that
SQLite cannot hold, transactions that always end, and a "locked" never taken for damage. No torch.

What went wrong without these (issue 36): a PNG whose `Seed:` was above 2**63-1 made the binding
raise OverflowError inside the start-up transaction, which was left open, so no later save was ever
committed; a second copy of the app then waited on that lock, read "database is locked" as a damaged
file, moved the live index aside and deleted its WAL.
"""
from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)

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


class SqliteFile:
    """One derived SQLite file and its one connection behind `_lock`, as History and the kept queue
    use it: opened on first use with its schema, a file SQLite calls damaged (confirmed by a fresh
    quick_check) moved aside with its WAL and started anew, a lock another program held past the busy
    wait raised as the owner's typed `busy` error (never a reason to touch the file). Every use is
    one short statement or transaction: `with file.using() as db:`."""

    def __init__(self, file: Path, schema: str, version: int, *, busy: Callable[[str], Exception],
                 what: str, on_damage: str, drop_old: str = ""):
        self.file = file
        self.schema = schema              # statements split on ';', each CREATE ... IF NOT EXISTS
        self.version = version            # PRAGMA user_version of the schema
        self.drop_old = drop_old          # run first when the file has another non-zero version
        self.busy = busy                  # the owner's typed error, given the file's path
        self.what, self.on_damage = what, on_damage     # logged: "<what> <file> cannot be read (...); <on_damage>"
        self._lock = threading.Lock()
        self.db: sqlite3.Connection | None = None

    @contextmanager
    def using(self) -> Iterator[sqlite3.Connection]:
        """The open file under `_lock`; "database is locked" after the busy wait is `busy`."""
        with self._lock:
            try:
                yield self._conn()
            except sqlite3.OperationalError as e:
                if is_busy(e):
                    raise self.busy(str(self.file)) from e
                raise

    def _conn(self) -> sqlite3.Connection:
        """The open file, created (or started anew after a damaged one) on first use. Call under _lock."""
        if self.db is None:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.db = self._open()
            except sqlite3.DatabaseError as e:
                # Only SQLite's own "malformed"/"not a database", confirmed by a fresh quick_check,
                # moves the file (and its WAL, which belongs to it) aside; a lock or a full disk raises.
                if not is_damage(e) or not confirmed_damage(self.file):
                    raise
                log.warning("%s %s cannot be read (%s); %s", self.what, self.file, e, self.on_damage)
                move_aside(self.file)
                self.db = self._open()
        return self.db

    def _open(self) -> sqlite3.Connection:
        db = connect(self.file)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != self.version:        # written only when it differs: a write waits on other copies
                with transaction(db):
                    if version != 0 and self.drop_old:
                        db.execute(self.drop_old)
                    for statement in self.schema.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version={self.version}")
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self._lock:
            if self.db is not None:
                self.db.close()
                self.db = None
