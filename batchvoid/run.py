"""One `batchvoid run`: check everything, record the job, run the engine, report.

Every check that can refuse the run (configuration, job file, ledger, credentials) happens
before the first request is sent.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TextIO

import anyio

from batchvoid import config as configuration
from batchvoid import jobfile
from batchvoid.config import Config
from batchvoid.engine import Engine, FailureLimits, Retry
from batchvoid.errors import ConfigError, LedgerError
from batchvoid.ledger import Ingest, Job, Ledger
from batchvoid.lock import RunLock
from batchvoid.logs import default_log_path, open_log
from batchvoid.models import ItemState
from batchvoid.progress import Display, ProgressOptions
from batchvoid.providers import Adapter
from batchvoid.simulator import CREDENTIALS, Simulator, SimulatorSettings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_LOCKED = 4
EXIT_INTERRUPTED = 130
_UNDONE = (ItemState.FAILED, ItemState.SKIPPED)
FAILURES_SHOWN = 10


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What `batchvoid run` was asked to do."""

    job_file: Path
    config: Path | None = None
    ledger: Path = Path("batchvoid.sqlite")
    job_id: str | None = None
    log_file: Path | None = None
    simulate: bool = False
    simulator: SimulatorSettings = field(default_factory=SimulatorSettings)
    retry: Retry = field(default_factory=Retry)
    failure_limits: FailureLimits = field(default_factory=FailureLimits)
    grace_s: float | None = None  # after a first signal; default: the longest request timeout
    retry_failed: bool = False  # put failed and skipped items back to pending first (redrive)
    progress: ProgressOptions = field(default_factory=ProgressOptions)


