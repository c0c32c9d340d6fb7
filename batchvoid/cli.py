"""The `batchvoid` command line."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import anyio
import click
from rich.console import Console

from batchvoid import __version__, catalog, locations, plan, report, results
from batchvoid import config as configuration
from batchvoid.consolelog import LEVELS, ConsoleLog, Format
from batchvoid.engine import FailureLimits
from batchvoid.errors import BatchVoidError, ConfigError, LedgerLockedError, RunAborted, RunInterrupted
from batchvoid.ledger import is_url, open_ledger
from batchvoid.locations import DEFAULT_LEDGER, REHEARSAL_LEDGER
from batchvoid.preflight import RunOptions
from batchvoid.progress import MODES, Mode, ProgressOptions
from batchvoid.run import EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_STDOUT_CLOSED, EXIT_STOPPED, EXIT_USAGE
from batchvoid.run import run as run_job
from batchvoid.simulator import CREDENTIALS, SimulatorSettings
from batchvoid.simulator.credentials import oauth_accounts

SIM_ENV_PREFIX = "BATCHVOID_SIM_"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# uvloop is a dependency wherever it builds (POSIX CPython); elsewhere, asyncio's own loop.
UVLOOP = importlib.util.find_spec("uvloop") is not None


def _run_async(main: Callable[..., Any], *args: Any) -> Any:
    """anyio.run on asyncio, with uvloop's event loop where it is installed: the same program, with
    about 15% less CPU per void spent in the loop itself (measured with the bench's overhead run)."""
    return anyio.run(main, *args, backend="asyncio", backend_options={"use_uvloop": UVLOOP})


def _simulator_settings(faults: tuple[str, ...], seed: int | None, time_scale: float) -> SimulatorSettings:
    try:
        return SimulatorSettings.from_specs(faults, seed=seed, time_scale=time_scale)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--fault'") from None


def _exit_status(exc: BatchVoidError) -> int:
    """The exit status that means `exc`."""
    if isinstance(exc, LedgerLockedError):
        return EXIT_LOCKED
    if isinstance(exc, RunInterrupted):
        return EXIT_INTERRUPTED
    if isinstance(exc, RunAborted) and exc.requests:
        return EXIT_STOPPED
    return EXIT_USAGE


class _Console(Console):
    """rich's Console, but a closed stdout is the command layer's to handle (rich would exit 1)."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


def _stdout_closed() -> NoReturn:
    """Stop quietly, as a Unix tool does when what reads its output is gone (`| head -1`).

    What is still buffered goes nowhere, rather than into a second error as Python exits.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(EXIT_STDOUT_CLOSED)


def _fail(exc: BatchVoidError) -> NoReturn:
    """Print the error as one line (no traceback) and exit with the status that means it."""
    click.echo(f"error: {exc}", err=True)
    sys.exit(_exit_status(exc))


class _Commands(click.Group):
    """The command group; no traceback ever reaches the terminal, and Ctrl-C is exit 130."""

    def invoke(self, ctx: click.Context) -> Any:
        # SIGTERM (a shutdown, a `kill`) stops a command as Ctrl-C does, not by the default death;
        # a run replaces both with its own handling while it has a job to drain.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # a signal outside a run's own handling (startup, plan, report)
            click.echo("interrupted: nothing was sent. Run the same command again.", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:  # stdout closed early: `batchvoid report | head`
            _stdout_closed()
        except BatchVoidError as exc:
            _fail(exc)
        except Exception as exc:
            if os.environ.get("BATCHVOID_DEBUG"):
                raise
            click.echo(
                f"error: internal error: {type(exc).__name__}: {exc}. Please report it "
                "(BATCHVOID_DEBUG=1 shows the traceback). A run resumes where it stopped.",
                err=True,
            )
            sys.exit(EXIT_USAGE)


fault_option = click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="SPEC",
    help="Simulator fault, [PROVIDER:]key=value[,key=value]; e.g. 'error_rate=0.1' or "
    "'rapyd:rate_limit=50/1s,retry_after=seconds'. Repeatable.",
)
seed_option = click.option(
    "--seed", type=int, default=None, help="Seed that makes simulator faults repeatable."
)
time_scale_option = click.option(
    "--time-scale",
    type=click.FloatRange(min=0.0001),
    default=1.0,
    show_default=True,
    help="Multiply the simulator's window and hang durations (0.01 runs Rapyd's minute rule in 0.6 s).",
)


class _LedgerParam(click.ParamType):  # type: ignore[type-arg]
    """A ledger location: a `postgresql://` URL stays text, anything else is a file path."""

    name = "FILE|URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        if isinstance(value, Path) or not is_url(value):
            return click.Path(path_type=Path, dir_okay=False).convert(value, param, ctx)
        return str(value)


_LEDGER = _LedgerParam()

ledger_option = click.option(
    "--ledger",
    type=_LEDGER,
    default=None,
    help="Checkpoint ledger the runs wrote: a SQLite file, or a postgresql:// URL. "
    f"Default: ${locations.LEDGER_ENV}, else {DEFAULT_LEDGER}; a rehearsal's is {REHEARSAL_LEDGER}.",
)


def job_arguments(command: Callable[..., None]) -> Callable[..., None]:
    """JOB_FILE and the options that name a job: --config, --ledger, --job-id (run and plan)."""
    for decorator in reversed(
        (
            click.argument("job_file", type=click.Path(path_type=Path, dir_okay=False)),
            click.option(
                "--config",
                "config_path",
                type=click.Path(path_type=Path, dir_okay=False),
                default=None,
                help=f"Provider configuration (TOML). Default: ${locations.CONFIG_ENV}, else the first "
                "of ./batchvoid.toml, the user's and the system's configuration directory "
                "(see `batchvoid config check`); with --simulate and none found, a built-in one.",
            ),
            click.option(
                "--ledger",
                type=_LEDGER,
                default=None,
                help=f"Checkpoint ledger: a SQLite file, or a postgresql:// URL that many workers share. "
                "The same ledger resumes the job. Default: "
                f"${locations.LEDGER_ENV}, else {DEFAULT_LEDGER}; with --simulate, {REHEARSAL_LEDGER} "
                f"(or NAME.rehearsal.sqlite next to ${locations.LEDGER_ENV}: a rehearsal keeps its own).",
            ),
            click.option(
                "--job-id", default=None, help="Name of the job in the ledger. Default: the job file's name."
            ),
            click.option(
                "--allow-target-change",
                is_flag=True,
                help="Resume although a profile's base URL or account changed since items were sent "
                "(the same account at a new address). Otherwise that is refused.",
            ),
        )
    ):
        command = decorator(command)
    return command


def _ledger(ledger: Path | str | None, simulate: bool) -> Path | str:
    return locations.ledger_path(ledger, os.environ, simulate=simulate)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batchvoid")
def main() -> None:
    """Void invoices in bulk across billing providers, resumably.

    \b
    Rehearse a job on the built-in simulator (no credentials needed):
      batchvoid run jobs/example.csv --simulate
    Write a configuration to start from, edit it, then check it:
      batchvoid config init
      batchvoid config check
    Check a real job without sending anything, then run it:
      batchvoid plan jobs/march.csv --config batchvoid.toml
      batchvoid run jobs/march.csv --config batchvoid.toml
    Afterwards: what happened, which items failed, send them again:
      batchvoid status --job-id march.csv
      batchvoid report --job-id march.csv --state failed -o failed.csv
      batchvoid run jobs/march.csv --config batchvoid.toml --retry-failed

    \b
    Exit status of run: 0 all void; 1 some failed; 2 refused, nothing sent; 3 stopped with
    items left; 4 another run holds the job; 130 interrupted. See `batchvoid run --help`.
    """


@main.command()
@job_arguments
@click.option(
    "--log-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="JSON-lines log. Default: next to the ledger, named after the job.",
)
@click.option(
    "--simulate",
    is_flag=True,
    help="Start the provider simulator in-process and run the job against it with its test "
    "credentials: a rehearsal, nothing leaves this machine.",
)
@fault_option
@seed_option
@time_scale_option
@click.option(
    "--max-workers",
    type=click.IntRange(min=1),
    default=None,
    help="With a postgresql:// ledger: join the job only while it has fewer than N live workers "
    "(exit 4 otherwise). Default: any number. A SQLite ledger always takes one run per job.",
)
@click.option(
    "--max-failures",
    type=click.IntRange(min=0),
    default=None,
    help="Stop sending (exit 3, the rest left pending) once more than N items failed.",
)
@click.option(
    "--max-failure-rate",
    type=click.FloatRange(0, 1),
    default=None,
    help="Stop sending once more than this share of finished items failed (judged after 50).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check everything and print the plan, as `batchvoid plan` does; send nothing.",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Redrive: first put the job's failed items back to pending, to send them "
    "again with their own idempotency keys.",
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="Show only the final summary: no progress, and on stderr only the start and end lines "
    "(times, exit status) and the errors and warnings about the run itself (a long pause, a "
    "stopped provider, a signal).",
)
@click.option(
    "--progress",
    "progress_mode",
    type=click.Choice(MODES),
    default=None,
    help="How progress shows on stderr: bars (a terminal's), plain lines, or none; auto: bars "
    "on a terminal, else plain lines.  [default: auto; none with --quiet]",
)
@click.option(
    "--progress-interval",
    type=click.FloatRange(min=0.01),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Between plain progress lines (cron, CI, a pipe).",
)
@click.option(
    "--log-level",
    type=click.Choice(tuple(LEVELS)),
    default="info",
    show_default=True,
    help="Which log lines show on stderr: debug shows every event the log file gets, each "
    "item's too; info the run's own events and its warnings (single items' for the first few "
    "only); warning or error only those. The log file always gets every event.",
)
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default="console",
    show_default=True,
    help="The log lines on stderr: for a person, or as the log file's JSON lines (for a log pipeline).",
)
@click.option(
    "--yes",
    "-y",
    "assume_yes",
    is_flag=True,
    help="Do not ask for confirmation on a terminal (a real run asks there first; off a "
    "terminal it never asks).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="A canary: send at most N items in this run, then stop (exit 3, the rest left pending).",
)
@click.option(
    "--provider",
    "providers",
    multiple=True,
    metavar="NAME",
    help="Send only to this profile's items (repeatable); the others stay pending (exit 3).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the end-of-run summary as JSON (with a schema_version) instead of the table.",
)
@click.option(
    "--summary-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the end-of-run summary as JSON to this file.",
)
@click.option(
    "--metrics-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the run's metrics in Prometheus text format to this file, atomically (for "
    "node_exporter's textfile collector: name it *.prom in its directory); also when the run "
    "is refused.",
)
def run(
    job_file: Path,
    config_path: Path | None,
    ledger: Path | str | None,
    job_id: str | None,
    allow_target_change: bool,
    log_file: Path | None,
    simulate: bool,
    faults: tuple[str, ...],
    seed: int | None,
    time_scale: float,
    max_workers: int | None,
    max_failures: int | None,
    max_failure_rate: float | None,
    dry_run: bool,
    retry_failed: bool,
    quiet: bool,
    progress_mode: Mode | None,
    progress_interval: float,
    log_level: str,
    log_format: Format,
    assume_yes: bool,
    limit: int | None,
    providers: tuple[str, ...],
    as_json: bool,
    summary_file: Path | None,
    metrics_file: Path | None,
) -> None:
    """Void every invoice listed in JOB_FILE (CSV or JSONL), resuming where the last run stopped.

    \b
    Exit status: 0 every item is void; 1 some items failed at a provider; 2 refused before
    anything was sent (usage, configuration, job file, credential, ledger or log file, or not
    confirmed); 3 stopped with items left (--limit or --provider, a provider refused the key,
    rejected item after item or throttled past the pause limits,
    --max-failures/--max-failure-rate, or a fault such as a full disk);
    4 another run holds the job (SQLite), or --max-workers live workers do (PostgreSQL);
    130 interrupted (SIGINT/SIGTERM): run the same command to resume. A rehearsal (--simulate)
    keeps its own ledger, rehearsal.sqlite.

    \b
    Examples:
      batchvoid run jobs/example.csv --simulate
      batchvoid run jobs/march.csv --config batchvoid.toml --dry-run
      batchvoid run jobs/march.csv --config batchvoid.toml --retry-failed --quiet
      batchvoid run jobs/march.csv --config batchvoid.toml --limit 20
      batchvoid run jobs/march.csv --config batchvoid.toml --yes --metrics-file m.prom
    """
    if (faults or seed is not None) and not simulate:
        raise click.UsageError("--fault and --seed only apply with --simulate")
    options = RunOptions(
        job_file=job_file,
        config=config_path,
        ledger=_ledger(ledger, simulate),
        job_id=job_id,
        log_file=log_file,
        simulate=simulate,
        simulator=_simulator_settings(faults, seed, time_scale),
        failure_limits=FailureLimits(max_failures, max_failure_rate),
        retry_failed=retry_failed,
        allow_target_change=allow_target_change,
        progress=ProgressOptions(
            progress_mode or ("none" if quiet else "auto"), interval_s=progress_interval
        ),
        console=ConsoleLog(log_level, log_format, quiet=quiet),
        command=("batchvoid", *sys.argv[1:]),
        limit=limit,
        providers=providers,
        max_workers=max_workers,
    )
    if dry_run:
        _show_plan(options)
    for option, path in (("--summary-file", summary_file), ("--metrics-file", metrics_file)):
        if path is not None and (problem := results.writable_problem(path)):
            raise click.BadParameter(f"{path}: {problem}", param_hint=f"'{option}'")
    if not (simulate or assume_yes) and sys.stdin.isatty():
        from batchvoid import confirm

        try:
            answer = confirm.ask(options, sys.stdin, sys.stderr, retry_failed=retry_failed)
        except BatchVoidError as exc:
            _fail(exc)
        if answer is None:
            sys.exit(EXIT_USAGE)
        if not answer:
            click.echo(
                "Not confirmed: nothing was sent. Run the same command again to be asked again.", err=True
            )
            sys.exit(EXIT_USAGE)
    try:
        report = _run_async(run_job, options)
    except BatchVoidError as exc:
        if metrics_file is not None:  # a refused or aborted run is what monitoring must see
            text = results.metrics_text(options.job_name, _exit_status(exc))
            try:
                results.write_atomically(metrics_file, text, "metrics file")
            except BatchVoidError as also:
                click.echo(f"error: {also}", err=True)
        _fail(exc)
    from batchvoid.summary import render

    summary = results.summary_json(report, ledger=options.ledger)
    try:
        if as_json:
            click.echo(results.summary_text(summary), nl=False)
        else:
            render(report, _Console(), ledger=options.ledger)
    except BrokenPipeError:  # the summary has no reader; the exit status still says how the run went
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    try:
        if summary_file is not None:
            results.write_atomically(summary_file, results.summary_text(summary), "summary file")
        if metrics_file is not None:
            text = results.metrics_text(options.job_name, report.exit_status, report=report)
            results.write_atomically(metrics_file, text, "metrics file")
    except BatchVoidError as exc:
        click.echo(f"error: {exc}; the run itself is recorded in the ledger", err=True)
        sys.exit(EXIT_STOPPED)
    sys.exit(report.exit_status)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8089,
    show_default=True,
    help="Port (0: any free one).",
)
@fault_option
@seed_option
@time_scale_option
def simulate(host: str, port: int, faults: tuple[str, ...], seed: int | None, time_scale: float) -> None:
    """Serve every provider's endpoints on one port, for rehearsals and tests.

    \b
    Use it with config/simulator.toml, after exporting the test credentials it prints:
      batchvoid simulate --port 8089
      batchvoid run jobs/example.csv --config config/simulator.toml
    Stats: GET /_sim/stats. Stop with Ctrl-C.
    """
    settings = _simulator_settings(faults, seed, time_scale)

    def ready(base_url: str) -> None:
        click.echo(f"Simulator listening on {base_url}", err=True)
        click.echo("Test credentials for config/simulator.toml (they work only here):", err=True)
        for spec_type, roles in CREDENTIALS.items():
            for role, value in roles.items():
                click.echo(f"export {SIM_ENV_PREFIX}{spec_type.upper()}_{role.upper()}={value}")
        for line in oauth_accounts(base_url):
            click.echo(line, err=True)

    try:
        from batchvoid.simulator.server import serve_forever

        _run_async(partial(serve_forever, host, port, settings, ready=ready, until=STOP_SIGNALS))
    except KeyboardInterrupt:  # a signal before the loop took them over
        pass
    except OSError as exc:
        click.echo(f"error: cannot listen on {host}:{port}: {exc.strerror}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo("Simulator stopped.", err=True)


# -- operator commands: plan, status, report, providers -----------------------------------

JSONL = (".jsonl", ".ndjson")


def _show_plan(options: RunOptions, *, retry_failed: bool | None = None, as_json: bool = False) -> NoReturn:
    retry = options.retry_failed if retry_failed is None else retry_failed
    try:
        checked = plan.make(options, os.environ, retry_failed=retry)
    except BatchVoidError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(plan.as_json(checked), indent=2))
    else:
        plan.render(checked, _Console(), _Console(stderr=True))
    sys.exit(0 if checked.runnable else EXIT_USAGE)


