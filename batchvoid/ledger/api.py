"""What the ledger is to the rest of batchvoid: its records, and the Protocols a backend implements.

The engine depends on `WorkQueue` only: it claims items, and hands its writes (the `ops`)
to the group-commit writer, which applies them through the same queue. The commands
(`run`, `plan`, `status`, `report`) depend on `JobStore`, `Reports`, `RunRecords` and
`RunGuard`. A backend (SQLite today; an in-memory work queue and run records for the tests)
implements them as one object; `batchvoid.ledger.open_ledger` picks it.

Every method is synchronous and may block (a disk, a database server): callers on the event
loop run them in a worker thread. Every fault is raised as `LedgerError`, saying what is
wrong with the ledger and what to do.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Collection, Generator, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Self, TextIO

from batchvoid.ledger.ops import Op
from batchvoid.models import Item, ItemState, RowError, WorkItem

if TYPE_CHECKING:
    from batchvoid.config import Profile
    from batchvoid.pace import Pace

MAX_ERRORS_SHOWN = 20  # bad rows and duplicates an ingest keeps to show; the rest are counted


def now() -> str:
    """A UTC timestamp as the ledger stores it."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


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


JOB_FIELDS = tuple(Job.__dataclass_fields__)
Rows = Generator[dict[str, Any], None, None]  # a job's items as read: a generator, so it can be closed


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A row that repeats an earlier (provider, invoice_id) of the same file."""

    line: int
    provider: str
    invoice_id: str
    first_line: int


@dataclass(frozen=True, slots=True)
class Ingest:
    """What checking and recording a job file found.

    A job with a bad row is not recorded: `error_count` says how many, `errors` holds the
    first few, and the job file's own module words the refusal.
    """

    items: int
    duplicates: int
    first_duplicates: tuple[Duplicate, ...] = field(default=())
    error_count: int = 0
    errors: tuple[RowError, ...] = field(default=())
    joined: bool = False  # another worker recorded the job meanwhile (PostgreSQL): join it instead
    # (provider, void date or None) -> items, when the backend counted them while recording:
    # then the run starts without a scan of the job's items for them.
    void_dates: Mapping[tuple[str, str | None], int] | None = None

    @property
    def recorded(self) -> bool:
        return not self.error_count and self.items > 0


@dataclass(frozen=True, slots=True)
class Holder:
    """The process recorded as running a job: for messages, and to tell a stale lock."""

    pid: int
    host: str
    started_at: str


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """A worker that joined a job on a shared (PostgreSQL) ledger, as `status` shows it."""

    id: int
    host: str
    pid: int
    since: str  # UTC, ISO 8601
    state: str  # live, left (it exited), dead (its lease ran out)
    done: int  # items it brought to a final state
    pace: float  # of those, per second, over its time in the job


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job file to record: who it is, where its profiles send, and its rows."""

    job_id: str
    job_file: str
    job_sha256: str
    config_fingerprint: str
    rows: Iterable[Item | RowError]
    simulated: bool = False
    targets: Mapping[str, str] = field(default_factory=dict)


class WorkQueue(Protocol):
    """Where a run takes its work from and records what came of it."""

    def claim(self, job: Job, provider: str, after_line: int, limit: int) -> list[WorkItem]:
        """Take up to `limit` unfinished items of one provider after `after_line`, in file order.

        Returns once the claim is durable: from then on each claimed item counts as "may have
        been sent" (a run that dies leaves it to be sent again with the same idempotency key)
        until its outcome is recorded or it is released. `WorkItem.maybe_sent` says whether it
        already counted so before this claim.
        """
        ...

    def apply(self, ops: Sequence[Op]) -> None:
        """Record a batch of ops in one transaction, each item's ops in the order given."""
        ...

    def pace(self, profile: Profile) -> Pace | None:
        """The pace for a lane of `profile` when the queue keeps its limits across workers.

        None: the lane keeps them itself (one process sends the job, as on SQLite).
        """
        ...


