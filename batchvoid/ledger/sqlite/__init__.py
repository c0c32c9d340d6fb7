"""The SQLite ledger: one database file (WAL) that records every job and every item. The default.

It is the work queue too. A job file is checked and copied into it in one transaction (all
rows or none); each provider lane then claims its own unfinished items a batch at a time, by
line number, so neither the file nor the pending work is ever held in memory, and a resumed
run starts sending at once. One run per job at a time, on one host: `guard` is a flock.

Two threads write through the one connection: the writer's (`apply`) and the lanes' claims,
through `_lock`. What `plan`, `status` and `report` read (and the run's own checks) goes
through a connection of its own, `_reader`: WAL lets it read the last commit while the writer
writes, so a read never waits for `_lock` nor sees a batch half written (or rolled back).
"""

from __future__ import annotations

import contextlib
import json
import queue
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TextIO

import orjson

from batchvoid.errors import LedgerError, os_cause
from batchvoid.keys import idempotency_key
from batchvoid.ledger.api import (
    JOB_FIELDS,
    MAX_ERRORS_SHOWN,
    Duplicate,
    Holder,
    Ingest,
    Job,
    NewJob,
    NewRun,
    Rows,
    Run,
    RunEnd,
    WorkerRow,
    now,
)
from batchvoid.ledger.ops import Attempt, Finish, Op, Release
from batchvoid.ledger.sqlite.dbfile import (
    SCHEMA_VERSION,
    Cursor,
    fault,
    has_content,
    identity,
    inspect,
    open_readonly,
    path_problem,
)
from batchvoid.ledger.sqlite.lock import RunLock
from batchvoid.models import UNACTED_REDIRECTS, UNDONE, Item, ItemState, RowError, WorkItem

if TYPE_CHECKING:
    from batchvoid.config import Profile
    from batchvoid.pace import Pace

__all__ = ["SCHEMA_VERSION", "SqliteLedger"]

_SCHEMA = files(__package__).joinpath("schema.sql").read_text(encoding="utf-8")


def _statement(start: str, end: str) -> str:
    """The statement of schema.sql that begins with `start`, through `end`."""
    at = _SCHEMA.index(start)
    return _SCHEMA[at : _SCHEMA.index(end, at) + len(end)]


_COUNTS_TABLE = _statement("CREATE TABLE IF NOT EXISTS item_counts", ") WITHOUT ROWID;")
_COUNTS_TRIGGER = _statement("CREATE TRIGGER IF NOT EXISTS items_counted", "END;")
_VERSION_ROW = f"INSERT OR REPLACE INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');"  # noqa: S608 - a constant

# Statements that bring a ledger of the version before up to each version.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE jobs ADD COLUMN simulated INTEGER",
        "CREATE TABLE targets (job INTEGER NOT NULL REFERENCES jobs (id), profile TEXT NOT NULL,"
        " target TEXT NOT NULL, PRIMARY KEY (job, profile))",
    ),
    3: (
        "ALTER TABLE items ADD COLUMN run TEXT",
        "ALTER TABLE attempts ADD COLUMN run TEXT",
        *(s for s in _SCHEMA.split(";") if "EXISTS runs" in s),
    ),
}
assert len(_MIGRATIONS[3]) == 4, "schema.sql lost the runs table or its index"
_MIGRATIONS[4] = (
    "DROP INDEX IF EXISTS items_state",
    _COUNTS_TABLE,
    _COUNTS_TRIGGER,
    "INSERT OR REPLACE INTO item_counts"
    " SELECT job, provider, state, count(*) FROM items GROUP BY job, provider, state",
)
# Version 5 lets an item's key and times be NULL (see schema.sql). SQLite cannot drop a NOT
# NULL in place, so the table is made anew and its rows copied, keys and times included; its
# index and trigger go with the old table and are made again. (Foreign keys off: `_prepare_schema`.)
_ITEMS_TABLE = _statement("CREATE TABLE IF NOT EXISTS items", ");")
_ITEM_COLUMNS = (
    "id, job, provider, invoice_id, line, void_date, company_id, store, metadata, idempotency_key,"
    " state, reason, attempts, http_status, reference, created_at, updated_at, run"
)
_MIGRATIONS[5] = (
    _ITEMS_TABLE.replace("IF NOT EXISTS items", "items_v5", 1),
    f"INSERT INTO items_v5 ({_ITEM_COLUMNS}) SELECT {_ITEM_COLUMNS} FROM items",  # noqa: S608 - constants
    "DROP TABLE items",
    "ALTER TABLE items_v5 RENAME TO items",
    _statement("CREATE INDEX IF NOT EXISTS items_todo", ";"),
    _COUNTS_TRIGGER,
)