@main.command(name="plan")
@job_arguments
@click.option("--simulate", is_flag=True, help="Plan a rehearsal on the simulator (its test credentials).")
@click.option("--retry-failed", is_flag=True, help="Count the failed items as to be sent again.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the plan as JSON (with a schema_version), problems included.",
)
def plan_command(
    job_file: Path,
    config_path: Path | None,
    ledger: Path | str | None,
    job_id: str | None,
    allow_target_change: bool,
    simulate: bool,
    retry_failed: bool,
    as_json: bool,
) -> None:
    """Check a job and show what a run would do, without sending anything.

    Reads every row of JOB_FILE, the configuration and the ledger, checks that every
    credential variable the job's providers need is set (never printing it), and prints per
    provider the items, duplicate rows, items already finished, and the time the rest take
    at the configured rate limits (the slowest provider sets the total). Writes nothing.

    \b
    Exit status: 0 the job can run; 2 it cannot (bad rows, configuration, a missing
    credential variable, a job file changed since the job began, a rehearsal's job planned as
    a real run or a profile whose target changed, a ledger that cannot be used).

    \b
    Examples:
      batchvoid plan jobs/example.csv --simulate
      batchvoid plan jobs/march.csv --config batchvoid.toml
    """
    options = RunOptions(
        job_file=job_file,
        config=config_path,
        ledger=_ledger(ledger, simulate),
        job_id=job_id,
        simulate=simulate,
        allow_target_change=allow_target_change,
    )
    _show_plan(options, retry_failed=retry_failed, as_json=as_json)


