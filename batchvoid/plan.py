"""`batchvoid plan` (and `run --dry-run`): what a run would do, checked, with nothing sent.

Every check a run makes before its first request is made here too: the configuration, every
row of the job file, the ledger's record of the job, every credential variable the job's
providers need. Nothing is sent and nothing is written to the ledger: a job the ledger does
not know yet is checked by recording it in a throwaway ledger in a temporary directory, which
also finds duplicates without holding the file in memory.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from batchvoid.config import Config
from batchvoid.credentials import Reader, Sources
from batchvoid.errors import ConfigError
from batchvoid.ledger import Job, Ledger, ledger_exists, open_ledger, writable_problem
from batchvoid.models import DONE, UNDONE, RateLimit
from batchvoid.pace import binding_rate, estimate_s
from batchvoid.preflight import RunOptions, load_config, prepare, routes, simulator_env
from batchvoid.progress import format_duration


@dataclass(frozen=True, slots=True)
class LanePlan:
    """One provider's share of the job."""

    provider: str
    items: int
    duplicates: int  # rows that repeat an earlier (provider, invoice_id): not counted in items
    finished: int  # items already in a final state in the ledger
    rate_limits: tuple[RateLimit, ...]
    requests_per_item: int = 1  # QuickBooks: a read, then the void

    @property
    def to_send(self) -> int:
        return self.items - self.finished

    @property
    def rate(self) -> float | None:
        """The rate its items go at under the windows they fill, per second; None: no limit."""
        rate = binding_rate(self.to_send * self.requests_per_item, self.rate_limits)
        return None if rate is None else rate / self.requests_per_item

    @property
    def duration_s(self) -> float | None:
        """How long its items take at the configured limits; None: no limit to go by."""
        return estimate_s(self.to_send * self.requests_per_item, self.rate_limits)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a run of the job would do, and what would stop it from starting."""

    job_id: str
    job_file: Path
    known: bool  # the ledger has the job already (the run would resume it)
    lanes: tuple[LanePlan, ...]
    problems: tuple[str, ...]  # each one refuses the run; empty: runnable
    warnings: tuple[str, ...] = ()
    config: str = ""  # the configuration file read (or the built-in one)

    @property
    def runnable(self) -> bool:
        return not self.problems

    @property
    def slowest(self) -> LanePlan | None:
        """The lane that sets the job's duration, or None when no lane has a limit to go by."""
        timed = [lane for lane in self.lanes if lane.duration_s is not None]
        return max(timed, key=lambda lane: lane.duration_s or 0.0, default=None)


def make(options: RunOptions, env: Mapping[str, str], *, retry_failed: bool = False) -> Plan:
    """Check everything a run of `options` would check, without sending or writing anything.

    Raises the run's own errors (configuration, job file, a changed job file) when there is
    no job to plan; a missing credential is a problem listed in the plan instead.
    """
    config = load_config(options)
    source: Mapping[str, str] | Reader = Sources(env)  # one reader: each command runs once
    if options.simulate:
        config = config.rehearsal()
        source = simulator_env(config)
    job_id = options.job_name
    warnings = io.StringIO()
    if ledger_exists(options.ledger):
        with open_ledger(options.ledger, readonly=True) as ledger:
            if ledger.job(job_id) is not None:
                job, _ = prepare(options, config, ledger, warnings)
                return _plan(options, config, ledger, job, source, retry_failed, warnings.getvalue())
    with (
        tempfile.TemporaryDirectory(prefix="batchvoid-plan-") as scratch,
        open_ledger(Path(scratch) / "plan.sqlite") as ledger,
    ):
        job, _ = prepare(options, config, ledger, warnings)
        return _plan(options, config, ledger, job, source, retry_failed, "", known=False)


def _plan(
    options: RunOptions,
    config: Config,
    ledger: Ledger,
    job: Job,
    env: Mapping[str, str] | Reader,
    retry_failed: bool,
    warnings: str,
    *,
    known: bool = True,
) -> Plan:
    counts = ledger.counts(job)
    duplicates = ledger.duplicate_counts(job)
    done = DONE if retry_failed else DONE | UNDONE
    lanes = []
    for provider in sorted({p for p, _ in counts}):
        profile = config.profiles.get(provider)
        lanes.append(
            LanePlan(
                provider=provider,
                items=sum(n for (p, _), n in counts.items() if p == provider),
                duplicates=duplicates.get(provider, 0),
                finished=sum(n for (p, s), n in counts.items() if p == provider and s in done),
                rate_limits=profile.rate_limits if profile is not None else (),
                requests_per_item=profile.spec.requests_per_item if profile is not None else 1,
            )
        )
    problems = []
    if isinstance(options.ledger, Path) and (problem := writable_problem(options.ledger)):
        problems.append(f"{options.ledger}: {problem}")
    notices: list[str] = []  # credentials the run would trim
    for lane in lanes:
        if lane.to_send:
            try:
                config.profiles[lane.provider].secrets(env, notices)
            except ConfigError as exc:
                problems.append(str(exc))
    if not options.simulate:  # a rehearsal is on loopback: never through a proxy
        try:
            routes(config, [lane.provider for lane in lanes if lane.to_send])
        except ConfigError as exc:
            problems.append(str(exc))
    return Plan(
        job_id=job.job_id,
        job_file=options.job_file,
        known=known,
        lanes=tuple(lanes),
        problems=tuple(problems),
        warnings=(*(line.removeprefix("warning: ") for line in warnings.splitlines()), *notices),
        config=config.path,
    )


