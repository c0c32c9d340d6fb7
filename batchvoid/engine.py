"""The worker pool: one lane per provider, each at its own pace, all in one task group.

Each lane claims its own unfinished items from the work queue a batch at a time (the next
while half of the last is left), and its workers take them from that batch, so a slow or
throttled provider never holds up the others and memory does not grow with the job. A
claimed item counts as "may have been sent" from the claim's commit, so a request goes out
the moment its pace allows, with no commit to wait for; its outcome is queued for the
writer's next group commit.

Stops come in two kinds, each a typed `Stop` that the command layer words. A lane stops (no
more requests to that provider in this run) when the provider refuses the credentials,
rejects item after item, asks for a pause longer than `max_pause_s` or answers nothing but
429s for `give_up_throttled_after_s`, and when something unexpected goes wrong in the lane (a
bug): the other lanes go on. The whole engine stops dispatching when too many items fail or
when the run is interrupted; requests already in flight finish either way, the claimed items
not reached are released, and the next run sends them.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio

from batchvoid.config import Profile
from batchvoid.errors import BatchVoidError
from batchvoid.ledger.api import Job, WorkQueue, now
from batchvoid.ledger.ops import Attempt, Finish, Release
from batchvoid.ledger.writer import LedgerWriter
from batchvoid.models import (
    Item,
    ItemState,
    Outcome,
    OutcomeKind,
    RateLimit,
    Request,
    Stop,
    StopKind,
    WorkItem,
)
from batchvoid.network import DIRECT, Route
from batchvoid.oauth import Connection, ConnectionLost
from batchvoid.pace import Pace, Patience, sustained_rate
from batchvoid.providers import Adapter
from batchvoid.transport import ProxyRefused, TransportError, open_session, send

TOKEN_RETRIES = 3  # 401s per item that a fresh OAuth 2.0 access token is tried after
CLAIM_MAX = 256  # items a lane claims at a time, at most
CLAIM_AHEAD_S = 1.0  # ... and no more than it sends in about this long at its configured pace

_FINAL = {
    OutcomeKind.VOIDED: ItemState.VOIDED,
    OutcomeKind.ALREADY_VOID: ItemState.ALREADY_VOID,
    OutcomeKind.REJECTED: ItemState.FAILED,
}
_EVENTS = {
    ItemState.VOIDED: "void.succeeded",
    ItemState.ALREADY_VOID: "void.already_void",
    ItemState.FAILED: "void.failed",
}


@dataclass(slots=True)
class Lane:
    """One provider profile's share of the run: its adapter, pace, claimed work and what happened."""

    profile: Profile
    adapter: Adapter
    pace: Pace
    patience: Patience
    claim_size: int
    outcomes: Counter[ItemState] = field(default_factory=Counter)
    requests: int = 0
    stopped: Stop | None = None  # why no more requests go to this provider in this run
    rejections: int = 0  # permanent failures in a row
    waiting: set[anyio.CancelScope] = field(default_factory=set)  # workers idle in a wait
    claimed: deque[WorkItem] = field(default_factory=deque)  # claimed, not yet taken by a worker
    after: int = 0  # the line of the last item claimed: the next claim starts after it
    exhausted: bool = False  # a claim came back empty, or the feeder stopped: nothing more to take
    fed: anyio.Event = field(default_factory=anyio.Event)  # set when a batch (or the end) comes
    hungry: anyio.Event = field(default_factory=anyio.Event)  # set when `claimed` falls to half a batch
    route: Route = DIRECT  # through which proxy, trusting which CAs
    auth: Connection | None = None  # an OAuth 2.0 connection whose access token its requests carry

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def throttled_until(self) -> float:
        """When, on the pace's clock (time.monotonic() in a run), its 429 pause ends (past: not paused)."""
        return self.pace.throttled_until

    @property
    def rate_limits(self) -> tuple[RateLimit, ...]:
        return self.profile.rate_limits


@dataclass(frozen=True, slots=True)
class Retry:
    """Capped exponential backoff with full jitter, for retryable outcomes."""

    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, failures: int) -> float:
        return random.uniform(0, min(self.cap_s, self.base_s * 2 ** (failures - 1)))


@dataclass(frozen=True, slots=True)
class FailureLimits:
    """Stop dispatching when more than `count` items, or more than `rate` of them, failed."""

    count: int | None = None
    rate: float | None = None
    sample: int = 50  # finished items before the rate is judged


