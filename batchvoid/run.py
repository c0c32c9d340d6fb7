"""One `batchvoid run`: check everything, record the job, run the engine, report.

Every check that can refuse the run (configuration, job file, ledger, credentials) happens
before the first request is sent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, TextIO, TypeVar

import anyio

from batchvoid import config as configuration
from batchvoid import jobfile
from batchvoid.config import Config, Profile
from batchvoid.engine import Engine, FailureLimits, Retry
from batchvoid.errors import (
    BatchVoidError,
    ConfigError,
    LedgerError,
    LogFileError,
    RunAborted,
    RunInterrupted,
)
from batchvoid.ledger import Ingest, Job, Ledger
from batchvoid.lock import RunLock
from batchvoid.logs import default_log_path, open_log
from batchvoid.models import UNDONE, ItemState
from batchvoid.network import Route, route, tls_context
from batchvoid.progress import Display, ProgressOptions
from batchvoid.providers import Adapter
from batchvoid.simulator import CREDENTIALS, Simulator, SimulatorSettings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_LOCKED = 4
EXIT_INTERRUPTED = 130
FAILURES_SHOWN = 10
DEFAULT_LEDGER = Path("batchvoid.sqlite")
REHEARSAL_LEDGER = Path("rehearsal.sqlite")  # --simulate's own: a rehearsal never shares a real run's
_CANCEL_EVERY = 1000  # rows between checks for a signal while recording a job file


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What `batchvoid run` was asked to do."""

    job_file: Path
    config: Path | None = None
    ledger: Path = DEFAULT_LEDGER
    job_id: str | None = None
    log_file: Path | None = None
    simulate: bool = False
    simulator: SimulatorSettings = field(default_factory=SimulatorSettings)
    retry: Retry = field(default_factory=Retry)
    failure_limits: FailureLimits = field(default_factory=FailureLimits)
    grace_s: float | None = None  # after a first signal; default: the longest request timeout
    retry_failed: bool = False  # put failed items back to pending first (redrive)
    allow_target_change: bool = False  # resume although a profile's base URL or account changed
    progress: ProgressOptions = field(default_factory=ProgressOptions)

    @property
    def job_name(self) -> str:
        """The job's name in the ledger: --job-id, or the job file's name."""
        return self.job_id or self.job_file.name


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
        if any(state in UNDONE for _, state in self.counts):
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


def routes(config: Config, names: Iterable[str], env: Mapping[str, str] | None = None) -> dict[str, Route]:
    """How each named profile's requests travel: proxy from `env` (default: the process's), TLS trust.

    Raises ConfigError for a proxy variable or a ca_bundle that cannot be used.
    """
    contexts: dict[str | None, ssl.SSLContext] = {}  # one TLS context per CA bundle: loading one takes ms
    chosen = {}
    for name in names:
        profile = config.profiles[name]
        tls = None
        if profile.base_url.startswith("https://"):
            if profile.ca_bundle not in contexts:
                contexts[profile.ca_bundle] = tls_context(profile.ca_bundle, profile.source)
            tls = contexts[profile.ca_bundle]
        chosen[name] = route(profile.base_url, tls=tls, env=env)
    return chosen


_NOT_ACCOUNT = frozenset({"void_date", "timezone"})  # options that say how to void, not where


def targets(config: Config) -> dict[str, str]:
    """Where each profile of `config` sends (see `target`)."""
    return {name: target(profile) for name, profile in config.profiles.items()}


def target(profile: Profile) -> str:
    """Where a profile sends: its type, base URL and account, as the ledger records it."""
    account = "".join(
        f", {key} {value}" for key, value in sorted(profile.options.items()) if key not in _NOT_ACCOUNT
    )
    return f"{profile.spec.type} at {profile.base_url}{account}"


