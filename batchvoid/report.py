"""`batchvoid status` and `batchvoid report`: what the ledger knows about jobs and items.

Both read the ledger read-only, so they are safe while a run is going. A report is streamed
from the ledger row by row, so its size does not matter. A CSV report is also a job file:
`provider` and `invoice_id` come first and every other column becomes the new job's metadata.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import socket
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from batchvoid.errors import LedgerError
from batchvoid.ledger import Holder, Job, Ledger, Run
from batchvoid.ledger.api import WorkerRow
from batchvoid.ledger.sqlite.lock import pid_alive
from batchvoid.models import DONE, UNDONE, ItemState
from batchvoid.summary import counts_table

Format = Literal["csv", "jsonl", "html"]
STATE_CHOICES = ("failed", "pending", "voided", "already_void", "all")
REASONS_SHOWN = 5
# A report row: the job file's own fields first, then what became of the item.
ITEM_COLUMNS = ("provider", "invoice_id", "void_date", "company_id", "store")
OUTCOME_COLUMNS = (
    "state",
    "reason",
    "http_status",
    "attempts",
    "reference",
    "idempotency_key",
    "line",
    "created_at",
    "updated_at",
)


def pick_job(ledger: Ledger, job_id: str | None) -> Job:
    """The job named `job_id`, or the ledger's only job when none is named."""
    if job_id is not None:
        job = ledger.job(job_id)
        if job is None:
            known = ", ".join(repr(j.job_id) for j in ledger.jobs()) or "none"
            raise LedgerError(f"{ledger.location}: no job {job_id!r} (jobs: {known})")
        return job
    jobs = ledger.jobs()
    if len(jobs) == 1:
        return jobs[0]
    if not jobs:
        raise LedgerError(f"{ledger.location}: no jobs yet")
    known = ", ".join(repr(j.job_id) for j in jobs)
    raise LedgerError(f"{ledger.location} has {len(jobs)} jobs ({known}): pick one with --job-id")


def states_for(choices: Sequence[str]) -> list[ItemState] | None:
    """The item states `--state` choices name; None: all. `pending` includes in flight."""
    if not choices or "all" in choices:
        return None
    states = [ItemState(choice) for choice in choices]
    if ItemState.PENDING in states:
        states.append(ItemState.IN_FLIGHT)
    return states


# -- status -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobStatus:
    """One job as the ledger knows it, for `batchvoid status`."""

    job: Job
    counts: Mapping[tuple[str, ItemState], int]
    attempts: int
    reasons: Sequence[tuple[str, str, int]]  # (provider, reason, items), most frequent first
    holder: Holder | None  # the run recorded as holding the job, if any
    runs: Sequence[Run] = ()  # its run records, oldest first
    workers: Sequence[WorkerRow] = ()  # on a shared ledger: every worker that joined the job

    @classmethod
    def read(cls, ledger: Ledger, job: Job, *, reasons: int = REASONS_SHOWN) -> JobStatus:
        return cls(
            job=job,
            counts=ledger.counts(job),
            attempts=ledger.attempt_count(job),
            reasons=ledger.failure_reasons(job, reasons),
            holder=ledger.lock_holder(job.job_id),
            runs=ledger.runs(job),
            workers=ledger.workers(job.job_id),
        )

    def totals(self) -> dict[str, int]:
        totals = dict.fromkeys((s.value for s in ItemState), 0)
        for (_, state), n in self.counts.items():
            totals[state.value] += n
        return totals

    def running(self) -> dict[str, Any] | None:
        """The run holding the job: pid, host, since, and whether it still runs (None: can't tell)."""
        if self.holder is None:
            return None
        alive = pid_alive(self.holder.pid) if self.holder.host == socket.gethostname() else None
        return {
            "pid": self.holder.pid,
            "host": self.holder.host,
            "since": self.holder.started_at,
            "alive": alive,
        }

    def as_json(self) -> dict[str, Any]:
        job = self.job
        by_provider: dict[str, dict[str, int]] = {}
        for (provider, state), n in sorted(self.counts.items()):
            by_provider.setdefault(provider, {})[state.value] = n
        return {
            "job_id": job.job_id,
            "job_file": job.job_file,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "runs": job.runs,
            "simulated": None if job.simulated is None else bool(job.simulated),
            "items": job.items,
            "duplicates": job.duplicates,
            "attempts": self.attempts,
            "totals": self.totals(),
            "counts": by_provider,
            "failure_reasons": [
                {"provider": provider, "reason": reason, "items": n} for provider, reason, n in self.reasons
            ],
            "running": self.running(),
            "run_records": [run_json(run) for run in self.runs],
            **({"workers": [asdict(w) for w in self.workers]} if self.workers else {}),
        }


