"""One `batchvoid run`: the preflight, the engine, the report; signals and faults at every stage.

Every check that can refuse the run (configuration, job file, ledger, credentials) happens
before the first request is sent (see `preflight`). The simulator is imported only when the
run rehearses on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, TextIO, cast

import anyio

from batchvoid import audit
from batchvoid.canary import LimitedQueue
from batchvoid.config import Config
from batchvoid.consolelog import Unbroken
from batchvoid.credentials import Reader, Sources
from batchvoid.engine import Engine
from batchvoid.errors import BatchVoidError, ConfigError, LogFileError, RunAborted, RunInterrupted
from batchvoid.heap import steady_heap
from batchvoid.ledger import Ingest, Job, Ledger, Run, open_ledger
from batchvoid.logs import default_log_path, open_log
from batchvoid.models import UNDONE, ItemState, Stop, StopKind
from batchvoid.network import route, tls_context
from batchvoid.oauth import Connection, MemoryStore, RefreshTokenFile, TokenStore
from batchvoid.preflight import RunOptions, load_config, prepare, routes, simulator_env, targets
from batchvoid.progress import Display
from batchvoid.providers import Adapter
from batchvoid.simulator.credentials import REFRESH_TOKENS
from batchvoid.simulator.settings import SimulatorSettings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_LOCKED = 4
EXIT_INTERRUPTED = 130
EXIT_STDOUT_CLOSED = 141  # 128 + SIGPIPE, as a shell reports a tool killed writing to a closed pipe
FAILURES_SHOWN = 5  # failed items the summary names; the rest it counts by reason
REASONS_SHOWN = 10


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
    reasons: tuple[tuple[str, str, int], ...] = ()  # (provider, reason, items), most frequent first
    interrupted: bool = False  # by SIGINT or SIGTERM
    finished: int = 0  # items that reached a final state in this run
    run: Run | None = None  # this run's record, ended
    runs: tuple[Run, ...] = ()  # the job's run records, oldest first, this run's among them

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
                    self._engine.halt(Stop(StopKind.INTERRUPTED, detail=name))
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
    out = cast("TextIO", Unbroken(out or sys.stderr))  # a TextIO in all but name
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
    sent = _Sent(run_id=audit.new_run_id())
    try:
        with (
            open_ledger(options.ledger) as ledger,
            ledger.guard(
                options.job_name, out=out, max_workers=options.max_workers, stopping=signals.cancelled
            ),
            open_log(
                log_file,
                console=display.log_stream,
                console_log=options.console,
                job_id=options.job_name,
                run_id=sent.run_id,
            ) as log,
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
    """The run's id, and its engine once there is one: how many requests the run sent."""

    run_id: str
    engine: Engine | None = None

    @property
    def by_provider(self) -> dict[str, int]:
        return {} if self.engine is None else {n: lane.requests for n, lane in self.engine.lanes.items()}

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
    if unknown := sorted(set(options.providers) - set(config.profiles)):
        raise ConfigError(
            f"--provider {unknown[0]!r}: no such profile in {config.path} (configured: "
            f"{', '.join(config.profiles)}); nothing was sent"
        )
    # One reader for the run: a credential's file is read, and its command run, once.
    sources = (
        None if options.simulate else Sources(os.environ if env is None else env, cancelled=signals.cancelled)
    )
    try:
        job, ingest = await anyio.to_thread.run_sync(
            partial(prepare, options, config, ledger, out, signals.cancelled, sources)
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
    # A job just recorded: its counts and void dates are the ingest's, not a scan of its items.
    recorded = None if ingest is None or ingest.void_dates is None else _recorded(ingest.void_dates)
    counts = ledger.counts(job) if recorded is None else recorded[0]
    todo = sorted({provider for (provider, state) in counts if not state.is_final})
    held = [name for name in todo if options.providers and name not in options.providers]
    todo = [name for name in todo if name not in held]
    async with AsyncExitStack() as stack:
        if options.simulate:
            base_url = await stack.enter_async_context(_simulator(options.simulator))
            config = config.pointed_at(base_url).rehearsal()
            sources = Sources(simulator_env(config))
        assert sources is not None
        notices: list[str] = []  # credential values trimmed of whitespace: said once each
        try:
            adapters, connections = await anyio.to_thread.run_sync(
                partial(_adapters, config, todo, sources, notices)
            )
        except RunInterrupted as exc:  # a credential's command was stopped by the signal
            raise RunInterrupted(
                f"interrupted by {signals.received}: {exc}. Run the same command again to resume"
            ) from None
        for notice in notices:
            print(f"warning: {notice}", file=out)
        network = routes(config, todo)
        proxies = {name: r.proxy for name, r in network.items() if r.proxy is not None}
        log.info(
            "run.started",
            job_file=str(options.job_file),
            ledger=ledger.location,
            config=config.path,
            items=sum(counts.values()),
            unfinished=sum(n for (_, s), n in counts.items() if not s.is_final),
            simulate=options.simulate,
            **(
                {"void_dates": on}
                if (on := ledger.void_dates(job) if recorded is None else recorded[1])
                else {}
            ),
            **({"proxies": proxies} if proxies else {}),
        )
        if redriven:
            log.info("job.redriven", items=sum(redriven.values()), by_provider=redriven)
        queue = ledger if options.limit is None else LimitedQueue(ledger, options.limit)
        engine = Engine(
            job=job,
            queue=queue,
            adapters=adapters,
            profiles=config.profiles,
            log=log,
            retry=options.retry,
            failure_limits=options.failure_limits,
            describe=partial(describe_stop, config),
            routes=network,
            connections=connections,
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
        record = ledger.begin_run(
            job,
            audit.new_run(
                sent.run_id, options.command or sys.argv, simulated=options.simulate, targets=sends_to
            ),
        )
        try:
            shared = bool(ledger.workers(job.job_id))  # other workers may do part of the job
            async with display.watching(engine, counts, partial(ledger.counts, job) if shared else None):
                with scope, steady_heap():
                    await engine.run()
        except Exception as exc:
            aborted = _aborted(exc, log, log_file, sent.requests)
            with contextlib.suppress(BatchVoidError):  # the ledger may be what failed
                status = EXIT_STOPPED if sent.requests else EXIT_USAGE
                ledger.end_run(job, record, audit.run_end(status, ledger.counts(job), sent.by_provider))
            raise aborted from exc
        interrupted = signals.received is not None
        ended = ledger.counts(job)
        left = any(not state.is_final for (_, state), n in ended.items() if n)
        # The failures are read from the items, which no index on the state serves (a 1M-item
        # job's scan held its summary up for a second or more): only when the counts say so.
        failed = any(n for (_, state), n in ended.items() if state in UNDONE)
        report = RunReport(
            job=job,
            counts=ended,
            ingest=ingest,
            requests=sent.requests,
            finished=sum(sum(lane.outcomes.values()) for lane in engine.lanes.values()),
            elapsed_s=time.monotonic() - started,
            stopped=tuple(
                describe_stop(config, stop)
                for stop in [lane.stopped for lane in engine.lanes.values()]
                + [None if interrupted else engine.halted]
                if stop is not None
            )
            + (_held_back(options, queue, held) if left else ()),
            interrupted=interrupted,
            log_file=log_file,
            failures=tuple(
                (row["provider"], row["invoice_id"], row["reason"] or "")
                for row in islice(ledger.items(job, UNDONE), FAILURES_SHOWN)
            )
            if failed
            else (),
            reasons=tuple(ledger.failure_reasons(job, REASONS_SHOWN)) if failed else (),
        )
        record = ledger.end_run(
            job, record, audit.run_end(report.exit_status, report.counts, sent.by_provider)
        )
        assert record.end is not None
        report = dataclasses.replace(report, run=record, runs=tuple(ledger.runs(job)))
        log.info(
            "run.finished",
            requests=report.requests,
            elapsed_s=round(report.elapsed_s, 3),
            exit_status=report.exit_status,
            counts=record.end.counts,
            throttled=record.end.throttled,
        )
        return report


def _held_back(options: RunOptions, queue: object, held: Sequence[str]) -> tuple[str, ...]:
    """The stops a canary or a --provider run makes on purpose, in words."""
    stops = []
    if isinstance(queue, LimitedQueue) and queue.taken >= queue.limit:
        stops.append(
            f"--limit {queue.limit}: this run sent its {queue.limit} items and left the rest "
            "pending; run the same command again (with or without --limit) to send more"
        )
    if held:
        stops.append(
            f"--provider {' --provider '.join(options.providers)}: the items of {', '.join(held)} "
            "were left pending; a run without --provider (or naming them) sends them"
        )
    return tuple(stops)


def _adapters(
    config: Config, names: Iterable[str], sources: Reader, notices: list[str]
) -> tuple[dict[str, Adapter], dict[str, Connection]]:
    """The adapters of the profiles `names`, their credentials read (a command may take a while),
    and the OAuth 2.0 connections of those that have one: one per refresh token file, shared."""
    adapters: dict[str, Adapter] = {}
    connections: dict[str, Connection] = {}
    by_file: dict[str, Connection] = {}
    for name in names:
        profile = config.profiles[name]
        if profile.oauth is None or profile.spec.oauth is None:
            adapters[name] = profile.adapter(sources, notices)
            continue
        secrets = profile.secrets(sources, notices)
        path = profile.oauth.refresh_token_file
        key = path or f"rehearsal:{profile.spec.type}"  # a rehearsal's simulator has one per type
        connection = by_file.get(key)
        if connection is None:
            store: TokenStore = (
                RefreshTokenFile(path) if path else MemoryStore(REFRESH_TOKENS[profile.spec.type])
            )
            https = profile.oauth.token_url.startswith("https://")
            connection = by_file[key] = Connection(
                title=profile.spec.title,
                where=profile.source,
                facts=profile.spec.oauth,
                token_url=profile.oauth.token_url,
                client_id=secrets["client_id"],
                client_secret=secrets["client_secret"],
                store=store,
                credentials=", ".join(c.label for c in profile.credentials.values()),
                route=route(
                    profile.oauth.token_url,
                    tls=tls_context(profile.ca_bundle, profile.source) if https else None,
                ),
                timeout_s=profile.settings.timeout_s,
            )
        elif connection.client != (profile.oauth.token_url, secrets["client_id"]):
            raise ConfigError(
                f"{profile.source}: refresh_token_file {path} is also {connection.where}'s, with another "
                "token_url or client id: one refresh token belongs to one app's connection. Give each "
                "connection its own file"
            )
        connections[name] = connection
        adapters[name] = profile.adapter(sources, notices, connection)
    return adapters, connections


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
    from batchvoid.simulator.server import Simulator  # only a rehearsal needs it

    async with Simulator(settings).serve() as base_url:
        yield base_url


def describe_stop(config: Config, stop: Stop) -> str:
    """A stop in words for the operator: what happened, and what to check or do next."""
    name = stop.provider
    if stop.kind is StopKind.AUTH_REFUSED:
        sources = config.profiles[name].credentials.values() if name else ()
        variables = ", ".join(c.label for c in sources) or "its credentials"
        return (
            f"{name}: the provider refused the credentials ({stop.detail}); no more requests go to "
            f"it in this run. Check {variables}, then run the same command again to void its "
            "remaining items"
        )
    if stop.kind in (StopKind.REAUTHORIZE, StopKind.CONNECTION_LOST):
        return f"{name}: {stop.detail}. No more requests go to it in this run; its items stay pending"
    if stop.kind is StopKind.PROXY_REFUSED:
        return (
            f"{name}: {stop.detail}; no more requests go to it in this run, and none reached it (none "
            f"is counted as sent). Set the proxy's user:password in {stop.setting} "
            "(http://USER:PASSWORD@HOST:PORT, percent-encoded), or add the provider's host to "
            "NO_PROXY if it is to be reached directly, then run the same command again"
        )
    if stop.kind is StopKind.REJECTIONS:
        return (
            f"{name}: {stop.count} items in a row were rejected, the last with {stop.detail!r}. Check "
            "the profile's base_url and account and the job file; then run again with --retry-failed "
            "to resend the failed items"
        )
    if stop.kind is StopKind.THROTTLED:
        return (
            f"{name}: {stop.detail}; no more requests go to it in this run. Run the same command "
            "again later to void its remaining items"
        )
    if stop.kind is StopKind.UNEXPECTED:
        at = "" if stop.item is None else f" at invoice {stop.item.invoice_id!r} (line {stop.item.line})"
        return (
            f"{name}: unexpected error{at}: {stop.detail}; no more requests go to it in this run. "
            "The log file has its traceback; once the cause is fixed, run the same command again "
            "to void its remaining items"
        )
    if stop.kind is StopKind.FAILURES:
        return f"{stop.count} items failed, more than --max-failures {stop.limit:g}"
    if stop.kind is StopKind.FAILURE_RATE:
        return (
            f"{stop.count} of {stop.of} finished items failed ({stop.count / stop.of:.0%}), "
            f"more than --max-failure-rate {stop.limit:g}"
        )
    return f"interrupted by {stop.detail}"


def _recorded(
    void_dates: Mapping[tuple[str, str | None], int],
) -> tuple[dict[tuple[str, ItemState], int], dict[str, dict[str, int]]]:
    """A new job's counts by (provider, state), all pending, and its void dates by provider, as
    `Ledger.counts` and `Ledger.void_dates` would read them, from what its ingest counted."""
    counts: dict[tuple[str, ItemState], int] = {}
    dates: dict[str, dict[str, int]] = {}
    for (provider, date), n in sorted(void_dates.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        counts[provider, ItemState.PENDING] = counts.get((provider, ItemState.PENDING), 0) + n
        if date is not None:
            dates.setdefault(provider, {})[date] = n
    return counts, dates