@dataclass(slots=True)
class _Trip:
    """One item's way through this run, so far: what a stop must give back."""

    maybe_sent: bool  # a request for it may have reached the provider unanswered (a crash, a timeout)
    sent: int = 0  # requests sent for it in this run
    on_the_wire: bool = False  # a request of it is out now, with no answer yet


def _plain(stop: Stop) -> str:
    return f"{stop.provider or 'run'}: {stop.kind}: {stop.detail}"


class Engine:
    """Runs the unfinished items of one job through every provider lane."""

    def __init__(
        self,
        *,
        job: Job,
        queue: WorkQueue,
        adapters: Mapping[str, Adapter],
        profiles: Mapping[str, Profile],
        log: Any,
        retry: Retry | None = None,
        failure_limits: FailureLimits | None = None,
        describe: Callable[[Stop], str] = _plain,
        routes: Mapping[str, Route] | None = None,
        connections: Mapping[str, Connection] | None = None,
    ) -> None:
        """One lane per adapter, with its profile; `describe` words a stop for the log and the console."""
        self.job = job
        self.queue = queue
        self.log = log
        self.retry = retry or Retry()
        self.failure_limits = failure_limits or FailureLimits()
        self.describe = describe
        self._adapters = adapters
        self._profiles = profiles
        self._routes = routes or {}
        self._connections = connections or {}
        self.lanes: dict[str, Lane] = {}
        self.halted: Stop | None = None  # why the whole engine stopped dispatching
        self.failed = 0
        self.finished = 0

    async def run(self) -> None:
        """Void every unfinished item; returns when all lanes are drained or stopped."""
        # Limiters, the session and locks belong to the running loop: create them here.
        self.lanes = {
            name: self._new_lane(
                self._profiles[name],
                adapter,
                self._routes.get(name, DIRECT),
                self.queue.pace(self._profiles[name]),
                self._connections.get(name),
            )
            for name, adapter in self._adapters.items()
        }
        connections = sum(lane.profile.settings.concurrency for lane in self.lanes.values())
        async with (
            open_session(connections) as session,
            LedgerWriter(self.queue) as writer,
            anyio.create_task_group() as tg,
        ):
            for lane in self.lanes.values():
                tg.start_soon(self._lane, lane, session, writer)

    @staticmethod
    def _new_lane(
        profile: Profile, adapter: Adapter, route: Route, shared: Pace | None, auth: Connection | None
    ) -> Lane:
        """`shared`: the queue's pace for the profile, when its limits are kept across workers."""
        settings, pace = profile.settings, shared or Pace(profile.rate_limits)
        patience = Patience(pace.adaptive, settings.max_pause_s, settings.give_up_throttled_after_s)
        rate = sustained_rate(profile.rate_limits)
        ahead = CLAIM_MAX if rate is None else math.ceil(rate * CLAIM_AHEAD_S)
        claim_size = max(settings.concurrency, min(CLAIM_MAX, ahead))
        return Lane(profile, adapter, pace, patience, claim_size, route=route, auth=auth)

    def halt(self, stop: Stop) -> None:
        """Stop dispatching in every lane; requests in flight finish. The first stop stays."""
        if self.halted is None:
            self.halted = stop
            self.log.warning("run.halting", stop=stop.kind, reason=self.describe(stop))
        for lane in self.lanes.values():
            self._wake(lane)

    def _stop_lane(self, lane: Lane, stop: Stop, error: Exception | None = None) -> None:
        trace = {} if error is None else {"exc_info": error}  # a traceback for the file, not the console
        if lane.stopped is None:
            lane.stopped = stop
            self.log.error(
                "lane.stopped", provider=lane.name, stop=stop.kind, reason=self.describe(stop), **trace
            )
        elif error is not None:
            self.log.error(
                "lane.error", provider=lane.name, stop=stop.kind, reason=self.describe(stop), **trace
            )
        self._wake(lane)

    @staticmethod
    def _wake(lane: Lane) -> None:
        for scope in lane.waiting:
            scope.cancel()

    def _done(self, lane: Lane) -> bool:
        return lane.stopped is not None or self.halted is not None

    @contextmanager
    def _wait(self, lane: Lane) -> Iterator[anyio.CancelScope]:
        """A wait (pace, backoff) that a stop or halt cuts short."""
        with anyio.CancelScope() as scope:
            if self._done(lane):
                scope.cancel()
            lane.waiting.add(scope)
            try:
                yield scope
            finally:
                lane.waiting.discard(scope)

    async def _lane(self, lane: Lane, session: aiohttp.ClientSession, writer: LedgerWriter) -> None:
        try:
            async with anyio.create_task_group() as feeding:
                feeding.start_soon(self._feed, lane)
                async with anyio.create_task_group() as tg:
                    for _ in range(lane.profile.settings.concurrency):
                        tg.start_soon(self._worker, lane, session, writer)
                feeding.cancel_scope.cancel()  # the workers are gone: nothing more to claim for
        finally:
            # Claimed but never taken up (a stop, a halt, a signal): back to pending, except
            # those a stopped run may have sent already, which stay in flight.
            while lane.claimed:
                work = lane.claimed.popleft()
                if not work.maybe_sent:
                    writer.record(Release(work.id, 0, False))

    async def _feed(self, lane: Lane) -> None:
        """Claims the lane's items a batch at a time, the next batch while its workers still have
        half of the last one: they take items from `claimed` and never wait out a claim.

        A claim is a round trip to a ledger thread. On a busy run it took 26 ms (10 to reach the
        thread, 4 for the ledger's lock, 8 of SQL, 5 back to the loop; 100,000 voids, 160 in
        flight), and when the workers waited for it one by one, they waited 85 ms each.
        """
        try:
            while not lane.exhausted and not self._done(lane):
                batch = await anyio.to_thread.run_sync(
                    self.queue.claim, self.job, lane.name, lane.after, lane.claim_size
                )
                lane.claimed.extend(batch)  # before any checkpoint: the lane's end gives back what is left
                if batch:
                    lane.after = batch[-1].item.line
                else:
                    lane.exhausted = True
                lane.fed.set()
                lane.fed = anyio.Event()
                while len(lane.claimed) > lane.claim_size // 2 and not self._done(lane):
                    lane.hungry = anyio.Event()
                    await lane.hungry.wait()
        finally:
            lane.exhausted = True
            lane.fed.set()  # workers waiting for a batch see that none comes

    async def _next(self, lane: Lane) -> WorkItem | None:
        """The lane's next claimed item; None: no more (all taken, or the lane stopped)."""
        while not self._done(lane):  # what is left claimed goes back when the lane ends
            claimed = lane.claimed
            if claimed:
                work = claimed.popleft()
                if len(claimed) <= lane.claim_size // 2:
                    lane.hungry.set()
                return work
            if lane.exhausted:
                return None
            with self._wait(lane):  # a stop or halt wakes it
                await lane.fed.wait()
        return None

    async def _worker(self, lane: Lane, session: aiohttp.ClientSession, writer: LedgerWriter) -> None:
        while (work := await self._next(lane)) is not None:
            trip = _Trip(work.maybe_sent)
            try:
                await self._void(lane, work, trip, session, writer)
            except BatchVoidError:
                raise  # the run's own faults (the ledger, the log file) end the run, not a lane
            except Exception as exc:  # a bug, or a library's surprise: this lane stops, not the run
                # A request the error cut short may have reached the provider: then in flight.
                writer.record(Release(work.id, trip.sent, trip.maybe_sent or trip.on_the_wire))
                stop = Stop(StopKind.UNEXPECTED, lane.name, _one_line(exc), work.item)
                self._stop_lane(lane, stop, exc)

    async def _void(
        self, lane: Lane, work: WorkItem, trip: _Trip, session: aiohttp.ClientSession, writer: LedgerWriter
    ) -> None:
        settings = lane.profile.settings
        item, key = work.item, work.idempotency_key
        failures = 0  # retryable outcomes in this run; throttling does not count
        refused = 0  # 401s answered with a fresh access token (OAuth 2.0), in this run
        while True:
            if not self._done(lane):
                if lane.pace.may_wait():
                    with self._wait(lane):
                        sent_at = await lane.pace.acquire()
                else:
                    sent_at = await lane.pace.acquire()
            if self._done(lane):
                writer.record(Release(work.id, trip.sent, trip.maybe_sent))
                return
            generation = 0 if lane.auth is None else await self._authorize(lane, session)
            if generation < 0:
                writer.record(Release(work.id, trip.sent, trip.maybe_sent))
                return
            read = lane.adapter.read_request(item)  # what the void depends on, if anything
            request = lane.adapter.void_request(item, key) if read is None else read
            trip.sent += 1
            trip.on_the_wire = True
            lane.requests += 1
            started = time.perf_counter()
            outcome = await self._exchange(session, request, lane, item, reading=read is not None)
            trip.on_the_wire = False
            if isinstance(outcome, Item):  # the read told what the void needs: it goes next, at the pace
                item = outcome
                continue
            if outcome is not None and outcome.kind is OutcomeKind.REJECTED and outcome.check_status:
                lookup = lane.adapter.lookup_request(item)
                if lookup is not None:
                    self._attempt(lane, work, writer, work.attempts + trip.sent, outcome, started)
                    await lane.pace.acquire()
                    trip.sent += 1
                    lane.requests += 1
                    started = time.perf_counter()
                    outcome = await self._check_status(session, lane, work, lookup, outcome)
            if outcome is None:  # the proxy refused it: no request reached the provider, none counts
                trip.sent -= 1
                lane.requests -= 1
                writer.record(Release(work.id, trip.sent, trip.maybe_sent))
                return
            state = _FINAL.get(outcome.kind)
            if outcome.kind is OutcomeKind.RETRYABLE:
                failures += 1
                if failures >= settings.max_attempts:
                    state = ItemState.FAILED
                    reason = f"gave up after {failures} attempts: {outcome.reason}"
                    outcome = Outcome(outcome.kind, reason, outcome.http_status, outcome.reference)
            if state is not None:
                lane.pace.adaptive.succeeded()
                self._finish(lane, work, writer, state, outcome, trip.sent, started)
                return
            self._attempt(lane, work, writer, work.attempts + trip.sent, outcome, started)
            if outcome.kind is OutcomeKind.THROTTLED:
                self._throttled(lane, sent_at, outcome.retry_after)
                continue  # the pace holds every worker of the lane until the pause ends
            lane.pace.adaptive.succeeded()
            if outcome.kind is OutcomeKind.AUTH_FAILED:
                refused += 1
                if lane.auth is not None and refused <= TOKEN_RETRIES and lane.auth.rejected(generation):
                    continue  # an access token refused early (expired in flight): the next try refreshes it
                writer.record(Release(work.id, trip.sent, trip.maybe_sent))
                self._stop_lane(lane, Stop(StopKind.AUTH_REFUSED, lane.name, outcome.reason))
                return
            trip.maybe_sent = trip.maybe_sent or outcome.http_status is None  # a timeout may have voided it
            item = work.item  # a read's answer is good for one void: a retry reads again (a new SyncToken)
            with self._wait(lane):
                await anyio.sleep(self.retry.delay(failures))

    def _attempt(
        self, lane: Lane, work: WorkItem, writer: LedgerWriter, number: int, outcome: Outcome, started: float
    ) -> None:
        """A request that did not finish the item: into the attempt history and the log."""
        latency_ms = round((time.perf_counter() - started) * 1000)
        writer.record(
            Attempt(
                work.id, number, now(), outcome.kind, outcome.http_status, latency_ms, outcome.reason or None
            )
        )
        self.log.info(
            "void.attempt",
            provider=lane.name,
            invoice_id=work.item.invoice_id,
            line=work.item.line,
            attempt=number,
            idempotency_key=work.idempotency_key,
            http_status=outcome.http_status,
            latency_ms=latency_ms,
            outcome=outcome.kind,
            reason=outcome.reason or None,
        )

    def _throttled(self, lane: Lane, sent_at: float, retry_after: float | None) -> None:
        """A 429: pause the whole lane; warn of a long pause, or stop the lane rather than wait."""
        pause = lane.pace.adaptive.throttled(sent_at, retry_after)
        self.log.info(
            "lane.throttled",
            provider=lane.name,
            pause_s=round(pause, 3),
            retry_after=retry_after,
            rate=lane.pace.adaptive.rate and round(lane.pace.adaptive.rate, 2),
        )
        if self._done(lane):
            return  # nothing more is sent in this run: no pause is worth a word
        verdict = lane.patience.judge(retry_after)
        if verdict.stop is not None:
            self._stop_lane(lane, Stop(StopKind.THROTTLED, lane.name, verdict.stop))
        elif verdict.until is not None:
            self.log.warning(
                "lane.paused",
                provider=lane.name,
                pause_s=round(pause),
                until=f"{verdict.until:%Y-%m-%dT%H:%M:%SZ}",
            )

    async def _authorize(self, lane: Lane, session: aiohttp.ClientSession) -> int:
        """The generation of the lane's access token, refreshed when due; -1: the lane stopped."""
        assert lane.auth is not None
        timeout_s = lane.profile.settings.timeout_s
        try:
            return await lane.auth.ready(lambda request, route: send(session, request, timeout_s, route))
        except ConnectionLost as exc:
            kind = StopKind.REAUTHORIZE if exc.reauthorize else StopKind.CONNECTION_LOST
            self._stop_lane(lane, Stop(kind, lane.name, str(exc)))
            return -1

    async def _exchange(
        self, session: aiohttp.ClientSession, request: Request, lane: Lane, item: Item, *, reading: bool
    ) -> Outcome | Item | None:
        """The provider's answer as an outcome (a read's: the item with what it told, or an outcome);
        None: the proxy refused it (the lane is stopped)."""
        try:
            response = await send(session, request, lane.profile.settings.timeout_s, lane.route)
        except ProxyRefused as exc:
            self._proxy_refused(lane, exc)
            return None
        except TransportError as exc:
            return Outcome(OutcomeKind.RETRYABLE, str(exc))
        return lane.adapter.parse_read(item, response) if reading else lane.adapter.parse_void(item, response)

    def _proxy_refused(self, lane: Lane, exc: ProxyRefused) -> None:
        """A 407: stopped for the network's configuration, not the provider's keys."""
        self._stop_lane(lane, Stop(StopKind.PROXY_REFUSED, lane.name, str(exc), setting=lane.route.variable))

    async def _check_status(
        self, session: aiohttp.ClientSession, lane: Lane, work: WorkItem, request: Request, rejected: Outcome
    ) -> Outcome | None:
        try:
            response = await send(session, request, lane.profile.settings.timeout_s, lane.route)
        except ProxyRefused as exc:
            self._proxy_refused(lane, exc)
            return None
        except TransportError as exc:
            return Outcome(OutcomeKind.RETRYABLE, f"status lookup after {rejected.reason}: {exc}")
        return lane.adapter.parse_lookup(work.item, response, rejected)

    def _finish(
        self,
        lane: Lane,
        work: WorkItem,
        writer: LedgerWriter,
        state: ItemState,
        outcome: Outcome,
        sent: int,
        started: float,
    ) -> None:
        """The item's one write on the common path, and its one log line."""
        writer.record(
            Finish(work.id, state, outcome.reason or None, outcome.http_status, outcome.reference, sent)
        )
        lane.outcomes[state] += 1
        self.finished += 1
        failed = state is ItemState.FAILED
        said = {"reason": outcome.reason} if outcome.reason else {}
        if outcome.reference:
            said["reference"] = outcome.reference
        (self.log.warning if failed else self.log.info)(
            _EVENTS[state],
            provider=lane.name,
            invoice_id=work.item.invoice_id,
            line=work.item.line,
            attempts=work.attempts + sent,
            idempotency_key=work.idempotency_key,
            http_status=outcome.http_status,
            latency_ms=round((time.perf_counter() - started) * 1000),
            **said,  # a voided item's line names no empty reason
        )
        if not failed:
            lane.rejections = 0
            return
        self.failed += 1
        if outcome.kind is OutcomeKind.REJECTED:
            lane.rejections += 1
            limit = lane.profile.settings.stop_after_rejections
            if limit and lane.rejections >= limit:
                self._stop_lane(
                    lane, Stop(StopKind.REJECTIONS, lane.name, outcome.reason, count=lane.rejections)
                )
        self._check_failure_limits()

    def _check_failure_limits(self) -> None:
        limits = self.failure_limits
        if limits.count is not None and self.failed > limits.count:
            self.halt(Stop(StopKind.FAILURES, count=self.failed, limit=limits.count))
        elif (
            limits.rate is not None
            and self.finished >= limits.sample
            and self.failed / self.finished > limits.rate
        ):
            self.halt(Stop(StopKind.FAILURE_RATE, count=self.failed, of=self.finished, limit=limits.rate))


def _one_line(exc: Exception) -> str:
    """An exception as one short line for the console: its type and message."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
