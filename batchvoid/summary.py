"""The end-of-run summary: one table of providers by state, and what to do next."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from batchvoid.models import ItemState
from batchvoid.run import EXIT_FAILED, EXIT_OK, RunReport

_STYLE = {
    ItemState.VOIDED: "green",
    ItemState.ALREADY_VOID: "green",
    ItemState.FAILED: "red",
    ItemState.SKIPPED: "yellow",
    ItemState.PENDING: "yellow",
    ItemState.IN_FLIGHT: "yellow",
}


def render(report: RunReport, console: Console) -> None:
    """Print the summary table and the next step."""
    job = report.job
    if report.ingest is not None:
        ingest = report.ingest
        console.print(f"Job {job.job_id!r}: {ingest.items} items recorded from {job.job_file}.")
        for dup in ingest.first_duplicates:
            console.print(
                f"  duplicate: line {dup.line} repeats {dup.provider} {dup.invoice_id} "
                f"(line {dup.first_line}); voided once"
            )
        if ingest.duplicates > len(ingest.first_duplicates):
            console.print(f"  ... {ingest.duplicates - len(ingest.first_duplicates)} more duplicate rows")
    else:
        console.print(f"Job {job.job_id!r}: resumed from the ledger.")

    states = [s for s in ItemState if any(state is s for _, state in report.counts)]
    providers = sorted({provider for provider, _ in report.counts})
    table = Table(title=None, show_footer=True)
    table.add_column("provider", footer="total")
    for state in states:
        total = sum(n for (_, s), n in report.counts.items() if s is state)
        table.add_column(state.value, justify="right", style=_STYLE[state], footer=str(total))
    table.add_column("items", justify="right", footer=str(sum(report.counts.values())))
    for provider in providers:
        row = [str(report.counts.get((provider, state), 0)) for state in states]
        row_total = sum(n for (p, _), n in report.counts.items() if p == provider)
        table.add_row(provider, *row, str(row_total))
    console.print(table)
    rate = report.requests / report.elapsed_s if report.elapsed_s > 0 else 0.0
    console.print(
        f"{report.requests} requests in {report.elapsed_s:.1f}s ({rate:.1f}/s). Log: {report.log_file}"
    )
    for reason in report.stopped:
        console.print(f"[red]stopped[/red] {reason}")
    status = report.exit_status
    if status == EXIT_OK:
        console.print("Every item is void.")
    elif status == EXIT_FAILED:
        failed = sum(n for (_, s), n in report.counts.items() if s in (ItemState.FAILED, ItemState.SKIPPED))
        console.print(f"{failed} items failed:" if failed > len(report.failures) else "Failed items:")
        for provider, invoice_id, reason in report.failures:
            console.print(f"  {provider} {invoice_id}: {reason}", highlight=False, markup=False)
        if failed > len(report.failures):
            console.print(f"  ... and {failed - len(report.failures)} more (see {report.log_file})")
    else:
        console.print(f"{report.left()} items are left; run the same command again to send them.")
