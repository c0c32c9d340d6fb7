"""The checkpoint ledger: one SQLite database (WAL) that records every job and every item.

The ledger is also the work queue. A job file is checked and copied into it in one
transaction (all rows or none), and each provider lane then pages through its own
unfinished items by line number, so neither the file nor the pending work is ever held in
memory, and a resumed run starts sending at once.

During a run, writes go through `LedgerWriter`, which batches them into group commits on a
worker thread. `begin()` (the item is in flight) waits for its commit before the request
is sent; outcomes are queued and committed with the next batch.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc

from batchvoid.errors import JobFileError, LedgerError, os_cause
from batchvoid.jobfile import RowError
from batchvoid.keys import idempotency_key
from batchvoid.models import UNDONE, Item, ItemState, WorkItem

SCHEMA_VERSION = 2
MAX_ERRORS_SHOWN = 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    job_file TEXT NOT NULL,
    job_sha256 TEXT NOT NULL,
    config_fingerprint TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    runs INTEGER NOT NULL DEFAULT 0,
    items INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    simulated INTEGER  -- 1: a rehearsal on the simulator; 0: real; NULL: recorded before version 2
);
-- Where each profile of a job sends: a real run never inherits another target's outcomes.
CREATE TABLE IF NOT EXISTS targets (
    job INTEGER NOT NULL REFERENCES jobs (id),
    profile TEXT NOT NULL,
    target TEXT NOT NULL,
    PRIMARY KEY (job, profile)
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    job INTEGER NOT NULL REFERENCES jobs (id),
    provider TEXT NOT NULL,
    invoice_id TEXT NOT NULL,
    line INTEGER NOT NULL,
    void_date TEXT,
    company_id TEXT,
    store TEXT,
    metadata TEXT,
    idempotency_key TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    http_status INTEGER,
    reference TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (job, provider, invoice_id)
);
CREATE INDEX IF NOT EXISTS items_todo ON items (job, provider, line)
    WHERE state IN ('pending', 'in_flight');
-- Counts by state (status, summaries, the start of a resumed run) read this, not the table.
CREATE INDEX IF NOT EXISTS items_state ON items (job, state, provider);
CREATE TABLE IF NOT EXISTS attempts (
    item INTEGER NOT NULL REFERENCES items (id),
    attempt INTEGER NOT NULL,
    at TEXT NOT NULL,
    outcome TEXT NOT NULL,
    http_status INTEGER,
    latency_ms INTEGER,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS duplicates (
    job INTEGER NOT NULL REFERENCES jobs (id),
    line INTEGER NOT NULL,
    provider TEXT NOT NULL,
    invoice_id TEXT NOT NULL,
    first_line INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS locks (
    job_id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    started_at TEXT NOT NULL
);
"""

_VERSION_ROW = f"INSERT OR REPLACE INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');"  # noqa: S608 - a constant

# Statements that bring a ledger of the version before up to each version.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE jobs ADD COLUMN simulated INTEGER",
        "CREATE TABLE targets (job INTEGER NOT NULL REFERENCES jobs (id), profile TEXT NOT NULL,"
        " target TEXT NOT NULL, PRIMARY KEY (job, profile))",
    ),
}

_TODO_PAGE = (
    "SELECT id, line, provider, invoice_id, void_date, company_id, store, metadata,"
    " idempotency_key, attempts, state FROM items INDEXED BY items_todo"
    " WHERE job = ? AND provider = ? AND state IN ('pending', 'in_flight') AND line > ?"
    " ORDER BY line LIMIT ?"
)


def _job_filter(job: Job, states: Collection[ItemState] | None) -> tuple[str, list[object]]:
    """A WHERE clause (on `items`) for the job's items, or those of it in `states`."""
    params: list[object] = [job.id]
    if states is None:
        return "items.job = ?", params
    params.extend(str(s) for s in sorted(states))
    return f"items.job = ? AND items.state IN ({', '.join('?' * len(states))})", params