# Batches cross into Python as one JSON value, not row by row: the sqlite3 module lets go of the
# GIL and takes it back for every row, which costs more than the row itself while the event loop
# is busy (the claim took 29 us per item in a run, 10 us alone).
_CLAIMABLE = (
    "SELECT json_group_array(json_array(id, line, invoice_id, void_date, company_id, store, metadata,"
    " idempotency_key, attempts, state)) FROM (SELECT * FROM items INDEXED BY items_todo"
    " WHERE job = ? AND provider = ? AND state IN ('pending', 'in_flight') AND line > ?"
    " ORDER BY line LIMIT ?)"
)
_CLAIM = (  # by the claim read's index: the planner would take items_state and scan the provider
    "UPDATE items INDEXED BY items_todo SET state = 'in_flight', updated_at = ?"
    " WHERE job = ? AND provider = ? AND state IN ('pending', 'in_flight') AND line > ? AND line <= ?"
    " AND state = 'pending'"
)


def _rows(*columns: str) -> str:
    """A subquery giving the JSON array parameter ?1 (one array per row) as rows of `columns`."""
    picked = ", ".join(f"json_extract(value, '$[{n}]') AS {name}" for n, name in enumerate(columns))
    return f"(SELECT {picked} FROM json_each(?1))"  # noqa: S608 - column names of ours, no values


_ATTEMPT = (
    "INSERT INTO attempts (item, attempt, at, outcome, http_status, latency_ms, detail, run)"  # noqa: S608 - constants
    " SELECT *, ?2 FROM " + _rows("item", "attempt", "at", "outcome", "http_status", "latency_ms", "detail")
)
_FINISH = (
    "UPDATE items SET state = f.state, reason = f.reason, http_status = f.http_status,"  # noqa: S608 - constants
    " reference = coalesce(f.reference, items.reference), attempts = items.attempts + f.sent,"
    " updated_at = ?2, run = ?3 FROM "
    + _rows("id", "state", "reason", "http_status", "reference", "sent")
    + " AS f WHERE items.id = f.id"
)
_RELEASE = (
    "UPDATE items SET state = f.state, attempts = items.attempts + f.sent, updated_at = ?2, run = ?3 FROM "  # noqa: S608 - constants
    + _rows("id", "state", "sent")
    + " AS f WHERE items.id = f.id AND items.state = 'in_flight'"
)
_PENDING, _IN_FLIGHT = str(ItemState.PENDING), str(ItemState.IN_FLIGHT)
_TOUCHED = (
    "SELECT provider, state, count(*) FROM items WHERE job = ? AND state != 'pending'"  # noqa: S608 - placeholders only
    " AND NOT (state = 'failed' AND coalesce(http_status, 0) IN"
    f" ({', '.join('?' * len(UNACTED_REDIRECTS))})) GROUP BY provider, state"
)


def _json(rows: list[tuple[Any, ...]]) -> str:
    """Rows as one JSON array for a set-based statement; text that is not valid Unicode replaced."""
    try:
        return orjson.dumps(rows).decode()
    except orjson.JSONEncodeError:  # a lone surrogate in a provider's words
        return orjson.dumps(
            [
                [v.encode("utf-8", "replace").decode() if isinstance(v, str) else v for v in row]
                for row in rows
            ]
        ).decode()


def _job_filter(
    job: Job, states: Collection[ItemState] | None, run: str | None = None
) -> tuple[str, list[object]]:
    """A WHERE clause (on `items`) for the job's items, those in `states`, those `run` last wrote."""
    where, params = "items.job = ?", list[object]([job.id])
    if states is not None:
        params.extend(str(s) for s in sorted(states))
        where += f" AND items.state IN ({', '.join('?' * len(states))})"
    if run is not None:
        params.append(run)
        where += " AND items.run = ?"
    return where, params