class JobStore(Protocol):
    """Jobs and their lifecycle."""

    def job(self, job_id: str) -> Job | None: ...

    def jobs(self) -> list[Job]: ...

    def ingest(self, new: NewJob, accept: Callable[[set[str]], None] | None = None) -> Ingest:
        """Record a job and all its items in one transaction, or nothing if any row is bad.

        `accept` sees the job's providers before the commit: what it raises refuses the job,
        which then leaves nothing behind.
        """
        ...

    def targets(self, job: Job) -> dict[str, str]: ...

    def record_targets(self, job: Job, targets: Mapping[str, str], *, simulated: bool) -> None: ...

    def touched(self, job: Job) -> dict[str, dict[ItemState, int]]:
        """Per provider of the job, its items that have an outcome or may have been voided, by state.

        A pending item has none, even after attempts (a 401 or a 5xx voided nothing), and neither
        has one failed by a redirect in `UNACTED_REDIRECTS` (it reached no account).
        """
        ...

    def void_dates(self, job: Job) -> dict[str, dict[str, int]]: ...

    def fill_void_dates(self, job: Job, dates: Mapping[str, str]) -> None: ...

    def redrive(self, job: Job) -> dict[str, int]:
        """Put the job's failed items back to pending; how many per provider."""
        ...


class Reports(Protocol):
    """What the operator commands read."""

    @property
    def location(self) -> str:
        """Where the ledger is, for messages: a file path, or a URL without its password."""
        ...

    def counts(self, job: Job) -> dict[tuple[str, ItemState], int]: ...

    def items(self, job: Job, states: Collection[ItemState] | None = None, run: str | None = None) -> Rows:
        """The job's items (those in `states`; those whose last outcome the run `run` wrote) in
        file order; close it to stop early."""
        ...

    def duplicates(self, job: Job) -> list[Duplicate]: ...

    def duplicate_counts(self, job: Job) -> dict[str, int]: ...

    def attempt_count(self, job: Job) -> int: ...

    def failure_reasons(self, job: Job, limit: int) -> list[tuple[str, str, int]]: ...

    def metadata_keys(self, job: Job, states: Collection[ItemState] | None = None) -> list[str]: ...

    def workers(self, job_id: str) -> list[WorkerRow]:
        """Every worker that joined the job, oldest first; none on a one-run ledger (SQLite)."""
        ...


@dataclass(frozen=True, slots=True)
class NewRun:
    """Who starts a run of a job, and where it sends: the audit record's first half.

    `command` must hold no secret (the run module scrubs it); `targets` is each profile's
    base URL and account, as `JobStore.targets` has them.
    """

    run_id: str
    user: str
    host: str
    pid: int
    version: str
    command: str
    simulated: bool
    targets: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class RunEnd:
    """How a run ended: the audit record's second half.

    `counts` is the job's items by provider and state when the run ended; `requests` and
    `throttled` (429 answers) are this run's, per provider.
    """

    exit_status: int
    counts: Mapping[str, Mapping[str, int]]
    requests: Mapping[str, int]
    throttled: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Run:
    """One run of a job as the ledger recorded it; `end` is None while it runs, or if it died.

    `alive`, for a run with no end: whether its process still runs (True), died (False), or
    the ledger cannot tell (None).
    """

    job_id: str
    started_at: str
    new: NewRun
    finished_at: str | None = None
    end: RunEnd | None = None
    alive: bool | None = None

    @property
    def run_id(self) -> str:
        return self.new.run_id


class RunRecords(Protocol):
    """The audit trail: every run of a job, who ran it, where it sent and how it ended.

    A backend stamps every attempt row it records between `begin_run` and `end_run` with the
    run's id (once per batch, not per item).
    """

    def begin_run(self, job: Job, new: NewRun) -> Run:
        """Record that a run of `job` begins (and count it in `Job.runs`)."""
        ...

    def end_run(self, job: Job, run: Run, end: RunEnd) -> Run:
        """Record how the run ended; the ledger adds this run's 429s to `end.throttled`."""
        ...

    def runs(self, job: Job) -> list[Run]:
        """The job's runs, oldest first."""
        ...

    def throttled(self, run_id: str) -> dict[str, int]:
        """The 429 answers the run `run_id` recorded, per provider."""
        ...


class RunGuard(Protocol):
    """Who runs a job: one live run per job (SQLite), or its live workers (PostgreSQL)."""

    def guard(
        self,
        job_id: str,
        out: TextIO | None = None,
        *,
        max_workers: int | None = None,
        stopping: threading.Event | None = None,
    ) -> AbstractContextManager[object]:
        """Held for a whole run; raises LedgerLockedError when the job may take no more runs.

        SQLite: one run per job. PostgreSQL: a run joins the job's live workers, up to
        `max_workers` (None: any number). `stopping` (set by a signal) ends a claim's wait for
        the items a peer holds: a run being stopped waits for nobody.
        """
        ...

    def lock_holder(self, job_id: str) -> Holder | None: ...


class Ledger(WorkQueue, JobStore, Reports, RunRecords, RunGuard, Protocol):
    """A whole backend, as `open_ledger` returns it."""

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...
