"""A work queue and run records in memory: the engine's unit tests run on it, with no file and no thread.

It keeps the promises of `WorkQueue` that the engine relies on (claims in file order, a claimed
pending item is in flight, ops applied in order), checks the ones a bug in the engine would
break (an op for an item not claimed, two final writes), and counts its calls so that a
test can say how many writes the engine made. Its `RunRecords` stamp each attempt with the run
begun, as a backend on disk does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from batchvoid.keys import idempotency_key
from batchvoid.ledger.api import Job, NewRun, Run, RunEnd, now
from batchvoid.ledger.ops import Attempt, Finish, Op, Release
from batchvoid.models import Item, ItemState, WorkItem

if TYPE_CHECKING:
    from batchvoid.config import Profile
    from batchvoid.pace import Pace


@dataclass(slots=True)
class Row:
    """One item as the memory ledger holds it."""

    item: Item
    key: str
    state: ItemState = ItemState.PENDING
    attempts: int = 0
    reason: str | None = None
    http_status: int | None = None
    reference: str | None = None
    claimed: bool = False  # by this run: the next op for it must be a Finish or a Release


@dataclass(slots=True)
class MemoryLedger:
    """A `WorkQueue` and `RunRecords` for one job, its items held in a list in file order."""

    job: Job
    rows: list[Row] = field(default_factory=list)
    history: list[Attempt] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)  # "claim", "apply", and each op's type
    history_runs: list[str | None] = field(default_factory=list)  # each attempt's run, as `history`
    run_records: list[Run] = field(default_factory=list)
    run: str | None = None  # the run begun: its id stamps the attempts

    @classmethod
    def of(cls, items: Iterable[Item], job_id: str = "job") -> MemoryLedger:
        job = Job(1, job_id, "job.csv", "", "", now(), None, None, 0, 0, 0, 1)
        rows = [Row(item, idempotency_key(job_id, item.provider, item.invoice_id)) for item in items]
        return cls(job, sorted(rows, key=lambda row: row.item.line))

    def claim(self, job: Job, provider: str, after_line: int, limit: int) -> list[WorkItem]:
        self.calls["claim"] += 1
        taken: list[WorkItem] = []
        for index, row in enumerate(self.rows):
            if len(taken) == limit:
                break
            if row.item.provider != provider or row.item.line <= after_line or row.state.is_final:
                continue
            taken.append(WorkItem(index, row.item, row.key, row.attempts, row.state is ItemState.IN_FLIGHT))
            row.state, row.claimed = ItemState.IN_FLIGHT, True
        return taken

    def pace(self, profile: Profile) -> Pace | None:
        return None  # one engine: each lane keeps its own limits

    def apply(self, ops: Sequence[Op]) -> None:
        self.calls["apply"] += 1
        for op in ops:
            self.calls[type(op).__name__] += 1
            row = self.rows[op.item]
            if type(op) is Attempt:
                self.history.append(op)
                self.history_runs.append(self.run)
                continue
            if not row.claimed:
                raise AssertionError(f"{type(op).__name__} for item {op.item}, which is not claimed")
            row.claimed = False
            if type(op) is Finish:
                row.state, row.reason, row.http_status = op.state, op.reason, op.http_status
                row.reference = op.reference or row.reference
                row.attempts += op.sent
            else:
                assert type(op) is Release
                row.state = ItemState.IN_FLIGHT if op.maybe_sent else ItemState.PENDING
                row.attempts += op.sent

    def states(self) -> Counter[ItemState]:
        return Counter(row.state for row in self.rows)

    def begin_run(self, job: Job, new: NewRun) -> Run:
        self.run = new.run_id
        self.run_records.append(Run(job.job_id, now(), new))
        return self.run_records[-1]

    def end_run(self, job: Job, run: Run, end: RunEnd) -> Run:
        index = self.run_records.index(run)
        ended = RunEnd(
            end.exit_status, end.counts, end.requests, {**end.throttled, **self.throttled(run.run_id)}
        )
        self.run_records[index] = Run(run.job_id, run.started_at, run.new, now(), ended)
        self.run = None
        return self.run_records[index]

    def runs(self, job: Job) -> list[Run]:
        return list(self.run_records)

    def throttled(self, run_id: str) -> dict[str, int]:
        found: Counter[str] = Counter()
        for attempt, run in zip(self.history, self.history_runs, strict=True):
            if run == run_id and attempt.http_status == 429:
                found[self.rows[attempt.item].item.provider] += 1
        return dict(found)
