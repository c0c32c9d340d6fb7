"""The worker pool: one lane per provider, each at its own pace, all in one task group.

Each lane pages its own unfinished items out of the ledger into a small bounded stream
that its workers drain, so a slow or throttled provider never holds up the others and
memory does not grow with the job.

Stops come in two kinds. A lane stops (no more requests to that provider in this run) when
the provider refuses the credentials, rejects item after item, asks for a pause longer than
`max_pause_s` or answers nothing but 429s for `give_up_throttled_after_s`, and when something
unexpected goes wrong in the lane (a bug): the other lanes go on. The whole engine stops
dispatching when too many items fail or when the run is interrupted; requests already in
flight finish either way, and the items not reached stay pending for the next run.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from batchvoid.config import Profile
from batchvoid.errors import BatchVoidError
from batchvoid.ledger import Job, Ledger, LedgerWriter
from batchvoid.models import ItemState, Outcome, OutcomeKind, RateLimit, Request, WorkItem
from batchvoid.network import DIRECT, Route
from batchvoid.pace import Pace, Patience
from batchvoid.providers import Adapter
from batchvoid.transport import ProxyRefused, TransportError, open_session, send

PAGE = 500  # items read from the ledger at a time, per lane

_FINAL = {
    OutcomeKind.VOIDED: ItemState.VOIDED,
    OutcomeKind.ALREADY_VOID: ItemState.ALREADY_VOID,
    OutcomeKind.REJECTED: ItemState.FAILED,
}
_EVENTS = {ItemState.VOIDED: "void.succeeded", ItemState.ALREADY_VOID: "void.already_void"}


@dataclass(slots=True)
class Lane:
    """One provider profile's share of the run: its adapter, pace and what happened so far."""

    profile: Profile
    adapter: Adapter
    pace: Pace
    patience: Patience
    outcomes: Counter[ItemState] = field(default_factory=Counter)
    requests: int = 0
    stopped: str | None = None  # why no more requests go to this provider in this run
    rejections: int = 0  # permanent failures in a row
    waiting: set[anyio.CancelScope] = field(default_factory=set)  # workers idle in a wait
    route: Route = DIRECT  # through which proxy, trusting which CAs

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