@main.command()
@ledger_option
@click.option("--job-id", default=None, help="Show this job in detail. Default: list every job.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts and monitoring.")
def status(ledger: Path | str | None, job_id: str | None, as_json: bool) -> None:
    """Show the jobs in a ledger, or one job: its counts, runs, attempts and top failure reasons.

    Reads the ledger read-only, so it is safe while a run is going.

    \b
    Examples:
      batchvoid status
      batchvoid status --job-id example.csv
      batchvoid status --ledger month-end.sqlite --job-id march --json
    """
    ledger = _ledger(ledger, simulate=False)
    try:
        with open_ledger(ledger, readonly=True) as book:
            if as_json:
                click.echo(json.dumps(report.status_json(book, job_id), indent=2))
            elif job_id is None:
                report.render_jobs(book, _Console())
            else:
                report.render_job(report.JobStatus.read(book, report.pick_job(book, job_id)), _Console())
    except BatchVoidError as exc:
        _fail(exc)


@main.command(name="report")
@ledger_option
@click.option("--job-id", default=None, help="The job to report on. Default: the ledger's only job.")
@click.option(
    "--state",
    "states",
    type=click.Choice(report.STATE_CHOICES),
    multiple=True,
    help="Only items in this state (repeatable; pending includes in flight). Default: all.",
)
@click.option(
    "--run",
    "run_id",
    default=None,
    metavar="RUN_ID",
    help="Only items whose last outcome this run recorded (`batchvoid status --job-id JOB` lists the runs).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl", "html"]),
    default=None,
    help="Default: jsonl when -o ends in .jsonl or .ndjson, html for .html or .htm, csv otherwise. "
    "html is one self-contained page: the job, its runs, a chart, the failure reasons, the items.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write to this file instead of stdout.",
)
def report_command(
    ledger: Path | str | None,
    job_id: str | None,
    states: tuple[str, ...],
    run_id: str | None,
    fmt: str | None,
    output: Path | None,
) -> None:
    """Write one row per item: state, reason, HTTP status, attempts, keys, times, metadata.

    Columns: provider, invoice_id, void_date, company_id, store, state, reason, http_status,
    attempts, reference, idempotency_key, line, created_at, updated_at, then the item's own
    metadata columns from the job file (one that clashes with these is written as meta.NAME).
    JSONL keeps the metadata as an object. A CSV report is itself a job file: voiding the
    failed items again as a new job (with new idempotency keys) is two commands.

    \b
    Examples:
      batchvoid report --state failed -o failed.csv
      batchvoid run failed.csv --config batchvoid.toml
      batchvoid report --job-id march --format jsonl | jq -c 'select(.http_status == 404)'
    """
    suffix = "" if output is None else output.suffix.lower()
    by_suffix = "jsonl" if suffix in JSONL else "html" if suffix in (".html", ".htm") else "csv"
    chosen: report.Format = fmt or by_suffix  # type: ignore[assignment]
    ledger = _ledger(ledger, simulate=False)
    try:
        with open_ledger(ledger, readonly=True) as book:
            job = report.pick_job(book, job_id)
            selected = report.states_for(states)
            run = report.pick_run(book, job, run_id)
            if output is None:
                report.write_report(book, job, selected, chosen, sys.stdout, run)
                return
            try:
                with output.open("w", encoding="utf-8", newline="") as f:
                    written = report.write_report(book, job, selected, chosen, f, run)
            except OSError as exc:
                raise click.FileError(str(output), exc.strerror) from None
    except BatchVoidError as exc:
        _fail(exc)
    which = ("+".join(states) if states else "all") + (f", run {run_id}" if run_id else "")
    click.echo(f"{written} items ({which}) of job {job.job_id!r} written to {output}", err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def providers(as_json: bool) -> None:
    """List the provider types: config keys, credential variables, documented limits.

    \b
    Examples:
      batchvoid providers
      batchvoid providers --json | jq '.providers[].type'
    """
    if as_json:
        click.echo(json.dumps(catalog.catalog(), indent=2))
    else:
        click.echo(catalog.text())


# -- configuration: init, check -------------------------------------------------------------


@main.group(name="config")
def config_group() -> None:
    """Write a starting configuration, or check one and see which file batchvoid reads.

    \b
    batchvoid reads the first of: --config FILE; the file $BATCHVOID_CONFIG names;
    ./batchvoid.toml; batchvoid.toml in the user's configuration directory
    (~/.config/batchvoid on Linux); /etc/batchvoid/batchvoid.toml.
    """


@config_group.command(name="init")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False), default=locations.CONFIG_NAME)
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
def config_init(path: Path, force: bool) -> None:
    """Write the commented example configuration to PATH (default ./batchvoid.toml), to edit.

    It has every provider type at its documented limits and says what each key means. An
    existing file is never replaced without --force.

    \b
    Examples:
      batchvoid config init
      batchvoid config init ~/.config/batchvoid/batchvoid.toml
    """
    configuration.write_example(path, force=force)
    again = "" if path == Path(locations.CONFIG_NAME) else f" --config {shlex.quote(str(path))}"
    click.echo(
        f"Wrote {path}: every provider type, commented. Edit the base URLs, accounts, limits and where "
        f"each credential comes from, delete the providers you do not use, then check it: "
        f"batchvoid config check{again}"
    )


