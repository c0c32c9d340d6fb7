"""The worker pool: one lane per provider, each at its own pace, all in one task group.

Each lane pages its own unfinished items out of the ledger into a small bounded stream
that its workers drain, so a slow or throttled provider never holds up the others and
memory does not grow with the job.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from batchvoid.config import Profile
from batchvoid.ledger import Job, Ledger, LedgerWriter
from batchvoid.models import ItemState, Outcome, OutcomeKind, Request, WorkItem
from batchvoid.pace import Pace
from batchvoid.providers import Adapter
from batchvoid.transport import TransportError, open_session, send

PAGE = 500  # items read from the ledger at a time, per lane

_FINAL = {
    OutcomeKind.VOIDED: ItemState.VOIDED,
    OutcomeKind.ALREADY_VOID: ItemState.ALREADY_VOID,
    OutcomeKind.REJECTED: ItemState.FAILED,
}


@dataclass(slots=True)
class Lane:
    """One provider profile's share of the run: its adapter, pace and what happened so far."""

    profile: Profile
    adapter: Adapter
    pace: Pace
    outcomes: Counter[ItemState] = field(default_factory=Counter)
    requests: int = 0
    stopped: str | None = None  # why no more requests go to this provider in this run

    @property
    def name(self) -> str:
        return self.profile.name


@dataclass(frozen=True, slots=True)
class Retry:
    """Capped exponential backoff with full jitter, for retryable outcomes."""

    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, failures: int) -> float:
        return random.uniform(0, min(self.cap_s, self.base_s * 2 ** (failures - 1)))


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
    ) -> None:
        self.job = job
        self.ledger = ledger
        self.log = log
        self.retry = retry or Retry()
        self._adapters = adapters
        self._profiles = profiles
        self.lanes: dict[str, Lane] = {}

    async def run(self) -> None:
        """Void every unfinished item; returns when all lanes are drained or stopped."""
        # Limiters, the session and streams belong to the running loop: create them here.
        self.lanes = {
            name: Lane(self._profiles[name], adapter, Pace(self._profiles[name].rate_limits))
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
            while lane.stopped is None:
                page = await anyio.to_thread.run_sync(self.ledger.todo_page, self.job, lane.name, after, PAGE)
                if not page:
                    return
                for work in page:
                    if lane.stopped is not None:
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
                await self._void(lane, work, session, writer)

    async def _void(
        self, lane: Lane, work: WorkItem, session: aiohttp.ClientSession, writer: LedgerWriter
    ) -> None:
        settings = lane.profile.settings
        item, key = work.item, work.idempotency_key
        failures = 0  # retryable outcomes in this run; throttling does not count
        number = work.attempts
        while True:
            await lane.pace.acquire()
            if lane.stopped is not None:
                return  # the item stays as the ledger has it: pending, or in flight from a crash
            await writer.begin(work)
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
            state = _FINAL.get(outcome.kind)
            if outcome.kind is OutcomeKind.RETRYABLE:
                failures += 1
                if failures >= settings.max_attempts:
                    state = ItemState.FAILED
                    outcome = Outcome(
                        outcome.kind,
                        f"gave up after {failures} attempts: {outcome.reason}",
                        outcome.http_status,
                        outcome.reference,
                    )
            if state is not None:
                self._finish(lane, work, writer, state, outcome, number)
                return
            if outcome.kind is OutcomeKind.AUTH_FAILED:
                self._stop(lane, work, writer, outcome)
                return
            if outcome.kind is OutcomeKind.THROTTLED:
                await anyio.sleep(outcome.retry_after if outcome.retry_after is not None else 1.0)
            else:
                await anyio.sleep(self.retry.delay(failures))

    async def _exchange(
        self, session: aiohttp.ClientSession, request: Request, lane: Lane, work: WorkItem
    ) -> Outcome:
        try:
            response = await send(session, request, lane.profile.settings.timeout_s)
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
            response = await send(session, request, lane.profile.settings.timeout_s)
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
        event = {
            ItemState.VOIDED: "void.succeeded",
            ItemState.ALREADY_VOID: "void.already_void",
        }.get(state, "void.failed")
        level = self.log.warning if state is ItemState.FAILED else self.log.info
        level(
            event,
            provider=lane.name,
            invoice_id=work.item.invoice_id,
            line=work.item.line,
            attempts=attempts,
            http_status=outcome.http_status,
            reference=outcome.reference,
            reason=outcome.reason or None,
        )

    def _stop(self, lane: Lane, work: WorkItem, writer: LedgerWriter, outcome: Outcome) -> None:
        writer.release(work)
        if lane.stopped is not None:
            return
        variables = ", ".join(lane.profile.credential_env.values())
        lane.stopped = (
            f"{lane.name}: the provider refused the credentials ({outcome.reason}); "
            f"no more requests go to it in this run. Check {variables}, then run again to void "
            "its remaining items"
        )
        self.log.error("lane.stopped", provider=lane.name, reason=lane.stopped)