@dataclass(slots=True)
class _Found:
    items: int = 0
    duplicate_count: int = 0
    duplicates: list[Duplicate] = field(default_factory=list)
    error_count: int = 0
    errors: list[RowError] = field(default_factory=list)
    void_dates: Counter[tuple[str, str | None]] = field(default_factory=Counter)  # of the items recorded


@dataclass(frozen=True, slots=True)
class _Chunk:
    """Rows of a job file ready to insert: as Items, and as the JSON array its INSERT reads."""

    items: list[Item]
    rows: str
    void_dates: Counter[tuple[str, str | None]]  # its rows by (provider, void date)
    insert: str  # _INSERT, or _INSERT_PLAIN for rows without a company, store or metadata


def _read_chunks(
    new: NewJob, found: _Found, chunks: queue.Queue[_Chunk | BaseException | None], stop: threading.Event
) -> None:
    """The reading thread of an ingest: the job's rows as chunks, then None (or the error).

    Bad rows are counted into `found`; after the first, no chunk is made (the file is refused),
    but reading goes on to count them all.
    """
    try:
        items: list[Item] = []
        for row in new.rows:
            if stop.is_set():
                return  # the inserting thread gave up; it raises its own error
            if isinstance(row, RowError):
                found.error_count += 1
                if len(found.errors) < MAX_ERRORS_SHOWN:
                    found.errors.append(row)
            elif not found.error_count:
                items.append(row)
                if len(items) == _CHUNK:
                    chunks.put(_chunk(items))
                    items = []
        if items and not found.error_count:
            chunks.put(_chunk(items))
        chunks.put(None)
    except BaseException as exc:
        chunks.put(exc)


def _chunk(items: list[Item]) -> _Chunk:
    """A chunk of rows as their INSERT reads them: each Item as an array, in its field order.

    No key or time goes with them (see schema.sql): what the reading thread does per row is
    what the job file gave, and C-level passes over the chunk.
    """
    if any(chain.from_iterable(map(_OPTIONAL, items))):
        insert = _INSERT
        rows: list[tuple[Any, ...]] = [
            (*row[:6], json.dumps(row.metadata, separators=(",", ":")) if row.metadata else None)
            for row in items
        ]
    else:
        insert, rows = _INSERT_PLAIN, list(map(_PLAIN, items))  # the usual job file
    return _Chunk(items, orjson.dumps(rows).decode(), Counter(map(_PROVIDER_AND_DATE, items)), insert)


MIN_SQLITE = (3, 33, 0)  # UPDATE ... FROM; JSON1 is built in everywhere from then on
_CHUNK = 5000  # rows inserted per statement while recording a job file
_CHUNKS_AHEAD = 4  # chunks the reading thread may have ready before the inserting one takes them
_INGEST_CACHE_KIB = 16384  # SQLite's page cache while recording a job (its default is 2 MiB)
_AUTOCHECKPOINT_PAGES = 1000  # SQLite's default, off while recording a job
_COLUMNS = Item._fields  # what an INSERT of a chunk's rows takes, in the order an Item holds them
_OPTIONAL = itemgetter(4, 5, 6)  # an Item's company_id, store and metadata
_PLAIN = itemgetter(0, 1, 2, 3)  # and the rest: line, provider, invoice_id, void_date
_PROVIDER_AND_DATE = itemgetter(1, 3)


def _insert(columns: Sequence[str]) -> str:
    """The INSERT of a chunk's rows, each a JSON array of `columns` (the others are NULL)."""
    return (
        f"INSERT INTO items (job, {', '.join(columns)})"  # noqa: S608 - constants
        f" SELECT ?2, {', '.join(columns)} FROM {_rows(*columns)}"
        " WHERE true ON CONFLICT DO NOTHING"  # the WHERE: SQLite's rule for an upsert after a SELECT
    )


_INSERT = _insert(_COLUMNS)
# SQLite (3.40) parses a row's array again for every column it extracts, which was 70% of
# an eight-column INSERT's time; so a chunk whose rows have none of the last three (a job
# file of providers and invoice ids) goes in with four.
_INSERT_PLAIN = _insert(_COLUMNS[:4])
assert _COLUMNS == ("line", "provider", "invoice_id", "void_date", "company_id", "store", "metadata")