def now() -> str:
    """A UTC timestamp as the ledger stores it."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise LedgerError(f"{path}: cannot use it as a ledger: {os_cause(exc)}") from exc


def _identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def writable_problem(path: Path) -> str | None:
    """What would keep a run from using `path` as its ledger, if anything (for `plan`)."""
    return _path_problem(path, write=True)


def _path_problem(path: Path, *, write: bool) -> str | None:
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


def _inspect(path: Path) -> int:
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
        db = _open_readonly(path)
    except sqlite3.Error as exc:
        raise _fault(path, exc, "cannot read it") from exc
    try:
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
            raise LedgerError(
                f"{path}: an SQLite database, but not a batchvoid ledger (it has no meta table); it "
                "was not changed. Pass --ledger with the ledger a run wrote, or a new file name"
            )
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.Error as exc:
        raise _fault(path, exc, "cannot read it") from exc
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


def _open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection; on read-only media (no -shm can be made) an immutable one."""
    uri = path.resolve().as_uri()
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=10)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        db.close()
        wal = path.with_name(path.name + "-wal")
        if not os.statvfs(path.parent).f_flag & os.ST_RDONLY or (wal.exists() and wal.stat().st_size):
            raise _fault(path, exc, "cannot read it") from exc
    else:
        return db
    # Read-only media and no write-ahead log to replay: the file alone is the whole ledger.
    return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)


def _fault(path: Path, exc: sqlite3.Error, doing: str) -> LedgerError:
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
        cause = _path_problem(path, write=True) or f"SQLite cannot open it ({exc})"
    else:
        cause = str(exc)
    return LedgerError(f"{path}: {doing}: {cause}")


@dataclass(frozen=True, slots=True)
class Job:
    """A job as the ledger knows it."""

    id: int
    job_id: str
    job_file: str
    job_sha256: str
    config_fingerprint: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    runs: int
    items: int
    duplicates: int
    simulated: int | None  # 1: recorded by a rehearsal (--simulate); 0: real; None: not known