@dataclass(frozen=True, slots=True)
class RunReport:
    """What a run did, for the summary and the exit status."""

    job: Job
    counts: Mapping[tuple[str, ItemState], int]
    ingest: Ingest | None  # None when the run resumed a job the ledger already had
    requests: int
    elapsed_s: float
    stopped: tuple[str, ...]
    log_file: Path
    failures: tuple[tuple[str, str, str], ...] = ()  # the first few (provider, invoice, reason)
    interrupted: bool = False  # by SIGINT or SIGTERM
    finished: int = 0  # items that reached a final state in this run

    @property
    def exit_status(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.stopped or self.left():
            return EXIT_STOPPED
        if any(state in (ItemState.FAILED, ItemState.SKIPPED) for _, state in self.counts):
            return EXIT_FAILED
        return EXIT_OK

    def left(self) -> int:
        """Items still pending or in flight: the next run sends them."""
        return sum(n for (_, state), n in self.counts.items() if not state.is_final)


def load_config(options: RunOptions) -> Config:
    """The configuration file, or the built-in one when rehearsing on the simulator."""
    if options.config is not None:
        return configuration.load(options.config)
    if options.simulate:
        return configuration.builtin()
    default = Path("batchvoid.toml")
    if default.exists():
        return configuration.load(default)
    raise ConfigError(
        "no configuration: pass --config FILE (start from config/providers.example.toml), "
        "or --simulate to rehearse the job on the built-in simulator"
    )


def simulator_env(config: Config) -> dict[str, str]:
    """Each profile's credential variables, set to the simulator's test credentials."""
    env = {}
    for profile in config.profiles.values():
        for key, var in profile.credential_env.items():
            env[var] = CREDENTIALS[profile.spec.type][key.removesuffix("_env")]
    return env


def prepare(options: RunOptions, config: Config, ledger: Ledger, out: TextIO) -> tuple[Job, Ingest | None]:
    """Find the job in the ledger, or check the job file and record it as a new job."""
    job_id = options.job_id or options.job_file.name
    sha = jobfile.sha256(options.job_file)
    job = ledger.job(job_id)
    ingest = None
    if job is None:
        ingest = ledger.ingest(
            job_id=job_id,
            job_file=str(options.job_file),
            job_sha256=sha,
            config_fingerprint=config.fingerprint(),
            rows=jobfile.read(options.job_file, config.profiles),
        )
        job = ledger.job(job_id)
        assert job is not None
    elif job.job_sha256 != sha:
        raise LedgerError(
            f"{options.job_file} has changed since job {job_id!r} began "
            f"(sha256 {job.job_sha256[:12]}... then, {sha[:12]}... now), so it cannot be resumed. "
            f"To finish the job as it was, restore the file. To void the new file as a new job, "
            f"pass --job-id with a new name (or use another --ledger)."
        )
    else:
        missing = {p for (p, state) in ledger.counts(job) if not state.is_final} - set(config.profiles)
        if missing:
            raise ConfigError(
                f"{config.path}: job {job_id!r} still has items for {', '.join(sorted(missing))}, "
                "which this configuration does not define: add the profile back to finish the job"
            )
        if job.config_fingerprint != config.fingerprint():
            print(
                f"warning: the provider profiles in {config.path} changed since job {job_id!r} began "
                "(names, types, base URLs or accounts); resuming with the new ones",
                file=out,
            )
    return job, ingest


async def run(
    options: RunOptions,
    *,
    out: TextIO | None = None,
    env: Mapping[str, str] | None = None,
    config: Config | None = None,
) -> RunReport:
    """Run a job to the end (or to a safety stop) and report what happened.

    `out` gets the console log lines (default: stderr); `env` holds the credential variables
    (default: the process environment); `config`, when given, is used instead of options.config.
    """
    out = out or sys.stderr
    started = time.monotonic()
    config = config or load_config(options)
    with Ledger(options.ledger) as ledger, RunLock(ledger, options.job_id or options.job_file.name, out=out):
        job, ingest = prepare(options, config, ledger, out)
        redriven = ledger.redrive(job) if options.retry_failed else {}
        counts = ledger.counts(job)
        todo = sorted({provider for (provider, state) in counts if not state.is_final})
        async with AsyncExitStack() as stack:
            if options.simulate:
                base_url = await stack.enter_async_context(_simulator(options.simulator))
                config = config.pointed_at(base_url)
                env = simulator_env(config)
            notices: list[str] = []
            adapters: dict[str, Adapter] = {
                name: config.profiles[name].adapter(os.environ if env is None else env, notices)
                for name in todo
            }
            for notice in notices:
                print(f"warning: {notice}", file=out)
            log_file = options.log_file or default_log_path(options.ledger, job.job_id)
            display = Display(options.progress, out)
            log = stack.enter_context(open_log(log_file, console=display.log_stream, job_id=job.job_id))
            log.info(
                "run.started",
                job_file=str(options.job_file),
                ledger=str(options.ledger),
                items=sum(counts.values()),
                unfinished=sum(n for (_, s), n in counts.items() if not s.is_final),
                simulate=options.simulate,
            )
            if redriven:
                log.info("job.redriven", items=sum(redriven.values()), by_provider=redriven)
            engine = Engine(
                job=job,
                ledger=ledger,
                adapters=adapters,
                profiles=config.profiles,
                log=log,
                retry=options.retry,
                failure_limits=options.failure_limits,
            )
            grace = options.grace_s
            if grace is None:
                grace = max((config.profiles[n].settings.timeout_s for n in todo), default=0) + 1
            ledger.start_run(job)
            try:
                async with display.watching(engine, counts):
                    interrupted = await _run_until_signalled(engine, grace, display.log_stream or out)
            finally:
                ledger.finish_run(job)
            report = RunReport(
                job=job,
                counts=ledger.counts(job),
                ingest=ingest,
                requests=sum(lane.requests for lane in engine.lanes.values()),
                finished=sum(sum(lane.outcomes.values()) for lane in engine.lanes.values()),
                elapsed_s=time.monotonic() - started,
                stopped=tuple(
                    [lane.stopped for lane in engine.lanes.values() if lane.stopped]
                    + ([engine.halted] if engine.halted and not interrupted else [])
                ),
                interrupted=interrupted,
                log_file=log_file,
                failures=tuple(
                    (row["provider"], row["invoice_id"], row["reason"] or "")
                    for row in islice(ledger.items(job, _UNDONE), FAILURES_SHOWN)
                ),
            )
            log.info(
                "run.finished",
                requests=report.requests,
                elapsed_s=round(report.elapsed_s, 3),
                exit_status=report.exit_status,
            )
            return report


async def _run_until_signalled(engine: Engine, grace_s: float, out: TextIO) -> bool:
    """Run the engine; the first SIGINT/SIGTERM drains it, a second (or the grace) cancels it.

    Returns whether a signal came. Cancelled requests leave their items in flight in the
    ledger: the next run resends them with the same idempotency key.
    """
    interrupted = False
    engine_scope = anyio.CancelScope()

    async def watch(signals: AsyncIterator[int]) -> None:
        nonlocal interrupted
        async for signum in signals:
            name = signal.Signals(signum).name
            if not interrupted:
                interrupted = True
                engine_scope.deadline = anyio.current_time() + grace_s
                engine.halt(f"interrupted by {name}")
                print(
                    f"{name}: stopping. Requests in flight may take up to {grace_s:g}s to finish; "
                    "send it again to stop at once. Nothing is lost: run the same command to resume.",
                    file=out,
                    flush=True,
                )
            else:
                engine_scope.cancel()
                print(f"{name} again: stopping now.", file=out, flush=True)

    async with anyio.create_task_group() as tg:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            tg.start_soon(watch, signals)
            with engine_scope:
                await engine.run()
            tg.cancel_scope.cancel()
    return interrupted


@asynccontextmanager
async def _simulator(settings: SimulatorSettings) -> AsyncIterator[str]:
    async with Simulator(settings).serve() as base_url:
        yield base_url