class SqliteLedger:
    """Owns the checkpoint database file. Use as a context manager."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise LedgerError(
                f"{self.path}: this Python's SQLite is {sqlite3.sqlite_version}, and a batchvoid ledger "
                f"needs {'.'.join(map(str, MIN_SQLITE))} or newer (UPDATE ... FROM, JSON functions): "
                "run batchvoid on a newer Python (python.org's builds, or a distribution's from 2021 on)"
            )
        if problem := path_problem(self.path, write=True):
            raise LedgerError(f"{self.path}: {problem}")
        # A file with content must be a ledger of a schema this batchvoid reads, checked
        # read-only: a ledger from a newer batchvoid, or any other file, is refused untouched.
        version = inspect(self.path) if has_content(self.path) else None
        self._db = self._connect()
        try:
            self._prepare_schema(version)
        except BaseException:
            self._db.close()
            raise
        self._lock = threading.Lock()  # the writer thread's commits and the lanes' claims
        self._identity = identity(self.path)  # to notice the file being deleted or replaced
        self._run: str | None = None  # the run begun on this connection: its id stamps its writes
        self._checkpointer: threading.Thread | None = None  # after an ingest: _checkpoint
        try:
            self._reader = open_readonly(self.path, any_thread=True)
        except sqlite3.Error as exc:
            self._db.close()
            raise fault(self.path, exc, "cannot open it") from exc

    @property
    def location(self) -> str:
        return str(self.path)

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise fault(self.path, exc, "cannot open it") from exc
        return db

    def _prepare_schema(self, version: int | None) -> None:
        """Create the schema in a new ledger, or bring an older one up to this version."""
        db = self._db
        if version == SCHEMA_VERSION:
            return
        if version is None:
            try:
                db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} {_VERSION_ROW} COMMIT;")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise fault(self.path, exc, "cannot set it up") from exc
            return
        # Off for the copy of the items table (dropping the old one would check every
        # attempt's reference to it); the ids are copied as they are, so nothing dangles.
        db.execute("PRAGMA foreign_keys=OFF")  # (it cannot change inside a transaction)
        try:
            with self._transaction("cannot set it up"):
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[step]:
                        db.execute(statement)
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        finally:
            with contextlib.suppress(sqlite3.Error):  # the fault above, if any, is what is said
                db.execute("PRAGMA foreign_keys=ON")

    @contextmanager
    def _transaction(self, doing: str, *, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction on the ledger: committed, or rolled back and its fault said as `doing`."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise fault(self.path, exc, doing) from exc
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.join()
        if self._reader is not self._db:
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
        cursor = self._sql(self._reader, query, params)
        names = [d[0] for d in cursor.description]
        # By name, so that a ledger of an older schema (read-only) reads too: missing is None.
        jobs = []
        for row in cursor:
            fields: dict[str, Any] = dict.fromkeys(JOB_FIELDS)
            fields.update(zip(names, row, strict=True))
            jobs.append(Job(**{name: fields[name] for name in JOB_FIELDS}))
        return jobs

    def targets(self, job: Job) -> dict[str, str]:
        """Where each provider profile of the job sent (or is to send), as recorded."""
        if not self._has_table("targets"):  # an older ledger read as it is
            return {}
        rows = self._sql(self._reader, "SELECT profile, target FROM targets WHERE job = ?", (job.id,))
        return dict(rows.fetchall())

    def record_targets(self, job: Job, targets: Mapping[str, str], *, simulated: bool) -> None:
        """Record (or replace) where the job's profiles send, and whether it is a rehearsal."""
        with self._transaction("cannot record the job's targets") as db:
            db.execute("UPDATE jobs SET simulated = ? WHERE id = ?", (int(simulated), job.id))
            db.executemany(
                "INSERT OR REPLACE INTO targets VALUES (?, ?, ?)",
                [(job.id, profile, target) for profile, target in targets.items()],
            )

    def touched(self, job: Job) -> dict[str, dict[ItemState, int]]:
        """Per provider, the items that have an outcome or may have been voided, by state.

        A pending item has none, even after attempts (a 401 or a 5xx voided nothing), nor one
        failed by a redirect that says it was not acted on (a wrong base_url reached no account).
        """
        # Read from the items (an outcome's status matters), not the counts: only a changed target
        # asks, so the scan is rare.
        rows = self._sql(self._reader, _TOUCHED, (job.id, *UNACTED_REDIRECTS))
        touched: dict[str, dict[ItemState, int]] = {}
        for provider, state, n in rows:
            touched.setdefault(provider, {})[self._state(state)] = n
        return touched

    def void_dates(self, job: Job) -> dict[str, dict[str, int]]:
        """The void dates the job's items carry, with how many items each, per provider."""
        rows = self._sql(
            self._reader,
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
        return self._sql(self._reader, query, (name,)).fetchone() is not None

    def ingest(self, new: NewJob, accept: Callable[[set[str]], None] | None = None) -> Ingest:
        """Record a new job and all its items in one transaction, or nothing if any row is bad.

        `accept` sees the job's providers before the commit: what it raises refuses the job,
        which then leaves nothing behind (a missing credential must not record the job).
        """
        db = self._db
        try:
            # The items' one foreign key is the job row made just below: checking it per row
            # costs a tenth of the ingest. (Neither pragma can change inside a transaction.)
            db.execute("PRAGMA foreign_keys=OFF")
            db.execute(f"PRAGMA cache_size=-{_INGEST_CACHE_KIB}")
            db.execute("PRAGMA wal_autocheckpoint=0")  # the commit's is done behind it: _checkpoint
            db.execute("BEGIN IMMEDIATE")
            job = db.execute(
                "INSERT INTO jobs (job_id, job_file, job_sha256, config_fingerprint, created_at, simulated)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (new.job_id, new.job_file, new.job_sha256, new.config_fingerprint, now(), int(new.simulated)),
            ).lastrowid
            assert job is not None
            db.executemany(
                "INSERT INTO targets VALUES (?, ?, ?)",
                [(job, profile, target) for profile, target in new.targets.items()],
            )
            # The work index grows with the rows: its cost falls on the inserting thread, which
            # runs beside the reading one, where dropping it and building it after the rows was
            # a wait of its own (1M rows: 11.5 s with it kept, 12.5 s rebuilt; medians of 3).
            found = _Found()
            self._copy_rows(job, new, found)
            if found.error_count or not found.items:
                db.execute("ROLLBACK")
            else:
                by_provider = Counter[str]()
                for (provider, _), n in found.void_dates.items():
                    by_provider[provider] += n
                db.executemany(
                    "INSERT INTO item_counts VALUES (?, ?, 'pending', ?)",
                    [(job, provider, n) for provider, n in by_provider.items() if n],
                )
                if accept is not None:
                    accept({provider for provider, n in by_provider.items() if n})
                db.execute(
                    "UPDATE jobs SET items = ?, duplicates = ? WHERE id = ?",
                    (found.items, found.duplicate_count, job),
                )
                db.execute("COMMIT")
                self._checkpoint()
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise fault(self.path, exc, "cannot record the job") from exc
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA foreign_keys=ON")
                db.execute("PRAGMA cache_size=-2000")  # SQLite's default, for the rest of the run
                db.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
        return Ingest(
            found.items,
            found.duplicate_count,
            tuple(found.duplicates),
            found.error_count,
            tuple(found.errors),
            void_dates=+found.void_dates,  # the unary plus drops the zero counts
        )

    def _checkpoint(self) -> None:
        """Copy a new job's pages from the WAL into the database file, on a thread of its own.

        SQLite's autocheckpoint would do it in the commit, before the first request: 1.1 s of
        a 1M-row job's 1.3 s commit (measured in process). Left behind it, it runs beside the
        first claims (which skip their own checkpoint while this one holds it). Should it
        fail, the pages stay in the WAL, as safe there, for the next checkpoint; `close`
        waits for it, as does the next ingest.
        """
        if self._checkpointer is not None:
            self._checkpointer.join()

        def checkpoint() -> None:
            with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(self.path)) as db:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")

        self._checkpointer = threading.Thread(target=checkpoint, name="batchvoid-checkpoint", daemon=True)
        self._checkpointer.start()

    def _copy_rows(self, job: int, new: NewJob, found: _Found) -> None:
        """Insert the job's rows, read and checked on a thread of their own meanwhile.

        Reading a row (CSV, checks, its idempotency key) is Python and holds the GIL; inserting
        a chunk is one statement, which SQLite runs without it. So the reading thread prepares
        the next chunks while this one inserts the last, and the two cores share the work. An
        error of the reading (a signal's RunInterrupted, an unreadable file) is raised here.
        """
        chunks: queue.Queue[_Chunk | BaseException | None] = queue.Queue(maxsize=_CHUNKS_AHEAD)
        stop = threading.Event()
        reader = threading.Thread(
            target=_read_chunks, args=(new, found, chunks, stop), name="batchvoid-ingest", daemon=True
        )
        reader.start()
        try:
            while (chunk := chunks.get()) is not None:
                if isinstance(chunk, BaseException):
                    raise chunk
                self._insert(job, chunk, found)
        finally:
            stop.set()
            while reader.is_alive():  # never leave it blocked on a full queue
                with contextlib.suppress(queue.Empty):
                    chunks.get(timeout=0.05)
            reader.join()

    def _insert(self, job: int, chunk: _Chunk, found: _Found) -> None:
        db = self._db
        before = db.total_changes
        db.execute(chunk.insert, (chunk.rows, job))
        inserted = db.total_changes - before
        found.items += inserted
        found.void_dates.update(chunk.void_dates)
        if inserted == len(chunk.items):
            return
        for row in chunk.items:  # some rows repeat an earlier one: the table holds the first's line
            (first,) = db.execute(
                "SELECT line FROM items WHERE job = ? AND provider = ? AND invoice_id = ?",
                (job, row.provider, row.invoice_id),
            ).fetchone()
            if first == row.line:
                continue
            found.duplicate_count += 1
            found.void_dates[row.provider, row.void_date] -= 1  # the first's counts, not this one
            db.execute(
                "INSERT INTO duplicates VALUES (?, ?, ?, ?, ?)",
                (job, row.line, row.provider, row.invoice_id, first),
            )
            if len(found.duplicates) < MAX_ERRORS_SHOWN:
                found.duplicates.append(Duplicate(row.line, row.provider, row.invoice_id, first))

    # -- runs ------------------------------------------------------------------------------

    def begin_run(self, job: Job, new: NewRun) -> Run:
        """Record that a run of `job` begins; its writes on this connection carry its id."""
        at = now()
        with self._transaction("cannot record the run") as db:
            db.execute(
                "UPDATE jobs SET started_at = ?, finished_at = NULL, runs = runs + 1 WHERE id = ?",
                (at, job.id),
            )
            db.execute(
                "INSERT INTO runs (run_id, job, user, host, pid, version, command, simulated, targets,"
                " started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new.run_id, job.id, new.user, new.host, new.pid, new.version, new.command,
                    int(new.simulated), json.dumps(dict(new.targets)), at,
                ),
            )  # fmt: skip
        self._run = new.run_id
        return Run(job.job_id, at, new)

    def end_run(self, job: Job, run: Run, end: RunEnd) -> Run:
        """Record how the run ended (whatever its result), with the 429s it recorded."""
        at = now()
        end = RunEnd(
            end.exit_status, end.counts, end.requests, {**end.throttled, **self.throttled(run.run_id)}
        )
        with self._transaction("cannot record the end of the run") as db:
            db.execute("UPDATE jobs SET finished_at = ? WHERE id = ?", (at, job.id))
            db.execute(
                "UPDATE runs SET finished_at = ?, exit_status = ?, counts = ?, requests = ?, throttled = ?"
                " WHERE run_id = ?",
                (at, end.exit_status, json.dumps(end.counts), json.dumps(end.requests),
                 json.dumps(end.throttled), run.run_id),
            )  # fmt: skip
        self._run = None
        return Run(run.job_id, run.started_at, run.new, at, end)

    def runs(self, job: Job) -> list[Run]:
        """The job's runs, oldest first (none in a ledger from before version 3)."""
        if not self._has_table("runs"):
            return []
        rows = self._sql(
            self._reader,
            "SELECT run_id, user, host, pid, version, command, simulated, targets, started_at,"
            " finished_at, exit_status, counts, requests, throttled FROM runs WHERE job = ?"
            " ORDER BY started_at, rowid",
            (job.id,),
        )
        runs = []
        for row in rows.fetchall():
            run_id, user, host, pid, version, command = row[:6]
            new = NewRun(run_id, user, host, pid, version, command, bool(row[6]), json.loads(row[7]))
            end = None if row[10] is None else RunEnd(row[10], *(json.loads(v) for v in row[11:]))
            runs.append(Run(job.job_id, row[8], new, row[9], end))
        return runs

    def throttled(self, run_id: str) -> dict[str, int]:
        """The 429 answers the run recorded in the attempt history, per provider."""
        rows = self._sql(
            self._reader,
            "SELECT items.provider, count(*) FROM attempts JOIN items ON items.id = attempts.item"
            " WHERE attempts.run = ? AND attempts.http_status = 429 GROUP BY items.provider",
            (run_id,),
        )
        return dict(rows.fetchall())

    def duplicates(self, job: Job) -> list[Duplicate]:
        rows = self._sql(
            self._reader,
            "SELECT line, provider, invoice_id, first_line FROM duplicates WHERE job = ? ORDER BY line",
            (job.id,),
        )
        return [Duplicate(*row) for row in rows]

    # -- work ----------------------------------------------------------------------------

    def claim(self, job: Job, provider: str, after_line: int, limit: int) -> list[WorkItem]:
        """Take the next unfinished items of one provider after `after_line`: one transaction.

        The pending ones become in flight (may have been sent) with the commit; the ones
        already in flight (left so by a run that stopped) stay so. One run holds a job at a
        time (`guard`), so a claim needs no owner here.
        """
        with self._lock:
            self.check_still_there()
            with self._transaction("cannot take work from it") as db:
                (batch,) = db.execute(_CLAIMABLE, (job.id, provider, after_line, limit)).fetchone()
                rows = sorted(orjson.loads(batch), key=itemgetter(1))  # by line, whatever the aggregate did
                if rows:
                    db.execute(_CLAIM, (now(), job.id, provider, after_line, rows[-1][1]))
        return [
            WorkItem(
                id=row[0],
                item=Item(
                    row[1], provider, row[2], row[3], row[4], row[5], orjson.loads(row[6]) if row[6] else {}
                ),
                idempotency_key=row[7] or idempotency_key(job.job_id, provider, row[2]),
                attempts=row[8],
                maybe_sent=row[9] == _IN_FLIGHT,
            )
            for row in rows
        ]

    def pace(self, profile: Profile) -> Pace | None:
        """None: one run holds the job, and each of its lanes keeps its own limits."""
        return None

    def counts(self, job: Job) -> dict[tuple[str, ItemState], int]:
        """How many items each provider has in each state."""
        rows = self._sql(
            self._reader,
            "SELECT provider, state, n FROM item_counts WHERE job = ? AND n > 0"
            if self._has_table("item_counts")
            else "SELECT provider, state, count(*) FROM items WHERE job = ? GROUP BY provider, state",
            (job.id,),  # (a ledger from before version 4, read as it is, has no counts)
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

    def items(self, job: Job, states: Collection[ItemState] | None = None, run: str | None = None) -> Rows:
        """Every item of the job (or those in `states`, or whose last outcome `run` wrote), in file order."""
        where, params = _job_filter(job, states, run)
        query = f"SELECT * FROM items WHERE {where} ORDER BY line"  # noqa: S608 - placeholders only
        cursor = self._sql(self._reader, query, params)
        names = [d[0] for d in cursor.description]
        for row in cursor:
            item = dict(zip(names, row, strict=True))
            if item["idempotency_key"] is None:  # what an item is recorded with (schema.sql)
                item["idempotency_key"] = idempotency_key(job.job_id, item["provider"], item["invoice_id"])
            if item["created_at"] is None:
                item["created_at"] = job.created_at
            if item["updated_at"] is None:
                item["updated_at"] = item["created_at"]
            yield item

    def apply(self, ops: Sequence[Op]) -> None:
        """Write a batch of ops in one transaction (called on the writer thread).

        Ops of one kind run together (executemany costs a third less than one execute each).
        That keeps every item's own order: an Attempt touches only the attempt history, and an
        item gets at most one of Finish and Release in a run.
        """
        at = now()  # the batch's: an outcome is recorded when it is committed
        attempts: list[tuple[Any, ...]] = []
        finishes: list[tuple[Any, ...]] = []
        releases: list[tuple[Any, ...]] = []
        for op in ops:
            if type(op) is Finish:
                finishes.append((op.item, op.state.value, op.reason, op.http_status, op.reference, op.sent))
            elif type(op) is Attempt:
                attempts.append(
                    (op.item, op.number, op.at, op.outcome, op.http_status, op.latency_ms, op.detail)
                )
            else:
                assert type(op) is Release
                releases.append((op.item, _IN_FLIGHT if op.maybe_sent else _PENDING, op.sent))
        with self._lock:
            self.check_still_there()
            with self._transaction("cannot record progress", immediate=False) as db:
                if attempts:
                    db.execute(_ATTEMPT, (_json(attempts), self._run))
                for sql, rows in ((_FINISH, finishes), (_RELEASE, releases)):
                    if rows:
                        db.execute(sql, (_json(rows), at, self._run))

    def check_still_there(self) -> None:
        """Raise if the ledger file was deleted or replaced since it was opened.

        SQLite goes on writing to a deleted file's inode without a word, so a run whose ledger
        was removed would record its outcomes where no later run can find them.
        """
        try:
            same = identity(self.path) == self._identity
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
    def open_readonly(cls, path: str | Path) -> SqliteLedger:
        """An existing ledger, opened read-only: inspecting a job never creates or changes one.

        Works on read-only media too, and on a ledger of an older schema (read as it is).
        """
        self = cls.__new__(cls)
        self.path = Path(path)
        self._lock = threading.Lock()
        self._checkpointer = None
        if problem := path_problem(self.path, write=False):
            raise LedgerError(f"{self.path}: {problem}")
        inspect(self.path)
        try:
            self._db = self._reader = open_readonly(self.path)
        except sqlite3.Error as exc:
            raise fault(self.path, exc, "cannot read it") from exc
        self._identity = identity(self.path)
        return self

    def duplicate_counts(self, job: Job) -> dict[str, int]:
        """How many duplicate rows the job file had, per provider."""
        rows = self._sql(
            self._reader,
            "SELECT provider, count(*) FROM duplicates WHERE job = ? GROUP BY provider",
            (job.id,),
        )
        return dict(rows.fetchall())

    def attempt_count(self, job: Job) -> int:
        """Requests sent for the job's items, over all its runs."""
        (total,) = self._sql(
            self._reader, "SELECT coalesce(sum(attempts), 0) FROM items WHERE job = ?", (job.id,)
        ).fetchone()
        return int(total)

    def failure_reasons(self, job: Job, limit: int) -> list[tuple[str, str, int]]:
        """The most frequent (provider, reason, count) among failed items."""
        where, params = _job_filter(job, UNDONE)
        rows = self._sql(
            self._reader,
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
        return [key for (key,) in self._sql(self._reader, query, params)]

    def redrive(self, job: Job) -> dict[str, int]:
        """Put the job's failed items back to pending, keeping keys and attempts.

        Returns how many items went back, per provider. Each item's last answer (the one its
        row held) joins its attempt history first, so the history loses nothing.
        """
        where, params = _job_filter(job, UNDONE)
        with self._transaction("cannot put the failed items back") as db:
            counts = dict(
                db.execute(
                    f"SELECT provider, count(*) FROM items WHERE {where} GROUP BY provider",  # noqa: S608 - placeholders only
                    params,
                ).fetchall()
            )
            db.execute(
                "INSERT INTO attempts (item, attempt, at, outcome, http_status, latency_ms, detail, run)"  # noqa: S608 - placeholders only
                " SELECT id, attempts, coalesce(updated_at, ?), state, http_status, NULL, reason, run"
                f" FROM items WHERE {where}",
                (job.created_at, *params),  # (an item not changed since recorded: its job's time)
            )
            db.execute(
                "UPDATE items SET state = 'pending', reason = NULL, http_status = NULL, updated_at = ?"  # noqa: S608 - placeholders only
                f" WHERE {where}",
                (now(), *params),
            )
        return counts

    def workers(self, job_id: str) -> list[WorkerRow]:
        """None: one run holds a job at a time (`lock_holder` says which)."""
        return []

    def lock_holder(self, job_id: str) -> Holder | None:
        """The process recorded as running `job_id`, if any (it may since have died)."""
        try:
            row = self._reader.execute(
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

    def guard(
        self,
        job_id: str,
        out: TextIO | None = None,
        *,
        max_workers: int | None = None,
        stopping: threading.Event | None = None,
    ) -> RunLock:
        """The run lock of `job_id` on this ledger (see `lock.RunLock`): one run, whatever `max_workers`.

        A claim never waits here, so `stopping` has nothing to cut short.
        """
        return RunLock(self, job_id, out=out)

    def _sql(self, db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Cursor:
        try:
            return Cursor(db.execute(sql, params), self.path)
        except sqlite3.Error as exc:
            raise fault(self.path, exc, "cannot use it") from exc