_JOB_FIELDS = tuple(Job.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A row that repeats an earlier (provider, invoice_id) of the same file."""

    line: int
    provider: str
    invoice_id: str
    first_line: int


@dataclass(frozen=True, slots=True)
class Ingest:
    """What checking and recording a job file found."""

    items: int
    duplicates: int
    first_duplicates: tuple[Duplicate, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Holder:
    """The process recorded as running a job: for messages, and to tell a stale lock."""

    pid: int
    host: str
    started_at: str


@dataclass(slots=True)
class _Found:
    items: int = 0
    duplicate_count: int = 0
    duplicates: list[Duplicate] = field(default_factory=list)
    error_count: int = 0
    errors: list[str] = field(default_factory=list)


_CHUNK = 1000  # rows inserted per executemany while recording a job file
_INSERT = (
    "INSERT INTO items (job, provider, invoice_id, line, void_date, company_id, store,"
    " metadata, idempotency_key, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)


class Ledger:
    """Owns the checkpoint database file. Use as a context manager."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if problem := _path_problem(self.path, write=True):
            raise LedgerError(f"{self.path}: {problem}")
        # A file with content must be a ledger of a schema this batchvoid reads, checked
        # read-only: a ledger from a newer batchvoid, or any other file, is refused untouched.
        version = _inspect(self.path) if _has_content(self.path) else None
        self._db = self._connect()
        try:
            self._prepare_schema(version)
        except BaseException:
            self._db.close()
            raise
        # A second connection for reading pages of work while the writer thread commits;
        # every lane's feeder reads through it from a worker thread, one at a time.
        self._reader = self._connect()
        self._reading = threading.Lock()
        self._identity = _identity(self.path)  # to notice the file being deleted or replaced

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise _fault(self.path, exc, "cannot open it") from exc
        return db

    def _prepare_schema(self, version: int | None) -> None:
        """Create the schema in a new ledger, or bring an older one up to this version."""
        db = self._db
        if version == SCHEMA_VERSION:
            return
        try:
            if version is None:
                db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} {_VERSION_ROW} COMMIT;")
                return
            db.execute("BEGIN IMMEDIATE")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    db.execute(statement)
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise _fault(self.path, exc, "cannot set it up") from exc

    def close(self) -> None:
        self._reader.close()
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs ----------------------------------------------------------------------------

    def job(self, job_id: str) -> Job | None:
        """The job recorded under `job_id`, if any."""
        jobs = self._jobs("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return jobs[0] if jobs else None

    def jobs(self) -> list[Job]:
        """Every job in this ledger, oldest first."""
        return self._jobs("SELECT * FROM jobs ORDER BY id", ())

    def _jobs(self, query: str, params: Sequence[Any]) -> list[Job]:
        cursor = self._sql(self._db, query, params)
        names = [d[0] for d in cursor.description]
        # By name, so that a ledger of an older schema (read-only) reads too: missing is None.
        jobs = []
        for row in cursor:
            fields: dict[str, Any] = dict.fromkeys(_JOB_FIELDS)
            fields.update(zip(names, row, strict=True))
            jobs.append(Job(**{name: fields[name] for name in _JOB_FIELDS}))
        return jobs

    def targets(self, job: Job) -> dict[str, str]:
        """Where each provider profile of the job sent (or is to send), as recorded."""
        if not self._has_table("targets"):  # an older ledger read as it is
            return {}
        rows = self._sql(self._db, "SELECT profile, target FROM targets WHERE job = ?", (job.id,))
        return dict(rows.fetchall())

    def record_targets(self, job: Job, targets: Mapping[str, str], *, simulated: bool) -> None:
        """Record (or replace) where the job's profiles send, and whether it is a rehearsal."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("UPDATE jobs SET simulated = ? WHERE id = ?", (int(simulated), job.id))
            db.executemany(
                "INSERT OR REPLACE INTO targets VALUES (?, ?, ?)",
                [(job.id, profile, target) for profile, target in targets.items()],
            )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise _fault(self.path, exc, "cannot record the job's targets") from exc

    def touched(self, job: Job) -> set[str]:
        """The providers of the job with an item that has an outcome or may have been voided.

        A pending item has none, even after attempts: a 401 or a 5xx voided nothing.
        """
        rows = self._sql(
            self._db, "SELECT DISTINCT provider FROM items WHERE job = ? AND state != 'pending'", (job.id,)
        )
        return {provider for (provider,) in rows}

    def void_dates(self, job: Job) -> dict[str, dict[str, int]]:
        """The void dates the job's items carry, with how many items each, per provider."""
        rows = self._sql(
            self._db,
            "SELECT provider, void_date, count(*) FROM items WHERE job = ? AND void_date IS NOT NULL"
            " GROUP BY provider, void_date ORDER BY provider, void_date",
            (job.id,),
        )
        dates: dict[str, dict[str, int]] = {}
        for provider, date, n in rows:
            dates.setdefault(provider, {})[date] = n
        return dates

    def fill_void_dates(self, job: Job, dates: Mapping[str, str]) -> None:
        """Give each provider's unsent items without a void date the one in `dates`, once."""
        for provider, date in dates.items():
            self._sql(
                self._db,
                "UPDATE items SET void_date = ? WHERE job = ? AND provider = ? AND void_date IS NULL"
                " AND state IN ('pending', 'in_flight')",
                (date, job.id, provider),
            )

    def _has_table(self, name: str) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return self._sql(self._db, query, (name,)).fetchone() is not None

    def ingest(
        self,
        *,
        job_id: str,
        job_file: str,
        job_sha256: str,
        config_fingerprint: str,
        rows: Iterable[Item | RowError],
        simulated: bool = False,
        targets: Mapping[str, str] | None = None,
        accept: Callable[[set[str]], None] | None = None,
    ) -> Ingest:
        """Record a new job and all its items in one transaction, or nothing if any row is bad.

        `simulated` says whether the job is a rehearsal; `targets` where each profile sends.
        `accept` sees the job's providers before the commit: what it raises refuses the job,
        which then leaves nothing behind (a missing credential must not record the job).
        """
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            job = db.execute(
                "INSERT INTO jobs (job_id, job_file, job_sha256, config_fingerprint, created_at, simulated)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, job_file, job_sha256, config_fingerprint, now(), int(simulated)),
            ).lastrowid
            assert job is not None
            db.executemany(
                "INSERT INTO targets VALUES (?, ?, ?)",
                [(job, profile, target) for profile, target in (targets or {}).items()],
            )
            found = _Found()
            self._copy_rows(job, job_id, job_file, rows, found)
            if found.error_count or not found.items:
                db.execute("ROLLBACK")
            else:
                if accept is not None:
                    used = db.execute("SELECT DISTINCT provider FROM items WHERE job = ?", (job,))
                    accept({provider for (provider,) in used})
                db.execute(
                    "UPDATE jobs SET items = ?, duplicates = ? WHERE id = ?",
                    (found.items, found.duplicate_count, job),
                )
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise _fault(self.path, exc, "cannot record the job") from exc
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if found.error_count:
            shown = "\n  ".join(found.errors)
            hidden = found.error_count - len(found.errors)
            more = f"\n  ... and {hidden} more" if hidden else ""
            plural = "s" * (found.error_count != 1)
            raise JobFileError(
                f"{job_file}: {found.error_count} bad row{plural}; nothing was sent. "
                f"Fix them and run again:\n  {shown}{more}",
                errors=tuple(found.errors),
                error_count=found.error_count,
            )
        if not found.items:
            raise JobFileError(f"{job_file}: no items: the file has a header but no rows")
        return Ingest(found.items, found.duplicate_count, tuple(found.duplicates))

    def _copy_rows(
        self, job: int, job_id: str, job_file: str, rows: Iterable[Item | RowError], found: _Found
    ) -> None:
        chunk: list[Item] = []
        for row in rows:
            if isinstance(row, RowError):
                found.error_count += 1
                if len(found.errors) < MAX_ERRORS_SHOWN:
                    found.errors.append(f"{job_file} line {row.line}: {row.message}")
            elif not found.error_count:  # once the file is refused, read on only to count bad rows
                chunk.append(row)
                if len(chunk) == _CHUNK:
                    self._insert(job, job_id, chunk, found)
                    chunk = []
        if chunk and not found.error_count:
            self._insert(job, job_id, chunk, found)

    def _insert(self, job: int, job_id: str, chunk: list[Item], found: _Found) -> None:
        db = self._db
        created = now()
        before = db.total_changes
        db.executemany(
            _INSERT,
            (
                (
                    job,
                    row.provider,
                    row.invoice_id,
                    row.line,
                    row.void_date,
                    row.company_id,
                    row.store,
                    json.dumps(row.metadata, separators=(",", ":")) if row.metadata else None,
                    idempotency_key(job_id, row.provider, row.invoice_id),
                    created,
                    created,
                )
                for row in chunk
            ),
        )
        inserted = db.total_changes - before
        found.items += inserted
        if inserted == len(chunk):
            return
        for row in chunk:  # some rows repeat an earlier one: the table holds the first's line
            (first,) = db.execute(
                "SELECT line FROM items WHERE job = ? AND provider = ? AND invoice_id = ?",
                (job, row.provider, row.invoice_id),
            ).fetchone()
            if first == row.line:
                continue
            found.duplicate_count += 1
            db.execute(
                "INSERT INTO duplicates VALUES (?, ?, ?, ?, ?)",
                (job, row.line, row.provider, row.invoice_id, first),
            )
            if len(found.duplicates) < MAX_ERRORS_SHOWN:
                found.duplicates.append(Duplicate(row.line, row.provider, row.invoice_id, first))

    def start_run(self, job: Job) -> None:
        """Note that a run of `job` begins."""
        self._sql(
            self._db,
            "UPDATE jobs SET started_at = ?, finished_at = NULL, runs = runs + 1 WHERE id = ?",
            (now(), job.id),
        )

    def finish_run(self, job: Job) -> None:
        """Note that a run of `job` ended (whatever its result)."""
        self._sql(self._db, "UPDATE jobs SET finished_at = ? WHERE id = ?", (now(), job.id))

    def duplicates(self, job: Job) -> list[Duplicate]:
        rows = self._sql(
            self._db,
            "SELECT line, provider, invoice_id, first_line FROM duplicates WHERE job = ? ORDER BY line",
            (job.id,),
        )
        return [Duplicate(*row) for row in rows]

    # -- work ----------------------------------------------------------------------------

    def todo_page(self, job: Job, provider: str, after_line: int, limit: int) -> list[WorkItem]:
        """The next unfinished items of one provider after `after_line`, in file order."""
        with self._reading:
            rows = self._sql(self._reader, _TODO_PAGE, (job.id, provider, after_line, limit)).fetchall()
        return [
            WorkItem(
                id=row[0],
                item=Item(
                    row[1],
                    row[2],
                    row[3],
                    row[4],
                    row[5],
                    row[6],
                    json.loads(row[7]) if row[7] else {},
                ),
                idempotency_key=row[8],
                attempts=row[9],
                state=ItemState(row[10]),
            )
            for row in rows
        ]

    def counts(self, job: Job) -> dict[tuple[str, ItemState], int]:
        """How many items each provider has in each state."""
        rows = self._sql(
            self._db,
            "SELECT provider, state, count(*) FROM items WHERE job = ? GROUP BY provider, state",
            (job.id,),
        )
        return {(provider, self._state(state)): n for provider, state, n in rows}

    def _state(self, value: str) -> ItemState:
        try:
            return ItemState(value)
        except ValueError:
            known = ", ".join(state.value for state in ItemState)
            raise LedgerError(
                f"{self.path}: an item has state {value!r}, which this batchvoid does not know "
                f"(states: {known}); was the ledger edited by hand?"
            ) from None

    def items(self, job: Job, states: Collection[ItemState] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of the job (or those in `states`) as a dict, in file order."""
        where, params = _job_filter(job, states)
        query = f"SELECT * FROM items WHERE {where} ORDER BY line"  # noqa: S608 - placeholders only
        cursor = self._sql(self._db, query, params)
        names = [d[0] for d in cursor.description]
        for row in cursor:
            yield dict(zip(names, row, strict=True))

    def apply(self, ops: Sequence[Op]) -> None:
        """Write a batch of run updates in one transaction (called on the writer thread).

        Statements of one kind run together (executemany costs a third less than one execute
        each). Their fixed order keeps every item's own sequence: an item's begin always comes
        before its attempt and its finish, release or abandon, and those last three never meet.
        """
        db = self._db
        self.check_still_there()
        try:
            db.execute("BEGIN")
            for sql, group in groupby(sorted(ops, key=_rank), key=itemgetter(0)):
                db.executemany(sql, [params for _, params in group])
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise _fault(self.path, exc, "cannot record progress") from exc

    def check_still_there(self) -> None:
        """Raise if the ledger file was deleted or replaced since it was opened.

        SQLite goes on writing to a deleted file's inode without a word, so a run whose ledger
        was removed would record its outcomes where no later run can find them.
        """
        try:
            same = _identity(self.path) == self._identity
        except FileNotFoundError:
            same = False
        except OSError as exc:
            raise LedgerError(f"{self.path}: cannot check the ledger: {os_cause(exc)}") from exc
        if not same:
            raise LedgerError(
                f"{self.path}: the ledger file was deleted or replaced while this run was writing to "
                "it, so the run stopped. Put the ledger back (restore it from a backup), then run the "
                "same command again: items whose outcome it lacks are resent with the same "
                "idempotency key, and a void that happened counts as done"
            )

    # -- operator queries (plan, status, report) and redrive ------------------------------

    @classmethod
    def open_readonly(cls, path: str | Path) -> Ledger:
        """An existing ledger, opened read-only: inspecting a job never creates or changes one.

        Works on read-only media too, and on a ledger of an older schema (read as it is).
        """
        self = cls.__new__(cls)
        self.path = Path(path)
        self._reading = threading.Lock()
        if problem := _path_problem(self.path, write=False):
            raise LedgerError(f"{self.path}: {problem}")
        _inspect(self.path)
        try:
            self._db = self._reader = _open_readonly(self.path)
        except sqlite3.Error as exc:
            raise _fault(self.path, exc, "cannot read it") from exc
        self._identity = _identity(self.path)
        return self

    def duplicate_counts(self, job: Job) -> dict[str, int]:
        """How many duplicate rows the job file had, per provider."""
        rows = self._sql(
            self._db, "SELECT provider, count(*) FROM duplicates WHERE job = ? GROUP BY provider", (job.id,)
        )
        return dict(rows.fetchall())

    def attempt_count(self, job: Job) -> int:
        """Requests sent for the job's items, over all its runs."""
        (total,) = self._sql(
            self._db, "SELECT coalesce(sum(attempts), 0) FROM items WHERE job = ?", (job.id,)
        ).fetchone()
        return int(total)

    def failure_reasons(self, job: Job, limit: int) -> list[tuple[str, str, int]]:
        """The most frequent (provider, reason, count) among failed items."""
        where, params = _job_filter(job, UNDONE)
        rows = self._sql(
            self._db,
            "SELECT provider, coalesce(reason, ''), count(*) AS n FROM items"  # noqa: S608 - placeholders only
            f" WHERE {where} GROUP BY provider, reason ORDER BY n DESC, provider LIMIT ?",
            (*params, limit),
        )
        return [(provider, reason, n) for provider, reason, n in rows]

    def metadata_keys(self, job: Job, states: Collection[ItemState] | None = None) -> list[str]:
        """Every metadata key the job's items (or those in `states`) carry, in first-seen order."""
        where, params = _job_filter(job, states)
        query = (
            "SELECT meta.key FROM items, json_each(items.metadata) AS meta"  # noqa: S608 - placeholders only
            f" WHERE {where} AND items.metadata IS NOT NULL"
            " GROUP BY meta.key ORDER BY min(items.line), min(meta.id)"
        )
        return [key for (key,) in self._sql(self._db, query, params)]

    def redrive(self, job: Job) -> dict[str, int]:
        """Put the job's failed items back to pending, keeping keys and attempts.

        Returns how many items went back, per provider. The attempt history stays as it was.
        """
        db = self._db
        where, params = _job_filter(job, UNDONE)
        try:
            db.execute("BEGIN IMMEDIATE")
            counts = dict(
                db.execute(
                    f"SELECT provider, count(*) FROM items WHERE {where} GROUP BY provider",  # noqa: S608 - placeholders only
                    params,
                ).fetchall()
            )
            db.execute(
                "UPDATE items SET state = 'pending', reason = NULL, http_status = NULL, updated_at = ?"  # noqa: S608 - placeholders only
                f" WHERE {where}",
                (now(), *params),
            )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise _fault(self.path, exc, "cannot put the failed items back") from exc
        return counts

    def lock_holder(self, job_id: str) -> Holder | None:
        """The process recorded as running `job_id`, if any (it may since have died)."""
        try:
            row = self._db.execute(
                "SELECT pid, host, started_at FROM locks WHERE job_id = ?", (job_id,)
            ).fetchone()
        except sqlite3.OperationalError:  # a ledger from before run locks: nobody recorded
            return None
        return None if row is None else Holder(*row)

    def record_lock(self, job_id: str, holder: Holder) -> None:
        """Record `holder` as the process running `job_id`, replacing a stale record."""
        self._sql(
            self._db,
            "INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?)",
            (job_id, holder.pid, holder.host, holder.started_at),
        )

    def clear_lock(self, job_id: str, holder: Holder) -> None:
        """Remove `holder`'s record for `job_id` (and nobody else's)."""
        self._sql(
            self._db,
            "DELETE FROM locks WHERE job_id = ? AND pid = ? AND host = ? AND started_at = ?",
            (job_id, holder.pid, holder.host, holder.started_at),
        )

    def _sql(self, db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> _Cursor:
        try:
            return _Cursor(db.execute(sql, params), self.path)
        except sqlite3.Error as exc:
            raise _fault(self.path, exc, "cannot use it") from exc


class _Cursor:
    """A cursor whose rows, read later (a damaged page shows only then), fail as LedgerError too."""

    def __init__(self, cursor: sqlite3.Cursor, path: Path) -> None:
        self._cursor = cursor
        self._path = path
        self.description = cursor.description

    def fetchone(self) -> Any:
        try:
            return self._cursor.fetchone()
        except sqlite3.Error as exc:
            raise _fault(self._path, exc, "cannot read it") from exc

    def fetchall(self) -> list[Any]:
        try:
            return self._cursor.fetchall()
        except sqlite3.Error as exc:
            raise _fault(self._path, exc, "cannot read it") from exc

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._cursor
        except sqlite3.Error as exc:
            raise _fault(self._path, exc, "cannot read it") from exc


Op = tuple[str, tuple[Any, ...]]

_BEGIN = "UPDATE items SET state = 'in_flight', attempts = attempts + 1, updated_at = ? WHERE id = ?"
_ATTEMPT = "INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?)"
_FINISH = (
    "UPDATE items SET state = ?, reason = ?, http_status = ?, reference = coalesce(?, reference),"
    " updated_at = ? WHERE id = ?"
)
_RELEASE = "UPDATE items SET state = 'pending', updated_at = ? WHERE id = ? AND state = 'in_flight'"
_ABANDON = (
    "UPDATE items SET state = 'pending', attempts = attempts - 1, updated_at = ?"
    " WHERE id = ? AND state = 'in_flight'"
)
_ORDER = {sql: rank for rank, sql in enumerate((_BEGIN, _ATTEMPT, _FINISH, _RELEASE, _ABANDON))}


def _rank(op: Op) -> int:
    return _ORDER.get(op[0], len(_ORDER))  # anything else after, in its own order (sorted is stable)


class LedgerWriter:
    """Batches a run's ledger writes into group commits on a worker thread.

    Use as an async context manager; leaving it commits everything queued, even when the
    run is being cancelled.
    """

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._ops: list[Op] = []
        self._wake = anyio.Event()
        self._committed = anyio.Event()  # set when the batch being queued now is committed
        self._closing = False
        self._error: BaseException | None = None
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        tg = await self._stack.enter_async_context(anyio.create_task_group())
        tg.start_soon(self._flusher)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        self._wake.set()
        try:
            await self._stack.aclose()
        finally:
            with anyio.CancelScope(shield=True):
                await self._commit()  # whatever the flusher had no time for, even when cancelled
        if self._error is not None and exc is None:
            raise self._error

    async def begin(self, work: WorkItem) -> None:
        """Mark the item in flight, and return once that is committed: then send."""
        self._queue((_BEGIN, (now(), work.id)))
        committed = self._committed
        await committed.wait()
        if self._error is not None:
            raise self._error

    def attempt(
        self,
        work: WorkItem,
        number: int,
        outcome: str,
        http_status: int | None,
        latency_ms: int | None,
        detail: str,
    ) -> None:
        """Record one request and what came of it, in the attempt history."""
        self._queue((_ATTEMPT, (work.id, number, now(), outcome, http_status, latency_ms, detail or None)))

    def finish(
        self,
        work: WorkItem,
        state: ItemState,
        reason: str,
        http_status: int | None,
        reference: str | None,
    ) -> None:
        """Record the item's final state."""
        self._queue((_FINISH, (str(state), reason or None, http_status, reference, now(), work.id)))

    def release(self, work: WorkItem) -> None:
        """Put an in-flight item back to pending: it was not (or may not have been) sent."""
        self._queue((_RELEASE, (now(), work.id)))

    def abandon(self, work: WorkItem) -> None:
        """Undo begin(): the request was never sent, so the item is pending and the attempt not counted."""
        self._queue((_ABANDON, (now(), work.id)))

    def _queue(self, op: Op) -> None:
        self._ops.append(op)
        self._wake.set()

    async def _flusher(self) -> None:
        while not (self._closing and not self._ops):
            await self._wake.wait()
            self._wake = anyio.Event()
            await self._commit()

    async def _commit(self) -> None:
        ops, self._ops = self._ops, []
        committed, self._committed = self._committed, anyio.Event()
        if ops and self._error is None:
            try:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._ledger.apply, ops)
            except LedgerError as exc:
                self._error = exc
        committed.set()
