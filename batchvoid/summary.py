"""The end-of-run summary: one table of providers by state, how fast, and what to do next."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from batchvoid.ledger.location import shown
from batchvoid.locations import DEFAULT_LEDGER
from batchvoid.models import UNDONE, ItemState
from batchvoid.progress import format_duration
from batchvoid.run import RunReport

_STYLE = {
    ItemState.VOIDED: "green",
    ItemState.ALREADY_VOID: "green",
    ItemState.FAILED: "red",
    ItemState.PENDING: "yellow",
    ItemState.IN_FLIGHT: "yellow",
}


def counts_table(counts: Mapping[tuple[str, ItemState], int]) -> Table:
    """Providers by state, with totals: the states that occur, in their natural order."""
    states = [s for s in ItemState if any(state is s for _, state in counts)]
    providers = sorted({provider for provider, _ in counts})
    table = Table(show_footer=True)
    table.add_column("provider", footer="total")
    for state in states:
        total = sum(n for (_, s), n in counts.items() if s is state)
        table.add_column(state.value, justify="right", style=_STYLE[state], footer=str(total))
    table.add_column("items", justify="right", footer=str(sum(counts.values())))
    for provider in providers:
        row = [str(counts.get((provider, state), 0)) for state in states]
        row_total = sum(n for (p, _), n in counts.items() if p == provider)
        table.add_row(provider, *row, str(row_total))
    return table


def _took(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else format_duration(seconds)


def job_options(ledger: Path | str, job_id: str, job_file: str) -> str:
    """The --ledger and --job-id options that name this job, when they are not the defaults."""
    options = []
    if ledger != DEFAULT_LEDGER:
        options += ["--ledger", shown(ledger)]
    if job_id != Path(job_file).name:
        options += ["--job-id", job_id]
    return "".join(f" {shlex.quote(option)}" for option in options)


def render(report: RunReport, console: Console, *, ledger: Path | str = DEFAULT_LEDGER) -> None:
    """Print the summary table, the time and rate, and the next command when something is left."""
    job = report.job
    if report.ingest is not None:
        ingest = report.ingest
        console.print(f"Job {job.job_id!r}: {ingest.items} items recorded from {job.job_file}.", markup=False)
        for dup in ingest.first_duplicates:
            console.print(
                f"  duplicate: line {dup.line} repeats {dup.provider} {dup.invoice_id} "
                f"(line {dup.first_line}); voided once",
                markup=False,
            )
        if ingest.duplicates > len(ingest.first_duplicates):
            console.print(f"  ... {ingest.duplicates - len(ingest.first_duplicates)} more duplicate rows")
    else:
        console.print(f"Job {job.job_id!r}: resumed from the ledger.", markup=False)

    console.print(counts_table(report.counts))
    rate = report.finished / report.elapsed_s if report.elapsed_s > 0 else 0.0
    console.print(
        f"{report.finished} items finished in {_took(report.elapsed_s)} ({rate:.1f}/s), "
        f"{report.requests} requests. Log: {report.log_file}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    for reason in report.stopped:
        console.print(f"[red]stopped[/red] {escape(reason)}", highlight=False, soft_wrap=True)

    failed = sum(n for (_, s), n in report.counts.items() if s in UNDONE)
    left = report.left()
    if not failed and not left:
        console.print("Every item is void. Nothing left to do.")
        return
    if failed:
        console.print(f"{failed} items failed:" if failed > len(report.failures) else "Failed items:")
        for provider, invoice_id, reason in report.failures:
            line = f"  {provider} {invoice_id}: {reason}"
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        if failed > len(report.failures):
            console.print(
                f"  ... and {failed - len(report.failures)} more. Failed items by reason:", markup=False
            )
            width = max(len(str(n)) for _, _, n in report.reasons)
            for provider, reason, n in report.reasons:
                line = f"  {n:>{width}}  {provider}: {reason or '(no reason)'}"
                console.print(line, highlight=False, markup=False, soft_wrap=True)
            counted = sum(n for _, _, n in report.reasons)
            if failed > counted:
                console.print(f"  {failed - counted:>{width}}  for other reasons", highlight=False)
    console.print("Next:", style="bold")
    if left:
        why = "fix what stopped it (above), then " if report.stopped else ""
        console.print(
            f"  {left} items are left: {why}run the same command again to send them.",
            highlight=False,
            soft_wrap=True,
        )
    if failed:
        where = job_options(ledger, job.job_id, job.job_file)
        console.print(
            f"  list every failed item: batchvoid report{where} --state failed -o failed.csv\n"
            "  send the failed items again, once their cause is fixed: "
            "the same command with --retry-failed",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
