"""The `batchvoid` command line."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import anyio
import click
from rich.console import Console

from batchvoid import __version__
from batchvoid.engine import FailureLimits
from batchvoid.errors import BatchVoidError
from batchvoid.run import EXIT_USAGE, RunOptions
from batchvoid.run import run as run_job
from batchvoid.simulator import CREDENTIALS, SimulatorSettings, serve_forever

SIM_ENV_PREFIX = "BATCHVOID_SIM_"


def _simulator_settings(faults: tuple[str, ...], seed: int | None, time_scale: float) -> SimulatorSettings:
    try:
        return SimulatorSettings.from_specs(faults, seed=seed, time_scale=time_scale)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--fault'") from None


def _fail(exc: BatchVoidError) -> None:
    click.echo(f"error: {exc}", err=True)
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batchvoid")
def main() -> None:
    """Void invoices in bulk across billing providers, resumably.

    \b
    Rehearse a job on the built-in simulator (no credentials needed):
      batchvoid run jobs/example.csv --simulate
    Run it for real:
      batchvoid run jobs/march.csv --config config/providers.toml
    """


@main.command()
@click.argument("job_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Provider configuration (TOML). Default: ./batchvoid.toml; built-in with --simulate.",
)
@click.option(
    "--ledger",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("batchvoid.sqlite"),
    show_default=True,
    help="Checkpoint ledger (SQLite). The same file resumes the job.",
)
@click.option("--job-id", default=None, help="Name of the job in the ledger. Default: the job file's name.")
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
@click.option("--max-failures", type=click.IntRange(min=0), default=None,
              help="Stop sending (exit 3, the rest left pending) once more than N items failed.")
@click.option("--max-failure-rate", type=click.FloatRange(0, 1), default=None,
              help="Stop sending once more than this share of finished items failed (judged after 50).")
def run(
    job_file: Path,
    config_path: Path | None,
    ledger: Path,
    job_id: str | None,
    log_file: Path | None,
    simulate: bool,
    faults: tuple[str, ...],
    seed: int | None,
    time_scale: float,
    max_failures: int | None,
    max_failure_rate: float | None,
) -> None:
    """Void every invoice listed in JOB_FILE (CSV or JSONL), resuming where the last run stopped.

    \b
    Exit status: 0 every item is void; 1 some items failed; 2 bad usage, configuration or
    job file (nothing sent); 3 stopped with items left (a provider refused the key or rejected
    item after item, or --max-failures/--max-failure-rate); 4 another run holds the job;
    130 interrupted (SIGINT/SIGTERM): run the same command to resume.

    \b
    Example:
      batchvoid run jobs/example.csv --simulate
    """
    if (faults or seed is not None) and not simulate:
        raise click.UsageError("--fault and --seed only apply with --simulate")
    options = RunOptions(
        job_file=job_file,
        config=config_path,
        ledger=ledger,
        job_id=job_id,
        log_file=log_file,
        simulate=simulate,
        simulator=_simulator_settings(faults, seed, time_scale),
        failure_limits=FailureLimits(max_failures, max_failure_rate),
    )
    try:
        report = anyio.run(run_job, options, backend="asyncio")
    except BatchVoidError as exc:
        _fail(exc)
    from batchvoid.summary import render

    render(report, Console())
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
    """Serve all five providers' void endpoints on one port, for rehearsals and tests.

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

    try:
        anyio.run(partial(serve_forever, host, port, settings, ready=ready), backend="asyncio")
    except KeyboardInterrupt:
        click.echo("Simulator stopped.", err=True)
    except OSError as exc:
        click.echo(f"error: cannot listen on {host}:{port}: {exc.strerror}", err=True)
        sys.exit(EXIT_USAGE)