def run_json(run: Run) -> dict[str, Any]:
    """A run's record as JSON-ready data; the end fields are null while it runs or if it died."""
    new, end = run.new, run.end
    return {
        "run_id": run.run_id,
        "user": new.user,
        "host": new.host,
        "pid": new.pid,
        "version": new.version,
        "command": new.command,
        "simulated": new.simulated,
        "targets": dict(new.targets),
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "exit_status": None if end is None else end.exit_status,
        "counts": None if end is None else end.counts,
        "requests": None if end is None else end.requests,
        "throttled": None if end is None else end.throttled,
        "alive": None if end is not None else run.alive,
    }


def status_json(ledger: Ledger, job_id: str | None) -> dict[str, Any]:
    """Every job in brief, or one job in full, as JSON-ready data."""
    if job_id is not None:
        return {"ledger": ledger.location, **JobStatus.read(ledger, pick_job(ledger, job_id)).as_json()}
    jobs = []
    for job in ledger.jobs():
        brief = JobStatus.read(ledger, job, reasons=0).as_json()
        del brief["counts"], brief["failure_reasons"], brief["run_records"]
        jobs.append(brief)
    return {"ledger": ledger.location, "jobs": jobs}


def _when(timestamp: str | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromisoformat(timestamp).strftime("%Y-%m-%d %H:%M:%S UTC")


def _running_text(running: Mapping[str, Any] | None) -> str | None:
    if running is None:
        return None
    who = f"pid {running['pid']} on host {running['host']} since {_when(running['since'])}"
    if running["alive"] is False:
        return f"left locked by {who}, which is no longer running: the next run takes it over"
    return f"running now: {who}"


def render_jobs(ledger: Ledger, console: Console) -> None:
    """The jobs in a ledger, one line each."""
    jobs = ledger.jobs()
    console.print(
        f"Ledger {ledger.location}: {len(jobs)} job{'s' * (len(jobs) != 1)}.", highlight=False, markup=False
    )
    if not jobs:
        return
    table = Table()
    table.add_column("job")
    for name in ("items", "done", "failed", "left", "runs"):
        table.add_column(name, justify="right")
    table.add_column("last run")
    for job in jobs:
        status = JobStatus.read(ledger, job, reasons=0)
        totals = status.totals()
        running = status.running()
        last = _when(job.started_at)
        if running is not None and running["alive"] is not False:
            last += " (running)"
        table.add_row(
            Text(job.job_id),
            str(job.items),
            str(sum(totals[state] for state in DONE)),
            str(sum(totals[state] for state in UNDONE)),
            str(totals["pending"] + totals["in_flight"]),
            str(job.runs),
            last,
        )
    console.print(table)
    hint = f"One job in detail: batchvoid status --ledger {ledger.location} --job-id JOB"
    console.print(hint, highlight=False, markup=False, soft_wrap=True)


def render_job(status: JobStatus, console: Console) -> None:
    """One job: where it came from, when it ran, its counts, and why items failed."""
    job = status.job
    kind = " (a rehearsal on the simulator)" if job.simulated else ""
    console.print(
        f"Job {job.job_id!r} from {job.job_file}{kind}", highlight=False, markup=False, soft_wrap=True
    )
    ended = _when(job.finished_at) if job.finished_at else "not yet"
    console.print(f"  recorded   {_when(job.created_at)}", highlight=False)
    runs = f"{job.runs} run{'s' * (job.runs != 1)}"
    console.print(f"  last run   {_when(job.started_at)} to {ended} ({runs} in all)", highlight=False)
    console.print(
        f"  {job.items} items, {job.duplicates} duplicate rows, {status.attempts} requests",
        highlight=False,
    )
    if (running := _running_text(status.running())) is not None:
        console.print(f"  {running}", highlight=False, markup=False, soft_wrap=True)
    if status.workers:
        console.print(workers_table(status.workers))
    console.print(counts_table(status.counts))
    if status.runs:
        render_runs(status.runs, console)
    if status.reasons:
        console.print("Top failure reasons:")
        width = max(len(str(n)) for _, _, n in status.reasons)
        for provider, reason, n in status.reasons:
            line = f"  {n:>{width}}  {provider}: {reason or '(no reason)'}"
            console.print(line, highlight=False, markup=False, soft_wrap=True)


def render_runs(runs: Sequence[Run], console: Console) -> None:
    """The job's runs, one line each: who, when, real or rehearsal, how it ended."""
    table = Table(title="Runs (times UTC)", title_justify="left")
    table.add_column("run id", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("took", justify="right", no_wrap=True)
    table.add_column("by", no_wrap=True)
    table.add_column("kind")
    for name in ("exit", "sent", "429s"):
        table.add_column(name, justify="right")
    for run in runs:
        end = run.end
        took = "-"
        if end is not None and run.finished_at is not None:
            seconds = dt.datetime.fromisoformat(run.finished_at) - dt.datetime.fromisoformat(run.started_at)
            took = f"{seconds.total_seconds():.1f}s"
        table.add_row(
            run.run_id,
            _when(run.started_at).removesuffix(" UTC"),
            took,
            Text(f"{run.new.user}@{run.new.host}:{run.new.pid}"),
            "sim" if run.new.simulated else "real",
            run_exit(run, last=run is runs[-1]),
            "-" if end is None else str(sum(end.requests.values())),
            "-" if end is None else str(sum(end.throttled.values())),
        )
    console.print(table)
    console.print(
        "The items a run finished: batchvoid report --job-id JOB --run RUN_ID", highlight=False, markup=False
    )


def run_exit(run: Run, *, last: bool) -> str:
    """A run's exit status; with no end, whether it runs ('-' when the ledger cannot tell) or died."""
    if run.end is not None:
        return str(run.end.exit_status)
    if run.alive is None:  # one run per job (SQLite): only the last one may still be running
        return "-" if last else "died"
    return "running" if run.alive else "died"


def pick_run(ledger: Ledger, job: Job, run_id: str | None) -> str | None:
    """`run_id` if it is one of the job's runs; None stays None (every item)."""
    if run_id is None:
        return None
    known = [run.run_id for run in ledger.runs(job)]
    if run_id not in known:
        listed = ", ".join(known[-5:]) or "none recorded"
        raise LedgerError(
            f"{ledger.location}: job {job.job_id!r} has no run {run_id!r} (its last runs: {listed}); "
            f"`batchvoid status --job-id {job.job_id}` lists them"
        )
    return run_id


def workers_table(workers: Sequence[WorkerRow]) -> Table:
    """The workers of a job on a shared ledger: who, since when, how far, how fast."""
    live = sum(w.state == "live" for w in workers)
    table = Table(title=f"{len(workers)} workers, {live} live", title_justify="left")
    for name, justify in (("worker", "right"), ("host", "left"), ("pid", "right"), ("since", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for name in ("state", "done", "pace"):
        table.add_column(name, justify="right")
    for w in workers:
        since = _when(w.since.replace("Z", "+00:00"))
        table.add_row(str(w.id), Text(w.host), str(w.pid), since, w.state, str(w.done), f"{w.pace:.1f}/s")
    table.add_row(
        "",
        "total",
        "",
        "",
        "",
        str(sum(w.done for w in workers)),
        f"{sum(w.pace for w in workers if w.state == 'live'):.1f}/s",
    )
    return table


# -- report -------------------------------------------------------------------------------


def report_columns(metadata_keys: Sequence[str]) -> list[tuple[str, str | None]]:
    """The CSV header: (column, metadata key or None) pairs, every name unique as a job file sees it.

    A metadata key that clashes with a report column (a job file with its own `reason` column,
    or a report fed back as a job) is written as `meta.KEY` (or `meta.meta.KEY`, ...), so the
    report stays a valid job file however many times it goes round.
    """
    columns: list[tuple[str, str | None]] = [(name, None) for name in (*ITEM_COLUMNS, *OUTCOME_COLUMNS)]
    taken = {name for name, _ in columns}
    kept = set()  # keys written under their own name: every one that clashes with nothing
    for key in metadata_keys:
        norm = key.strip().lower()
        if norm and norm not in taken:
            taken.add(norm)
            kept.add(key)
    for key in metadata_keys:
        name = key
        if key not in kept:
            name = f"meta.{key}"
            while name.strip().lower() in taken:
                name = f"meta.{name}"
            taken.add(name.strip().lower())
        columns.append((name, key))
    return columns


def write_report(
    ledger: Ledger,
    job: Job,
    states: Collection[ItemState] | None,
    fmt: Format,
    out: TextIO,
    run: str | None = None,
) -> int:
    """Write one row per item of `job` (in `states`; whose last outcome `run` wrote) to `out`.

    Returns how many. The rows' cursor is closed here, however the writing ends (a closed
    stdout): never after the ledger, when closing it would fail as the program exits.
    """
    if fmt == "html":
        from batchvoid.htmlreport import write_html

        return write_html(ledger, job, states, out, run)
    with contextlib.closing(ledger.items(job, states, run)) as rows:
        if fmt == "jsonl":
            return _write_jsonl(rows, out)
        columns = report_columns(ledger.metadata_keys(job, states))
        # RFC 4180; "\n" leaves a bare CR unquoted before 3.11.9
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow([name for name, _ in columns])
        written = 0
        for row in rows:
            metadata = json.loads(row["metadata"]) if row["metadata"] else {}
            writer.writerow(["" if value is None else value for value in _values(row, metadata, columns)])
            written += 1
        return written


def _values(
    row: Mapping[str, Any], metadata: Mapping[str, Any], columns: Sequence[tuple[str, str | None]]
) -> Iterator[Any]:
    for name, key in columns:
        yield row[name] if key is None else metadata.get(key)


def _write_jsonl(rows: Iterator[dict[str, Any]], out: TextIO) -> int:
    written = 0
    for row in rows:
        record: dict[str, Any] = {name: row[name] for name in (*ITEM_COLUMNS, *OUTCOME_COLUMNS)}
        record["metadata"] = json.loads(row["metadata"]) if row["metadata"] else {}
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        written += 1
    return written