def prepare(
    options: RunOptions,
    config: Config,
    ledger: Ledger,
    out: TextIO,
    cancelled: threading.Event | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[Job, Ingest | None]:
    """Find the job in the ledger, or check the job file and record it as a new job.

    Refuses to resume a job whose file changed, a rehearsal's job in a real run (or the other
    way round), and a profile that now sends elsewhere than where its items went. `cancelled`
    (set by a signal) stops the recording of a new job, which then leaves nothing behind.
    """
    job_id = options.job_name
    sha = jobfile.sha256(options.job_file)
    job = ledger.job(job_id)
    sends_to = targets(config)
    ingest = None
    if job is None:
        rows: Iterable[Any] = jobfile.read(options.job_file, config.profiles)
        ingest = ledger.ingest(
            job_id=job_id,
            job_file=str(options.job_file),
            job_sha256=sha,
            config_fingerprint=config.fingerprint(),
            rows=rows if cancelled is None else _until(cancelled, rows),
            simulated=options.simulate,
            targets=sends_to,
            accept=None if env is None else partial(_credentials_set, config, env),
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
        _check_history(options, config, ledger, job, sends_to, out)
    return job, ingest


def _credentials_set(config: Config, env: Mapping[str, str], providers: set[str]) -> None:
    """Raise ConfigError if a profile the job uses lacks a usable credential or proxy variable."""
    for name in sorted(providers):
        config.profiles[name].secrets(env)
    routes(config, sorted(providers))


def _check_history(
    options: RunOptions, config: Config, ledger: Ledger, job: Job, targets: Mapping[str, str], out: TextIO
) -> None:
    """Refuse to resume a job whose recorded outcomes belong to another kind of run or target."""
    where = f"job {job.job_id!r} in {ledger.path}"
    if job.simulated == 1 and not options.simulate:
        raise LedgerError(
            f"{where} is a rehearsal: its items went to the simulator (--simulate), so its outcomes "
            "say nothing about the real providers, and a real run cannot resume it. Nothing was sent. "
            f"Run the real job with its own ledger (the default {DEFAULT_LEDGER}, or --ledger FILE) "
            "or under a new --job-id"
        )
    if job.simulated == 0 and options.simulate:
        raise LedgerError(
            f"{where} is a real run's: a rehearsal would record the simulator's answers as its "
            f"outcomes. Nothing was sent. Rehearse with a ledger of its own (--ledger {REHEARSAL_LEDGER}, "
            "the default with --simulate)"
        )
    recorded = ledger.targets(job)
    if not recorded:  # recorded before targets were: the profiles' fingerprint is what there is
        if job.config_fingerprint != config.fingerprint():
            print(
                f"warning: the provider profiles in {config.path} changed since job {job.job_id!r} began "
                "(names, types, base URLs or accounts); resuming with the new ones",
                file=out,
            )
        return
    for profile in sorted(ledger.touched(job)):
        old, new = recorded.get(profile), targets.get(profile)
        if old is None or new is None or old == new:
            continue
        if options.allow_target_change:
            print(
                f"warning: profile {profile!r} of {where} sent to {old}; it now sends to {new} "
                "(--allow-target-change): its recorded outcomes are kept",
                file=out,
            )
            continue
        raise LedgerError(
            f"profile {profile!r} of {where} now sends to {new}, but items of the job were sent to "
            f"{old}. Their outcomes say nothing about the new target, so the run is refused; nothing "
            "was sent. To void the job at the new target, run it as a new job (--job-id NEW_NAME). If "
            "it is the same account at a new address, pass --allow-target-change to keep the outcomes"
        )


T = TypeVar("T")


def _until(cancelled: threading.Event, rows: Iterable[T]) -> Iterator[T]:
    """The rows, until `cancelled` is set: then RunInterrupted, which rolls the ingest back."""
    for n, row in enumerate(rows):
        if n % _CANCEL_EVERY == 0 and cancelled.is_set():
            raise RunInterrupted("the job was being recorded")
        yield row


class _Signals:
    """What SIGINT and SIGTERM ask of a run, at every stage of it.

    While the job is being recorded, the first signal stops the ingest (which rolls back).
    Once the engine runs, the first drains it (requests in flight finish, up to the grace) and
    a second cancels it; cancelled requests leave their items in flight in the ledger, and the
    next run resends them with the same idempotency key.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.received: str | None = None  # the first signal's name
        self.cancelled = threading.Event()  # seen by the ingest thread
        self._engine: Engine | None = None
        self._scope: anyio.CancelScope | None = None
        self._grace_s = 0.0

    def attach(self, engine: Engine, scope: anyio.CancelScope, grace_s: float, out: TextIO) -> None:
        self._engine, self._scope, self._grace_s, self.out = engine, scope, grace_s, out

    async def watch(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if self.received is None:
                self.received = name
                self.cancelled.set()
                if self._engine is not None and self._scope is not None:
                    self._scope.deadline = anyio.current_time() + self._grace_s
                    self._engine.halt(f"interrupted by {name}")
                    self._say(
                        f"{name}: stopping. Requests in flight may take up to {self._grace_s:g}s to "
                        "finish; send it again to stop at once. Nothing is lost: run the same command "
                        "to resume."
                    )
                else:
                    self._say(f"{name}: stopping.")
            elif self._scope is not None:
                self._scope.cancel()
                self._say(f"{name} again: stopping now.")

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


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

    Raises the BatchVoidError that refused the run (nothing sent), RunInterrupted for a signal
    before the first request, and RunAborted when a fault stopped a run that had begun.
    """
    out = out or sys.stderr
    signals = _Signals(out)
    error: Exception | None = None
    async with anyio.create_task_group() as tg:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            tg.start_soon(signals.watch, received)
            try:
                report = await _run(options, config or load_config(options), env, out, signals)
            except Exception as exc:  # raised outside the task group, so not wrapped in a group
                error = exc
            finally:
                tg.cancel_scope.cancel()
    if error is not None:
        raise error
    return report


async def _run(
    options: RunOptions, config: Config, env: Mapping[str, str] | None, out: TextIO, signals: _Signals
) -> RunReport:
    """Own the run's files (ledger, lock, log) and turn any fault into one error line."""
    log_file = options.log_file or default_log_path(options.ledger, options.job_name)
    display = Display(options.progress, out)
    sent = _Sent()
    try:
        with (
            Ledger(options.ledger) as ledger,
            RunLock(ledger, options.job_name, out=out),
            open_log(log_file, console=display.log_stream, job_id=options.job_name) as log,
        ):
            try:
                return await _run_job(
                    options, config, env, out, signals, ledger, log, log_file, display, sent
                )
            except BatchVoidError:
                raise
            except Exception as exc:  # a bug: one line on the terminal, the traceback in the log
                raise _aborted(exc, log, log_file, sent.requests) from exc
    except LogFileError as exc:  # the log's last write, on closing it, failed after requests went out
        if not sent.requests:
            raise
        raise RunAborted(str(exc), requests=sent.requests) from exc


@dataclass(slots=True)
class _Sent:
    """The engine, once there is one: how many requests the run sent, for a fault's exit status."""

    engine: Engine | None = None

    @property
    def requests(self) -> int:
        return 0 if self.engine is None else sum(lane.requests for lane in self.engine.lanes.values())


async def _run_job(
    options: RunOptions,
    config: Config,
    env: Mapping[str, str] | None,
    out: TextIO,
    signals: _Signals,
    ledger: Ledger,
    log: Any,
    log_file: Path,
    display: Display,
    sent: _Sent,
) -> RunReport:
    started = time.monotonic()
    try:
        job, ingest = await anyio.to_thread.run_sync(
            partial(
                prepare,
                options,
                config,
                ledger,
                out,
                signals.cancelled,
                None if options.simulate else os.environ if env is None else env,
            )
        )
    except RunInterrupted:
        raise RunInterrupted(
            f"interrupted by {signals.received} while the job file was being recorded: nothing "
            "was sent and no part of the job was recorded. Run the same command again to start it"
        ) from None
    sends_to = targets(config)
    if ingest is None and (job.simulated is None or ledger.targets(job) != sends_to):
        ledger.record_targets(job, sends_to, simulated=options.simulate)
    if ingest is None:  # a job recorded before void dates were fixed at ingest gets them now
        now = dt.datetime.now(dt.UTC)
        dates = {name: profile.default_void_date(now) for name, profile in config.profiles.items()}
        ledger.fill_void_dates(job, {name: date for name, date in dates.items() if date})
    redriven = ledger.redrive(job) if options.retry_failed else {}
    counts = ledger.counts(job)
    todo = sorted({provider for (provider, state) in counts if not state.is_final})
    async with AsyncExitStack() as stack:
        if options.simulate:
            base_url = await stack.enter_async_context(_simulator(options.simulator))
            config = config.pointed_at(base_url)
            env = simulator_env(config)
        notices: list[str] = []  # credential values trimmed of whitespace: said once each
        adapters: dict[str, Adapter] = {
            name: config.profiles[name].adapter(os.environ if env is None else env, notices) for name in todo
        }
        for notice in notices:
            print(f"warning: {notice}", file=out)
        network = routes(config, todo)
        proxies = {name: r.proxy for name, r in network.items() if r.proxy is not None}
        log.info(
            "run.started",
            job_file=str(options.job_file),
            ledger=str(options.ledger),
            items=sum(counts.values()),
            unfinished=sum(n for (_, s), n in counts.items() if not s.is_final),
            simulate=options.simulate,
            **({"void_dates": on} if (on := ledger.void_dates(job)) else {}),
            **({"proxies": proxies} if proxies else {}),
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
            routes=network,
        )
        if signals.received is not None:
            raise RunInterrupted(
                f"interrupted by {signals.received} before the first request: nothing was sent. "
                "Run the same command again to resume"
            )
        grace = options.grace_s
        if grace is None:
            grace = max((config.profiles[n].settings.timeout_s for n in todo), default=0) + 1
        scope = anyio.CancelScope()
        signals.attach(engine, scope, grace, display.log_stream or out)
        sent.engine = engine
        try:
            ledger.start_run(job)
            async with display.watching(engine, counts):
                with scope:
                    await engine.run()
            ledger.finish_run(job)
        except Exception as exc:
            with contextlib.suppress(BatchVoidError):  # the ledger may be what failed
                ledger.finish_run(job)
            raise _aborted(exc, log, log_file, sent.requests) from exc
        interrupted = signals.received is not None
        report = RunReport(
            job=job,
            counts=ledger.counts(job),
            ingest=ingest,
            requests=sent.requests,
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
                for row in islice(ledger.items(job, UNDONE), FAILURES_SHOWN)
            ),
        )
        log.info(
            "run.finished",
            requests=report.requests,
            elapsed_s=round(report.elapsed_s, 3),
            exit_status=report.exit_status,
        )
        return report


def _aborted(exc: Exception, log: Any, log_file: Path, requests: int) -> RunAborted:
    """The one-line error for a fault that stopped a run that had begun; the traceback goes to the log."""
    fault = _leaf(exc)
    if isinstance(fault, BatchVoidError):
        message = str(fault)
    else:
        message = (
            f"internal error: {type(fault).__name__}: {fault}. The traceback is in {log_file}; "
            "please report it. Nothing is lost: run the same command again to resume"
        )
    with contextlib.suppress(BatchVoidError):  # the log may be what failed
        log.error("run.aborted", reason=message, requests=requests, exc_info=exc)
    return RunAborted(message, requests=requests)


def _leaf(exc: BaseException) -> BaseException:
    """The error inside (nested) exception groups: batchvoid's own first, else the first there."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = [_leaf(inner) for inner in exc.exceptions]
    return next((leaf for leaf in leaves if isinstance(leaf, BatchVoidError)), leaves[0])


@asynccontextmanager
async def _simulator(settings: SimulatorSettings) -> AsyncIterator[str]:
    async with Simulator(settings).serve() as base_url:
        yield base_url