@config_group.command(name="check")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="The file to check. Default: the one run and plan would read.",
)
def config_check(config_path: Path | None) -> None:
    """Check a configuration file and say which one batchvoid reads, and where it looked.

    Checks every table and key as run does; reads no credential (plan does that, for the
    profiles a job uses). Exit status: 0 valid; 2 not valid, or no file found.

    \b
    Examples:
      batchvoid config check
      batchvoid config check --config /etc/batchvoid/batchvoid.toml
    """
    found = locations.find_config(config_path, os.environ)
    if found.path is None:
        raise ConfigError(f"no configuration file found: {locations.not_found(found)}")
    checked = configuration.load(found.path)
    click.echo(f"Configuration: {found.describe()}")
    click.echo(f"Valid: {len(checked.profiles)} provider profile{'s' * (len(checked.profiles) != 1)}.")
    width = max(map(len, checked.profiles))
    for name, profile in checked.profiles.items():
        sources = ", ".join(f"{c.key} {c.label}" for c in profile.credentials.values())
        if profile.oauth is not None:
            sources += f", refresh_token_file {profile.oauth.refresh_token_file}"
        click.echo(f"  {name:<{width}}  {profile.spec.type} at {profile.base_url}; {sources}")
    click.echo("Credentials are not read here: `batchvoid plan JOB_FILE` checks those a job needs.")
