"""The checkpoint ledger: every job, every item, and the work queue a run claims from.

- `api`: the records (Job, Ingest, Run, ...) and the Protocols a backend implements: `WorkQueue`
  (claim, apply), `JobStore`, `Reports`, `RunRecords`, `RunGuard`. The engine depends on `WorkQueue` alone.
- `ops`: the writes a run makes (Attempt, Finish, Release), as records, not SQL.
- `writer`: the backend-neutral group commit that batches a run's ops off the event loop.
- `sqlite`: the default backend, one file per ledger; its schema is `sqlite/schema.sql`.
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
from batchvoid.ledger.sqlite import SqliteLedger
from batchvoid.ledger.sqlite.dbfile import writable_problem
from batchvoid.ledger.writer import LedgerWriter

__all__ = [
    "Duplicate",
    "Holder",
    "Ingest",
    "Job",
    "Ledger",
    "LedgerWriter",
    "NewJob",
    "NewRun",
    "Run",
    "RunEnd",
    "SqliteLedger",
    "WorkQueue",
    "now",
    "open_ledger",
    "writable_problem",
]


def open_ledger(location: str | Path, *, readonly: bool = False) -> SqliteLedger:
    """The ledger at `location` (a file path: SQLite), to run jobs in or, `readonly`, to inspect.

    A read-only ledger is never created or changed, and may be of an older schema.
    """
    if readonly:
        return SqliteLedger.open_readonly(location)
    return SqliteLedger(location)
