"""The checkpoint ledger: every job, every item, and the work queue a run claims from.

- `api`: the records (Job, Ingest, Run, ...) and the Protocols a backend implements: `WorkQueue`
  (claim, apply), `JobStore`, `Reports`, `RunRecords`, `RunGuard`. The engine depends on `WorkQueue` alone.
- `ops`: the writes a run makes (Attempt, Finish, Release), as records, not SQL.
- `writer`: the backend-neutral group commit that batches a run's ops off the event loop.
- `sqlite`: the default backend, one file per ledger; its schema is `sqlite/schema.sql`.
- `postgres`: one job shared by many workers, in a PostgreSQL database (`postgresql://` URLs,
  psycopg 3, the optional extra `batchvoid[postgresql]`); its schema is `postgres/schema.sql`.
- `memory`: a work queue and run records in a list, for the engine's unit tests.

`open_ledger` picks the backend for a location.
"""

from __future__ import annotations

from pathlib import Path

from batchvoid.ledger.api import (
    Duplicate,
    Holder,
    Ingest,
    Job,
    Ledger,
    NewJob,
    NewRun,
    Run,
    RunEnd,
    WorkQueue,
    now,
)
from batchvoid.ledger.location import LedgerLocation, is_url, shown
from batchvoid.ledger.sqlite import SqliteLedger
from batchvoid.ledger.sqlite.dbfile import writable_problem
from batchvoid.ledger.writer import LedgerWriter

__all__ = [
    "Duplicate",
    "Holder",
    "Ingest",
    "Job",
    "Ledger",
    "LedgerLocation",
    "LedgerWriter",
    "NewJob",
    "NewRun",
    "Run",
    "RunEnd",
    "SqliteLedger",
    "WorkQueue",
    "is_url",
    "ledger_exists",
    "now",
    "open_ledger",
    "shown",
    "writable_problem",
]


def ledger_exists(location: str | Path) -> bool:
    """Whether there is a ledger at `location` to read (a file; a database with batchvoid's schema)."""
    if is_url(location):
        from batchvoid.ledger.postgres import has_ledger

        return has_ledger(str(location))
    return Path(location).is_file()


def open_ledger(location: str | Path, *, readonly: bool = False) -> Ledger:
    """The ledger at `location`, to run jobs in or, `readonly`, to inspect.

    A `postgresql://` URL is a PostgreSQL database; anything else is a file path (SQLite).
    A read-only ledger is never created or changed, and may be of an older schema.
    """
    if is_url(location):
        from batchvoid.ledger.postgres import PostgresLedger  # imports psycopg: only when used

        return PostgresLedger(str(location), readonly=readonly)
    if readonly:
        return SqliteLedger.open_readonly(location)
    return SqliteLedger(location)