class Engine:
    """Runs the unfinished items of one job through every provider lane."""

    def __init__(
        self,
        *,
        job: Job,
        ledger: Ledger,
        adapters: Mapping[str, Adapter],
        profiles: Mapping[str, Profile],
        log: Any,
        retry: Retry | None = None,
        failure_limits: FailureLimits | None = None,
        routes: Mapping[str, Route] | None = None,
    ) -> None:
        self.job = job
        self.ledger = ledger
        self.log = log
        self.retry = retry or Retry()
        self.failure_limits = failure_limits or FailureLimits()
        self._adapters = adapters
        self._profiles = profiles
        self._routes = routes or {}
        self.lanes: dict[str, Lane] = {}
        self.halted: str | None = None  # why the whole engine stopped dispatching
        self.failed = 0
        self.finished = 0

    async def run(self) -> None:
        """Void every unfinished item; returns when all lanes are drained or stopped."""
        # Limiters, the session and streams belong to the running loop: create them here.
        self.lanes = {
            name: self._new_lane(self._profiles[name], adapter, self._routes.get(name, DIRECT))
            for name, adapter in self._adapters.items()
        }
        connections = sum(lane.profile.settings.concurrency for lane in self.lanes.values())
        async with (
            open_session(connections) as session,
            LedgerWriter(self.ledger) as writer,
            anyio.create_task_group() as tg,
        ):
            for lane in self.lanes.values():
                tg.start_soon(self._lane, lane, session, writer)

    @staticmethod
    def _new_lane(profile: Profile, adapter: Adapter, route: Route) -> Lane:
        settings, pace = profile.settings, Pace(profile.rate_limits)
        patience = Patience(pace.adaptive, settings.max_pause_s, settings.give_up_throttled_after_s)
        return Lane(profile, adapter, pace, patience, route=route)

    def halt(self, reason: str) -> None:
        """Stop dispatching in every lane; requests in flight finish. The first reason stays."""
        if self.halted is None:
            self.halted = reason
            self.log.warning("run.halting", reason=reason)
        for lane in self.lanes.values():
            self._wake(lane)

    def _stop_lane(self, lane: Lane, reason: str, error: Exception | None = None) -> None:
        trace = {} if error is None else {"exc_info": error}  # a traceback for the file, not the console
        if lane.stopped is None:
            lane.stopped = reason
            self.log.error("lane.stopped", provider=lane.name, reason=reason, **trace)
        elif error is not None:
            self.log.error("lane.error", provider=lane.name, reason=reason, **trace)
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
        concurrency = lane.profile.settings.concurrency
        send_stream, receive_stream = anyio.create_memory_object_stream[WorkItem](concurrency)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._feed, lane, send_stream)
            async with receive_stream:
                for _ in range(concurrency):
                    tg.start_soon(self._worker, lane, receive_stream.clone(), session, writer)

    async def _feed(self, lane: Lane, out: ObjectSendStream[WorkItem]) -> None:
        async with out:
            after = 0
            while not self._done(lane):
                page = await anyio.to_thread.run_sync(self.ledger.todo_page, self.job, lane.name, after, PAGE)
                if not page:
                    return
                for work in page:
                    if self._done(lane):
                        return
                    await out.send(work)
                after = page[-1].item.line

    async def _worker(
        self,
        lane: Lane,
        items: ObjectReceiveStream[WorkItem],
        session: aiohttp.ClientSession,
        writer: LedgerWriter,
    ) -> None:
        async with items:
            async for work in items:
                if self._done(lane):
                    continue
                try:
                    await self._void(lane, work, session, writer)
                except BatchVoidError:
                    raise  # the run's own faults (the ledger, the log file) end the run, not a lane
                except Exception as exc:  # a bug, or a library's surprise: this lane stops, not the run
                    writer.release(work)
                    self._stop_lane(
                        lane,
                        f"{lane.name}: unexpected error at invoice {work.item.invoice_id!r} (line "
                        f"{work.item.line}): {_one_line(exc)}; no more requests go to it in this run. "
                        "The log file has its traceback; once the cause is fixed, run the same "
                        "command again to void its remaining items",
                        exc,
                    )

    async def _void(
        self, lane: Lane, work: WorkItem, session: aiohttp.ClientSession, writer: LedgerWriter
    ) -> None:
        settings = lane.profile.settings
        item, key = work.item, work.idempotency_key
        failures = 0  # retryable outcomes in this run; throttling does not count
        number = work.attempts
        # Whether a request for it may have reached the provider unanswered (a crash, a timeout).
        maybe_sent = work.state is ItemState.IN_FLIGHT
        while True:
            if self._done(lane):
                if number > work.attempts and not maybe_sent:
                    writer.release(work)  # answered (a 429, a retryable error), not sent again: pending
                return
            # In flight is committed before the pace is waited for, so that the request goes out
            # the moment its slot comes, not a commit later: bunched requests would break a window.
            await writer.begin(work)
            if lane.pace.may_wait():
                with self._wait(lane):
                    sent_at = await lane.pace.acquire()
            else:
                sent_at = await lane.pace.acquire()
            if self._done(lane):
                if not maybe_sent:
                    writer.abandon(work)  # never sent, nor left unanswered: back to pending
                return
            number += 1
            lane.requests += 1
            started = time.perf_counter()
            outcome = await self._exchange(session, lane.adapter.void_request(item, key), lane, work)
            if outcome.kind is OutcomeKind.REJECTED and outcome.check_status:
                outcome = await self._check_status(session, lane, work, outcome)
            latency_ms = round((time.perf_counter() - started) * 1000)
            writer.attempt(work, number, outcome.kind, outcome.http_status, latency_ms, outcome.reason)
            self.log.info(
                "void.attempt",
                provider=lane.name,
                invoice_id=item.invoice_id,
                line=item.line,
                attempt=number,
                idempotency_key=key,
                http_status=outcome.http_status,
                latency_ms=latency_ms,
                outcome=outcome.kind,
                reason=outcome.reason or None,
            )
            if outcome.kind is OutcomeKind.THROTTLED:
                self._throttled(lane, sent_at, outcome.retry_after)
                continue  # the pace holds every worker of the lane until the pause ends
            lane.pace.adaptive.succeeded()
            state = _FINAL.get(outcome.kind)
            if outcome.kind is OutcomeKind.RETRYABLE:
                failures += 1
                if failures >= settings.max_attempts:
                    state = ItemState.FAILED
                    reason = f"gave up after {failures} attempts: {outcome.reason}"
                    outcome = Outcome(outcome.kind, reason, outcome.http_status, outcome.reference)
            if state is not None:
                self._finish(lane, work, writer, state, outcome, number)
                return
            if outcome.kind is OutcomeKind.AUTH_FAILED:
                writer.release(work)
                variables = ", ".join(lane.profile.credential_env.values())
                self._stop_lane(
                    lane,
                    f"{lane.name}: the provider refused the credentials ({outcome.reason}); no more "
                    f"requests go to it in this run. Check {variables}, then run the same command "
                    "again to void its remaining items",
                )
                return
            maybe_sent = maybe_sent or outcome.http_status is None  # a timeout may have voided it
            with self._wait(lane):
                await anyio.sleep(self.retry.delay(failures))

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
            self._stop_lane(
                lane,
                f"{lane.name}: {verdict.stop}; no more requests go to it in this run. "
                "Run the same command again later to void its remaining items",
            )
        elif verdict.until is not None:
            self.log.warning(
                "lane.paused",
                provider=lane.name,
                pause_s=round(pause),
                until=f"{verdict.until:%Y-%m-%dT%H:%M:%SZ}",
            )

    async def _exchange(
        self, session: aiohttp.ClientSession, request: Request, lane: Lane, work: WorkItem
    ) -> Outcome:
        try:
            response = await send(session, request, lane.profile.settings.timeout_s, lane.route)
        except ProxyRefused as exc:  # stopped for the proxy, not the provider's keys; the item stays pending
            self._stop_lane(
                lane,
                f"{lane.name}: {exc}; no more requests go to it in this run, and none reached it. Fix "
                f"the user:password in {lane.route.variable}, then run the same command again",
            )
            return Outcome(OutcomeKind.AUTH_FAILED, str(exc), 407)
        except TransportError as exc:
            return Outcome(OutcomeKind.RETRYABLE, str(exc))
        return lane.adapter.parse_void(work.item, response)

    async def _check_status(
        self, session: aiohttp.ClientSession, lane: Lane, work: WorkItem, rejected: Outcome
    ) -> Outcome:
        request = lane.adapter.lookup_request(work.item)
        if request is None:
            return rejected
        await lane.pace.acquire()
        lane.requests += 1
        try:
            response = await send(session, request, lane.profile.settings.timeout_s, lane.route)
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
        attempts: int,
    ) -> None:
        writer.finish(work, state, outcome.reason, outcome.http_status, outcome.reference)
        lane.outcomes[state] += 1
        self.finished += 1
        fields = {
            "provider": lane.name,
            "invoice_id": work.item.invoice_id,
            "line": work.item.line,
            "attempts": attempts,
            "http_status": outcome.http_status,
            "reference": outcome.reference,
            "reason": outcome.reason or None,
        }
        if state is not ItemState.FAILED:
            lane.rejections = 0
            self.log.info(_EVENTS[state], **fields)
            return
        self.log.warning("void.failed", **fields)
        self.failed += 1
        if outcome.kind is OutcomeKind.REJECTED:
            lane.rejections += 1
            limit = lane.profile.settings.stop_after_rejections
            if limit and lane.rejections >= limit:
                self._stop_lane(
                    lane,
                    f"{lane.name}: {lane.rejections} items in a row were rejected, the last with "
                    f"{outcome.reason!r}. Check the profile's base_url and account and the job file; "
                    "then run again with --retry-failed to resend the failed items",
                )
        self._check_failure_limits()

    def _check_failure_limits(self) -> None:
        limits = self.failure_limits
        if limits.count is not None and self.failed > limits.count:
            self.halt(f"{self.failed} items failed, more than --max-failures {limits.count}")
        elif (
            limits.rate is not None
            and self.finished >= limits.sample
            and self.failed / self.finished > limits.rate
        ):
            share = self.failed / self.finished
            self.halt(
                f"{self.failed} of {self.finished} finished items failed ({share:.0%}), "
                f"more than --max-failure-rate {limits.rate:g}"
            )


def _one_line(exc: Exception) -> str:
    """An exception as one short line for the console: its type and message."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
