"""The SQLite ledger's file: is it one, can it be used, and what its faults mean to a user.

Checked before SQLite is asked wherever SQLite's own answer ("unable to open database file")
would say nothing of use, and `fault` is the one place sqlite3's errors become batchvoid's.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batchvoid.errors import LedgerError, os_cause

SCHEMA_VERSION = 5

_SQLITE_MAGIC = b"SQLite format 3\x00"


def has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise LedgerError(f"{path}: cannot use it as a ledger: {os_cause(exc)}") from exc


def identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def writable_problem(path: Path) -> str | None:
    """What would keep a run from using `path` as its ledger, if anything (for `plan`)."""
    return path_problem(path, write=True)


def path_problem(path: Path, *, write: bool) -> str | None:
    """What keeps `path` from being used as a ledger (for writing, or reading), if anything.

    Checked before SQLite is asked, because SQLite's own answer ("unable to open database
    file") says none of it. A missing directory is never created: it may be a volume that is
    not mounted, and a new ledger there would start the job over.
    """
    directory = path.absolute().parent
    if not directory.exists():
        return (
            f"its directory {directory} does not exist. If the ledger is meant to be there (a volume "
            f"not mounted?), mount it; a new ledger would start its jobs over. Otherwise create the "
            f"directory (mkdir -p {directory}) or pass --ledger with a file in an existing directory"
        )
    if not directory.is_dir():
        return f"{directory} is not a directory: pass --ledger with a file in a directory"
    if path.exists() and not path.is_file():
        return "is not a regular file: pass --ledger with the ledger file a run wrote, or a new file name"
    if not path.exists() and not write:
        return (
            "no such ledger: pass --ledger with the file a run wrote "
            "(a rehearsal, --simulate, writes rehearsal.sqlite, or NAME.rehearsal.sqlite beside "
            "$BATCHVOID_LEDGER)"
        )
    if path.exists() and not os.access(path, os.R_OK):
        return "this user may not read it: run as the user that owns it, or fix its permissions (ls -l)"
    if not write:
        return None
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        return (
            f"it is on a read-only file system ({directory}), and a run must write to it. Run on a "
            "writable copy or mount; `batchvoid status` and `batchvoid report` read it where it is"
        )
    if not os.access(directory, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return (
            f"this user may not write to it or to its directory {directory} (SQLite writes its -wal "
            "and -shm files next to it): run as the user that owns it, or fix the permissions (ls -l)"
        )
    return None


def inspect(path: Path) -> int:
    """The schema version of an existing ledger, read without writing; refuses any other file."""
    try:
        with path.open("rb") as f:
            magic = f.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise LedgerError(f"{path}: cannot read it: {os_cause(exc)}") from exc
    if magic != _SQLITE_MAGIC:
        raise LedgerError(
            f"{path}: not a batchvoid ledger (not an SQLite database); it was not changed. "
            "Pass --ledger with the ledger a run wrote, or a new file name"
        )
    try:
        db = open_readonly(path)
    except sqlite3.Error as exc:
        raise fault(path, exc, "cannot read it") from exc
    try:
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
            raise LedgerError(
                f"{path}: an SQLite database, but not a batchvoid ledger (it has no meta table); it "
                "was not changed. Pass --ledger with the ledger a run wrote, or a new file name"
            )
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.Error as exc:
        raise fault(path, exc, "cannot read it") from exc
    finally:
        db.close()
    version = int(row[0]) if row is not None and str(row[0]).isdigit() else None
    if version is None:
        raise LedgerError(f"{path}: a batchvoid ledger without a schema version; it was not changed")
    if version > SCHEMA_VERSION:
        raise LedgerError(
            f"{path}: written by a newer batchvoid (ledger schema {version}; this batchvoid reads up "
            f"to {SCHEMA_VERSION}); it was not changed. Upgrade batchvoid to run or inspect its jobs"
        )
    return version


def open_readonly(path: Path, *, any_thread: bool = False) -> sqlite3.Connection:
    """A read-only connection; on read-only media (no -shm can be made) an immutable one.

    `any_thread`: for a ledger a run writes, whose reads come from its worker threads too.
    """
    uri = path.resolve().as_uri()
    db = sqlite3.connect(
        f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=10, check_same_thread=not any_thread
    )
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        db.close()
        wal = path.with_name(path.name + "-wal")
        if not os.statvfs(path.parent).f_flag & os.ST_RDONLY or (wal.exists() and wal.stat().st_size):
            raise fault(path, exc, "cannot read it") from exc
    else:
        return db
    # Read-only media and no write-ahead log to replay: the file alone is the whole ledger.
    return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)


def fault(path: Path, exc: sqlite3.Error, doing: str) -> LedgerError:
    """A LedgerError that says what is wrong with the ledger file and what to do about it.

    The one place sqlite3's errors become batchvoid's. Never advises discarding a ledger:
    it is the record of which invoices were voided.
    """
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_FULL"):
        cause = (
            "the disk that holds it is full. Free space there, then run the same command again: "
            "what was recorded is kept, and items whose outcome was not recorded are resent with "
            "the same idempotency key"
        )
    elif name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        cause = (
            f"it is damaged ({exc}). Restore it from a backup, then run the same command again. "
            "Keep the damaged file: it records which invoices were voided"
        )
    elif name == "SQLITE_READONLY_DBMOVED":
        cause = "the file was moved or deleted while this run used it: put it back, then run again"
    elif name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")):
        cause = (
            "it cannot be written (the file or its directory is read-only for this user, or the "
            "file system is mounted read-only). Run where it is writable; `batchvoid status` and "
            "`batchvoid report` read it as it is"
        )
    elif name.startswith("SQLITE_IOERR"):
        cause = (
            f"the disk reported an I/O error ({exc}). Check that it has free space and is healthy "
            "(dmesg), then run the same command again"
        )
    elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        cause = (
            "another process has kept it locked for over 10 s (a long `sqlite3` session, a backup "
            "tool?): let it finish, then run the same command again"
        )
    elif name.startswith("SQLITE_CANTOPEN"):
        cause = path_problem(path, write=True) or f"SQLite cannot open it ({exc})"
    else:
        cause = str(exc)
    return LedgerError(f"{path}: {doing}: {cause}")


class Cursor:
    """A cursor whose rows, read later (a damaged page shows only then), fail as LedgerError too."""

    def __init__(self, cursor: sqlite3.Cursor, path: Path) -> None:
        self._cursor = cursor
        self._path = path
        self.description = cursor.description

    def fetchone(self) -> Any:
        try:
            return self._cursor.fetchone()
        except sqlite3.Error as exc:
            raise fault(self._path, exc, "cannot read it") from exc

    def fetchall(self) -> list[Any]:
        try:
            return self._cursor.fetchall()
        except sqlite3.Error as exc:
            raise fault(self._path, exc, "cannot read it") from exc

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._cursor
        except sqlite3.Error as exc:
            raise fault(self._path, exc, "cannot read it") from exc