PLAN_SCHEMA_VERSION = 1


def as_json(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-ready data (`plan --json`); fields are only added under one schema_version."""
    slowest = plan.slowest
    return {
        "schema_version": PLAN_SCHEMA_VERSION,
        "job_id": plan.job_id,
        "job_file": str(plan.job_file),
        "known": plan.known,
        "config": plan.config,
        "runnable": plan.runnable,
        "problems": list(plan.problems),
        "warnings": list(plan.warnings),
        "to_send": sum(lane.to_send for lane in plan.lanes),
        "estimate_s": None if slowest is None else slowest.duration_s,
        "lanes": [
            {
                "provider": lane.provider,
                "items": lane.items,
                "duplicates": lane.duplicates,
                "finished": lane.finished,
                "to_send": lane.to_send,
                "rate_limits": [str(limit) for limit in lane.rate_limits],
                "estimate_s": lane.duration_s,
            }
            for lane in plan.lanes
        ],
    }


def _limit_text(lane: LanePlan) -> str:
    if not lane.rate_limits:
        return "no limit"
    return ", ".join(str(limit) for limit in lane.rate_limits)


def _duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "no limit"
    return f"{seconds:.1f}s" if seconds < 60 else format_duration(seconds)


def render(plan: Plan, console: Console, errors: Console | None = None) -> None:
    """Print the plan on `console`: a table per provider, the estimated time, and whether it can
    run; each warning and each reason it cannot run goes to `errors` (stderr by default)."""
    errors = errors or Console(stderr=True)
    where = "in the ledger: the run resumes it" if plan.known else "new: the run records it"
    console.print(
        f"Plan for job {plan.job_id!r} ({where}). Nothing was sent.",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    console.print(f"Configuration: {plan.config}", highlight=False, markup=False, soft_wrap=True)
    table = Table(show_footer=True)
    table.add_column("provider", footer="total")
    columns = (("items", "items"), ("dups", "duplicates"), ("done", "finished"), ("to send", "to_send"))
    for name, attr in columns:
        footer = str(sum(getattr(lane, attr) for lane in plan.lanes))
        table.add_column(name, justify="right", footer=footer)
    slowest = plan.slowest
    table.add_column("rate limits", no_wrap=True)
    table.add_column(
        "estimate",
        justify="right",
        footer=_duration_text(slowest.duration_s) if slowest is not None else "no limit",
    )
    for lane in plan.lanes:
        table.add_row(
            lane.provider,
            str(lane.items),
            str(lane.duplicates),
            str(lane.finished),
            str(lane.to_send),
            _limit_text(lane),
            _duration_text(lane.duration_s),
        )
    console.print(table)
    if slowest is not None and slowest.duration_s:
        rate = slowest.rate or 0.0
        console.print(
            f"Estimated time: {_duration_text(slowest.duration_s)}, set by {slowest.provider} "
            f"({slowest.to_send} item{'s' * (slowest.to_send != 1)} at {rate:.3g}/s); "
            "providers run side by side.",
            soft_wrap=True,
        )
    elif sum(lane.to_send for lane in plan.lanes) == 0:
        console.print("Nothing to send: every item is finished.")
    else:
        console.print("The providers left to send to have no rate limit: their answers set the pace.")
    for warning in plan.warnings:
        errors.print(f"[yellow]warning[/yellow]: {escape(warning)}", highlight=False, soft_wrap=True)
    if plan.runnable:
        console.print("Runnable: every row, the configuration and every credential variable checked.")
    else:
        for problem in plan.problems:
            errors.print(f"[red]cannot run[/red]: {escape(problem)}", highlight=False, soft_wrap=True)
        count = len(plan.problems)
        console.print(f"Not runnable: {count} problem{'s' * (count != 1)} (listed on stderr).")
